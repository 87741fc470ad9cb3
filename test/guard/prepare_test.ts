/**
 * prepareGuard / inspectGuard / validateGuardAbi / readPreparedMark on WAT guards built by wabt:
 * ABI rules and messages, import rules, memory clamping, fuel injection, renumbering, custom
 * sections, malformed and unsupported input.
 */
import {
  assert,
  assertEquals,
  assertGreater,
  assertInstanceOf,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import wabtInit from "wabt";
import { DEFAULT_LIMITS, GuardError } from "../../src/guard/limits.ts";
import { pickCaps } from "../../src/guard/wasm/caps.ts";
import {
  FUEL_GLOBAL_EXPORT,
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  type GuardExport,
  inspectGuard,
  PREPARED_SECTION,
  prepareGuard,
  readPreparedMark,
  validateGuardAbi,
  WASI_PREVIEW1_SIGNATURES,
} from "../../src/guard/prepare.ts";
import { rewriteWithFuel } from "./bulk_harness.ts";
import { instantiate } from "../helpers/instantiate.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/prepare/", import.meta.url);
const FEATURES = { exceptions: true, simd: true, tail_call: true, bulk_memory: true, reference_types: true };

function wat(text: string, opts: { names?: boolean; features?: object } = {}): Uint8Array<ArrayBuffer> {
  const features = opts.features ?? FEATURES;
  const mod = wabt.parseWat("test.wat", text, features);
  try {
    mod.resolveNames();
    (mod as unknown as { validate(features: object): void }).validate(features);
    return new Uint8Array(mod.toBinary({ write_debug_names: opts.names ?? false }).buffer);
  } finally {
    mod.destroy();
  }
}

function fixture(name: string): Uint8Array<ArrayBuffer> {
  return wat(Deno.readTextFileSync(new URL(name, FIXTURES)), { names: true });
}

const LABEL = "(param i32 i32 i32 i32) (result i32) (i32.const 0)";
const LABELS = `(func (export "label_agent") ${LABEL})
  (func (export "label_resource") ${LABEL})
  (func (export "label_response") ${LABEL})`;

/** A guard module with the three label exports plus `extra` module fields. */
function guard(extra: string, opts: { names?: boolean; features?: object } = {}): Uint8Array<ArrayBuffer> {
  return wat(`(module ${extra}\n(memory (export "memory") 1)\n${LABELS})`, opts);
}

function abiError(fn: () => unknown): GuardError {
  const e = assertThrows(fn, GuardError);
  assertEquals(e.kind, "abi");
  return e;
}

interface Instance {
  exports: Record<string, unknown>;
  checks: () => number;
  fuel: WebAssembly.Global;
}

const backendCalls: number[][] = [];
const ENV = {
  env: {
    call_backend: (...a: number[]) => {
      backendCalls.push(a);
      return 17;
    },
    host_log: () => {},
  },
  wasi_snapshot_preview1: { fd_write: () => 0 },
};

/** Instantiates a prepared module; the check import refills the counter to `refill`. */
function instantiatePrepared(bytes: Uint8Array<ArrayBuffer>, refill: number): Instance {
  let checks = 0;
  const box: { fuel?: WebAssembly.Global } = {};
  const inst = instantiate(bytes, {
    ...ENV,
    [FUEL_IMPORT_MODULE]: {
      [FUEL_IMPORT_NAME]: () => {
        checks++;
        box.fuel!.value = refill;
      },
    },
  });
  const fuel = box.fuel = inst.exports[FUEL_GLOBAL_EXPORT] as WebAssembly.Global;
  // The preparer exports the start function (`START_EXPORT`) for the host to run before any call.
  (inst.exports.__mcp_edge_guard_start as (() => void) | undefined)?.();
  return { exports: inst.exports, checks: () => checks, fuel };
}

// ---------------------------------------------------------------------------------------------
// ABI: exports, in the reference's order and words

Deno.test("ABI: _start without label_resource gets the TinyGo hint", () => {
  const e = abiError(() => prepareGuard(wat(`(module (func (export "_start")))`)));
  assertStringIncludes(e.message, "WASM module does not export guard functions.");
  assertStringIncludes(e.message, "compiled with standard Go instead of TinyGo");
});

Deno.test("ABI: missing label_resource or label_response", () => {
  const msg = "WASM module must export label_resource and label_response functions";
  assertEquals(abiError(() => prepareGuard(wat(`(module)`))).message, msg);
  // _start present but label_resource present: no hint, the generic message.
  const onlyResource = wat(`(module (func (export "_start")) (func (export "label_resource") ${LABEL}))`);
  assertEquals(abiError(() => prepareGuard(onlyResource)).message, msg);
  // A non-function export of that name does not count.
  const asGlobal = wat(`(module (global (export "label_resource") i32 (i32.const 0))
    (func (export "label_response") ${LABEL}) (func (export "label_agent") ${LABEL}))`);
  assertEquals(abiError(() => prepareGuard(asGlobal)).message, msg);
});

Deno.test("ABI: missing label_agent", () => {
  const m = wat(
    `(module (func (export "label_resource") ${LABEL}) (func (export "label_response") ${LABEL}))`,
  );
  assertEquals(abiError(() => prepareGuard(m)).message, "WASM module must export label_agent");
});

Deno.test("ABI: signatures are checked in order and rendered as Go prints []api.ValueType", () => {
  const mk = (resource: string, response: string, agent: string) =>
    wat(`(module
      (func (export "label_resource") ${resource})
      (func (export "label_response") ${response})
      (func (export "label_agent") ${agent}))`);
  const ok = LABEL;
  const cases: [Uint8Array<ArrayBuffer>, string][] = [
    [
      mk("(param i32 i32) (result i32) (i32.const 0)", "(param i32)", ok),
      "WASM module function label_resource must have signature (i32,i32,i32,i32)->i32, got [127 127]->[127]",
    ],
    [
      mk(ok, "(param i32 i32 i32 i32)", "(param i32)"),
      "WASM module function label_response must have signature (i32,i32,i32,i32)->i32, got [127 127 127 127]->[]",
    ],
    [
      mk(ok, ok, "(param i64 i32 f32 f64) (result i32) (i32.const 0)"),
      "WASM module function label_agent must have signature (i32,i32,i32,i32)->i32, got [126 127 125 124]->[127]",
    ],
    [
      mk(ok, ok, "(param i32 i32 i32 i32) (result i64) (i64.const 0)"),
      "WASM module function label_agent must have signature (i32,i32,i32,i32)->i32, got [127 127 127 127]->[126]",
    ],
  ];
  for (const [bytes, msg] of cases) assertEquals(abiError(() => prepareGuard(bytes)).message, msg);
});

Deno.test("ABI: validateGuardAbi skips signatures it cannot see (WebAssembly.Module.exports)", () => {
  const mod = new WebAssembly.Module(guard(""));
  const exports = WebAssembly.Module.exports(mod) as GuardExport[];
  validateGuardAbi(exports, WebAssembly.Module.imports(mod));
  assertThrows(
    () => validateGuardAbi(exports.filter((e) => e.name !== "label_agent"), []),
    GuardError,
    "WASM module must export label_agent",
  );
});

Deno.test("ABI: a module without memory is accepted and reported", () => {
  const bytes = wat(`(module ${LABELS})`);
  const { bytes: out, report } = prepareGuard(bytes);
  assertEquals(report.memory, null);
  assert(WebAssembly.validate(out));
  assertEquals(inspectGuard(bytes).memory, null);
  assertEquals(inspectGuard(bytes).abiError, null);
});

// ---------------------------------------------------------------------------------------------
// ABI: imports

Deno.test("imports: every WASI preview1 function and both env functions are accepted", () => {
  assertEquals(Object.keys(WASI_PREVIEW1_SIGNATURES).length, 46);
  const toWat = (t: string) => {
    const [, p, r] = /^\((.*)\)->\((.*)\)$/.exec(t)!;
    return `(param ${p.replaceAll(",", " ")}) (result ${r.replaceAll(",", " ")})`;
  };
  const imports = Object.entries(WASI_PREVIEW1_SIGNATURES)
    .map(([name, t]) => `(import "wasi_snapshot_preview1" "${name}" (func ${toWat(t)}))`)
    .join("\n");
  const bytes = guard(`${imports}
    (import "env" "call_backend" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
    (import "env" "host_log" (func (param i32 i32 i32)))`);
  const { report } = prepareGuard(bytes);
  assertEquals(report.imports.length, 48);
  assertEquals(report.imports.find((i) => i.name === "clock_time_get")?.type, "(i32,i64,i32)->(i32)");
  assertEquals(report.imports.find((i) => i.name === "proc_exit")?.type, "(i32)->()");
});

Deno.test("imports: anything else is rejected naming module.name and the reason", () => {
  const cases: [string, string][] = [
    [`(import "env" "memory" (memory 1))`, "import env.memory: the host provides no memory imports"],
    [`(import "env" "tbl" (table 1 funcref))`, "import env.tbl: the host provides no table imports"],
    [`(import "env" "g" (global i32))`, "import env.g: the host provides no global imports"],
    [`(import "env" "abort" (func))`, "import env.abort: unknown host function"],
    [`(import "other" "x" (func))`, `import other.x: unknown import module "other"`],
    [
      `(import "wasi_snapshot_preview1" "sock_open" (func))`,
      "import wasi_snapshot_preview1.sock_open: not a",
    ],
    [
      `(import "env" "call_backend" (func (param i32) (result i32)))`,
      "import env.call_backend has type (i32)->(i32), expected (i32,i32,i32,i32,i32,i32)->(i32)",
    ],
    [
      `(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32) (result i32)))`,
      "import wasi_snapshot_preview1.fd_write has type (i32,i32,i32)->(i32), expected (i32,i32,i32,i32)->(i32)",
    ],
  ];
  for (const [decl, msg] of cases) {
    // Memory imports replace the module's own memory.
    const text = decl.includes("memory") ? `(module ${decl} ${LABELS})` : undefined;
    const bytes = text ? wat(text) : guard(decl);
    assertStringIncludes(abiError(() => prepareGuard(bytes)).message, msg);
    assertStringIncludes(inspectGuard(bytes).abiError ?? "", msg);
  }
});

Deno.test("imports are checked before exports (the reference fails them at instantiation)", () => {
  const bytes = wat(`(module (import "x" "y" (func)))`);
  assertStringIncludes(abiError(() => prepareGuard(bytes)).message, "import x.y");
});

// ---------------------------------------------------------------------------------------------
// Memory

function growGuard(): Uint8Array<ArrayBuffer> {
  return fixture("memory_grow.wat");
}

Deno.test("memory: unbounded memory is capped; grow beyond the cap returns -1 only after preparation", () => {
  const original = instantiate(growGuard()).exports;
  assertEquals((original.grow as (n: number) => number)(600), 1, "unprepared memory grows past 512 pages");

  const { bytes, report } = prepareGuard(growGuard(), { maxMemoryPages: 16 });
  assertEquals(report.memory, { imported: false, minPages: 1, declaredMaxPages: null, maxPages: 16 });
  const g = instantiatePrepared(bytes, 1_000_000).exports;
  const grow = g.grow as (n: number) => number;
  assertEquals(grow(10), 1);
  assertEquals(grow(10), -1);
  assertEquals((g.size as () => number)(), 11);

  const def = instantiatePrepared(prepareGuard(growGuard()).bytes, 1_000_000).exports;
  assertEquals((def.grow as (n: number) => number)(600), -1, "default cap is 512 pages");
  assertEquals((def.grow as (n: number) => number)(511), 1);
});

Deno.test("memory: a declared maximum above the cap is lowered, one below is kept", () => {
  const big = prepareGuard(guard("").subarray(0), { maxMemoryPages: 8 });
  assertEquals(big.report.memory?.maxPages, 8);
  const small = wat(`(module (memory (export "memory") 1 4) ${LABELS})`);
  const r = prepareGuard(small, { maxMemoryPages: 8 });
  assertEquals(r.report.memory, { imported: false, minPages: 1, declaredMaxPages: 4, maxPages: 4 });
  const m = instantiatePrepared(r.bytes, 1).exports.memory as WebAssembly.Memory;
  assertEquals(m.grow(3), 1);
  assertThrows(() => m.grow(1), RangeError);
});

Deno.test("memory: a minimum above the cap is a memory error naming the limit", () => {
  const bytes = wat(`(module (memory (export "memory") 20) ${LABELS})`);
  const e = assertThrows(() => prepareGuard(bytes, { maxMemoryPages: 16 }), GuardError);
  assertEquals(e.kind, "memory");
  assertEquals(e.limit, "maxMemoryPages");
  assertEquals(e.value, 16);
  assertStringIncludes(e.message, "minimum of 20 pages");
});

Deno.test("memory: memory64 is rejected with a clear message", () => {
  const bytes = wat(`(module (memory (export "memory") i64 1) ${LABELS})`, {
    features: { memory64: true },
  });
  const e = abiError(() => prepareGuard(bytes));
  assertStringIncludes(e.message, "memory64 is not supported");
});

Deno.test("memory: bad maxMemoryPages option is a RangeError", () => {
  assertThrows(() => prepareGuard(guard(""), { maxMemoryPages: 0 }), RangeError, "maxMemoryPages");
  assertThrows(() => prepareGuard(guard(""), { maxMemoryPages: 70_000 }), RangeError, "maxMemoryPages");
});

// ---------------------------------------------------------------------------------------------
// Fuel and renumbering

Deno.test("fuel: one point per function entry and loop iteration, counted exactly", () => {
  const { bytes, report } = prepareGuard(fixture("guard_basic.wat"));
  assert(WebAssembly.validate(bytes));
  // refill 0: every point drives the counter to -1 and calls the check.
  const g = instantiatePrepared(bytes, 0);
  g.fuel.value = 0;
  assertEquals((g.exports.spin as (n: number) => number)(100), 4950);
  assertEquals(g.checks(), 1 + 101, "entry + 101 loop headers (i = 0..100)");
  assertEquals(report.fuelPoints, report.functions + 1, "one loop in the fixture");
});

Deno.test("fuel: a spinning guard reaches the check import, deterministically", () => {
  const { bytes } = prepareGuard(fixture("guard_basic.wat"));
  const counts: number[] = [];
  for (let run = 0; run < 2; run++) {
    const g = instantiatePrepared(bytes, 10_000);
    g.fuel.value = 10_000;
    (g.exports.label_agent as (...a: number[]) => number)(0, 3_000_000, 0, 0);
    counts.push(g.checks());
  }
  assertGreater(counts[0], 250);
  assertEquals(counts[0], counts[1]);
});

Deno.test("fuel: the check can stop a guard by throwing", () => {
  const { bytes } = prepareGuard(fixture("guard_basic.wat"));
  const inst = instantiate(bytes, {
    ...ENV,
    [FUEL_IMPORT_MODULE]: {
      [FUEL_IMPORT_NAME]: () => {
        throw new Error("fuel exhausted");
      },
    },
  });
  (inst.exports[FUEL_GLOBAL_EXPORT] as WebAssembly.Global).value = 1000;
  assertThrows(() => (inst.exports.spin as (n: number) => number)(1e9), Error, "fuel exhausted");
});

Deno.test("renumbering: imports, start, calls, elements and exports keep their targets", () => {
  const { bytes, report } = prepareGuard(fixture("guard_basic.wat"));
  const original = instantiate(fixture("guard_basic.wat"), ENV).exports;
  const g = instantiatePrepared(bytes, 1_000_000).exports;
  assertEquals((g.started as () => number)(), 42, "start function ran");
  const indirect = g.indirect as (slot: number, x: number) => number;
  assertEquals([indirect(0, 5), indirect(1, 5)], [10, 15]);
  assertEquals(
    [indirect(0, 5), indirect(1, 5)],
    [(original.indirect as typeof indirect)(0, 5), (original.indirect as typeof indirect)(1, 5)],
  );
  backendCalls.length = 0;
  assertEquals((g.label_resource as (...a: number[]) => number)(1, 2, 3, 4), 17);
  assertEquals(backendCalls, [[1, 2, 1, 0, 3, 4]]);
  assertEquals((g.label_agent as (...a: number[]) => number)(0, 10, 0, 0), 45);
  assertEquals((g.label_response as (...a: number[]) => number)(0, 0, 0, 0), 0);
  // The fuel import is the last function import; the memory (pooled) and its write record follow.
  const imports = WebAssembly.Module.imports(new WebAssembly.Module(bytes));
  assertEquals(imports.filter((i) => i.kind === "function").at(-1), {
    module: FUEL_IMPORT_MODULE,
    name: FUEL_IMPORT_NAME,
    kind: "function",
  });
  assertEquals(imports.slice(-2), [
    { module: FUEL_IMPORT_MODULE, name: "memory_0", kind: "memory" },
    { module: FUEL_IMPORT_MODULE, name: "memory_written", kind: "memory" },
  ]);
  assertEquals(report.allocDealloc, true);
  assertEquals(report.functions, 12);
});

Deno.test("renumbering: the name section is shifted, so traps name the right function", () => {
  const bytes = guard(
    `(import "env" "host_log" (func $log (param i32 i32 i32)))
     (func $other (export "other") (call $log (i32.const 0) (i32.const 0) (i32.const 0)))
     (func $boom (export "boom") unreachable)`,
    { names: true },
  );
  const { bytes: out, report } = prepareGuard(bytes);
  assertEquals(report.strippedSections, []);
  const g = instantiatePrepared(out, 1_000_000).exports;
  const e = assertThrows(() => (g.boom as () => void)(), WebAssembly.RuntimeError);
  assertStringIncludes(e.stack ?? "", "boom");
  assert(!(e.stack ?? "").includes("at other"), e.stack);
});

Deno.test("renumbering: an unparsable name section is dropped and reported", () => {
  const bytes = appendCustom(guard(`(func (export "f"))`), "name", [0x01, 0x7f, 0x05]);
  const { bytes: out, report } = prepareGuard(bytes);
  assertEquals(report.strippedSections, ["name"]);
  assert(WebAssembly.validate(out));
  assertEquals(WebAssembly.Module.customSections(new WebAssembly.Module(out), "name").length, 0);
});

Deno.test("fuel: false leaves code and imports alone but still clamps and marks", () => {
  const { bytes, report } = prepareGuard(fixture("guard_basic.wat"), { fuel: false, maxMemoryPages: 4 });
  assertEquals(report.fuelPoints, 0);
  const mod = new WebAssembly.Module(bytes);
  assert(!WebAssembly.Module.imports(mod).some((i) => i.module === FUEL_IMPORT_MODULE));
  assert(!WebAssembly.Module.exports(mod).some((e) => e.name === FUEL_GLOBAL_EXPORT));
  assertEquals(readPreparedMark(mod)?.fuel, false);
  assertEquals(readPreparedMark(mod)?.maxMemoryPages, 4);
  const inst = instantiate(mod, ENV);
  assertEquals((inst.exports.spin as (n: number) => number)(10), 45);
});

// ---------------------------------------------------------------------------------------------
// Custom sections, marks, inspection

function appendCustom(bytes: Uint8Array, name: string, data: number[]): Uint8Array<ArrayBuffer> {
  const nameBytes = new TextEncoder().encode(name);
  const content = [nameBytes.length, ...nameBytes, ...data];
  assert(content.length < 128 && nameBytes.length < 128);
  return new Uint8Array([...bytes, 0, content.length, ...content]);
}

Deno.test("custom sections: debug info is stripped, others are kept", () => {
  let bytes = guard("");
  for (const n of [".debug_info", ".debug_line", "sourceMappingURL", "external_debug_info", "producers"]) {
    bytes = appendCustom(bytes, n, [1, 2, 3]);
  }
  const { bytes: out, report } = prepareGuard(bytes);
  assertEquals(report.strippedSections, [
    ".debug_info",
    ".debug_line",
    "sourceMappingURL",
    "external_debug_info",
  ]);
  const mod = new WebAssembly.Module(out);
  assertEquals(WebAssembly.Module.customSections(mod, "producers").length, 1);
  assertEquals(WebAssembly.Module.customSections(mod, ".debug_info").length, 0);
});

Deno.test("mark: readPreparedMark and inspectGuard read what prepareGuard wrote", async () => {
  const source = fixture("guard_basic.wat");
  const { bytes, report } = prepareGuard(source, { maxMemoryPages: 64 });
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", source));
  const sha = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  const mark = {
    v: 2,
    fuel: true,
    maxMemoryPages: 64,
    caps: { ...pickCaps(DEFAULT_LIMITS), maxMemoryPages: 64 },
    sourceSha256: sha,
    sourceBytes: source.length,
    fuelScheme: "cached",
    // guard_basic.wat: two mutable globals, no passive segments (snapshot-able).
    snapshotGlobals: 2,
    // its one memory (2 pages, no maximum: clamped to the cap) is pooled
    pooledMemories: [{ min: 2, max: 64 }],
    // and it has no data segments: instantiation writes no block of it
    dataBlocks: 0,
  };
  assertEquals(readPreparedMark(new WebAssembly.Module(bytes)), mark);
  assertEquals(readPreparedMark(new WebAssembly.Module(source)), null);
  assertEquals(report.bytesIn, source.length);
  assertEquals(report.bytesOut, bytes.length);

  const seen = inspectGuard(bytes);
  assertEquals(seen.prepared, mark);
  assertEquals(seen.abiError, null, "the fuel import of a prepared guard is not an ABI problem");
  assertStringIncludes(seen.reserved ?? "", PREPARED_SECTION, "but it is refused as a source");
  // Prepared: the memory is the pooled import mcp_edge_guard.memory_0.
  assertEquals(seen.memory, { imported: true, minPages: 2, declaredMaxPages: 64, maxPages: 64 });
  const before = inspectGuard(source);
  assertEquals(before.prepared, null);
  assertEquals(before.exports, report.exports);
  assertEquals(before.functions, report.functions);
  assertEquals(
    report.exports.find((e) => e.name === "label_agent"),
    { name: "label_agent", kind: "function", type: "(i32,i32,i32,i32)->(i32)" },
  );
  assertEquals(report.exports.find((e) => e.name === "memory"), { name: "memory", kind: "memory" });
});

Deno.test("mark: preparing twice is refused", () => {
  const { bytes } = prepareGuard(fixture("guard_basic.wat"));
  assertStringIncludes(abiError(() => prepareGuard(bytes)).message, "refused: it has a");
  const noMark = prepareGuard(fixture("guard_basic.wat"), { fuel: true }).bytes;
  // Even with the mark removed, the fuel import gives it away.
  const withoutMark = noMark.subarray(0, noMark.length - markSectionLength(noMark));
  assertStringIncludes(abiError(() => prepareGuard(withoutMark)).message, "our fuel check");
});

/** Byte length of the trailing prepared-mark custom section. */
function markSectionLength(bytes: Uint8Array): number {
  const tail = new TextEncoder().encode(PREPARED_SECTION);
  for (let start = bytes.length - 1; start > 8; start--) {
    if (bytes[start] !== 0) continue;
    // id 0, size (1-2 byte LEB), name length, name
    for (const sizeLen of [1, 2]) {
      const nameAt = start + 1 + sizeLen + 1;
      if (bytes[nameAt - 1] !== tail.length) continue;
      if (tail.every((b, i) => bytes[nameAt + i] === b)) return bytes.length - start;
    }
  }
  throw new Error("no mark section");
}

// ---------------------------------------------------------------------------------------------
// Malformed and unsupported input

/** A guard whose label_agent body is `body` (bytes after the locals vector, including `end`). */
function handBuiltGuard(body: number[]): { bytes: Uint8Array<ArrayBuffer>; bodyAt: number } {
  const name = (s: string) => [s.length, ...new TextEncoder().encode(s)];
  const section = (id: number, content: number[]) => [id, content.length, ...content];
  const ok = [0x00, 0x41, 0x00, 0x0b];
  const bad = [0x00, ...body];
  const exportsContent = [
    3,
    ...name("label_agent"),
    0,
    0,
    ...name("label_resource"),
    0,
    1,
    ...name("label_response"),
    0,
    2,
  ];
  const head = [
    0x00,
    0x61,
    0x73,
    0x6d,
    1,
    0,
    0,
    0,
    ...section(1, [1, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f]),
    ...section(3, [3, 0, 0, 0]),
    ...section(7, exportsContent),
  ];
  const code = [3, bad.length, ...bad, ok.length, ...ok, ok.length, ...ok];
  const bytes = new Uint8Array([...head, ...section(10, code)]);
  // id, size, count, body size, locals count
  return { bytes, bodyAt: head.length + 2 + 1 + 1 + 1 };
}

Deno.test("unsupported opcodes are named in hex with their byte offset", () => {
  // prepareGuard stops these at the engine's validator; the rewriter names the opcode on its own.
  const gc = handBuiltGuard([0x41, 0x00, 0xfb, 0x14, 0x0b]);
  assertStringIncludes(abiError(() => prepareGuard(gc.bytes)).message, "invalid WebAssembly module: ");
  const e = abiError(() => rewriteWithFuel(gc.bytes));
  assertStringIncludes(e.message, "0xfb 0x14");
  assertStringIncludes(e.message, `byte offset ${gc.bodyAt + 2}`);
  assertStringIncludes(e.message, "GC");

  const unknown = handBuiltGuard([0xff, 0x0b]);
  assertStringIncludes(
    abiError(() => rewriteWithFuel(unknown.bytes)).message,
    `0xff at byte offset ${unknown.bodyAt}`,
  );
  const fc = handBuiltGuard([0xfc, 0x30, 0x0b]);
  assertStringIncludes(abiError(() => rewriteWithFuel(fc.bytes)).message, "0xfc 0x30");
  const fd = handBuiltGuard([0xfd, 0xff, 0x04, 0x0b]);
  assertStringIncludes(abiError(() => rewriteWithFuel(fd.bytes)).message, "0xfd 0x27f");
  for (const m of [unknown, fc, fd]) {
    assertStringIncludes(abiError(() => prepareGuard(m.bytes)).message, "invalid WebAssembly module: ");
  }

  // The hand-built module itself is fine apart from the body.
  assert(WebAssembly.validate(handBuiltGuard([0x41, 0x07, 0x0b]).bytes));
  assert(WebAssembly.validate(prepareGuard(handBuiltGuard([0x41, 0x07, 0x0b]).bytes).bytes));
});

Deno.test("truncated input: every prefix fails with an abi error or, cut at a section end, stays valid", () => {
  const bytes = fixture("guard_basic.wat");
  let failed = 0;
  for (let n = 0; n < bytes.length; n++) {
    let out: Uint8Array<ArrayBuffer>;
    try {
      out = prepareGuard(bytes.subarray(0, n)).bytes;
    } catch (e) {
      assertInstanceOf(e, GuardError, `prefix ${n}`);
      assertEquals(e.kind, "abi", `prefix ${n}: ${e.message}`);
      failed++;
      continue;
    }
    assert(WebAssembly.validate(out), `prefix ${n} was accepted but its output does not validate`);
  }
  assertGreater(failed, bytes.length - 5);
  assertStringIncludes(abiError(() => prepareGuard(bytes.subarray(0, 30))).message, "byte offset");
  assertStringIncludes(
    abiError(() => prepareGuard(new Uint8Array([1, 2, 3, 4, 1, 0, 0, 0]))).message,
    "bad magic",
  );
});

Deno.test("inspectGuard reports without throwing on ABI problems", () => {
  const info = inspectGuard(wat(`(module (func (export "_start")) (memory 3 9))`));
  assertStringIncludes(info.abiError ?? "", "TinyGo");
  assertEquals(info.memory, { imported: false, minPages: 3, declaredMaxPages: 9, maxPages: 9 });
  assertEquals(info.allocDealloc, false);
  assertEquals(typeof info.ms, "number");
});
