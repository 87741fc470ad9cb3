/**
 * The call memo: a guard's answers to calls it has already answered, so that a session whose calls
 * repeat an earlier session's needs no instance at all.
 *
 * Why an answer from the memo is the answer a fresh instance would give (the isolation argument,
 * enforced by `WasmGuardSession` in `host.ts`):
 *
 * - A guard run is deterministic given its module, the state its instance starts the call in, the
 *   export, the input bytes and what every host import answered. The host's imports answer
 *   deterministically except `call_backend` (upstream data) and WASI `random_get`; the fake WASI
 *   clocks advance per instance from a fixed start, so a run from a fresh instance repeats them.
 * - An entry is keyed by the state it starts in and the export and input text. States are chained:
 *   state 0 is a fresh instance, and each entry names the state its call leads to. A session that has
 *   made calls A then B starts B in A's state only if A was itself answered from the memo or recorded
 *   by a run that was pure so far; so the key fixes the whole history of the instance.
 * - An entry is recorded only from a run that succeeded and used no `random_get`, and whose
 *   `call_backend` answers all came from the gateway's `call_backend` cache. Each answer is kept as
 *   the cache's own (frozen) value, and the entry answers only while the cache still holds that very
 *   value for the same lookup (`GuardContext.backendPeek`, compared by identity): a call now would
 *   receive exactly the answers the recorded run received. An answer the cache no longer holds
 *   (expired, evicted, cache off) makes the entry miss.
 * - Failures (traps, fuel, deadlines, aborts, negative codes) are never recorded: every failing call
 *   runs on an instance of its own.
 * - A session answered from the memo has no instance. Its first call the memo cannot answer creates
 *   one and replays the session's earlier calls on it, with the recorded `call_backend` answers, and
 *   fails closed (a `guard_error`, the session dead) if any replayed call answers differently from
 *   what the session already returned. Only then does the new call run.
 *
 * What an operator sees: a memo hit spends no fuel and makes no `call_backend` call (its usage says
 * so), and the recorded log lines are written again. The memo holds inputs and answers (which can
 * contain upstream data) for the isolate's lifetime, bounded by `limits.callMemoBytes`, least
 * recently used first out; an agent that repeats another agent's exact call gets its answer faster,
 * as with the `call_backend` cache. `limits.callMemoBytes: 0` turns it off.
 *
 * No Deno APIs here: this module also runs in workerd.
 *
 * @module
 */
import type { SnapshotLog } from "./snapshot.ts";

/** Inputs longer than this (UTF-16 units) are not memoised: hashing them on every miss costs more. */
export const MEMO_MAX_INPUT_CHARS = 32 * 1024;
/** Most entries one guard's memo holds, whatever their size. */
export const MEMO_MAX_ENTRIES = 4096;
/** Bytes an entry is charged on top of its texts (the entry, its key and arrays). */
const ENTRY_OVERHEAD_BYTES = 160;

/** One `call_backend` answer a recorded run received. */
export interface MemoBackendAnswer {
  tool: string;
  /** The arguments as the guard wrote them (replay checks the guard asks the same). */
  argsText: string;
  /** The parsed arguments (the cache lookup). */
  args: unknown;
  /** The cache's value the guard received, compared by identity. */
  value: unknown;
  /** Length of its JSON text (what the entry keeps alive is charged to the memo). */
  bytes: number;
}

/** A recorded call. */
export interface MemoEntry {
  /** The state this call leads to. */
  readonly state: number;
  readonly fn: string;
  readonly input: string;
  readonly output: string;
  readonly answers: readonly MemoBackendAnswer[];
  readonly logs: readonly SnapshotLog[];
  readonly bytes: number;
  readonly key: string;
}

/** Counters of one memo. */
export interface MemoStats {
  entries: number;
  bytes: number;
  hits: number;
  recorded: number;
}

/** The key of the call of `fn(input)` in `state`. */
function memoKey(state: number, fn: string, input: string): string {
  return `${state}\n${fn}\n${input}`;
}

/**
 * One guard's memo: entries by key, least recently used first, bounded in entries and bytes.
 *
 * @example
 * ```ts
 * const memo = new CallMemo(8 << 20);
 * const e = memo.record(0, "label_agent", policy, output, [], []);
 * memo.find(0, "label_agent", policy) === e; // true
 * ```
 */
export class CallMemo {
  readonly #entries = new Map<string, MemoEntry>();
  readonly #maxBytes: number;
  #bytes = 0;
  #nextState = 1;
  #hits = 0;
  #recorded = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** True when `input` may be memoised at all (the lookup is worth its hashing). */
  static accepts(input: string): boolean {
    return input.length <= MEMO_MAX_INPUT_CHARS;
  }

  /** The entry for `fn(input)` in `state`, made most recently used; the caller checks its answers. */
  find(state: number, fn: string, input: string): MemoEntry | undefined {
    const key = memoKey(state, fn, input);
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, e);
    return e;
  }

  /** Counts an answer given from the memo. */
  hit(): void {
    this.#hits++;
  }

  /** Drops `e` (its answers are gone from the cache: it can never answer again). */
  forget(e: MemoEntry): void {
    if (this.#entries.get(e.key) !== e) return;
    this.#entries.delete(e.key);
    this.#bytes -= e.bytes;
  }

  /**
   * Records `fn(input)` in `state` with a new state of its own, replacing an entry for the same key
   * (two sessions may record the same call; either entry is right). Undefined when the entry alone
   * would exceed a sixteenth of the memo (it is not kept; the session goes on without the memo).
   */
  record(
    state: number,
    fn: string,
    input: string,
    output: string,
    answers: MemoBackendAnswer[],
    logs: SnapshotLog[],
  ): MemoEntry | undefined {
    const key = memoKey(state, fn, input);
    let bytes = ENTRY_OVERHEAD_BYTES + 2 * (key.length + output.length);
    for (const a of answers) {
      bytes += ENTRY_OVERHEAD_BYTES + 2 * (a.tool.length + a.argsText.length) + a.bytes;
    }
    for (const l of logs) bytes += ENTRY_OVERHEAD_BYTES + 2 * l.msg.length;
    if (bytes > this.#maxBytes / 16) return undefined;
    const old = this.#entries.get(key);
    if (old !== undefined) this.forget(old);
    const e: MemoEntry = { state: this.#nextState++, fn, input, output, answers, logs, bytes, key };
    this.#entries.set(key, e);
    this.#bytes += bytes;
    this.#recorded++;
    for (const [k, oldest] of this.#entries) {
      if (this.#bytes <= this.#maxBytes && this.#entries.size <= MEMO_MAX_ENTRIES) break;
      this.#entries.delete(k);
      this.#bytes -= oldest.bytes;
    }
    return e;
  }

  stats(): MemoStats {
    return { entries: this.#entries.size, bytes: this.#bytes, hits: this.#hits, recorded: this.#recorded };
  }
}
