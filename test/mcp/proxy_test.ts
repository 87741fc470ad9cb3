import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { createMcpProxy, type ToolCallHook, type Upstream } from "../../src/mcp/proxy.ts";
import { MAX_TOOLS_PER_UPSTREAM } from "../../src/mcp/unified.ts";
import { startDyingUpstream, startSdkUpstream } from "./fixture_upstream.ts";

const ALLOW_ALL: ToolCallHook = {
  begin: () => Promise.resolve({ guard: { finish: (r) => Promise.resolve(r), abort() {} } }),
};

interface Gateway {
  base: string;
  proxy: ReturnType<typeof createMcpProxy>;
  close(): Promise<void>;
}

/** Serves the proxy: /mcp/<id> routed, /mcp unified; the agent id comes from `x-agent`. */
function startGateway(
  upstreams: Upstream[],
  hook: ToolCallHook = ALLOW_ALL,
  extra: { maxBodyBytes?: number; toolTimeoutMs?: number } = {},
): Promise<Gateway> {
  const proxy = createMcpProxy({
    upstreams: new Map(upstreams.map((u) => [u.id, u])),
    hook,
    maxBodyBytes: extra.maxBodyBytes ?? 4 << 20,
    toolTimeoutMs: extra.toolTimeoutMs ?? 30_000,
  });
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: ({ port }) =>
        resolve({
          base: `http://127.0.0.1:${port}`,
          proxy,
          async close() {
            await proxy.close();
            await server.shutdown();
          },
        }),
    }, (req) => {
      const path = new URL(req.url).pathname;
      const agent = req.headers.get("x-agent") ?? "agent-a";
      if (path === "/mcp") return proxy.unified(req, agent);
      return proxy.routed(req, path.slice("/mcp/".length), agent);
    });
  });
}

/** An upstream record; transport tests use noop servers (transparent) unless `guarded` is set. */
function upstreamOf(id: string, up: { url: string }, tools = ["*"], guarded = false): Upstream {
  return { id, url: up.url, headers: { "x-upstream-key": `cfg-${id}` }, tools, guarded };
}

async function connect(
  url: string,
  agent = "agent-a",
): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const client = new Client({ name: "test-agent", version: "0.0.1" }, {
    capabilities: { sampling: {}, elicitation: {} },
  });
  client.setRequestHandler(CreateMessageRequestSchema, () => ({
    model: "test-model",
    role: "assistant",
    content: { type: "text", text: "hi from the agent" },
  }));
  client.setRequestHandler(ElicitRequestSchema, () => ({ action: "accept", content: { name: "Ada" } }));
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: "Bearer agent-secret", cookie: "c=1", "x-agent": agent } },
  });
  await client.connect(transport);
  return { client, transport };
}

function text(r: unknown): string {
  return ((r as { content: { text: string }[] }).content ?? []).map((c) => c.text).join("");
}

/** Polls `pred` (bounded: fails after ~10 s instead of hanging the suite). */
async function waitFor(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`gave up waiting: ${what}`);
}

const POST_HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

async function rawInit(url: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(url, {
    method: "POST",
    headers: { ...POST_HEADERS, ...headers },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "0" } },
    }),
  });
  await res.body?.cancel();
  const sid = res.headers.get("mcp-session-id");
  assert(sid, "initialize returned a session id");
  return sid;
}

/** Reads an SSE body to its end and returns the JSON of every data line. */
async function sseMessages(res: Response): Promise<Record<string, unknown>[]> {
  const body = await res.text();
  return body.split("\n").filter((l) => l.startsWith("data: ") && l.length > 6).map((l) =>
    JSON.parse(l.slice(6))
  );
}

Deno.test("routed: SDK client lists (allow-list), calls, gets progress first, sampling and elicitation round trip", async () => {
  const up = await startSdkUpstream();
  const gw = await startGateway([upstreamOf("a", up, ["echo", "progress", "sample", "elicit", "slow"])]);
  const { client, transport } = await connect(`${gw.base}/mcp/a`);
  try {
    const { tools } = await client.listTools();
    assertEquals(tools.map((t) => t.name).sort(), ["echo", "elicit", "progress", "sample", "slow"]);
    assertEquals(text(await client.callTool({ name: "echo", arguments: { message: "hi" } })), "Echo: hi");

    const order: string[] = [];
    const r = await client.callTool({ name: "progress", arguments: { steps: 3 } }, undefined, {
      onprogress: (p) => order.push(`progress ${p.progress}`),
    });
    order.push(text(r));
    assertEquals(order, ["progress 1", "progress 2", "progress 3", "progress done"]);

    assertEquals(
      text(await client.callTool({ name: "sample", arguments: { prompt: "q" } })),
      "LLM said: hi from the agent",
    );
    assertEquals(text(await client.callTool({ name: "elicit", arguments: {} })), "action=accept name=Ada");

    await assertRejects(
      () => client.callTool({ name: "hidden", arguments: {} }),
      Error,
      'tool "hidden" is not in the allowed-tools list for this server',
    );
    // The agent's credentials never reach the upstream; the configured header always does.
    assert(up.seen.length > 0);
    for (const h of up.seen) {
      assertEquals(h.get("authorization"), null);
      assertEquals(h.get("cookie"), null);
      assertEquals(h.get("x-upstream-key"), "cfg-a");
    }
    // The blocked call never reached the upstream.
    assert(!up.bodies.some((b) => JSON.stringify(b).includes('"hidden"')));

    const sid = transport.sessionId!;
    await transport.terminateSession();
    const after = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: { ...POST_HEADERS, "mcp-session-id": sid },
      body: '{"jsonrpc":"2.0","id":9,"method":"ping"}',
    });
    await after.body?.cancel();
    assertEquals(after.status, 404);
  } finally {
    await client.close();
    await gw.close();
    await up.close();
  }
});

Deno.test("routed: cancellation reaches the upstream and the guard is aborted", async () => {
  const up = await startSdkUpstream();
  const aborted: unknown[] = [];
  const hook: ToolCallHook = {
    begin: () =>
      Promise.resolve({ guard: { finish: (r) => Promise.resolve(r), abort: (why) => aborted.push(why) } }),
  };
  const gw = await startGateway([upstreamOf("a", up)], hook);
  const { client } = await connect(`${gw.base}/mcp/a`);
  try {
    const ac = new AbortController();
    const call = client.callTool({ name: "slow", arguments: {} }, undefined, { signal: ac.signal });
    await waitFor(() => up.bodies.some((b) => JSON.stringify(b).includes('"slow"')), "upstream got the call");
    ac.abort("user cancelled");
    await assertRejects(() => call, Error, "user cancelled");
    await waitFor(
      () => up.bodies.some((b) => (b as { method?: string }).method === "notifications/cancelled"),
      "upstream got notifications/cancelled",
    );
    const cancelled = up.bodies.find((b) => (b as { method?: string }).method === "notifications/cancelled");
    assertEquals((cancelled as { params: { reason: string } }).params.reason, "user cancelled");
  } finally {
    await client.close();
    await gw.close();
    await up.close();
  }
  assert(aborted.length >= 1, "the guard of the cancelled call was aborted");
});

Deno.test("routed: hook blocks a call and rewrites a result inside the SSE stream", async () => {
  const up = await startSdkUpstream();
  const finished: unknown[] = [];
  const hook: ToolCallHook = {
    begin: (call) => {
      if (call.name === "echo") {
        return Promise.resolve({
          block: { code: -32005, message: "blocked by policy", data: { tool: call.name } },
        });
      }
      return Promise.resolve({
        guard: {
          finish: (r) => {
            finished.push(r);
            return Promise.resolve({ content: [{ type: "text", text: "[redacted]" }] });
          },
          abort() {},
        },
      });
    },
  };
  const gw = await startGateway([upstreamOf("a", up)], hook);
  const { client, transport } = await connect(`${gw.base}/mcp/a`);
  try {
    await assertRejects(
      () => client.callTool({ name: "echo", arguments: { message: "x" } }),
      Error,
      "blocked by policy",
    );
    assertEquals(text(await client.callTool({ name: "secret", arguments: {} })), "[redacted]");
    assertEquals(text(finished[0]), "the secret is 42");

    // The same on the wire: still an SSE stream, progress first, the rewritten result last.
    const res = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: {
        ...POST_HEADERS,
        "mcp-session-id": transport.sessionId!,
        "mcp-protocol-version": "2025-11-25",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 77,
        method: "tools/call",
        params: { name: "progress", arguments: { steps: 2 }, _meta: { progressToken: "t" } },
      }),
    });
    assertEquals(res.headers.get("content-type"), "text/event-stream");
    assertEquals(res.headers.get("x-accel-buffering"), "no");
    const msgs = await sseMessages(res);
    assertEquals(msgs.map((m) => m.method ?? m.id), ["notifications/progress", "notifications/progress", 77]);
    assertEquals(msgs[2].result, { content: [{ type: "text", text: "[redacted]" }] });
    assert(
      !up.bodies.some((b) => JSON.stringify(b).includes('"x"')),
      "the blocked call never reached the upstream",
    );
  } finally {
    await client.close();
    await gw.close();
    await up.close();
  }
});

Deno.test("routed: JSON-response upstream stays JSON and the guard still rewrites", async () => {
  const up = await startSdkUpstream({ json: true });
  const hook: ToolCallHook = {
    begin: () =>
      Promise.resolve({
        guard: {
          finish: () => Promise.reject(Object.assign(new Error("denied by label"), { code: -32006 })),
          abort() {},
        },
      }),
  };
  const gw = await startGateway([upstreamOf("a", up)], hook);
  try {
    const sid = await rawInit(`${gw.base}/mcp/a`);
    const note = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: { ...POST_HEADERS, "mcp-session-id": sid },
      body: '{"jsonrpc":"2.0","method":"notifications/initialized"}',
    });
    await note.body?.cancel();
    assertEquals(note.status, 202);
    const res = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: { ...POST_HEADERS, "mcp-session-id": sid },
      body:
        '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m"}}}',
    });
    assertEquals(res.headers.get("content-type"), "application/json");
    assertEquals(await res.json(), {
      jsonrpc: "2.0",
      id: 5,
      error: { code: -32006, message: "denied by label" },
    });
  } finally {
    await gw.close();
    await up.close();
  }
});

Deno.test("routed: another agent cannot use a session; unknown sessions get 404", async () => {
  const up = await startSdkUpstream();
  const gw = await startGateway([upstreamOf("a", up)]);
  try {
    const sid = await rawInit(`${gw.base}/mcp/a`, { "x-agent": "agent-a" });
    for (const [agent, session] of [["agent-b", sid], ["agent-a", "no-such-session"]]) {
      const res = await fetch(`${gw.base}/mcp/a`, {
        method: "POST",
        headers: { ...POST_HEADERS, "mcp-session-id": session, "x-agent": agent },
        body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      });
      assertEquals(res.status, 404);
      assertEquals((await res.json()).error.message, "Session not found");
    }
    const own = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: { ...POST_HEADERS, "mcp-session-id": sid, "x-agent": "agent-a" },
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
    });
    assertEquals(own.status, 200);
    await own.body?.cancel();
  } finally {
    await gw.close();
    await up.close();
  }
});

Deno.test("routed: bad requests are answered by the gateway (413, -32700, -32600, 405, unknown server)", async () => {
  const up = await startSdkUpstream();
  const gw = await startGateway([upstreamOf("a", up)], ALLOW_ALL, { maxBodyBytes: 1024 });
  try {
    const post = (body: string) => fetch(`${gw.base}/mcp/a`, { method: "POST", headers: POST_HEADERS, body });
    let res = await post(
      JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping", params: { pad: "x".repeat(2000) } }),
    );
    assertEquals(res.status, 413);
    assertStringIncludes((await res.json()).error.message, "exceeds 1024 bytes");
    res = await post("{oops");
    assertEquals(res.status, 400);
    assertEquals((await res.json()).error.code, -32700);
    res = await post('{"jsonrpc":"2.0","id":3}');
    assertEquals(res.status, 400);
    const body = await res.json();
    assertEquals([body.id, body.error.code], [3, -32600]);
    res = await fetch(`${gw.base}/mcp/a`, { method: "PUT", body: "{}" });
    assertEquals([res.status, res.headers.get("allow")], [405, "GET, POST, DELETE"]);
    await res.body?.cancel();
    res = await post('{"jsonrpc":"2.0","id":1,"method":"ping"}');
    await res.body?.cancel();
    res = await fetch(`${gw.base}/mcp/nope`, { method: "POST", headers: POST_HEADERS, body: "{}" });
    assertEquals(res.status, 404);
    await res.body?.cancel();
    assertEquals(up.bodies.length, 1, "only the well-formed ping reached the upstream");
  } finally {
    await gw.close();
    await up.close();
  }
});

Deno.test("routed: upstream down → 502 with the request id", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const gw = await startGateway([upstreamOf("a", { url: `http://127.0.0.1:${port}/mcp` })]);
  try {
    const res = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: POST_HEADERS,
      body: '{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"echo","arguments":{}}}',
    });
    assertEquals(res.status, 502);
    const body = await res.json();
    assertEquals(body.id, "r1");
    assertStringIncludes(body.error.message, 'upstream "a" unreachable');
  } finally {
    await gw.close();
  }
});

Deno.test("routed: upstream killed mid-stream → progress, then a JSON-RPC error for the call, stream ends", async () => {
  const dying = startDyingUpstream();
  const aborted: unknown[] = [];
  const hook: ToolCallHook = {
    begin: () =>
      Promise.resolve({ guard: { finish: (r) => Promise.resolve(r), abort: (why) => aborted.push(why) } }),
  };
  const gw = await startGateway([upstreamOf("a", dying)], hook);
  try {
    const res = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: POST_HEADERS,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 4,
        method: "tools/call",
        params: { name: "any", arguments: {}, _meta: { progressToken: "p" } },
      }),
    });
    assertEquals(res.status, 200);
    const msgs = await sseMessages(res);
    assertEquals(msgs.length, 2);
    assertEquals(msgs[0].method, "notifications/progress");
    assertEquals(msgs[1].id, 4);
    assertStringIncludes((msgs[1].error as { message: string }).message, 'upstream "a" stream failed');
    assertEquals(aborted.length, 1);
  } finally {
    await gw.close();
    dying.close();
  }
});

for (const guarded of [false, true]) {
  Deno.test(`routed: 2026-07-28 metadata headers (${guarded ? "guarded" : "noop"} server)`, async () => {
    const up = await startSdkUpstream();
    const gw = await startGateway([upstreamOf("a", up, ["*"], guarded)]);
    try {
      const res = await fetch(`${gw.base}/mcp/a`, {
        method: "POST",
        headers: {
          ...POST_HEADERS,
          "mcp-protocol-version": "2026-07-28",
          "mcp-method": "tools/call",
          "mcp-name": "echo",
          "mcp-param-region": "eu",
          "mcp-param-message": "m",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "tools/call",
          params: {
            name: "echo",
            arguments: { message: "m" },
            _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" },
          },
        }),
      });
      await res.body?.cancel();
      const h = up.seen.at(-1)!;
      // A guarded server gets an Mcp-Param header only when its value is an argument the guard saw.
      assertEquals(
        [
          h.get("mcp-protocol-version"),
          h.get("mcp-method"),
          h.get("mcp-name"),
          h.get("mcp-param-region"),
          h.get("mcp-param-message"),
        ],
        ["2026-07-28", "tools/call", "echo", guarded ? null : "eu", "m"],
      );
      assertEquals(h.get("accept"), "application/json, text/event-stream");
    } finally {
      await gw.close();
      await up.close();
    }
  });
}

Deno.test("unified: prefixed tools from two upstreams, routing, progress, sampling, DELETE, 404", async () => {
  const upA = await startSdkUpstream();
  const upB = await startSdkUpstream({ json: true });
  const gw = await startGateway([
    upstreamOf("a", upA, ["echo", "progress", "sample"]),
    upstreamOf("b", upB, ["echo"]),
  ]);
  const { client, transport } = await connect(`${gw.base}/mcp`);
  try {
    const { tools } = await client.listTools();
    assertEquals(tools.map((t) => t.name).sort(), ["a___echo", "a___progress", "a___sample", "b___echo"]);
    assertEquals(tools.find((t) => t.name === "b___echo")?.description, "[b] echoes");
    assertEquals(
      text(await client.callTool({ name: "b___echo", arguments: { message: "to b" } })),
      "Echo: to b",
    );
    assert(upB.bodies.some((b) => JSON.stringify(b).includes("to b")));
    assert(!upA.bodies.some((b) => JSON.stringify(b).includes("to b")));

    const seen: number[] = [];
    await client.callTool({ name: "a___progress", arguments: { steps: 2 } }, undefined, {
      onprogress: (p) => seen.push(p.progress),
    });
    assertEquals(seen, [1, 2]);
    assertEquals(
      text(await client.callTool({ name: "a___sample", arguments: { prompt: "q" } })),
      "LLM said: hi from the agent",
    );
    await assertRejects(
      () => client.callTool({ name: "b___progress", arguments: { steps: 1 } }),
      Error,
      'tool "progress" is not in the allowed-tools list',
    );
    await client.ping();

    const sid = transport.sessionId!;
    assertEquals(sid.length, 64);
    const stranger = await fetch(`${gw.base}/mcp`, {
      method: "POST",
      headers: { ...POST_HEADERS, "mcp-session-id": sid, "x-agent": "agent-b" },
      body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    });
    assertEquals(stranger.status, 404);
    await stranger.body?.cancel();

    await transport.terminateSession();
    assert(upA.seen.some((h) => h.get("x-upstream-key") === "cfg-a") && upA.bodies.length > 0);
    const after = await fetch(`${gw.base}/mcp`, {
      method: "POST",
      headers: { ...POST_HEADERS, "mcp-session-id": sid },
      body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    });
    assertEquals(after.status, 404);
    await after.body?.cancel();
  } finally {
    await client.close();
    await gw.close();
    await upA.close();
    await upB.close();
  }
  // The gateway's DELETE ended the session on both upstreams.
  assertEquals([upA.methods.includes("DELETE"), upB.methods.includes("DELETE")], [true, true]);
});

Deno.test("unified: a rewritten body gets a matching Mcp-Name header upstream", async () => {
  const up = await startSdkUpstream();
  const gw = await startGateway([upstreamOf("a", up)]);
  try {
    const sid = await rawInit(`${gw.base}/mcp`);
    const res = await fetch(`${gw.base}/mcp`, {
      method: "POST",
      headers: { ...POST_HEADERS, "mcp-session-id": sid, "mcp-method": "tools/call", "mcp-name": "a___echo" },
      body:
        '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a___echo","arguments":{"message":"n"}}}',
    });
    const msgs = await sseMessages(res);
    assertEquals(text(msgs.at(-1)!.result), "Echo: n");
    const h = up.seen.at(-1)!;
    assertEquals([h.get("mcp-method"), h.get("mcp-name")], ["tools/call", "echo"]);
  } finally {
    await gw.close();
    await up.close();
  }
});

Deno.test("upstream messages that are not valid JSON-RPC are withheld, and the call still gets one answer", async () => {
  const MARK = `LEAK-malformed-${crypto.randomUUID()}`;
  const ac = new AbortController();
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const m = await req.json();
      const bad = [
        { jsonrpc: "2.0", id: 7, method: 5, params: { text: MARK } }, // method not a string
        { jsonrpc: "2.0", method: "notifications/message", params: [MARK] }, // params not an object
        { jsonrpc: "2.0", id: m.id, error: MARK }, // error not an error object, right id
        { jsonrpc: "1.0", id: m.id, result: { content: [{ type: "text", text: MARK }] } }, // wrong version
        { id: m.id, result: MARK, error: MARK }, // both
      ];
      const body = bad.map((x) => `event: message\ndata: ${JSON.stringify(x)}\n\n`).join("");
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    },
  );
  const gw = await startGateway([
    upstreamOf("a", { url: `http://127.0.0.1:${srv.addr.port}/mcp` }, ["*"], true),
  ]);
  try {
    const res = await fetch(`${gw.base}/mcp/a`, {
      method: "POST",
      headers: POST_HEADERS,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "tools/call",
        params: { name: "echo", arguments: {} },
      }),
    });
    const text = await res.text();
    assert(!text.includes(MARK), text);
    const answers = text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6)));
    assertEquals(answers.length, 1, text);
    assertEquals([answers[0].id, answers[0].error?.code], [1, -32000]);
  } finally {
    await gw.close();
    ac.abort();
    await srv.finished;
  }
});

Deno.test("unified: an upstream with endless tools/list pages is cut at MAX_TOOLS_PER_UPSTREAM tools", async () => {
  let pages = 0;
  const ac = new AbortController();
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const m = await req.json();
      if (m.id === undefined) return new Response(null, { status: 202 });
      if (m.method === "initialize") {
        return Response.json({
          jsonrpc: "2.0",
          id: m.id,
          result: { protocolVersion: "2025-11-25", capabilities: {} },
        });
      }
      pages++;
      const tools = Array.from(
        { length: 4_000 },
        (_, i) => ({ name: `t${pages}_${i}`, inputSchema: { type: "object" } }),
      );
      return Response.json({ jsonrpc: "2.0", id: m.id, result: { tools, nextCursor: `p${pages}` } });
    },
  );
  const gw = await startGateway([
    upstreamOf("a", { url: `http://127.0.0.1:${srv.addr.port}/mcp` }, ["*"], true),
  ]);
  try {
    const headers = { ...POST_HEADERS, "mcp-protocol-version": "2025-11-25" };
    const sid = await rawInit(`${gw.base}/mcp`, headers);
    const res = await fetch(`${gw.base}/mcp`, {
      method: "POST",
      headers: { ...headers, "mcp-session-id": sid },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }),
    });
    const list = await res.json();
    assertEquals(list.result.tools.length, MAX_TOOLS_PER_UPSTREAM);
    assertEquals(pages, Math.ceil(MAX_TOOLS_PER_UPSTREAM / 4_000), "no page fetched past the cap");
  } finally {
    await gw.close();
    ac.abort();
    await srv.finished;
  }
});
