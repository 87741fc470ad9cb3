/**
 * Deadlines that are almost always cancelled before they are due, for the per-call timeouts of the
 * proxy (a `tools/call`'s deadline, the wait for an SSE reply's first answer, the bound on reading
 * the rest of a reply). A runtime timer per call costs more than the rest of the bookkeeping (on Deno
 * each `setTimeout` makes a Node-compatible `Timeout` object with an async id); here all deadlines
 * share one timer. The deadlines of one duration fall due in the order they were set, so each
 * duration is a queue, and the timer is armed for the earliest head; a cancelled deadline stays in its
 * queue until its turn, so cancelling touches no timer. While calls are in flight the timer therefore
 * runs about once per the shortest duration (once a second for the 1 s reply wait), not once per call.
 *
 * A deadline fires no earlier than a `setTimeout` of the same duration set at the same moment would,
 * and as soon after as the shared timer runs (deadlines of different durations that are due in the
 * same run fire in no particular order). When no deadline is pending the timer is cleared, so
 * nothing stays scheduled (and nothing keeps a process alive) once the calls are over.
 *
 * Only where timers belong to the isolate (Deno, Deno Deploy). On Workers a timer belongs to the
 * request that set it (its I/O context, which ends with that request), so one request's timer must
 * not serve another's deadline: there each deadline has a timer of its own, as before.
 *
 * @module
 */

/** A pending deadline: {@link after}. */
export interface Deadline {
  /** Stops the deadline; it never fires afterwards. Idempotent. */
  cancel(): void;
}

interface Entry extends Deadline {
  due: number;
  fire: (() => void) | undefined;
}

/** The deadlines of one duration, in the order they fall due. */
interface Queue {
  entries: Entry[];
  /** Entries before it have fired or were cancelled. */
  head: number;
  /** Cancelled since the last compaction (a trigger, not an exact count). */
  dead: number;
}

/** Whether one timer may serve every request's deadlines (see the module doc). */
const SHARED = typeof (globalThis as { Deno?: unknown }).Deno === "object";

const queues = new Map<number, Queue>();
/** Deadlines set and neither fired nor cancelled, over all durations. */
let live = 0;
/** The one timer, armed for the earliest pending deadline (or earlier: one found cancelled then). */
let timer: ReturnType<typeof setTimeout> | undefined;
let timerDue = Infinity;
let firing = false;

/** Nothing pending: the timer is cleared and the queues emptied. */
function reset(): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  timerDue = Infinity;
  for (const q of queues.values()) {
    q.entries = [];
    q.head = 0;
    q.dead = 0;
  }
}

function arm(due: number): void {
  if (timer !== undefined) clearTimeout(timer);
  timerDue = due;
  timer = setTimeout(run, Math.max(0, due - performance.now()));
}

function cancelled(q: Queue): void {
  if (--live === 0) return reset();
  // Cancelled entries wait for their turn at the head; when they are most of a long queue (a slow
  // call holds the head of a long duration), the queue keeps only the pending ones.
  if (++q.dead > 1024 && q.dead * 2 > q.entries.length - q.head) {
    q.entries = q.entries.slice(q.head).filter((e) => e.fire !== undefined);
    q.head = 0;
    q.dead = 0;
  }
}

function run(): void {
  timer = undefined;
  timerDue = Infinity;
  firing = true;
  try {
    const now = performance.now();
    for (const q of queues.values()) {
      while (q.head < q.entries.length) {
        const e = q.entries[q.head];
        if (e.fire !== undefined && e.due > now) break;
        q.head++;
        const fire = e.fire;
        if (fire === undefined) continue;
        e.fire = undefined;
        live--;
        fire();
      }
    }
  } finally {
    firing = false;
  }
  if (live === 0) return reset();
  let next = Infinity;
  for (const q of queues.values()) {
    while (q.head < q.entries.length && q.entries[q.head].fire === undefined) q.head++;
    if (q.head > 1024 && q.head * 2 > q.entries.length) {
      q.entries = q.entries.slice(q.head);
      q.head = 0;
    }
    if (q.head < q.entries.length) next = Math.min(next, q.entries[q.head].due);
  }
  if (timer === undefined) arm(next);
}

/**
 * Calls `fire` once, `ms` milliseconds from now, unless the deadline is cancelled first. `fire` must
 * not throw.
 *
 * @example
 * ```ts
 * const d = after(60_000, () => ac.abort(new DOMException("timed out", "TimeoutError")));
 * try { await work(ac.signal); } finally { d.cancel(); }
 * ```
 */
export function after(ms: number, fire: () => void): Deadline {
  if (!SHARED) {
    const timer = setTimeout(fire, ms);
    return { cancel: () => clearTimeout(timer) };
  }
  let q = queues.get(ms);
  if (q === undefined) queues.set(ms, q = { entries: [], head: 0, dead: 0 });
  const queue = q;
  const entry: Entry = {
    due: performance.now() + ms,
    fire,
    cancel: () => {
      if (entry.fire === undefined) return;
      entry.fire = undefined;
      cancelled(queue);
    },
  };
  queue.entries.push(entry);
  live++;
  if (!firing && entry.due < timerDue) arm(entry.due);
  return entry;
}
