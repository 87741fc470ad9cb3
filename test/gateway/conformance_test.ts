/**
 * The MCP conformance suite (0.1.16, server mode) run directly against our conformance fixture and
 * through the gateway's routed URL (noop guard): every verdict must be identical, except
 * `dns-rebinding-protection`, which the gateway must pass on its own (it answers 403 itself).
 *
 * The CLI cannot send an API key, so the gateway is reached through a loopback front that adds the
 * `Authorization` header and hands the request, Host and Origin untouched, to the gateway's own
 * `fetch` handler. The gateway's auth stays on; no insecure mode exists for the test's sake.
 *
 * Also here: resumption. The fixture's `test_reconnection` closes its POST stream before answering
 * (SEP-1699 polling). The gateway deliberately does not resume POST streams on GET (a guarded
 * result must pass the guard; see src/mcp/proxy.ts), so the agent gets a JSON-RPC error for that
 * id at once instead of the result, and no hang.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { startConformanceUpstream } from "../fixtures/conformance-upstream.ts";
import { startDemo } from "./harness.ts";
import { runConformance, type Verdict } from "../helpers/conformance.ts";
import { connectAgent, keyedFront, startTestGateway, within } from "./harness.ts";
// `test` = Deno.test, ignored (saying why) where no Node >= 22.12 is available (scripts/node22.ts).
import { testWithNode22 as test } from "../helpers/processes.ts";

/** Bound on one conformance run (a healthy run takes about 2 s). */
const RUN_TIMEOUT_MS = 60_000;

test("conformance: identical verdicts direct and through the gateway; dns-rebinding passes on its own", async () => {
  await using upstream = await startConformanceUpstream({ port: 0 });
  await using gw = await startTestGateway({ mcpServers: { conf: { type: "http", url: upstream.url } } });
  const front = keyedFront(gw);
  try {
    const direct = await runConformance(upstream.url, { timeoutMs: RUN_TIMEOUT_MS });
    const via = await runConformance(`http://localhost:${front.port}/mcp/conf`, {
      timeoutMs: RUN_TIMEOUT_MS,
    });
    const table: Record<string, { direct: Verdict; gateway: Verdict }> = {};
    for (const k of Object.keys(direct.verdicts)) {
      table[k] = { direct: direct.verdicts[k], gateway: via.verdicts[k] };
    }
    const { "dns-rebinding-protection": dnsVia, ...restVia } = via.verdicts;
    const { "dns-rebinding-protection": _dnsDirect, ...restDirect } = direct.verdicts;
    assertEquals(restVia, restDirect, `${JSON.stringify(table)}\n${via.output.slice(-3000)}`);
    assertEquals(dnsVia, "pass", JSON.stringify(via.scenarios["dns-rebinding-protection"]?.problems));
    assertEquals(Object.keys(via.verdicts).length, 30);
    assert(gw.logs.some((r) => r.event === "tool_call"), "tools/call went through the guard pipeline");
  } finally {
    await front.close();
  }
});

test("conformance dns-rebinding: the gateway passes it in front of an upstream that does not check Host", async () => {
  await using demo = await startDemo();
  await using gw = await startTestGateway({ mcpServers: { demo: { type: "http", url: demo.url } } });
  const front = keyedFront(gw);
  try {
    const opts = { scenario: "dns-rebinding-protection", timeoutMs: RUN_TIMEOUT_MS };
    const direct = await runConformance(demo.url.replace("127.0.0.1", "localhost"), opts);
    assertEquals(
      direct.verdicts,
      { "dns-rebinding-protection": "fail" },
      "the demo upstream has no Host check",
    );
    const via = await runConformance(`http://localhost:${front.port}/mcp/demo`, opts);
    assertEquals(via.verdicts, { "dns-rebinding-protection": "pass" }, via.output.slice(-2000));
  } finally {
    await front.close();
  }
});

Deno.test("resumption: a POST stream closed before the answer gets a JSON-RPC error at once, and the session goes on", async () => {
  await using upstream = await startConformanceUpstream({ port: 0 });
  await using gw = await startTestGateway({ mcpServers: { conf: { type: "http", url: upstream.url } } });
  const client = await connectAgent(gw.url("conf"));
  try {
    const err = await assertRejects(
      () =>
        within(10_000, "test_reconnection", client.callTool({ name: "test_reconnection", arguments: {} })),
      Error,
    ) as Error & { code?: number };
    assertEquals(err.code, -32000);
    assertMatch(err.message, /upstream "conf" closed the stream before sending the response/);
    const calls = gw.logs.filter((r) => r.event === "tool_call");
    assertEquals(calls.map((c) => c.decision), ["aborted"]);
    const next = await client.callTool({ name: "test_simple_text", arguments: {} });
    assert((next.content as unknown[]).length > 0);
  } finally {
    await client.close();
  }
});
