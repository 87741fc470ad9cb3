/**
 * The binary rewrite behind `prepareGuard`: clamps memory limits, injects the fuel counter, renumbers
 * function indices and strips debug sections. It knows nothing about the guard ABI, so it also
 * serves for non-guard modules (tests on real toolchain output).
 *
 * Fuel shape (per function entry and loop header):
 * `global.get F; i32.const 1; i32.sub; global.set F; global.get F; i32.const 0; i32.lt_s;
 *  if; call CHECK; end` — the host's CHECK import refills F (or throws to stop the guard).
 *
 * @module
 */

import { GuardError } from "../limits.ts";
import { malformed, Reader, Writer } from "./bytes.ts";
import { type CodeEdit, copyInstructions } from "./code.ts";
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
  } | null;
  /** Custom sections appended at the end of the output. */
  appendCustom?: { name: string; data: Uint8Array }[];
}

/** What the rewrite did. */
export interface RewriteResult {
  bytes: Uint8Array<ArrayBuffer>;
  fuelPoints: number;
  strippedSections: string[];
}

/** Custom sections that only carry debug information: dropped from prepared guards. */
export function isDebugSection(name: string): boolean {
  return name.startsWith(".debug_") || name === "sourceMappingURL" || name === "external_debug_info";
}

const OP = {
  if: 0x04,
  end: 0x0b,
  call: 0x10,
  globalGet: 0x23,
  globalSet: 0x24,
  i32Const: 0x41,
  i32LtS: 0x48,
  i32Sub: 0x6b,
  emptyBlock: 0x40,
  i32: 0x7f,
  mutable: 0x01,
  funcType: 0x60,
  kindFunction: 0x00,
  kindGlobal: 0x03,
} as const;

/** The bytes inserted at every fuel point. */
export function fuelSequence(globalIndex: number, checkFunc: number): Uint8Array {
  const w = new Writer(32);
  w.u8(OP.globalGet);
  w.u32(globalIndex);
  w.u8(OP.i32Const);
  w.s32(1);
  w.u8(OP.i32Sub);
  w.u8(OP.globalSet);
  w.u32(globalIndex);
  w.u8(OP.globalGet);
  w.u32(globalIndex);
  w.u8(OP.i32Const);
  w.s32(0);
  w.u8(OP.i32LtS);
  w.u8(OP.if);
  w.u8(OP.emptyBlock);
  w.u8(OP.call);
  w.u32(checkFunc);
  w.u8(OP.end);
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

interface FuelPlan {
  checkType: number;
  appendType: boolean;
  checkFunc: number;
  globalIndex: number;
  sequence: Uint8Array;
}

function planFuel(info: ModuleInfo): FuelPlan {
  let checkType = info.types.findIndex((t) => t !== null && t.params.length === 0 && t.results.length === 0);
  const appendType = checkType < 0;
  if (appendType) checkType = info.types.length;
  const checkFunc = info.importedFuncs;
  const globalIndex = info.importedGlobals + info.globals;
  return { checkType, appendType, checkFunc, globalIndex, sequence: fuelSequence(globalIndex, checkFunc) };
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
 * @throws {GuardError} "memory" when a memory minimum exceeds the cap; "abi" on malformed code or
 *   unsupported opcodes.
 */
export function rewriteModule(info: ModuleInfo, opts: RewriteOptions): RewriteResult {
  const bytes = info.bytes;
  const fuel = opts.fuel === null ? null : planFuel(info);
  const edit: CodeEdit = fuel === null
    ? { shiftFrom: Infinity, shift: 0, fuel: null }
    : { shiftFrom: info.importedFuncs, shift: 1, fuel: fuel.sequence };
  const shiftFunc = (i: number) => (i >= edit.shiftFrom ? i + edit.shift : i);
  const out = new Writer(bytes.length + (bytes.length >> 3) + 256);
  out.bytes(bytes.subarray(0, 8));
  const stripped: string[] = [];
  let fuelPoints = 0;

  const present = new Set(info.sections.map((s) => s.id));
  // Sections the fuel rewrite needs even when the input has none.
  const synthesize: number[] = fuel === null
    ? []
    : [SectionId.type, SectionId.import, SectionId.global, SectionId.export].filter((id) => !present.has(id));
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
        if (fuel === null || !fuel.appendType) return raw(s!);
        const n = r === null ? 0 : r.u32();
        w.u32(n + 1);
        if (r !== null) w.bytes(bytes.subarray(r.pos, r.end));
        w.u8(OP.funcType);
        w.u32(0);
        w.u32(0);
        return w.view();
      }
      case SectionId.import: {
        if (fuel === null) return raw(s!);
        const n = r === null ? 0 : r.u32();
        w.u32(n + 1);
        if (r !== null) w.bytes(bytes.subarray(r.pos, r.end));
        w.name(opts.fuel!.importModule);
        w.name(opts.fuel!.importName);
        w.u8(OP.kindFunction);
        w.u32(fuel.checkType);
        return w.view();
      }
      case SectionId.memory: {
        const n = r!.u32();
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
        w.u32(n + 1);
        for (let i = 0; i < n; i++) {
          const typeStart = r!.pos;
          readValType(r!);
          r!.u8(); // mutability
          w.bytes(bytes.subarray(typeStart, r!.pos));
          copyInstructions(r!, w, edit, true);
        }
        w.u8(OP.i32);
        w.u8(OP.mutable);
        w.u8(OP.i32Const);
        w.s32(opts.fuel!.initial);
        w.u8(OP.end);
        return w.view();
      }
      case SectionId.export: {
        if (fuel === null) return raw(s!);
        w.u32(info.exports.length + 1);
        for (const e of info.exports) {
          if (e.name === opts.fuel!.globalExport) {
            throw new GuardError("abi", `export name "${e.name}" is reserved for the fuel counter`);
          }
          w.name(e.name);
          w.u8(KIND_CODE[e.kind]);
          w.u32(e.kind === "function" ? shiftFunc(e.index) : e.index);
        }
        w.name(opts.fuel!.globalExport);
        w.u8(OP.kindGlobal);
        w.u32(fuel.globalIndex);
        return w.view();
      }
      case SectionId.start:
        w.u32(shiftFunc(r!.u32()));
        return w.view();
      case SectionId.element:
        if (fuel === null) return raw(s!);
        rewriteElements(r!, w, edit, shiftFunc);
        return w.view();
      case SectionId.code:
        if (fuel === null) return raw(s!);
        fuelPoints += rewriteCode(r!, w, edit, info.funcTypes.length);
        return w.view();
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
    emitSection(out, s.id, sectionContent(s.id, s));
  }
  emitSynthesized(Infinity);
  for (const c of opts.appendCustom ?? []) emitCustom(out, c.name, c.data);
  return { bytes: out.finish(), fuelPoints, strippedSections: stripped };

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

function rewriteElements(r: Reader, w: Writer, edit: CodeEdit, shiftFunc: (i: number) => number): void {
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
      else w.u32(shiftFunc(r.u32()));
    }
  }
  if (!r.done) malformed("trailing bytes in element section", r.pos);
}

/** Rewrites every function body; returns the fuel points inserted. */
function rewriteCode(r: Reader, w: Writer, edit: CodeEdit, expected: number): number {
  const n = r.u32();
  if (n !== expected) malformed(`code section has ${n} bodies for ${expected} functions`, r.pos);
  w.u32(n);
  const body = new Writer(4096);
  let points = 0;
  for (let i = 0; i < n; i++) {
    const size = r.u32();
    const start = r.pos;
    const end = start + size;
    if (end > r.end) malformed(`function body ${i} runs past the code section`, start);
    const br = new Reader(r.buf, start, end);
    for (let groups = br.u32(); groups > 0; groups--) {
      br.u32();
      readValType(br);
    }
    body.len = 0;
    body.bytes(r.buf.subarray(start, br.pos));
    if (edit.fuel !== null) {
      body.bytes(edit.fuel);
      points++;
    }
    points += copyInstructions(br, body, edit, false);
    w.u32(body.len);
    w.bytes(body.view());
    r.pos = end;
  }
  if (!r.done) malformed("trailing bytes in code section", r.pos);
  return points;
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
