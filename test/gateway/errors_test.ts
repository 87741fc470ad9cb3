/**
 * Error paths of the real gateway: auth, identity, Host/Origin, body size, methods, routing, JSON-RPC
 * framing, sessions, a dead upstream, the allow-list, and credential isolation.
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";
import { notAllowedMessage } from "../../src/mcp/proxy.ts";
import { freePort } from "../helpers/processes.ts";
import {
  API_KEY,
  connectAgent,
  initializeBody,
  rawPost,
  type RunningDemo,
  startDemo,
  startTestGateway,
  type TestGateway,
} from "./harness.ts";

/** Bound on one raw HTTP exchange. */
const RAW_HTTP_TIMEOUT_MS = 5_000;

/**
 * Sends one HTTP/1.1 request over a raw TCP connection (fetch cannot send a foreign `Host`) and
 * returns the status code and body.
 */
async function rawHttp(port: number, head: string): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), RAW_HTTP_TIMEOUT_MS);
  try {
    await conn.write(new TextEncoder().encode(head));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(16_384);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    const status = Number(text.split(" ")[1]);
    return { status, body: text.slice(text.indexOf("\r\n\r\n") + 4) };
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // already closed by the timeout or the peer
    }
  }
}

async function withGateway(
  fn: (gw: TestGateway, demo: RunningDemo) => Promise<void>,
  extra: { tools?: string[]; gateway?: Record<string, unknown> } = {},
): Promise<void> {
  await using demo = await startDemo();
  await using gw = await startTestGateway({
    mcpServers: {
      demo: {
        type: "http",
        url: demo.url,
        guard: "demo",
        "guard-policies": DEMO_POLICY,
        headers: { Authorization: "Bearer upstream-token" },
        ...(extra.tools ? { tools: extra.tools } : {}),
      },
      down: { type: "http", url: `http://127.0.0.1:${freePort()}/mcp` },
    },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
    gateway: { maxBodyBytes: 4096, ...extra.gateway },
  });
  await fn(gw, demo);
}

Deno.test("auth and identity: missing/invalid key 401, bad X-Agent-ID 400, /health needs no key", async () => {
  await withGateway(async (gw) => {
    const none = await fetch(gw.url("demo"), { method: "POST", body: initializeBody() });
    assertEquals(none.status, 401);
    assertEquals((await none.json()).error, "unauthorized");
    const wrong = await rawPost(gw.url("demo"), initializeBody(), { authorization: "Bearer nope" });
    assertEquals(wrong.status, 401);
    assertEquals(await wrong.json(), { error: "unauthorized", message: "invalid API key" });
    const reflect = await fetch(`${gw.base}/reflect`);
    assertEquals(reflect.status, 401);
    await reflect.body?.cancel();
    const badAgent = await rawPost(gw.url("demo"), initializeBody(), { "x-agent-id": "../etc" });
    assertEquals(badAgent.status, 400);
    assertEquals((await badAgent.json()).error, "invalid_agent_id");
    const health = await fetch(`${gw.base}/health`);
    assertEquals(health.status, 200);
    await health.body?.cancel();
  });
});

Deno.test("DNS rebinding: foreign Host and Origin get 403 before auth; loopback passes", async () => {
  await withGateway(async (gw) => {
    const body = initializeBody();
    const req = (host: string, origin?: string) =>
      `POST /mcp/demo HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${API_KEY}\r\n` +
      (origin ? `Origin: ${origin}\r\n` : "") +
      `Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n` +
      `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
    const badHost = await rawHttp(gw.port, req("evil.example:80"));
    assertEquals(badHost.status, 403);
    assertStringIncludes(badHost.body, "DNS-rebinding");
    const badOrigin = await rawPost(gw.url("demo"), body, { origin: "https://evil.example" });
    assertEquals(badOrigin.status, 403);
    assertEquals((await badOrigin.json()).error, "forbidden");
    const good = await rawHttp(gw.port, req(`localhost:${gw.port}`, `http://localhost:${gw.port}`));
    assertEquals(good.status, 200);
  });
});

Deno.test("HTTP framing: 413 over maxBodyBytes, 405 for PUT, 404 unknown server/route, -32700, -32600", async () => {
  await withGateway(async (gw, demo) => {
    const big = await rawPost(
      gw.url("demo"),
      JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping", params: { pad: "x".repeat(5000) } }),
    );
    assertEquals(big.status, 413);
    assertStringIncludes((await big.json()).error.message, "4096");
    const put = await fetch(gw.url("demo"), { method: "PUT", headers: { authorization: API_KEY } });
    assertEquals(put.status, 405);
    assertEquals(put.headers.get("allow"), "GET, POST, DELETE");
    await put.body?.cancel();
    const unknown = await rawPost(gw.url("nope"), initializeBody());
    assertEquals(unknown.status, 404);
    assertStringIncludes((await unknown.json()).message, '"nope"');
    const noRoute = await fetch(`${gw.base}/elsewhere`);
    assertEquals(noRoute.status, 404);
    await noRoute.body?.cancel();
    for (const url of [gw.url("demo"), gw.url()]) {
      const parse = await rawPost(url, "{not json");
      assertEquals(parse.status, 400);
      assertEquals((await parse.json()).error.code, -32700);
      const invalid = await rawPost(url, JSON.stringify({ hello: "world" }));
      assertEquals(invalid.status, 400);
      assertEquals((await invalid.json()).error.code, -32600);
    }
    assertEquals(demo.seen.length, 0, "none of these reached the upstream");
  });
});

Deno.test("sessions: unknown gateway session 404 (unified and routed)", async () => {
  await withGateway(async (gw) => {
    const ping = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" });
    for (const url of [gw.url(), gw.url("demo")]) {
      const r = await rawPost(url, ping, { "mcp-session-id": "no-such-session" });
      assertEquals(r.status, 404, url);
      assertStringIncludes((await r.json()).error.message, "Session not found");
    }
  });
});

Deno.test("upstream down: 502 with a JSON-RPC error naming the upstream; the other server still works", async () => {
  await withGateway(async (gw) => {
    const r = await rawPost(gw.url("down"), initializeBody(7));
    assertEquals(r.status, 502);
    const body = await r.json();
    assertEquals(body.jsonrpc, "2.0");
    assertEquals(body.id, 7);
    assertStringIncludes(body.error.message, 'upstream "down"');
    const client = await connectAgent(gw.url("demo"));
    try {
      assertEquals((await client.listTools()).tools.length, 5);
    } finally {
      await client.close();
    }
  });
});

Deno.test("allow-list: hidden in tools/list, a call is refused without reaching the upstream or the guard", async () => {
  await withGateway(async (gw, demo) => {
    const client = await connectAgent(gw.url("demo"));
    try {
      assertEquals((await client.listTools()).tools.map((t) => t.name), ["list_issues"]);
      const err = await assertRejects(
        () => client.callTool({ name: "get_repo", arguments: { repo: "acme/web" } }),
        Error,
      );
      assertStringIncludes(err.message, notAllowedMessage("get_repo"));
      assertEquals(demo.upstream.stats().get_repo, undefined);
      assertEquals(gw.logs.filter((r) => r.event === "tool_call").length, 0);
    } finally {
      await client.close();
    }
  }, { tools: ["list_issues"] });
});

Deno.test("credentials: the agent's Authorization never reaches the upstream; the configured header does", async () => {
  await withGateway(async (gw, demo) => {
    const client = await connectAgent(gw.url("demo"), { agentId: "carol" });
    const unified = await connectAgent(gw.url(), { agentId: "carol" });
    try {
      await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
      await unified.callTool({ name: "demo___get_repo", arguments: { repo: "acme/web" } });
    } finally {
      await client.close();
      await unified.close();
    }
    assert(demo.seen.length >= 6, `upstream saw ${demo.seen.length} requests`);
    for (const h of demo.seen) {
      assertEquals(h.get("authorization"), "Bearer upstream-token");
      assert(!JSON.stringify([...h]).includes(API_KEY), "the API key appears in no upstream header");
      assertEquals(h.get("x-agent-id"), null);
    }
  });
});
