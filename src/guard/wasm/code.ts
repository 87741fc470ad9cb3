/**
 * Instruction walker: copies an instruction sequence, renumbering function indices and inserting fuel
 * points. Bytes that need no change are copied in runs, so the cost is one decode pass.
 *
 * @module
 */

import { GuardError } from "../limits.ts";
import { malformed, type Reader, type Writer } from "./bytes.ts";
import { readValType } from "./module.ts";
import { atomicShape, fcImmediates, Imm, opcodeName, Simd, simdShape, SINGLE_BYTE_IMM } from "./opcodes.ts";

/** What to change while copying instructions. */
export interface CodeEdit {
  /** Function indices at or above this value are shifted by `shift`. */
  shiftFrom: number;
  shift: number;
  /** Inserted at function entry and after every `loop` block type; `null` = no fuel. */
  fuel: Uint8Array | null;
}

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

/**
 * Copies instructions from `r` to `w` applying `edit`.
 *
 * In `constExpr` mode it stops after the first `end` (constant expressions have no blocks);
 * otherwise it copies up to `r.end` (a function body, locals already consumed).
 *
 * @returns the number of fuel points inserted (loop headers).
 * @throws {GuardError} kind "abi" on unknown/unsupported opcodes or truncation, naming the offset.
 */
export function copyInstructions(r: Reader, w: Writer, edit: CodeEdit, constExpr: boolean): number {
  const buf = r.buf;
  const { shiftFrom, shift, fuel } = edit;
  let copyFrom = r.pos;
  let points = 0;
  const flush = (to: number) => {
    if (to > copyFrom) w.bytes(buf.subarray(copyFrom, to));
  };
  while (r.pos < r.end) {
    const at = r.pos;
    const op = buf[r.pos++];
    switch (SINGLE_BYTE_IMM[op]) {
      case Imm.none:
        if (op === 0x0b && constExpr) {
          flush(r.pos);
          return points;
        }
        break;
      case Imm.block:
        skipBlockType(r);
        break;
      case Imm.loop:
        skipBlockType(r);
        if (fuel !== null) {
          flush(r.pos);
          w.bytes(fuel);
          copyFrom = r.pos;
          points++;
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
  }
  // Every read is bounded by r.end, so an instruction cut off by the body end was already reported.
  if (constExpr) malformed("constant expression without end", r.pos);
  flush(r.end);
  return points;
}
