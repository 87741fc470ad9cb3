/**
 * Guard preparation: validate the module (the engine's validator plus our structural checks), check
 * the guard ABI, cap memories, tables and the module's shape (`wasm/caps.ts`), inject fuel metering,
 * and mark the result. Runs at build time (Workers forbid runtime compilation) or at cold start on
 * Deno.
 *
 * Nothing from outside is trusted as prepared: a module that arrives carrying our mark, our fuel
 * import or any export or custom section in our reserved namespace is refused (not stripped: a
 * prepared module's original is gone, and re-metering it would meter the meter). A compiled module
 * skips preparation only with the {@link PreparedRecord} our own build wrote when it made it.
 *
 * ABI rules and error texts follow gh-aw-mcpg (`NewWasmGuardWithOptions`): imports are checked first
 * (the reference fails them at instantiation), then the exports in the reference's order.
 *
 * @module
 */

import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { DEFAULT_LIMITS, GuardError, MAX_WASM32_PAGES, WRITTEN_BLOCK_BYTES } from "./limits.ts";
import { ENV_MODULE, ENV_SIGNATURES, WASI_MODULE, WASI_PREVIEW1_SIGNATURES } from "./wasm/host_signatures.ts";
import {
  applyCaps,
  type CapsReport,
  MODULE_CAP_KEYS,
  type ModuleCaps,
  pickCaps,
  planCaps,
  pooledMemoryImportName,
  RESERVED_EXPORT_PREFIX,
  snapshotPlan,
  WRITTEN_IMPORT_NAME,
} from "./wasm/caps.ts";
import { dataBlockCount } from "./wasm/data.ts";
import {
  type ExternKind,
  formatFuncType,
  funcTypeOf,
  type ModuleInfo,
  parseModule,
  SectionId,
} from "./wasm/module.ts";
import { type FuelScheme, poolableMemories, rewriteModule, writtenLayout } from "./wasm/rewrite.ts";

export { WASI_PREVIEW1_SIGNATURES } from "./wasm/host_signatures.ts";
export type { FuelScheme } from "./wasm/rewrite.ts";
export type { CapsReport, ModuleCaps } from "./wasm/caps.ts";

/** Import module of the injected fuel check. */
export const FUEL_IMPORT_MODULE = "mcp_edge_guard";
/** Import name of the injected fuel check: type `() -> ()`, appended as the last function import. */
export const FUEL_IMPORT_NAME = "fuel_check";
/** Export name of the injected fuel counter: a mutable i32 global the host refills. */
export const FUEL_GLOBAL_EXPORT = "__mcp_edge_guard_fuel";
/** Custom section holding the UTF-8 JSON `PreparedMark`. */
export const PREPARED_SECTION = "mcp_edge_guard.prepared";
/** Custom sections whose name starts with this are ours: an input carrying one is refused. */
const RESERVED_SECTION_PREFIX = "mcp_edge_guard";

/** Reference memory cap: 512 pages = 32 MiB (`WithMemoryLimitPages(512)`). */
const DEFAULT_MAX_MEMORY_PAGES = DEFAULT_LIMITS.maxMemoryPages;
/** Initial fuel counter, so a start function runs before the host can set the global. */
export const FUEL_INITIAL = 1_000_000;
/**
 * Version of the `PreparedMark` format. 2 binds every module cap; marks of version 1 (memory cap
 * only) are stale and never accepted.
 */
const MARK_VERSION = 2;

/** Fuel shapes a mark may name (see `wasm/rewrite.ts`). */
const FUEL_SCHEMES: readonly FuelScheme[] = ["cached", "global"];

/** What preparation recorded in the module. */
export interface PreparedMark {
  v: 2;
  fuel: boolean;
  /** With fuel: how fuel points reach the counter. The host protocol is the same for both. */
  fuelScheme?: FuelScheme;
  /** Memory cap over all memories, in pages (also in `caps`, kept for readers of version 1). */
  maxMemoryPages: number;
  /** Every module cap the module was checked and clamped against. */
  caps: ModuleCaps;
  /** SHA-256 (hex) and size of the original module the preparer read. */
  sourceSha256: string;
  sourceBytes: number;
  /**
   * Present when an instance can be restored exactly from a snapshot (`wasm/caps.ts`
   * `snapshotPlan`): the number of defined mutable globals, each exported under
   * `globalExportName(index)`. Absent (older marks, or a module with state the host cannot copy):
   * the host never snapshots the module.
   */
  snapshotGlobals?: number;
  /**
   * Present when the module's memories are pooled (`wasm/rewrite.ts`, "Pooled memories"): the
   * limits of each imported `mcp_edge_guard.memory_<i>`, in pages, which the host needs to create
   * them (the JS API does not show an import's limits). Absent: the module defines its memories.
   */
  pooledMemories?: { min: number; max: number }[];
  /**
   * With pooled memories: how many 4 KiB blocks the active data segments write at instantiation
   * (`wasm/data.ts` `dataBlockCount`), which the memory pool counts as resident in every set.
   * Absent: the pool counts each set at its whole size.
   */
  dataBlocks?: number;
}

/**
 * What our own build records about a prepared module it wrote (the generated manifest next to the
 * Worker bundle): the exact mark text, and the SHA-256 of the prepared bytes. A compiled module is
 * accepted without preparing it only when its mark section equals `mark` byte for byte.
 */
export interface PreparedRecord {
  /** The UTF-8 JSON of the module's `mcp_edge_guard.prepared` section. */
  mark: string;
  /** SHA-256 (hex) of the prepared bytes the build wrote. */
  preparedSha256: string;
}

/** Preparation options. */
export interface PrepareOptions {
  /** Memory cap in 64 KiB pages over all memories (default 512). */
  maxMemoryPages?: number;
  /** The other module caps (`maxTableEntries`, `maxFunctions`, ...); missing ones take the defaults. */
  caps?: Partial<ModuleCaps>;
  /** Inject fuel metering (default true). */
  fuel?: boolean;
  /**
   * Fuel shape (default "cached": a counter local in functions with loops and no exception
   * handling, the global shape elsewhere). "global" puts the global shape everywhere; both spend
   * exactly the same units at the same points.
   */
  fuelScheme?: FuelScheme;
  /**
   * Pool the module's memories (default true, with fuel only): they become imports, and every write
   * is recorded so the host can reuse them (`wasm/rewrite.ts`, "Pooled memories", "Written pages").
   * False keeps the module's own memories: each instance gets new ones.
   */
  poolMemories?: boolean;
}

/** One import of a guard. `type` is set for functions and tags, e.g. `(i32,i32)->(i32)`. */
export interface GuardImport {
  module: string;
  name: string;
  kind: ExternKind;
  type?: string;
}

/** One export of a guard. `type` is set for functions and tags. */
export interface GuardExport {
  name: string;
  kind: ExternKind;
  type?: string;
}

/** What `prepareGuard` found and did. */
export interface PrepareReport {
  bytesIn: number;
  bytesOut: number;
  ms: number;
  imports: GuardImport[];
  exports: GuardExport[];
  /** Memory 0 (`null` when the module has none: the host then fails at call time). */
  memory: { imported: boolean; minPages: number; declaredMaxPages: number | null; maxPages: number } | null;
  /** Every memory, table and shape count next to its cap (the maxima after clamping). */
  caps: CapsReport;
  /** Both `alloc` and `dealloc` exported. */
  allocDealloc: boolean;
  /** Defined functions. */
  functions: number;
  /** Injected fuel decrement sites (function entries + loop headers). */
  fuelPoints: number;
  /** Functions metered through a cached counter local. */
  fuelCachedFunctions: number;
  /** Custom sections removed. */
  /**
   * Memories pooled (imports the host reuses, writes recorded: `wasm/rewrite.ts`); 0 when the module
   * keeps its own (a shared, 64-bit or custom-page-size memory, no fuel, or `poolMemories: false`).
   */
  pooledMemories: number;
  strippedSections: string[];
}

/** What `inspectGuard` reports: each check's problem, or `null` when it passed. */
export type GuardInspection =
  & Omit<
    PrepareReport,
    "bytesOut" | "fuelPoints" | "fuelCachedFunctions" | "strippedSections" | "caps" | "pooledMemories"
  >
  & {
    /** The engine's validator (`WebAssembly.validate`, message from a compile attempt). */
    invalid: string | null;
    /** First import problem, else first export/signature problem (the reference's order). */
    abiError: string | null;
    /** First import problem. */
    importError: string | null;
    /** Memory, table and shape caps: the report, or the problem. */
    caps: CapsReport | null;
    capsError: { limit: string | undefined; message: string } | null;
    /** Our mark, fuel import or reserved names found in the input (it would be refused). */
    reserved: string | null;
    /** The mark, when the input carries one that parses (never trusted). */
    prepared: PreparedMark | null;
  };

/** The three label exports and the signature the reference requires of each. */
/** The three labeling exports, in the order the reference validates their signatures. */
export const LABEL_EXPORTS = ["label_resource", "label_response", "label_agent"] as const;
const LABEL_SIGNATURE = "(i32,i32,i32,i32)->(i32)";

/** wazero's `api.ValueType` is a byte alias, so Go's `%v` prints the value-type codes. */
const GO_VALUE_TYPE_CODES: Readonly<Record<string, number>> = {
  i32: 0x7f,
  i64: 0x7e,
  f32: 0x7d,
  f64: 0x7c,
  v128: 0x7b,
  funcref: 0x70,
  externref: 0x6f,
};

function splitSignature(type: string): { params: string[]; results: string[] } {
  const m = /^\((.*)\)->\((.*)\)$/.exec(type);
  if (m === null) return { params: [type], results: [] };
  const list = (s: string) => (s === "" ? [] : s.split(","));
  return { params: list(m[1]), results: list(m[2]) };
}

/** Renders value types as Go's `fmt` prints a `[]api.ValueType`, e.g. `[127 127]`. */
function goValueTypes(types: string[]): string {
  return `[${types.map((t) => GO_VALUE_TYPE_CODES[t] ?? t).join(" ")}]`;
}

function checkImport(imp: GuardImport): string | null {
  const where = `${imp.module}.${imp.name}`;
  if (imp.module === FUEL_IMPORT_MODULE && imp.name === FUEL_IMPORT_NAME && imp.kind === "function") {
    return imp.type === undefined || imp.type === "()->()"
      ? null
      : `import ${where} must have type ()->(), got ${imp.type}`;
  }
  // A prepared module's pooled memories (a source module importing from here is refused earlier).
  if (imp.module === FUEL_IMPORT_MODULE && imp.kind === "memory" && /^memory_(\d+|written)$/.test(imp.name)) {
    return null;
  }
  let table: Readonly<Record<string, string>>;
  if (imp.module === ENV_MODULE) table = ENV_SIGNATURES;
  else if (imp.module === WASI_MODULE) table = WASI_PREVIEW1_SIGNATURES;
  else {
    return `import ${where}: unknown import module "${imp.module}" (the host provides only env.call_backend, env.host_log and ${WASI_MODULE})`;
  }
  if (imp.kind !== "function") {
    return `import ${where}: the host provides no ${imp.kind} imports, only functions`;
  }
  const expected = Object.hasOwn(table, imp.name) ? table[imp.name] : undefined;
  if (expected === undefined) {
    return imp.module === ENV_MODULE
      ? `import ${where}: unknown host function (the host provides env.call_backend and env.host_log)`
      : `import ${where}: not a ${WASI_MODULE} function`;
  }
  if (imp.type !== undefined && imp.type !== expected) {
    return `import ${where} has type ${imp.type}, expected ${expected}`;
  }
  return null;
}

function importProblem(imports: GuardImport[]): string | null {
  for (const imp of imports) {
    const problem = checkImport(imp);
    if (problem !== null) return problem;
  }
  return null;
}

function abiProblem(exports: GuardExport[], imports: GuardImport[]): string | null {
  const imported = importProblem(imports);
  if (imported !== null) return imported;
  const fn = new Map<string, GuardExport>();
  for (const e of exports) if (e.kind === "function") fn.set(e.name, e);
  const resource = fn.get("label_resource");
  const response = fn.get("label_response");
  if (resource === undefined || response === undefined) {
    if (fn.has("_start") && resource === undefined) {
      return "WASM module does not export guard functions. " +
        "This usually means the guard was compiled with standard Go instead of TinyGo. " +
        "TinyGo is required for proper function exports. " +
        "Note: TinyGo 0.34 supports Go 1.19-1.23 (not yet compatible with Go 1.25). " +
        "See examples/guards/sample-guard/README.md for details";
    }
    return "WASM module must export label_resource and label_response functions";
  }
  if (!fn.has("label_agent")) return "WASM module must export label_agent";
  for (const name of LABEL_EXPORTS) {
    const type = fn.get(name)!.type;
    if (type === undefined || type === LABEL_SIGNATURE) continue;
    const got = splitSignature(type);
    return `WASM module function ${name} must have signature (i32,i32,i32,i32)->i32, got ${
      goValueTypes(got.params)
    }->${goValueTypes(got.results)}`;
  }
  return null;
}

/**
 * Checks a guard's imports and exports against the host ABI. Entries without `type` (as
 * `WebAssembly.Module.imports/exports` give them) skip the signature checks.
 *
 * Order: every import (only `env.call_backend`, `env.host_log`, `wasi_snapshot_preview1` functions
 * and our own fuel check exist), then `label_resource`/`label_response`, `label_agent`, and the
 * three signatures, with gh-aw-mcpg's messages.
 *
 * @example
 * ```ts
 * validateGuardAbi(inspectGuard(bytes).exports, inspectGuard(bytes).imports);
 * ```
 * @throws {GuardError} kind "abi" with the first problem found.
 */
export function validateGuardAbi(exports: GuardExport[], imports: GuardImport[]): void {
  const problem = abiProblem(exports, imports);
  if (problem !== null) throw new GuardError("abi", problem);
}

function describeImports(info: ModuleInfo): GuardImport[] {
  return info.imports.map((imp) => {
    const out: GuardImport = { module: imp.module, name: imp.name, kind: imp.kind };
    if (imp.typeIndex !== undefined) {
      const t = info.types[imp.typeIndex];
      if (t) out.type = formatFuncType(t);
    }
    return out;
  });
}

function describeExports(info: ModuleInfo): GuardExport[] {
  return info.exports.map((e) => {
    const out: GuardExport = { name: e.name, kind: e.kind };
    if (e.kind === "function") {
      const t = funcTypeOf(info, e.index);
      if (t) out.type = formatFuncType(t);
    }
    return out;
  });
}

function describeMemory(info: ModuleInfo, caps: CapsReport | null): PrepareReport["memory"] {
  const imported = info.imports.find((i) => i.kind === "memory")?.limits;
  const limits = imported ?? info.memories[0];
  if (limits === undefined) return null;
  return {
    imported: imported !== undefined,
    minPages: limits.min,
    declaredMaxPages: limits.max,
    maxPages: caps?.memories[0]?.max ?? limits.max ?? DEFAULT_MAX_MEMORY_PAGES,
  };
}

const UTF8 = new TextDecoder();
const UTF8_ENCODER = new TextEncoder();

/** SHA-256 of `bytes` as lowercase hex (`@noble/hashes`: synchronous, runs wherever the preparer runs). */
export function sha256Hex(bytes: Uint8Array): string {
  return bytesToHex(sha256(bytes));
}

function isCaps(v: unknown): v is ModuleCaps {
  if (v === null || typeof v !== "object") return false;
  const c = v as Record<string, unknown>;
  return Object.keys(c).length === MODULE_CAP_KEYS.length &&
    MODULE_CAP_KEYS.every((k) => Number.isSafeInteger(c[k]) && (c[k] as number) > 0);
}

function parseMark(data: Uint8Array | ArrayBuffer): PreparedMark | null {
  try {
    const m = JSON.parse(UTF8.decode(data));
    if (
      m !== null && typeof m === "object" && m.v === MARK_VERSION && typeof m.fuel === "boolean" &&
      Number.isSafeInteger(m.maxMemoryPages) && isCaps(m.caps) &&
      m.caps.maxMemoryPages === m.maxMemoryPages && typeof m.sourceSha256 === "string" &&
      /^[0-9a-f]{64}$/.test(m.sourceSha256) && Number.isSafeInteger(m.sourceBytes) &&
      (m.fuel ? FUEL_SCHEMES.includes(m.fuelScheme) : m.fuelScheme === undefined)
    ) {
      const mark: PreparedMark = {
        v: MARK_VERSION,
        fuel: m.fuel,
        maxMemoryPages: m.maxMemoryPages,
        caps: pickCaps(m.caps),
        sourceSha256: m.sourceSha256,
        sourceBytes: m.sourceBytes,
      };
      if (m.fuel) mark.fuelScheme = m.fuelScheme;
      if (Number.isSafeInteger(m.snapshotGlobals) && m.snapshotGlobals >= 0) {
        mark.snapshotGlobals = m.snapshotGlobals;
      }
      if (m.pooledMemories !== undefined) {
        const ok = Array.isArray(m.pooledMemories) && m.pooledMemories.length > 0 &&
          m.pooledMemories.every((l: unknown) => {
            const { min, max } = (l ?? {}) as Record<string, unknown>;
            return Number.isSafeInteger(min) && Number.isSafeInteger(max) && (min as number) >= 0 &&
              (min as number) <= (max as number) && (max as number) <= m.maxMemoryPages;
          });
        if (!ok) return null;
        mark.pooledMemories = m.pooledMemories.map((l: { min: number; max: number }) => ({
          min: l.min,
          max: l.max,
        }));
        if (Number.isSafeInteger(m.dataBlocks) && m.dataBlocks >= 0) mark.dataBlocks = m.dataBlocks;
      }
      return mark;
    }
  } catch {
    // Not JSON: not our mark.
  }
  return null;
}

function markOf(info: ModuleInfo): PreparedMark | null {
  const s = info.sections.find((s) => s.id === 0 && s.name === PREPARED_SECTION);
  return s === undefined ? null : parseMark(info.bytes.subarray(s.start, s.end));
}

/**
 * Why an input module cannot be a guard source because it uses our reserved namespace: a custom
 * section named `mcp_edge_guard*` (our mark, forged or real), an import from `mcp_edge_guard`
 * (our fuel check) or an export named `__mcp_edge_guard*` (our counter, memory and table exports).
 */
function reservedProblem(info: ModuleInfo): string | null {
  const section = info.sections.find((s) => s.id === 0 && s.name!.startsWith(RESERVED_SECTION_PREFIX));
  if (section !== undefined) {
    return `it has a "${section.name}" custom section (our preparation mark); ` +
      "marks are never trusted from outside: load the original, unprepared .wasm";
  }
  const imp = info.imports.find((i) => i.module === FUEL_IMPORT_MODULE);
  if (imp !== undefined) {
    return `it imports ${imp.module}.${imp.name} (our fuel check): load the original, unprepared .wasm`;
  }
  const exp = info.exports.find((e) => e.name.startsWith(RESERVED_EXPORT_PREFIX));
  if (exp !== undefined) {
    return `it exports "${exp.name}" (names starting with ${RESERVED_EXPORT_PREFIX} are the host's)`;
  }
  return null;
}

/**
 * The engine's verdict on a module: `null` when `WebAssembly.validate` accepts it, else the
 * reason. The reason comes from a `new WebAssembly.Module` attempt, which only runs when validation
 * already failed (so nothing is compiled for a valid module); where compilation is forbidden
 * (Workers at runtime) the reason is generic.
 *
 * @example
 * ```ts
 * engineValidationProblem(bytes); // "Compiling function #0 failed: invalid local index: 4 @+58"
 * ```
 */
export function engineValidationProblem(bytes: Uint8Array): string | null {
  const copy = bytes.buffer instanceof ArrayBuffer ? bytes as Uint8Array<ArrayBuffer> : new Uint8Array(bytes);
  if (WebAssembly.validate(copy)) return null;
  try {
    new WebAssembly.Module(copy);
  } catch (e) {
    if (e instanceof WebAssembly.CompileError) {
      return e.message.replace(/^WebAssembly\.Module\(\): /, "");
    }
  }
  return "WebAssembly.validate rejected the module";
}

/** Throws the "abi" error for a module the engine does not validate. */
function assertEngineValid(bytes: Uint8Array): void {
  const problem = engineValidationProblem(bytes);
  if (problem !== null) throw new GuardError("abi", `invalid WebAssembly module: ${problem}`);
}

function resolveScheme(opts: PrepareOptions): FuelScheme {
  const scheme = opts.fuelScheme ?? "cached";
  if (!FUEL_SCHEMES.includes(scheme)) {
    throw new RangeError(`fuelScheme must be one of ${FUEL_SCHEMES.join(", ")}, got ${String(scheme)}`);
  }
  return scheme;
}

function resolveCaps(opts: PrepareOptions): ModuleCaps {
  const caps = { ...pickCaps(DEFAULT_LIMITS), ...opts.caps };
  caps.maxMemoryPages = opts.maxMemoryPages ?? opts.caps?.maxMemoryPages ?? DEFAULT_MAX_MEMORY_PAGES;
  const cap = caps.maxMemoryPages;
  if (!Number.isSafeInteger(cap) || cap < 1 || cap > MAX_WASM32_PAGES) {
    throw new RangeError(`maxMemoryPages must be an integer in 1..${MAX_WASM32_PAGES}, got ${cap}`);
  }
  for (const k of MODULE_CAP_KEYS) {
    if (!Number.isSafeInteger(caps[k]) || caps[k] < 1) {
      throw new RangeError(`${k} must be a positive integer, got ${caps[k]}`);
    }
  }
  return caps;
}

/**
 * Prepares a guard module for this host, in this order:
 *
 * 1. structural decode (`parseModule`: header, section order, sizes, declarations);
 * 2. refuse anything in our reserved namespace (mark, fuel import, `__mcp_edge_guard*` exports);
 * 3. the engine's validator (`WebAssembly.validate`; an invalid module never reaches the rewriter,
 *    so every index the rewriter meets was in range in the original);
 * 4. the guard ABI (imports, then exports and signatures, the reference's messages);
 * 5. caps (`wasm/caps.ts`): memories and tables clamped so their totals fit `maxMemoryPages` and
 *    `maxTableEntries`, shape limits on functions, globals and segments; a reserved export for
 *    every memory and table;
 * 6. fuel injection (import `mcp_edge_guard.fuel_check`, exported counter `__mcp_edge_guard_fuel`,
 *    see `wasm/rewrite.ts`), debug sections stripped, and the `PreparedMark` appended.
 *
 * @example
 * ```ts
 * const { bytes, report } = prepareGuard(await Deno.readFile("guard.wasm"), { maxMemoryPages: 512 });
 * const module = await WebAssembly.compile(bytes);
 * ```
 * @throws {GuardError} "abi" for invalid or malformed input, reserved names (an already prepared or
 *   forged module), ABI violations, unsupported opcodes and shape limits (with `limit`); "memory"
 *   (limit `maxMemoryPages` / `maxTableEntries`) when the minimums do not fit the caps.
 * @throws {RangeError} for a bad `maxMemoryPages`, cap or `fuelScheme`.
 */
export function prepareGuard(
  bytes: Uint8Array,
  opts: PrepareOptions = {},
): { bytes: Uint8Array<ArrayBuffer>; report: PrepareReport } {
  const t0 = performance.now();
  const caps = resolveCaps(opts);
  const fuel = opts.fuel ?? true;
  const fuelScheme = resolveScheme(opts);
  const source = parseModule(bytes);
  const reserved = reservedProblem(source);
  if (reserved !== null) throw new GuardError("abi", `refused: ${reserved}`);
  assertEngineValid(bytes);
  const imports = describeImports(source);
  const exports = describeExports(source);
  validateGuardAbi(exports, imports);
  const capsReport = planCaps(source, caps);
  const snapshot = snapshotPlan(source);
  const info = parseModule(applyCaps(source, capsReport, snapshot.mutableGlobals));
  const mark: PreparedMark = {
    v: MARK_VERSION,
    fuel,
    maxMemoryPages: caps.maxMemoryPages,
    caps,
    sourceSha256: sha256Hex(bytes),
    sourceBytes: bytes.length,
  };
  if (fuel) mark.fuelScheme = fuelScheme;
  if (snapshot.problem === null) mark.snapshotGlobals = snapshot.mutableGlobals.length;
  const pooled = fuel && opts.poolMemories !== false ? poolableMemories(info, caps.maxMemoryPages) : null;
  if (pooled !== null) {
    mark.pooledMemories = pooled.map(({ min, max }) => ({ min, max }));
    const data = info.sections.find((s) => s.id === SectionId.data);
    mark.dataBlocks = data === undefined
      ? 0
      : dataBlockCount(info.bytes.subarray(data.start, data.end), WRITTEN_BLOCK_BYTES);
  }
  const out = rewriteModule(info, {
    poolMemories: pooled !== null,
    maxMemoryPages: caps.maxMemoryPages,
    fuel: fuel
      ? {
        importModule: FUEL_IMPORT_MODULE,
        importName: FUEL_IMPORT_NAME,
        globalExport: FUEL_GLOBAL_EXPORT,
        initial: FUEL_INITIAL,
        scheme: fuelScheme,
      }
      : null,
    appendCustom: [{ name: PREPARED_SECTION, data: UTF8_ENCODER.encode(JSON.stringify(mark)) }],
  });
  const report: PrepareReport = {
    bytesIn: bytes.length,
    bytesOut: out.bytes.length,
    ms: performance.now() - t0,
    imports,
    exports,
    memory: describeMemory(source, capsReport),
    caps: capsReport,
    allocDealloc: hasFunctionExport(exports, "alloc") && hasFunctionExport(exports, "dealloc"),
    functions: source.funcTypes.length,
    fuelPoints: out.fuelPoints,
    fuelCachedFunctions: out.cachedFunctions,
    pooledMemories: pooled?.length ?? 0,
    strippedSections: out.strippedSections,
  };
  return { bytes: out.bytes, report };
}

/**
 * The limits of a prepared module's pooled memories (`mcp_edge_guard.memory_<i>` imports), from its
 * mark; null when it imports no memory.
 *
 * @throws {GuardError} "abi" when the imports and the mark disagree.
 */
export function pooledMemoryLimits(module: WebAssembly.Module): { min: number; max: number }[] | null {
  const imported = WebAssembly.Module.imports(module).filter((i) => i.kind === "memory");
  if (imported.length === 0) return null;
  const limits = readPreparedMark(module)?.pooledMemories;
  const names = (limits ?? []).map((_, i) => pooledMemoryImportName(i)).concat(WRITTEN_IMPORT_NAME);
  if (
    limits === undefined || imported.length !== names.length ||
    imported.some((imp, i) => imp.module !== FUEL_IMPORT_MODULE || imp.name !== names[i])
  ) {
    throw new GuardError("abi", "the module imports memories its preparation mark does not describe");
  }
  return limits;
}

/**
 * New memories for a prepared module's pooled-memory imports, by import name (`{}` when it defines
 * its memories): for code that instantiates a prepared module itself instead of through the host.
 *
 * @example
 * ```ts
 * const imports = { [FUEL_IMPORT_MODULE]: { [FUEL_IMPORT_NAME]: check, ...pooledMemoryImports(mod) } };
 * ```
 */
export function pooledMemoryImports(module: WebAssembly.Module): Record<string, WebAssembly.Memory> {
  const out: Record<string, WebAssembly.Memory> = {};
  const limits = pooledMemoryLimits(module);
  if (limits === null) return out;
  limits.forEach((l, i) => {
    out[pooledMemoryImportName(i)] = new WebAssembly.Memory({ initial: l.min, maximum: l.max });
  });
  const { pages } = writtenLayout(limits);
  out[WRITTEN_IMPORT_NAME] = new WebAssembly.Memory({ initial: pages, maximum: pages });
  return out;
}

function hasFunctionExport(exports: GuardExport[], name: string): boolean {
  return exports.some((e) => e.kind === "function" && e.name === name);
}

/**
 * Reads a module's imports, exports, memory, caps and any mark without changing or rejecting it:
 * each check's first problem is returned in its own field (`invalid`, `importError`, `abiError`,
 * `capsError`, `reserved`). The caps are evaluated against `caps` (defaults otherwise).
 *
 * @example
 * ```ts
 * const info = inspectGuard(bytes);
 * if (info.invalid ?? info.abiError) console.error(info.invalid ?? info.abiError);
 * ```
 * @throws {GuardError} "abi" only for malformed or unsupported binaries (our structural decode).
 */
export function inspectGuard(bytes: Uint8Array, caps: Partial<ModuleCaps> = {}): GuardInspection {
  const t0 = performance.now();
  const info = parseModule(bytes);
  const imports = describeImports(info);
  const exports = describeExports(info);
  let capsReport: CapsReport | null = null;
  let capsError: GuardInspection["capsError"] = null;
  try {
    capsReport = planCaps(info, resolveCaps({ caps }));
  } catch (e) {
    if (!(e instanceof GuardError)) throw e;
    capsError = { limit: e.limit, message: e.message };
  }
  return {
    bytesIn: bytes.length,
    ms: performance.now() - t0,
    imports,
    exports,
    memory: describeMemory(info, capsReport),
    allocDealloc: hasFunctionExport(exports, "alloc") && hasFunctionExport(exports, "dealloc"),
    functions: info.funcTypes.length,
    invalid: engineValidationProblem(bytes),
    abiError: abiProblem(exports, imports),
    importError: importProblem(imports),
    caps: capsReport,
    capsError,
    reserved: reservedProblem(info),
    prepared: markOf(info),
  };
}

/**
 * The `PreparedMark` of a compiled module, or `null` if it has none that parses (exactly one
 * section, current version). Reading a mark proves nothing: see {@link preparedModuleProblem}.
 *
 * @example
 * ```ts
 * const mark = readPreparedMark(module);
 * ```
 */
export function readPreparedMark(module: WebAssembly.Module): PreparedMark | null {
  const sections = WebAssembly.Module.customSections(module, PREPARED_SECTION);
  return sections.length === 1 ? parseMark(sections[0]) : null;
}

/**
 * The record our build keeps for prepared bytes it wrote: the mark text and the bytes' SHA-256.
 *
 * @example
 * ```ts
 * const { bytes } = prepareGuard(source);
 * const record = preparedRecord(bytes); // written into the generated manifest
 * ```
 * @throws {GuardError} "abi" when the bytes carry no valid mark.
 */
export function preparedRecord(prepared: Uint8Array): PreparedRecord {
  const info = parseModule(prepared);
  const marks = info.sections.filter((s) => s.id === 0 && s.name === PREPARED_SECTION);
  const text = marks.length === 1 ? UTF8.decode(prepared.subarray(marks[0].start, marks[0].end)) : "";
  if (parseMark(UTF8_ENCODER.encode(text)) === null) {
    throw new GuardError(
      "abi",
      "not prepared by this version: no single valid mcp_edge_guard.prepared section",
    );
  }
  return { mark: text, preparedSha256: sha256Hex(prepared) };
}

/**
 * Checks that a compiled module is the one our build prepared: it carries exactly one mark section
 * and its text equals `record.mark` byte for byte. Returns the mark, or the problem.
 *
 * What this proves: the build never emits a module it did not prepare itself (inputs carrying our
 * mark, fuel import or reserved exports are refused), and the manifest holding `record` is written
 * by the same build, so a module matching its record was made by that build from the source whose
 * hash and limits the mark binds. A `.wasm` supplied by someone else cannot carry a matching mark
 * into the bundle: it is always re-prepared from scratch.
 */
export function preparedModuleProblem(
  module: WebAssembly.Module,
  record: PreparedRecord | undefined,
): { mark: PreparedMark } | { problem: string } {
  if (record === undefined) {
    return { problem: "a compiled module is trusted only with the record of the build that prepared it" };
  }
  const sections = WebAssembly.Module.customSections(module, PREPARED_SECTION);
  if (sections.length !== 1) {
    return { problem: `the module has ${sections.length} ${PREPARED_SECTION} sections, expected 1` };
  }
  const text = UTF8.decode(sections[0]);
  if (text !== record.mark) {
    return {
      problem: "its preparation mark differs from the one the build recorded (stale or foreign module)",
    };
  }
  const mark = parseMark(sections[0]);
  if (mark === null) return { problem: "its preparation mark is not one this version writes (stale build)" };
  return { mark };
}
