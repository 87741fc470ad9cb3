/**
 * The binary rewrite behind `prepareGuard`: clamps memory limits, injects the fuel counter, renumbers
 * function indices, strips debug sections, and (optionally) pools memories with a record of every
 * write and merges adjacent data segments (`data.ts`). It knows nothing about the guard ABI, so it also
 * serves for non-guard modules (tests on real toolchain output).
 *
 * Fuel points sit at every function entry and loop header and spend one unit of the exported counter
 * F; bulk operations spend in proportion to their length operand, before they run (see
 * `limits.ts`: `BULK_BYTES_PER_FUEL_UNIT`, `TABLE_ENTRY_FUEL_UNITS`). When F drops below zero the
 * point calls SLOW, a function the rewriter appends:
 *
 *   `global.get E; i32.eqz; if; unreachable; end; call CHECK; global.get F; i32.const 0; i32.lt_s;
 *    if; unreachable; end`
 *
 * CHECK is the host's import: it accounts the fuel, yields, and either refills F (the guard goes on)
 * or leaves it negative (the guard must stop). Stopping is therefore a wasm trap (`unreachable`),
 * which no exception handler of either proposal can catch, never a JS exception thrown into wasm.
 * E (exported, initially 1) says whether CHECK may be called at all: the host clears it while it
 * calls an export outside JSPI (where calling a `Suspending` import throws a catchable
 * `SuspendError`) and once the instance is stopped, so from then on every fuel point traps at once.
 *
 * The start function is not left to the engine (it would run inside `new WebAssembly.Instance`,
 * where CHECK cannot suspend): the start section is dropped and the function exported as
 * `START_EXPORT`; the host runs it through JSPI before the first export call, under that call's
 * budget and deadline.
 *
 * Two shapes, chosen per function, spend exactly the same units at the same points:
 *
 * - global (functions with exception handling, or without loops):
 *   `global.get F; i32.const 1; i32.sub; global.set F; global.get F; i32.const 0; i32.lt_s;
 *    if; call SLOW; end`.
 * - cached counter (all other functions, which is where loops run): one appended i32 local L holds
 *   the counter. Entry: `global.get F; i32.const 1; i32.sub; local.tee L; i32.const 0; i32.lt_s;
 *   if; SYNC; call SLOW; RELOAD; end`; loop header: the same from `local.get L`. SYNC
 *   (`local.get L; global.set F`) precedes every call, tail call, `return`, branch to the function's
 *   label and the final `end`; RELOAD (`global.get F; local.set L`) follows every call. So F is exact
 *   whenever other code can see it (callees, CHECK, the host after an export returns, a handler
 *   catching an exception thrown by a callee), and no function can hand itself fuel back. A trap
 *   may leave F above the true count; the host discards a trapped instance.
 *
 * A bulk charge is the same point with `local.tee T` in front (T: one more appended i32 local, the
 * length operand, left on the stack for the operation) and the scaled length in place of the 1.
 * `memory.grow` and `table.grow` get it in place. `memory.fill/copy/init` and `table.fill/copy/init`
 * (any memory, table or segment index) become a call to a helper appended after SLOW, one per
 * operation and index immediates the code uses: it checks the whole range first (a range out of
 * bounds traps as the single operation does, before anything is written), then runs the operation
 * in chunks of `BULK_MEMORY_CHUNK_BYTES` / `BULK_TABLE_CHUNK_ENTRIES`, each charged right before it
 * runs, so the host's check (and a yield or stop) can come between two chunks where one long
 * operation could not be interrupted (see {@link helperBody}); a full chunk calls SLOW whatever the
 * counter says (see {@link appendedFunctions}). The chunks of an operation spend exactly the units
 * one charge of its whole length would.
 *
 * Pooled memories (`poolMemories`): each defined memory (32-bit, not shared) becomes an import
 * `mcp_edge_guard.memory_<i>` with the same (clamped) limits, so the host can hand a fresh instance
 * a memory that an earlier, finished instance used, after zeroing every byte of it. Such a memory may
 * be larger than the module's minimum, so the size the guard sees is a per-instance count: a mutable
 * global P_i (initially the minimum, exported as `pagesExportName(i)`), which `memory.size` reads and
 * `memory.grow` (after its usual charge) moves through an appended function GROW_i: `-1` when the
 * grown size would pass the declared maximum (as the engine answers), otherwise it grows the real
 * memory only when P_i + delta passes it, then returns the old P_i. A guard thus sees exactly the
 * sizes and `-1`s of a fresh memory; the one difference is that an access between P_i and the real
 * size reads zeros (the host zeroed them) instead of trapping.
 *
 * Written pages (with pooled memories): one more imported memory W (`mcp_edge_guard.memory_written`)
 * holds one byte per `WRITTEN_BLOCK_BYTES` block of every pooled memory (memory m's bytes start at
 * the sum of the earlier memories' maxima in blocks). Every instruction that can write guard memory
 * sets its block's byte first: plain, SIMD and lane stores, atomic stores, read-modify-writes and
 * compare-exchanges get `local.set V; local.tee A; local.get A; i32.const offset; i32.add;
 * i32.const log2(block); i32.shr_u; i32.const 1; i32.store8 W base_m; local.get V` in front (V, A:
 * scratch locals appended per value type), and the bulk helpers set the bytes of their whole
 * destination range once it passed the range check. The host adds what it writes itself and zeroes
 * only the recorded blocks (and the block after each, for writes that straddle two) before the
 * memory is used again. A write whose effective address wraps or falls outside the memory traps as
 * before (possibly on W first), so nothing unrecorded is written. The guard's own code cannot reach
 * W: every memory index it uses was checked against the original module.
 *
 * Every index the rewrite relies on (locals, globals, functions, types, tables, memories, segments,
 * tags) is checked against the ORIGINAL module first: the injected local, globals, type and function
 * sit right after the original index spaces, where an out-of-range index would land.
 *
 * @module
 */

import {
  BULK_BYTES_PER_FUEL_UNIT,
  BULK_MEMORY_CHUNK_BYTES,
  BULK_TABLE_CHUNK_ENTRIES,
  GuardError,
  MEMORY_GROW_CHARGE_PAGES,
  TABLE_CHARGE_ENTRIES,
  TABLE_ENTRY_FUEL_UNITS,
  WASM_PAGE_BYTES,
  WRITTEN_BLOCK_BYTES,
} from "../limits.ts";
import { malformed, Reader, Writer } from "./bytes.ts";
import {
  type BulkCharges,
  type CodeEdit,
  copyInstructions,
  type CopyResult,
  type IndexBounds,
  StoreType,
} from "./code.ts";
import { FUEL_CHECK_ALLOWED_EXPORT, START_EXPORT } from "./host_signatures.ts";
import { pagesExportName, pooledMemoryImportName, WRITTEN_IMPORT_NAME } from "./caps.ts";
import { mergeDataSegments } from "./data.ts";
import { fcImmediates } from "./opcodes.ts";
import {
  type Limits,
  type ModuleInfo,
  readValType,
  type Section,
  SECTION_RANK,
  SectionId,
} from "./module.ts";

/** What the rewrite does. */
export interface RewriteOptions {
  /** Cap for every defined memory's maximum, in 64 KiB pages. */
  maxMemoryPages: number;
  /** Inject fuel metering; `null` leaves code untouched. */
  fuel: {
    importModule: string;
    importName: string;
    globalExport: string;
    /** Initial counter value, so a start function can run before the host sets it. */
    initial: number;
    /** Fuel shape: "cached" (default) picks per function; "global" uses the global shape everywhere. */
    scheme?: FuelScheme;
    /** Export name of E, "CHECK may be called" (default `FUEL_CHECK_ALLOWED_EXPORT`). */
    allowedExport?: string;
    /** Export name of the former start function (default `START_EXPORT`). */
    startExport?: string;
    /**
     * Chunk sizes of the bulk helpers (default `BULK_MEMORY_CHUNK_BYTES`, `BULK_TABLE_CHUNK_ENTRIES`);
     * tests use small ones to run many chunks on small memories. Bytes: a positive multiple of
     * `BULK_BYTES_PER_FUEL_UNIT`.
     */
    bulkChunks?: BulkChunks;
  } | null;
  /** Custom sections appended at the end of the output. */
  appendCustom?: { name: string; data: Uint8Array }[];
  /**
   * Pooled memories (with fuel only, and only when {@link poolableMemories} accepts the module):
   * every memory becomes an import the host supplies, and `memory.size`/`memory.grow` work on a
   * per-instance page count. See the module documentation.
   */
  poolMemories?: boolean;
}

/** Largest operation part one chunk of a bulk helper runs. */
export interface BulkChunks {
  bytes: number;
  entries: number;
}

/** How fuel points reach the counter: see the module documentation. */
export type FuelScheme = "cached" | "global";

/** What the rewrite did. */
export interface RewriteResult {
  bytes: Uint8Array<ArrayBuffer>;
  fuelPoints: number;
  /** Functions metered through a cached counter local (the rest use the global shape). */
  cachedFunctions: number;
  /** Chunking helpers appended (one per bulk operation kind and memory/table/segment indices used). */
  bulkHelpers: number;
  strippedSections: string[];
}

/** Custom sections that only carry debug information: dropped from prepared guards. */
export function isDebugSection(name: string): boolean {
  return name.startsWith(".debug_") || name === "sourceMappingURL" || name === "external_debug_info";
}

/**
 * V8 rejects a function with more than 50,000 parameters and locals (`kV8MaxWasmFunctionLocals`);
 * a function that has no room for the counter local keeps the global shape.
 */
const MAX_FUNCTION_LOCALS = 50_000;

const OP = {
  unreachable: 0x00,
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  else: 0x05,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  return: 0x0f,
  call: 0x10,
  select: 0x1b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  globalGet: 0x23,
  globalSet: 0x24,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32LtS: 0x48,
  i32LtU: 0x49,
  i32GtU: 0x4b,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32And: 0x71,
  i32Or: 0x72,
  i32Shl: 0x74,
  i32ShrU: 0x76,
  emptyBlock: 0x40,
  i32: 0x7f,
  prefixFc: 0xfc,
  mutable: 0x01,
  funcType: 0x60,
  kindFunction: 0x00,
  kindGlobal: 0x03,
  kindMemory: 0x02,
  memorySize: 0x3f,
  i32Store8: 0x3a,
  i64: 0x7e,
  f32: 0x7d,
  f64: 0x7c,
  v128: 0x7b,
  memoryGrow: 0x40,
  i32Eq: 0x46,
} as const;

/** The amount a point spends: a constant, or the length operand saved in scratch local `T`, scaled. */
type Amount = { units: number } | { scratch: number; scale: Scale };

/** How a length becomes fuel units: `>>> shift`, or `min(length, cap) << shift`. */
type Scale = { shr: number } | { cap: number; shl: number };

function log2Exact(n: number, what: string): number {
  const k = Math.log2(n);
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`${what} must be a power of two, got ${n}`);
  return k;
}

const DEFAULT_CHUNKS: BulkChunks = { bytes: BULK_MEMORY_CHUNK_BYTES, entries: BULK_TABLE_CHUNK_ENTRIES };

/** Checks chunk sizes: positive, below 2^31 (an i32 constant), bytes a multiple of the charge's unit. */
function checkChunks(c: BulkChunks): BulkChunks {
  const ok = (n: number) => Number.isSafeInteger(n) && n > 0 && n < 2 ** 31;
  if (!ok(c.bytes) || !ok(c.entries) || c.bytes % BULK_BYTES_PER_FUEL_UNIT !== 0) {
    throw new RangeError(
      `bulk chunks must be positive (bytes a multiple of ${BULK_BYTES_PER_FUEL_UNIT}), got ${
        JSON.stringify(c)
      }`,
    );
  }
  return c;
}

/** Length scales of the bulk kinds (from the named constants in `limits.ts`). */
const SCALES = {
  bytes: { shr: log2Exact(BULK_BYTES_PER_FUEL_UNIT, "BULK_BYTES_PER_FUEL_UNIT") },
  entries: { cap: TABLE_CHARGE_ENTRIES, shl: log2Exact(TABLE_ENTRY_FUEL_UNITS, "TABLE_ENTRY_FUEL_UNITS") },
  pages: {
    cap: MEMORY_GROW_CHARGE_PAGES,
    shl: log2Exact(WASM_PAGE_BYTES / BULK_BYTES_PER_FUEL_UNIT, "WASM_PAGE_BYTES / BULK_BYTES_PER_FUEL_UNIT"),
  },
} as const;

/** One instruction: an opcode alone, or with its one immediate (s32 for `i32.const`, else u32). */
type Ins = number | readonly [number, number];

/** Writes instructions (see {@link Ins}). */
function emit(w: Writer, ...code: Ins[]): void {
  for (const ins of code) {
    if (typeof ins === "number") {
      w.u8(ins);
      continue;
    }
    w.u8(ins[0]);
    if (ins[0] === OP.i32Const) w.s32(ins[1]);
    else w.u32(ins[1]);
  }
}

/** The instructions that push `amount`. */
function amountCode(amount: Amount): Ins[] {
  if ("units" in amount) return [[OP.i32Const, amount.units]];
  const t: Ins = [OP.localGet, amount.scratch];
  const scale = amount.scale;
  if ("shr" in scale) return [t, [OP.i32Const, scale.shr], OP.i32ShrU];
  // select(cap, T, T > cap) = min(T, cap) unsigned, then << shl
  const cap: Ins = [OP.i32Const, scale.cap];
  return [cap, t, t, cap, OP.i32GtU, OP.select, [OP.i32Const, scale.shl], OP.i32Shl];
}

/** Where a point reads and writes the counter. */
interface PointShape {
  globalIndex: number;
  slowFunc: number;
  /** Cached shape: the counter local and its write-back / re-read sequences; `null` = global shape. */
  cache: { local: number; sync: Uint8Array; reload: Uint8Array } | null;
}

/**
 * One fuel point: spend `amount`, call SLOW when the counter is negative. `fromGlobal` makes a
 * cached-shape point read F instead of L (the function entry). A dynamic amount first saves the
 * length operand (top of the stack, left there) into its scratch local.
 */
function point(shape: PointShape, amount: Amount, fromGlobal = false): Uint8Array {
  const w = new Writer(64);
  const c = shape.cache;
  const f = shape.globalIndex;
  if (!("units" in amount)) emit(w, [OP.localTee, amount.scratch]);
  emit(
    w,
    c === null || fromGlobal ? [OP.globalGet, f] : [OP.localGet, c.local],
    ...amountCode(amount),
    OP.i32Sub,
  );
  if (c === null) emit(w, [OP.globalSet, f], [OP.globalGet, f]);
  else emit(w, [OP.localTee, c.local]);
  emit(w, [OP.i32Const, 0], OP.i32LtS, OP.if, OP.emptyBlock);
  if (c !== null) w.bytes(c.sync);
  emit(w, [OP.call, shape.slowFunc]);
  if (c !== null) w.bytes(c.reload);
  emit(w, OP.end);
  return w.finish();
}

/** The bytes inserted at every fuel point of a global-shape function. */
export function fuelSequence(globalIndex: number, slowFunc: number): Uint8Array {
  return point({ globalIndex, slowFunc, cache: null }, { units: 1 });
}

/** The sequences of a cached-counter function whose counter is local `local`. */
export interface CachedSequences {
  /** Function entry: reads F, spends one unit into L. */
  entry: Uint8Array;
  /** Loop header: spends one unit of L. */
  loop: Uint8Array;
  /** L to F. */
  sync: Uint8Array;
  /** F to L. */
  reload: Uint8Array;
}

/** Builds the cached-counter sequences for counter local `local`. */
export function cachedFuelSequences(globalIndex: number, slowFunc: number, local: number): CachedSequences {
  const sync = new Writer(16);
  emit(sync, [OP.localGet, local], [OP.globalSet, globalIndex]);
  const reload = new Writer(16);
  emit(reload, [OP.globalGet, globalIndex], [OP.localSet, local]);
  const cache = { local, sync: sync.finish(), reload: reload.finish() };
  const shape: PointShape = { globalIndex, slowFunc, cache };
  return { entry: point(shape, { units: 1 }, true), loop: point(shape, { units: 1 }), ...cache };
}

/** The charge sequences of the bulk operations, for a function with scratch local `scratch`. */
function bulkCharges(shape: PointShape, scratch: number): BulkCharges {
  return {
    bytes: point(shape, { scratch, scale: SCALES.bytes }),
    entries: point(shape, { scratch, scale: SCALES.entries }),
    pages: point(shape, { scratch, scale: SCALES.pages }),
  };
}

/**
 * SLOW's body (no locals): trap unless CHECK may be called; call CHECK; trap unless it refilled F.
 */
function slowBody(globalIndex: number, allowedIndex: number, checkFunc: number): Uint8Array {
  const w = new Writer(32);
  const trapIf: Ins[] = [OP.if, OP.emptyBlock, OP.unreachable, OP.end];
  w.u32(0); // local groups
  emit(w, [OP.globalGet, allowedIndex], OP.i32Eqz, ...trapIf);
  emit(w, [OP.call, checkFunc], [OP.globalGet, globalIndex], [OP.i32Const, 0], OP.i32LtS, ...trapIf);
  emit(w, OP.end);
  return w.finish();
}

/** Rejects a memory minimum above the cap and returns the limits with the maximum clamped. */
function clampLimits(l: Limits, cap: number, index: number): { flags: number; min: number; max: number } {
  if (l.min > cap) {
    throw new GuardError(
      "memory",
      `memory ${index} declares a minimum of ${l.min} pages, above maxMemoryPages ${cap}`,
      { limit: "maxMemoryPages", value: cap },
    );
  }
  return { flags: l.flags | 1, min: l.min, max: l.max === null ? cap : Math.min(l.max, cap) };
}

/**
 * The clamped limits of every memory when the module's memories can be pooled: all defined (none
 * imported), none shared, 64-bit or with a custom page size; otherwise `null`.
 */
export function poolableMemories(
  info: ModuleInfo,
  cap: number,
): { flags: number; min: number; max: number }[] | null {
  if (info.importedMemories > 0 || info.memories.length === 0) return null;
  if (info.memories.some((l) => (l.flags & ~1) !== 0)) return null;
  return info.memories.map((l, i) => clampLimits(l, cap, i));
}

/** The written-pages memory W of pooled memories: where memory m's block bytes start, and W's size. */
export function writtenLayout(limits: readonly { max: number }[]): { bases: number[]; pages: number } {
  const perPage = WASM_PAGE_BYTES / WRITTEN_BLOCK_BYTES;
  const bases: number[] = [];
  let total = 0;
  for (const l of limits) {
    bases.push(total);
    total += l.max * perPage;
  }
  return { bases, pages: Math.max(1, Math.ceil(total / WASM_PAGE_BYTES)) };
}

/** Scratch locals of a function that writes memory: A (address) and one or two per value type. */
interface WriteLocals {
  addr: number;
  values: Record<StoreType, [number, number]>;
}

/** The sequence that records a write (see "Written pages"); the write's operands stay as they were. */
function markSequence(
  loc: WriteLocals,
  written: { mem: number; bases: number[] },
  type: StoreType,
  values: 1 | 2,
  mem: number,
  offset: number,
): Uint8Array {
  const w = new Writer(48);
  const [a, b] = loc.values[type];
  if (values === 2) emit(w, [OP.localSet, b]);
  emit(w, [OP.localSet, a], [OP.localTee, loc.addr], [OP.localGet, loc.addr]);
  if (offset !== 0) emit(w, [OP.i32Const, offset | 0], OP.i32Add);
  emit(w, [OP.i32Const, Math.log2(WRITTEN_BLOCK_BYTES)], OP.i32ShrU, [OP.i32Const, 1], OP.i32Store8);
  w.u32(0x40); // align 1, explicit memory index
  w.u32(written.mem);
  w.u32(written.bases[mem]);
  emit(w, [OP.localGet, a]);
  if (values === 2) emit(w, [OP.localGet, b]);
  return w.finish();
}

/**
 * GROW_m's body `(delta) -> old | -1` (locals: old, new): see "Pooled memories" in the module
 * documentation. `pages` is P_m's global index, `max` the memory's clamped maximum.
 */
function growBody(m: number, pages: number, max: number): Uint8Array {
  const [DELTA, OLD, NEW] = [0, 1, 2];
  const failIf: Ins[] = [OP.if, OP.emptyBlock, [OP.i32Const, -1], OP.return, OP.end];
  const w = new Writer(64);
  w.u32(1); // one local group: OLD, NEW
  w.u32(2);
  w.u8(OP.i32);
  emit(w, [OP.globalGet, pages], [OP.localSet, OLD]);
  // delta > max - old (unsigned): the engine's answer for a grow past the maximum
  emit(w, [OP.localGet, DELTA], [OP.i32Const, max], [OP.localGet, OLD], OP.i32Sub, OP.i32GtU, ...failIf);
  emit(w, [OP.localGet, OLD], [OP.localGet, DELTA], OP.i32Add, [OP.localTee, NEW]);
  emit(w, [OP.memorySize, m], OP.i32GtU, OP.if, OP.emptyBlock);
  emit(w, [OP.localGet, NEW], [OP.memorySize, m], OP.i32Sub, [OP.memoryGrow, m], [OP.i32Const, -1], OP.i32Eq);
  emit(w, ...failIf, OP.end);
  emit(w, [OP.localGet, NEW], [OP.globalSet, pages], [OP.localGet, OLD], OP.end);
  return w.finish();
}

/** A value type: its name as `module.ts` reads it, and its encoding. */
interface ValType {
  name: string;
  bytes: Uint8Array;
}

const I32_TYPE: ValType = { name: "i32", bytes: Uint8Array.of(OP.i32) };

/**
 * The function types the rewrite needs: an original type of the same shape when there is one, else
 * a type appended after the original ones, so original indices never move.
 */
class TypePlan {
  readonly appended: Uint8Array[] = [];
  readonly #info: ModuleInfo;
  readonly #known = new Map<string, number>();
  constructor(info: ModuleInfo) {
    this.#info = info;
  }
  index(params: readonly ValType[], results: readonly ValType[] = []): number {
    const names = (ts: readonly (ValType | string)[]) =>
      ts.map((t) => typeof t === "string" ? t : t.name).join(",");
    const key = `${names(params)}->${names(results)}`;
    let i = this.#known.get(key);
    if (i !== undefined) return i;
    i = this.#info.types.findIndex((t) => t !== null && `${names(t.params)}->${names(t.results)}` === key);
    if (i < 0) {
      i = this.#info.types.length + this.appended.length;
      const w = new Writer(16);
      w.u8(OP.funcType);
      for (const ts of [params, results]) {
        w.u32(ts.length);
        for (const t of ts) w.bytes(t.bytes);
      }
      this.appended.push(w.finish());
    }
    this.#known.set(key, i);
    return i;
  }
}

/** One chunking helper: the 0xFC operation it runs with its index immediates, and where it sits. */
interface BulkHelper {
  sub: number;
  a: number;
  b: number;
  func: number;
}

/** A function appended after SLOW: a chunking helper or a charge function. */
interface AppendedFunc {
  type: number;
  body: Uint8Array;
}

interface FuelPlan {
  types: TypePlan;
  checkType: number;
  checkFunc: number;
  /** SLOW: appended after the defined functions (its index is the first one past the original ones). */
  slowFunc: number;
  /** F, then E right after it. */
  globalIndex: number;
  allowedIndex: number;
  /** The global-shape point. */
  sequence: Uint8Array;
  scheme: FuelScheme;
  /** Chunking helpers, appended after SLOW in the order the code first uses them. */
  helpers: BulkHelper[];
  /** The helper of a bulk operation (registered on first use); see `CodeEdit.bulkHelper`. */
  helperFor: (sub: number, a: number, b: number) => number;
}

function planFuel(info: ModuleInfo, scheme: FuelScheme): FuelPlan {
  const types = new TypePlan(info);
  const checkType = types.index([]);
  const checkFunc = info.importedFuncs;
  const slowFunc = info.importedFuncs + 1 + info.funcTypes.length;
  const globalIndex = info.importedGlobals + info.globals;
  const sequence = fuelSequence(globalIndex, slowFunc);
  const helpers: BulkHelper[] = [];
  const byKey = new Map<string, BulkHelper>();
  const helperFor = (sub: number, a: number, b: number): number => {
    const key = `${sub} ${a} ${b}`;
    let h = byKey.get(key);
    if (h === undefined) {
      h = { sub, a, b, func: slowFunc + 1 + helpers.length };
      helpers.push(h);
      byKey.set(key, h);
    }
    return h.func;
  };
  return {
    types,
    checkType,
    checkFunc,
    slowFunc,
    globalIndex,
    allowedIndex: globalIndex + 1,
    sequence,
    scheme,
    helpers,
    helperFor,
  };
}

/** 0xFC sub-opcodes of the chunked operations. */
const FC = {
  memoryInit: 8,
  memoryCopy: 10,
  memoryFill: 11,
  tableInit: 12,
  tableCopy: 14,
  tableFill: 17,
} as const;

/**
 * The reference type of every table, imported ones first (the table.fill helpers take a value of
 * it). `module.ts` keeps only the limits of an imported table, so the import section is read again.
 */
function tableTypes(info: ModuleInfo): ValType[] {
  const out: ValType[] = [];
  const readType = (r: Reader) => {
    const at = r.pos;
    const name = readValType(r);
    out.push({ name, bytes: info.bytes.subarray(at, r.pos) });
  };
  const imports = info.sections.find((s) => s.id === SectionId.import);
  if (imports !== undefined && info.importedTables > 0) {
    const r = new Reader(info.bytes, imports.start, imports.end);
    const skipLimits = () => {
      const flags = r.u8();
      r.skipLeb();
      if (flags & 1) r.skipLeb();
    };
    for (let n = r.u32(); n > 0; n--) {
      r.name();
      r.name();
      switch (r.u8()) {
        case 0: // function: type index
          r.u32();
          break;
        case 1: // table
          readType(r);
          skipLimits();
          break;
        case 2: // memory
          skipLimits();
          break;
        case 3: // global: value type, mutability
          readValType(r);
          r.u8();
          break;
        default: // tag: attribute, type index
          r.u8();
          r.u32();
      }
    }
  }
  for (const t of info.tables) {
    out.push({ name: t.elemType, bytes: info.bytes.subarray(t.typeStart, t.limits.start) });
  }
  return out;
}

/**
 * The functions appended after SLOW: every chunking helper (type `(i32, i32, i32) -> ()`, for
 * table.fill `(i32, the table's type, i32) -> ()`), then the charge functions they call, one per
 * length kind in use (`(i32) -> (i32)`: spends the scaled length, returns it).
 *
 * A charge function also calls SLOW for every full chunk (operations of at least one chunk) while
 * CHECK may be called (E set), whatever the counter says. The host sizes refills by the time the
 * last ones took, but bulk work on never-touched pages costs 50-100 times what it costs on touched
 * ones: a refill sized on touched memory (or carried over from an earlier call, whose instance had
 * touched its memory) would let one check interval run for tens of ms on a fresh instance. CHECK
 * with a non-negative counter only accounts and refills, so the units spent stay exact; operations
 * below a chunk, the common case, never call it.
 */
function appendedFunctions(
  info: ModuleInfo,
  fuel: FuelPlan,
  chunks: BulkChunks,
  written: { mem: number; bases: number[] } | null,
): AppendedFunc[] {
  if (fuel.helpers.length === 0) return [];
  const isTable = (h: BulkHelper) =>
    h.sub === FC.tableInit || h.sub === FC.tableCopy || h.sub === FC.tableFill;
  const kinds = [false, true].filter((table) => fuel.helpers.some((h) => isTable(h) === table));
  const chargeType = fuel.types.index([I32_TYPE], [I32_TYPE]);
  const chargeFunc = (table: boolean) => fuel.slowFunc + 1 + fuel.helpers.length + kinds.indexOf(table);
  let tables: ValType[] | null = null;
  const out = fuel.helpers.map((h): AppendedFunc => {
    const value = h.sub === FC.tableFill ? (tables ??= tableTypes(info))[h.a] : I32_TYPE;
    return {
      type: fuel.types.index([I32_TYPE, value, I32_TYPE]),
      body: helperBody(h, isTable(h), chargeFunc(isTable(h)), chunks, isTable(h) ? null : written),
    };
  });
  for (const table of kinds) {
    // F -= scaled(c); if (F < 0 || (c >= chunk && E)) SLOW; return c
    const f = fuel.globalIndex;
    const w = new Writer(64);
    w.u32(0); // no locals
    emit(
      w,
      [OP.globalGet, f],
      ...amountCode({ scratch: 0, scale: table ? SCALES.entries : SCALES.bytes }),
      OP.i32Sub,
      [OP.globalSet, f],
      [OP.globalGet, f],
      [OP.i32Const, 0],
      OP.i32LtS,
      [OP.localGet, 0],
      [OP.i32Const, table ? chunks.entries : chunks.bytes],
      OP.i32GeU,
      [OP.globalGet, fuel.allowedIndex],
      OP.i32And,
      OP.i32Or,
      OP.if,
      OP.emptyBlock,
      [OP.call, fuel.slowFunc],
      OP.end,
      [OP.localGet, 0],
      OP.end,
    );
    out.push({ type: chargeType, body: w.finish() });
  }
  return out;
}

/**
 * The body of the helper that runs `h` in chunks. Parameters: destination offset D, the source
 * offset or fill value X, length N; locals: K (largest chunk), C (the current chunk).
 *
 * 1. When `D + N` (or, for copy and init, `X + N`) wraps around 2^32, K is 2^32 - 1: the original
 *    operation runs as one chunk, charged for its whole length as before it had a helper, and traps
 *    before writing (unless it ends exactly at 4 GiB).
 * 2. Otherwise the operation with length 0 at the end offsets traps exactly when the original would
 *    (an end beyond the memory, table or segment, whose current length counts a dropped segment as
 *    empty), before anything is written: the whole range is checked first, as the spec does.
 * 3. Chunks of at most K, each charged by the charge function `chargeFunc` (global shape; SLOW and
 *    the host's check may run between two chunks, and do after every full chunk) and then run. A copy with D > X goes from the end backwards, so an overlapping copy
 *    reads every source element before it is overwritten, as the single operation does. The chunks
 *    spend exactly what one charge of the whole length spends (a chunk of bytes is a multiple of the
 *    charge's unit; a chunk of entries stays below the charge's cap).
 */
function helperBody(
  h: BulkHelper,
  table: boolean,
  chargeFunc: number,
  chunks: BulkChunks,
  written: { mem: number; bases: number[] } | null,
): Uint8Array {
  const twoOffsets = h.sub !== FC.memoryFill && h.sub !== FC.tableFill;
  const [D, X, N, K, C] = [0, 1, 2, 3, 4];
  const op = new Writer(16);
  op.u8(OP.prefixFc);
  op.u32(h.sub);
  op.u32(h.a);
  if (fcImmediates(h.sub) > 1) op.u32(h.b);
  const opBytes = op.finish();
  const get = (i: number): Ins => [OP.localGet, i];
  const set = (i: number): Ins => [OP.localSet, i];
  const endOf = (x: number): Ins[] => [get(x), get(N), OP.i32Add];
  const wraps = (x: number): Ins[] => [...endOf(x), get(x), OP.i32LtU];
  /** C = min(N, K), unsigned, left on the stack. */
  const chunk: Ins[] = [get(K), get(N), get(N), get(K), OP.i32GtU, OP.select, [OP.localTee, C]];
  const w = new Writer(160);
  const run = (...operands: Ins[]) => {
    emit(w, ...operands, [OP.call, chargeFunc]);
    w.bytes(opBytes);
  };
  /** `block; loop; br_if 1 (N = 0); body; br 0; end; end`. */
  const inChunks = (body: () => void) => {
    emit(w, OP.block, OP.emptyBlock, OP.loop, OP.emptyBlock, get(N), OP.i32Eqz, [OP.brIf, 1]);
    body();
    emit(w, [OP.br, 0], OP.end, OP.end);
  };
  w.u32(1); // one local group: K, C
  w.u32(2);
  w.u8(OP.i32);
  emit(w, ...wraps(D));
  if (twoOffsets) emit(w, ...wraps(X), OP.i32Or);
  emit(w, OP.if, OP.i32, [OP.i32Const, -1], OP.else);
  emit(w, ...endOf(D), ...(twoOffsets ? endOf(X) : [get(X)]), [OP.i32Const, 0]);
  w.bytes(opBytes);
  emit(w, [OP.i32Const, table ? chunks.entries : chunks.bytes], OP.end, set(K));
  if (written !== null) {
    // Written pages: the blocks of the whole destination range (checked above), when N > 0.
    const dst = h.sub === FC.memoryInit ? h.b : h.a;
    const shift: Ins = [OP.i32Const, Math.log2(WRITTEN_BLOCK_BYTES)];
    emit(w, get(N), OP.if, OP.emptyBlock);
    emit(w, get(D), shift, OP.i32ShrU, [OP.i32Const, written.bases[dst]], OP.i32Add, [OP.i32Const, 1]);
    emit(w, get(D), get(N), OP.i32Add, [OP.i32Const, 1], OP.i32Sub, shift, OP.i32ShrU);
    emit(w, get(D), shift, OP.i32ShrU, OP.i32Sub, [OP.i32Const, 1], OP.i32Add);
    w.u8(OP.prefixFc);
    w.u32(FC.memoryFill);
    w.u32(written.mem);
    emit(w, OP.end);
  }
  if (h.sub === FC.memoryCopy || h.sub === FC.tableCopy) {
    emit(w, get(D), get(X), OP.i32GtU, OP.if, OP.emptyBlock);
    inChunks(() => {
      emit(w, get(N), ...chunk, OP.i32Sub, set(N));
      run(...endOf(D), ...endOf(X), get(C));
    });
    emit(w, OP.return, OP.end);
  }
  inChunks(() => {
    run(get(D), get(X), ...chunk);
    emit(w, get(D), get(C), OP.i32Add, set(D));
    if (twoOffsets) emit(w, get(X), get(C), OP.i32Add, set(X));
    emit(w, get(N), get(C), OP.i32Sub, set(N));
  });
  emit(w, OP.end);
  return w.finish();
}

/** The element count at the start of section `id`, 0 when the module has none. */
function sectionCount(info: ModuleInfo, id: number): number {
  const s = info.sections.find((x) => x.id === id);
  return s === undefined || s.start === s.end ? 0 : new Reader(info.bytes, s.start, s.end).u32();
}

/** The sizes of the original module's index spaces (function-specific fields left at -1 / 0). */
export function moduleBounds(info: ModuleInfo): IndexBounds {
  const imported = (kind: string) => info.imports.filter((i) => i.kind === kind).length;
  const hasDataCount = info.sections.some((s) => s.id === SectionId.dataCount);
  return {
    func: -1,
    locals: 0,
    globals: info.importedGlobals + info.globals,
    funcs: info.importedFuncs + info.funcTypes.length,
    types: info.types.length,
    tables: imported("table") + sectionCount(info, SectionId.table),
    memories: info.importedMemories + info.memories.length,
    data: sectionCount(info, hasDataCount ? SectionId.dataCount : SectionId.data),
    elems: sectionCount(info, SectionId.element),
    tags: imported("tag") + sectionCount(info, SectionId.tag),
  };
}

/**
 * Checks the module-level indices the rewrite relies on: function and tag type indices, export and
 * start targets. (Code and constant expressions are checked while they are walked.)
 *
 * @throws {GuardError} "abi" naming the index and where it was found.
 */
function checkModuleIndices(info: ModuleInfo, b: IndexBounds): void {
  const bad = (what: string, index: number, space: string, n: number): never => {
    throw new GuardError(
      "abi",
      `${what} uses ${space} ${index}, but the module has only ${n} (an out-of-range index is invalid ` +
        "WebAssembly and would reach the injected fuel state)",
    );
  };
  for (const imp of info.imports) {
    if (imp.typeIndex !== undefined && imp.typeIndex >= b.types) {
      bad(`import ${imp.module}.${imp.name}`, imp.typeIndex, "type", b.types);
    }
  }
  info.funcTypes.forEach((t, i) => {
    if (t >= b.types) bad(`function ${info.importedFuncs + i}`, t, "type", b.types);
  });
  const space: Readonly<Record<string, keyof IndexBounds>> = {
    function: "funcs",
    table: "tables",
    memory: "memories",
    global: "globals",
    tag: "tags",
  };
  for (const e of info.exports) {
    const k = space[e.kind];
    if (e.index >= b[k]) bad(`export "${e.name}"`, e.index, e.kind, b[k]);
  }
  const start = info.sections.find((s) => s.id === SectionId.start);
  if (start !== undefined) {
    const f = new Reader(info.bytes, start.start, start.end).u32();
    if (f >= b.funcs) bad("the start section", f, "function", b.funcs);
  }
}

/** Writes one section (id, size, content). */
function emitSection(out: Writer, id: number, content: Uint8Array): void {
  out.u8(id);
  out.u32(content.length);
  out.bytes(content);
}

/**
 * Rewrites a parsed module.
 *
 * @throws {GuardError} "memory" when a memory minimum exceeds the cap; "abi" on malformed code,
 *   unsupported opcodes, an index out of range in the original module (naming the function and the
 *   byte offset) or an export name reserved for the injected state.
 */
export function rewriteModule(info: ModuleInfo, opts: RewriteOptions): RewriteResult {
  const bytes = info.bytes;
  const fuel = opts.fuel === null ? null : planFuel(info, opts.fuel.scheme ?? "cached");
  const bounds = fuel === null ? null : moduleBounds(info);
  if (bounds !== null) checkModuleIndices(info, bounds);
  const allowedExport = opts.fuel?.allowedExport ?? FUEL_CHECK_ALLOWED_EXPORT;
  const startExport = opts.fuel?.startExport ?? START_EXPORT;
  const chunks = checkChunks(opts.fuel?.bulkChunks ?? DEFAULT_CHUNKS);
  const startSection = info.sections.find((s) => s.id === SectionId.start);
  // Constant expressions: renumbering only.
  const edit: CodeEdit = fuel === null
    ? { shiftFrom: Infinity, shift: 0, loopPoint: null, cache: null }
    : { shiftFrom: info.importedFuncs, shift: 1, loopPoint: null, cache: null, bounds };
  const shiftFunc = (i: number) => (i >= edit.shiftFrom ? i + edit.shift : i);
  // Function bodies are walked (and their indices checked) first: the helpers they need add types.
  const scans = fuel === null ? [] : scanCode(info, { ...edit, bulkHelper: fuel.helperFor }, bounds!);
  const pooled = fuel !== null && opts.poolMemories === true
    ? poolableMemories(info, opts.maxMemoryPages)
    : null;
  const written = pooled === null ? null : { mem: pooled.length, ...writtenLayout(pooled) };
  const appended = fuel === null ? [] : appendedFunctions(info, fuel, chunks, written);
  if (pooled !== null) {
    // P_m after F and E; GROW_m after every other appended function.
    const pages = (m: number) => fuel!.globalIndex + 2 + m;
    const firstGrow = fuel!.slowFunc + 1 + appended.length;
    const growType = fuel!.types.index([I32_TYPE], [I32_TYPE]);
    pooled.forEach((l, m) => appended.push({ type: growType, body: growBody(m, pages(m), l.max) }));
    edit.memories = { pages, grow: (m) => firstGrow + m };
  }
  // Fewer data segments (`data.ts`), when no code names one.
  const dataSection = info.sections.find((s) => s.id === SectionId.data);
  const mergedData = fuel === null || dataSection === undefined || scans.some((s) => s.seen.dataRefs)
    ? null
    : mergeDataSegments(bytes.subarray(dataSection.start, dataSection.end));
  const out = new Writer(bytes.length + (bytes.length >> 3) + 256);
  out.bytes(bytes.subarray(0, 8));
  const stripped: string[] = [];
  let fuelPoints = 0;
  let cachedFunctions = 0;

  const present = new Set(info.sections.map((s) => s.id));
  // Sections the fuel rewrite needs even when the input has none.
  const synthesize: number[] = fuel === null ? [] : [
    SectionId.type,
    SectionId.import,
    SectionId.function,
    SectionId.global,
    SectionId.export,
    SectionId.code,
  ]
    .filter((id) => !present.has(id));
  const emitSynthesized = (beforeRank: number) => {
    while (synthesize.length > 0 && SECTION_RANK[synthesize[0]] < beforeRank) {
      const id = synthesize.shift()!;
      emitSection(out, id, sectionContent(id, null));
    }
  };

  const sectionContent = (id: number, s: Section | null): Uint8Array => {
    const r = s === null ? null : new Reader(bytes, s.start, s.end);
    const w = new Writer(s === null ? 64 : s.end - s.start + 64);
    switch (id) {
      case SectionId.type: {
        const newTypes = fuel === null ? [] : fuel.types.appended;
        if (newTypes.length === 0) return raw(s!);
        const n = r === null ? 0 : r.u32();
        w.u32(n + newTypes.length);
        if (r !== null) w.bytes(bytes.subarray(r.pos, r.end));
        for (const t of newTypes) w.bytes(t);
        return w.view();
      }
      case SectionId.import: {
        if (fuel === null) return raw(s!);
        const n = r === null ? 0 : r.u32();
        w.u32(n + 1 + (pooled === null ? 0 : pooled.length + 1));
        if (r !== null) w.bytes(bytes.subarray(r.pos, r.end));
        w.name(opts.fuel!.importModule);
        w.name(opts.fuel!.importName);
        w.u8(OP.kindFunction);
        w.u32(fuel.checkType);
        pooled?.forEach((l, m) => {
          w.name(opts.fuel!.importModule);
          w.name(pooledMemoryImportName(m));
          w.u8(OP.kindMemory);
          w.u8(l.flags);
          w.u32(l.min);
          w.u32(l.max);
        });
        if (written !== null) {
          w.name(opts.fuel!.importModule);
          w.name(WRITTEN_IMPORT_NAME);
          w.u8(OP.kindMemory);
          w.u8(1); // min = max
          w.u32(written.pages);
          w.u32(written.pages);
        }
        return w.view();
      }
      case SectionId.function: {
        if (fuel === null) return raw(s!);
        const n = r === null ? 0 : r.u32();
        w.u32(n + 1 + appended.length);
        if (r !== null) w.bytes(bytes.subarray(r.pos, r.end));
        w.u32(fuel.checkType); // SLOW
        for (const f of appended) w.u32(f.type);
        return w.view();
      }
      case SectionId.memory: {
        const n = r!.u32();
        if (pooled !== null) {
          w.u32(0); // imported instead
          return w.view();
        }
        w.u32(n);
        info.memories.forEach((l, i) => {
          const c = clampLimits(l, opts.maxMemoryPages, info.importedMemories + i);
          w.u8(c.flags);
          w.u32(c.min);
          w.u32(c.max);
        });
        return w.view();
      }
      case SectionId.global: {
        if (fuel === null) return raw(s!);
        const n = r === null ? 0 : r.u32();
        w.u32(n + 2 + (pooled?.length ?? 0));
        for (let i = 0; i < n; i++) {
          const typeStart = r!.pos;
          readValType(r!);
          r!.u8(); // mutability
          w.bytes(bytes.subarray(typeStart, r!.pos));
          copyInstructions(r!, w, edit, true);
        }
        // F, then E ("CHECK may be called", 1 until the host says otherwise)
        for (const initial of [opts.fuel!.initial, 1]) {
          w.u8(OP.i32);
          w.u8(OP.mutable);
          w.u8(OP.i32Const);
          w.s32(initial);
          w.u8(OP.end);
        }
        // P_m: the page count the guard sees, starting at the minimum
        for (const l of pooled ?? []) {
          w.u8(OP.i32);
          w.u8(OP.mutable);
          w.u8(OP.i32Const);
          w.s32(l.min);
          w.u8(OP.end);
        }
        return w.view();
      }
      case SectionId.export: {
        if (fuel === null) return raw(s!);
        const reserved = [opts.fuel!.globalExport, allowedExport, startExport];
        const added = (startSection === undefined ? 2 : 3) + (pooled?.length ?? 0);
        w.u32(info.exports.length + added);
        for (const e of info.exports) {
          if (reserved.includes(e.name)) {
            throw new GuardError("abi", `export name "${e.name}" is reserved for the injected fuel state`);
          }
          w.name(e.name);
          w.u8(KIND_CODE[e.kind]);
          w.u32(e.kind === "function" ? shiftFunc(e.index) : e.index);
        }
        w.name(opts.fuel!.globalExport);
        w.u8(OP.kindGlobal);
        w.u32(fuel.globalIndex);
        w.name(allowedExport);
        w.u8(OP.kindGlobal);
        w.u32(fuel.allowedIndex);
        if (startSection !== undefined) {
          w.name(startExport);
          w.u8(OP.kindFunction);
          w.u32(shiftFunc(new Reader(bytes, startSection.start, startSection.end).u32()));
        }
        pooled?.forEach((_, m) => {
          w.name(pagesExportName(m));
          w.u8(OP.kindGlobal);
          w.u32(edit.memories!.pages(m));
        });
        return w.view();
      }
      case SectionId.start:
        w.u32(shiftFunc(r!.u32()));
        return w.view();
      case SectionId.data:
        return mergedData?.content ?? raw(s!);
      case SectionId.dataCount:
        if (mergedData === null) return raw(s!);
        w.u32(mergedData.count);
        return w.view();
      case SectionId.element:
        if (fuel === null) return raw(s!);
        rewriteElements(r!, w, edit, shiftFunc, bounds!.funcs);
        return w.view();
      case SectionId.code: {
        if (fuel === null) return raw(s!);
        w.u32(scans.length + 1 + appended.length);
        ({ points: fuelPoints, cached: cachedFunctions } = rewriteCode(scans, w, info, edit, fuel, written));
        const slow = slowBody(fuel.globalIndex, fuel.allowedIndex, fuel.checkFunc);
        w.u32(slow.length);
        w.bytes(slow);
        for (const f of appended) {
          w.u32(f.body.length);
          w.bytes(f.body);
        }
        return w.view();
      }
      default:
        return raw(s!);
    }
  };

  for (const s of info.sections) {
    if (s.id === SectionId.custom) {
      const name = s.name!;
      if (isDebugSection(name)) {
        stripped.push(name);
        continue;
      }
      if (name === "name" && fuel !== null) {
        const names = shiftNameSection(bytes.subarray(s.start, s.end), edit.shiftFrom, opts.fuel!);
        if (names === null) {
          stripped.push(name);
          continue;
        }
        emitCustom(out, name, names);
        continue;
      }
      out.bytes(bytes.subarray(s.headerStart, s.end));
      continue;
    }
    emitSynthesized(SECTION_RANK[s.id]);
    // With fuel the start function runs through the host (exported as startExport), not the engine.
    if (s.id === SectionId.start && fuel !== null) continue;
    emitSection(out, s.id, sectionContent(s.id, s));
  }
  emitSynthesized(Infinity);
  for (const c of opts.appendCustom ?? []) emitCustom(out, c.name, c.data);
  return {
    bytes: out.finish(),
    fuelPoints,
    cachedFunctions,
    bulkHelpers: fuel?.helpers.length ?? 0,
    strippedSections: stripped,
  };

  function raw(s: Section): Uint8Array {
    return bytes.subarray(s.start, s.end);
  }
}

const KIND_CODE: Readonly<Record<string, number>> = { function: 0, table: 1, memory: 2, global: 3, tag: 4 };

function emitCustom(out: Writer, name: string, data: Uint8Array): void {
  const w = new Writer(data.length + name.length + 8);
  w.name(name);
  w.bytes(data);
  emitSection(out, SectionId.custom, w.view());
}

function rewriteElements(
  r: Reader,
  w: Writer,
  edit: CodeEdit,
  shiftFunc: (i: number) => number,
  funcs: number,
): void {
  const n = r.u32();
  w.u32(n);
  for (let i = 0; i < n; i++) {
    const at = r.pos;
    const flags = r.u32();
    if (flags > 7) malformed(`unknown element segment flags ${flags}`, at);
    w.u32(flags);
    if (flags === 2 || flags === 6) w.u32(r.u32()); // table index
    if ((flags & 1) === 0) copyInstructions(r, w, edit, true); // active: offset
    if (flags === 1 || flags === 2 || flags === 3) w.u8(r.u8()); // elemkind
    if (flags >= 5) {
      const t = r.pos;
      readValType(r); // reftype
      w.bytes(r.buf.subarray(t, r.pos));
    }
    const count = r.u32();
    w.u32(count);
    for (let j = 0; j < count; j++) {
      if (flags & 4) copyInstructions(r, w, edit, true);
      else {
        const at = r.pos;
        const f = r.u32();
        if (f >= funcs) {
          throw new GuardError(
            "abi",
            `element segment ${i} uses function ${f} at byte offset ${at}, but the module has only ${funcs}`,
          );
        }
        w.u32(shiftFunc(f));
      }
    }
  }
  if (!r.done) malformed("trailing bytes in element section", r.pos);
}

/** One function body as the first walk found it. */
interface BodyScan {
  /** Offsets in the module: the local groups start at `groupsStart`, the instructions at `code`. */
  groupsStart: number;
  code: number;
  end: number;
  /** Local groups declared. */
  groups: number;
  /** Parameters + declared locals: the index of the first appended local. */
  counter: number;
  seen: CopyResult;
}

/**
 * Walks every function body once without writing: checks its indices against `bounds`, notes what
 * it holds (loops, exception handling, bulk operations charged in place) and registers the chunking
 * helpers it calls (through `renumber.bulkHelper`).
 */
function scanCode(info: ModuleInfo, renumber: CodeEdit, bounds: IndexBounds): BodyScan[] {
  const section = info.sections.find((s) => s.id === SectionId.code);
  if (section === undefined) return [];
  const r = new Reader(info.bytes, section.start, section.end);
  const n = r.u32();
  const expected = info.funcTypes.length;
  if (n !== expected) malformed(`code section has ${n} bodies for ${expected} functions`, r.pos);
  const scans: BodyScan[] = [];
  for (let i = 0; i < n; i++) {
    const size = r.u32();
    const start = r.pos;
    const end = start + size;
    if (end > r.end) malformed(`function body ${i} runs past the code section`, start);
    const br = new Reader(r.buf, start, end);
    const groups = br.u32();
    const groupsStart = br.pos;
    let locals = 0;
    for (let g = groups; g > 0; g--) {
      locals += br.u32();
      readValType(br);
    }
    const code = br.pos;
    // Types were checked against the original type section (checkModuleIndices).
    const counter = info.types[info.funcTypes[i]]!.params.length + locals;
    const func = info.importedFuncs + i;
    const seen = copyInstructions(
      br,
      null,
      { ...renumber, bounds: { ...bounds, func, locals: counter } },
      false,
    );
    scans.push({ groupsStart, code, end, groups, counter, seen });
    r.pos = end;
  }
  if (!r.done) malformed("trailing bytes in code section", r.pos);
  return scans;
}

/**
 * Writes the scanned function bodies with fuel points: the cached-counter shape for a function
 * with at least one loop, no exception handling and room for its extra locals; the global shape
 * otherwise (a function without loops runs its single point once per call, so a cached copy would
 * only add write-backs around its calls). Bulk operations with a helper become calls to it. Returns
 * the fuel points inserted (entries and loop headers; bulk charges are not counted) and the
 * cached-shape functions.
 */
function rewriteCode(
  scans: readonly BodyScan[],
  w: Writer,
  info: ModuleInfo,
  renumber: CodeEdit,
  fuel: FuelPlan,
  written: { mem: number; bases: number[] } | null,
): { points: number; cached: number } {
  const buf = info.bytes;
  const body = new Writer(4096);
  const globalShape: PointShape = { globalIndex: fuel.globalIndex, slowFunc: fuel.slowFunc, cache: null };
  const cachedSeq = new Map<number, CachedSequences>();
  const globalBulk = new Map<number, BulkCharges>();
  const cachedBulk = new Map<number, BulkCharges>();
  const memo = <T>(m: Map<number, T>, k: number, make: () => T): T => {
    let v = m.get(k);
    if (v === undefined) m.set(k, v = make());
    return v;
  };
  const edit0: CodeEdit = { ...renumber, bulkHelper: fuel.helperFor, bounds: null };
  let points = 0;
  let cached = 0;
  scans.forEach(({ groupsStart, code, end, groups, counter, seen }, i) => {
    const func = info.importedFuncs + i;
    const extra = seen.bulk ? 2 : 1;
    const useCache = fuel.scheme === "cached" && seen.loops > 0 && !seen.exceptions &&
      counter + extra <= MAX_FUNCTION_LOCALS;
    if (!useCache && seen.bulk && counter + 1 > MAX_FUNCTION_LOCALS) {
      throw new GuardError(
        "abi",
        `function ${func} has ${counter} parameters and locals: no room for the local that meters its bulk ` +
          `operations (V8 allows ${MAX_FUNCTION_LOCALS})`,
      );
    }
    // Appended locals: [L] (cached) then [T] (bulk operations charged in place), all i32; then,
    // when writes are recorded, A and two i32 (still in the i32 group), two i64, f32, f64, v128.
    const appended = (useCache ? 1 : 0) + (seen.bulk ? 1 : 0);
    const tracked = written !== null && seen.stores !== 0;
    const wantV128 = (seen.stores & StoreType.v128) !== 0;
    const first = counter + appended;
    if (tracked && first + 7 + (wantV128 ? 1 : 0) > MAX_FUNCTION_LOCALS) {
      throw new GuardError(
        "abi",
        `function ${func} has ${counter} parameters and locals: no room for the locals that record its ` +
          `memory writes (V8 allows ${MAX_FUNCTION_LOCALS})`,
      );
    }
    const i32s = appended + (tracked ? 3 : 0);
    const more: [number, number][] = tracked
      ? [[2, OP.i64], [1, OP.f32], [1, OP.f64], ...(wantV128 ? [[1, OP.v128] as [number, number]] : [])]
      : [];
    body.len = 0;
    body.u32(groups + (i32s > 0 ? 1 : 0) + more.length);
    body.bytes(buf.subarray(groupsStart, code));
    if (i32s > 0) {
      body.u32(i32s);
      body.u8(OP.i32);
    }
    for (const [n, t] of more) {
      body.u32(n);
      body.u8(t);
    }
    const loc: WriteLocals = {
      addr: first,
      values: {
        [StoreType.i32]: [first + 1, first + 2],
        [StoreType.i64]: [first + 3, first + 4],
        [StoreType.f32]: [first + 5, first + 5],
        [StoreType.f64]: [first + 6, first + 6],
        [StoreType.v128]: [first + 7, first + 7],
      },
    };
    const markStore = tracked
      ? (type: StoreType, values: 1 | 2, mem: number, offset: number) =>
        markSequence(loc, written!, type, values, mem, offset)
      : null;
    const edit = { ...edit0, markStore };
    const br = new Reader(buf, code, end);
    if (useCache) {
      const seq = memo(
        cachedSeq,
        counter,
        () => cachedFuelSequences(fuel.globalIndex, fuel.slowFunc, counter),
      );
      const bulk = seen.bulk
        ? memo(
          cachedBulk,
          counter,
          () =>
            bulkCharges(
              { ...globalShape, cache: { local: counter, sync: seq.sync, reload: seq.reload } },
              counter + 1,
            ),
        )
        : null;
      body.bytes(seq.entry);
      copyInstructions(br, body, { ...edit, loopPoint: seq.loop, cache: seq, bulk }, false);
      cached++;
    } else {
      const bulk = seen.bulk ? memo(globalBulk, counter, () => bulkCharges(globalShape, counter)) : null;
      body.bytes(fuel.sequence);
      copyInstructions(br, body, { ...edit, loopPoint: fuel.sequence, cache: null, bulk }, false);
    }
    points += 1 + seen.loops;
    w.u32(body.len);
    w.bytes(body.view());
  });
  return { points, cached };
}

/** Name subsections whose entries are keyed by function index. */
const NAME_SUB = { function: 1, local: 2, label: 3 } as const;

/**
 * Shifts function indices in a `name` section and names the injected import. Returns `null` when the
 * section does not parse (the caller drops it).
 */
function shiftNameSection(
  data: Uint8Array,
  shiftFrom: number,
  fuel: NonNullable<RewriteOptions["fuel"]>,
): Uint8Array | null {
  try {
    const r = new Reader(data);
    const w = new Writer(data.length + 64);
    while (!r.done) {
      const id = r.u8();
      const size = r.u32();
      const end = r.pos + size;
      if (end > r.end) return null;
      const sub = new Reader(data, r.pos, end);
      r.pos = end;
      if (id !== NAME_SUB.function && id !== NAME_SUB.local && id !== NAME_SUB.label) {
        w.u8(id);
        w.u32(size);
        w.bytes(data.subarray(sub.pos, end));
        continue;
      }
      const sw = new Writer(size + 64);
      const count = sub.u32();
      const addImportName = id === NAME_SUB.function;
      sw.u32(count + (addImportName ? 1 : 0));
      let inserted = !addImportName;
      for (let i = 0; i < count; i++) {
        const idx = sub.u32();
        const entryStart = sub.pos;
        if (id === NAME_SUB.function) sub.name();
        else {
          for (let m = sub.u32(); m > 0; m--) {
            sub.u32();
            sub.name();
          }
        }
        if (!inserted && idx >= shiftFrom) {
          sw.u32(shiftFrom);
          sw.name(`${fuel.importModule}.${fuel.importName}`);
          inserted = true;
        }
        sw.u32(idx >= shiftFrom ? idx + 1 : idx);
        sw.bytes(data.subarray(entryStart, sub.pos));
      }
      if (!inserted) {
        sw.u32(shiftFrom);
        sw.name(`${fuel.importModule}.${fuel.importName}`);
      }
      if (!sub.done) return null;
      w.u8(id);
      w.u32(sw.len);
      w.bytes(sw.view());
    }
    return w.finish();
  } catch (e) {
    if (e instanceof GuardError) return null;
    throw e;
  }
}
