/**
 * Gateway overhead benchmark: a guarded `tools/call` (`list_issues {repo: "acme/web"}`) through the
 * gateway vs the same call straight to the demo upstream, over loopback, side by side.
 *
 * Setup (fairness): the demo upstream and the gateway run together in ONE child process, exactly as
 * `deno task start` runs the embedded demo; the load generator runs in this process. A separate
 * client process keeps the client's JSON and HTTP work off the server's event loop. On a 2-core VM
 * the client and the server each get about one core; the direct path then measures the upstream
 * alone in the same process that, for the gateway path, also runs the gateway, so both paths pay the
 * same client cost and differ only by the gateway. Logging stays on as in production (the JSON line
 * sink at its default level, info: the decision records of every call to stderr, discarded).
 *
 * A baseline target, `bare`: a minimal Hono pass-through proxy in the same child process (same
 * runtime, same upstream; no auth, no guard, no MCP parsing: method, headers and body streamed to the
 * upstream, its response streamed back) — the practical floor for a JS proxy here. The gateway's own
 * cost is reported against it (targets: no-backend guard ≥ 0.7× its throughput at c=64 and ≤ 1.3× its
 * p50 at c=1; demo guard ≥ 0.5× its throughput at c=64).
 *
 * CPU per call: the child reports its process CPU time (`/cpu`, user + system) before and after each
 * round; the round's CPU over its calls is the server-side CPU per call of that target (upstream
 * included: the `direct` row is the upstream's own share).
 *
 * Three guarded targets per run:
 * - `demo`: the demo guard (`guards/demo`), which asks the upstream `get_repo` once per request
 *   (`call_backend`), so a guarded call is TWO sequential upstream tools/calls plus the guard (the
 *   benchmark turns the `call_backend` cache off for it, `backendCacheTtl: 0`: every call pays both,
 *   and the call memo can answer only `label_agent`);
 * - `demo-cached`: the same guard as configured by default (cache on): after the first call the
 *   `get_repo` answer is cached and the call memo answers all three guard calls (the same call
 *   repeats), so no instance runs;
 * - `no-backend`: `test/fixtures/wat/bench/no_backend_guard.wat` (filter mode, empty labels, a read,
 *   no fine-grained response labels, no `call_backend`); with the default limits the call memo
 *   answers its calls after the first, so the call prices the gateway's own path. Set
 *   `GATEWAY_BENCH_LIMITS='{"callMemoBytes":0}'` to make every call run the guard.
 *
 * The upstream answers every tools/call after a simulated latency of 0, 5 and 20 ms
 * (`createDemoUpstream({ latencyMs })`; one server child per latency). 0 ms is the worst case for the
 * ratios (an upstream answering from memory); with latency L the demo guard's path needs two
 * sequential round trips, so its p50 ratio tends to 2 as L grows.
 *
 * Client: our own bounded HTTP client over `fetch` (one HTTP/1.1 connection per worker, a timeout
 * and a response size cap per request) driving raw JSON-RPC POSTs: each worker runs `initialize`
 * and `notifications/initialized` once on its own MCP session, then `tools/call` in a closed loop.
 * Concurrency 1, 8 and 64; the rounds of all targets are interleaved (the order reverses every
 * round) to cancel drift. Targets (demo guard, every latency): p50 ratio ≤ 1.25 at every concurrency,
 * throughput ratio ≥ 0.8 at c=64.
 *
 * ```sh
 * deno run -A bench/gateway_bench.ts
 * BENCH_QUICK=1 deno run -A bench/gateway_bench.ts
 * deno run -A bench/gateway_bench.ts --serve --latency-ms 20   # the server child alone
 * ```
 * Raw samples: bench/results/gateway.json.
 *
 * @module
 */
import wabtInit from "wabt";
import { Hono } from "hono";
import { cpuUsage } from "node:process";
import { parseConfig } from "../src/config.ts";
import { createDemoUpstream } from "../src/demo/upstream.ts";
import { DEMO_POLICY, demoConfig, startGateway, stderrLines } from "../src/main.ts";
import { jsonLogSink } from "../src/log.ts";
import {
  type BenchOptions,
  type BenchReport,
  closedLoop,
  finish,
  fmt,
  isQuick,
  type LoopResult,
  median,
  ratio,
  startTaskV8Flags,
  summarize,
  target,
} from "./lib.ts";

/** Concurrency levels measured. */
const CONCURRENCY = [1, 8, 64];
/** Simulated upstream latencies (ms per tools/call): in-memory, a near region, a remote API. */
const LATENCIES_MS = [0, 5, 20];
/** The guard that never calls the backend. */
const NO_BACKEND_GUARD = new URL("../test/fixtures/wat/bench/no_backend_guard.wat", import.meta.url);
/**
 * Gateway server ids of the guarded targets: the demo guard with the `call_backend` cache off (every
 * call pays its get_repo: the worst case), the demo guard as configured by default (cache on, so
 * after the first call the call memo answers all three guard calls), and a guard that never calls
 * back (the same call repeats: the memo answers it after the first too).
 */
const DEMO_SERVER = "demo";
const DEMO_CACHED_SERVER = "democached";
const NO_BACKEND_SERVER = "nobackend";
/**
 * Guard limits of the `--serve` child's gateway, as JSON (e.g. `{"callMemoBytes":0}` to measure every
 * guard call run); the parent passes its environment on.
 */
const LIMITS_ENV = "GATEWAY_BENCH_LIMITS";
/**
 * Server ids of two more gateway targets of the `--serve` child, without a wasm guard (the gateway's
 * own cost, for profiling): the built-in noop guard (transparent relay) and the built-in write-sink
 * guard (the guarded path: channel table, three guard calls, decision log). Call them under an agent
 * id of their own (the demo guard's labels would deny a noop read-write).
 */
const NOOP_SERVER = "noop";
const SINK_SERVER = "sink";
/** Targets. */
const P50_RATIO_TARGET = 1.25;
const THROUGHPUT_RATIO_TARGET = 0.8;
/** Targets against the bare proxy (issue 12): no-backend guard, demo guard. */
const BARE_TPUT_TARGET_NO_BACKEND = 0.7;
const BARE_P50_TARGET_NO_BACKEND = 1.3;
const BARE_TPUT_TARGET_DEMO = 0.5;
/** A request that takes longer than this is a failure (the bench must never hang). */
const REQUEST_TIMEOUT_MS = 10_000;
/** Largest response body the client reads. */
const MAX_RESPONSE_BYTES = 1 << 20;
/** How long the server process gets to print its addresses. */
const SERVER_START_TIMEOUT_MS = 30_000;
/** The protocol version the client speaks. */
const PROTOCOL_VERSION = "2025-06-18";
/** API key of the benchmark gateway (loopback only). */
const API_KEY = "bench-key";
const AGENT_ID = "bench-agent";

interface Plan {
  roundMs: number;
  rounds: number;
  warmupMs: number;
}
const FULL: Plan = { roundMs: 3000, rounds: 4, warmupMs: 1500 };
const QUICK: Plan = { roundMs: 200, rounds: 1, warmupMs: 100 };
/** Raw latencies are stored rounded to this many decimals of a ms (1 µs). */
const RAW_DECIMALS = 3;

// ---------------------------------------------------------------------------------------------
// Server side (child process): the embedded demo, upstream and gateway in one process.

/** Compiles the no-backend WAT guard into `<dir>/no_backend_guard.wasm`; returns its file URL. */
async function writeNoBackendGuard(dir: string): Promise<URL> {
  const wabt = await wabtInit();
  const m = wabt.parseWat("no_backend_guard.wat", await Deno.readTextFile(NO_BACKEND_GUARD), {
    bulk_memory: true,
  });
  try {
    const url = new URL(`file://${dir}/no_backend_guard.wasm`);
    await Deno.writeFile(url, new Uint8Array(m.toBinary({}).buffer));
    return url;
  } finally {
    m.destroy();
  }
}

/** The `--latency-ms N` argument of the server child (default 0). */
function latencyArg(args: readonly string[]): number {
  const i = args.indexOf("--latency-ms");
  return i < 0 ? 0 : Number(args[i + 1]);
}

async function serve(latencyMs: number): Promise<void> {
  const ac = new AbortController();
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, () => ac.abort());
  // Every target's 64 connections hold an upstream session (the gateway's through it): room for all.
  const upstream = createDemoUpstream({ latencyMs, maxSessions: 1024 });
  // `/stats` lets the client check how many upstream tools/calls a guarded call made; `/cpu` is the
  // process's CPU time in µs.
  const up = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} },
    (req) =>
      req.url.endsWith("/stats")
        ? Response.json(upstream.stats())
        : req.url.endsWith("/cpu")
        ? Response.json(cpuUsage())
        : upstream.fetch(req),
  );
  const upstreamUrl = `http://127.0.0.1:${up.addr.port}/mcp`;
  const bare = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} },
    bareProxy(upstreamUrl).fetch,
  );
  // The config wants a real port; 0 (any free port) is set after validation, as `--port 0` does.
  const raw = demoConfig(upstreamUrl, 8080, "127.0.0.1") as {
    mcpServers: Record<string, unknown>;
    guards: Record<string, unknown>;
    gateway: Record<string, unknown>;
  };
  raw.gateway.apiKey = API_KEY;
  const dir = await Deno.makeTempDir({ prefix: "gateway-bench-" });
  let gatewayFinished: Promise<void>;
  try {
    raw.guards[NO_BACKEND_SERVER] = { type: "wasm", path: (await writeNoBackendGuard(dir)).href };
    // The default configuration, then one where every demo-guard call pays its get_repo.
    raw.mcpServers[DEMO_CACHED_SERVER] = { ...raw.mcpServers[DEMO_SERVER] as Record<string, unknown> };
    (raw.mcpServers[DEMO_SERVER] as Record<string, unknown>).backendCacheTtl = 0;
    const limits = Deno.env.get(LIMITS_ENV);
    if (limits) (raw as Record<string, unknown>).limits = JSON.parse(limits);
    raw.mcpServers[NO_BACKEND_SERVER] = {
      type: "http",
      url: upstreamUrl,
      guard: NO_BACKEND_SERVER,
      "guard-policies": DEMO_POLICY,
    };
    raw.mcpServers[NOOP_SERVER] = { type: "http", url: upstreamUrl };
    raw.mcpServers[SINK_SERVER] = {
      type: "http",
      url: upstreamUrl,
      "guard-policies": { "write-sink": { accept: ["*"] } },
    };
    const config = parseConfig(raw, {});
    config.gateway.port = 0;
    const { server } = await startGateway(config, {
      configBase: new URL(import.meta.url),
      env: {},
      signal: ac.signal,
      // The production sink at its default level (info): guard debug lines are not built.
      log: jsonLogSink(stderrLines(), "info"),
    });
    gatewayFinished = server.finished;
    const base = `http://127.0.0.1:${server.addr.port}/mcp`;
    console.log(JSON.stringify({
      direct: upstreamUrl,
      bare: `http://127.0.0.1:${bare.addr.port}/mcp`,
      stats: `http://127.0.0.1:${up.addr.port}/stats`,
      cpu: `http://127.0.0.1:${up.addr.port}/cpu`,
      demo: `${base}/${DEMO_SERVER}`,
      demoCached: `${base}/${DEMO_CACHED_SERVER}`,
      noBackend: `${base}/${NO_BACKEND_SERVER}`,
      noop: `${base}/${NOOP_SERVER}`,
      sink: `${base}/${SINK_SERVER}`,
    }));
  } finally {
    // Guards are loaded (compiled) at startup; the file is not needed afterwards.
    await Deno.remove(dir, { recursive: true });
  }
  await Promise.all([up.finished, bare.finished, gatewayFinished]);
  await upstream.close();
}

/**
 * The baseline: a minimal Hono pass-through proxy to `upstreamUrl` (one route, method, headers and
 * body streamed through, the upstream's response returned as is).
 */
function bareProxy(upstreamUrl: string): Hono {
  const app = new Hono();
  app.all("/mcp", (c) => {
    const req = c.req.raw;
    return fetch(upstreamUrl, { method: req.method, headers: req.headers, body: req.body });
  });
  return app;
}

/** The server child process and its URLs. */
interface ServerUrls {
  direct: string;
  bare: string;
  stats: string;
  cpu: string;
  demo: string;
  demoCached: string;
  noBackend: string;
  noop: string;
  sink: string;
}
interface ServerProcess extends ServerUrls {
  stop(): Promise<void>;
}

async function startServer(latencyMs: number): Promise<ServerProcess> {
  const v8Flags = await startTaskV8Flags();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-no-legacy-abort",
      // The V8 settings of `deno task start`: both the gateway and the bare proxy run under them.
      ...(v8Flags === null ? [] : [v8Flags]),
      new URL(import.meta.url).pathname,
      "--serve",
      "--latency-ms",
      String(latencyMs),
    ],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 5000);
    await child.status;
    clearTimeout(timer);
  };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const timeout = setTimeout(() => reader.cancel(new Error("server start timeout")), SERVER_START_TIMEOUT_MS);
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) {
        throw new Error(
          `benchmark server exited before printing its addresses (run bench/gateway_bench.ts --serve to see why): ${text}`,
        );
      }
      text += value;
    }
  } catch (e) {
    clearTimeout(timeout);
    await stop();
    throw e;
  }
  clearTimeout(timeout);
  // Keep draining stdout so the child never blocks on a full pipe.
  const drain = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  const urls = JSON.parse(text.slice(0, text.indexOf("\n"))) as ServerUrls;
  return {
    ...urls,
    async stop() {
      await stop();
      await drain.catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Client side: a bounded JSON-RPC over HTTP client, one connection and one MCP session per worker.

/** A JSON-RPC error or transport failure seen by the client. */
class BenchClientError extends Error {
  override name = "BenchClientError";
}

/** One worker's connection and MCP session to one target. */
class McpConnection {
  readonly #url: string;
  readonly #headers: Record<string, string>;
  readonly #client = Deno.createHttpClient({ poolMaxIdlePerHost: 1, http2: false, http1: true });
  #session: string | undefined;
  #id = 0;

  constructor(url: string, headers: Record<string, string>) {
    this.#url = url;
    this.#headers = headers;
  }

  async open(): Promise<void> {
    await this.request("initialize", {
      protocolVersion: PROTOCOL_VERSION,
      capabilities: {},
      clientInfo: { name: "mcp-edge-guard-bench", version: "0" },
    });
    await this.#post({ jsonrpc: "2.0", method: "notifications/initialized" });
  }

  /** One JSON-RPC request; resolves to its `result`, rejects on an error or transport failure. */
  async request(method: string, params: unknown): Promise<Record<string, unknown>> {
    const id = ++this.#id;
    const text = await this.#post({ jsonrpc: "2.0", id, method, params });
    const msg = parseRpcResponse(text, id);
    if (msg.error) throw new BenchClientError(`${method}: JSON-RPC error ${JSON.stringify(msg.error)}`);
    return msg.result as Record<string, unknown>;
  }

  async #post(body: unknown): Promise<string> {
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": PROTOCOL_VERSION,
      ...this.#headers,
    };
    if (this.#session) headers["mcp-session-id"] = this.#session;
    const res = await fetch(this.#url, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      client: this.#client,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const sid = res.headers.get("mcp-session-id");
    if (sid) this.#session = sid;
    const text = await readBounded(res);
    if (!res.ok) throw new BenchClientError(`HTTP ${res.status} from ${this.#url}: ${text.slice(0, 200)}`);
    return text;
  }

  close(): void {
    this.#client.close();
  }
}

async function readBounded(res: Response): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_RESPONSE_BYTES) {
      await reader.cancel();
      throw new BenchClientError(`response larger than ${MAX_RESPONSE_BYTES} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return new TextDecoder().decode(all);
}

/** The JSON-RPC response with `id` from a JSON body or an SSE stream of `data:` lines. */
function parseRpcResponse(text: string, id: number): { result?: unknown; error?: unknown } {
  const candidates = text.trimStart().startsWith("{")
    ? [text]
    : text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim());
  for (const c of candidates) {
    if (!c) continue;
    const msg = JSON.parse(c) as { id?: unknown; result?: unknown; error?: unknown };
    if (msg.id === id) return msg;
  }
  throw new BenchClientError(`no JSON-RPC response with id ${id} in: ${text.slice(0, 200)}`);
}

const CALL = { name: "list_issues", arguments: { repo: "acme/web" } };

/** Upstream tools/call counts per tool name, from the server child's `/stats`. */
async function upstreamStats(url: string): Promise<Record<string, number>> {
  const res = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  return await res.json() as Record<string, number>;
}

/**
 * Checks one call of a target: the demo guard filters #2 (a `[Filtered]` notice) and keeps #1 and
 * #3; the direct call and the no-backend guard return all three. Also checks how many upstream
 * tools/calls the call caused (`get_repo` once for the demo guard, never for the others).
 */
async function sanityCheck(t: Target, statsUrl: string): Promise<void> {
  const before = await upstreamStats(statsUrl);
  const result = await t.conns[0].request("tools/call", CALL);
  const after = await upstreamStats(statsUrl);
  const text = JSON.stringify(result);
  const filtered = text.includes("[Filtered]") && !text.includes("Leaked token in logs");
  const complete = !text.includes("[Filtered]") && text.includes("Leaked token in logs");
  const demo = t.kind === "demo" || t.kind === "demo-cached";
  if (!(demo ? filtered : complete) || !text.includes("Rotate the staging keys")) {
    throw new BenchClientError(`unexpected ${t.name} list_issues result: ${text.slice(0, 300)}`);
  }
  const delta = (tool: string) => (after[tool] ?? 0) - (before[tool] ?? 0);
  const expectedGetRepo = demo ? 1 : 0; // the cached target's first call fills its cache
  if (delta("list_issues") !== 1 || delta("get_repo") !== expectedGetRepo) {
    throw new BenchClientError(
      `${t.name}: one call made ${delta("list_issues")} list_issues and ${delta("get_repo")} get_repo ` +
        `upstream calls (expected 1 and ${expectedGetRepo})`,
    );
  }
}

/** What a target is: the upstream itself, the bare proxy, or the gateway with one of the two guards. */
type TargetKind = "direct" | "bare" | "demo" | "demo-cached" | "no-backend";

/** A pool of open connections per target, grown on demand and reused by every round. */
class Target {
  readonly conns: McpConnection[] = [];
  constructor(
    readonly name: string,
    readonly kind: TargetKind,
    readonly url: string,
    readonly headers: Record<string, string>,
  ) {}

  async ensure(n: number): Promise<void> {
    while (this.conns.length < n) {
      const c = new McpConnection(this.url, this.headers);
      this.conns.push(c);
      await c.open();
    }
  }

  round(concurrency: number, ms: number): Promise<LoopResult> {
    return closedLoop(concurrency, ms, async (w) => {
      await this.conns[w].request("tools/call", CALL);
    });
  }

  close(): void {
    for (const c of this.conns) c.close();
  }
}

/** Rounds per target at one concurrency. */
type Rounds = Record<TargetKind, LoopResult[]>;
/** Server CPU ms per call, one value per round. */
type CpuRounds = Record<TargetKind, number[]>;
const KINDS: readonly TargetKind[] = ["direct", "bare", "demo", "demo-cached", "no-backend"];

/** The server child's CPU time so far, in ms. */
async function serverCpuMs(url: string): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const u = await res.json() as { user: number; system: number };
  return (u.user + u.system) / 1000;
}

/** Runs every concurrency against one server child whose upstream answers after `latencyMs`. */
async function measureLatency(
  latencyMs: number,
  plan: Plan,
): Promise<{ rounds: Record<number, Rounds>; cpu: Record<number, CpuRounds> }> {
  const server = await startServer(latencyMs);
  const gatewayHeaders = { authorization: `Bearer ${API_KEY}`, "x-agent-id": AGENT_ID };
  const targets = [
    new Target("direct", "direct", server.direct, {}),
    new Target("bare proxy", "bare", server.bare, {}),
    new Target("gateway (demo guard)", "demo", server.demo, gatewayHeaders),
    new Target("gateway (demo guard, default cache)", "demo-cached", server.demoCached, gatewayHeaders),
    new Target("gateway (no-backend guard)", "no-backend", server.noBackend, gatewayHeaders),
  ];
  const results: Record<number, Rounds> = {};
  const cpu: Record<number, CpuRounds> = {};
  try {
    for (const t of targets) {
      await t.ensure(1);
      await sanityCheck(t, server.stats);
    }
    for (const c of CONCURRENCY) {
      for (const t of targets) await t.ensure(c);
      for (const t of targets) await t.round(c, plan.warmupMs);
      results[c] = { direct: [], bare: [], demo: [], "demo-cached": [], "no-backend": [] };
      cpu[c] = { direct: [], bare: [], demo: [], "demo-cached": [], "no-backend": [] };
      for (let r = 0; r < plan.rounds; r++) {
        // The order reverses every round, so linear drift hits every target alike.
        const order = r % 2 === 0 ? targets : [...targets].reverse();
        for (const t of order) {
          const cpu0 = await serverCpuMs(server.cpu);
          const res = await t.round(c, plan.roundMs);
          cpu[c][t.kind].push(((await serverCpuMs(server.cpu)) - cpu0) / Math.max(1, res.ops));
          if (res.errors) {
            throw new BenchClientError(
              `${t.name} c=${c} latency ${latencyMs} ms: ${res.errors} failed: ${res.firstError}`,
            );
          }
          results[c][t.kind].push(res);
        }
      }
    }
  } finally {
    for (const t of targets) t.close();
    await server.stop();
  }
  return { rounds: results, cpu };
}

const GUARD_LABEL: Record<Exclude<TargetKind, "direct" | "bare">, string> = {
  demo: "demo (get_repo)",
  "demo-cached": "demo (cache on)",
  "no-backend": "no-backend",
};

/** Runs the gateway overhead benchmark; prints tables, writes bench/results/gateway.json. */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const plan = isQuick(opts) ? QUICK : FULL;
  const results: Record<number, Record<number, Rounds>> = {};
  const cpu: Record<number, Record<number, CpuRounds>> = {};
  for (const l of LATENCIES_MS) ({ rounds: results[l], cpu: cpu[l] } = await measureLatency(l, plan));

  const tput = (rs: LoopResult[]) => median(rs.map((r) => r.ops / (r.elapsedMs / 1000)));
  const lat = (rs: LoopResult[]) => summarize(rs.flatMap((r) => r.latencies));
  const rows: string[][] = [];
  const bareRows: string[][] = [];
  const targets = [];
  const bareTargets: ReturnType<typeof target>[] = [];
  const summary: Record<string, unknown> = {};
  for (const l of LATENCIES_MS) {
    for (const c of CONCURRENCY) {
      const rs = results[l][c];
      const d = lat(rs.direct), dt = tput(rs.direct);
      const entry: Record<string, unknown> = { direct: { ...d, rps: dt } };
      for (const kind of ["demo", "demo-cached", "no-backend"] as const) {
        const g = lat(rs[kind]), gt = tput(rs[kind]);
        const p50r = ratio(g.p50, d.p50), p99r = ratio(g.p99, d.p99), tr = ratio(gt, dt);
        rows.push([
          String(l),
          String(c),
          GUARD_LABEL[kind],
          fmt(d.p50),
          fmt(g.p50),
          `${fmt(p50r)}x`,
          fmt(g.p50 - d.p50),
          fmt(d.p99),
          fmt(g.p99),
          `${fmt(p99r)}x`,
          fmt(dt, 0),
          fmt(gt, 0),
          `${fmt(tr)}x`,
        ]);
        entry[kind] = { ...g, rps: gt, p50Ratio: p50r, p99Ratio: p99r, rpsRatio: tr };
        if (kind === "demo") {
          targets.push(
            target(`p50 ratio gateway/direct, upstream ${l} ms, c=${c}`, p50r, "<=", P50_RATIO_TARGET, "x"),
          );
          if (c === 64) {
            targets.push(
              target(
                `throughput ratio gateway/direct, upstream ${l} ms, c=${c}`,
                tr,
                ">=",
                THROUGHPUT_RATIO_TARGET,
                "x",
              ),
            );
          }
        }
      }
      // Against the bare proxy, and the server CPU per call of every target.
      const b = lat(rs.bare), bt = tput(rs.bare);
      const cpuOf = (k: TargetKind) => median(cpu[l][c][k]);
      const nb = lat(rs["no-backend"]), nbt = tput(rs["no-backend"]), dmt = tput(rs.demo);
      const vsBare = {
        noBackendP50: ratio(nb.p50, b.p50),
        noBackendRps: ratio(nbt, bt),
        demoP50: ratio(lat(rs.demo).p50, b.p50),
        demoRps: ratio(dmt, bt),
        demoCachedRps: ratio(tput(rs["demo-cached"]), bt),
      };
      bareRows.push([
        String(l),
        String(c),
        fmt(b.p50),
        fmt(bt, 0),
        `${fmt(vsBare.noBackendP50)}x`,
        `${fmt(vsBare.noBackendRps)}x`,
        `${fmt(vsBare.demoP50)}x`,
        `${fmt(vsBare.demoRps)}x`,
        `${fmt(vsBare.demoCachedRps)}x`,
        ...KINDS.map((k) => fmt(cpuOf(k) * 1000, 0)),
      ]);
      entry.bare = { ...b, rps: bt };
      entry.vsBare = vsBare;
      entry.cpuMsPerCall = Object.fromEntries(KINDS.map((k) => [k, cpuOf(k)]));
      const vs = (what: string, v: number, op: "<=" | ">=", limit: number) =>
        bareTargets.push(target(`${what}, upstream ${l} ms, c=${c}`, v, op, limit, "x"));
      if (c === 1) {
        vs("p50 ratio gateway (no-backend)/bare", vsBare.noBackendP50, "<=", BARE_P50_TARGET_NO_BACKEND);
      }
      if (c === 64) {
        vs(
          "throughput ratio gateway (no-backend)/bare",
          vsBare.noBackendRps,
          ">=",
          BARE_TPUT_TARGET_NO_BACKEND,
        );
        vs("throughput ratio gateway (demo)/bare", vsBare.demoRps, ">=", BARE_TPUT_TARGET_DEMO);
        vs(
          "throughput ratio gateway (demo, default cache)/bare",
          vsBare.demoCachedRps,
          ">=",
          BARE_TPUT_TARGET_DEMO,
        );
      }
      summary[`${l}ms/c${c}`] = entry;
    }
  }
  targets.push(...bareTargets);
  const tables = [{
    title: `guarded tools/call list_issues acme/web, gateway vs direct, upstream latency 0/5/20 ms ` +
      `(${plan.rounds} interleaved rounds of ${plan.roundMs} ms per target; latency in ms, throughput in ` +
      `calls/s; targets apply to the demo guard)`,
    header: [
      "upstream ms",
      "c",
      "guard",
      "direct p50",
      "gateway p50",
      "p50 ratio",
      "p50 added",
      "direct p99",
      "gateway p99",
      "p99 ratio",
      "direct rps",
      "gateway rps",
      "rps ratio",
    ],
    rows,
  }, {
    title: "the same rounds against the bare Hono pass-through proxy (ratios gateway / bare), and the " +
      "server process's CPU per call in µs (median round; upstream included)",
    header: [
      "upstream ms",
      "c",
      "bare p50",
      "bare rps",
      "no-backend p50 ratio",
      "no-backend rps ratio",
      "demo p50 ratio",
      "demo rps ratio",
      "demo (cache on) rps ratio",
      ...KINDS.map((k) => `CPU µs ${k}`),
    ],
    rows: bareRows,
  }];
  const rawRounds = (rs: LoopResult[]) =>
    rs.map((r) => ({
      ops: r.ops,
      elapsedMs: r.elapsedMs,
      latenciesMs: r.latencies.map((x) => Number(x.toFixed(RAW_DECIMALS))),
    }));
  return await finish("gateway", opts, tables, targets, {
    plan,
    setup: "upstream + gateway in one child process per upstream latency; client in the parent; one " +
      "connection and session per worker and target; demo guard = 2 upstream calls per guarded call " +
      "(call_backend cache off), no-backend guard = 1; bare = minimal Hono pass-through proxy",
    summary,
    cpuMsPerCallRounds: cpu,
    rounds: Object.fromEntries(
      LATENCIES_MS.map((l) => [
        `${l}ms`,
        Object.fromEntries(
          CONCURRENCY.map((c) => [c, Object.fromEntries(KINDS.map((k) => [k, rawRounds(results[l][c][k])]))]),
        ),
      ]),
    ),
  });
}

if (import.meta.main) {
  if (Deno.args[0] === "--serve") await serve(latencyArg(Deno.args));
  else await run();
}
