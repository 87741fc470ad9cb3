/**
 * The binary rewrite behind `prepareGuard`: clamps memory limits, injects the fuel counter, renumbers
 * function indices and strips debug sections. It knows nothing about the guard ABI, so it also
 * serves for non-guard modules (tests on real toolchain output).
 *
 * Fuel points sit at every function entry and loop header; each spends one unit of the exported
 * counter F and calls the host's CHECK import when F drops below zero (CHECK refills F, or throws to
 * stop the guard). Two shapes, chosen per function, spend exactly the same units at the same points:
 *
 * - global (functions with exception handling, or without loops):
 *   `global.get F; i32.const 1; i32.sub; global.set F; global.get F; i32.const 0; i32.lt_s;
 *    if; call CHECK; end`.
 * - cached counter (all other functions, which is where loops run): one appended i32 local L holds
 *   the counter. Entry: `global.get F; i32.const 1; i32.sub; local.tee L; i32.const 0; i32.lt_s;
 *   if; SYNC; call CHECK; RELOAD; end`; loop header: the same from `local.get L`. SYNC
 *   (`local.get L; global.set F`) precedes every call, tail call, `return`, branch to the function's
 *   label and the final `end`; RELOAD (`global.get F; local.set L`) follows every call. So F is exact
 *   whenever other code can see it (callees, CHECK, the host after an export returns, a handler
 *   catching an exception thrown by a callee), and no function can hand itself fuel back. A trap
 *   may leave F above the true count; the host discards a trapped instance.
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
    /** Fuel shape: "cached" (default) picks per function; "global" uses the global shape everywhere. */
    scheme?: FuelScheme;
  } | null;
  /** Custom sections appended at the end of the output. */
  appendCustom?: { name: string; data: Uint8Array }[];
}

/** How fuel points reach the counter: see the module documentation. */
export type FuelScheme = "cached" | "global";

/** What the rewrite did. */
export interface RewriteResult {
  bytes: Uint8Array<ArrayBuffer>;
  fuelPoints: number;
  /** Functions metered through a cached counter local (the rest use the global shape). */
  cachedFunctions: number;
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
  if: 0x04,
  end: 0x0b,
  call: 0x10,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
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

/** The bytes inserted at every fuel point of a global-shape function. */
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
export function cachedFuelSequences(globalIndex: number, checkFunc: number, local: number): CachedSequences {
  const sync = new Writer(16);
  sync.u8(OP.localGet);
  sync.u32(local);
  sync.u8(OP.globalSet);
  sync.u32(globalIndex);
  const reload = new Writer(16);
  reload.u8(OP.globalGet);
  reload.u32(globalIndex);
  reload.u8(OP.localSet);
  reload.u32(local);
  const point = (load: number, index: number) => {
    const w = new Writer(48);
    w.u8(load);
    w.u32(index);
    w.u8(OP.i32Const);
    w.s32(1);
    w.u8(OP.i32Sub);
    w.u8(OP.localTee);
    w.u32(local);
    w.u8(OP.i32Const);
    w.s32(0);
    w.u8(OP.i32LtS);
    w.u8(OP.if);
    w.u8(OP.emptyBlock);
    w.bytes(sync.view());
    w.u8(OP.call);
    w.u32(checkFunc);
    w.bytes(reload.view());
    w.u8(OP.end);
    return w.finish();
  };
  return {
    entry: point(OP.globalGet, globalIndex),
    loop: point(OP.localGet, local),
    sync: sync.finish(),
    reload: reload.finish(),
  };
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
  /** The global-shape point. */
  sequence: Uint8Array;
  scheme: FuelScheme;
}

function planFuel(info: ModuleInfo, scheme: FuelScheme): FuelPlan {
  let checkType = info.types.findIndex((t) => t !== null && t.params.length === 0 && t.results.length === 0);
  const appendType = checkType < 0;
  if (appendType) checkType = info.types.length;
  const checkFunc = info.importedFuncs;
  const globalIndex = info.importedGlobals + info.globals;
  const sequence = fuelSequence(globalIndex, checkFunc);
  return { checkType, appendType, checkFunc, globalIndex, sequence, scheme };
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
  const fuel = opts.fuel === null ? null : planFuel(info, opts.fuel.scheme ?? "cached");
  // Constant expressions: renumbering only.
  const edit: CodeEdit = fuel === null
    ? { shiftFrom: Infinity, shift: 0, loopPoint: null, cache: null }
    : { shiftFrom: info.importedFuncs, shift: 1, loopPoint: null, cache: null };
  const shiftFunc = (i: number) => (i >= edit.shiftFrom ? i + edit.shift : i);
  const out = new Writer(bytes.length + (bytes.length >> 3) + 256);
  out.bytes(bytes.subarray(0, 8));
  const stripped: string[] = [];
  let fuelPoints = 0;
  let cachedFunctions = 0;

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
        ({ points: fuelPoints, cached: cachedFunctions } = rewriteCode(r!, w, info, edit, fuel));
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
  return { bytes: out.finish(), fuelPoints, cachedFunctions, strippedSections: stripped };

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

/**
 * Rewrites every function body with fuel points: the cached-counter shape for a function with at
 * least one loop, no exception handling and room for one more local; the global shape otherwise (a
 * function without loops runs its single point once per call, so a cached copy would only add
 * write-backs around its calls). Returns the fuel points inserted and the cached-shape functions.
 */
function rewriteCode(
  r: Reader,
  w: Writer,
  info: ModuleInfo,
  renumber: CodeEdit,
  fuel: FuelPlan,
): { points: number; cached: number } {
  const n = r.u32();
  const expected = info.funcTypes.length;
  if (n !== expected) malformed(`code section has ${n} bodies for ${expected} functions`, r.pos);
  w.u32(n);
  const body = new Writer(4096);
  const globalEdit: CodeEdit = { ...renumber, loopPoint: fuel.sequence, cache: null };
  const sequences = new Map<number, CachedSequences>();
  let points = 0;
  let cached = 0;
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
    body.len = 0;
    body.bytes(r.buf.subarray(start, code));
    body.bytes(fuel.sequence);
    const global = copyInstructions(br, body, globalEdit, false);
    const params = info.types[info.funcTypes[i]]?.params.length;
    const counter = params === undefined ? MAX_FUNCTION_LOCALS : params + locals;
    if (
      fuel.scheme === "cached" && global.loops > 0 && !global.exceptions && counter < MAX_FUNCTION_LOCALS
    ) {
      let seq = sequences.get(counter);
      if (seq === undefined) {
        seq = cachedFuelSequences(fuel.globalIndex, fuel.checkFunc, counter);
        sequences.set(counter, seq);
      }
      body.len = 0;
      body.u32(groups + 1);
      body.bytes(r.buf.subarray(groupsStart, code));
      body.u8(1);
      body.u8(OP.i32);
      body.bytes(seq.entry);
      br.pos = code;
      copyInstructions(br, body, { ...renumber, loopPoint: seq.loop, cache: seq }, false);
      cached++;
    }
    points += 1 + global.loops;
    w.u32(body.len);
    w.bytes(body.view());
    r.pos = end;
  }
  if (!r.done) malformed("trailing bytes in code section", r.pos);
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
