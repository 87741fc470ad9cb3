/**
 * What the fail-closed forwarding adds per guarded `tools/call`, measured on the work itself, side by
 * side in one process: the gateway-minted id and its expectation in the exchange and the session's
 * in-flight registry, the gateway's own serialization of the request (instead of forwarding the
 * agent's text), the header checks (`Mcp-Method`/`Mcp-Name` against the body, `Mcp-Param-*` against
 * the arguments), and matching the answer back to the agent's id.
 *
 * Both variants parse the agent's body and build the upstream request headers (both paths always
 * did); "text forward" then sends the text as it came, "gateway serialization" does everything listed
 * above. Rounds of the two interleave so
 * machine drift hits both alike. The difference of the medians is the per-call cost.
 *
 * ```sh
 * deno run -A bench/channels_bench.ts
 * BENCH_QUICK=1 deno run -A bench/channels_bench.ts
 * ```
 * Raw samples: bench/results/channels.json.
 *
 * @module
 */
import { checkedParamValues, upstreamRequest } from "../src/mcp/channels.ts";
import { Exchange, InflightRegistry, mintUpstreamId } from "../src/mcp/exchange.ts";
import { metadataHeaderProblem, upstreamRequestHeaders } from "../src/mcp/headers.ts";
import type { JsonRpcRequest } from "../src/mcp/jsonrpc.ts";
import type { Upstream } from "../src/mcp/proxy.ts";
import { type BenchOptions, type BenchReport, finish, fmt, isQuick, median } from "./lib.ts";

/** Calls per timed batch (a batch is timed as a whole: one call is below the timer's resolution). */
const BATCH = 1_000;

const UPSTREAM: Upstream = {
  id: "gh",
  url: "http://127.0.0.1:1/mcp",
  headers: {},
  tools: ["*"],
  guarded: true,
};
const BODY = JSON.stringify({
  jsonrpc: "2.0",
  id: 17,
  method: "tools/call",
  params: {
    name: "list_issues",
    arguments: { owner: "acme", repo: "web", state: "open", perPage: 30 },
    _meta: { progressToken: "p-17", "io.modelcontextprotocol/protocolVersion": "2026-07-28" },
  },
});
const HEADERS = new Headers({
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
  "mcp-protocol-version": "2026-07-28",
  "mcp-method": "tools/call",
  "mcp-name": "list_issues",
  "mcp-param-owner": "acme",
});

let sink = 0;

/** The earlier path: parse, build the upstream headers, then send the agent's text. */
function textForward(): void {
  const m = JSON.parse(BODY) as JsonRpcRequest;
  const headers = upstreamRequestHeaders({ method: "POST", configured: {}, agent: HEADERS });
  sink += BODY.length + (m.id as number) + headers["mcp-param-owner"].length;
}

/** The fail-closed path, request and answer. */
function gatewaySerialization(registry: InflightRegistry): void {
  const m = JSON.parse(BODY) as JsonRpcRequest;
  if (metadataHeaderProblem(HEADERS, m)) throw new Error("headers should match");
  const ex = new Exchange(UPSTREAM, { registry, key: "routed\ngh\nsid\nagent" });
  if (registry.has("routed\ngh\nsid\nagent", m.id)) throw new Error("not in flight yet");
  const id = mintUpstreamId();
  ex.expect(id, { agentId: m.id, method: m.method, progressToken: "p-17" });
  const sent = upstreamRequest(m, id, true);
  const headers = upstreamRequestHeaders({
    method: "POST",
    configured: {},
    agent: HEADERS,
    rewrittenBody: sent,
    paramValueAllowed: checkedParamValues(sent),
  });
  const text = JSON.stringify(sent);
  const exp = ex.take(id)!;
  sink += text.length + headers["mcp-param-owner"].length + (exp.agentId as number);
}

function timeBatch(fn: () => void): number {
  const t0 = performance.now();
  for (let i = 0; i < BATCH; i++) fn();
  return (performance.now() - t0) * 1000 / BATCH; // µs per call
}

/**
 * Runs the comparison.
 *
 * @example
 * ```ts
 * await run({ quick: true });
 * ```
 */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const rounds = isQuick(opts) ? 40 : 400;
  const registry = new InflightRegistry();
  const plain: number[] = [];
  const guarded: number[] = [];
  for (let i = 0; i < 20; i++) { // warm-up
    timeBatch(textForward);
    timeBatch(() => gatewaySerialization(registry));
  }
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0;
    if (order) plain.push(timeBatch(textForward));
    guarded.push(timeBatch(() => gatewaySerialization(registry)));
    if (!order) plain.push(timeBatch(textForward));
  }
  const a = median(plain), b = median(guarded);
  const table = {
    title:
      `per guarded tools/call, µs (median of ${rounds} interleaved batches of ${BATCH}; body ${BODY.length} B)`,
    header: ["variant", "µs per call", "added"],
    rows: [
      ["text forward (parse, headers, the agent's text)", fmt(a, 3), ""],
      ["gateway serialization (ids, headers, own JSON)", fmt(b, 3), fmt(b - a, 3)],
    ],
  };
  if (sink === -1) console.log(sink); // keep the work observable
  return await finish("channels", opts, [table], [], { batch: BATCH, plainUs: plain, guardedUs: guarded });
}

if (import.meta.main) await run();
