/**
 * Immediate-operand shapes of every instruction the decoder accepts.
 *
 * Covered: MVP, sign extension, non-trapping float-to-int (0xFC 0-7), bulk memory and reference types
 * (0xFC 8-17, 0xD0-0xD2, table.get/set, typed select), multi-value (type-index block types), SIMD and
 * relaxed SIMD (0xFD), tail calls, typed function references (call_ref, br_on_null...), exception
 * handling (legacy try/catch/catch_all/delegate/rethrow and try_table/throw_ref), threads (0xFE) and
 * multi-memory memargs. GC (0xFB) and anything else are rejected by name.
 *
 * @module
 */

/** How the bytes after an opcode are laid out. */
export const Imm = {
  /** Not a known opcode. */
  invalid: 0,
  none: 1,
  /** Block type: 0x40, a value type, or an s33 type index. */
  block: 2,
  /** `loop` + block type: a fuel point follows. */
  loop: 3,
  /** One LEB128 (index, label, i32/i64 constant, heap type). */
  leb: 4,
  /** Two LEB128s. */
  leb2: 5,
  /** A function index (renumbered). */
  func: 6,
  br_table: 7,
  memarg: 8,
  f32: 9,
  f64: 10,
  /** `select t*`: a vector of value types. */
  select_t: 11,
  try_table: 12,
  prefix_fc: 13,
  prefix_fd: 14,
  prefix_fe: 15,
  /** GC (0xFB): recognised, unsupported. */
  prefix_gc: 16,
} as const;

function buildSingleByteTable(): Uint8Array {
  const t = new Uint8Array(256);
  const set = (kind: number, ...ops: number[]) => {
    for (const op of ops) t[op] = kind;
  };
  const range = (kind: number, from: number, to: number) => {
    for (let op = from; op <= to; op++) t[op] = kind;
  };
  set(Imm.none, 0x00, 0x01, 0x05, 0x0a, 0x0b, 0x0f, 0x19, 0x1a, 0x1b, 0xd1, 0xd3);
  set(Imm.block, 0x02, 0x04, 0x06); // block, if, try
  set(Imm.loop, 0x03);
  set(Imm.leb, 0x07, 0x08, 0x09); // catch tag, throw tag, rethrow label
  set(Imm.leb, 0x0c, 0x0d); // br, br_if
  set(Imm.br_table, 0x0e);
  set(Imm.func, 0x10, 0x12, 0xd2); // call, return_call, ref.func
  set(Imm.leb2, 0x11, 0x13); // call_indirect, return_call_indirect: type, table
  set(Imm.leb, 0x14, 0x15); // call_ref, return_call_ref: type
  set(Imm.leb, 0x18); // delegate label
  set(Imm.select_t, 0x1c);
  set(Imm.try_table, 0x1f);
  range(Imm.leb, 0x20, 0x26); // local.*, global.*, table.get/set
  range(Imm.memarg, 0x28, 0x3e); // loads and stores
  set(Imm.leb, 0x3f, 0x40); // memory.size/grow: memory index
  set(Imm.leb, 0x41, 0x42); // i32.const, i64.const
  set(Imm.f32, 0x43);
  set(Imm.f64, 0x44);
  range(Imm.none, 0x45, 0xc4); // numeric ops incl. sign extension
  set(Imm.leb, 0xd0); // ref.null heap type
  set(Imm.leb, 0xd4, 0xd6); // br_on_null, br_on_non_null
  set(Imm.prefix_gc, 0xfb);
  set(Imm.prefix_fc, 0xfc);
  set(Imm.prefix_fd, 0xfd);
  set(Imm.prefix_fe, 0xfe);
  return t;
}

/** Immediate shape per single-byte opcode. */
export const SINGLE_BYTE_IMM: Uint8Array = buildSingleByteTable();

/** 0xFC sub-opcodes: number of LEB128 immediates, -1 if unknown. */
export function fcImmediates(sub: number): number {
  if (sub <= 7) return 0; // trunc_sat
  switch (sub) {
    case 8: // memory.init data mem
    case 10: // memory.copy mem mem
    case 12: // table.init elem table
    case 14: // table.copy table table
      return 2;
    case 9: // data.drop
    case 11: // memory.fill
    case 13: // elem.drop
    case 15: // table.grow
    case 16: // table.size
    case 17: // table.fill
      return 1;
  }
  return -1;
}

/** SIMD sub-opcode shapes. */
export const Simd = { none: 0, memarg: 1, bytes16: 2, lane: 3, memargLane: 4, invalid: 5 } as const;

/** Highest relaxed-SIMD sub-opcode (0x100..0x113). */
const LAST_SIMD_SUB = 0x113;

/** 0xFD sub-opcode shape. */
export function simdShape(sub: number): number {
  if (sub <= 11) return Simd.memarg; // v128.load*, v128.store
  if (sub === 12 || sub === 13) return Simd.bytes16; // v128.const, i8x16.shuffle
  if (sub >= 21 && sub <= 34) return Simd.lane; // extract/replace_lane
  if (sub >= 84 && sub <= 91) return Simd.memargLane; // load/store*_lane
  if (sub === 92 || sub === 93) return Simd.memarg; // load32/64_zero
  if (sub <= LAST_SIMD_SUB) return Simd.none;
  return Simd.invalid;
}

/** 0xFE (atomics) sub-opcodes: true when followed by a memarg; atomic.fence has a zero byte. */
export function atomicShape(sub: number): "memarg" | "fence" | "invalid" {
  if (sub <= 0x02) return "memarg"; // notify, wait32, wait64
  if (sub === 0x03) return "fence";
  if (sub >= 0x10 && sub <= 0x4e) return "memarg"; // loads, stores, rmw, cmpxchg
  return "invalid";
}

/** Formats an opcode (and sub-opcode) as hex, e.g. `0xfb 0x14`. */
export function opcodeName(op: number, sub?: number): string {
  const hex = (n: number) => `0x${n.toString(16).padStart(2, "0")}`;
  return sub === undefined ? hex(op) : `${hex(op)} ${hex(sub)}`;
}
