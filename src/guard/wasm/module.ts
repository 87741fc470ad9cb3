/**
 * Module-level decoding: the section list and the declarations a guard host cares about (types,
 * imports, functions, memories, tables, globals, exports, the sizes of data and element segments).
 * Function bodies are left undecoded here; the rewriter walks them (`code.ts`).
 *
 * @module
 */

import { GuardError } from "../limits.ts";
import { malformed, Reader } from "./bytes.ts";

/** `\0asm` followed by binary format version 1. */
const WASM_HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/** Section ids of the binary format. */
export const SectionId = {
  custom: 0,
  type: 1,
  import: 2,
  function: 3,
  table: 4,
  memory: 5,
  global: 6,
  export: 7,
  start: 8,
  element: 9,
  code: 10,
  data: 11,
  dataCount: 12,
  tag: 13,
} as const;

/**
 * Position of each known section id in the required order (the tag section sits between memory and
 * global, data count between element and code). Custom sections (id 0) may appear anywhere.
 */
export const SECTION_RANK: Readonly<Record<number, number>> = {
  1: 1,
  2: 2,
  3: 3,
  4: 4,
  5: 5,
  13: 6,
  6: 7,
  7: 8,
  8: 9,
  9: 10,
  12: 11,
  10: 12,
  11: 13,
};

/** External kinds as the JS API names them. */
export type ExternKind = "function" | "table" | "memory" | "global" | "tag";
const EXTERN_KINDS: readonly ExternKind[] = ["function", "table", "memory", "global", "tag"];

/** One section: `start..end` is its content (after id and size). */
export interface Section {
  id: number;
  /** Offset of the id byte. */
  headerStart: number;
  start: number;
  end: number;
  /** Custom sections only: the section name; `start` then points past the name. */
  name?: string;
}

/** A function type with value types named as in the text format. */
export interface FuncType {
  params: string[];
  results: string[];
}

/** One import. `typeIndex` is set for function and tag imports. */
export interface Import {
  module: string;
  name: string;
  kind: ExternKind;
  typeIndex?: number;
  /** Memory and table imports: their limits. */
  limits?: Limits;
}

/** A table: its element type (`type` is the raw byte range of the reference type) and limits. */
export interface Table {
  elemType: string;
  typeStart: number;
  limits: Limits;
}

/** Counts of the data and element sections (what an instance copies or keeps at instantiation). */
export interface SegmentCounts {
  dataSegments: number;
  /** Bytes over all data segments. */
  dataBytes: number;
  elementSegments: number;
  /** Entries over all element segments. */
  elementEntries: number;
}

/** Memory limits plus where they sit in the input, for in-place clamping. */
export interface Limits {
  flags: number;
  min: number;
  max: number | null;
  /** Offset of the flags byte. */
  start: number;
  /** Offset just past the limits. */
  end: number;
}

/** One export. */
export interface Export {
  name: string;
  kind: ExternKind;
  index: number;
}

/** Everything the preparer and `inspectGuard` read from a module outside the code section. */
export interface ModuleInfo {
  bytes: Uint8Array;
  sections: Section[];
  types: (FuncType | null)[];
  imports: Import[];
  importedFuncs: number;
  importedGlobals: number;
  importedMemories: number;
  importedTables: number;
  /** Type index of every defined function. */
  funcTypes: number[];
  /** Defined memories in index order (after imported ones). */
  memories: Limits[];
  /** Defined tables in index order (after imported ones). */
  tables: Table[];
  /** Number of defined globals. */
  globals: number;
  exports: Export[];
  segments: SegmentCounts;
}

/** Abstract heap type codes (single-byte negative s33) and their text-format names. */
const HEAP_TYPES: Readonly<Record<number, string>> = {
  0x70: "func",
  0x6f: "extern",
  0x69: "exn",
  0x6e: "any",
  0x6d: "eq",
  0x6c: "i31",
  0x6b: "struct",
  0x6a: "array",
  0x71: "none",
  0x72: "noextern",
  0x73: "nofunc",
  0x74: "noexn",
};

/** Single-byte value types and their text-format names. */
const VALUE_TYPES: Readonly<Record<number, string>> = {
  0x7f: "i32",
  0x7e: "i64",
  0x7d: "f32",
  0x7c: "f64",
  0x7b: "v128",
  0x70: "funcref",
  0x6f: "externref",
  0x69: "exnref",
  0x6e: "anyref",
  0x6d: "eqref",
  0x6c: "i31ref",
  0x6b: "structref",
  0x6a: "arrayref",
  0x71: "nullref",
  0x72: "nullexternref",
  0x73: "nullfuncref",
  0x74: "nullexnref",
};

/** Reads a heap type (s33: an abstract type code or a type index) and names it. */
export function readHeapType(r: Reader): string {
  const b = r.buf[r.pos];
  if (r.pos < r.end && (b & 0xc0) === 0x40) {
    r.pos++;
    const name = HEAP_TYPES[b];
    if (name === undefined) malformed(`unknown heap type 0x${b.toString(16)}`, r.pos - 1);
    return name;
  }
  return String(r.u32());
}

/** Reads a value type and returns its text-format name. */
export function readValType(r: Reader): string {
  const at = r.pos;
  const b = r.u8();
  if (b === 0x63) return `(ref null ${readHeapType(r)})`;
  if (b === 0x64) return `(ref ${readHeapType(r)})`;
  const name = VALUE_TYPES[b];
  if (name === undefined) malformed(`unknown value type 0x${b.toString(16)}`, at);
  return name;
}

function readLimits(r: Reader, memory: boolean): Limits {
  const start = r.pos;
  const flags = r.u8();
  if (flags > 0x0f) malformed(`unknown limits flags 0x${flags.toString(16)}`, start);
  const is64 = (flags & 0x04) !== 0;
  if (memory && is64) {
    throw new GuardError(
      "abi",
      `memory64 is not supported: guards use 32-bit linear memory (limits flags 0x${
        flags.toString(16)
      } at byte offset ${start})`,
    );
  }
  if (memory && (flags & 0x08) !== 0) {
    throw new GuardError(
      "abi",
      `custom memory page sizes are not supported (limits flags 0x${
        flags.toString(16)
      } at byte offset ${start})`,
    );
  }
  let min = 0;
  let max: number | null = null;
  if (is64) {
    r.skipLeb();
    if (flags & 1) r.skipLeb();
  } else {
    min = r.u32();
    if (flags & 1) max = r.u32();
  }
  return { flags, min, max, start, end: r.pos };
}

function readFuncType(r: Reader): FuncType {
  const params: string[] = [];
  for (let n = r.u32(); n > 0; n--) params.push(readValType(r));
  const results: string[] = [];
  for (let n = r.u32(); n > 0; n--) results.push(readValType(r));
  return { params, results };
}

function readTypeSection(r: Reader): (FuncType | null)[] {
  const types: (FuncType | null)[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const at = r.pos;
    const form = r.u8();
    if (form !== 0x60) {
      throw new GuardError(
        "abi",
        `unsupported type form 0x${
          form.toString(16)
        } at byte offset ${at}: GC types (rec/sub/struct/array) are not supported`,
      );
    }
    types.push(readFuncType(r));
  }
  return types;
}

/** Reads a table type (reference type + limits); 64-bit tables are refused like memory64. */
function readTableType(r: Reader): Table {
  const typeStart = r.pos;
  const elemType = readValType(r);
  const limits = readLimits(r, false);
  if ((limits.flags & 0x04) !== 0) {
    throw new GuardError(
      "abi",
      `table64 is not supported: guards use 32-bit tables (limits flags 0x${
        limits.flags.toString(16)
      } at byte offset ${limits.start})`,
    );
  }
  return { elemType, typeStart, limits };
}

/**
 * Skips one constant expression up to and including its `end`: the instructions a valid module may
 * use there (`*.const`, `global.get`, `ref.null`, `ref.func`, extended-const arithmetic, `v128.const`).
 */
export function skipConstExpr(r: Reader): void {
  for (;;) {
    const at = r.pos;
    const op = r.u8();
    switch (op) {
      case 0x0b:
        return;
      case 0x41: // i32.const
      case 0x42: // i64.const
        r.skipLeb();
        break;
      case 0x43: // f32.const
        r.skip(4);
        break;
      case 0x44: // f64.const
        r.skip(8);
        break;
      case 0x23: // global.get
      case 0xd2: // ref.func
        r.u32();
        break;
      case 0xd0: // ref.null
        readHeapType(r);
        break;
      case 0x6a: // i32.add / sub / mul, i64.add / sub / mul (extended const)
      case 0x6b:
      case 0x6c:
      case 0x7c:
      case 0x7d:
      case 0x7e:
        break;
      case 0xfd: // v128.const
        if (r.u32() !== 12) malformed("unsupported instruction in a constant expression", at);
        r.skip(16);
        break;
      default:
        malformed(`unsupported instruction 0x${op.toString(16)} in a constant expression`, at);
    }
  }
}

/** Counts data segments and their bytes (flags 0: active memory 0; 1: passive; 2: active memory x). */
function readDataSection(r: Reader, seg: SegmentCounts): void {
  for (let n = r.u32(); n > 0; n--) {
    const at = r.pos;
    const flags = r.u32();
    if (flags > 2) malformed(`unknown data segment flags ${flags}`, at);
    if (flags === 2) r.u32();
    if (flags !== 1) skipConstExpr(r);
    const len = r.u32();
    r.skip(len);
    seg.dataSegments++;
    seg.dataBytes += len;
  }
}

/** Counts element segments and their entries (flags 0..7 of the binary format). */
function readElementSection(r: Reader, seg: SegmentCounts): void {
  for (let n = r.u32(); n > 0; n--) {
    const at = r.pos;
    const flags = r.u32();
    if (flags > 7) malformed(`unknown element segment flags ${flags}`, at);
    if (flags === 2 || flags === 6) r.u32(); // table index
    if ((flags & 1) === 0) skipConstExpr(r); // active: offset
    if (flags === 1 || flags === 2 || flags === 3) r.u8(); // elemkind
    if (flags >= 5) readValType(r); // reftype
    const count = r.u32();
    for (let j = 0; j < count; j++) {
      if (flags & 4) skipConstExpr(r);
      else r.u32();
    }
    seg.elementSegments++;
    seg.elementEntries += count;
  }
}

/**
 * Splits a module into sections and decodes its declarations.
 *
 * @throws {GuardError} kind "abi" for a bad header, truncated or misordered sections, memory64, GC types.
 */
export function parseModule(bytes: Uint8Array): ModuleInfo {
  for (let i = 0; i < WASM_HEADER.length; i++) {
    if (bytes[i] !== WASM_HEADER[i]) {
      if (i >= bytes.length) malformed("truncated header", i);
      malformed(i < 4 ? "not a WebAssembly module (bad magic)" : "unsupported binary version", i);
    }
  }
  const info: ModuleInfo = {
    bytes,
    sections: [],
    types: [],
    imports: [],
    importedFuncs: 0,
    importedGlobals: 0,
    importedMemories: 0,
    importedTables: 0,
    funcTypes: [],
    memories: [],
    tables: [],
    globals: 0,
    exports: [],
    segments: { dataSegments: 0, dataBytes: 0, elementSegments: 0, elementEntries: 0 },
  };
  const top = new Reader(bytes, WASM_HEADER.length);
  let lastRank = 0;
  while (!top.done) {
    const headerStart = top.pos;
    const id = top.u8();
    const size = top.u32();
    const start = top.pos;
    const end = start + size;
    if (end > bytes.length) {
      malformed(`section ${id} (${size} bytes) runs past the end of the module`, headerStart);
    }
    top.pos = end;
    const r = new Reader(bytes, start, end);
    const section: Section = { id, headerStart, start, end };
    if (id === SectionId.custom) {
      section.name = r.name();
      section.start = r.pos;
      info.sections.push(section);
      continue;
    }
    const rank = SECTION_RANK[id];
    if (rank === undefined) malformed(`unknown section id ${id}`, headerStart);
    if (rank <= lastRank) malformed(`section ${id} is out of order or duplicated`, headerStart);
    lastRank = rank;
    info.sections.push(section);
    decodeSection(info, id, r);
    if (id !== SectionId.code && !r.done) {
      malformed(`section ${id} has ${r.end - r.pos} trailing bytes`, r.pos);
    }
  }
  if (info.funcTypes.length > 0 && !info.sections.some((s) => s.id === SectionId.code)) {
    malformed(`${info.funcTypes.length} functions declared but no code section`, bytes.length);
  }
  return info;
}

function decodeSection(info: ModuleInfo, id: number, r: Reader): void {
  switch (id) {
    case SectionId.type:
      info.types = readTypeSection(r);
      break;
    case SectionId.import:
      for (let n = r.u32(); n > 0; n--) {
        const module = r.name();
        const name = r.name();
        const at = r.pos;
        const k = r.u8();
        const kind = EXTERN_KINDS[k];
        if (kind === undefined) malformed(`unknown import kind ${k}`, at);
        const imp: Import = { module, name, kind };
        if (kind === "function") {
          imp.typeIndex = r.u32();
          info.importedFuncs++;
        } else if (kind === "table") {
          imp.limits = readTableType(r).limits;
          info.importedTables++;
        } else if (kind === "memory") {
          imp.limits = readLimits(r, true);
          info.importedMemories++;
        } else if (kind === "global") {
          readValType(r);
          r.u8();
          info.importedGlobals++;
        } else {
          r.u8();
          imp.typeIndex = r.u32();
        }
        info.imports.push(imp);
      }
      break;
    case SectionId.function:
      for (let n = r.u32(); n > 0; n--) info.funcTypes.push(r.u32());
      break;
    case SectionId.memory:
      for (let n = r.u32(); n > 0; n--) info.memories.push(readLimits(r, true));
      break;
    case SectionId.table:
      for (let n = r.u32(); n > 0; n--) info.tables.push(readTableType(r));
      break;
    case SectionId.data:
      readDataSection(r, info.segments);
      break;
    case SectionId.element:
      readElementSection(r, info.segments);
      break;
    case SectionId.global:
      info.globals = r.u32();
      // Bodies are walked by the rewriter (init expressions may hold ref.func).
      r.pos = r.end;
      break;
    case SectionId.export:
      for (let n = r.u32(); n > 0; n--) {
        const name = r.name();
        const at = r.pos;
        const k = r.u8();
        const kind = EXTERN_KINDS[k];
        if (kind === undefined) malformed(`unknown export kind ${k}`, at);
        info.exports.push({ name, kind, index: r.u32() });
      }
      break;
    default:
      r.pos = r.end;
  }
}

/** The function type of function `index` (imports first, then defined functions), if known. */
export function funcTypeOf(info: ModuleInfo, index: number): FuncType | null {
  let typeIndex: number | undefined;
  if (index < info.importedFuncs) {
    let seen = 0;
    for (const imp of info.imports) {
      if (imp.kind !== "function") continue;
      if (seen++ === index) {
        typeIndex = imp.typeIndex;
        break;
      }
    }
  } else {
    typeIndex = info.funcTypes[index - info.importedFuncs];
  }
  return typeIndex === undefined ? null : info.types[typeIndex] ?? null;
}

/** Renders a function type as `(i32,i32)->(i32)`. */
export function formatFuncType(t: FuncType): string {
  return `(${t.params.join(",")})->(${t.results.join(",")})`;
}
