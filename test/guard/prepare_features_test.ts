/**
 * Every WebAssembly feature real toolchains emit survives preparation: each fixture is compiled by
 * wabt, prepared, validated, instantiated and run; results must equal the original's, also when the
 * fuel counter runs out at every single fuel point, and the cached-counter and global fuel shapes
 * reach the check equally often and leave the same counter.
 */
import { assert, assertEquals, assertGreater } from "@std/assert";
import wabtInit from "wabt";
import {
  FUEL_GLOBAL_EXPORT,
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  prepareGuard,
  readPreparedMark,
} from "../../src/guard/prepare.ts";
import { START_EXPORT } from "../../src/guard/wasm/host_signatures.ts";
import { WABT_FEATURES } from "../helpers/hostile_corpus.ts";
import { instantiate } from "../helpers/instantiate.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/prepare/", import.meta.url);

/** The three label exports, appended so a feature fixture passes the guard ABI check. */
const LABEL_STUBS = ["label_agent", "label_resource", "label_response"]
  .map((n) => `(func (export "${n}") (param i32 i32 i32 i32) (result i32) (i32.const 0))`)
  .join("\n");

function compileFixture(name: string): Uint8Array {
  const text = Deno.readTextFileSync(new URL(name, FIXTURES));
  const end = text.lastIndexOf(")");
  const guard = `${text.slice(0, end)}\n${LABEL_STUBS}\n)`;
  const mod = wabt.parseWat(name, guard, WABT_FEATURES);
  try {
    mod.resolveNames();
    // wabt's typings omit it, but validate() takes the feature set too (defaults reject e.g. shared memory).
    (mod as unknown as { validate(features: object): void }).validate(WABT_FEATURES);
    return mod.toBinary({ write_debug_names: true }).buffer;
  } finally {
    mod.destroy();
  }
}

const HOST = { env: { call_backend: (x: number) => x + 100 } };

interface Run {
  result: unknown;
  checks: number;
  /** Counter after the run. */
  final: number;
}

function runOriginal(bytes: Uint8Array): unknown {
  const inst = instantiate(bytes as Uint8Array<ArrayBuffer>, HOST);
  return (inst.exports.run as () => unknown)();
}

/** Runs the prepared module; the fuel check refills `refill` units (1 = check at every point). */
function runPrepared(bytes: Uint8Array, refill: number): Run {
  let checks = 0;
  const box: { fuel?: WebAssembly.Global } = {};
  const imports = {
    ...HOST,
    [FUEL_IMPORT_MODULE]: {
      [FUEL_IMPORT_NAME]: () => {
        checks++;
        if (box.fuel) box.fuel.value = refill;
      },
    },
  };
  const inst = instantiate(bytes as Uint8Array<ArrayBuffer>, imports);
  const fuel = box.fuel = inst.exports[FUEL_GLOBAL_EXPORT] as WebAssembly.Global;
  fuel.value = 0;
  // The preparer exports the start function instead of leaving it to the engine (the host runs it).
  (inst.exports[START_EXPORT] as (() => void) | undefined)?.();
  const result = (inst.exports.run as () => unknown)();
  return { result, checks, final: fuel.value as number };
}

const CASES: [string, unknown][] = [
  ["sign_ext.wat", (-1 + -2147483648) | 0],
  ["sat_trunc.wat", 2147483647],
  ["bulk_memory.wat", 0x04090201],
  ["multi_value.wat", 20],
  ["ref_types.wat", 2 + 101 + 1 + 1],
  ["simd.wat", 14],
  ["tail_call.wat", 5000050000 | 0],
  ["eh_legacy.wat", 5 + 100],
  ["eh_new.wat", 9 + 100 + 1000],
  ["atomics.wat", 20],
  ["multi_memory.wat", 77 + 1 + 2],
];

for (const [file, expected] of CASES) {
  Deno.test(`prepare keeps behaviour: ${file}`, () => {
    const original = compileFixture(file);
    const { bytes, report } = prepareGuard(original);
    assert(WebAssembly.validate(bytes), `${file}: prepared module must validate`);
    assert(readPreparedMark(new WebAssembly.Module(bytes)) !== null);
    const want = runOriginal(original);
    if (expected !== undefined) assertEquals(want, expected, `${file}: fixture's own result`);
    const fast = runPrepared(bytes, 1_000_000);
    assertEquals(fast.result, want);
    const starved = runPrepared(bytes, 1);
    assertEquals(starved.result, want);
    assertGreater(starved.checks, 0, "a counter refilled to 1 must reach the check");
    assertGreater(report.fuelPoints, report.functions - 1);
    // The global shape everywhere spends the same units at the same points.
    const global = prepareGuard(original, { fuelScheme: "global" });
    assertEquals(global.report.fuelPoints, report.fuelPoints);
    assertEquals(runPrepared(global.bytes, 1_000_000), fast);
    assertEquals(runPrepared(global.bytes, 1), starved);
  });
}
