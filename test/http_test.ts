import { assert, assertEquals, assertMatch, assertRejects, assertStringIncludes } from "@std/assert";
import { authenticate, AuthError, constantTimeEqual, validateAgentId } from "../src/http/auth.ts";
import { checkHostAndOrigin, hostName } from "../src/http/origin.ts";
import { createHealthProber, HEALTH_CACHE_MS } from "../src/http/health.ts";
import { redirectingUpstream } from "./helpers/redirect_upstream.ts";

const h = (o: Record<string, string>) => new Headers(o);

Deno.test("auth: raw key and Bearer key both accepted; agent id derived without revealing the key", async () => {
  const a = await authenticate(h({ authorization: "s3cret" }), "s3cret");
  const b = await authenticate(h({ authorization: "Bearer s3cret" }), "s3cret");
  assertEquals(a, b);
  assertMatch(a, /^key-[0-9a-f]{16}$/);
  assertEquals(a.includes("s3cret"), false);
  assertEquals(
    await authenticate(h({ authorization: "s3cret", "x-agent-id": "agent-7" }), "s3cret"),
    "agent-7",
  );
});

Deno.test("auth: missing, wrong, control characters, bad agent ids", async () => {
  const e1 = await assertRejects(() => authenticate(h({}), "k"), AuthError, "missing Authorization header");
  assertEquals(e1.status, 401);
  const e2 = await assertRejects(
    () => authenticate(h({ authorization: "kk" }), "k"),
    AuthError,
    "invalid API key",
  );
  assertEquals(e2.status, 401);
  await assertRejects(() => authenticate(h({ authorization: "Bearer " }), "k"), AuthError);
  for (const bad of ["..", ".", "a/b", "a\\b", "", " ", "x".repeat(129), "-lead"]) {
    const e = await assertRejects(
      () => authenticate(h({ authorization: "k", "x-agent-id": bad }), "k"),
      AuthError,
    );
    assertEquals(e.status, 400, bad);
  }
  assertEquals(validateAgentId("bot@acme:1"), "bot@acme:1");
});

Deno.test("auth: constantTimeEqual is plain equality", () => {
  assertEquals(constantTimeEqual("abc", "abc"), true);
  assertEquals(constantTimeEqual("abc", "abd"), false);
  assertEquals(constantTimeEqual("", "a"), false);
  assertEquals(constantTimeEqual("a", ""), false);
  assertEquals(constantTimeEqual("abcd", "abc"), false);
});

Deno.test("origin: loopback hosts pass, foreign hosts and origins are refused with a reason", () => {
  const opts = { allowedHosts: [] as string[], allowedOrigins: [] as string[] };
  assertEquals(checkHostAndOrigin(h({ host: "127.0.0.1:8080" }), opts), null);
  assertEquals(checkHostAndOrigin(h({ host: "localhost" }), opts), null);
  assertEquals(checkHostAndOrigin(h({ host: "[::1]:9" }), opts), null);
  assertStringIncludes(checkHostAndOrigin(h({ host: "evil.example:8080" }), opts)!, "DNS-rebinding");
  assertEquals(checkHostAndOrigin(h({ host: "localhost", origin: "http://localhost:3000" }), opts), null);
  assertStringIncludes(
    checkHostAndOrigin(h({ host: "localhost", origin: "https://evil.example" }), opts)!,
    "Origin",
  );
  assertStringIncludes(checkHostAndOrigin(h({ host: "localhost", origin: "null" }), opts)!, "Origin");
  const open = { allowedHosts: ["*"], allowedOrigins: ["https://app.example"] };
  assertEquals(
    checkHostAndOrigin(h({ host: "gw.example.workers.dev", origin: "https://app.example" }), open),
    null,
  );
  assertEquals(hostName("[::1]:80"), "[::1]");
  assertEquals(hostName("Example.COM:1"), "example.com");
});

Deno.test("health: up only when initialize gets a JSON-RPC result (JSON or SSE), down with the reason otherwise, cached", async () => {
  let hits = 0;
  const deleted: string[] = [];
  const ac = new AbortController();
  const result = {
    jsonrpc: "2.0",
    id: "mcp-edge-guard-health",
    result: { protocolVersion: "2025-06-18", capabilities: {}, serverInfo: { name: "stub", version: "1" } },
  };
  const srv = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      if (req.method === "DELETE") {
        deleted.push(req.headers.get("mcp-session-id")!);
        return new Response(null, { status: 204 });
      }
      hits++;
      const body = await req.json();
      assertEquals([req.method, body.method], ["POST", "initialize"]);
      if (path === "/json") return Response.json(result, { headers: { "mcp-session-id": "s-1" } });
      if (path === "/sse") {
        // A stream that stays open after the response event: the probe must not wait for its end.
        const stream = new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode(`event: message\ndata: ${JSON.stringify(result)}\n\n`));
          },
        });
        return new Response(stream, { headers: { "content-type": "text/event-stream" } });
      }
      if (path === "/rpc-error") {
        return Response.json({
          jsonrpc: "2.0",
          id: body.id,
          error: { code: -32602, message: "bad version" },
        });
      }
      if (path === "/html") {
        return new Response("<html>hi</html>", {
          headers: { "content-type": "text/html" },
        });
      }
      if (path === "/auth") return new Response("no", { status: 401 });
      return new Response("no session", { status: path === "/bad" ? 503 : 400 });
    },
  );
  const dead = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const deadPort = (dead.addr as Deno.NetAddr).port;
  dead.close();
  try {
    let t = 0;
    const probe = createHealthProber(fetch, () => t);
    const base = `http://127.0.0.1:${srv.addr.port}`;
    const up = await probe({ id: "a", url: `${base}/json`, headers: {} });
    assertEquals([up.status, up.httpStatus, up.mcp], ["up", 200, { protocolVersion: "2025-06-18" }]);
    assertEquals(deleted, ["s-1"], "the session the probe opened is closed");
    const sse = await probe({ id: "s", url: `${base}/sse`, headers: {} });
    assertEquals([sse.status, sse.mcp?.protocolVersion], ["up", "2025-06-18"]);
    const cases: [string, number | undefined, string][] = [
      ["/mcp", 400, "HTTP 400 to initialize (not an MCP endpoint"],
      ["/auth", 401, "HTTP 401 to initialize (the configured credentials were refused)"],
      ["/bad", 503, "HTTP 503 to initialize (server error)"],
      ["/rpc-error", 200, "initialize failed with JSON-RPC error -32602"],
      ["/html", 200, "without a JSON-RPC response"],
    ];
    for (const [path, httpStatus, error] of cases) {
      const h = await probe({ id: path, url: `${base}${path}`, headers: {} });
      assertEquals([h.status, h.httpStatus], ["down", httpStatus], path);
      assertStringIncludes(h.error!, error);
    }
    const d = await probe({ id: "c", url: `http://127.0.0.1:${deadPort}/mcp`, headers: {} });
    assertEquals(d.status, "down");
    assertStringIncludes(d.error!, "Error");
    const before = hits;
    await probe({ id: "a", url: `${base}/json`, headers: {} });
    assertEquals(hits, before, "second probe of 'a' within the cache window is not sent");
    t += HEALTH_CACHE_MS;
    await probe({ id: "a", url: `${base}/json`, headers: {} });
    assertEquals(hits, before + 1);
  } finally {
    ac.abort();
    await srv.finished;
  }
});

Deno.test("health: a redirect is reported as down and never followed, so credentials stay home", async () => {
  await using up = redirectingUpstream(302);
  const probe = createHealthProber(fetch);
  const h = await probe({ id: "r", url: up.url, headers: { authorization: "Bearer upstream-secret" } });
  assertEquals([h.status, h.httpStatus], ["down", 302]);
  assertStringIncludes(h.error!, "redirect (HTTP 302), not followed");
  assertEquals(up.seen, [], "the redirect target was never contacted");
});

Deno.test("health: the demo upstream is up with HTTP 200 and its MCP protocol version", async () => {
  const { createDemoUpstream } = await import("../src/demo/upstream.ts");
  const upstream = createDemoUpstream();
  const probe = createHealthProber((input, init) => upstream.fetch(new Request(input, init)));
  try {
    const h = await probe({ id: "demo", url: "http://demo.invalid/mcp", headers: {} });
    assertEquals(
      [h.status, h.httpStatus, typeof h.mcp?.protocolVersion],
      ["up", 200, "string"],
      JSON.stringify(h),
    );
  } finally {
    await upstream.close();
  }
});

Deno.test("health: no upstream text reaches the unauthenticated /health (server name, version, error)", async () => {
  const MARK = `LEAK-health-${crypto.randomUUID()}`;
  let mode: "result" | "error" = "result";
  const ac = new AbortController();
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const body = await req.json().catch(() => ({}));
      const headers = { "x-leak": MARK, "mcp-session-id": MARK };
      if (mode === "error") {
        return Response.json({
          jsonrpc: "2.0",
          id: body.id,
          error: { code: -32602, message: MARK, data: MARK },
        }, {
          headers,
        });
      }
      return Response.json({
        jsonrpc: "2.0",
        id: body.id,
        result: { protocolVersion: MARK, serverInfo: { name: MARK, version: MARK }, instructions: MARK },
      }, { headers });
    },
  );
  try {
    const url = `http://127.0.0.1:${srv.addr.port}/mcp`;
    let t = 0;
    const probe = createHealthProber(fetch, () => t);
    const up = await probe({ id: "h", url, headers: {} });
    assertEquals([up.status, up.mcp], ["up", { protocolVersion: null }]);
    assert(!JSON.stringify(up).includes(MARK), JSON.stringify(up));
    mode = "error";
    t += HEALTH_CACHE_MS;
    const down = await probe({ id: "h", url, headers: {} });
    assertEquals(down.status, "down");
    assert(!JSON.stringify(down).includes(MARK), JSON.stringify(down));
  } finally {
    ac.abort();
    await srv.finished;
  }
});
