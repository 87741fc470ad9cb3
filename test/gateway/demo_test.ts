/**
 * The demo pipeline end to end: SDK client → gateway (startGateway, Deno.serve) → demo guard
 * (guards/demo/demo-guard.wasm, real wasm host) → demo upstream, routed and unified.
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";
import { API_KEY, connectAgent, startDemo, startTestGateway, texts } from "./harness.ts";

function demoConfig(url: string): Record<string, unknown> {
  return {
    mcpServers: { demo: { type: "http", url, guard: "demo", "guard-policies": DEMO_POLICY } },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
  };
}

function toolCalls(logs: Record<string, unknown>[]): Record<string, unknown>[] {
  return logs.filter((r) => r.event === "tool_call");
}

function issuesOf(result: unknown): number[] {
  const parsed = JSON.parse(texts(result)[0]) as { items: { number: number }[] };
  return parsed.items.map((i) => i.number);
}

Deno.test("demo, routed: read filtered, write allowed, write blocked before the upstream, log lines, /reflect", async () => {
  await using demo = await startDemo();
  await using gw = await startTestGateway(demoConfig(demo.url));
  const client = await connectAgent(gw.url("demo"), { agentId: "alice" });
  try {
    const tools = (await client.listTools()).tools.map((t) => t.name).sort();
    assertEquals(tools, ["create_issue", "get_issue", "get_repo", "list_issues", "slow_echo"]);

    const read = await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
    assertEquals(issuesOf(read), [1, 3]);
    const notice = texts(read).at(-1)!;
    assertMatch(notice, /^\[Filtered\] 1 item\(s\) in this response were removed by integrity policy/);
    assertEquals(read.isError, undefined);

    const write = await client.callTool({
      name: "create_issue",
      arguments: { repo: "acme/web", title: "From the test", body: "hello" },
    });
    assertEquals(JSON.parse(texts(write)[0]).created, true);

    const before = demo.upstream.stats().create_issue;
    const err = await assertRejects(
      () =>
        client.callTool({
          name: "create_issue",
          arguments: { repo: "acme/public-site", title: "x", body: "y" },
        }),
      Error,
    ) as Error & { code?: number };
    assertEquals(err.code, -32001);
    assertStringIncludes(err.message, "DIFC Violation:");
    assertEquals(demo.upstream.stats().create_issue, before, "the blocked write never reached the upstream");
    assertEquals(before, 1);

    const calls = toolCalls(gw.logs);
    assertEquals(calls.map((c) => [c.tool, c.decision]), [
      ["list_issues", "filter"],
      ["create_issue", "allow"],
      ["create_issue", "deny"],
    ]);
    for (const c of calls) {
      assertEquals(c.agent, "alice");
      assertEquals(c.server, "demo");
      assertEquals(c.mode, "filter");
      assert(typeof c.timestamp === "string");
    }
    assertEquals(calls[0].operation, "read");
    assertEquals(calls[0].items_total, 3);
    assertEquals(calls[0].items_filtered, 1);
    assertEquals(calls[1].operation, "write");
    assert((calls[0].fuel as number) > 0, "wasm guard fuel is reported");
    const filtered = gw.logs.filter((r) => r.event === "difc_filtered");
    assertEquals(filtered.length, 1);
    assertEquals(String(filtered[0].number), "2");

    const reflect = await fetch(`${gw.base}/reflect`, {
      headers: { authorization: API_KEY, "x-agent-id": "alice" },
    });
    assertEquals(reflect.status, 200);
    const body = await reflect.json();
    assertEquals(body.agent.id, "alice");
    assertEquals(body.agent.labels.secrecy, ["private:acme/web"]);
    assert(body.agent.labels.integrity.length > 0, "label_agent integrity tags are unioned in");
    assertEquals(body.servers.demo.type, "wasm");
    assertEquals(body.servers.demo.policy, DEMO_POLICY);
  } finally {
    await client.close();
  }

  const health = await fetch(`${gw.base}/health`);
  assertEquals(health.status, 200);
  const h = await health.json();
  assertEquals(h.status, "healthy");
  assertEquals(h.servers.demo.guard.type, "wasm");
  assertEquals(h.servers.demo.policy, "allow-only");
});

Deno.test("demo, unified: prefixed tools, same filtering and blocking as routed", async () => {
  await using demo = await startDemo();
  await using gw = await startTestGateway(demoConfig(demo.url));
  const client = await connectAgent(gw.url(), { agentId: "bob" });
  try {
    const tools = (await client.listTools()).tools.map((t) => t.name);
    assert(tools.includes("demo___list_issues"), tools.join(", "));
    const read = await client.callTool({ name: "demo___list_issues", arguments: { repo: "acme/web" } });
    assertEquals(issuesOf(read), [1, 3]);
    assertStringIncludes(texts(read).at(-1)!, "[Filtered] 1 item(s)");
    const err = await assertRejects(
      () =>
        client.callTool({
          name: "demo___create_issue",
          arguments: { repo: "acme/public-site", title: "x", body: "y" },
        }),
      Error,
    ) as Error & { code?: number };
    assertEquals(err.code, -32001);
    assertEquals(demo.upstream.stats().create_issue, undefined);
    assertEquals(toolCalls(gw.logs).map((c) => c.tool), ["list_issues", "create_issue"]);
    const reflect = await (await fetch(`${gw.base}/reflect`, {
      headers: { authorization: `Bearer ${API_KEY}`, "x-agent-id": "bob" },
    })).json();
    assertEquals(reflect.agent.labels.secrecy, ["private:acme/web"]);
  } finally {
    await client.close();
  }
});

Deno.test("demo: the call memo answers repeated calls exactly as running the guard does, for every agent", async () => {
  await using demo = await startDemo();
  await using memo = await startTestGateway(demoConfig(demo.url));
  await using plain = await startTestGateway({ ...demoConfig(demo.url), limits: { callMemoBytes: 0 } });
  const calls: [string, string, Record<string, unknown>][] = [
    ["alice", "list_issues", { repo: "acme/web" }],
    ["alice", "list_issues", { repo: "acme/web" }],
    ["bob", "list_issues", { repo: "acme/web" }],
    ["bob", "get_issue", { repo: "acme/web", number: 2 }],
    ["alice", "create_issue", { repo: "acme/public-site", title: "x", body: "y" }],
    ["bob", "list_issues", { repo: "acme/public-site" }],
    ["bob", "create_issue", { repo: "acme/public-site", title: "x", body: "y" }],
    ["alice", "get_issue", { repo: "acme/web", number: 2 }],
  ];
  const run = async (gw: typeof memo) => {
    const out: unknown[] = [];
    const clients = new Map<string, Awaited<ReturnType<typeof connectAgent>>>();
    try {
      for (const [agent, name, args] of calls) {
        if (!clients.has(agent)) clients.set(agent, await connectAgent(gw.url("demo"), { agentId: agent }));
        try {
          out.push(texts(await clients.get(agent)!.callTool({ name, arguments: args })));
        } catch (e) {
          out.push({ code: (e as { code?: number }).code, message: (e as Error).message });
        }
      }
    } finally {
      for (const c of clients.values()) await c.close();
    }
    return { out, records: toolCalls(gw.logs) };
  };
  const a = await run(memo);
  const b = await run(plain);
  assertEquals(a.out, b.out);
  const decisions = (r: Record<string, unknown>[]) =>
    r.map((c) => [c.agent, c.tool, c.decision, c.operation, c.items_filtered]);
  assertEquals(decisions(a.records), decisions(b.records));
  const hits = a.records.map((c) => c.memo_hits as number);
  assert(hits.filter((h) => h === 3).length >= 2, `repeated reads answered from the memo: ${hits}`);
  assertEquals(b.records.map((c) => c.memo_hits), calls.map(() => 0));
  // The write blocked for alice is blocked for bob too, and neither reached the upstream.
  assertEquals(demo.upstream.stats().create_issue, undefined);
});

Deno.test("demo upstream: at most maxSessions live sessions (default MAX_DEMO_SESSIONS), the oldest closed first", async () => {
  const { createDemoUpstream, MAX_DEMO_SESSIONS } = await import("../../src/demo/upstream.ts");
  assertEquals(MAX_DEMO_SESSIONS, 256);
  const up = createDemoUpstream({ maxSessions: 2 });
  const init = (sid?: string) =>
    up.fetch(
      new Request("http://127.0.0.1/mcp", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          ...(sid ? { "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18" } : {}),
        },
        body: sid ? JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) : JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: {
            protocolVersion: "2025-06-18",
            capabilities: {},
            clientInfo: { name: "t", version: "0" },
          },
        }),
      }),
    );
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await init();
    await res.body?.cancel();
    ids.push(res.headers.get("mcp-session-id")!);
  }
  const first = await init(ids[0]);
  await first.body?.cancel();
  assertEquals(first.status, 404, "the oldest session was closed to make room");
  const last = await init(ids[2]);
  await last.body?.cancel();
  assertEquals(last.status, 200);
  await up.close();
  assertThrows(() => createDemoUpstream({ maxSessions: 0 }), RangeError, "maxSessions");
});
