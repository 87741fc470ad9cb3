/**
 * Cold start benchmark: what a guard costs before the first request, and what each concurrent
 * request's instance costs in memory.
 *
 * 1. Per guard size: prepare (our binary rewrite), compile of the prepared module, and the first
 *    open + label_agent (instantiation, plus V8's lazy compilation of the functions it touches). Guards:
 *    the demo guard (AssemblyScript), synthetic guards of ~1 MB and ~4 MB generated here (many
 *    reachable functions), and, compile only, real `.wasm` files found in node_modules (they are not
 *    guards, so the preparer refuses them by design).
 * 2. Memory per concurrent instance: N demo guard sessions held open after label_agent; the rss and
 *    `external` deltas of `Deno.memoryUsage()` divided by N, with the default output buffer (4 MiB,
 *    the reference's) and with a 64 KiB first output buffer, and how many fit in a 128 MiB isolate.
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc bench/coldstart_bench.ts
 * BENCH_QUICK=1 deno run -A bench/coldstart_bench.ts
 * ```
 * Raw samples: bench/results/coldstart.json.
 *
 * @module
 */
import wabtInit from "wabt";
import type { GuardContext, GuardSession } from "../src/difc/guard.ts";
import { buildLabelAgentPayload } from "../src/difc/payload.ts";
import { WasmGuard } from "../src/guard/host.ts";
import { prepareGuard } from "../src/guard/prepare.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../src/main.ts";
import { type BenchOptions, type BenchReport, finish, fmt, isQuick, median, type Table } from "./lib.ts";

const SORT_GUARD = new URL("../test/fixtures/wat/bench/sort_guard.wat", import.meta.url);
const NODE_MODULES = new URL("../node_modules/", import.meta.url);
/** A Cloudflare Workers isolate's memory limit. */
const WORKERS_ISOLATE_BYTES = 128 * 1024 * 1024;
/** Synthetic guard targets, bytes. */
const SYNTHETIC_SIZES = [1_000_000, 4_000_000];
/** Bytes of one generated filler function (measured on the generator below; used to size guards). */
const FILLER_BYTES_ESTIMATE = 50;
/** The smaller first output buffer compared against the default. */
const SMALL_OUTPUT_BYTES = 64 * 1024;
/** Files whose sizes differ by less than this are taken for builds of the same library. */
const SAME_LIBRARY_BYTES = 64;
/** node_modules folders searched for real .wasm files (bounded walk). */
const MAX_WASM_FILES = 4;

interface Plan {
  /** Repetitions of prepare/compile per guard. */
  reps: number;
  /** Concurrent sessions held for the memory measurement. */
  instances: number;
  /** Synthetic sizes measured. */
  sizes: number[];
}
const FULL: Plan = { reps: 5, instances: 200, sizes: SYNTHETIC_SIZES };
const QUICK: Plan = { reps: 1, instances: 10, sizes: [SYNTHETIC_SIZES[0] / 10] };

const ctx = (): GuardContext => ({
  signal: new AbortController().signal,
  backend: () => Promise.reject(new Error("no backend")),
  log: () => {},
});

type Wabt = Awaited<ReturnType<typeof wabtInit>>;

function watToWasm(wabt: Wabt, name: string, text: string): Uint8Array {
  const m = wabt.parseWat(name, text);
  try {
    return new Uint8Array(m.toBinary({}).buffer);
  } finally {
    m.destroy();
  }
}

/** The sort guard plus `count` distinct arithmetic functions, all reachable through a table. */
function syntheticGuard(wabt: Wabt, base: string, count: number): Uint8Array {
  const fns: string[] = [];
  for (let i = 0; i < count; i++) {
    fns.push(
      `(func $f${i} (param $a i32) (param $b i32) (result i32) (local $i i32)
  (loop $l
    (local.set $a (i32.add (i32.mul (local.get $a) (i32.const ${i * 2 + 3})) (local.get $b)))
    (local.set $b (i32.xor (i32.rotl (local.get $b) (i32.const ${i % 31 + 1})) (local.get $a)))
    (local.set $a (i32.sub (local.get $a) (i32.shr_u (local.get $b) (i32.const ${i % 7 + 1}))))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $l (i32.lt_u (local.get $i) (i32.const ${i % 13 + 2}))))
  (i32.add (local.get $a) (i32.const ${i})))`,
    );
  }
  const table = `(table ${count} funcref) (elem (i32.const 0) ${fns.map((_, i) => `$f${i}`).join(" ")})`;
  return watToWasm(wabt, "synthetic.wat", base.replace(/\)\s*$/, `\n${table}\n${fns.join("\n")}\n)`));
}

/** Up to MAX_WASM_FILES .wasm files under node_modules, largest first. */
async function nodeModulesWasm(): Promise<{ name: string; bytes: Uint8Array }[]> {
  const found: { name: string; size: number; url: URL }[] = [];
  const walk = async (dir: URL, depth: number) => {
    if (depth > 6) return;
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return;
    }
    for (const e of entries) {
      const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
      if (e.isDirectory && !e.name.startsWith(".")) await walk(url, depth + 1);
      else if (e.isFile && e.name.endsWith(".wasm")) {
        found.push({
          name: url.href.slice(NODE_MODULES.href.length),
          size: (await Deno.stat(url)).size,
          url,
        });
      }
    }
  };
  await walk(NODE_MODULES, 0);
  // One file per content size (the same library is often shipped several times).
  const sizes: number[] = [];
  const unique = found.sort((a, b) => b.size - a.size).filter((f) => {
    if (sizes.some((s) => Math.abs(s - f.size) < SAME_LIBRARY_BYTES)) return false;
    sizes.push(f.size);
    return true;
  });
  return await Promise.all(
    unique.slice(0, MAX_WASM_FILES).map(async (f) => ({ name: f.name, bytes: await Deno.readFile(f.url) })),
  );
}

interface GuardTiming {
  name: string;
  bytes: number;
  preparedBytes: number;
  prepareMs: number[];
  compileMs: number[];
  firstCallMs: number[];
}

async function timeGuard(
  name: string,
  bytes: Uint8Array,
  reps: number,
  agentInput: string,
): Promise<GuardTiming> {
  const out: GuardTiming = {
    name,
    bytes: bytes.length,
    preparedBytes: 0,
    prepareMs: [],
    compileMs: [],
    firstCallMs: [],
  };
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    const prepared = prepareGuard(bytes).bytes;
    const t1 = performance.now();
    const module = await WebAssembly.compile(prepared);
    const t2 = performance.now();
    const guard = new WasmGuard(module, { name });
    const s = guard.open(ctx());
    await s.labelAgent(agentInput).catch(() => ""); // the synthetic guards answer 0; demo needs its policy
    s.close();
    const t3 = performance.now();
    out.preparedBytes = prepared.length;
    out.prepareMs.push(t1 - t0);
    out.compileMs.push(t2 - t1);
    out.firstCallMs.push(t3 - t2);
  }
  return out;
}

/** Holds `n` sessions after label_agent; memory deltas per instance. */
async function memoryPerInstance(
  guard: WasmGuard,
  n: number,
  agentInput: string,
): Promise<
  { rssPerInstance: number; externalPerInstance: number; heapPerInstance: number; wasmPages: number }
> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = Deno.memoryUsage();
  const held: GuardSession[] = [];
  for (let i = 0; i < n; i++) {
    const s = guard.open(ctx());
    await s.labelAgent(agentInput);
    held.push(s);
  }
  gc?.();
  const after = Deno.memoryUsage();
  const wasmPages = held[0].usage().memoryPages;
  for (const s of held) s.close();
  return {
    rssPerInstance: (after.rss - before.rss) / n,
    externalPerInstance: (after.external - before.external) / n,
    heapPerInstance: (after.heapUsed - before.heapUsed) / n,
    wasmPages,
  };
}

const mib = (b: number) => `${fmt(b / 1048576, 2)} MiB`;

/** Runs the cold start benchmark; prints tables, writes bench/results/coldstart.json. */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const plan = isQuick(opts) ? QUICK : FULL;
  const wabt = await wabtInit();
  const agentInput = buildLabelAgentPayload(DEMO_POLICY).json;
  const demoBytes = await Deno.readFile(DEMO_GUARD_URL);
  const sortText = await Deno.readTextFile(SORT_GUARD);

  const guards: { name: string; bytes: Uint8Array }[] = [{
    name: "demo guard (AssemblyScript)",
    bytes: demoBytes,
  }];
  for (const size of plan.sizes) {
    const count = Math.round(size / FILLER_BYTES_ESTIMATE);
    guards.push({ name: `synthetic, ${count} functions`, bytes: syntheticGuard(wabt, sortText, count) });
  }
  const timings: GuardTiming[] = [];
  for (const g of guards) timings.push(await timeGuard(g.name, g.bytes, plan.reps, agentInput));

  const real = await nodeModulesWasm();
  const realCompile: { name: string; bytes: number; compileMs: number[] }[] = [];
  for (const r of real) {
    const xs: number[] = [];
    for (let i = 0; i < plan.reps; i++) {
      const t0 = performance.now();
      await WebAssembly.compile(r.bytes as Uint8Array<ArrayBuffer>);
      xs.push(performance.now() - t0);
    }
    realCompile.push({ name: r.name, bytes: r.bytes.length, compileMs: xs });
  }

  const demoModule = await WebAssembly.compile(prepareGuard(demoBytes).bytes);
  const mem = [
    { label: "default limits (first output buffer 4 MiB)", limits: {} },
    {
      label: `first output buffer ${SMALL_OUTPUT_BYTES / 1024} KiB`,
      limits: { initialOutputBytes: SMALL_OUTPUT_BYTES },
    },
  ];
  const memResults = [];
  for (const m of mem) {
    // The call memo and the instance pool off: every session must make its instance to be measured.
    const guard = new WasmGuard(demoModule, {
      name: "demo",
      limits: { ...m.limits, callMemoBytes: 0, idleInstances: 0 },
    });
    memResults.push({ ...m, ...await memoryPerInstance(guard, plan.instances, agentInput) });
  }

  const tables: Table[] = [
    {
      title: `prepare + compile per guard (median of ${plan.reps})`,
      header: [
        "guard",
        "size",
        "prepared",
        "prepare ms",
        "compile ms",
        "first open+label_agent ms",
        "total ms",
      ],
      rows: [
        ...timings.map((t) => [
          t.name,
          `${fmt(t.bytes / 1024, 0)} KiB`,
          `${fmt(t.preparedBytes / 1024, 0)} KiB`,
          fmt(median(t.prepareMs)),
          fmt(median(t.compileMs)),
          fmt(median(t.firstCallMs)),
          fmt(median(t.prepareMs) + median(t.compileMs) + median(t.firstCallMs)),
        ]),
        ...realCompile.map((r) => [
          `node_modules/${r.name} (not a guard: compile only)`,
          `${fmt(r.bytes / 1024, 0)} KiB`,
          "-",
          "-",
          fmt(median(r.compileMs)),
          "-",
          "-",
        ]),
      ],
    },
    {
      title: `memory per concurrent demo guard instance (${plan.instances} sessions held after label_agent; ${
        "gc" in globalThis
          ? "gc() before each reading"
          : "NO gc(): run with --v8-flags=--expose-gc for stable deltas"
      })`,
      header: [
        "variant",
        "wasm memory",
        "rss / instance",
        "external / instance",
        "JS heap / instance",
        "fit in 128 MiB",
      ],
      rows: memResults.map((m) => {
        const per = Math.max(m.externalPerInstance, m.wasmPages * 65536);
        return [
          m.label,
          mib(m.wasmPages * 65536),
          mib(m.rssPerInstance),
          mib(m.externalPerInstance),
          `${fmt(m.heapPerInstance / 1024, 1)} KiB`,
          per > 0 ? `${Math.floor(WORKERS_ISOLATE_BYTES / per)}` : "-",
        ];
      }),
    },
  ];
  return await finish("coldstart", opts, tables, [], {
    plan,
    guards: timings,
    nodeModulesCompile: realCompile,
    memory: memResults,
    workersIsolateBytes: WORKERS_ISOLATE_BYTES,
  });
}

if (import.meta.main) await run();
