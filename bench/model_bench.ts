/**
 * Instance model benchmark: our fresh-instance-per-request model against gh-aw-mcpg's model (ONE
 * guard instance per server, every call serialized behind a mutex, `label_agent` run once), both on
 * the real demo guard through the real host, in one process, side by side.
 *
 * 1. Throughput at concurrency 32 when the guard's `label_resource` (list_issues acme/web) makes one
 *    `call_backend` (get_repo) that takes 20 ms: ours / serialized, when every call names a new
 *    repository (target ≥ 20×) and when the same one repeats (target ≥ 1×). Ours goes through the
 *    gateway's `call_backend` cache (src/mcp/backend_cache.ts, one per isolate, default TTL) exactly as
 *    app.ts wires it; the reference keeps its answers in its one long-lived instance.
 * 2. The per-call price of a fresh instance: (open + label_agent + label_resource + label_response)
 *    vs (label_resource + label_response on a reused instance), with an instant backend, interleaved
 *    sample by sample. Reported as a share of the fresh call's guard time (target ≤ 25 %), for the
 *    demo guard and the Rust guard (guards/rust-bench), with new memories (as before the pool), pooled
 *    memories (the default) and pooled + label-agent snapshots, all in one interleaved run
 *    (`bench/instancing.ts`).
 *
 * ```sh
 * deno run -A bench/model_bench.ts          # full
 * BENCH_QUICK=1 deno run -A bench/model_bench.ts
 * ```
 * Raw samples: bench/results/model.json.
 *
 * @module
 */
import type { BackendCaller, GuardContext, GuardSession } from "../src/difc/guard.ts";
import { buildLabelAgentPayload, canonicalJson } from "../src/difc/payload.ts";
import { DEMO_ISSUES, DEMO_REPOS } from "../src/demo/upstream.ts";
import { loadGuardModule, type WasmGuard } from "../src/guard/host.ts";
import { BackendCache, DEFAULT_BACKEND_CACHE_TTL_MS } from "../src/mcp/backend_cache.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../src/main.ts";
import {
  INSTANCING_VARIANTS,
  type InstancingSummary,
  measureInstancing,
  summarizeInstancing,
  type VariantSummary,
} from "./instancing.ts";
import {
  type BenchOptions,
  type BenchReport,
  closedLoop,
  finish,
  fmt,
  isQuick,
  type LoopResult,
  median,
  Mutex,
  ratio,
  summarize,
  target,
} from "./lib.ts";

/** The concurrency of the throughput comparison (the brief's: a busy agent fleet on one isolate). */
const CONCURRENCY = 32;
/** Latency of the simulated `call_backend` upstream (a GitHub API call is tens of ms). */
const BACKEND_MS = 20;
/** Targets. */
const THROUGHPUT_RATIO_TARGET = 20;
/** Ours / reference when the same repository repeats (the cache makes fresh instances not lose). */
const SAME_REPO_RATIO_TARGET = 1;
const INSTANCING_SHARE_TARGET = 25;
/** The Rust guard of the instancing rows (built by guards/rust-bench/build.sh). */
const RUST_GUARD_URL = new URL("../guards/rust-bench/rust-bench-guard.wasm", import.meta.url);

interface Plan {
  /** Length of one throughput round per model, ms. */
  roundMs: number;
  /** Rounds per model, interleaved ours/serialized. */
  rounds: number;
  /** Interleaved fresh/reused samples of the instancing cost. */
  costSamples: number;
  warmup: number;
}
const FULL: Plan = { roundMs: 4000, rounds: 3, costSamples: 2000, warmup: 200 };
const QUICK: Plan = { roundMs: 600, rounds: 1, costSamples: 150, warmup: 20 };

const toolResult = (value: unknown) => ({
  content: [{ type: "text", text: JSON.stringify(value) }],
  structuredContent: value,
});

/**
 * get_repo after `delayMs` (0 = an already settled promise): the demo data, and every other
 * `acme/…` repository as private (the cache-miss rounds ask for a new one on every call).
 */
function demoBackend(delayMs: number): BackendCaller {
  return (tool, args, signal) => {
    const name = (args as { repo?: string })?.repo ?? "";
    const repo = DEMO_REPOS.find((r) => r.full_name === name) ??
      (name.startsWith("acme/") ? { full_name: name, visibility: "private" } : undefined);
    if (tool !== "get_repo" || !repo) return Promise.reject(new Error(`unexpected backend call ${tool}`));
    const result = toolResult(repo);
    if (delayMs === 0) return Promise.resolve(result);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => resolve(result), delayMs);
      signal.addEventListener("abort", () => {
        clearTimeout(t);
        reject(signal.reason);
      }, { once: true });
    });
  };
}

/**
 * A session context whose `call_backend` goes through a fresh `call_backend` cache, and whose call
 * memo may look into it, as the gateway wires both for one server.
 */
function cachedCtx(backend: BackendCaller): GuardContext {
  const cache = new BackendCache();
  const ttl = DEFAULT_BACKEND_CACHE_TTL_MS;
  return {
    ...ctx(backend),
    backend: (tool, args, signal) =>
      cache.lookup({ serverId: "demo", tool, args }, ttl, (s) => backend(tool, args, s), signal),
    backendPeek: (tool, args) => cache.peek({ serverId: "demo", tool, args }, ttl),
  };
}

const ctx = (backend: BackendCaller): GuardContext => ({
  signal: new AbortController().signal,
  backend,
  log: () => {},
});

/** The inputs the pipeline builds for `list_issues {repo}` under the demo policy. */
function inputs(repo = "acme/web") {
  const args = { repo };
  const items = DEMO_ISSUES["acme/web"];
  return {
    agent: buildLabelAgentPayload(DEMO_POLICY).json,
    resource: canonicalJson({ capabilities: {}, tool_args: args, tool_name: "list_issues" }),
    response: canonicalJson({
      capabilities: {},
      tool_args: args,
      tool_name: "list_issues",
      tool_result: toolResult({ repo, total_count: items.length, items }),
    }),
  };
}

/**
 * A new repository on every call. The demo guard caches visibility for the life of its instance, so
 * with one long-lived instance (the reference model) a repeated repository never reaches the
 * backend again; distinct repositories make every call pay its `call_backend`, the case this
 * benchmark prices. The repeated-repository case is reported alongside.
 */
let repoSeq = 0;
const freshRepo = () => `acme/repo-${++repoSeq}`;

/** Checks once that the guard labels the call as expected and made exactly one backend call. */
async function sanityCheck(guard: WasmGuard, io: ReturnType<typeof inputs>): Promise<void> {
  const s = guard.open(ctx(demoBackend(0)));
  try {
    await s.labelAgent(io.agent);
    const out = await s.labelResource(io.resource);
    if (!out.includes("private:acme/web") || s.usage().backendCalls !== 1) {
      throw new Error(`demo guard did not label list_issues as expected: ${out} (${s.usage().backendCalls})`);
    }
  } finally {
    s.close();
  }
}

/** Runs the instance-model benchmark; prints tables, writes bench/results/model.json. */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const plan = isQuick(opts) ? QUICK : FULL;
  const guard = await loadGuardModule(await Deno.readFile(DEMO_GUARD_URL), { name: "demo" });
  const io = inputs();
  await sanityCheck(guard, io);

  // 1. Throughput at c=32 with a 20 ms call_backend: every call on a new repository (the target), and
  //    the same repository every time (where the shared instance's visibility cache always hits).
  const slow = demoBackend(BACKEND_MS);
  const measure = async (resource: () => string) => {
    const oursCtx = cachedCtx(slow);
    const ours = async () => {
      const s = guard.open(oursCtx);
      try {
        await s.labelAgent(io.agent);
        await s.labelResource(resource());
      } finally {
        s.close();
      }
    };
    const shared: GuardSession = guard.open(ctx(slow));
    await shared.labelAgent(io.agent);
    const mutex = new Mutex();
    const serialized = () => mutex.run(() => shared.labelResource(resource())).then(() => {});
    const oursRounds: LoopResult[] = [];
    const serialRounds: LoopResult[] = [];
    for (let r = 0; r < plan.rounds; r++) {
      // Alternate which model goes first so slow drift of the machine hits both alike.
      const order = r % 2 === 0 ? [ours, serialized] : [serialized, ours];
      for (const fn of order) {
        const res = await closedLoop(CONCURRENCY, plan.roundMs, fn);
        if (res.errors) throw new Error(`model bench: ${res.errors} calls failed: ${res.firstError}`);
        (fn === ours ? oursRounds : serialRounds).push(res);
      }
    }
    shared.close();
    const tput = (rs: LoopResult[]) => median(rs.map((r) => r.ops / (r.elapsedMs / 1000)));
    const lat = (rs: LoopResult[]) => summarize(rs.flatMap((r) => r.latencies));
    return {
      oursRounds,
      serialRounds,
      oursTput: tput(oursRounds),
      serialTput: tput(serialRounds),
      oursLat: lat(oursRounds),
      serialLat: lat(serialRounds),
    };
  };
  const miss = await measure(() => inputs(freshRepo()).resource);
  const hit = await measure(() => io.resource);
  const tputRatio = ratio(miss.oursTput, miss.serialTput);
  const sameRatio = ratio(hit.oursTput, hit.serialTput);
  const oursLat = miss.oursLat;

  // 2. Instancing cost, instant backend, interleaved: demo and Rust guard, snapshots off and on,
  //    against a reused instance. A new repository per call, so every side makes its call_backend.
  const fast = demoBackend(0);
  const rustBytes = await Deno.readFile(RUST_GUARD_URL);
  const costCase = (name: string, bytes: Uint8Array) => {
    let repo = inputs(freshRepo());
    return {
      name,
      bytes,
      backend: fast,
      agent: io.agent,
      resource: () => (repo = inputs(freshRepo())).resource,
      response: () => repo.response,
    };
  };
  const costRaw = await measureInstancing(
    [costCase("demo", await Deno.readFile(DEMO_GUARD_URL)), costCase("rust", rustBytes)],
    plan.costSamples,
    plan.warmup,
  );
  const cost = costRaw.map((c) => summarizeInstancing(c));
  const each = (f: (v: VariantSummary) => string) => cost.flatMap((c) => c.variants.map(f));
  /** The default limits: pooled memories, label-agent snapshots and the call memo. */
  const byDefault = (c: InstancingSummary) => c.variants.find((v) => v.label === "defaults (+ call memo)")!;

  const us = (ms: number) => `${fmt(ms * 1000, 0)} µs`;
  const tables = [
    {
      title: `throughput at concurrency ${CONCURRENCY}, call_backend ${BACKEND_MS} ms (label_agent + ` +
        `label_resource per request; ${plan.rounds} x ${plan.roundMs} ms rounds each, interleaved)`,
      header: ["model", "repositories", "req/s (median round)", "p50 ms", "p99 ms"],
      rows: [
        ...[["a new one per call", miss], ["the same every call", hit]].flatMap(([what, m]) => {
          const r = m as typeof miss;
          return [
            [
              "ours: fresh instance per request (+ call_backend cache)",
              what as string,
              fmt(r.oursTput, 1),
              fmt(r.oursLat.p50),
              fmt(r.oursLat.p99),
            ],
            [
              "reference: one instance, mutex, label_agent once",
              what as string,
              fmt(r.serialTput, 1),
              fmt(r.serialLat.p50),
              fmt(r.serialLat.p99),
            ],
          ];
        }),
        ["ratio ours / reference", "a new one per call", `${fmt(tputRatio, 1)}x`, "", ""],
        [
          "ratio ours / reference",
          "the same every call",
          `${fmt(sameRatio, 2)}x`,
          "",
          "",
        ],
      ],
    },
    {
      title: `per-call instancing cost, instant backend, ${plan.costSamples} interleaved samples (medians; ` +
        `host variants: ${INSTANCING_VARIANTS.map((v) => v.label).join(", ")})`,
      header: ["step", ...cost.flatMap((c) => c.variants.map((v) => `${c.name}: ${v.label}`))],
      rows: [
        ["module bytes", ...costRaw.flatMap((c) => c.fresh.map(() => String(c.moduleBytes)))],
        ["fresh: new instance (open)", ...each((v) => us(v.open))],
        ["fresh: label_agent (restored with snapshots)", ...each((v) => us(v.agent))],
        ["fresh: open + label_agent + label_resource + label_response", ...each((v) => us(v.total))],
        ["reused: label_resource + label_response", ...each((v) => us(v.reused))],
        ["instancing cost (fresh - reused)", ...each((v) => us(v.cost))],
        ["share of the fresh call's guard time", ...each((v) => `${fmt(v.share, 1)} %`)],
        [
          `share of a guarded call with a ${BACKEND_MS} ms backend (p50 above)`,
          ...each((v) => `${fmt(ratio(v.cost, oursLat.p50) * 100, 2)} %`),
        ],
      ],
    },
  ];
  const targets = [
    target(
      `throughput ours / serialized at c=${CONCURRENCY}, a new repository per call`,
      tputRatio,
      ">=",
      THROUGHPUT_RATIO_TARGET,
      "x",
    ),
    target(
      `throughput ours / serialized at c=${CONCURRENCY}, the same repository every call`,
      sameRatio,
      ">=",
      SAME_REPO_RATIO_TARGET,
      "x",
    ),
    ...cost.map((c) =>
      target(
        `instancing cost share of guard time (instant backend, ${c.name} guard, default limits)`,
        byDefault(c).share,
        "<=",
        INSTANCING_SHARE_TARGET,
        " %",
      )
    ),
  ];
  return await finish("model", opts, tables, targets, {
    concurrency: CONCURRENCY,
    backendMs: BACKEND_MS,
    plan,
    throughput: Object.fromEntries([["newRepositoryPerCall", miss], ["sameRepository", hit]].map(([k, m]) => {
      const r = m as typeof miss;
      const rounds = (rs: LoopResult[]) =>
        rs.map((x) => ({ ops: x.ops, elapsedMs: x.elapsedMs, latenciesMs: x.latencies }));
      return [k, { ours: rounds(r.oursRounds), serialized: rounds(r.serialRounds) }];
    })),
    instancing: costRaw,
  });
}

if (import.meta.main) await run();
