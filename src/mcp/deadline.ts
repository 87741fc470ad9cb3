/**
 * Deadlines that are almost always cancelled before they are due, for the per-call timeouts of the
 * proxy (a `tools/call`'s deadline, the wait for an SSE reply's first answer, the bound on reading
 * the rest of a reply). A runtime timer per call costs more than the rest of the bookkeeping (on Deno
 * each `setTimeout` makes a Node-compatible `Timeout` object with an async id); here the deadlines of
 * one duration share one timer, since they fall due in the order they were set.
 *
 * A deadline fires no earlier than a `setTimeout` of the same duration set at the same moment would,
 * and as soon after as the shared timer runs. When every deadline of a duration is cancelled or has
 * fired, its timer is cleared, so nothing stays scheduled (and nothing keeps a process alive) once
 * the calls are over.
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
class Queue {
  #entries: Entry[] = [];
  #head = 0;
  #live = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #firing = false;

  constructor(readonly ms: number) {}

  add(fire: () => void): Deadline {
    const entry: Entry = {
      due: performance.now() + this.ms,
      fire,
      cancel: () => {
        if (entry.fire === undefined) return;
        entry.fire = undefined;
        this.#settled();
      },
    };
    this.#entries.push(entry);
    this.#live++;
    if (this.#timer === undefined && !this.#firing) this.#arm(entry.due);
    return entry;
  }

  /** One deadline less pending; with none left, the queue and its timer are cleared. */
  #settled(): void {
    if (--this.#live > 0) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#entries = [];
    this.#head = 0;
  }

  #arm(due: number): void {
    this.#timer = setTimeout(() => this.#run(), Math.max(0, due - performance.now()));
  }

  #run(): void {
    this.#timer = undefined;
    this.#firing = true;
    try {
      const now = performance.now();
      while (this.#head < this.#entries.length) {
        const e = this.#entries[this.#head];
        if (e.fire !== undefined && e.due > now) break;
        this.#head++;
        const fire = e.fire;
        if (fire === undefined) continue;
        e.fire = undefined;
        this.#settled();
        fire();
      }
    } finally {
      this.#firing = false;
    }
    // Drop what is behind the head once it is most of the array.
    if (this.#head > 1024 && this.#head * 2 > this.#entries.length) {
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
    while (this.#head < this.#entries.length && this.#entries[this.#head].fire === undefined) this.#head++;
    if (this.#live > 0 && this.#timer === undefined) this.#arm(this.#entries[this.#head].due);
  }
}

const queues = new Map<number, Queue>();

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
  let q = queues.get(ms);
  if (q === undefined) queues.set(ms, q = new Queue(ms));
  return q.add(fire);
}
