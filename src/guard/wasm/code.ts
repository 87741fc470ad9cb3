/**
 * Instruction walker: copies an instruction sequence, renumbering function indices and inserting fuel
 * points. Bytes that need no change are copied in runs, so the cost is one decode pass.
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

/** What to change while copying instructions. */
export interface CodeEdit {
  /** Function indices at or above this value are shifted by `shift`. */
  shiftFrom: number;
  shift: number;
  /** Inserted after every `loop` block type; `null` = no fuel. */
  loopPoint: Uint8Array | null;
  /** Function bodies only: the cached-counter shape; `null` = the global shape. */
  cache: CounterCache | null;
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

function skipBlockType(r: Reader): void {
  const b = r.u8();
  if (b === 0x63 || b === 0x64) r.skipLeb(); // (ref null? ht)
  else if (b & 0x80) {
    r.pos--;
    r.skipLeb(); // multi-byte type index
  }
}

function skipMemarg(r: Reader): void {
  const flags = r.u32();
  if (flags & 0x40) r.skipLeb(); // multi-memory: explicit memory index
  r.skipLeb(); // offset
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

/**
 * Copies instructions from `r` to `w` applying `edit`.
 *
 * In `constExpr` mode it stops after the first `end` (constant expressions have no blocks);
 * otherwise it copies up to `r.end` (a function body, locals already consumed).
 *
 * @returns the loops copied and whether exception handling was seen (in cached-counter mode the
 *   copy stops there: the output is then incomplete).
 * @throws {GuardError} kind "abi" on unknown/unsupported opcodes or truncation, naming the offset.
 */
export function copyInstructions(r: Reader, w: Writer, edit: CodeEdit, constExpr: boolean): CopyResult {
  const buf = r.buf;
  const { shiftFrom, shift, loopPoint, cache } = edit;
  let copyFrom = r.pos;
  let loops = 0;
  let exceptions = false;
  /** Blocks open inside the function body: a branch to label `depth` leaves the function. */
  let depth = 0;
  const flush = (to: number) => {
    if (to > copyFrom) w.bytes(buf.subarray(copyFrom, to));
  };
  while (r.pos < r.end) {
    const at = r.pos;
    const op = buf[r.pos++];
    let reloadAfter = false;
    if (cache !== null) {
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
          return { loops, exceptions: true };
      }
      if (syncBefore) {
        flush(at);
        w.bytes(cache.sync);
        copyFrom = at;
      }
    } else if (EXCEPTION_OPS.has(op)) {
      exceptions = true;
    }
    switch (SINGLE_BYTE_IMM[op]) {
      case Imm.none:
        if (op === 0x0b && constExpr) {
          flush(r.pos);
          return { loops, exceptions };
        }
        break;
      case Imm.block:
        skipBlockType(r);
        break;
      case Imm.loop:
        skipBlockType(r);
        loops++;
        if (loopPoint !== null) {
          flush(r.pos);
          w.bytes(loopPoint);
          copyFrom = r.pos;
        }
        break;
      case Imm.leb:
        r.skipLeb();
        break;
      case Imm.leb2:
        r.skipLeb();
        r.skipLeb();
        break;
      case Imm.func: {
        const idxAt = r.pos;
        const idx = r.u32();
        if (shift !== 0 && idx >= shiftFrom) {
          flush(idxAt);
          w.u32(idx + shift);
          copyFrom = r.pos;
        }
        break;
      }
      case Imm.br_table:
        for (let n = r.u32(); n >= 0; n--) r.skipLeb(); // n targets + default
        break;
      case Imm.memarg:
        skipMemarg(r);
        break;
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
        skipBlockType(r);
        for (let n = r.u32(); n > 0; n--) {
          const kindAt = r.pos;
          const kind = r.u8();
          if (kind > 3) malformed(`unknown try_table catch kind ${kind}`, kindAt);
          if (kind < 2) r.skipLeb(); // tag index for catch / catch_ref
          r.skipLeb(); // label
        }
        break;
      case Imm.prefix_fc: {
        const sub = r.u32();
        const n = fcImmediates(sub);
        if (n < 0) unsupported(op, sub, at, "unknown 0xFC instruction");
        for (let i = 0; i < n; i++) r.skipLeb();
        break;
      }
      case Imm.prefix_fd: {
        const sub = r.u32();
        switch (simdShape(sub)) {
          case Simd.none:
            break;
          case Simd.memarg:
            skipMemarg(r);
            break;
          case Simd.bytes16:
            r.skip(16);
            break;
          case Simd.lane:
            r.skip(1);
            break;
          case Simd.memargLane:
            skipMemarg(r);
            r.skip(1);
            break;
          default:
            unsupported(op, sub, at, "unknown SIMD instruction");
        }
        break;
      }
      case Imm.prefix_fe: {
        const sub = r.u32();
        const shape = atomicShape(sub);
        if (shape === "memarg") skipMemarg(r);
        else if (shape === "fence") r.skip(1);
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
      w.bytes(cache!.reload);
      copyFrom = r.pos;
    }
  }
  // Every read is bounded by r.end, so an instruction cut off by the body end was already reported.
  if (constExpr) malformed("constant expression without end", r.pos);
  flush(r.end);
  return { loops, exceptions };
}
