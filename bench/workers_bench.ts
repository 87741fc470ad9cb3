/**
 * Workers deployment numbers, in one run:
 * - bundle size of `dist/worker.js` (without guards), raw and gzipped;
 * - workerd cold start: new Miniflare (workerd process) → first answered guarded `tools/call`
 *   through the official SDK client (initialize + call), with the demo guard;
 * - guarded `tools/call` latency (demo guard, `list_issues`), workerd and Deno side by side,
 *   interleaved call by call against the same upstream.
 *
 * `deno task bench` runs it; alone: `deno run -A bench/workers_bench.ts`.
 *
 * @module
 */
import { Miniflare } from "miniflare";
import { buildWorker } from "../scripts/build.ts";
import { createDemoUpstream } from "../src/demo/upstream.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../src/main.ts";
import { connect } from "../test/workers/suite.ts";
import { denoTarget, miniflareOptions, workerdTarget } from "../test/workers/targets.ts";
import type { Target } from "../test/workers/suite.ts";
import { resultsDirFor } from "./lib.ts";

/** Cold starts measured (each a fresh workerd process). */
const COLD_STARTS = 5;
/** Guarded calls per target, after warm-up. */
const CALLS = 200;
const WARMUP = 20;

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function stats(samples: number[]): { median: number; p95: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return { median: quantile(s, 0.5), p95: quantile(s, 0.95), mean };
}

const fmt = (n: number) => n.toFixed(2);

/** Runs the benchmark and writes bench/results/workers.json. */
export async function run(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "workers_bench_" });
  const upstream = createDemoUpstream();
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, upstream.fetch);
  const targets: Target[] = [];
  try {
    const config = {
      mcpServers: {
        demo: {
          type: "http",
          url: `http://127.0.0.1:${server.addr.port}/mcp`,
          guard: "demo",
          "guard-policies": DEMO_POLICY,
        },
      },
      guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
      gateway: { apiKey: "workers-suite-key", port: 8080, hostname: "127.0.0.1" },
    };
    const distDir = `${dir}/dist`;
    const built = await buildWorker({ config, outDir: new URL(`file://${distDir}/`) });
    const guardFiles = built.guards.map((g) => g.file);

    const cold: number[] = [];
    const ready: number[] = [];
    for (let i = 0; i < COLD_STARTS; i++) {
      const t0 = performance.now();
      const mf = new Miniflare(miniflareOptions(distDir, guardFiles, config));
      try {
        const url = (await mf.ready).href;
        ready.push(performance.now() - t0);
        const client = await connect(url, "demo", "bench-cold");
        await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
        cold.push(performance.now() - t0);
        await client.close();
      } finally {
        await mf.dispose();
      }
    }

    const factories = [workerdTarget(), denoTarget()];
    const clients = [];
    for (const f of factories) {
      await f.prepare(config, `${dir}/${f.name}`);
      await Deno.mkdir(`${dir}/${f.name}-state`, { recursive: true });
      const t = await f.start(`${dir}/${f.name}-state`);
      targets.push(t);
      clients.push(await connect(t.url, "demo", "bench-agent"));
    }
    const samples: number[][] = factories.map(() => []);
    for (let i = 0; i < WARMUP + CALLS; i++) {
      for (let k = 0; k < clients.length; k++) {
        const t0 = performance.now();
        await clients[k].callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
        if (i >= WARMUP) samples[k].push(performance.now() - t0);
      }
    }
    await Promise.all(clients.map((c) => c.close()));

    const latency = Object.fromEntries(factories.map((f, k) => [f.name, stats(samples[k])]));
    const result = {
      bundle: { rawBytes: built.bundleBytes, gzipBytes: built.bundleGzipBytes },
      guards: built.guards,
      coldStartMs: { readyMedian: stats(ready).median, firstGuardedCall: stats(cold), samples: cold },
      guardedCallMs: latency,
      calls: CALLS,
    };
    console.log(
      `bundle dist/worker.js: ${(built.bundleBytes / 1024).toFixed(1)} KiB raw, ` +
        `${(built.bundleGzipBytes / 1024).toFixed(1)} KiB gzipped (without guards)`,
    );
    console.log(
      `workerd cold start (n=${COLD_STARTS}): Miniflare ready median ${fmt(stats(ready).median)} ms; ` +
        `to first answered guarded tools/call median ${fmt(stats(cold).median)} ms`,
    );
    console.log(`guarded tools/call list_issues, ${CALLS} calls each, interleaved (ms):`);
    console.log("target    median     p95    mean");
    for (const [name, s] of Object.entries(latency)) {
      console.log(
        `${name.padEnd(8)} ${fmt(s.median).padStart(7)} ${fmt(s.p95).padStart(7)} ${fmt(s.mean).padStart(7)}`,
      );
    }
    const ratio = latency.workerd.median / latency.deno.median;
    console.log(`workerd / deno median ratio: ${ratio.toFixed(2)}`);
    // No quick mode of its own, but a quick run of the suite must not replace the committed file.
    const resultsDir = resultsDirFor();
    await Deno.mkdir(resultsDir, { recursive: true });
    await Deno.writeTextFile(
      new URL("workers.json", resultsDir),
      JSON.stringify({ ...result, ratioMedian: ratio }, null, 2) + "\n",
    );
  } finally {
    for (const t of targets) await t.stop();
    await upstream.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await run();
