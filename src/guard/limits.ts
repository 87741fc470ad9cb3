/**
 * Limits that bound every guard call, with their defaults and the typed error raised when one is hit.
 *
 * The defaults for memory, backend calls, input and output sizes are gh-aw-mcpg's (see
 * `internal/guard/wasm_lifecycle.go` / `wasm_exec.go` in the reference): a guard that runs there runs
 * here with the same headroom. Fuel and the per-call deadline are ours; the reference relies on the
 * tool-call context alone, which cannot stop CPU-bound wasm on a JS runtime (timers never fire while
 * wasm runs on the same thread).
 *
 * @module
 */

/** A WebAssembly page is 64 KiB. */
export const WASM_PAGE_BYTES = 65_536;
/** Largest 32-bit memory: 65536 pages = 4 GiB. */
export const MAX_WASM32_PAGES = 65_536;

/**
 * Bulk memory operations (`memory.fill`, `memory.copy`, `memory.init`) spend one fuel unit per this
 * many bytes of their length operand, before they run. A plain unit (one loop iteration or function
 * entry) is ~0.5 ns for the tightest loop on the reference VM; `memory.fill`/`memory.copy` measured
 * 0.05-0.16 ns per byte, so 16 bytes cost about one plain unit and a slice of fuel holds about as
 * much bulk work as plain work. `memory.grow` spends the same per byte it adds. A power of two: the
 * charge is a shift.
 */
export const BULK_BYTES_PER_FUEL_UNIT = 16;
/**
 * Fuel units per table entry that `table.fill`, `table.copy`, `table.init` or `table.grow` writes.
 * V8 measured 66 ns (copy), 144 ns (fill) and up to 480 ns (grow) per funcref entry, i.e. hundreds
 * of plain units; 256 keeps a slice of table work within a few times a slice of plain work. A power
 * of two.
 */
export const TABLE_ENTRY_FUEL_UNITS = 256;
/**
 * A table charge counts at most this many entries (2^22 × 256 = 2^30 units, so the i32 counter never
 * wraps); such an operation fails anyway, tables are capped far below.
 */
export const TABLE_CHARGE_ENTRIES = 2 ** 22;
/** A `memory.grow` charge counts at most this many pages (4 GiB, 2^28 units); more always fails. */
export const MEMORY_GROW_CHARGE_PAGES = 65_536;
/**
 * `memory.fill`, `memory.copy` and `memory.init` run in chunks of at most this many bytes, each
 * charged before it runs, so the host's fuel check (and with it a yield or a stop) can come between
 * two chunks: one wasm instruction cannot be interrupted. On never-touched pages a fill costs up to
 * ~5 ns per byte (page faults; ~0.06 ns once touched), so a 256 KiB chunk holds the thread for about
 * 1 ms at worst, while the per-chunk overhead (a few instructions) stays far below 0.1 % of a chunk
 * on touched memory. A multiple of `BULK_BYTES_PER_FUEL_UNIT`, so the chunks of one operation spend
 * exactly what one charge of its whole length would.
 */
export const BULK_MEMORY_CHUNK_BYTES = 256 * 1024;
/**
 * `table.fill`, `table.copy` and `table.init` run in chunks of at most this many entries (see
 * `BULK_MEMORY_CHUNK_BYTES`): at the 66-144 ns per entry V8 measured, 4,096 entries take 0.3-0.6 ms.
 */
export const BULK_TABLE_CHUNK_ENTRIES = 4_096;

/**
 * The host sizes each fuel refill so that the next check comes about this many ms later (from the
 * rate the guard spent the previous refill at). With checks this close, a yield (every
 * `yieldIntervalMs`) is never much later than due, whatever one fuel unit costs in this guard.
 */
export const FUEL_CHECK_TARGET_MS = 1;
/**
 * Smallest refill the adaptation hands out: a check costs ~0.2 µs, so even a guard whose units are
 * all expensive spends far less than 1 % of its time in checks at this size.
 */
export const MIN_FUEL_REFILL = 1_000;
/**
 * Fuel units every call of a host import costs (`call_backend`, `host_log`, any WASI function),
 * charged by the host when the call arrives. A JSPI round trip through `call_backend` measured
 * ~1.2 µs and a plain import call ~0.1 µs, i.e. hundreds to thousands of plain units: without a
 * charge, a guard calling an import in a loop would spend one unit per ~µs and outlive its budget by
 * far.
 */
export const HOST_CALL_FUEL_UNITS = 1_000;

/**
 * Granularity of the written-pages record of pooled memories (`wasm/rewrite.ts`, "Written pages"):
 * one byte per 4 KiB block of guard memory. A reused memory gets the blocks a session wrote (and the
 * block after each, for writes that straddle two) set to zero, not all of it.
 */
export const WRITTEN_BLOCK_BYTES = 4096;

/** Every limit a guard call runs under. All are per export call unless stated otherwise. */
export interface GuardLimits {
  /** Linear memory cap in 64 KiB pages; the prepared module's declared maximum is clamped to it. */
  maxMemoryPages: number;
  /** `call_backend` calls allowed per export call; the next one returns -1 without calling (reference: 50). */
  maxBackendCalls: number;
  /** Largest input JSON written into the guard, in bytes (reference: 8 MiB). */
  maxInputBytes: number;
  /** First output buffer size offered to the guard, in bytes (reference: 4 MiB). */
  initialOutputBytes: number;
  /** Largest output buffer the host will allocate after `-2` retries, in bytes (reference: 16 MiB). */
  maxOutputBytes: number;
  /** Attempts per export call, counting the first (reference: 3). */
  maxOutputAttempts: number;
  /**
   * Fuel budget per export call, in fuel units: one unit is spent at every function entry and every
   * loop iteration. Deterministic, so it bounds CPU even where the clock is frozen (Workers).
   */
  fuel: number;
  /** Fuel units between two host checks (the slow path): smaller = faster abort, more overhead. */
  fuelSlice: number;
  /** The fuel check yields to the event loop when this many ms passed since the last yield. */
  yieldIntervalMs: number;
  /** Wall-clock deadline per export call in ms (includes time suspended in `call_backend`). */
  timeoutMs: number;
  /**
   * Module shape, checked at load time (see `src/guard/wasm/caps.ts`): entries over ALL tables of an
   * instance. Each funcref/externref entry costs the engine a pointer or more, so 10^7 entries are
   * ~80 MiB outside the memory cap; declared maxima are clamped so `table.grow` past it returns -1.
   */
  maxTableEntries: number;
  /** Functions (imported + defined) a module may declare; V8's own ceiling is 1,000,000. */
  maxFunctions: number;
  /** Globals (imported + defined) a module may declare. */
  maxGlobals: number;
  /** Data segments a module may declare. */
  maxDataSegments: number;
  /** Bytes over all data segments (active and passive). */
  maxDataBytes: number;
  /** Element segments a module may declare. */
  maxElementSegments: number;
  /** Entries over all element segments (active, passive and declarative). */
  maxElementEntries: number;
  /**
   * Distinct `label_agent` inputs (policies) per guard whose post-`label_agent` state the host keeps
   * as a snapshot, so that a fresh instance starts from it instead of running `label_agent` again
   * (see `src/guard/snapshot.ts`; modules with pooled memories only). 0 turns snapshots off: every
   * instance runs `label_agent` itself. May be 0, as `memoryPoolBytes` may.
   */
  labelAgentSnapshots: number;
  /**
   * Resident bytes of guard memories a guard keeps from finished sessions for later ones (see
   * "Memory pool" in `src/guard/host.ts`): every block written is zeroed before the next use. A set
   * of memories counts the 4 KiB blocks that were ever written in it (by instantiation's data
   * segments, its sessions or the host), not its size: pages never written take no memory. A set
   * counting more than half of this is not kept. 0 turns the pool off: every instance gets new
   * memories.
   */
  memoryPoolBytes: number;
  /**
   * Instances of finished sessions a guard keeps for later sessions (see "Instance pool" in
   * `src/guard/host.ts`): an instance that ended with no failure and no call on its stack is set
   * back to exactly a new instance's state (memories, mutable globals, memory sizes; tables must be
   * unchanged) and reused. Its memories count against `memoryPoolBytes`. 0 turns it off: every
   * session gets a new instance.
   */
  idleInstances: number;
  /**
   * Bytes of a guard's call memo (see `src/guard/memo.ts`): answers to calls it has made before,
   * given again without an instance while every `call_backend` answer they used is still the one
   * the `call_backend` cache holds. 0 turns it off: every session runs the guard.
   */
  callMemoBytes: number;
}

/**
 * Largest snapshot image the host keeps (the bytes in which the snapshot instance's memories differ
 * from a fresh instance's, in 4 KiB blocks): restoring copies them into every fresh instance, and a
 * guard keeps up to `labelAgentSnapshots` of them for the isolate's lifetime (16 MiB at most with the
 * defaults, inside Workers' 128 MiB). A guard whose `label_agent` dirties more memory than this runs
 * `label_agent` itself instead. The demo and Rust benchmark guards dirty 20-24 KiB.
 */
export const SNAPSHOT_MAX_IMAGE_BYTES = 1024 * 1024;
/**
 * Most table entries (over all tables) an instance may hold to be snapshotted: a capture reads every
 * entry before and after `label_agent` to prove no table changed (the Rust benchmark guard has 93).
 */
export const SNAPSHOT_MAX_TABLE_ENTRIES = 4096;

/** Defaults: the reference's limits plus a fuel budget of roughly one to a few CPU-seconds. */
export const DEFAULT_LIMITS: Readonly<GuardLimits> = Object.freeze({
  maxMemoryPages: 512,
  maxBackendCalls: 50,
  maxInputBytes: 8 * 1024 * 1024,
  initialOutputBytes: 4 * 1024 * 1024,
  maxOutputBytes: 16 * 1024 * 1024,
  maxOutputAttempts: 3,
  fuel: 1_000_000_000,
  fuelSlice: 1_000_000,
  yieldIntervalMs: 4,
  timeoutMs: 10_000,
  // Module shape: generous for real toolchain output (Rust/TinyGo/AssemblyScript guards and every
  // .wasm in node_modules stay far below), small enough that no module holds more than a few MiB
  // outside its linear memory.
  maxTableEntries: 100_000,
  maxFunctions: 100_000,
  maxGlobals: 10_000,
  maxDataSegments: 10_000,
  maxDataBytes: 32 * 1024 * 1024,
  maxElementSegments: 10_000,
  maxElementEntries: 100_000,
  // 16 policies per guard (one per server, a handful of servers per guard module). A capture copies
  // only what the memory pool recorded as written (at most SNAPSHOT_MAX_IMAGE_BYTES), and restoring
  // saves 20-25 % of a fresh request with the pool (BENCHMARKS.md §2a).
  labelAgentSnapshots: 16,
  // 32 MiB: a handful of idle memories per guard (the demo guard's is 4.3 MiB after a call with the
  // default 4 MiB output buffer, the Rust benchmark guard's 9.1 MiB); under steady load a session
  // takes the set the previous one gave back, so the pool stays small. Idle sets stay resident.
  memoryPoolBytes: 32 * 1024 * 1024,
  // Enough for a steady load on one isolate; a burst's extra instances are let go (their memories
  // may still be pooled).
  idleInstances: 16,
  // 8 MiB: thousands of small label_agent / label_resource answers (an entry is its input, output,
  // log lines and the call_backend answers it depends on; inputs over 32 KiB are never kept).
  callMemoBytes: 8 * 1024 * 1024,
});

/** What went wrong in a guard call. Stable strings: the CLI, logs and clients see them. */
export type GuardErrorKind =
  /** fuel budget exhausted */
  | "fuel"
  /** the per-call deadline passed */
  | "timeout"
  /** the caller's AbortSignal fired (client gone, gateway shutdown, tool timeout) */
  | "aborted"
  /** memory or table entries above their cap (all memories / all tables), or memory missing/unusable */
  | "memory"
  /** input JSON larger than `maxInputBytes` */
  | "input_size"
  /** the guard asked for an output buffer above `maxOutputBytes`, or attempts ran out */
  | "output_size"
  /** the guard trapped (unreachable, out of bounds, stack overflow, ...) */
  | "trap"
  /**
   * the module is invalid, does not satisfy the guard ABI (exports, signatures, imports), exceeds a
   * module-shape limit (functions, globals, segments), or carries our preparation mark from outside
   */
  | "abi"
  /** the guard called WASI `proc_exit` */
  | "proc_exit"
  /** the guard returned a negative error code, or alloc failed */
  | "guard_error"
  /** JSPI (WebAssembly.Suspending / promising) is missing from this runtime */
  | "runtime";

/** The one error type the guard host throws. `limit`/`value` name the limit that was hit, if any. */
export class GuardError extends Error {
  readonly kind: GuardErrorKind;
  readonly limit?: keyof GuardLimits;
  readonly value?: number;
  constructor(
    kind: GuardErrorKind,
    message: string,
    opts: { limit?: keyof GuardLimits; value?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "GuardError";
    this.kind = kind;
    this.limit = opts.limit;
    this.value = opts.value;
  }
}

/** Limits whose 0 turns a mechanism off. */
const OFF_WITH_ZERO: ReadonlySet<string> = new Set([
  "labelAgentSnapshots",
  "memoryPoolBytes",
  "idleInstances",
  "callMemoBytes",
]);

/**
 * Merges partial limits over the defaults and validates every field (positive integers, sane order).
 *
 * @example
 * ```ts
 * const limits = resolveLimits({ fuel: 5_000_000 });
 * ```
 * @throws {RangeError} naming the bad field.
 */
export function resolveLimits(partial: Partial<GuardLimits> = {}): GuardLimits {
  const out = { ...DEFAULT_LIMITS, ...partial };
  for (const [k, v] of Object.entries(out)) {
    if (OFF_WITH_ZERO.has(k) && v === 0) {
      continue; // 0 = off
    }
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new RangeError(`limits.${k} must be a positive integer, got ${JSON.stringify(v)}`);
    }
  }
  if (out.maxMemoryPages > MAX_WASM32_PAGES) {
    throw new RangeError(
      `limits.maxMemoryPages must be at most ${MAX_WASM32_PAGES} (4 GiB), got ${out.maxMemoryPages}`,
    );
  }
  if (out.initialOutputBytes > out.maxOutputBytes) {
    throw new RangeError(
      `limits.initialOutputBytes (${out.initialOutputBytes}) must not exceed limits.maxOutputBytes (${out.maxOutputBytes})`,
    );
  }
  if (out.fuelSlice > 0x3fffffff) {
    throw new RangeError(`limits.fuelSlice must be at most ${0x3fffffff}, got ${out.fuelSlice}`);
  }
  return out;
}
