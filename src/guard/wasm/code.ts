/**
 * Instruction walker: copies an instruction sequence, renumbering function indices and inserting fuel
 * points. Bytes that need no change are copied in runs, so the cost is one decode pass.
 *
 * With `bounds` set, every index an instruction names (local, global, function, type, table, memory,
 * data and element segment, tag) must be in range in the ORIGINAL module: the injected counter local,
 * fuel global, check type and slow-path function sit right after the original index spaces, so an
 * out-of-range index would otherwise land on them and change what the code means.
 *
 * Bulk operations spend fuel in proportion to their length, before they run. `memory.fill/copy/init`
 * and `table.fill/copy/init` become calls to helpers the rewriter appends (`CodeEdit.bulkHelper`),
 * which run the operation in metered chunks; `memory.grow` and `table.grow` (one engine call that
 * writes nothing the guard can see before it returns) get a charge sequence right before them
 * (`CodeEdit.bulk`). Without a helper (`bulkHelper` unset) the six chunkable operations get that
 * charge sequence too.
 *
 * Two fuel shapes exist (the sequences themselves come from the rewriter):
 * - global: the same point after every `loop` block type; nothing else changes.
 * - cached counter: the point after every `loop` works on a local copy of the counter, which is
 *   written back ("sync") before every call, `return`, branch to the function's own label and the
 *   function's final `end`, and read again ("reload") after every call. A body that contains any
 *   exception-handling instruction cannot use it (a handler could resume with a stale copy); the walk
 *   then stops and reports it, and the caller copies that body in the global shape.
 *
 * @module
 */

import { GuardError } from "../limits.ts";
import { malformed, type Reader, type Writer } from "./bytes.ts";
import { readValType } from "./module.ts";
import { atomicShape, fcImmediates, Imm, opcodeName, Simd, simdShape, SINGLE_BYTE_IMM } from "./opcodes.ts";

/** Write-back and re-read sequences of a function's cached fuel counter. */
export interface CounterCache {
  /** Cached counter to the global: `local.get L; global.set F`. */
  sync: Uint8Array;
  /** Global to the cached counter: `global.get F; local.set L`. */
  reload: Uint8Array;
}

/** Sizes of the original module's index spaces (see the module documentation). */
export interface IndexBounds {
  /** Absolute index of the function being copied, for messages; -1 for constant expressions. */
  func: number;
  /** Parameters + declared locals of that function (0 in constant expressions). */
  locals: number;
  globals: number;
  funcs: number;
  types: number;
  tables: number;
  memories: number;
  /** Data segments (the data count section, else the data section's count). */
  data: number;
  elems: number;
  tags: number;
}

/** What kind of length a bulk operation's last operand is, which picks its charge sequence. */
export const BulkKind = { none: 0, bytes: 1, entries: 2, pages: 3 } as const;

/** Charge sequences inserted before bulk operations, by {@link BulkKind}. */
export interface BulkCharges {
  bytes: Uint8Array;
  entries: Uint8Array;
  pages: Uint8Array;
}

/** What to change while copying instructions. */
export interface CodeEdit {
  /** Function indices at or above this value are shifted by `shift`. */
  shiftFrom: number;
  shift: number;
  /** Inserted after every `loop` block type; `null` = no fuel. */
  loopPoint: Uint8Array | null;
  /** Function bodies only: the cached-counter shape; `null` = the global shape. */
  cache: CounterCache | null;
  /** Inserted before bulk operations that have no helper; `null` = none. */
  bulk?: BulkCharges | null;
  /**
   * The function that runs 0xFC operation `sub` (a {@link CHUNKED_BULK_OPS} member) with index
   * immediates `a` and `b` (0 when it has one) in chunks; the operation becomes a call to it (with
   * the cached counter written back before and read again after). Also called while walking without
   * a writer, so the caller learns which helpers the code needs. Unset: no helpers.
   */
  bulkHelper?: ((sub: number, a: number, b: number) => number) | null;
  /** Index ranges to enforce; `null`/absent = no checks. */
  bounds?: IndexBounds | null;
  /**
   * Pooled memories (see `rewrite.ts`, "Pooled memories"): `memory.size m` becomes
   * `global.get pages(m)` and `memory.grow m` (after its charge) becomes `call grow(m)`. The grow
   * functions never read the fuel counter, so the cached counter needs no write-back around them.
   */
  memories?: { pages: (m: number) => number; grow: (m: number) => number } | null;
  /**
   * Pooled memories' write tracking (see `rewrite.ts`, "Written pages"): the sequence inserted right
   * before a store, atomic read-modify-write or compare-exchange of `values` operands of type
   * `type` to memory `mem` at static offset `offset`. Absent: stores are copied unchanged.
   */
  markStore?: ((type: StoreType, values: 1 | 2, mem: number, offset: number) => Uint8Array) | null;
}

/** Value types a memory write takes (the operand saved while the write is recorded). */
export const StoreType = { i32: 1, i64: 2, f32: 4, f64: 8, v128: 16 } as const;
export type StoreType = typeof StoreType[keyof typeof StoreType];

/** The value type of a plain store opcode (0x36-0x3E), else 0. */
function plainStoreType(op: number): StoreType | 0 {
  if (op < 0x36 || op > 0x3e) return 0;
  return ([
    StoreType.i32,
    StoreType.i64,
    StoreType.f32,
    StoreType.f64,
    StoreType.i32,
    StoreType.i32,
  ] as const)[
    op - 0x36
  ] ?? StoreType.i64; // 0x3c-0x3e: i64.store8/16/32
}

/**
 * The value type and operand count of a 0xFE instruction that writes memory (atomic stores
 * 0x17-0x1D, read-modify-writes 0x1E-0x47, compare-exchanges 0x48-0x4E), else null. Each group of
 * seven runs i32, i64, i32 8/16-bit, i64 8/16/32-bit.
 */
function atomicWrite(sub: number): { type: StoreType; values: 1 | 2 } | null {
  if (sub < 0x17 || sub > 0x4e) return null;
  const k = (sub - 0x17) % 7;
  return { type: k === 0 || k === 2 || k === 3 ? StoreType.i32 : StoreType.i64, values: sub >= 0x48 ? 2 : 1 };
}

/** What a copy found. */
export interface CopyResult {
  /** `loop` instructions copied (fuel points inserted when `loopPoint` is set). */
  loops: number;
  /**
   * The code holds an exception-handling instruction. In cached-counter mode the copy stopped at the
   * first one and the output is incomplete: copy the body again in the global shape.
   */
  exceptions: boolean;
  /** The code holds a bulk operation charged in place (it needs a scratch local for its charge). */
  bulk: boolean;
  /** {@link StoreType} bits of the memory writes in the code (their operands need scratch locals). */
  stores: number;
  /** The code names a data segment (`memory.init`, `data.drop`). */
  dataRefs: boolean;
}

/**
 * 0xFC sub-opcodes run by a chunking helper when `CodeEdit.bulkHelper` is set: memory.init (8),
 * memory.copy (10), memory.fill (11), table.init (12), table.copy (14), table.fill (17).
 */
export const CHUNKED_BULK_OPS: ReadonlySet<number> = new Set([8, 10, 11, 12, 14, 17]);

/** The bulk kind of a 0xFC sub-opcode. */
function fcBulkKind(sub: number): number {
  switch (sub) {
    case 8: // memory.init
    case 10: // memory.copy
    case 11: // memory.fill
      return BulkKind.bytes;
    case 12: // table.init
    case 14: // table.copy
    case 15: // table.grow
    case 17: // table.fill
      return BulkKind.entries;
  }
  return BulkKind.none;
}

/** Index space names, for messages. */
type Space = Exclude<keyof IndexBounds, "func">;
const SPACE_NAME: Readonly<Record<Space, string>> = {
  locals: "local",
  globals: "global",
  funcs: "function",
  types: "type",
  tables: "table",
  memories: "memory",
  data: "data segment",
  elems: "element segment",
  tags: "tag",
};

function outOfRange(b: IndexBounds, space: Space, index: number, at: number): never {
  const where = b.func < 0 ? "a constant expression" : `function ${b.func}`;
  throw new GuardError(
    "abi",
    `${where} uses ${SPACE_NAME[space]} ${index} at byte offset ${at}, but the module has only ${
      b[space]
    } (an out-of-range index is invalid WebAssembly and would reach the injected fuel state)`,
  );
}

/** Reads an index at `r` and checks it against `space` when bounds are set. */
function index(r: Reader, b: IndexBounds | null, space: Space): number {
  const at = r.pos;
  const i = r.u32();
  if (b !== null && i >= b[space]) outOfRange(b, space, i, at);
  return i;
}

/** Opcodes of both exception-handling proposals: try, catch, throw, rethrow, throw_ref, delegate, catch_all, try_table. */
const EXCEPTION_OPS: ReadonlySet<number> = new Set([0x06, 0x07, 0x08, 0x09, 0x0a, 0x18, 0x19, 0x1f]);

/** What the cached-counter shape does around an instruction. */
const Cache = {
  none: 0,
  /** block, loop, if: one more enclosing label. */
  open: 1,
  /** `end`: closes a block, or (with no block open) the function: sync before. */
  end: 2,
  /** call, call_indirect, call_ref: sync before, reload after. */
  call: 3,
  /** return_call*, return: sync before. */
  exit: 4,
  /** br, br_if, br_on_null, br_on_non_null: sync before when the label is the function's. */
  branch: 5,
  /** br_table: sync before when any target is the function's label. */
  branchTable: 6,
  /** Exception handling: the cached shape does not apply. */
  exception: 7,
} as const;

function buildCacheTable(): Uint8Array {
  const t = new Uint8Array(256);
  for (const op of [0x02, 0x03, 0x04]) t[op] = Cache.open;
  t[0x0b] = Cache.end;
  for (const op of [0x10, 0x11, 0x14]) t[op] = Cache.call;
  for (const op of [0x0f, 0x12, 0x13, 0x15]) t[op] = Cache.exit;
  for (const op of [0x0c, 0x0d, 0xd4, 0xd6]) t[op] = Cache.branch;
  t[0x0e] = Cache.branchTable;
  for (const op of EXCEPTION_OPS) t[op] = Cache.exception;
  return t;
}

const CACHE_ACTION: Uint8Array = buildCacheTable();

function unsupported(op: number, sub: number | undefined, at: number, why: string): never {
  throw new GuardError(
    "abi",
    `unsupported WebAssembly opcode ${opcodeName(op, sub)} at byte offset ${at}: ${why}`,
  );
}

/** Skips a block type: 0x40, a value type, or an s33 type index (checked against `b`). */
function skipBlockType(r: Reader, b: IndexBounds | null): void {
  const at = r.pos;
  const first = r.u8();
  if (first === 0x63 || first === 0x64) heapType(r, b); // (ref null? ht)
  else if ((first & 0xc0) !== 0x40) {
    // Not a single-byte negative s33 (0x40 empty, value types): a non-negative type index.
    r.pos = at;
    index(r, b, "types");
  }
}

/** Skips a heap type; a concrete one (a type index) is checked against `b`. */
function heapType(r: Reader, b: IndexBounds | null): void {
  if (r.pos < r.end && (r.buf[r.pos] & 0xc0) === 0x40) r.pos++; // abstract heap type
  else index(r, b, "types");
}

/** Reads a memarg (checking its memory index); returns the memory index and the static offset. */
function skipMemarg(r: Reader, b: IndexBounds | null): { mem: number; offset: number } {
  const flags = r.u32();
  let mem = 0;
  if (flags & 0x40) mem = index(r, b, "memories"); // multi-memory: explicit memory index
  else if (b !== null && b.memories === 0) outOfRange(b, "memories", 0, r.pos);
  return { mem, offset: r.u32() };
}

/** True when a branch label read at `r` (left unread) names the function's own label. */
function peekLabelIs(r: Reader, depth: number): boolean {
  const at = r.pos;
  const label = r.u32();
  r.pos = at;
  return label === depth;
}

/** True when any target of a br_table read at `r` (left unread) is the function's own label. */
function peekTableHits(r: Reader, depth: number): boolean {
  const at = r.pos;
  let hit = false;
  for (let n = r.u32(); n >= 0; n--) if (r.u32() === depth) hit = true; // n targets + default
  r.pos = at;
  return hit;
}

/** Opcodes whose single LEB immediate is an index, and the index space it names. */
const LEB_INDEX: ReadonlyMap<number, Space> = new Map<number, Space>([
  [0x07, "tags"], // catch
  [0x08, "tags"], // throw
  [0x14, "types"], // call_ref
  [0x15, "types"], // return_call_ref
  [0x20, "locals"],
  [0x21, "locals"],
  [0x22, "locals"],
  [0x23, "globals"],
  [0x24, "globals"],
  [0x25, "tables"], // table.get
  [0x26, "tables"], // table.set
  [0x3f, "memories"], // memory.size
  [0x40, "memories"], // memory.grow
]);

/** Index spaces of the immediates of 0xFC sub-opcodes 8-17, in order. */
const FC_INDEX: Readonly<Record<number, readonly Space[]>> = {
  8: ["data", "memories"], // memory.init
  9: ["data"], // data.drop
  10: ["memories", "memories"], // memory.copy
  11: ["memories"], // memory.fill
  12: ["elems", "tables"], // table.init
  13: ["elems"], // elem.drop
  14: ["tables", "tables"], // table.copy
  15: ["tables"], // table.grow
  16: ["tables"], // table.size
  17: ["tables"], // table.fill
};

/**
 * Copies instructions from `r` to `w` applying `edit`; with `w === null` it only walks them (checks
 * bounds, counts loops, notes exception handling and bulk operations).
 *
 * In `constExpr` mode it stops after the first `end` (constant expressions have no blocks);
 * otherwise it copies up to `r.end` (a function body, locals already consumed).
 *
 * @returns the loops copied, whether exception handling was seen (in cached-counter mode the copy
 *   stops there: the output is then incomplete) and whether a bulk operation was seen.
 * @throws {GuardError} kind "abi" on unknown/unsupported opcodes, truncation or (with `bounds`) an
 *   index out of range, naming the function and the byte offset.
 */
export function copyInstructions(
  r: Reader,
  w: Writer | null,
  edit: CodeEdit,
  constExpr: boolean,
): CopyResult {
  const buf = r.buf;
  const { shiftFrom, shift, cache } = edit;
  const loopPoint = w === null ? null : edit.loopPoint;
  const bulkCharges = w === null ? null : edit.bulk ?? null;
  const bulkHelper = edit.bulkHelper ?? null;
  const memories = w === null ? null : edit.memories ?? null;
  const markStore = w === null ? null : edit.markStore ?? null;
  /** Records a memory write at `at` (its memarg just read) when writes are tracked. */
  const write = (at: number, type: StoreType, values: 1 | 2, m: { mem: number; offset: number }) => {
    stores |= type;
    if (markStore !== null) insertBefore(at, markStore(type, values, m.mem, m.offset));
  };
  /** Index immediates of the current 0xFC instruction. */
  const imm = [0, 0];
  const b = edit.bounds ?? null;
  let copyFrom = r.pos;
  let loops = 0;
  let exceptions = false;
  let bulk = false;
  let stores = 0;
  let dataRefs = false;
  /** Blocks open inside the function body: a branch to label `depth` leaves the function. */
  let depth = 0;
  const flush = (to: number) => {
    if (to > copyFrom) w!.bytes(buf.subarray(copyFrom, to));
  };
  /** Inserts `seq` before the instruction that starts at `at`. */
  const insertBefore = (at: number, seq: Uint8Array) => {
    flush(at);
    w!.bytes(seq);
    copyFrom = at;
  };
  while (r.pos < r.end) {
    const at = r.pos;
    const op = buf[r.pos++];
    let reloadAfter = false;
    if (cache !== null && w !== null) {
      let syncBefore = false;
      switch (CACHE_ACTION[op]) {
        case Cache.open:
          depth++;
          break;
        case Cache.end:
          if (depth === 0) syncBefore = true;
          else depth--;
          break;
        case Cache.call:
          syncBefore = reloadAfter = true;
          break;
        case Cache.exit:
          syncBefore = true;
          break;
        case Cache.branch:
          syncBefore = peekLabelIs(r, depth);
          break;
        case Cache.branchTable:
          syncBefore = peekTableHits(r, depth);
          break;
        case Cache.exception:
          return { loops, exceptions: true, bulk, stores, dataRefs };
      }
      if (syncBefore) insertBefore(at, cache.sync);
    } else if (EXCEPTION_OPS.has(op)) {
      exceptions = true;
    }
    switch (SINGLE_BYTE_IMM[op]) {
      case Imm.none:
        if (op === 0x0b && constExpr) {
          if (w !== null) flush(r.pos);
          return { loops, exceptions, bulk, stores, dataRefs };
        }
        break;
      case Imm.block:
        skipBlockType(r, b);
        break;
      case Imm.loop:
        skipBlockType(r, b);
        loops++;
        if (loopPoint !== null) {
          flush(r.pos);
          w!.bytes(loopPoint);
          copyFrom = r.pos;
        }
        break;
      case Imm.leb: {
        const space = b === null ? undefined : LEB_INDEX.get(op);
        let value = -1;
        if (space !== undefined) value = index(r, b, space);
        else if (op === 0xd0) heapType(r, b); // ref.null
        else if (memories !== null && (op === 0x3f || op === 0x40)) value = r.u32();
        else r.skipLeb();
        if (op === 0x40) {
          bulk = true;
          if (bulkCharges !== null) insertBefore(at, bulkCharges.pages);
        }
        if (memories !== null && (op === 0x3f || op === 0x40)) {
          // The charge (if any) is already written: replace the instruction itself.
          flush(at);
          w!.u8(op === 0x3f ? 0x23 : 0x10); // global.get | call
          w!.u32(op === 0x3f ? memories.pages(value) : memories.grow(value));
          copyFrom = r.pos;
        }
        break;
      }
      case Imm.leb2:
        // call_indirect, return_call_indirect: type, table
        index(r, b, "types");
        index(r, b, "tables");
        break;
      case Imm.func: {
        const idxAt = r.pos;
        const idx = index(r, b, "funcs");
        if (shift !== 0 && idx >= shiftFrom && w !== null) {
          flush(idxAt);
          w.u32(idx + shift);
          copyFrom = r.pos;
        }
        break;
      }
      case Imm.br_table:
        for (let n = r.u32(); n >= 0; n--) r.skipLeb(); // n targets + default
        break;
      case Imm.memarg: {
        const m = skipMemarg(r, b);
        const type = plainStoreType(op);
        if (type !== 0) write(at, type, 1, m);
        break;
      }
      case Imm.f32:
        r.skip(4);
        break;
      case Imm.f64:
        r.skip(8);
        break;
      case Imm.select_t:
        for (let n = r.u32(); n > 0; n--) readValType(r);
        break;
      case Imm.try_table:
        skipBlockType(r, b);
        for (let n = r.u32(); n > 0; n--) {
          const kindAt = r.pos;
          const kind = r.u8();
          if (kind > 3) malformed(`unknown try_table catch kind ${kind}`, kindAt);
          if (kind < 2) index(r, b, "tags"); // tag index for catch / catch_ref
          r.skipLeb(); // label
        }
        break;
      case Imm.prefix_fc: {
        const sub = r.u32();
        if (sub === 8 || sub === 9) dataRefs = true; // memory.init, data.drop
        const n = fcImmediates(sub);
        if (n < 0) unsupported(op, sub, at, "unknown 0xFC instruction");
        const spaces = FC_INDEX[sub];
        for (let i = 0; i < n; i++) {
          if (spaces !== undefined) imm[i] = index(r, b, spaces[i]);
          else r.skipLeb();
        }
        const kind = fcBulkKind(sub);
        if (bulkHelper !== null && CHUNKED_BULK_OPS.has(sub)) {
          const fn = bulkHelper(sub, imm[0], n > 1 ? imm[1] : 0);
          if (w !== null) {
            flush(at);
            if (cache !== null) w.bytes(cache.sync);
            w.u8(0x10); // call
            w.u32(fn);
            if (cache !== null) w.bytes(cache.reload);
            copyFrom = r.pos;
          }
        } else if (kind !== BulkKind.none) {
          bulk = true;
          if (bulkCharges !== null) {
            insertBefore(at, kind === BulkKind.bytes ? bulkCharges.bytes : bulkCharges.entries);
          }
        }
        break;
      }
      case Imm.prefix_fd: {
        const sub = r.u32();
        switch (simdShape(sub)) {
          case Simd.none:
            break;
          case Simd.memarg: {
            const m = skipMemarg(r, b);
            if (sub === 11) write(at, StoreType.v128, 1, m); // v128.store
            break;
          }
          case Simd.bytes16:
            r.skip(16);
            break;
          case Simd.lane:
            r.skip(1);
            break;
          case Simd.memargLane: {
            const m = skipMemarg(r, b);
            r.skip(1);
            if (sub >= 88) write(at, StoreType.v128, 1, m); // v128.store8/16/32/64_lane
            break;
          }
          default:
            unsupported(op, sub, at, "unknown SIMD instruction");
        }
        break;
      }
      case Imm.prefix_fe: {
        const sub = r.u32();
        // memory.atomic.wait32/64 block the thread until notified or timed out: one instruction that
        // no fuel check or deadline can end, and a guard has no other thread to notify it.
        if (sub === 0x01 || sub === 0x02) unsupported(op, sub, at, "a wait would block the gateway's thread");
        const shape = atomicShape(sub);
        if (shape === "memarg") {
          const m = skipMemarg(r, b);
          const wr = atomicWrite(sub);
          if (wr !== null) write(at, wr.type, wr.values, m);
        } else if (shape === "fence") r.skip(1);
        else unsupported(op, sub, at, "unknown atomic instruction");
        break;
      }
      case Imm.prefix_gc: {
        const sub = r.pos < r.end ? r.u32() : undefined;
        unsupported(op, sub, at, "the GC proposal is not supported");
        break;
      }
      default:
        unsupported(op, undefined, at, "unknown instruction");
    }
    if (reloadAfter) {
      flush(r.pos);
      w!.bytes(cache!.reload);
      copyFrom = r.pos;
    }
  }
  // Every read is bounded by r.end, so an instruction cut off by the body end was already reported.
  if (constExpr) malformed("constant expression without end", r.pos);
  if (w !== null) flush(r.end);
  return { loops, exceptions, bulk, stores, dataRefs };
}
