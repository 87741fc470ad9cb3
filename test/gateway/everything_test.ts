/**
 * A third-party upstream through the gateway: `@modelcontextprotocol/server-everything` over
 * Streamable HTTP (Node 22 process on loopback), driven by the SDK v1 client. A small recording
 * forwarder between the gateway and the server shows what reaches the upstream (cancellation).
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
// @ts-types="@modelcontextprotocol/sdk/types"
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { freePort, type ManagedProcess, NODE22, startProcess } from "../helpers/processes.ts";
import { API_KEY, connectAgent, startTestGateway, texts, waitUntil, within } from "./harness.ts";
// `test` = Deno.test, ignored (saying why) where no Node >= 22.12 is available (scripts/node22.ts).
import { testWithNode22 as test } from "../helpers/processes.ts";

const EVERYTHING = new URL(
  "../../node_modules/@modelcontextprotocol/server-everything/dist/index.js",
  import.meta.url,
).pathname;

/** Bound on every exchange with the third-party server. */
const CALL_TIMEOUT_MS = 10_000;

/** Starts server-everything (it binds all interfaces; it is only ever called on 127.0.0.1). */
async function startEverything(): Promise<{ proc: ManagedProcess; url: string }> {
  const port = freePort();
  const proc = await startProcess(NODE22, {
    args: [EVERYTHING, "streamableHttp"],
    env: { PORT: String(port) },
    clearEnv: true,
    waitForPort: port,
  });
  return { proc, url: `http://127.0.0.1:${port}/mcp` };
}

/** A loopback forwarder that records the JSON-RPC methods of every POST it passes on. */
function startRecorder(target: string): { url: string; methods: string[]; close(): Promise<void> } {
  const methods: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    let body: string | undefined;
    if (req.method === "POST") {
      body = await req.text();
      try {
        const m = JSON.parse(body);
        for (const x of Array.isArray(m) ? m : [m]) {
          methods.push(x.method ?? "response");
          if (x.method === "notifications/cancelled") methods.push(`cancelled:${x.params?.requestId}`);
        }
      } catch {
        methods.push("unparsable");
      }
    }
    const headers = new Headers(req.headers);
    headers.delete("host");
    const up = await fetch(target, { method: req.method, headers, body, signal: req.signal });
    return new Response(up.body, { status: up.status, headers: up.headers });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/mcp`,
    methods,
    close: () => server.shutdown(),
  };
}

test("server-everything through the gateway: tools, progress order, cancel, sampling, elicitation, GET stream", async () => {
  const { proc, url } = await startEverything();
  const rec = startRecorder(url);
  const gw = await startTestGateway({ mcpServers: { ev: { type: "http", url: rec.url } } });
  const client = await connectAgent(gw.url("ev"), {
    agentId: "ev-agent",
    capabilities: { sampling: {}, elicitation: {} },
    setup(c) {
      c.setRequestHandler(CreateMessageRequestSchema, () => ({
        model: "agent-model",
        role: "assistant",
        content: { type: "text", text: "sampled by the agent" },
      }));
      c.setRequestHandler(ElicitRequestSchema, () => ({ action: "accept", content: { name: "Ada" } }));
    },
  });
  try {
    const tools = (await within(CALL_TIMEOUT_MS, "tools/list", client.listTools())).tools.map((t) => t.name);
    for (const t of ["echo", "get-sum", "trigger-sampling-request", "trigger-elicitation-request"]) {
      assert(tools.includes(t), `${t} in ${tools.join(", ")}`);
    }
    const echo = await client.callTool({ name: "echo", arguments: { message: "hi via gateway" } });
    assertEquals(texts(echo), ["Echo: hi via gateway"]);
    const sum = await client.callTool({ name: "get-sum", arguments: { a: 2, b: 3 } });
    assertStringIncludes(texts(sum)[0], "5");

    const order: string[] = [];
    const long = await within(
      CALL_TIMEOUT_MS,
      "long-running",
      client.callTool(
        { name: "trigger-long-running-operation", arguments: { duration: 0.3, steps: 3 } },
        undefined,
        {
          onprogress: (p) => order.push(`progress ${p.progress}/${p.total}`),
        },
      ),
    );
    order.push("result");
    assertEquals(order, ["progress 1/3", "progress 2/3", "progress 3/3", "result"]);
    assertStringIncludes(texts(long)[0], "Long running operation completed");

    const ac = new AbortController();
    const cancelled = client.callTool(
      { name: "trigger-long-running-operation", arguments: { duration: 5, steps: 50 } },
      undefined,
      { signal: ac.signal, onprogress: () => ac.abort("agent changed its mind") },
    );
    await assertRejects(() => within(CALL_TIMEOUT_MS, "cancelled call", cancelled), Error);
    await waitUntil(() => rec.methods.includes("notifications/cancelled"), "cancel to reach the upstream");
    // The upstream sees the id the gateway minted for the call, never the agent's own.
    assert(rec.methods.some((m) => /^cancelled:mcpeg-[0-9a-f]{8}-\d+$/.test(m)), rec.methods.join(", "));

    const sampled = await within(
      CALL_TIMEOUT_MS,
      "sampling",
      client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hello" } }),
    );
    assertStringIncludes(texts(sampled)[0], "sampled by the agent");
    const elicited = await within(
      CALL_TIMEOUT_MS,
      "elicitation",
      client.callTool({ name: "trigger-elicitation-request", arguments: {} }),
    );
    assertStringIncludes(texts(elicited).join("\n"), "- Name: Ada");

    // A routed GET stream of our own on an initialized session: the upstream's SSE passes through.
    const sid = await rawSession(gw.url("ev"));
    const get = await fetch(gw.url("ev"), {
      headers: { authorization: API_KEY, accept: "text/event-stream", "mcp-session-id": sid },
    });
    assertEquals(get.status, 200);
    assertEquals(get.headers.get("content-type"), "text/event-stream");
    await get.body?.cancel();
    const calls = gw.logs.filter((r) => r.event === "tool_call").map((r) => [r.tool, r.decision]);
    assertEquals(calls.slice(0, 3), [["echo", "allow"], ["get-sum", "allow"], [
      "trigger-long-running-operation",
      "allow",
    ]]);
  } finally {
    await client.close();
    await gw.close();
    await rec.close();
    await proc.stop();
  }
});

/** Initializes a session through the gateway with raw HTTP and returns its id. */
async function rawSession(url: string): Promise<string> {
  const headers = {
    authorization: API_KEY,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  };
  const init = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "0" } },
    }),
  });
  await init.body?.cancel();
  const sid = init.headers.get("mcp-session-id");
  assert(sid);
  const done = await fetch(url, {
    method: "POST",
    headers: { ...headers, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  assertEquals(done.status, 202);
  await done.body?.cancel();
  return sid;
}
