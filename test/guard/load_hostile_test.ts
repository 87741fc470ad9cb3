/**
 * Module-level checks at load time, through the real preparer and host: the hostile corpus
 * (`invalid_`, `mark_`, `mem_`, `table_`, `segments_` fixtures) is refused with a typed error naming
 * the reason and limit, or loads capped; the caps split memories and tables as documented; marks
 * are never trusted from outside, and a compiled module needs its build record.
 */
import { assert, assertEquals, assertInstanceOf, assertLessOrEqual, assertStringIncludes } from "@std/assert";
import wabtInit from "wabt";
import { loadGuardModule } from "../../src/guard/host.ts";
import { GuardError } from "../../src/guard/limits.ts";
import { inspectGuard, preparedRecord, prepareGuard, readPreparedMark } from "../../src/guard/prepare.ts";
import { memoryExportName, splitBudget, tableExportName } from "../../src/guard/wasm/caps.ts";
import { hostileBytes, hostileNames, MODULE_LEVEL_PREFIXES, REFUSALS } from "../helpers/hostile_corpus.ts";
import { instantiate } from "../helpers/instantiate.ts";

const wabt = await wabtInit();

function wat(text: string): Uint8Array<ArrayBuffer> {
  const mod = wabt.parseWat("t.wat", text, { bulk_memory: true, reference_types: true });
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

const STUBS = ["label_agent", "label_resource", "label_response"]
  .map((n) => `(func (export "${n}") (param i32 i32 i32 i32) (result i32) (i32.const 0))`)
  .join("\n");

const noBackend = () => Promise.reject(new Error("no backend"));
const ctx = () => ({ signal: new AbortController().signal, backend: noBackend, log: () => {} });

async function refusal(p: Promise<unknown>): Promise<GuardError> {
  try {
    await p;
  } catch (e) {
    assertInstanceOf(e, GuardError);
    return e;
  }
  throw new Error("loaded");
}

Deno.test("hostile corpus: every module-level fixture is refused at load with its kind, limit and reason", async () => {
  const names = await hostileNames(MODULE_LEVEL_PREFIXES);
  assert(names.length >= 30, `corpus has ${names.length} module-level fixtures`);
  const loaded: string[] = [];
  for (const name of names) {
    const want = REFUSALS[name];
    const load = loadGuardModule(await hostileBytes(name), { name });
    if (want === undefined) {
      await load;
      loaded.push(name);
      continue;
    }
    const e = await refusal(load);
    assertEquals(e.kind, want.kind, `${name}: ${e.message}`);
    assertEquals(e.limit, want.limit, `${name}: ${e.message}`);
    assertStringIncludes(e.message, `guard '${name}': `);
    assertStringIncludes(e.message, want.text, name);
    if (want.check === "validated") {
      assert(/(invalid|malformed) WebAssembly module: |not supported/.test(e.message), e.message);
    }
  }
  assertEquals(loaded, ["mem_multi_grow", "table_grow_bomb"], "only the capped fixtures load");
});

Deno.test("mem_multi_grow: memory maxima are clamped to the cap over all memories; usage shows every memory", async () => {
  const bytes = await hostileBytes("mem_multi_grow");
  const { report } = prepareGuard(bytes);
  assertEquals(report.caps.memories.length, 17);
  assertEquals(report.caps.memoryPages, 512, "the maxima add up to the cap");
  // Declared maxima are honoured in index order until the budget is spent.
  assertEquals(report.caps.memories.map((m) => m.max), [128, 369, ...Array(15).fill(1)]);
  const guard = await loadGuardModule(bytes, { name: "mem_multi_grow" });
  const s = guard.open(ctx());
  await s.labelAgent("{}");
  const e = await refusal(s.labelResource("{}"));
  assertEquals(e.kind, "trap", e.message);
  const u = s.usage();
  assertEquals([u.memories, u.totalMemoryPages], [17, 512]);
  assertLessOrEqual(u.totalMemoryPages, guard.limits.maxMemoryPages);
});

Deno.test("table_grow_bomb: table maxima are clamped to maxTableEntries over all tables; usage counts entries", async () => {
  const bytes = await hostileBytes("table_grow_bomb");
  const { report } = prepareGuard(bytes);
  assertEquals(report.caps.tables.map((t) => t.max), [99_997, 1, 1, 1]);
  const mod = new WebAssembly.Module(prepareGuard(bytes).bytes);
  const exported = WebAssembly.Module.exports(mod).map((e) => e.name);
  for (let i = 0; i < 4; i++) assert(exported.includes(tableExportName(i)), tableExportName(i));
  assert(exported.includes(memoryExportName(0)));
  const guard = await loadGuardModule(bytes, { name: "table_grow_bomb" });
  const s = guard.open(ctx());
  await s.labelAgent("{}");
  const e = await refusal(s.labelResource("{}"));
  assert(e.kind === "trap" || e.kind === "fuel", e.message);
  const u = s.usage();
  assertEquals(u.tables, 4);
  assertLessOrEqual(u.tableEntries, 100_000);
});

Deno.test("splitBudget: minimums first, declared maxima in index order, the rest to the first unbounded", () => {
  assertEquals(splitBudget([{ min: 2, max: null }], 512), [512]);
  assertEquals(splitBudget([{ min: 2, max: 64 }], 512), [64]);
  assertEquals(splitBudget([{ min: 1, max: null }, { min: 1, max: 3 }], 512), [509, 3]);
  assertEquals(splitBudget([{ min: 1, max: null }, { min: 1, max: null }], 10), [9, 1]);
  assertEquals(splitBudget([{ min: 300, max: null }, { min: 300, max: null }], 512), -88);
  assertEquals(splitBudget([], 512), []);
});

Deno.test("shape limits: functions, globals, data bytes and element segments each name their limit", () => {
  const cases: [string, Record<string, number>, string][] = [
    [`(memory 1) (func) (func) ${STUBS}`, { maxFunctions: 4 }, "5 functions, above maxFunctions 4"],
    [
      `(memory 1) (global i32 (i32.const 0)) (global i32 (i32.const 0)) ${STUBS}`,
      { maxGlobals: 1 },
      "2 globals",
    ],
    [`(memory 1) (data "abcdef") (data "gh") ${STUBS}`, { maxDataBytes: 7 }, "8 bytes of data segments"],
    [`(memory 1) (table 4 funcref) (elem (i32.const 0) 0) (elem (i32.const 1) 1) ${STUBS}`, {
      maxElementSegments: 1,
    }, "2 element segments"],
  ];
  for (const [body, caps, text] of cases) {
    const bytes = wat(`(module ${body})`);
    const e = (() => {
      try {
        prepareGuard(bytes, { caps });
      } catch (e) {
        return e as GuardError;
      }
      throw new Error(`accepted with ${JSON.stringify(caps)}`);
    })();
    assertEquals([e.kind, e.limit], ["abi", Object.keys(caps)[0]]);
    assertStringIncludes(e.message, text);
    prepareGuard(bytes); // the defaults are generous
  }
});

Deno.test("a table's declared maximum is clamped, so table.grow past the cap returns -1 inside the guard", () => {
  const bytes = wat(`(module (memory (export "memory") 1) (table $t 1 funcref)
    (func (export "grow") (param i32) (result i32) (table.grow $t (ref.null func) (local.get 0))) ${STUBS})`);
  const { bytes: out } = prepareGuard(bytes, { caps: { maxTableEntries: 10 }, fuel: false });
  const grow = instantiate(out).exports.grow as (n: number) => number;
  assertEquals([grow(20), grow(9), grow(1)], [-1, 1, -1]);
  const e = (() => {
    try {
      return prepareGuard(wat(`(module (memory 1) (table 11 funcref) ${STUBS})`), {
        caps: { maxTableEntries: 10 },
      });
    } catch (e) {
      return e as GuardError;
    }
  })() as GuardError;
  assertEquals([e.kind, e.limit], ["memory", "maxTableEntries"]);
});

Deno.test("marks: a forged, stale or wide-cap mark never makes a compiled module trusted", async () => {
  const good = prepareGuard(wat(`(module (memory (export "memory") 1) ${STUBS})`));
  const record = preparedRecord(good.bytes);
  for (const name of ["mark_forged", "mark_stale_v1", "mark_wide_caps"]) {
    const module = new WebAssembly.Module(await hostileBytes(name));
    assertEquals(inspectGuard(await hostileBytes(name)).reserved !== null, true, name);
    const noRecord = await refusal(loadGuardModule(module, { name }));
    assertStringIncludes(noRecord.message, "trusted only with the record");
    const other = await refusal(loadGuardModule(module, { name, prepared: record }));
    assertStringIncludes(other.message, "differs from the one the build recorded");
  }
  // A record whose mark text matches a forged module's section is still checked: v1 is stale.
  const stale = new WebAssembly.Module(await hostileBytes("mark_stale_v1"));
  assertEquals(readPreparedMark(stale), null, "version 1 marks do not parse");
  const text = new TextDecoder().decode(
    WebAssembly.Module.customSections(stale, "mcp_edge_guard.prepared")[0],
  );
  const e = await refusal(loadGuardModule(stale, { prepared: { mark: text, preparedSha256: "" } }));
  assertStringIncludes(e.message, "not one this version writes");
  // Even a record that vouches for the forged mark's text cannot make the unmetered loop run.
  const forged = new WebAssembly.Module(await hostileBytes("mark_forged"));
  const forgedText = new TextDecoder().decode(
    WebAssembly.Module.customSections(forged, "mcp_edge_guard.prepared")[0],
  );
  const f = await refusal(loadGuardModule(forged, { prepared: { mark: forgedText, preparedSha256: "" } }));
  assertStringIncludes(f.message, "carries a fuel mark but imports no fuel check");
  // A wide-caps mark that a record vouches for is still held to the limits.
  const wide = new WebAssembly.Module(await hostileBytes("mark_wide_caps"));
  const wideText = new TextDecoder().decode(
    WebAssembly.Module.customSections(wide, "mcp_edge_guard.prepared")[0],
  );
  const w = await refusal(loadGuardModule(wide, { prepared: { mark: wideText, preparedSha256: "" } }));
  assertEquals(w.limit, "maxMemoryPages");
  assertStringIncludes(w.message, "maxMemoryPages=65536, above limits.maxMemoryPages=512");
});

Deno.test("the real guards still load: the demo guard passes every check with room to spare", async () => {
  const demo = await Deno.readFile(new URL("../../guards/demo/demo-guard.wasm", import.meta.url));
  const info = inspectGuard(demo);
  assertEquals([info.invalid, info.abiError, info.capsError, info.reserved], [null, null, null, null]);
  await loadGuardModule(demo, { name: "demo" });
});

Deno.test("every .wasm in node_modules passes validation and the default caps", async () => {
  const found: string[] = [];
  const walk = async (dir: URL) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isSymlink) continue;
      if (e.isDirectory) await walk(new URL(`${e.name}/`, dir));
      else if (e.name.endsWith(".wasm")) found.push(new URL(e.name, dir).pathname);
    }
  };
  await walk(new URL("../../node_modules/", import.meta.url));
  assert(found.length > 0);
  for (const file of found) {
    const info = inspectGuard(await Deno.readFile(file));
    assertEquals([info.invalid, info.capsError, info.reserved], [null, null, null], file);
  }
});
