/**
 * The WebAssembly guard host: runs a prepared guard with gh-aw-mcpg's exact call protocol
 * (`specs/guard-abi.md` §1) under hard limits.
 *
 * - A guard module is compiled (or verified) once per isolate by {@link loadGuardModule}.
 * - Every {@link WasmGuard.open} gets an instance in exactly a new instance's state: a new
 *   `WebAssembly.Instance`, or one from the instance pool (below) set back to that state. A guard that
 *   traps, runs out of fuel or is aborted never affects another request (its instance is never used
 *   again), and no request's data reaches another. With the call memo (`memo.ts`) a session whose
 *   calls repeat an earlier session's gets no instance at all.
 * - Exports run through `WebAssembly.promising`; `env.call_backend` is a `WebAssembly.Suspending`
 *   import, so the guard calls the upstream synchronously while the event loop keeps running.
 * - The fuel check import (injected by the preparer) is also `Suspending`: it returns synchronously
 *   on the fast path and yields a macrotask every `yieldIntervalMs`. It never throws: when the
 *   session's signal fires, the per-call deadline passes or the fuel budget is spent, it STOPS the
 *   instance (leaves the counter negative and clears the "check allowed" global), and the injected
 *   code traps with `unreachable`. A trap cannot be caught by wasm exception handlers (legacy
 *   `catch_all` or `try_table`/`catch_all_ref`), so a guard cannot swallow its own stop; the host
 *   reports the typed error that caused the stop, not the trap. Timers and the signal stop the
 *   instance the same way, and once stopped every host import refuses (`call_backend` returns -1,
 *   WASI returns `ECANCELED`, `host_log` drops) and every later fuel point traps at once.
 * - How much fuel one refill hands out adapts to the guard's speed, so that the next check comes
 *   about `FUEL_CHECK_TARGET_MS` later (never more than `fuelSlice`); the count-based budget stays
 *   exact and deterministic whatever the refill sizes.
 *
 * Knowing differences from the reference: instances are per request, not per server (so
 * `label_agent` runs on each instance, or its result is restored from a snapshot, see below), and a
 * trap kills only its own session; timeouts, aborts and limit hits also end the session. Negative
 * guard codes, alloc failures and output-size errors do not (as in the reference).
 *
 * Label-agent snapshots (`limits.labelAgentSnapshots`, 0 = off): the first session whose first call
 * is `label_agent(input)` for an input not seen before records the instance's state right after it
 * (`snapshot.ts` gives the isolation argument); later sessions whose first call is `label_agent`
 * with the identical input start from that state (memory image, mutable globals, the answer and
 * the log lines) instead of running the start function and `label_agent`. A run that used
 * `call_backend` or any WASI function, changed a table, or a module the preparer did not mark as
 * snapshot-able is never snapshotted: those sessions run `label_agent` as before. A restored
 * session spends no fuel on `label_agent` (nothing runs) and its usage reports none.
 *
 * Memory pool (`limits.memoryPoolBytes`, 0 = off): the preparer turns a guard's memories into
 * imports (`wasm/rewrite.ts`, "Pooled memories"). When a session ends with no export call on its
 * wasm stack (none running, none suspended in `call_backend`), its instance is dropped and its
 * memories are kept for a later session. Every write into them was recorded per 4 KiB block (the
 * preparer's "Written pages"; the host records its own writes through `markWritten`), so before
 * the later session gets them every written block is set to zero, and instantiation writes its data
 * segments again: exactly the contents of a new memory, without the page faults of one (on this
 * kind of VM the first write to each 4 KiB page of a new memory costs ~12 µs, which made a fresh
 * instance cost 7-9x a call on a warm one), and without touching pages nobody wrote. A session
 * that ended while a host write was half done cannot leave anything unrecorded: the host records a
 * range before it writes it. The size the guard sees
 * (`memory.size`, `memory.grow`) starts at the module's minimum whatever the memory's real size;
 * only accesses between that size and the real one read zeros instead of trapping. A session that
 * is closed while its call is still on the stack gives nothing back: that stack could resume and
 * write. Idle memories are bounded by the memory they hold resident (at most `memoryPoolBytes`, no
 * set above half of it), so a burst's memories do not stay resident beyond that. A set counts the
 * blocks ever written in it, each once, not its size: a demo-guard set is 4.3 MiB of memory of
 * which ~250 KiB was ever written, so counting sizes kept 7 sets where 64 concurrent requests
 * needed 64, and the other 57 paid a new memory's page faults on every request.
 *
 * Instance pool (`limits.idleInstances`, 0 = off; modules whose whole state the host can read and
 * write, as for snapshots, with pooled memories): `new WebAssembly.Instance` of a large module costs
 * tens of µs in V8 alone (the 275 KB Rust benchmark guard ~45 µs) plus first-call effects. So an
 * instance whose session ended with no failure of any kind and no call on its stack goes back to
 * the guard with its memories. Before the next session gets it, every written block is set back to
 * what instantiation left there (the first new instance's bytes up to its last non-zero byte: the
 * data segments; zeros beyond), every mutable global and page global to its initial value (read
 * from the first new instance), and the start function runs again before the first call. Tables
 * cannot be reset from JS by value, so an instance whose table entries or sizes differ from its own
 * when it was new is not kept. The instance's imports act for whichever session holds it (an
 * `InstanceOwner`), and each session gets its own WASI state (clocks from their start). Trapped,
 * stopped, aborted, timed-out instances and instances closed mid-call are never reused.
 *
 * A start function would run inside `new WebAssembly.Instance`, where no `Suspending` import can be
 * called (V8 throws a catchable `SuspendError` even for one that would return synchronously). So the
 * preparer drops the start section and exports the function as `START_EXPORT`; the host runs it
 * through JSPI right before the session's first export call, under that call's fuel, deadline and
 * signal (a spinning start function ends like a spinning export, with a typed error).
 *
 * No Deno APIs here: this module also runs in workerd.
 *
 * @module
 */
import type { Guard, GuardContext, GuardSession, GuardUsage } from "../difc/guard.ts";
import { assertJspi } from "./jspi.ts";
import {
  BULK_BYTES_PER_FUEL_UNIT,
  FUEL_CHECK_TARGET_MS,
  GuardError,
  type GuardErrorKind,
  type GuardLimits,
  HOST_CALL_FUEL_UNITS,
  MIN_FUEL_REFILL,
  resolveLimits,
  WASM_PAGE_BYTES,
  WRITTEN_BLOCK_BYTES,
} from "./limits.ts";
import {
  FUEL_GLOBAL_EXPORT,
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  FUEL_INITIAL,
  LABEL_EXPORTS,
  pooledMemoryLimits,
  type PreparedMark,
  preparedModuleProblem,
  type PreparedRecord,
  prepareGuard,
  readPreparedMark,
  validateGuardAbi,
} from "./prepare.ts";
import {
  captureSnapshot,
  type InstanceSnapshot,
  type PristineState,
  pristineState,
  restoreSnapshot,
  type SnapshotLog,
  type SnapshotShape,
  snapshotShape,
  tableChange,
} from "./snapshot.ts";
import {
  memoryExportName,
  MODULE_CAP_KEYS,
  pagesExportName,
  pickCaps,
  pooledMemoryImportName,
  WRITTEN_IMPORT_NAME,
} from "./wasm/caps.ts";
import { writtenLayout } from "./wasm/rewrite.ts";
import { CallMemo, type MemoBackendAnswer, type MemoEntry } from "./memo.ts";
import { FUEL_CHECK_ALLOWED_EXPORT, START_EXPORT, WASI_MODULE } from "./wasm/host_signatures.ts";
import { createWasi, ProcExit } from "./wasi.ts";
import { errorMessage, raceSignal } from "../util.ts";

/** The label exports take (input_ptr, input_len, output_ptr, output_size). */
const LABEL_EXPORT_ARITY = 4;
/** Shared, stateless UTF-8 codecs (one per isolate, not one per session). */
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();
/** Errors that end a session: the instance may be in any state afterwards. */
const FATAL_KINDS: ReadonlySet<GuardErrorKind> = new Set([
  "trap",
  "fuel",
  "timeout",
  "aborted",
  "memory",
  "proc_exit",
]);
const HOST_LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
/**
 * Reason for the end-of-call abort that releases anything still tied to a finished call. One shared
 * instance: `abort()` without a reason builds a DOMException with a stack trace on every call.
 */
const CALL_ENDED = new GuardError("aborted", "guard call ended");

/** Options for {@link loadGuardModule} and {@link WasmGuard}. */
export interface WasmGuardOptions {
  /** Guard name used in logs and errors (the reference uses the server id). Default `"guard"`. */
  name?: string;
  /** Limits; missing fields take `DEFAULT_LIMITS`. */
  limits?: Partial<GuardLimits>;
  /**
   * Require (and, when preparing bytes, inject) fuel metering. Default `true`. Without fuel a
   * CPU-bound guard can only be stopped by the deadline check at `call_backend`, i.e. not at all.
   */
  fuel?: boolean;
  /**
   * For a compiled `WebAssembly.Module` only: the record our build wrote when it prepared the module
   * (`scripts/build.ts` puts it in the generated manifest). Without it a compiled module is refused.
   */
  prepared?: PreparedRecord;
  /**
   * Tests only: check every reused pooled memory, right after instantiation, against what a new
   * memory held at that point, and fail the session if it differs (proves that every write was
   * recorded; costs a scan of the whole memory).
   */
  verifyPoolReset?: boolean;
}

/** A wasm guard session: a {@link GuardSession} whose usage also counts every memory and table. */
export interface WasmGuardSessionApi extends GuardSession {
  usage(): WasmGuardUsage;
}

/** What a wasm session reports: {@link GuardUsage} plus what the instance held besides memory 0. */
export interface WasmGuardUsage extends GuardUsage {
  /** Pages over ALL memories of the instance (`memoryPages` counts the ABI memory only). */
  totalMemoryPages: number;
  /** Memories and tables the instance holds, and entries over all tables. */
  memories: number;
  tables: number;
  tableEntries: number;
}

/**
 * Loads a guard once per isolate.
 *
 * - Bytes (a path's contents on Deno, or any caller's bytes): ALWAYS prepared here (validation, ABI,
 *   caps, fuel injection) and then compiled. Bytes that already carry our mark, our fuel import or
 *   reserved exports are refused: a mark from outside is never trusted.
 * - A compiled `WebAssembly.Module` (Workers, where runtime compilation is forbidden): accepted only
 *   with `opts.prepared`, the record our build wrote for it (see {@link guardFromPreparedModule}).
 *
 * @example
 * ```ts
 * const guard = await loadGuardModule(await Deno.readFile("guard.wasm"), { name: "github" });
 * const session = guard.open({ signal, backend, log });
 * const agent = await session.labelAgent(policyJson);
 * ```
 * @throws {GuardError} kind `"abi"` for unusable or unprepared modules, `"runtime"` without JSPI.
 */
export async function loadGuardModule(
  source: Uint8Array | WebAssembly.Module,
  opts: WasmGuardOptions = {},
): Promise<WasmGuard> {
  if (source instanceof WebAssembly.Module) return guardFromPreparedModule(source, opts);
  assertJspi();
  const name = opts.name || "guard";
  const limits = resolveLimits(opts.limits);
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = prepareGuard(source, { caps: pickCaps(limits), fuel: opts.fuel ?? true }).bytes;
  } catch (e) {
    if (!(e instanceof GuardError)) throw e;
    throw new GuardError(e.kind, `guard '${name}': ${e.message}`, {
      limit: e.limit,
      value: e.value,
      cause: e,
    });
  }
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compile(bytes);
  } catch (e) {
    throw new GuardError("abi", `guard '${name}' does not compile: ${errorMessage(e)}`, { cause: e });
  }
  return new WasmGuard(module, opts);
}

/**
 * The Workers path of {@link loadGuardModule}, synchronous and free of the preparer and of runtime
 * compilation (so a bundle that uses only this function contains neither): accepts an already
 * compiled module only when its preparation mark equals the one in `opts.prepared` (the record our
 * build wrote when it prepared the module), and every cap the mark binds is within the limits.
 *
 * @param remedy what the operator should do when the module is refused.
 * @example
 * ```ts
 * import { guards, records } from "./worker_guards.js";
 * const guard = guardFromPreparedModule(guards.github, { name: "github", prepared: records.github });
 * ```
 * @throws {GuardError} kind "abi" (with `limit` for a cap above the limits).
 */
export function guardFromPreparedModule(
  module: WebAssembly.Module,
  opts: WasmGuardOptions = {},
  remedy = "run the guard preparer at build time; a compiled module cannot be prepared at runtime",
): WasmGuard {
  assertJspi();
  const name = opts.name || "guard";
  const proof = preparedModuleProblem(module, opts.prepared);
  if ("problem" in proof) {
    throw new GuardError(
      "abi",
      `guard '${name}' is not a module our build prepared: ${proof.problem} (${remedy})`,
    );
  }
  const wantFuel = opts.fuel ?? true;
  checkMark(name, proof.mark, resolveLimits(opts.limits), wantFuel, remedy);
  const guard = new WasmGuard(module, opts);
  // The mark says "metered"; the module must show it too (a record copied onto another module).
  if (wantFuel && !guard.metered) {
    throw new GuardError("abi", `guard '${name}' carries a fuel mark but imports no fuel check (${remedy})`);
  }
  return guard;
}

/** A proven mark must also fit the limits: every cap at most the limit, fuel when required. */
function checkMark(
  name: string,
  mark: PreparedMark,
  limits: GuardLimits,
  wantFuel: boolean,
  remedy: string,
): void {
  for (const k of MODULE_CAP_KEYS) {
    if (mark.caps[k] > limits[k]) {
      throw new GuardError(
        "abi",
        `guard '${name}' was prepared with ${k}=${mark.caps[k]}, above limits.${k}=${limits[k]} (${remedy})`,
        { limit: k, value: limits[k] },
      );
    }
  }
  if (wantFuel && !mark.fuel) {
    throw new GuardError("abi", `guard '${name}' was prepared without fuel metering (${remedy})`);
  }
}

/** Checks export names/kinds and that every import is one the host provides. */
function checkModuleShape(name: string, module: WebAssembly.Module): { metered: boolean } {
  const exports = WebAssembly.Module.exports(module);
  const imports = WebAssembly.Module.imports(module);
  // The preparer's checks, on what the JS API shows of a compiled module (names and kinds; the
  // signatures were checked when the module was prepared, the arity is checked per instance).
  try {
    validateGuardAbi(exports, imports);
  } catch (e) {
    if (e instanceof GuardError) throw new GuardError("abi", `guard '${name}': ${e.message}`, { cause: e });
    throw e;
  }
  const metered = imports.some((i) => i.module === FUEL_IMPORT_MODULE && i.name === FUEL_IMPORT_NAME);
  for (const global of [FUEL_GLOBAL_EXPORT, FUEL_CHECK_ALLOWED_EXPORT]) {
    if (metered && !exports.some((e) => e.name === global && e.kind === "global")) {
      throw new GuardError(
        "abi",
        `guard '${name}' imports the fuel check but does not export ${global} (prepare it again)`,
      );
    }
  }
  return { metered };
}

/**
 * A loaded guard: one compiled module, a fresh instance per {@link open}.
 *
 * The constructor trusts the module (use {@link loadGuardModule} to prepare or verify it); it still
 * checks export names and imports, and every session checks the memory cap after each call.
 *
 * @example
 * ```ts
 * const guard = new WasmGuard(await WebAssembly.compile(preparedBytes), { name: "demo" });
 * ```
 */
export class WasmGuard implements Guard {
  readonly name: string;
  readonly type = "wasm";
  readonly module: WebAssembly.Module;
  readonly limits: Readonly<GuardLimits>;
  /** True when the module carries the fuel check (prepared with fuel). */
  readonly metered: boolean;
  /**
   * Size of the first refill of the next call: the last size the sessions' fuel checks adapted to
   * (see `FUEL_CHECK_TARGET_MS`), so a guard with expensive units starts its calls with small slices.
   */
  fuelRefill: number;
  /** Reserved exports a snapshot reads and writes; null when the module is never snapshotted. */
  readonly snapshotShape: SnapshotShape | null;
  /** The WASI functions the module imports (a session makes only these). */
  readonly wasiImports: readonly string[];
  /** Names of the module's memory and table exports (what an instance holds, see `heldBy`). */
  readonly heldExports: readonly string[];
  /** Answers to calls made before (see `memo.ts`); null when `limits.callMemoBytes` is 0. */
  readonly memo: CallMemo | null;
  /** Per `label_agent` input: a snapshot, a capture in progress, or why there is none. */
  #snapshots = new Map<string, InstanceSnapshot | "capturing" | { unusable: string }>();
  /** Limits of the pooled memories (from the mark); null when the module defines its memories. */
  readonly #pooled: readonly { min: number; max: number }[] | null;
  /** Memory sets of finished sessions, ready to be zeroed and reused (see "Memory pool"). */
  #idle: PooledSet[] = [];
  /** Where each pooled memory's block bytes start in the written-pages memory, and its size. */
  readonly #written: { bases: number[]; pages: number } | null;
  /** Tests: check every reused memory against a new one (see {@link verifyFresh}). */
  readonly #verifyReset: boolean;
  #pristine: Uint8Array[] = [];
  #idleBytes = 0;
  /** Bytes the data segments make resident in a new set; null when the mark does not say. */
  readonly #dataBytes: number | null;
  #poolCounts = { created: 0, reused: 0, kept: 0, dropped: 0 };
  /** The module's reserved exports when its instances may be reused (see "Instance pool"). */
  readonly #recycle: SnapshotShape | null;
  /** Instances of finished sessions, each with its memories, ready to be reset and reused. */
  #idleInstances: PooledInstance[] = [];
  /**
   * What every new instance holds before its first call, read from the first one: each pooled
   * memory's bytes up to its last non-zero byte (the data segments), every mutable global and page
   * global. Null until the first instance; "none" when instances are not reused (too many table
   * entries to compare, or a larger image than `INSTANCE_POOL_MAX_IMAGE_BYTES`).
   */
  #initial: InitialState | null | "none" = null;
  #instanceCounts = { reused: 0, kept: 0, dropped: 0 };

  constructor(module: WebAssembly.Module, opts: WasmGuardOptions = {}) {
    this.name = opts.name || "guard";
    this.module = module;
    this.limits = Object.freeze(resolveLimits(opts.limits));
    this.metered = checkModuleShape(this.name, module).metered;
    try {
      this.#pooled = pooledMemoryLimits(module);
      this.#written = this.#pooled === null ? null : writtenLayout(this.#pooled);
      const dataBlocks = readPreparedMark(module)?.dataBlocks;
      this.#dataBytes = dataBlocks === undefined ? null : dataBlocks * WRITTEN_BLOCK_BYTES;
    } catch (e) {
      throw new GuardError("abi", `guard '${this.name}': ${errorMessage(e)}`, { cause: e });
    }
    this.#verifyReset = opts.verifyPoolReset === true;
    this.memo = this.limits.callMemoBytes > 0 ? new CallMemo(this.limits.callMemoBytes) : null;
    this.wasiImports = WebAssembly.Module.imports(module).filter((i) => i.module === WASI_MODULE).map((i) =>
      i.name
    );
    const exported = WebAssembly.Module.exports(module);
    this.heldExports = exported.filter((e) => e.kind === "memory" || e.kind === "table").map((e) => e.name);
    // The reserved exports that show an instance's whole state (null: the module keeps state the
    // host cannot read and write, so it is neither snapshotted nor reused).
    const shape = this.#pooled === null
      ? null
      : snapshotShape(module, readPreparedMark(module)?.snapshotGlobals);
    this.snapshotShape = this.limits.labelAgentSnapshots > 0 ? shape : null;
    this.#recycle = this.limits.idleInstances > 0 && this.limits.memoryPoolBytes > 0 ? shape : null;
    // Start small: the first checks measure the guard's speed, and the refill doubles from here up
    // to fuelSlice while checks come faster than FUEL_CHECK_TARGET_MS.
    this.fuelRefill = Math.min(MIN_FUEL_REFILL, this.limits.fuelSlice);
  }

  /**
   * Opens a session on a fresh instance. Never throws: an instantiation failure (start function
   * trap, fuel, abort) is reported by the session's first call.
   */
  open(ctx: GuardContext): WasmGuardSessionApi {
    return new WasmGuardSession(this, ctx);
  }

  /**
   * Memories for a new instance's imports: an idle set whose written blocks are zeroed (see
   * "Memory pool"), or new memories; `undefined` when the module defines its own.
   */
  takeMemories(): PooledSet | undefined {
    if (this.#pooled === null) return undefined;
    const set = this.#idle.pop();
    if (set !== undefined) {
      this.#idleBytes -= set.resident;
      this.#reset(set);
      this.#poolCounts.reused++;
      return set;
    }
    this.#poolCounts.created++;
    const pages = this.#written!.pages;
    return {
      memories: this.#pooled.map((l) => new WebAssembly.Memory({ initial: l.min, maximum: l.max })),
      written: new WebAssembly.Memory({ initial: pages, maximum: pages }),
      touched: new Uint8Array(pages * WASM_PAGE_BYTES / 8),
      resident: this.#dataBytes === null ? 0 : pages * WASM_PAGE_BYTES + this.#dataBytes,
    };
  }

  /**
   * Zeroes every block a finished session recorded as written, and the block after each (a write
   * may straddle two), then clears the record. Blocks never written hold what a new memory holds:
   * zeros, or the data segments the next instantiation writes again. With `images` (a memory that
   * stays with its instance), the written blocks get those initial bytes instead of zeros.
   */
  #reset(set: PooledSet, images?: readonly Uint8Array[]): void {
    const record = new Uint8Array(set.written.buffer);
    const blocksPerPage = WASM_PAGE_BYTES / WRITTEN_BLOCK_BYTES;
    set.memories.forEach((mem, m) => {
      const bytes = new Uint8Array(mem.buffer);
      const image = images?.[m];
      for (const [from, to] of this.writtenRanges(set, m)) {
        // A memory that stays with its instance gets no instantiation: it gets the initial bytes back.
        const kept = image === undefined ? from : Math.max(from, Math.min(to, image.length));
        if (kept > from) bytes.set(image!.subarray(from, kept), from);
        bytes.fill(0, kept, to);
      }
      const base = this.#written!.bases[m];
      record.fill(0, base, base + this.#pooled![m].max * blocksPerPage);
    });
  }

  /**
   * The byte ranges of pooled memory `m` recorded as written since the set's last reset: each run
   * of written blocks and the block after it (a write may straddle two), within the memory.
   */
  writtenRanges(set: PooledSet, m: number): [number, number][] {
    const length = set.memories[m].buffer.byteLength;
    const base = this.#written!.bases[m];
    // Only this memory's blocks: an unbounded indexOf would scan the rest of the record each time.
    const blocks = new Uint8Array(set.written.buffer, base, length / WRITTEN_BLOCK_BYTES);
    const out: [number, number][] = [];
    let i = blocks.indexOf(1);
    while (i >= 0) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] !== 0) j++;
      out.push([i * WRITTEN_BLOCK_BYTES, Math.min(length, (j + 1) * WRITTEN_BLOCK_BYTES)]);
      i = blocks.indexOf(1, j);
    }
    return out;
  }

  /**
   * With `verifyPoolReset` (tests): right after instantiation, a reused set must hold exactly what
   * the first new set held at that point (its data segments, zeros everywhere else).
   */
  verifyFresh(set: PooledSet): void {
    if (!this.#verifyReset) return;
    set.memories.forEach((mem, m) => {
      const now = new Uint8Array(mem.buffer);
      const first = this.#pristine[m] ??= now.slice();
      for (let i = 0; i < now.length; i++) {
        if (now[i] !== (i < first.length ? first[i] : 0)) {
          throw new Error(`guard '${this.name}': reused memory ${m} differs from a new one at byte ${i}`);
        }
      }
    });
  }

  /**
   * Takes back the memories of a session whose instance can never run again (see "Memory pool"),
   * or lets them go when the pool is full or off.
   */
  releaseMemories(set: PooledSet): void {
    const bytes = this.#residentBytes(set), cap = this.limits.memoryPoolBytes;
    if (bytes > cap / 2 || this.#idleBytes + bytes > cap) {
      this.#poolCounts.dropped++;
      return;
    }
    this.#idle.push(set);
    this.#idleBytes += bytes;
    this.#poolCounts.kept++;
  }

  /** Records a write of the host's into pooled memory `m` (see {@link #reset}). */
  markWritten(set: PooledSet, m: number, ptr: number, len: number): void {
    if (len <= 0) return;
    const base = this.#written!.bases[m];
    const first = Math.floor(ptr / WRITTEN_BLOCK_BYTES);
    const last = Math.floor((ptr + len - 1) / WRITTEN_BLOCK_BYTES);
    new Uint8Array(set.written.buffer).fill(1, base + first, base + last + 1);
  }

  /**
   * What a finished session's set counts against `memoryPoolBytes`: the memory it has made resident,
   * not its size. A new memory's pages take no memory until written, and a pooled set has only
   * ever had bytes written by instantiation (the data segments, `dataBlocks` in the mark), by its
   * sessions or by its resets, all recorded. So a set counts its record, the data segments' blocks
   * and every block any session wrote (with the block after it, which a reset also writes), each
   * once, however often it was written. Without `dataBlocks` in the mark, a set counts its whole size.
   */
  #residentBytes(set: PooledSet): number {
    if (this.#dataBytes === null) {
      set.resident = set.memories.reduce((a, m) => a + m.buffer.byteLength, set.written.buffer.byteLength);
      return set.resident;
    }
    const touched = set.touched;
    set.memories.forEach((_, m) => {
      const base = this.#written!.bases[m];
      for (const [from, to] of this.writtenRanges(set, m)) {
        for (let b = base + from / WRITTEN_BLOCK_BYTES, end = base + to / WRITTEN_BLOCK_BYTES; b < end; b++) {
          const bit = 1 << (b & 7);
          if ((touched[b >> 3] & bit) !== 0) continue;
          touched[b >> 3] |= bit;
          set.resident += WRITTEN_BLOCK_BYTES;
        }
      }
    });
    return set.resident;
  }

  // ---- Instance pool ----

  /**
   * For a new instance: its table entries right after instantiation, which it must still hold to be
   * reused (compared by identity, so read per instance), or null when it will not be reused. The
   * first new instance also gives the state every new instance starts in ({@link #initial}).
   */
  adoptNew(exports: WebAssembly.Exports, set: PooledSet): unknown[][] | null {
    const shape = this.#recycle;
    if (shape === null) return null;
    const pristine = pristineState(exports, shape);
    if (typeof pristine === "string") {
      this.#initial = "none";
      return null;
    }
    if (this.#initial === null) {
      const images = set.memories.map((m) => {
        const bytes = new Uint8Array(m.buffer);
        let end = bytes.length;
        while (end > 0 && bytes[end - 1] === 0) end--;
        return bytes.slice(0, end);
      });
      const imageBytes = images.reduce((a, i) => a + i.length, 0);
      this.#initial = imageBytes > INSTANCE_POOL_MAX_IMAGE_BYTES ? "none" : {
        images,
        globals: shape.globals.map((n) => (exports[n] as WebAssembly.Global).value as number | bigint),
        pages: shape.pages.map((n) => (exports[n] as WebAssembly.Global).value as number),
      };
    }
    return this.#initial === "none" ? null : pristine.tables;
  }

  /**
   * An idle instance set back to exactly the state of a new one: every block written since it was
   * new is zeroed and given back what instantiation wrote there (the data segments), every mutable
   * global and every page global takes its initial value. Its tables were checked when it was kept.
   */
  takeInstance(): PooledInstance | undefined {
    const b = this.#idleInstances.pop();
    if (b === undefined) return undefined;
    const initial = this.#initial as InitialState, shape = this.#recycle!, exports = b.instance.exports;
    this.#idleBytes -= b.set.resident;
    this.#reset(b.set, initial.images);
    shape.globals.forEach((n, i) => (exports[n] as WebAssembly.Global).value = initial.globals[i]);
    shape.pages.forEach((n, i) => (exports[n] as WebAssembly.Global).value = initial.pages[i]);
    this.#instanceCounts.reused++;
    return b;
  }

  /**
   * Takes back the instance of a session that ended with no call on its stack and no failure
   * (see "Instance pool"), or only its memories when a table changed or the pool is full.
   */
  releaseInstance(b: PooledInstance): void {
    b.owner.session = undefined;
    if (b.tables === null) return this.releaseMemories(b.set); // a module whose instances are not reused
    const bytes = this.#residentBytes(b.set), cap = this.limits.memoryPoolBytes;
    if (
      this.#idleInstances.length >= this.limits.idleInstances || bytes > cap / 2 ||
      this.#idleBytes + bytes > cap || tableChange(b.instance.exports, this.#recycle!, b.tables) !== null
    ) {
      this.#instanceCounts.dropped++;
      this.releaseMemories(b.set);
      return;
    }
    this.#idleInstances.push(b);
    this.#idleBytes += bytes;
    this.#instanceCounts.kept++;
  }

  /**
   * With `verifyPoolReset` (tests): a reused instance must hold what a new one holds before its first
   * call: memories (as {@link verifyFresh}), every mutable global and page global. (Its tables were
   * compared with its own when it was kept.)
   */
  verifyFreshInstance(b: PooledInstance): void {
    if (!this.#verifyReset) return;
    this.verifyFresh(b.set);
    const initial = this.#initial as InitialState, shape = this.#recycle!, exports = b.instance.exports;
    shape.globals.forEach((n, i) => {
      if ((exports[n] as WebAssembly.Global).value !== initial.globals[i]) {
        throw new Error(`guard '${this.name}': reused instance's global ${n} differs from a new one's`);
      }
    });
    shape.pages.forEach((n, i) => {
      if ((exports[n] as WebAssembly.Global).value !== initial.pages[i]) {
        throw new Error(`guard '${this.name}': reused instance's memory ${i} size differs from a new one's`);
      }
    });
  }

  /** Memory pool counters and the idle sets held now (for tests, the CLI and benchmarks). */
  memoryPoolStatus(): {
    pooled: boolean;
    created: number;
    reused: number;
    kept: number;
    dropped: number;
    idle: number;
    idleBytes: number;
    instances: { recycled: boolean; reused: number; kept: number; dropped: number; idle: number };
  } {
    return {
      pooled: this.#pooled !== null,
      ...this.#poolCounts,
      idle: this.#idle.length,
      idleBytes: this.#idleBytes,
      instances: {
        recycled: this.#recycle !== null && this.#initial !== "none",
        ...this.#instanceCounts,
        idle: this.#idleInstances.length,
      },
    };
  }

  /**
   * The state of label-agent snapshots for each input seen: `"ready"` (with the image size),
   * `"capturing"` or `"unusable"` (with the reason). For tests, the CLI and benchmarks.
   */
  snapshotStatus(): { input: string; state: string; imageBytes?: number; reason?: string }[] {
    return [...this.#snapshots].map(([input, v]) =>
      v === "capturing"
        ? { input, state: v }
        : "unusable" in v
        ? { input, state: "unusable", reason: v.unusable }
        : { input, state: "ready", imageBytes: v.imageBytes }
    );
  }

  /** The snapshot for `input`, or whether the caller may capture one (it then owns the slot). */
  snapshotFor(input: string): InstanceSnapshot | "capture" | null {
    if (this.snapshotShape === null) return null;
    const s = this.#snapshots.get(input);
    if (s === undefined) {
      if (this.#snapshots.size >= this.limits.labelAgentSnapshots) return null;
      this.#snapshots.set(input, "capturing");
      return "capture";
    }
    return s === "capturing" || "unusable" in s ? null : s;
  }

  /**
   * Ends a capture of {@link snapshotFor}: a snapshot, a reason never to try this input again, or
   * `undefined` (the run failed: a later session may try again).
   */
  settleSnapshot(input: string, result: InstanceSnapshot | { unusable: string } | undefined): void {
    if (this.#snapshots.get(input) !== "capturing") return;
    if (result === undefined) this.#snapshots.delete(input);
    else this.#snapshots.set(input, result);
  }
}

/** State of the export call in progress. */
interface CallState {
  backendCalls: number;
  fuelSpent: number;
  /** Value last written into the fuel global. */
  refill: number;
  /** Size of the next refill (adapts to the guard's speed, at most `fuelSlice`). */
  slice: number;
  /** When the fuel check last ran (or the call started, or `call_backend` returned). */
  lastCheck: number;
  /** `fuelSpent` at `lastCheck`. */
  spentAtCheck: number;
  deadline: number;
  lastYield: number;
  /**
   * Made by the first `call_backend` of the call and passed to it; aborted when the call is stopped
   * (or ends).
   */
  abort?: AbortController;
  /** Why the instance was stopped: set once, reported instead of the trap it causes. */
  stop?: GuardError;
}

/**
 * Host charges never take the counter below this (-2^30): it stays far from i32 wrap-around
 * whatever a stretch of straight-line import calls costs before the next fuel point.
 */
const MIN_CHARGED_FUEL = -0x40000000;
/** The counter value of a stopped instance: negative, so the next fuel point traps. */
const STOPPED_FUEL = -1;
/** WASI errno `ECANCELED`: what every WASI import returns once the instance is stopped. */
const WASI_ECANCELED = 11;

type Exported = (...args: number[]) => Promise<number | undefined>;
type RawExport = (...args: number[]) => number | undefined;
const NO_EXPORTS: ReadonlyMap<string, Exported> = new Map();

class WasmGuardSession implements GuardSession {
  readonly #guard: WasmGuard;
  readonly #ctx: GuardContext;
  readonly #limits: Readonly<GuardLimits>;
  #instance: WebAssembly.Instance | undefined;
  #memory: WebAssembly.Memory | undefined;
  /** The pooled memories this instance imports, until they go back to the guard. */
  #pooledSet: PooledSet | undefined;
  /** Index of the ABI memory among the pooled ones. */
  #abiIndex = 0;
  /** Page counts the guard sees (pooled memories): all of them, and the ABI memory's. */
  #pageGlobals: WebAssembly.Global[] = [];
  #abiPages: WebAssembly.Global | undefined;
  #fuelGlobal: WebAssembly.Global | undefined;
  /** E: 1 while the fuel check may be called (a JSPI export call in progress and not stopped). */
  #checkAllowed: WebAssembly.Global | undefined;
  /** The module's start function (exported by the preparer), run before the first export call. */
  #start: Exported | undefined;
  #fns: ReadonlyMap<string, Exported> = NO_EXPORTS;
  /** The instance and what was read from it, kept together for the instance pool. */
  #bound: BoundInstance | undefined;
  /** This session's WASI state (clocks), when the module imports WASI. */
  #wasi: Record<string, (...a: never[]) => unknown> | undefined;
  #allocator?: { alloc: RawExport; dealloc: RawExport };
  #dead: GuardError | undefined;
  #busy = false;
  #closed = false;
  /** Export calls begun on this instance (a snapshot applies only before the first). */
  #calls = 0;
  /** Set by every host import but `host_log` and the fuel check: the run is not snapshot-able. */
  #impure = false;
  /** While this session captures a snapshot: the log lines to replay. */
  #captureLogs: SnapshotLog[] | undefined;
  /** The instance was created (or its creation failed); a session with a memo creates it lazily. */
  #instantiated = false;
  /**
   * The memo state this session's instance is in (0: fresh; see `memo.ts`), or null once a call was
   * not deterministic, not recorded or failed: the memo neither answers nor records from then on.
   */
  #memoState: number | null = null;
  /** Calls the memo answered while the session had no instance, replayed when it gets one. */
  #answered: MemoEntry[] = [];
  /** True while the instance is created and the memo's answers are replayed on it. */
  #replaying = false;
  /** During a replay: the recorded `call_backend` answers, handed out in order. */
  #replayAnswers: { answers: readonly MemoBackendAnswer[]; next: number; diverged: boolean } | undefined;
  /** During a recorded call: the `call_backend` answers it received and its log lines. */
  #recording: { answers: MemoBackendAnswer[]; logs: SnapshotLog[] } | undefined;
  #call: CallState | undefined;
  #usage: WasmGuardUsage = {
    fuel: 0,
    backendCalls: 0,
    memoryPages: 0,
    ms: 0,
    memoHits: 0,
    totalMemoryPages: 0,
    memories: 0,
    tables: 0,
    tableEntries: 0,
  };
  /** Every memory and table of the instance (the preparer exports each under a reserved name). */
  #held: { memories: WebAssembly.Memory[]; tables: WebAssembly.Table[] } = { memories: [], tables: [] };

  constructor(guard: WasmGuard, ctx: GuardContext) {
    this.#guard = guard;
    this.#ctx = ctx;
    this.#limits = guard.limits;
    // With a memo the instance is made by the first call the memo cannot answer (see #label).
    if (guard.memo === null) this.#instantiate();
    else this.#memoState = 0;
  }

  /**
   * Gets the session its instance: a reused one from the instance pool, or a new one. Never throws:
   * a failure (abort, instantiation) is the next call's.
   */
  #instantiate(): void {
    const guard = this.#guard, ctx = this.#ctx;
    this.#instantiated = true;
    const t0 = performance.now();
    this.#call = this.#newCall(FUEL_INITIAL);
    try {
      if (ctx.signal.aborted) throw this.#abortError();
      const reused = guard.takeInstance();
      if (reused !== undefined) {
        this.#bind(reused);
        guard.verifyFreshInstance(reused);
      } else {
        this.#bind(this.#newInstance());
      }
      this.#checkMemory();
    } catch (e) {
      this.#dead = isSuspendError(e) ? startFunctionOutOfFuel() : this.#classify(e, "instantiation");
      this.#log("error", `guard instantiation failed: ${this.#dead.message}`, { kind: this.#dead.kind });
    } finally {
      this.#usage.fuel += this.#call.fuelSpent;
      this.#usage.ms += performance.now() - t0;
      this.#call.abort?.abort(CALL_ENDED);
      this.#call = undefined;
    }
  }

  /** A new instance of the module, with its memories from the pool (or new ones). */
  #newInstance(): BoundInstance {
    const guard = this.#guard;
    const set = guard.takeMemories();
    this.#pooledSet = set; // given back if anything below throws
    const owner: InstanceOwner = { session: this };
    const instance = new WebAssembly.Instance(guard.module, this.#imports(owner, set));
    const exports = instance.exports;
    const memory = findMemory(exports);
    const b: BoundInstance = {
      instance,
      set,
      owner,
      memory,
      held: heldBy(exports, guard.heldExports),
      pageGlobals: [],
      abiIndex: 0,
      fuelGlobal: undefined,
      checkAllowed: undefined,
      start: undefined,
      fns: new Map(),
      allocator: undefined,
      tables: null,
    };
    if (set) {
      guard.verifyFresh(set);
      b.pageGlobals = set.memories.map((_, i) => exports[pagesExportName(i)] as WebAssembly.Global);
      b.abiIndex = set.memories.findIndex((_, i) => exports[memoryExportName(i)] === memory);
    }
    const g = exports[FUEL_GLOBAL_EXPORT];
    if (g instanceof WebAssembly.Global) {
      this.#call!.fuelSpent = this.#call!.refill - (g.value as number);
      b.fuelGlobal = g;
    }
    const allowed = exports[FUEL_CHECK_ALLOWED_EXPORT];
    if (allowed instanceof WebAssembly.Global) {
      b.checkAllowed = allowed;
      allowed.value = 0; // only JSPI export calls may reach the check
    }
    const start = exports[START_EXPORT];
    if (typeof start === "function") b.start = WebAssembly.promising(start as () => void) as Exported;
    for (const fn of LABEL_EXPORTS) {
      const f = exports[fn];
      if (typeof f === "function") b.fns.set(fn, WebAssembly.promising(f as () => number) as Exported);
    }
    // alloc/dealloc are called directly: they never need call_backend, and a JSPI stack switch
    // (promise + suspension) for each of the four calls per attempt is measurable on the hot path.
    const alloc = exports.alloc, dealloc = exports.dealloc;
    if (typeof alloc === "function" && typeof dealloc === "function") {
      b.allocator = { alloc: alloc as RawExport, dealloc: dealloc as RawExport };
    }
    for (const fn of LABEL_EXPORTS) {
      const f = exports[fn] as { length: number };
      if (f.length !== LABEL_EXPORT_ARITY) {
        throw new GuardError(
          "abi",
          `WASM module function ${fn} must have signature (i32,i32,i32,i32)->i32, got ${f.length} parameters`,
        );
      }
    }
    if (set) b.tables = guard.adoptNew(exports, set);
    return b;
  }

  /** Makes `b` this session's instance: its imports act for this session from now on. */
  #bind(b: BoundInstance): void {
    b.owner.session = this;
    this.#bound = b;
    this.#instance = b.instance;
    this.#pooledSet = b.set;
    this.#memory = b.memory;
    this.#held = b.held;
    this.#pageGlobals = b.pageGlobals;
    this.#abiIndex = b.abiIndex;
    this.#abiPages = b.pageGlobals[b.abiIndex];
    this.#fuelGlobal = b.fuelGlobal;
    this.#checkAllowed = b.checkAllowed;
    this.#start = b.start; // a reused instance runs the start function again, as a new one does
    this.#fns = b.fns;
    this.#allocator = b.allocator;
    if (this.#guard.wasiImports.length > 0) {
      // Per session, like a new instance's: the fake clocks start again.
      this.#wasi = createWasi({
        log: (level, msg, fields) => this.#log(level, msg, fields),
        memory: () => this.#memory,
        wrote: (ptr, len) => this.#markHost(ptr, len),
      });
    }
  }

  labelAgent(inputJson: string): Promise<string> {
    return this.#label("label_agent", inputJson);
  }
  labelResource(inputJson: string): Promise<string> {
    return this.#label("label_resource", inputJson);
  }
  labelResponse(inputJson: string): Promise<string> {
    return this.#label("label_response", inputJson);
  }

  // ---- the call memo (memo.ts) ----

  /**
   * A label call: from the memo while this session has no instance and the memo holds the answer,
   * otherwise run (creating the instance and replaying the memo's answers first if needed) and,
   * while every call so far was deterministic, recorded.
   */
  #label(fn: string, input: string): Promise<string> {
    if (this.#replaying) return Promise.reject(this.#busyError(fn));
    const memo = this.#guard.memo;
    if (!this.#instantiated && !this.#closed) {
      const state = this.#memoState;
      if (memo !== null && state !== null && !this.#ctx.signal.aborted && CallMemo.accepts(input)) {
        const e = memo.find(state, fn, input);
        if (e !== undefined && this.#answersLive(e.answers, e)) {
          memo.hit();
          this.#answered.push(e);
          this.#memoState = e.state;
          this.#usage.memoHits!++;
          for (const l of e.logs) this.#log(l.level, l.msg, l.fields);
          return Promise.resolve(e.output);
        }
      }
      return this.#materialize(fn, input);
    }
    return this.#runAndRecord(fn, input);
  }

  /** Runs `fn(input)` on the instance, recorded in the memo while the session's calls are. */
  #runAndRecord(fn: string, input: string): Promise<string> {
    const state = this.#memoState;
    if (state === null || this.#closed || this.#dead || this.#busy) return this.#run1(fn, input);
    if (!CallMemo.accepts(input)) {
      this.#memoState = null;
      return this.#run1(fn, input);
    }
    return this.#recorded(fn, input, state);
  }

  /**
   * True when every answer is the one the `call_backend` cache holds now (so a run now would get
   * it). An entry (`e`) whose answers are gone is dropped: they never come back.
   */
  #answersLive(answers: readonly MemoBackendAnswer[], e?: MemoEntry): boolean {
    if (answers.length === 0) return true;
    const peek = this.#ctx.backendPeek;
    if (peek === undefined) return false;
    for (const a of answers) {
      if (peek(a.tool, a.args) !== a.value) {
        if (e !== undefined) this.#guard.memo!.forget(e);
        return false;
      }
    }
    return true;
  }

  /** Creates the instance, replays the calls the memo answered, then runs `fn(input)`. */
  async #materialize(fn: string, input: string): Promise<string> {
    this.#replaying = true;
    try {
      this.#instantiate();
      const answered = this.#answered;
      this.#answered = [];
      for (const e of answered) await this.#replay(e);
    } finally {
      this.#replaying = false;
    }
    return this.#runAndRecord(fn, input);
  }

  /**
   * Runs a call the memo answered, on the new instance, with the recorded `call_backend` answers
   * and without writing its log lines again; the session dies if the guard does anything else.
   */
  async #replay(e: MemoEntry): Promise<void> {
    const replay = { answers: e.answers, next: 0, diverged: false };
    this.#replayAnswers = replay;
    let output: string;
    try {
      output = await this.#run1(e.fn, e.input);
    } finally {
      this.#replayAnswers = undefined;
    }
    if (!replay.diverged && replay.next === e.answers.length && output === e.output) return;
    const err = new GuardError(
      "guard_error",
      `guard '${this.#guard.name}' answered ${e.fn} differently when its remembered answer was replayed ` +
        "(a non-deterministic guard); the session is closed",
    );
    this.#dead = err;
    this.#log("error", err.message, { kind: err.kind });
    throw err;
  }

  /** Runs `fn(input)` in memo state `state` and records it when the run was deterministic. */
  async #recorded(fn: string, input: string, state: number): Promise<string> {
    const rec = { answers: [] as MemoBackendAnswer[], logs: [] as SnapshotLog[] };
    this.#recording = rec;
    let output: string;
    try {
      output = await this.#run1(fn, input);
    } catch (e) {
      this.#memoState = null;
      throw e;
    } finally {
      this.#recording = undefined;
    }
    if (this.#memoState === state && !this.#closed && this.#answersLive(rec.answers)) {
      const e = this.#guard.memo!.record(state, fn, input, output, rec.answers, rec.logs);
      this.#memoState = e === undefined ? null : e.state;
    } else {
      this.#memoState = null;
    }
    return output;
  }

  /** Runs one label call on the instance (`label_agent` from a snapshot where one applies). */
  #run1(fn: string, input: string): Promise<string> {
    if (fn !== "label_agent") return this.#invoke(fn, input);
    if (this.#calls === 0 && this.#guard.snapshotShape !== null && this.#instance && !this.#dead) {
      const snap = this.#guard.snapshotFor(input);
      if (snap === "capture") return this.#capture(input);
      if (snap !== null && this.#restore(snap)) return Promise.resolve(snap.output);
    }
    return this.#invoke(fn, input);
  }

  /**
   * Runs `label_agent` as the first call of this fresh instance and records the state afterwards
   * as the snapshot of `input`, unless the run used an import that makes it non-deterministic or
   * brings data from elsewhere (see `snapshot.ts`).
   */
  async #capture(input: string): Promise<string> {
    const guard = this.#guard, shape = guard.snapshotShape!, set = this.#pooledSet;
    let pristine: PristineState | string;
    try {
      pristine = pristineState(this.#instance!.exports, shape);
    } catch {
      guard.settleSnapshot(input, undefined);
      return this.#invoke("label_agent", input);
    }
    if (typeof pristine === "string") {
      guard.settleSnapshot(input, { unusable: pristine });
      return this.#invoke("label_agent", input);
    }
    this.#captureLogs = [];
    let settled: InstanceSnapshot | { unusable: string } | undefined;
    try {
      const output = await this.#invoke("label_agent", input);
      if (this.#impure) {
        settled = { unusable: "label_agent used call_backend or WASI" };
      } else if (!this.#closed && !this.#dead && this.#instance && set) {
        const written = (m: number) => guard.writtenRanges(set, m);
        const snap = captureSnapshot(
          this.#instance.exports,
          shape,
          pristine,
          written,
          output,
          this.#captureLogs,
        );
        settled = typeof snap === "string" ? { unusable: snap } : snap;
      }
      return output;
    } finally {
      this.#captureLogs = undefined;
      guard.settleSnapshot(input, settled);
    }
  }

  /**
   * Starts this fresh instance from `snap` instead of running its start function and
   * `label_agent`; replays the snapshot run's log lines. False when it cannot (the caller runs
   * `label_agent` itself).
   */
  #restore(snap: InstanceSnapshot): boolean {
    if (this.#closed || this.#busy || this.#ctx.signal.aborted) return false;
    const t0 = performance.now();
    try {
      if (!restoreSnapshot(this.#instance!.exports, this.#guard.snapshotShape!, snap)) return false;
      const set = this.#pooledSet;
      if (set) {
        snap.memories.forEach((image, m) => {
          for (const r of image.runs) this.#guard.markWritten(set, m, r.offset, r.data.length);
        });
      }
      this.#checkMemory();
    } catch (e) {
      // The instance may be half restored: it must not run.
      this.#dead = this.#classify(e, "label_agent");
      return false;
    } finally {
      this.#usage.ms += performance.now() - t0;
    }
    this.#calls++;
    this.#start = undefined; // it ran in the snapshot
    this.#recordHeld();
    for (const l of snap.logs) this.#log(l.level, l.msg, l.fields);
    return true;
  }

  usage(): WasmGuardUsage {
    return { ...this.#usage };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#call) {
      this.#stop(this.#call, new GuardError("aborted", `guard '${this.#guard.name}' session closed`));
    }
    this.#instance = undefined;
    this.#memory = undefined;
    this.#fuelGlobal = undefined;
    this.#fns = NO_EXPORTS;
    this.#start = undefined;
    this.#allocator = undefined;
    this.#wasi = undefined;
    // With a call on the wasm stack the memories stay with it: #invoke gives them back once it ends.
    if (!this.#busy) this.#releaseMemories();
  }

  /**
   * Hands the instance (when it ended with no failure) or only its pooled memories back to the
   * guard. Called once the session is closed and has no call running.
   */
  #releaseMemories(): void {
    const set = this.#pooledSet, b = this.#bound;
    this.#pooledSet = undefined;
    this.#bound = undefined;
    this.#pageGlobals = [];
    this.#abiPages = undefined;
    if (b !== undefined && b.owner.session === this) b.owner.session = undefined;
    if (!set) return;
    if (b?.set === set && this.#dead === undefined) this.#guard.releaseInstance(b as PooledInstance);
    else this.#guard.releaseMemories(set);
  }

  // ---- the call protocol (guard-abi.md §1.2-1.3) ----

  async #invoke(fn: string, input: string): Promise<string> {
    const name = this.#guard.name;
    if (this.#closed) throw new GuardError("guard_error", `guard '${name}' session is closed`);
    if (this.#dead) {
      throw new GuardError(
        this.#dead.kind,
        `WASM guard '${name}' is unavailable after a previous failure: ${this.#dead.message}`,
        { limit: this.#dead.limit, value: this.#dead.value, cause: this.#dead },
      );
    }
    if (this.#busy) throw this.#busyError(fn);
    const inBytes = utf8Encoder.encode(input);
    if (inBytes.length > this.#limits.maxInputBytes) {
      throw new GuardError(
        "input_size",
        `input too large: ${inBytes.length} bytes (max ${this.#limits.maxInputBytes})`,
        { limit: "maxInputBytes", value: this.#limits.maxInputBytes },
      );
    }
    this.#busy = true;
    this.#calls++;
    const t0 = performance.now();
    const call = this.#newCall(Math.min(this.#guard.fuelRefill, this.#limits.fuel));
    this.#call = call;
    if (this.#fuelGlobal) this.#fuelGlobal.value = call.refill;
    // No timer or abort listener per call: a running guard reaches the fuel check, which stops it
    // on the deadline or the signal; only a guard waiting in call_backend needs them (see there).
    try {
      if (this.#ctx.signal.aborted) throw this.#abortError();
      if (this.#start) {
        const start = this.#start;
        this.#start = undefined;
        await this.#run(start);
        this.#checkMemory();
      }
      if (!this.#memory) throw new GuardError("memory", "WASM module has no memory");
      return await this.#withRetries(fn, inBytes);
    } catch (e) {
      const err = this.#classify(e, fn);
      if (FATAL_KINDS.has(err.kind)) {
        this.#dead = err;
        this.#log("error", `WASM guard failure: guard=${name}, func=${fn}, error=${err.message}`, {
          kind: err.kind,
        });
      }
      throw err;
    } finally {
      if (this.#fuelGlobal) call.fuelSpent += call.refill - (this.#fuelGlobal.value as number);
      this.#usage.fuel += call.fuelSpent;
      this.#usage.ms += performance.now() - t0;
      this.#recordHeld();
      call.abort?.abort(CALL_ENDED);
      this.#call = undefined;
      this.#busy = false;
      // The export's promise has settled: nothing of this instance is on a wasm stack any more.
      if (this.#closed) this.#releaseMemories();
    }
  }

  #busyError(fn: string): GuardError {
    return new GuardError(
      "guard_error",
      `guard '${this.#guard.name}' session is busy: calls on one session are serialized (no re-entrant ${fn})`,
    );
  }

  async #withRetries(fn: string, input: Uint8Array): Promise<string> {
    const { initialOutputBytes, maxOutputBytes, maxOutputAttempts } = this.#limits;
    let size = initialOutputBytes;
    for (let attempt = 1;; attempt++) {
      const r = await this.#attempt(fn, input, size);
      if (typeof r === "string") return r;
      const next = r > 0 ? r : size * 2;
      if (next > maxOutputBytes) {
        throw new GuardError(
          "output_size",
          `guard requires buffer of ${next} bytes which exceeds maximum of ${maxOutputBytes} bytes`,
          { limit: "maxOutputBytes", value: maxOutputBytes },
        );
      }
      size = next;
      if (attempt >= maxOutputAttempts) {
        throw new GuardError(
          "output_size",
          `failed after ${maxOutputAttempts} attempts, buffer size ${size} still insufficient`,
          { limit: "maxOutputAttempts", value: maxOutputAttempts },
        );
      }
      this.#log("debug", `${fn} returned -2, retrying with a ${size}-byte output buffer`);
    }
  }

  /** One attempt: the output text, or the size hint (0 = none) when the guard returned -2. */
  async #attempt(fn: string, input: Uint8Array, size: number): Promise<string | number> {
    const allocator = this.#allocator;
    let inPtr = 0, outPtr = 0;
    try {
      if (allocator) {
        inPtr = this.#alloc(allocator.alloc, input.length);
        outPtr = this.#alloc(allocator.alloc, size);
      } else {
        [inPtr, outPtr] = this.#directLayout(input.length, size);
      }
      this.#write(inPtr, input);
      const rc = await this.#run(this.#fns.get(fn)!, inPtr, input.length, outPtr, size);
      this.#checkMemory();
      if (typeof rc !== "number") throw new GuardError("guard_error", "WASM function returned no results");
      if (rc === -2) return size >= 4 ? this.#view().getUint32(outPtr, true) : 0;
      if (rc < 0) {
        throw new GuardError("guard_error", `WASM function returned error code: ${rc}`, { value: rc });
      }
      if (rc === 0) return "";
      const buf = this.#memory!.buffer;
      if (outPtr + rc > this.#abiBytes()) {
        throw new GuardError("guard_error", `failed to read output from WASM memory (len=${rc})`);
      }
      return utf8Decoder.decode(new Uint8Array(buf, outPtr, rc));
    } finally {
      if (allocator && !this.#dead && this.#call !== undefined && !this.#call.stop) {
        this.#free(allocator.dealloc, outPtr, size);
        this.#free(allocator.dealloc, inPtr, input.length);
      }
    }
  }

  /**
   * Runs alloc/dealloc directly, outside JSPI. V8 refuses any call to a `Suspending` import outside
   * `promising` (even one that would return at once), so the fuel check must not be reached: the
   * counter is topped up to a full slice (plus the cost of growing memory to the cap) first, and an
   * allocator that burns all of it or calls `call_backend` fails the call as a trap.
   */
  #direct(fn: "alloc" | "dealloc", f: RawExport, ...args: number[]): number | undefined {
    const g = this.#fuelGlobal, call = this.#call;
    if (call?.stop) throw call.stop;
    if (g && call) {
      call.fuelSpent += call.refill - (g.value as number);
      // A slice, plus what growing memory up to the cap costs: an allocator may grow memory, and
      // it cannot reach a check here (bounded in time: growing 32 MiB takes a few ms).
      const growToCap = this.#limits.maxMemoryPages * (WASM_PAGE_BYTES / BULK_BYTES_PER_FUEL_UNIT);
      call.refill = Math.min(this.#limits.fuelSlice + growToCap, this.#limits.fuel - call.fuelSpent);
      g.value = call.refill;
    }
    try {
      return f(...args);
    } catch (e) {
      // Outside JSPI the check is not allowed (E = 0): a point that runs out of fuel traps at once,
      // leaving the counter negative; call_backend throws a SuspendError.
      const outOfSlice = e instanceof WebAssembly.RuntimeError && g !== undefined && (g.value as number) < 0;
      if (!isSuspendError(e) && !outOfSlice) throw e;
      throw new GuardError(
        "trap",
        `guard '${this.#guard.name}' ${fn} called call_backend or ran longer than one fuel slice ` +
          `(limits.fuelSlice=${this.#limits.fuelSlice}); alloc and dealloc must be short and self-contained`,
        { cause: e },
      );
    }
  }

  #alloc(alloc: RawExport, size: number): number {
    const p = this.#direct("alloc", alloc, size);
    this.#checkMemory();
    if (typeof p !== "number" || p === 0) throw new GuardError("guard_error", "alloc returned null pointer");
    return p >>> 0;
  }

  #free(dealloc: RawExport, ptr: number, size: number): void {
    if (ptr === 0 || size === 0) return;
    try {
      this.#direct("dealloc", dealloc, ptr, size);
    } catch (e) {
      const err = this.#classify(e, "dealloc");
      if (FATAL_KINDS.has(err.kind)) this.#dead = err;
      this.#log("warn", `dealloc(${ptr}, ${size}) failed: ${err.message}`, { kind: err.kind });
    }
  }

  /** Host-managed layout: output at the end of memory, input right before it (grows if needed). */
  #directLayout(inLen: number, size: number): [number, number] {
    const mem = this.#memory!;
    const required = inLen + size + WASM_PAGE_BYTES;
    const have = this.#abiBytes();
    if (have < required) {
      const pages = Math.ceil((required - have) / WASM_PAGE_BYTES);
      const cap = this.#limits.maxMemoryPages;
      if (have / WASM_PAGE_BYTES + pages > cap) {
        throw new GuardError(
          "memory",
          `failed to grow WASM memory from ${have} to ${have + pages * WASM_PAGE_BYTES} bytes: ` +
            `above limits.maxMemoryPages=${cap}`,
          { limit: "maxMemoryPages", value: cap },
        );
      }
      try {
        this.#growAbi(mem, have / WASM_PAGE_BYTES + pages);
      } catch (e) {
        throw new GuardError(
          "memory",
          `failed to grow WASM memory from ${have} to ${have + pages * WASM_PAGE_BYTES} bytes: ${
            errorMessage(e)
          }`,
          { limit: "maxMemoryPages", value: cap, cause: e },
        );
      }
    }
    const end = this.#abiBytes();
    const outPtr = end - size;
    return [outPtr - inLen, outPtr];
  }

  /** Size of the ABI memory as the guard sees it, in bytes (pooled: its page global). */
  #abiBytes(): number {
    const p = this.#abiPages;
    return p ? (p.value as number) * WASM_PAGE_BYTES : this.#memory!.buffer.byteLength;
  }

  /** Grows the ABI memory to `pages` as the guard would (pooled: the real memory only if needed). */
  #growAbi(mem: WebAssembly.Memory, pages: number): void {
    const p = this.#abiPages;
    if (!p) {
      mem.grow(pages - mem.buffer.byteLength / WASM_PAGE_BYTES);
      return;
    }
    const real = mem.buffer.byteLength / WASM_PAGE_BYTES;
    if (real < pages) mem.grow(pages - real);
    p.value = pages;
  }

  /** Records a write of the host's into the ABI memory (pooled memories only). */
  #markHost(ptr: number, len: number): void {
    if (this.#pooledSet) this.#guard.markWritten(this.#pooledSet, this.#abiIndex, ptr >>> 0, len);
  }

  /**
   * The host's one way to write into the ABI memory: bounds-checked against the size the guard sees,
   * and recorded for the memory pool before it is written. False when outside the memory.
   */
  #hostWrite(ptr: number, data: Uint8Array): boolean {
    if (ptr + data.length > this.#abiBytes()) return false;
    this.#markHost(ptr, data.length);
    new Uint8Array(this.#memory!.buffer, ptr, data.length).set(data);
    return true;
  }

  #write(ptr: number, data: Uint8Array): void {
    if (!this.#hostWrite(ptr, data)) {
      throw new GuardError(
        "guard_error",
        `input buffer at ${ptr} (+${data.length} bytes) is outside WASM memory`,
      );
    }
  }

  #view(): DataView {
    return new DataView(this.#memory!.buffer);
  }

  /**
   * What the instance holds now, into the usage (memory 0 and the totals over all; pooled memories
   * count the pages the guard sees, as a new memory would).
   */
  #recordHeld(): void {
    const u = this.#usage;
    if (this.#memory) u.memoryPages = this.#abiBytes() / WASM_PAGE_BYTES;
    u.memories = this.#held.memories.length;
    u.tables = this.#held.tables.length;
    u.totalMemoryPages = this.#pageGlobals.length > 0
      ? this.#pageGlobals.reduce((a, g) => a + (g.value as number), 0)
      : totalPages(this.#held.memories);
    u.tableEntries = this.#held.tables.reduce((a, t) => a + t.length, 0);
  }

  /**
   * Second line of defence behind the prepared maxima: memory above the cap (over all memories the
   * instance holds) kills the session.
   */
  #checkMemory(): void {
    const mem = this.#memory;
    if (!mem) return;
    const pages = Math.max(mem.buffer.byteLength / WASM_PAGE_BYTES, totalPages(this.#held.memories));
    const cap = this.#limits.maxMemoryPages;
    if (pages > cap) {
      throw new GuardError(
        "memory",
        `guard memory is ${pages} pages, above limits.maxMemoryPages=${cap}`,
        { limit: "maxMemoryPages", value: cap },
      );
    }
  }

  // ---- imports ----

  /**
   * The imports of a new instance. Each acts for `owner.session`, the session the instance serves
   * now (the instance pool hands an instance to later sessions); with no session (the instance is
   * idle) nothing can call them, as no export runs.
   */
  #imports(owner: InstanceOwner, set: PooledSet | undefined): WebAssembly.Imports {
    const own: Record<string, WebAssembly.ExportValue> = {
      [FUEL_IMPORT_NAME]: new WebAssembly.Suspending(() => owner.session!.#fuelCheck()),
    };
    if (set) {
      set.memories.forEach((m, i) => own[pooledMemoryImportName(i)] = m);
      own[WRITTEN_IMPORT_NAME] = set.written;
    }
    // Most guards import no WASI at all: then none of its functions is made.
    const wasi: Record<string, (...a: never[]) => unknown> = {};
    for (const name of this.#guard.wasiImports) {
      const random = name === "random_get";
      wasi[name] = (...a: never[]) => owner.session!.#wasiCall(name, random, a);
    }
    return {
      env: {
        call_backend: new WebAssembly.Suspending((
          name: number,
          nameLen: number,
          args: number,
          argsLen: number,
          res: number,
          resSize: number,
        ) => owner.session!.#callBackend(name, nameLen, args, argsLen, res, resSize)),
        host_log: (level: number, ptr: number, len: number) => owner.session!.#hostLog(level, ptr, len),
      },
      wasi_snapshot_preview1: wasi as WebAssembly.ModuleImports,
      [FUEL_IMPORT_MODULE]: own,
    };
  }

  /**
   * A WASI function of this session's WASI state, answering `ECANCELED` without doing anything once
   * the instance is stopped; `proc_exit` also stops the instance, so a guard that catches the
   * `ProcExit` it throws traps at its next fuel point.
   */
  #wasiCall(name: string, random: boolean, args: never[]): unknown {
    const call = this.#call;
    this.#impure = true;
    // The only WASI answer that differs between runs (the clocks are per instance and fixed).
    if (random) {
      this.#memoState = null;
      if (this.#replayAnswers) this.#replayAnswers.diverged = true;
    }
    if (!this.#chargeHostCall(call) || this.#wasi === undefined) return WASI_ECANCELED;
    try {
      return this.#wasi[name](...args);
    } catch (e) {
      if (call && e instanceof ProcExit) this.#stop(call, this.#classify(e, "proc_exit"));
      throw e;
    }
  }

  /**
   * Runs a JSPI-wrapped export (or the start function) with the fuel check allowed, and reports the
   * stop that ended it, if any: a stopped instance traps at its next fuel point, but an export may
   * also return before reaching one.
   */
  async #run(f: Exported, ...args: number[]): Promise<number | undefined> {
    const call = this.#call!;
    const allowed = this.#checkAllowed;
    if (call.stop) throw call.stop;
    if (allowed) allowed.value = 1;
    try {
      const r = await f(...args);
      if (call.stop) throw call.stop;
      return r;
    } finally {
      if (allowed) allowed.value = 0;
    }
  }

  /**
   * Charges `HOST_CALL_FUEL_UNITS` for a host import call, through the counter (so the next fuel
   * point reaches the check, which accounts, yields and stops as for any other spending; a guard
   * looping on an import whose promise settles at once would otherwise starve the event loop of
   * macrotasks). False when the import must refuse: the instance is stopped. True outside a call
   * (the host's direct alloc/dealloc calls, whose imports it does not meter).
   */
  #chargeHostCall(call: CallState | undefined): boolean {
    if (!call) return true;
    if (call.stop) return false;
    const g = this.#fuelGlobal;
    if (g) g.value = Math.max((g.value as number) - HOST_CALL_FUEL_UNITS, MIN_CHARGED_FUEL);
    else call.fuelSpent += HOST_CALL_FUEL_UNITS;
    return true;
  }

  /**
   * Stops the instance of `call` for `why` (the first reason wins): the counter is left negative and
   * the check disallowed, so the next fuel point traps (uncatchably); `call_backend` in flight is
   * released. The fuel spent so far is accounted first.
   */
  #stop(call: CallState, why: GuardError): void {
    if (call.stop) return;
    call.stop = why;
    const g = this.#fuelGlobal;
    if (g && this.#call === call) {
      call.fuelSpent += call.refill - (g.value as number);
      call.refill = STOPPED_FUEL;
      g.value = STOPPED_FUEL;
    }
    if (this.#checkAllowed) this.#checkAllowed.value = 0;
    call.abort?.abort(why);
  }

  /**
   * The slow path of fuel metering: budget, deadline, abort, and a periodic yield. Never throws (a
   * JS exception could be caught by the guard): it either refills the counter or stops the instance.
   */
  #fuelCheck(): Promise<void> | void {
    const call = this.#call;
    const g = this.#fuelGlobal;
    // Outside a call, or stopped: the counter stays negative and the injected code traps.
    if (!call || !g || call.stop) return;
    const value = g.value as number;
    call.fuelSpent += call.refill - value;
    call.refill = value; // accounted: the final tally adds nothing for it
    const now = performance.now();
    const problem = this.#liveProblem(call, now);
    if (problem) return this.#stop(call, problem);
    this.#adaptSlice(call, now);
    const refill = () => {
      call.refill = Math.min(call.slice, this.#limits.fuel - call.fuelSpent);
      g.value = call.refill;
    };
    if (now - call.lastYield < this.#limits.yieldIntervalMs) return refill();
    return new Promise<void>((resolve) => setTimeout(resolve, 0)).then(() => {
      if (call.stop) return;
      const now = performance.now();
      call.lastYield = call.lastCheck = now;
      const problem = this.#liveProblem(call, now);
      if (problem) return this.#stop(call, problem);
      refill();
    });
  }

  /**
   * Sizes the next refill from the rate of the last one, so that the next check comes about
   * `FUEL_CHECK_TARGET_MS` later: a guard whose units are expensive (bulk work, long loop bodies,
   * cache misses) is checked as often in time as a cheap one. Within `MIN_FUEL_REFILL..fuelSlice`;
   * the guard remembers the size for its next calls. Where the clock stands still during execution
   * (Workers) the size stays at `fuelSlice`.
   */
  #adaptSlice(call: CallState, now: number): void {
    const elapsed = now - call.lastCheck;
    const spent = Math.max(1, call.fuelSpent - call.spentAtCheck);
    call.lastCheck = now;
    call.spentAtCheck = call.fuelSpent;
    let next: number;
    if (elapsed > FUEL_CHECK_TARGET_MS) next = Math.floor(spent * FUEL_CHECK_TARGET_MS / elapsed);
    else next = spent * 2;
    call.slice = Math.max(MIN_FUEL_REFILL, Math.min(this.#limits.fuelSlice, next));
    this.#guard.fuelRefill = call.slice;
  }

  /** Why the call must stop now (fuel spent, signal aborted, deadline passed), if it must. */
  #liveProblem(call: CallState, now: number): GuardError | undefined {
    if (call.fuelSpent > this.#limits.fuel) {
      return new GuardError(
        "fuel",
        `guard '${this.#guard.name}' ran out of fuel: limits.fuel=${this.#limits.fuel} units spent`,
        { limit: "fuel", value: this.#limits.fuel },
      );
    }
    if (this.#ctx.signal.aborted) return this.#abortError();
    if (now > call.deadline) return this.#timeoutError();
    return undefined;
  }

  async #callBackend(
    namePtr: number,
    nameLen: number,
    argsPtr: number,
    argsLen: number,
    resPtr: number,
    resSize: number,
  ): Promise<number> {
    const call = this.#call;
    this.#impure = true;
    if (!call || !this.#chargeHostCall(call)) return this.#unrecordable();
    call.backendCalls++;
    this.#usage.backendCalls++;
    if (call.backendCalls > this.#limits.maxBackendCalls) {
      // Logged once per export call: a guard that ignores the -1 must not flood the log.
      if (call.backendCalls === this.#limits.maxBackendCalls + 1) {
        this.#log(
          "warn",
          `call_backend limit reached: limits.maxBackendCalls=${this.#limits.maxBackendCalls}`,
        );
      }
      return this.#unrecordable();
    }
    const toolName = this.#readText(namePtr, nameLen);
    if (toolName === null) return this.#unrecordable();
    let args: unknown = null;
    let argsText = "";
    if (argsLen >>> 0 !== 0) {
      const text = this.#readText(argsPtr, argsLen);
      if (text === null) return this.#unrecordable();
      argsText = text;
      try {
        args = JSON.parse(text);
      } catch {
        this.#log("warn", `call_backend(${toolName}): args are not valid JSON`);
        return this.#unrecordable();
      }
    }
    let result: unknown;
    const replay = this.#replayAnswers;
    if (replay !== undefined) {
      // A replayed call gets the answers its recorded run got, or the replay fails.
      const a = replay.answers[replay.next++];
      if (a === undefined || a.tool !== toolName || a.argsText !== argsText) {
        replay.diverged = true;
        return -1;
      }
      result = a.value;
    } else {
      // While the guard waits here it reaches no fuel check: the deadline and the session's signal
      // stop the call from outside, which aborts the backend call.
      const problem = this.#liveProblem(call, performance.now());
      if (problem) {
        this.#stop(call, problem);
        return -1;
      }
      const signal = (call.abort ??= new AbortController()).signal;
      const onAbort = () => this.#stop(call, this.#abortError());
      this.#ctx.signal.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(
        () => this.#stop(call, this.#timeoutError()),
        call.deadline - performance.now(),
      );
      try {
        result = await raceSignal(this.#ctx.backend(toolName, args, signal), signal);
      } catch (e) {
        // Deadline / abort: the instance is stopped; -1 here, a trap at the next fuel point.
        if (signal.aborted) return -1;
        this.#log("debug", `call_backend(${toolName}) failed: ${errorMessage(e)}`);
        return this.#unrecordable();
      } finally {
        clearTimeout(timer);
        this.#ctx.signal.removeEventListener("abort", onAbort);
      }
      if (this.#call !== call || call.stop) return -1;
      call.lastCheck = performance.now(); // time waiting for the backend is not the guard's speed
    }
    const json = utf8Encoder.encode(JSON.stringify(result) ?? "null");
    this.#recording?.answers.push({ tool: toolName, argsText, args, value: result, bytes: json.length });
    const size = resSize >>> 0, ptr = resPtr >>> 0;
    if (!this.#memory) return -1;
    if (json.length > size) {
      if (size < 4) return -2;
      const hint = new Uint8Array(4);
      new DataView(hint.buffer).setUint32(0, json.length, true);
      return this.#hostWrite(ptr, hint) ? -2 : -1;
    }
    return this.#hostWrite(ptr, json) ? json.length : -1;
  }

  /**
   * -1 for a `call_backend` whose refusal the memo does not record (a failed upstream call may
   * succeed next time; limits and bad arguments are simply not worth recording): the session's
   * calls are no longer memoised. In a replay, the recorded run got an answer here: it diverged.
   */
  #unrecordable(): number {
    this.#memoState = null;
    if (this.#replayAnswers) this.#replayAnswers.diverged = true;
    return -1;
  }

  #hostLog(level: number, ptr: number, len: number): void {
    if (!this.#chargeHostCall(this.#call)) return;
    const lvl = HOST_LOG_LEVELS[level] ?? "debug";
    if (this.#ctx.wantsLog?.(lvl) === false) return; // not written: not read either
    const msg = this.#readText(ptr, len);
    if (msg === null) return;
    this.#log(lvl, msg, { source: "host_log" });
  }

  /** UTF-8 text from guard memory, or null when the range is outside memory. */
  #readText(ptr: number, len: number): string | null {
    const mem = this.#memory;
    const p = ptr >>> 0, l = len >>> 0;
    if (!mem || p + l > this.#abiBytes()) return null;
    return utf8Decoder.decode(new Uint8Array(mem.buffer, p, l));
  }

  // ---- helpers ----

  #newCall(refill: number): CallState {
    const now = performance.now();
    return {
      backendCalls: 0,
      fuelSpent: 0,
      refill,
      slice: refill,
      lastCheck: now,
      spentAtCheck: 0,
      deadline: now + this.#limits.timeoutMs,
      lastYield: now,
    };
  }

  #abortError(): GuardError {
    const reason = this.#ctx.signal.reason;
    return new GuardError(
      "aborted",
      `guard '${this.#guard.name}' call aborted: ${
        reason === undefined ? "signal aborted" : errorMessage(reason)
      }`,
      { cause: reason },
    );
  }

  #timeoutError(): GuardError {
    return new GuardError(
      "timeout",
      `guard '${this.#guard.name}' call exceeded limits.timeoutMs=${this.#limits.timeoutMs}`,
      { limit: "timeoutMs", value: this.#limits.timeoutMs },
    );
  }

  /**
   * Maps anything thrown out of wasm or the protocol to a GuardError. While the call is stopped,
   * whatever ended it (normally the trap of the next fuel point) is reported as the stop's reason.
   */
  #classify(e: unknown, fn: string): GuardError {
    const stop = this.#call?.stop;
    if (stop && stop !== e) return stop;
    if (e instanceof GuardError) return e;
    if (e instanceof ProcExit) {
      return new GuardError("proc_exit", `guard '${this.#guard.name}' ${fn}: ${e.message}`, {
        value: e.code,
        cause: e,
      });
    }
    if (e instanceof WebAssembly.LinkError || e instanceof WebAssembly.CompileError) {
      return new GuardError("abi", `guard '${this.#guard.name}': ${e.message}`, { cause: e });
    }
    // RuntimeError (unreachable, out of bounds, ...), RangeError (stack overflow), SuspendError.
    return new GuardError("trap", `WASM guard trap in ${fn}: ${errorMessage(e)}`, { cause: e });
  }

  #log(level: "debug" | "info" | "warn" | "error", msg: string, fields: Record<string, unknown> = {}): void {
    // A replayed call's lines were written when the memo answered it; lines the sink drops are not
    // kept for snapshots and the memo either (the sink's level is the same for every session).
    if (this.#replayAnswers !== undefined && level !== "error") return;
    if (this.#ctx.wantsLog?.(level) === false) return;
    this.#captureLogs?.push({ level, msg, fields });
    this.#recording?.logs.push({ level, msg, fields });
    try {
      this.#ctx.log(level, msg, { guard: this.#guard.name, ...fields });
    } catch {
      // a broken logger must not break the guard call
    }
  }
}

/** The distinct memories and tables among an instance's exports. */
function heldBy(
  exports: WebAssembly.Exports,
  names: readonly string[],
): { memories: WebAssembly.Memory[]; tables: WebAssembly.Table[] } {
  const values = new Set(names.map((n) => exports[n]));
  return {
    memories: [...values].filter((v): v is WebAssembly.Memory => v instanceof WebAssembly.Memory),
    tables: [...values].filter((v): v is WebAssembly.Table => v instanceof WebAssembly.Table),
  };
}

/** Largest initial memory image (data segments) the instance pool keeps to reset reused instances. */
const INSTANCE_POOL_MAX_IMAGE_BYTES = 4 * 1024 * 1024;

/** What every new instance of a module holds before its first call (see `WasmGuard.adoptNew`). */
interface InitialState {
  images: Uint8Array[];
  globals: (number | bigint)[];
  pages: number[];
}

/** The session an instance's imports act for: swapped when the instance is reused. */
interface InstanceOwner {
  session: WasmGuardSession | undefined;
}

/** An instance with what a session needs of it; the instance pool keeps it across sessions. */
interface BoundInstance {
  instance: WebAssembly.Instance;
  /** Its pooled memories; undefined for a module that defines its own (never reused). */
  set: PooledSet | undefined;
  owner: InstanceOwner;
  memory: WebAssembly.Memory | undefined;
  held: { memories: WebAssembly.Memory[]; tables: WebAssembly.Table[] };
  pageGlobals: WebAssembly.Global[];
  abiIndex: number;
  fuelGlobal: WebAssembly.Global | undefined;
  checkAllowed: WebAssembly.Global | undefined;
  start: Exported | undefined;
  fns: Map<string, Exported>;
  allocator: { alloc: RawExport; dealloc: RawExport } | undefined;
  /** Its table entries when it was new; null when it is never reused. */
  tables: unknown[][] | null;
}

/** An instance with pooled memories: the only kind the instance pool keeps. */
type PooledInstance = BoundInstance & { set: PooledSet };

/** The memories one instance imports: its pooled memories and their written-pages record. */
interface PooledSet {
  memories: WebAssembly.Memory[];
  written: WebAssembly.Memory;
  /** One bit per block of the record's layout: the blocks a session or a reset of this set wrote. */
  touched: Uint8Array;
  /** What the pool counts this set as (see `WasmGuard#residentBytes`). */
  resident: number;
}

function totalPages(memories: WebAssembly.Memory[]): number {
  return memories.reduce((a, m) => a + m.buffer.byteLength / WASM_PAGE_BYTES, 0);
}

function findMemory(exports: WebAssembly.Exports): WebAssembly.Memory | undefined {
  if (exports.memory instanceof WebAssembly.Memory) return exports.memory;
  return Object.values(exports).find((v): v is WebAssembly.Memory => v instanceof WebAssembly.Memory);
}

/**
 * A start function runs inside `new WebAssembly.Instance`, outside any `promising` context, and V8
 * refuses every call of a `Suspending` import there (even one that would return synchronously). So
 * a start function has exactly the fuel the preparer put in the global (1,000,000 units) and cannot
 * use `call_backend`; reaching either ends instantiation with a `SuspendError`.
 */
function startFunctionOutOfFuel(): GuardError {
  return new GuardError(
    "fuel",
    `the start function ran out of its instantiation fuel (${FUEL_INITIAL} units) or called ` +
      "call_backend, which cannot run before the instance exists",
    { limit: "fuel", value: FUEL_INITIAL },
  );
}

function isSuspendError(e: unknown): boolean {
  const ctor = (WebAssembly as unknown as { SuspendError?: ErrorConstructor }).SuspendError;
  return typeof ctor === "function" && e instanceof ctor;
}
