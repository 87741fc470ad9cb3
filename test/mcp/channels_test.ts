import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import {
  agentNotificationAllowed,
  agentRequestRefusal,
  answerUpstreamRequest,
  CHANNELS,
  channelTableMarkdown,
  checkedParamValues,
  guardedNotification,
  httpStatusReason,
  isGuarded,
  metadataResult,
  PROTOCOL_VERSIONS,
  unguardableResult,
  upstreamErrorForAgent,
  upstreamRequest,
} from "../../src/mcp/channels.ts";
import { upstreamRequestHeaders } from "../../src/mcp/headers.ts";

const MARK = "LEAK-channels-test";
const req = (method: string, params?: Record<string, unknown>) => ({
  jsonrpc: "2.0" as const,
  id: 1,
  method,
  params,
});

/** Table rows as trimmed cells, separator rows dropped (the formatter pads the README's table). */
function cells(markdown: string): string[][] {
  return markdown.split("\n").filter((l) => l.startsWith("|") && !/^\|[\s|:-]+\|$/.test(l))
    .map((l) => l.slice(1, -1).split("|").map((c) => c.trim()));
}

Deno.test("channel table: the README shows exactly the table in code", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const start = readme.indexOf("<!-- channel-table");
  const end = readme.indexOf("<!-- /channel-table -->");
  assert(start >= 0 && end > start, "the README has the channel-table markers");
  assertEquals(cells(readme.slice(start, end)), cells(channelTableMarkdown()));
});

Deno.test("channel table: every row names a served version; each method appears once per direction", () => {
  const seen = new Set<string>();
  for (const c of CHANNELS) {
    assert(PROTOCOL_VERSIONS.includes(c.since), c.method);
    if (c.until) assert(PROTOCOL_VERSIONS.includes(c.until), c.method);
    const k = `${c.direction} ${c.method}`;
    assert(!seen.has(k), `duplicate row ${k}`);
    seen.add(k);
  }
  // The methods the issue names are all in the table.
  for (
    const m of [
      "resources/read",
      "prompts/get",
      "completion/complete",
      "tasks/result",
      "subscriptions/listen",
    ]
  ) {
    assertEquals(CHANNELS.find((c) => c.method === m)?.guarded, "refused", m);
  }
});

Deno.test("channels: agent requests on a guarded server — refused unless guarded, filtered or metadata", () => {
  for (
    const m of [
      "resources/read",
      "prompts/get",
      "completion/complete",
      "logging/setLevel",
      "tasks/result",
      "bogus/x",
    ]
  ) {
    const r = agentRequestRefusal(req(m), "gh");
    assertEquals(r?.code, -32601, m);
    assertStringIncludes(r!.message, "guarded");
  }
  for (const m of ["initialize", "ping", "tools/list", "tools/call", "server/discover"]) {
    assertEquals(agentRequestRefusal(req(m, { name: "x" }), "gh"), undefined, m);
  }
  assertEquals(agentRequestRefusal(req("tools/call", { name: "x", task: { ttl: 1 } }), "gh")?.code, -32601);
  assert(agentNotificationAllowed("notifications/cancelled"));
  assert(!agentNotificationAllowed("notifications/roots/list_changed"));
  assert(isGuarded({}), "an upstream without the flag is guarded (fail closed)");
  assert(!isGuarded({ guarded: false }));
});

Deno.test("channels: tools/call upstream keeps name, arguments and _meta only (guarded)", () => {
  const m = req("tools/call", {
    name: "get_repo",
    arguments: { a: 1 },
    _meta: { progressToken: 3 },
    Name: "x",
    Arguments: {},
  });
  assertEquals(upstreamRequest(m, "mcpeg-1", true), {
    jsonrpc: "2.0",
    id: "mcpeg-1",
    method: "tools/call",
    params: { name: "get_repo", arguments: { a: 1 }, _meta: { progressToken: 3 } },
  });
  assertEquals(
    (upstreamRequest(m, "mcpeg-2", false).params as Record<string, unknown>).Name,
    "x",
    "noop: transparent",
  );
});

Deno.test("channels: a guarded server is not told of the agent's client capabilities", () => {
  const caps = { sampling: {}, elicitation: {}, roots: { listChanged: true } };
  const init = upstreamRequest(
    req("initialize", { protocolVersion: "2025-11-25", capabilities: caps }),
    "m",
    true,
  );
  assertEquals(init.params, { protocolVersion: "2025-11-25", capabilities: {} });
  const meta = { "io.modelcontextprotocol/clientCapabilities": caps, progressToken: 1 };
  const call = upstreamRequest(req("tools/call", { name: "x", _meta: meta }), "m", true);
  const none = { "io.modelcontextprotocol/clientCapabilities": {}, progressToken: 1 };
  assertEquals(call.params, { name: "x", _meta: none });
  const list = upstreamRequest(req("tools/list", { _meta: meta }), "m", true);
  assertEquals(list.params, { _meta: none });
  assertEquals(upstreamRequest(req("initialize", { capabilities: caps }), "m", false).params, {
    capabilities: caps,
  });
});

Deno.test("channels: metadata results are rebuilt with no upstream text", () => {
  const upstream = {
    protocolVersion: "2025-11-25",
    capabilities: { tools: { listChanged: true, extra: MARK }, resources: {}, logging: {} },
    serverInfo: { name: MARK, version: MARK },
    instructions: MARK,
    [MARK]: MARK,
  };
  const init = metadataResult("initialize", upstream, "gh");
  assert(!JSON.stringify(init).includes(MARK), JSON.stringify(init));
  assertEquals((init as { capabilities: unknown }).capabilities, { tools: { listChanged: true } });
  const disc = metadataResult("server/discover", {
    supportedVersions: ["2026-07-28", MARK],
    instructions: MARK,
  }, "gh");
  assertEquals((disc as { supportedVersions: string[] }).supportedVersions, ["2026-07-28"]);
  assert(!JSON.stringify(disc).includes(MARK));
  assertEquals(metadataResult("ping", { [MARK]: 1 }, "gh"), {});
});

Deno.test("channels: upstream notifications and requests for a guarded server's agent", () => {
  const ctx = {
    hasProgressToken: (t: unknown) => t === 7,
    agentIdOf: (id: unknown) => (id === "mcpeg-1" ? 42 : undefined),
  };
  const n = (method: string, params: Record<string, unknown>) => guardedNotification({ method, params }, ctx);
  assertEquals(n("notifications/progress", { progressToken: 7, progress: 1, total: 2, message: MARK }), {
    jsonrpc: "2.0",
    method: "notifications/progress",
    params: { progressToken: 7, progress: 1, total: 2 },
  });
  assertEquals(
    n("notifications/progress", { progressToken: 8, progress: 1 }),
    undefined,
    "not this exchange's token",
  );
  assertEquals(n("notifications/cancelled", { requestId: "mcpeg-1", reason: MARK }), {
    jsonrpc: "2.0",
    method: "notifications/cancelled",
    params: { requestId: 42 },
  });
  assertEquals(n("notifications/cancelled", { requestId: "other" }), undefined);
  assertEquals(n("notifications/tools/list_changed", { [MARK]: 1 }), {
    jsonrpc: "2.0",
    method: "notifications/tools/list_changed",
  });
  for (
    const m of [
      "notifications/message",
      "notifications/resources/updated",
      "notifications/tasks/status",
      MARK,
    ]
  ) {
    assertEquals(n(m, { data: MARK }), undefined, m);
  }
  assertEquals(answerUpstreamRequest("ping"), { result: {} });
  assertEquals(
    (answerUpstreamRequest("sampling/createMessage") as { error: { code: number } }).error.code,
    -32601,
  );
});

Deno.test("channels: errors and results the gateway writes carry no upstream text", () => {
  const e = upstreamErrorForAgent({ code: -32001, message: MARK, data: MARK }, "gh", "tools/call");
  assertEquals(e.code, -32001);
  assert(!JSON.stringify(e).includes(MARK));
  assertEquals(upstreamErrorForAgent({ code: 1.5, message: MARK }, "gh", "ping").code, -32603);
  assertEquals(unguardableResult({ resultType: "complete", content: [] }), undefined);
  assertEquals(unguardableResult({ content: [] }), undefined);
  assert(unguardableResult({ resultType: "input_required", inputRequests: {} }));
  assertEquals(httpStatusReason(500), "Internal Server Error");
  assertEquals(httpStatusReason(599), "server error");
});

Deno.test("channels: Mcp-Param headers reach a guarded server only with a value the guard saw", () => {
  const agent = new Headers({
    "mcp-param-region": "eu",
    "mcp-param-owner": "octo",
    "mcp-method": "tools/call",
  });
  const sent = req("tools/call", { name: "x", arguments: { owner: "octo" } });
  const h = upstreamRequestHeaders({
    method: "POST",
    configured: {},
    agent,
    rewrittenBody: sent,
    paramValueAllowed: checkedParamValues(sent),
  });
  assertEquals([h["mcp-param-region"], h["mcp-param-owner"], h["mcp-method"]], [
    undefined,
    "octo",
    "tools/call",
  ]);
  assertEquals(checkedParamValues(req("ping"))("octo"), false, "no arguments: no parameter header");
});
