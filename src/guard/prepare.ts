/**
 * Guard preparation: validate the guard ABI, clamp linear memory to the cap, inject fuel metering,
 * and mark the result. Runs at build time (Workers forbid runtime compilation) or at cold start on
 * Deno; the host refuses modules without the mark (`readPreparedMark`).
 *
 * ABI rules and error texts follow gh-aw-mcpg (`NewWasmGuardWithOptions`): imports are checked first
 * (the reference fails them at instantiation), then the exports in the reference's order.
 *
 * @module
 */

import { DEFAULT_LIMITS, GuardError, MAX_WASM32_PAGES } from "./limits.ts";
import { ENV_MODULE, ENV_SIGNATURES, WASI_MODULE, WASI_PREVIEW1_SIGNATURES } from "./wasm/host_signatures.ts";
import { type ExternKind, formatFuncType, funcTypeOf, type ModuleInfo, parseModule } from "./wasm/module.ts";
import { type FuelScheme, rewriteModule } from "./wasm/rewrite.ts";
import { sha256Hex } from "./wasm/sha256.ts";

export { WASI_PREVIEW1_SIGNATURES } from "./wasm/host_signatures.ts";
export type { FuelScheme } from "./wasm/rewrite.ts";

/** Import module of the injected fuel check. */
export const FUEL_IMPORT_MODULE = "mcp_edge_guard";
/** Import name of the injected fuel check: type `() -> ()`, appended as the last function import. */
export const FUEL_IMPORT_NAME = "fuel_check";
/** Export name of the injected fuel counter: a mutable i32 global the host refills. */
export const FUEL_GLOBAL_EXPORT = "__mcp_edge_guard_fuel";
/** Custom section holding the UTF-8 JSON `PreparedMark`. */
export const PREPARED_SECTION = "mcp_edge_guard.prepared";

/** Reference memory cap: 512 pages = 32 MiB (`WithMemoryLimitPages(512)`). */
const DEFAULT_MAX_MEMORY_PAGES = DEFAULT_LIMITS.maxMemoryPages;
/** Initial fuel counter, so a start function runs before the host can set the global. */
export const FUEL_INITIAL = 1_000_000;
/** Version of the `PreparedMark` format. */
const MARK_VERSION = 1;

/** Fuel shapes a mark may name (see `wasm/rewrite.ts`). */
const FUEL_SCHEMES: readonly FuelScheme[] = ["cached", "global"];

/** What preparation recorded in the module. */
export interface PreparedMark {
  v: 1;
  fuel: boolean;
  maxMemoryPages: number;
  sourceSha256: string;
  sourceBytes: number;
  /**
   * With fuel: how fuel points reach the counter. Absent in marks written before the cached shape
   * existed, which means "global". The host protocol is the same for both.
   */
  fuelScheme?: FuelScheme;
}

/** Preparation options. */
export interface PrepareOptions {
  /** Memory cap in 64 KiB pages (default 512). */
  maxMemoryPages?: number;
  /** Inject fuel metering (default true). */
  fuel?: boolean;
  /**
   * Fuel shape (default "cached": a counter local in functions with loops and no exception
   * handling, the global shape elsewhere). "global" puts the global shape everywhere; both spend
   * exactly the same units at the same points.
   */
  fuelScheme?: FuelScheme;
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
  /** Both `alloc` and `dealloc` exported. */
  allocDealloc: boolean;
  /** Defined functions. */
  functions: number;
  /** Injected fuel decrement sites (function entries + loop headers). */
  fuelPoints: number;
  /** Functions metered through a cached counter local. */
  fuelCachedFunctions: number;
  /** Custom sections removed. */
  strippedSections: string[];
}

/** What `inspectGuard` reports. */
export type GuardInspection =
  & Omit<PrepareReport, "bytesOut" | "fuelPoints" | "fuelCachedFunctions" | "strippedSections">
  & {
    abiError: string | null;
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

function abiProblem(exports: GuardExport[], imports: GuardImport[]): string | null {
  for (const imp of imports) {
    const problem = checkImport(imp);
    if (problem !== null) return problem;
  }
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

function describeMemory(info: ModuleInfo, cap: number): PrepareReport["memory"] {
  const imported = info.imports.find((i) => i.kind === "memory")?.limits;
  const limits = imported ?? info.memories[0];
  if (limits === undefined) return null;
  return {
    imported: imported !== undefined,
    minPages: limits.min,
    declaredMaxPages: limits.max,
    maxPages: limits.max === null ? cap : Math.min(limits.max, cap),
  };
}

const UTF8 = new TextDecoder();

function parseMark(data: Uint8Array | ArrayBuffer): PreparedMark | null {
  try {
    const m = JSON.parse(UTF8.decode(data));
    if (
      m !== null && typeof m === "object" && m.v === MARK_VERSION && typeof m.fuel === "boolean" &&
      Number.isSafeInteger(m.maxMemoryPages) && typeof m.sourceSha256 === "string" &&
      Number.isSafeInteger(m.sourceBytes)
    ) {
      const mark: PreparedMark = {
        v: MARK_VERSION,
        fuel: m.fuel,
        maxMemoryPages: m.maxMemoryPages,
        sourceSha256: m.sourceSha256,
        sourceBytes: m.sourceBytes,
      };
      if (FUEL_SCHEMES.includes(m.fuelScheme)) mark.fuelScheme = m.fuelScheme;
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

function resolveScheme(opts: PrepareOptions): FuelScheme {
  const scheme = opts.fuelScheme ?? "cached";
  if (!FUEL_SCHEMES.includes(scheme)) {
    throw new RangeError(`fuelScheme must be one of ${FUEL_SCHEMES.join(", ")}, got ${String(scheme)}`);
  }
  return scheme;
}

function resolveCap(opts: PrepareOptions): number {
  const cap = opts.maxMemoryPages ?? DEFAULT_MAX_MEMORY_PAGES;
  if (!Number.isSafeInteger(cap) || cap < 1 || cap > MAX_WASM32_PAGES) {
    throw new RangeError(`maxMemoryPages must be an integer in 1..${MAX_WASM32_PAGES}, got ${cap}`);
  }
  return cap;
}

/**
 * Prepares a guard module for this host: validates the ABI, clamps every defined memory's maximum to
 * `maxMemoryPages` (a missing maximum becomes the cap), injects fuel metering (import
 * `mcp_edge_guard.fuel_check`, exported counter `__mcp_edge_guard_fuel`, one unit spent at every
 * function entry and loop header; functions with loops and no exception handling keep the counter
 * in a local and write it back before calls and exits), strips debug sections and appends the
 * `PreparedMark`.
 *
 * @example
 * ```ts
 * const { bytes, report } = prepareGuard(await Deno.readFile("guard.wasm"), { maxMemoryPages: 512 });
 * const module = await WebAssembly.compile(bytes);
 * ```
 * @throws {GuardError} "abi" for ABI violations, malformed input, unsupported opcodes or an already
 *   prepared module; "memory" (limit `maxMemoryPages`) when a memory's minimum exceeds the cap.
 * @throws {RangeError} for a bad `maxMemoryPages` or `fuelScheme`.
 */
export function prepareGuard(
  bytes: Uint8Array,
  opts: PrepareOptions = {},
): { bytes: Uint8Array<ArrayBuffer>; report: PrepareReport } {
  const t0 = performance.now();
  const cap = resolveCap(opts);
  const fuel = opts.fuel ?? true;
  const fuelScheme = resolveScheme(opts);
  const info = parseModule(bytes);
  if (info.sections.some((s) => s.id === 0 && s.name === PREPARED_SECTION)) {
    throw new GuardError("abi", `already prepared: the module has a "${PREPARED_SECTION}" custom section`);
  }
  if (info.imports.some((i) => i.module === FUEL_IMPORT_MODULE)) {
    throw new GuardError("abi", `already prepared: the module imports from "${FUEL_IMPORT_MODULE}"`);
  }
  if (info.exports.some((e) => e.name === FUEL_GLOBAL_EXPORT)) {
    throw new GuardError("abi", `already prepared: the module exports "${FUEL_GLOBAL_EXPORT}"`);
  }
  const imports = describeImports(info);
  const exports = describeExports(info);
  validateGuardAbi(exports, imports);
  const mark: PreparedMark = {
    v: MARK_VERSION,
    fuel,
    maxMemoryPages: cap,
    sourceSha256: sha256Hex(bytes),
    sourceBytes: bytes.length,
  };
  if (fuel) mark.fuelScheme = fuelScheme;
  const out = rewriteModule(info, {
    maxMemoryPages: cap,
    fuel: fuel
      ? {
        importModule: FUEL_IMPORT_MODULE,
        importName: FUEL_IMPORT_NAME,
        globalExport: FUEL_GLOBAL_EXPORT,
        initial: FUEL_INITIAL,
        scheme: fuelScheme,
      }
      : null,
    appendCustom: [{ name: PREPARED_SECTION, data: new TextEncoder().encode(JSON.stringify(mark)) }],
  });
  const report: PrepareReport = {
    bytesIn: bytes.length,
    bytesOut: out.bytes.length,
    ms: performance.now() - t0,
    imports,
    exports,
    memory: describeMemory(info, cap),
    allocDealloc: hasFunctionExport(exports, "alloc") && hasFunctionExport(exports, "dealloc"),
    functions: info.funcTypes.length,
    fuelPoints: out.fuelPoints,
    fuelCachedFunctions: out.cachedFunctions,
    strippedSections: out.strippedSections,
  };
  return { bytes: out.bytes, report };
}

function hasFunctionExport(exports: GuardExport[], name: string): boolean {
  return exports.some((e) => e.kind === "function" && e.name === name);
}

/**
 * Reads a module's imports, exports, memory and preparation mark without changing or rejecting it
 * for ABI reasons (the first ABI problem is returned in `abiError`; the fuel check import of a
 * prepared module is not a problem). Memory limits are reported against the default cap, or the
 * mark's cap for prepared modules.
 *
 * @example
 * ```ts
 * const info = inspectGuard(bytes);
 * if (info.abiError) console.error(info.abiError);
 * ```
 * @throws {GuardError} "abi" only for malformed or unsupported binaries.
 */
export function inspectGuard(bytes: Uint8Array): GuardInspection {
  const t0 = performance.now();
  const info = parseModule(bytes);
  const imports = describeImports(info);
  const exports = describeExports(info);
  const prepared = markOf(info);
  return {
    bytesIn: bytes.length,
    ms: performance.now() - t0,
    imports,
    exports,
    memory: describeMemory(info, prepared?.maxMemoryPages ?? DEFAULT_MAX_MEMORY_PAGES),
    allocDealloc: hasFunctionExport(exports, "alloc") && hasFunctionExport(exports, "dealloc"),
    functions: info.funcTypes.length,
    abiError: abiProblem(exports, imports),
    prepared,
  };
}

/**
 * The `PreparedMark` of a compiled module, or `null` if it was not prepared (or the mark is not
 * ours). Works where only a `WebAssembly.Module` exists (Workers bundle imports).
 *
 * @example
 * ```ts
 * if (readPreparedMark(module) === null) throw new Error("run prepareGuard first");
 * ```
 */
export function readPreparedMark(module: WebAssembly.Module): PreparedMark | null {
  const sections = WebAssembly.Module.customSections(module, PREPARED_SECTION);
  return sections.length === 0 ? null : parseMark(sections[0]);
}
