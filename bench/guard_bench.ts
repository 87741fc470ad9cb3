/**
 * Guard host benchmark (part of `deno task bench`): side by side in one run,
 * 1. fresh instance + label_agent + label_resource per request, small and large guard;
 * 2. metered vs unmetered on a compute-heavy guard (target: ≤ 10 % overhead);
 * 3. prepare time per 100 KB of guard;
 * 4. abort latency of a spinning guard after its signal fires (target: ≤ 10 ms), and the latency of
 *    a concurrent request meanwhile;
 * 5. the demo guard and the Rust guard (guards/rust-bench): a whole fresh request with new memories
 *    (as before the pool), pooled memories (the default), and pooled + label-agent snapshots, each
 *    against a reused instance of its own module, interleaved (`bench/instancing.ts`; instancing
 *    share target ≤ 25 %).
 * Prints a table; raw samples go to bench/results/guard.json.
 *
 * @module
 */
import wabtInit from "wabt";
import type { GuardContext } from "../src/difc/guard.ts";
import { loadGuardModule, WasmGuard } from "../src/guard/host.ts";
import { prepareGuard } from "../src/guard/prepare.ts";
import { buildLabelAgentPayload, canonicalJson } from "../src/difc/payload.ts";
import { DEMO_ISSUES } from "../src/demo/upstream.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../src/main.ts";
import {
  type InstancingSamples,
  measureInstancing,
  summarizeInstancing,
  type VariantSummary,
} from "./instancing.ts";
import { resultsDirFor } from "./lib.ts";

const FIXTURES = new URL("../test/fixtures/wat/host/", import.meta.url);
/** Filler functions in the synthetic large guard (each a small loop): roughly 150 KB of code. */
const LARGE_GUARD_FUNCTIONS = 3000;
const REQUESTS = 300;
const COMPUTE_RUNS = 7;
const ABORT_RUNS = 10;
const RUST_GUARD_URL = new URL("../guards/rust-bench/rust-bench-guard.wasm", import.meta.url);

/**
 * What a fresh instance's memory costs before any guard code runs: a new `WebAssembly.Memory`, its
 * first written byte, 16 written 4 KiB pages, and the same 16 pages of a memory written before
 * (interleaved). On a VM where each first touch of a page is a costly fault this dominates the
 * price of a fresh instance: every page a fresh instance's data segments, `label_agent` (or the
 * snapshot restore) and the label calls write is faulted in again for each request.
 */
function memoryTouchRows(): { rows: Array<[string, string]>; raw: Record<string, number[]> } {
  const raw: Record<string, number[]> = { create: [], first: [], pages16: [], warm16: [] };
  const warm = new Uint8Array(new WebAssembly.Memory({ initial: 34, maximum: 512 }).buffer);
  const touch = (u: Uint8Array, pages: number) => {
    for (let p = 0; p < pages; p++) u[p * 4096] = 1;
  };
  touch(warm, 16);
  for (let i = 0; i < REQUESTS + 20; i++) {
    const time = (f: () => void) => {
      const t0 = performance.now();
      f();
      return performance.now() - t0;
    };
    const samples = {
      create: time(() => new WebAssembly.Memory({ initial: 34, maximum: 512 })),
      first: time(() =>
        touch(new Uint8Array(new WebAssembly.Memory({ initial: 34, maximum: 512 }).buffer), 1)
      ),
      pages16: time(() =>
        touch(new Uint8Array(new WebAssembly.Memory({ initial: 34, maximum: 512 }).buffer), 16)
      ),
      warm16: time(() => touch(warm, 16)),
    };
    if (i >= 20) { for (const [k, v] of Object.entries(samples)) raw[k].push(v); }
  }
  const us = (xs: number[]) => `median ${(median(xs) * 1000).toFixed(1)} µs`;
  return {
    rows: [
      ["fresh wasm memory (34 pages): create", us(raw.create)],
      ["fresh wasm memory: create + write 1 byte", us(raw.first)],
      ["fresh wasm memory: create + write 16 x 4 KiB pages", us(raw.pages16)],
      ["memory written before: write 16 x 4 KiB pages", us(raw.warm16)],
    ],
    raw,
  };
}

/** Demo and Rust guard, each host variant against its reused instance (instant get_repo backend). */
async function instancingRows(): Promise<{ rows: Array<[string, string]>; raw: InstancingSamples[] }> {
  const items = DEMO_ISSUES["acme/web"];
  let n = 0;
  const io = () => {
    const args = { repo: `acme/repo-${++n}` };
    const body = { repo: args.repo, total_count: items.length, items };
    return {
      resource: canonicalJson({ capabilities: {}, tool_args: args, tool_name: "list_issues" }),
      response: canonicalJson({
        capabilities: {},
        tool_args: args,
        tool_name: "list_issues",
        tool_result: { content: [{ type: "text", text: JSON.stringify(body) }] },
      }),
    };
  };
  const backend = (_tool: string, args: unknown) =>
    Promise.resolve({
      content: [{
        type: "text",
        text: JSON.stringify({ full_name: (args as { repo: string }).repo, visibility: "private" }),
      }],
    });
  const one = (name: string, bytes: Uint8Array) => {
    let cur = io();
    return {
      name,
      bytes,
      backend,
      agent: buildLabelAgentPayload(DEMO_POLICY).json,
      resource: () => (cur = io()).resource,
      response: () => cur.response,
    };
  };
  const raw = await measureInstancing(
    [one("demo", await Deno.readFile(DEMO_GUARD_URL)), one("rust", await Deno.readFile(RUST_GUARD_URL))],
    REQUESTS,
    20,
  );
  const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;
  const rows: Array<[string, string]> = [];
  for (const [i, s] of raw.map((r) => summarizeInstancing(r)).entries()) {
    const label = `${s.name} guard (${raw[i].moduleBytes} B)`;
    const each = (f: (v: VariantSummary) => string) => s.variants.map(f).join(" / ");
    const names = s.variants.map((v) => v.label).join(" / ");
    rows.push(
      [`${label}: fresh request, ${names}`, each((v) => us(v.total))],
      [`${label}: label_agent, ${names}`, each((v) => us(v.agent))],
      [`${label}: reused instance (label_resource + label_response), ${names}`, each((v) => us(v.reused))],
      [`${label}: instancing share, ${names} (target <= 25 %)`, each((v) => `${v.share.toFixed(1)} %`)],
    );
  }
  return { rows, raw };
}

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
  // Rows 1-4 measure label_agent itself (compute, spin and the per-request rows run in it): with
  // label-agent snapshots, the call memo and the instance pool off, so every session runs it on a new
  // instance. Row 5 compares snapshots off and on.
  const noSnapshots = { labelAgentSnapshots: 0, callMemoBytes: 0, idleInstances: 0 };
  const small = await loadGuardModule(smallBytes, { name: "small", limits: noSnapshots });
  const large = await loadGuardModule(largeBytes, { name: "large", limits: noSnapshots });

  const smallSamples = await perRequest(small);
  const largeSamples = await perRequest(large);

  const computeBytes = await fixture("compute");
  const metered = new WasmGuard(await WebAssembly.compile(prepareGuard(computeBytes).bytes), {
    name: "metered",
    limits: noSnapshots,
  });
  const unmetered = new WasmGuard(
    await WebAssembly.compile(prepareGuard(computeBytes, { fuel: false }).bytes),
    { name: "unmetered", limits: noSnapshots },
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

  const spin = await loadGuardModule(await fixture("spin"), { name: "spin", limits: noSnapshots });
  const aborts: Array<{ abortMs: number; concurrentMs: number }> = [];
  for (let i = 0; i < ABORT_RUNS; i++) aborts.push(await abortLatency(spin, small));

  const instancing = await instancingRows();
  const touch = memoryTouchRows();

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
    ...instancing.rows,
    ...touch.rows,
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
        instancing: instancing.raw,
        memoryTouchMs: touch.raw,
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
