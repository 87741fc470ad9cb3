/**
 * Workers deployment numbers, in one run:
 * - bundle size of `dist/worker.js` (without guards), raw and gzipped;
 * - workerd cold start: new Miniflare (workerd process) → first answered guarded `tools/call`
 *   through the official SDK client (initialize + call), with the demo guard;
 * - guarded `tools/call` latency (demo guard, `list_issues`), workerd and Deno side by side,
 *   interleaved call by call against the same upstream;
 * - the shared `call_backend` cache (`MCP_EDGE_GUARD_CACHE_SECRET`): the first guarded call of a new
 *   isolate (new workerd process, Miniflare's Cache API persisted in a state directory) when another
 *   isolate already left the `get_repo` answer there, against the same call with no secret (the
 *   isolate asks the upstream), interleaved, with the upstream answering at once and after 20 ms
 *   (a remote API is farther than that from an edge location). Locally the Cache API is Miniflare's
 *   own cache service over loopback, not a data center's cache: the row shows what the shared tier
 *   costs against an upstream round trip here, not Cloudflare's latencies.
 *
 * `deno task bench` runs it; alone: `deno run -A bench/workers_bench.ts`.
 *
 * @module
 */
import { Miniflare } from "miniflare";
import { buildWorker } from "../scripts/build.ts";
import { createDemoUpstream } from "../src/demo/upstream.ts";
import { API_KEY, connect, demoConfig } from "../test/workers/suite.ts";
import { denoTarget, miniflareOptions, workerdTarget } from "../test/workers/targets.ts";
import type { Target } from "../test/workers/suite.ts";
import { resultsDirFor } from "./lib.ts";

/** Cold starts measured (each a fresh workerd process). */
const COLD_STARTS = 5;
/** New isolates per variant and upstream latency in the shared-cache rows. */
const SHARED_ISOLATES = 7;
/** Upstream latencies of the shared-cache rows, ms. */
const SHARED_LATENCIES = [0, 20];
const SHARED_SECRET = "workers-bench-shared-cache-secret-0123456789";
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
      ...demoConfig(`http://127.0.0.1:${server.addr.port}/mcp`),
      gateway: { apiKey: API_KEY, port: 8080, hostname: "127.0.0.1" },
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
    const shared = [];
    for (const latencyMs of SHARED_LATENCIES) shared.push(await sharedCacheRow(dir, latencyMs));
    const result = {
      bundle: { rawBytes: built.bundleBytes, gzipBytes: built.bundleGzipBytes },
      guards: built.guards,
      coldStartMs: { readyMedian: stats(ready).median, firstGuardedCall: stats(cold), samples: cold },
      guardedCallMs: latency,
      calls: CALLS,
      sharedCache: shared,
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
    console.log(
      `first guarded tools/call of a new isolate (n=${SHARED_ISOLATES} each, interleaved), median ms:`,
    );
    console.log("upstream latency   shared hit   no shared cache   hit / none");
    for (const r of shared) {
      console.log(
        `${`${r.upstreamLatencyMs} ms`.padEnd(18)} ${fmt(r.hit.median).padStart(10)} ${
          fmt(r.none.median).padStart(17)
        } ${(r.hit.median / r.none.median).toFixed(2).padStart(12)}`,
      );
    }
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

/**
 * The shared-cache row at one upstream latency: new isolates with the secret after one isolate left
 * the answer in the state directory's Cache API, against new isolates without the secret.
 */
async function sharedCacheRow(dir: string, latencyMs: number) {
  const upstream = createDemoUpstream({ latencyMs });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, upstream.fetch);
  try {
    const config = demoConfig(`http://127.0.0.1:${server.addr.port}/mcp`);
    const distDir = `${dir}/shared-${latencyMs}/dist`, stateDir = `${dir}/shared-${latencyMs}/state`;
    const built = await buildWorker({ config, outDir: new URL(`file://${distDir}/`) });
    const files = built.guards.map((g) => g.file);
    await Deno.mkdir(stateDir, { recursive: true });
    /** A new isolate's first guarded call, in ms (initialize excluded), and the upstream get_repo count. */
    const firstCall = async (vars: Record<string, string>) => {
      const mf = new Miniflare(miniflareOptions(distDir, files, config, stateDir, vars));
      try {
        const client = await connect((await mf.ready).href, "demo", "bench-shared");
        const before = upstream.stats().get_repo ?? 0;
        const t0 = performance.now();
        await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
        const ms = performance.now() - t0;
        await client.close();
        return { ms, askedUpstream: (upstream.stats().get_repo ?? 0) > before };
      } finally {
        await mf.dispose();
      }
    };
    const withSecret = { MCP_EDGE_GUARD_CACHE_SECRET: SHARED_SECRET };
    await firstCall(withSecret); // leaves the entry
    const hit: number[] = [], none: number[] = [];
    for (let i = 0; i < SHARED_ISOLATES; i++) {
      const order = i % 2 === 0 ? [true, false] : [false, true];
      for (const shared of order) {
        const r = await firstCall(shared ? withSecret : {});
        if (r.askedUpstream === shared) {
          throw new Error(`shared=${shared}: upstream asked = ${r.askedUpstream}`);
        }
        (shared ? hit : none).push(r.ms);
      }
    }
    return { upstreamLatencyMs: latencyMs, hit: stats(hit), none: stats(none), samples: { hit, none } };
  } finally {
    await upstream.close();
    await server.shutdown();
  }
}

if (import.meta.main) await run();
