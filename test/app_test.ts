/**
 * In-process gateway tests: the SDK client talks to `createGateway(...).fetch` directly (no sockets),
 * the gateway reaches the demo upstream through `deps.fetch`, and the demo guard runs in the real host.
 */
import { assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { createGateway } from "../src/app.ts";
import { parseConfig } from "../src/config.ts";
import { createDemoUpstream } from "../src/demo/upstream.ts";
import { MemoryAgentLabelStore } from "../src/difc/store.ts";
import { loadGuardModule } from "../src/guard/host.ts";
import { DEMO_GUARD_URL } from "../src/main.ts";
import { planServers } from "../src/registry.ts";
import { redirectingUpstream } from "./helpers/redirect_upstream.ts";

const KEY = "test-key";

async function setup(policy: unknown) {
  const demo = createDemoUpstream();
  const config = parseConfig({
    mcpServers: {
      demo: { type: "http", url: "http://demo.internal/mcp", guard: "demo", "guard-policies": policy },
    },
    guards: { demo: { type: "wasm", path: "demo.wasm" } },
    gateway: { apiKey: KEY },
  });
  const bytes = await Deno.readFile(DEMO_GUARD_URL);
  const { plans } = await planServers(
    config,
    (g) => loadGuardModule(bytes, { name: g.name, limits: config.limits }),
  );
  const logs: Record<string, unknown>[] = [];
  const gw = createGateway({
    config,
    plans,
    store: new MemoryAgentLabelStore(),
    log: (r) => logs.push(r),
    fetch: (input, init) => demo.fetch(new Request(input, init)),
  });
  const connect = async (agent: string) => {
    const client = new Client({ name: "t", version: "1" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL("http://127.0.0.1/mcp/demo"), {
        fetch: async (input, init) => await gw.fetch(new Request(input, init)),
        requestInit: { headers: { authorization: KEY, "x-agent-id": agent } },
      }),
    );
    return client;
  };
  return {
    demo,
    gw,
    logs,
    connect,
    async [Symbol.asyncDispose]() {
      await gw.close();
      await demo.close();
    },
  };
}

Deno.test("app: tool-call-limits from allow-only are enforced per agent and never reach the guard", async () => {
  await using t = await setup({
    "allow-only": {
      repos: ["acme/web"],
      "min-integrity": "approved",
      "tool-call-limits": { create_issue: 1 },
    },
  });
  const a = await t.connect("agent-a");
  const ok = await a.callTool({
    name: "create_issue",
    arguments: { repo: "acme/web", title: "x", body: "y" },
  });
  assertEquals(ok.isError, undefined);
  const err = await assertRejects(() =>
    a.callTool({ name: "create_issue", arguments: { repo: "acme/web", title: "x", body: "y" } })
  );
  assertStringIncludes(err.message, 'tool call limit reached for "create_issue" (max: 1)');
  assertStringIncludes(err.message, "-32004");
  assertEquals(t.demo.stats().create_issue, 1, "the refused call never reached the upstream");
  const b = await t.connect("agent-b");
  await b.callTool({ name: "create_issue", arguments: { repo: "acme/web", title: "x", body: "y" } });
  assertEquals(t.demo.stats().create_issue, 2, "another agent has its own budget");
  // Reads are unlimited and still filtered by the guard (the limits were stripped before label_agent).
  const read = await a.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
  const text = (read.content as { text: string }[])[0].text;
  assertEquals(JSON.parse(text).items.map((i: { number: number }) => i.number), [1, 3]);
  await a.close();
  await b.close();
});

Deno.test("app: a server's own toolTimeout bounds its tools/call", async () => {
  // A real loopback upstream: an in-process fetch would not see the abort the deadline sends.
  const demo = createDemoUpstream();
  const ac = new AbortController();
  const up = Deno.serve({ port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} }, demo.fetch);
  const config = parseConfig({
    mcpServers: { quick: { type: "http", url: `http://127.0.0.1:${up.addr.port}/mcp`, toolTimeout: 1 } },
    gateway: { apiKey: KEY, toolTimeout: 60 },
  });
  const { plans } = await planServers(config, () => Promise.reject(new Error("no wasm guards here")));
  const gw = createGateway({ config, plans, store: new MemoryAgentLabelStore(), log: () => {} });
  const client = new Client({ name: "t", version: "1" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL("http://127.0.0.1/mcp/quick"), {
      fetch: async (input, init) => await gw.fetch(new Request(input, init)),
      requestInit: { headers: { authorization: KEY } },
    }),
  );
  try {
    const t0 = performance.now();
    const err = await assertRejects(() =>
      client.callTool({ name: "slow_echo", arguments: { text: "x", ms: 5000 } })
    );
    assertStringIncludes(err.message, "timed out after 1000 ms");
    assertEquals(performance.now() - t0 < 4000, true, "answered at the server's deadline, not the gateway's");
  } finally {
    await client.close();
    await gw.close();
    await demo.close();
    ac.abort();
    await up.finished;
  }
});

Deno.test("app: the Host/Origin check applies to every route, /health and unknown paths included", async () => {
  await using t = await setup({ "allow-only": { repos: ["acme/web"], "min-integrity": "approved" } });
  const routes: [string, string][] = [
    ["GET", "/health"],
    ["GET", "/reflect"],
    ["POST", "/mcp"],
    ["POST", "/mcp/"],
    ["POST", "/mcp/demo"],
    ["POST", "/mcp/demo/"],
    ["GET", "/mcp/demo"],
    ["DELETE", "/mcp/demo"],
    ["GET", "/no-such-route"],
  ];
  const init = { jsonrpc: "2.0", id: 1, method: "tools/list", params: {} };
  const send = (method: string, path: string, headers: Record<string, string>) =>
    t.gw.fetch(
      new Request(`http://127.0.0.1${path}`, {
        method,
        headers: { authorization: KEY, "content-type": "application/json", ...headers },
        body: method === "POST" ? JSON.stringify(init) : undefined,
      }),
    );
  const before = JSON.stringify(t.demo.stats());
  for (const [method, path] of routes) {
    for (
      const [bad, want] of [
        [{ host: "evil.example" }, "DNS-rebinding"],
        [{ host: "127.0.0.1", origin: "https://evil.example" }, "Origin"],
      ] as const
    ) {
      const res = await send(method, path, bad);
      const body = await res.json();
      assertEquals([res.status, body.error], [403, "forbidden"], `${method} ${path} ${JSON.stringify(bad)}`);
      assertStringIncludes(body.message, want);
    }
  }
  assertEquals(JSON.stringify(t.demo.stats()), before, "no refused request reached the upstream");
  // A loopback Host and no Origin pass: the same routes answer as usual.
  const health = await send("GET", "/health", { host: "127.0.0.1:8080" });
  assertEquals(health.status, 200);
  await health.body?.cancel();
  const reflect = await send("GET", "/reflect", { host: "localhost", origin: "http://localhost:3000" });
  assertEquals(reflect.status, 200);
  await reflect.body?.cancel();
  const missing = await send("GET", "/no-such-route", { host: "localhost" });
  assertEquals(missing.status, 404);
  await missing.body?.cancel();
});

Deno.test("app: /health does not follow an upstream redirect with the configured credentials", async () => {
  await using up = redirectingUpstream(307);
  const config = parseConfig({
    mcpServers: {
      moved: { type: "http", url: up.url, headers: { Authorization: "Bearer upstream-secret" } },
    },
    gateway: { apiKey: KEY },
  });
  const { plans } = await planServers(config, () => Promise.reject(new Error("no wasm guards here")));
  const gw = createGateway({ config, plans, store: new MemoryAgentLabelStore(), log: () => {} });
  try {
    const res = await gw.fetch(new Request("http://127.0.0.1/health"));
    const body = await res.json();
    assertEquals(body.status, "degraded");
    assertEquals([body.servers.moved.status, body.servers.moved.httpStatus], ["down", 307]);
    assertEquals(up.seen, [], "the redirect target never saw the credential header");
  } finally {
    await gw.close();
  }
});
