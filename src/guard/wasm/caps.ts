/**
 * Caps on everything an instance owns, checked and applied before the fuel rewrite:
 *
 * - **Linear memory**: the sum over ALL memories (imported and defined) stays within
 *   `maxMemoryPages`. Multi-memory is allowed: the minimums must fit, then every memory's declared
 *   maximum is clamped so that the maxima add up to at most the cap (see {@link splitBudget}).
 * - **Tables**: the same over all tables with `maxTableEntries`; `table.grow` past a clamped maximum
 *   returns -1 as the spec allows, a minimum above the budget is refused.
 * - **Module shape**: functions, globals, data and element segments and their total sizes are
 *   bounded by named limits (`limits.ts`), so no module makes the engine allocate without bound
 *   at compile or instantiation time.
 *
 * Memory and table caps are written into the module (the memory and table sections are re-emitted
 * with the clamped limits) and every memory and table gets an extra export under a reserved name,
 * so the host can see and report what an instance really holds, also of memories and tables the
 * guard does not export.
 *
 * @module
 */

import { GuardError, type GuardLimits } from "../limits.ts";
import { Reader, Writer } from "./bytes.ts";
import {
  type Limits,
  type ModuleInfo,
  readValType,
  type Section,
  SECTION_RANK,
  SectionId,
  skipConstExpr,
} from "./module.ts";

/** The limits this step enforces. */
export type ModuleCaps = Pick<
  GuardLimits,
  | "maxMemoryPages"
  | "maxTableEntries"
  | "maxFunctions"
  | "maxGlobals"
  | "maxDataSegments"
  | "maxDataBytes"
  | "maxElementSegments"
  | "maxElementEntries"
>;

/** Keys of {@link ModuleCaps}, in the order reports list them. */
export const MODULE_CAP_KEYS: readonly (keyof ModuleCaps)[] = [
  "maxMemoryPages",
  "maxTableEntries",
  "maxFunctions",
  "maxGlobals",
  "maxDataSegments",
  "maxDataBytes",
  "maxElementSegments",
  "maxElementEntries",
];

/** The module caps of a full set of limits. */
export function pickCaps(limits: Readonly<GuardLimits>): ModuleCaps {
  return Object.fromEntries(MODULE_CAP_KEYS.map((k) => [k, limits[k]])) as unknown as ModuleCaps;
}

/** Prefix of the exports added for every memory and table (`__mcp_edge_guard_memory_0`, ...). */
export const RESERVED_EXPORT_PREFIX = "__mcp_edge_guard_";
/**
 * Export name of the global that holds pooled memory `i`'s size in pages as the guard sees it
 * (`memory.size`); the rewriter adds it (see `rewrite.ts`, "Pooled memories").
 */
export function pagesExportName(i: number): string {
  return `${RESERVED_EXPORT_PREFIX}pages_${i}`;
}
/** Import name (module: the fuel check's) of pooled memory `i`. */
export function pooledMemoryImportName(i: number): string {
  return `memory_${i}`;
}
/** Import name (module: the fuel check's) of the written-pages memory of pooled memories. */
export const WRITTEN_IMPORT_NAME = "memory_written";
/** Export name of memory `i` as the caps step adds it. */
export function memoryExportName(i: number): string {
  return `${RESERVED_EXPORT_PREFIX}memory_${i}`;
}
/** Export name of table `i` as the caps step adds it. */
export function tableExportName(i: number): string {
  return `${RESERVED_EXPORT_PREFIX}table_${i}`;
}

/** Export name of defined mutable global `i` (global index space) as the caps step adds it. */
export function globalExportName(i: number): string {
  return `${RESERVED_EXPORT_PREFIX}global_${i}`;
}

/** Value types whose global values JS can read and write exactly (no references, no v128). */
const NUMERIC_VALTYPES: ReadonlySet<string> = new Set(["i32", "i64", "f32", "f64"]);

/**
 * What a snapshot of an instance must hold besides its memories, as the caps step sees it: the
 * indices of the module's own mutable globals (each gets a reserved export, see
 * {@link globalExportName}) and, when a snapshot cannot be exact, why not.
 *
 * An instance's state outside memories and these globals is: tables (the host compares them before
 * and after the snapshot run), the dropped state of passive data/element segments (invisible from
 * JS, so a module with any passive segment is never snapshotted), and reference-typed or v128
 * globals (JS cannot copy them between instances).
 */
export interface SnapshotPlan {
  /** Global indices of the defined mutable globals, in index order. */
  mutableGlobals: number[];
  /** Null when an instance of the module can be restored exactly from memories + these globals. */
  problem: string | null;
}

/**
 * Reads the global, data and element sections for {@link SnapshotPlan}.
 *
 * @example
 * ```ts
 * const plan = snapshotPlan(parseModule(bytes)); // { mutableGlobals: [0], problem: null }
 * ```
 */
export function snapshotPlan(info: ModuleInfo): SnapshotPlan {
  const mutableGlobals: number[] = [];
  let problem: string | null = null;
  const bytes = info.bytes;
  for (const s of info.sections) {
    const r = new Reader(bytes, s.start, s.end);
    if (s.id === SectionId.global) {
      for (let i = 0, n = r.u32(); i < n; i++) {
        const type = readValType(r);
        const mutable = r.u8() === 1;
        skipConstExpr(r);
        if (!mutable) continue;
        mutableGlobals.push(info.importedGlobals + i);
        if (!NUMERIC_VALTYPES.has(type)) problem ??= `mutable global ${info.importedGlobals + i} is ${type}`;
      }
    } else if (s.id === SectionId.data) {
      for (let n = r.u32(); n > 0; n--) {
        const flags = r.u32();
        if (flags === 1) {
          problem ??= "a passive data segment (its dropped state is not visible to the host)";
          break;
        }
        if (flags === 2) r.u32();
        skipConstExpr(r);
        r.skip(r.u32());
      }
    } else if (s.id === SectionId.element) {
      for (let n = r.u32(); n > 0; n--) {
        const flags = r.u32();
        if (flags === 1 || flags === 5) {
          problem ??= "a passive element segment (its dropped state is not visible to the host)";
          break;
        }
        if (flags === 2 || flags === 6) r.u32();
        if ((flags & 1) === 0) skipConstExpr(r);
        if (flags === 1 || flags === 2 || flags === 3) r.u8();
        if (flags >= 5) readValType(r);
        for (let j = r.u32(); j > 0; j--) {
          if (flags & 4) skipConstExpr(r);
          else r.u32();
        }
      }
    }
  }
  return { mutableGlobals, problem };
}

/** One memory or table after capping. */
export interface CappedLimits {
  index: number;
  imported: boolean;
  min: number;
  declaredMax: number | null;
  /** The maximum the prepared module declares. */
  max: number;
}

/** What {@link planCaps} found: every count next to the limit it was checked against. */
export interface CapsReport {
  memories: CappedLimits[];
  tables: CappedLimits[];
  /** Sum of the capped maxima. */
  memoryPages: number;
  tableEntries: number;
  functions: number;
  globals: number;
  dataSegments: number;
  dataBytes: number;
  elementSegments: number;
  elementEntries: number;
  caps: ModuleCaps;
}

/**
 * Splits a budget over limits in index order: each minimum is reserved first (their sum above the
 * budget returns the excess as a negative number); then items with a declared maximum get up to
 * their maximum, in index order, from what is left; then the first item without a maximum gets the
 * rest and any other unbounded item stays at its minimum. So a single memory behaves as before
 * (max = min(declared, cap)), and the secondary memories of a multi-memory module keep their own
 * small maxima while memory 0, usually unbounded, gets the remainder.
 */
export function splitBudget(items: { min: number; max: number | null }[], budget: number): number[] | number {
  let left = budget - items.reduce((a, l) => a + l.min, 0);
  if (left < 0) return left;
  const out = items.map((l) => l.min);
  items.forEach((l, i) => {
    if (l.max === null) return;
    const extra = Math.min(Math.max(l.max - l.min, 0), left);
    out[i] += extra;
    left -= extra;
  });
  const free = items.findIndex((l) => l.max === null);
  if (free >= 0) out[free] += left;
  return out;
}

function capAll(
  what: "memory" | "table",
  imported: Limits[],
  defined: Limits[],
  cap: number,
  limit: "maxMemoryPages" | "maxTableEntries",
  unit: string,
): CappedLimits[] {
  const all = [...imported, ...defined];
  const split = splitBudget(all, cap);
  if (typeof split === "number") {
    const total = cap - split;
    throw new GuardError(
      "memory",
      all.length === 1
        ? `${what} 0 declares a minimum of ${total} ${unit}, above ${limit} ${cap}`
        : `the ${all.length} ${
          what === "memory" ? "memories" : "tables"
        } declare minimums of ${total} ${unit} ` +
          `together, above ${limit} ${cap} (the cap is over all of them)`,
      { limit, value: cap },
    );
  }
  return all.map((l, i) => ({
    index: i,
    imported: i < imported.length,
    min: l.min,
    declaredMax: l.max,
    max: split[i],
  }));
}

function checkCount(
  what: string,
  n: number,
  limit: Exclude<keyof ModuleCaps, "maxMemoryPages" | "maxTableEntries">,
  caps: ModuleCaps,
): void {
  if (n > caps[limit]) {
    throw new GuardError("abi", `the module declares ${n} ${what}, above ${limit} ${caps[limit]}`, {
      limit,
      value: caps[limit],
    });
  }
}

/**
 * Checks the module against every cap and computes the clamped memory and table maxima.
 *
 * @example
 * ```ts
 * const report = planCaps(parseModule(bytes), resolveLimits());
 * ```
 * @throws {GuardError} "memory" (limit `maxMemoryPages` / `maxTableEntries`) when the minimums do not
 *   fit; "abi" naming the limit for too many functions, globals, segments or segment bytes/entries.
 */
export function planCaps(info: ModuleInfo, caps: ModuleCaps): CapsReport {
  const importLimits = (kind: "memory" | "table") =>
    info.imports.filter((i) => i.kind === kind).map((i) => i.limits!);
  const memories = capAll(
    "memory",
    importLimits("memory"),
    info.memories,
    caps.maxMemoryPages,
    "maxMemoryPages",
    "pages",
  );
  const tables = capAll(
    "table",
    importLimits("table"),
    info.tables.map((t) => t.limits),
    caps.maxTableEntries,
    "maxTableEntries",
    "entries",
  );
  const functions = info.importedFuncs + info.funcTypes.length;
  const globals = info.importedGlobals + info.globals;
  const seg = info.segments;
  checkCount("functions", functions, "maxFunctions", caps);
  checkCount("globals", globals, "maxGlobals", caps);
  checkCount("data segments", seg.dataSegments, "maxDataSegments", caps);
  checkCount("bytes of data segments", seg.dataBytes, "maxDataBytes", caps);
  checkCount("element segments", seg.elementSegments, "maxElementSegments", caps);
  checkCount("element segment entries", seg.elementEntries, "maxElementEntries", caps);
  const sum = (xs: CappedLimits[]) => xs.reduce((a, x) => a + x.max, 0);
  return {
    memories,
    tables,
    memoryPages: sum(memories),
    tableEntries: sum(tables),
    functions,
    globals,
    ...seg,
    caps: { ...caps },
  };
}

function writeLimits(w: Writer, l: Limits, max: number): void {
  w.u8(l.flags | 1);
  w.u32(l.min);
  w.u32(max);
}

/**
 * Writes the module with the clamped memory and table maxima of `report` (defined ones; imported
 * ones are refused by the ABI check, the host provides none) and one reserved export per memory,
 * table and each global of `globals` (the defined mutable ones, for snapshots). Other sections are
 * copied byte for byte.
 *
 * @throws {GuardError} "abi" when an export already uses the reserved prefix.
 */
export function applyCaps(info: ModuleInfo, report: CapsReport, globals: readonly number[] = []): Uint8Array {
  const bytes = info.bytes;
  for (const e of info.exports) {
    if (e.name.startsWith(RESERVED_EXPORT_PREFIX)) {
      throw new GuardError(
        "abi",
        `export name "${e.name}" uses the reserved prefix ${RESERVED_EXPORT_PREFIX}`,
      );
    }
  }
  const out = new Writer(bytes.length + 256);
  out.bytes(bytes.subarray(0, 8));
  const extra: { name: string; kind: number; index: number }[] = [
    ...report.memories.map((m) => ({ name: memoryExportName(m.index), kind: KIND_MEMORY, index: m.index })),
    ...report.tables.map((t) => ({ name: tableExportName(t.index), kind: KIND_TABLE, index: t.index })),
    ...globals.map((g) => ({ name: globalExportName(g), kind: KIND_GLOBAL, index: g })),
  ];
  const emit = (id: number, content: Uint8Array) => {
    out.u8(id);
    out.u32(content.length);
    out.bytes(content);
  };
  let exported = false;
  for (const s of info.sections) {
    if (s.id !== SectionId.custom && !exported && SECTION_RANK[s.id] > SECTION_RANK[SectionId.export]) {
      emit(SectionId.export, exportSection(null, extra));
      exported = true;
    }
    switch (s.id) {
      case SectionId.memory: {
        const w = new Writer(s.end - s.start + 16);
        w.u32(info.memories.length);
        info.memories.forEach((l, i) => writeLimits(w, l, report.memories[info.importedMemories + i].max));
        emit(s.id, w.view());
        break;
      }
      case SectionId.table: {
        const w = new Writer(s.end - s.start + 16);
        w.u32(info.tables.length);
        info.tables.forEach((t, i) => {
          w.bytes(bytes.subarray(t.typeStart, t.limits.start));
          writeLimits(w, t.limits, report.tables[info.importedTables + i].max);
        });
        emit(s.id, w.view());
        break;
      }
      case SectionId.export:
        emit(s.id, exportSection(s, extra));
        exported = true;
        break;
      default:
        out.bytes(bytes.subarray(s.headerStart, s.end));
    }
  }
  if (!exported) emit(SectionId.export, exportSection(null, extra));
  return out.finish();

  function exportSection(s: Section | null, add: typeof extra): Uint8Array {
    const w = new Writer(s === null ? 64 : s.end - s.start + 64);
    const r = s === null ? null : new Reader(bytes, s.start, s.end);
    const n = r === null ? 0 : r.u32();
    w.u32(n + add.length);
    if (r !== null) w.bytes(bytes.subarray(r.pos, r.end));
    for (const e of add) {
      w.name(e.name);
      w.u8(e.kind);
      w.u32(e.index);
    }
    return w.view();
  }
}

const KIND_TABLE = 1;
const KIND_MEMORY = 2;
const KIND_GLOBAL = 3;
