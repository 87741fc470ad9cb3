/**
 * Guard host benchmark (part of `deno task bench`): side by side in one run,
 * 1. fresh instance + label_agent + label_resource per request, small and large guard;
 * 2. metered vs unmetered on a compute-heavy guard (target: ≤ 10 % overhead);
 * 3. prepare time per 100 KB of guard;
 * 4. abort latency of a spinning guard after its signal fires (target: ≤ 10 ms), and the latency of
 *    a concurrent request meanwhile.
 * Prints a table; raw samples go to bench/results/guard.json.
 *
 * @module
 */
import wabtInit from "wabt";
import type { GuardContext } from "../src/difc/guard.ts";
import { loadGuardModule, WasmGuard } from "../src/guard/host.ts";
import { prepareGuard } from "../src/guard/prepare.ts";
import { resultsDirFor } from "./lib.ts";

const FIXTURES = new URL("../test/fixtures/wat/host/", import.meta.url);
/** Filler functions in the synthetic large guard (each a small loop): roughly 150 KB of code. */
const LARGE_GUARD_FUNCTIONS = 3000;
const REQUESTS = 300;
const COMPUTE_RUNS = 7;
const ABORT_RUNS = 10;

const wabt = await wabtInit();

function compileWat(name: string, text: string): Uint8Array<ArrayBuffer> {
  const m = wabt.parseWat(name, text, { bulk_memory: true });
  try {
    return new Uint8Array(m.toBinary({}).buffer);
  } finally {
    m.destroy();
  }
}

async function fixture(name: string): Promise<Uint8Array<ArrayBuffer>> {
  return compileWat(name, await Deno.readTextFile(new URL(`${name}.wat`, FIXTURES)));
}

/** echo_alloc plus many filler functions reachable through a table, so none is dead code. */
async function largeGuard(): Promise<Uint8Array<ArrayBuffer>> {
  const base = await Deno.readTextFile(new URL("echo_alloc.wat", FIXTURES));
  const fillers: string[] = [];
  for (let i = 0; i < LARGE_GUARD_FUNCTIONS; i++) {
    fillers.push(
      `(func $f${i} (param $n i32) (result i32) (local $i i32) (local $a i32)
        (loop $l (local.set $a (i32.add (i32.mul (local.get $a) (i32.const ${i + 3})) (local.get $i)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
        (i32.xor (local.get $a) (i32.const ${i})))`,
    );
  }
  const table = `(table ${LARGE_GUARD_FUNCTIONS} funcref) (elem (i32.const 0) ${
    Array.from({ length: LARGE_GUARD_FUNCTIONS }, (_, i) => `$f${i}`).join(" ")
  })`;
  const text = base.replace(/\)\s*$/, `\n${table}\n${fillers.join("\n")}\n)`);
  return compileWat("large.wat", text);
}

const ctx = (signal = new AbortController().signal): GuardContext => ({
  signal,
  backend: () => Promise.reject(new Error("no backend")),
  log: () => {},
});

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];

async function perRequest(guard: WasmGuard): Promise<number[]> {
  const policy = '{"allow-only":{"min-integrity":"none","repos":"all"}}';
  const resource = '{"capabilities":{},"tool_args":{"owner":"acme"},"tool_name":"get_file_contents"}';
  const samples: number[] = [];
  for (let i = 0; i < REQUESTS + 20; i++) {
    const t0 = performance.now();
    const s = guard.open(ctx());
    await s.labelAgent(policy);
    await s.labelResource(resource);
    s.close();
    if (i >= 20) samples.push(performance.now() - t0);
  }
  return samples;
}

async function compute(guard: WasmGuard): Promise<number> {
  const t0 = performance.now();
  const s = guard.open(ctx());
  await s.labelAgent("{}");
  return performance.now() - t0;
}

async function abortLatency(
  spin: WasmGuard,
  echo: WasmGuard,
): Promise<{ abortMs: number; concurrentMs: number }> {
  const ac = new AbortController();
  const spinning = spin.open(ctx(ac.signal)).labelAgent("{}").catch(() => performance.now());
  await new Promise((r) => setTimeout(r, 20));
  const c0 = performance.now();
  const other = echo.open(ctx());
  await other.labelAgent("{}");
  const concurrentMs = performance.now() - c0;
  const a0 = performance.now();
  ac.abort();
  const ended = await spinning;
  return { abortMs: (ended as number) - a0, concurrentMs };
}

/** Runs the guard benchmarks and writes bench/results/guard.json. */
export async function run(): Promise<void> {
  const smallBytes = await fixture("echo_alloc");
  const largeBytes = await largeGuard();
  const small = await loadGuardModule(smallBytes, { name: "small" });
  const large = await loadGuardModule(largeBytes, { name: "large" });

  const smallSamples = await perRequest(small);
  const largeSamples = await perRequest(large);

  const computeBytes = await fixture("compute");
  const metered = new WasmGuard(await WebAssembly.compile(prepareGuard(computeBytes).bytes), {
    name: "metered",
  });
  const unmetered = new WasmGuard(
    await WebAssembly.compile(prepareGuard(computeBytes, { fuel: false }).bytes),
    { name: "unmetered" },
  );
  await compute(metered);
  await compute(unmetered);
  const meteredMs: number[] = [];
  const unmeteredMs: number[] = [];
  for (let i = 0; i < COMPUTE_RUNS; i++) {
    meteredMs.push(await compute(metered));
    unmeteredMs.push(await compute(unmetered));
  }

  const prepareMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    prepareGuard(largeBytes);
    prepareMs.push(performance.now() - t0);
  }
  const prepareMsPer100KB = median(prepareMs) / (largeBytes.length / 100_000);

  const spin = await loadGuardModule(await fixture("spin"), { name: "spin" });
  const aborts: Array<{ abortMs: number; concurrentMs: number }> = [];
  for (let i = 0; i < ABORT_RUNS; i++) aborts.push(await abortLatency(spin, small));

  const overhead = median(meteredMs) / median(unmeteredMs) - 1;
  const rows: Array<[string, string]> = [
    [`small guard (${smallBytes.length} B): open + label_agent + label_resource`, fmtMs(smallSamples)],
    [`large guard (${largeBytes.length} B): open + label_agent + label_resource`, fmtMs(largeSamples)],
    ["compute guard 50M iterations, unmetered", `median ${median(unmeteredMs).toFixed(1)} ms`],
    ["compute guard 50M iterations, metered", `median ${median(meteredMs).toFixed(1)} ms`],
    ["fuel metering overhead (target <= 10 %)", `${(overhead * 100).toFixed(1)} %`],
    [
      `prepare (${largeBytes.length} B module)`,
      `${median(prepareMs).toFixed(1)} ms = ${prepareMsPer100KB.toFixed(1)} ms / 100 KB`,
    ],
    [
      "abort latency after signal (target <= 10 ms)",
      `median ${median(aborts.map((a) => a.abortMs)).toFixed(2)} ms, max ${
        Math.max(...aborts.map((a) => a.abortMs)).toFixed(2)
      } ms`,
    ],
    [
      "concurrent request while a guard spins",
      `median ${median(aborts.map((a) => a.concurrentMs)).toFixed(2)} ms, max ${
        Math.max(...aborts.map((a) => a.concurrentMs)).toFixed(2)
      } ms`,
    ],
  ];
  const width = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);

  // No quick mode of its own, but a quick run of the suite must not replace the committed file.
  const dir = resultsDirFor();
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    new URL("guard.json", dir),
    JSON.stringify(
      {
        date: new Date().toISOString(),
        runtime: `deno ${Deno.version.deno}, v8 ${Deno.version.v8}`,
        smallGuardBytes: smallBytes.length,
        largeGuardBytes: largeBytes.length,
        perRequestMs: { small: smallSamples, large: largeSamples },
        computeMs: { metered: meteredMs, unmetered: unmeteredMs, overhead },
        prepareMs: { samples: prepareMs, perHundredKB: prepareMsPer100KB },
        abort: aborts,
      },
      null,
      1,
    ),
  );
}

function fmtMs(xs: number[]): string {
  return `median ${(median(xs) * 1000).toFixed(0)} µs, p90 ${(p90(xs) * 1000).toFixed(0)} µs`;
}

if (import.meta.main) await run();
