/**
 * Gateway overhead benchmark: a guarded `tools/call` (demo guard, `list_issues {repo: "acme/web"}`)
 * through the gateway vs the same call straight to the demo upstream, over loopback, side by side.
 *
 * Setup (fairness): the demo upstream and the gateway run together in ONE child process, exactly as
 * `deno task start` runs the embedded demo; the load generator runs in this process. A separate
 * client process keeps the client's JSON and HTTP work off the server's event loop. On a 2-core VM
 * the client and the server each get about one core; the direct path then measures the upstream
 * alone in the same process that, for the gateway path, also runs the gateway, so both paths pay the
 * same client cost and differ only by the gateway. The gateway path does three upstream tools/calls
 * per request (the call itself and one `call_backend` get_repo each for label_resource and
 * label_response) plus the guard: that is what the ratio prices. Logging stays on (one JSON line per
 * call to stderr, discarded), as in production.
 *
 * Client: our own bounded HTTP client over `fetch` (one HTTP/1.1 connection per worker, a timeout
 * and a response size cap per request) driving raw JSON-RPC POSTs: each worker runs `initialize`
 * and `notifications/initialized` once on its own MCP session, then `tools/call` in a closed loop.
 * Concurrency 1, 8 and 64; direct and gateway rounds are interleaved (the order alternates) to cancel
 * drift. Targets: p50 ratio ≤ 1.25 at every concurrency, throughput ratio ≥ 0.8 at c=64.
 *
 * ```sh
 * deno run -A bench/gateway_bench.ts
 * BENCH_QUICK=1 deno run -A bench/gateway_bench.ts
 * ```
 * Raw samples: bench/results/gateway.json.
 *
 * @module
 */
import { parseConfig } from "../src/config.ts";
import { createDemoUpstream } from "../src/demo/upstream.ts";
import { demoConfig, startGateway } from "../src/main.ts";
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
  summarize,
  target,
} from "./lib.ts";

/** Concurrency levels measured. */
const CONCURRENCY = [1, 8, 64];
/** Targets. */
const P50_RATIO_TARGET = 1.25;
const THROUGHPUT_RATIO_TARGET = 0.8;
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
const QUICK: Plan = { roundMs: 300, rounds: 1, warmupMs: 200 };

// ---------------------------------------------------------------------------------------------
// Server side (child process): the embedded demo, upstream and gateway in one process.

async function serve(): Promise<void> {
  const ac = new AbortController();
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, () => ac.abort());
  const upstream = createDemoUpstream();
  const up = Deno.serve({ port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} }, upstream.fetch);
  // The config wants a real port; 0 (any free port) is set after validation, as `--port 0` does.
  const raw = demoConfig(`http://127.0.0.1:${up.addr.port}/mcp`, 8080, "127.0.0.1") as {
    gateway: Record<string, unknown>;
  };
  raw.gateway.apiKey = API_KEY;
  const config = parseConfig(raw, {});
  config.gateway.port = 0;
  const { server } = await startGateway(config, {
    configBase: new URL(import.meta.url),
    env: {},
    signal: ac.signal,
    log: (r) => console.error(JSON.stringify(r)),
  });
  console.log(JSON.stringify({
    direct: `http://127.0.0.1:${up.addr.port}/mcp`,
    gateway: `http://127.0.0.1:${server.addr.port}/mcp/demo`,
  }));
  await Promise.all([up.finished, server.finished]);
  await upstream.close();
}

/** The server child process and its URLs. */
interface ServerProcess {
  direct: string;
  gateway: string;
  stop(): Promise<void>;
}

async function startServer(): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-no-legacy-abort", new URL(import.meta.url).pathname, "--serve"],
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
  const urls = JSON.parse(text.slice(0, text.indexOf("\n"))) as { direct: string; gateway: string };
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

/** Checks that the gateway really guards the call: #2 filtered, #1 and #3 returned. */
async function sanityCheck(conn: McpConnection, guarded: boolean): Promise<void> {
  const result = await conn.request("tools/call", CALL);
  const text = JSON.stringify(result);
  const filtered = text.includes("[Filtered]") && !text.includes("Leaked token in logs");
  if (guarded !== filtered || !text.includes("Rotate the staging keys")) {
    throw new BenchClientError(
      `unexpected ${guarded ? "gateway" : "direct"} list_issues result: ${text.slice(0, 300)}`,
    );
  }
}

/** A pool of open connections per target, grown on demand and reused by every round. */
class Target {
  readonly conns: McpConnection[] = [];
  constructor(readonly name: string, readonly url: string, readonly headers: Record<string, string>) {}

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

/** Runs the gateway overhead benchmark; prints tables, writes bench/results/gateway.json. */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const plan = isQuick(opts) ? QUICK : FULL;
  const server = await startServer();
  const direct = new Target("direct", server.direct, {});
  const gateway = new Target("gateway", server.gateway, {
    authorization: `Bearer ${API_KEY}`,
    "x-agent-id": AGENT_ID,
  });
  const results: Record<number, { direct: LoopResult[]; gateway: LoopResult[] }> = {};
  try {
    await direct.ensure(1);
    await gateway.ensure(1);
    await sanityCheck(direct.conns[0], false);
    await sanityCheck(gateway.conns[0], true);
    for (const c of CONCURRENCY) {
      await direct.ensure(c);
      await gateway.ensure(c);
      await direct.round(c, plan.warmupMs);
      await gateway.round(c, plan.warmupMs);
      results[c] = { direct: [], gateway: [] };
      for (let r = 0; r < plan.rounds; r++) {
        const order = r % 2 === 0 ? [direct, gateway] : [gateway, direct];
        for (const t of order) {
          const res = await t.round(c, plan.roundMs);
          if (res.errors) {
            throw new BenchClientError(`${t.name} c=${c}: ${res.errors} failed: ${res.firstError}`);
          }
          results[c][t.name as "direct" | "gateway"].push(res);
        }
      }
    }
  } finally {
    direct.close();
    gateway.close();
    await server.stop();
  }

  const tput = (rs: LoopResult[]) => median(rs.map((r) => r.ops / (r.elapsedMs / 1000)));
  const lat = (rs: LoopResult[]) => summarize(rs.flatMap((r) => r.latencies));
  const rows: string[][] = [];
  const targets = [];
  const summary: Record<string, unknown> = {};
  for (const c of CONCURRENCY) {
    const d = lat(results[c].direct), g = lat(results[c].gateway);
    const dt = tput(results[c].direct), gt = tput(results[c].gateway);
    const p50r = ratio(g.p50, d.p50), p99r = ratio(g.p99, d.p99), tr = ratio(gt, dt);
    rows.push([
      String(c),
      fmt(d.p50),
      fmt(g.p50),
      `${fmt(p50r)}x`,
      fmt(d.p99),
      fmt(g.p99),
      `${fmt(p99r)}x`,
      fmt(dt, 0),
      fmt(gt, 0),
      `${fmt(tr)}x`,
    ]);
    targets.push(target(`p50 latency ratio gateway/direct, c=${c}`, p50r, "<=", P50_RATIO_TARGET, "x"));
    if (c === 64) {
      targets.push(target(`throughput ratio gateway/direct, c=${c}`, tr, ">=", THROUGHPUT_RATIO_TARGET, "x"));
    }
    summary[c] = { direct: { ...d, rps: dt }, gateway: { ...g, rps: gt } };
  }
  const tables = [{
    title:
      `guarded tools/call list_issues acme/web, gateway vs direct (${plan.rounds} interleaved rounds of ` +
      `${plan.roundMs} ms per target and concurrency; latency in ms, throughput in calls/s)`,
    header: [
      "c",
      "direct p50",
      "gateway p50",
      "p50 ratio",
      "direct p99",
      "gateway p99",
      "p99 ratio",
      "direct rps",
      "gateway rps",
      "rps ratio",
    ],
    rows,
  }];
  return await finish("gateway", opts, tables, targets, {
    plan,
    setup:
      "upstream + gateway in one child process; client in the parent; one connection and session per worker",
    summary,
    rounds: Object.fromEntries(
      CONCURRENCY.map((c) => [c, {
        direct: results[c].direct.map((r) => ({
          ops: r.ops,
          elapsedMs: r.elapsedMs,
          latenciesMs: r.latencies,
        })),
        gateway: results[c].gateway.map((r) => ({
          ops: r.ops,
          elapsedMs: r.elapsedMs,
          latenciesMs: r.latencies,
        })),
      }]),
    ),
  });
}

if (import.meta.main) {
  if (Deno.args[0] === "--serve") await serve();
  else await run();
}
