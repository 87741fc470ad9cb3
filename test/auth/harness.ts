/**
 * An in-process gateway for the auth tests: the demo upstream behind the demo guard, reached through
 * `deps.fetch`, with the test's `gateway` settings merged in. The SDK client talks to `gw.fetch`.
 *
 * @module
 */
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { createGateway, type Gateway } from "../../src/app.ts";
import { parseConfig } from "../../src/config.ts";
import { createDemoUpstream } from "../../src/demo/upstream.ts";
import { MemoryAgentLabelStore } from "../../src/difc/store.ts";
import { loadGuardModule } from "../../src/guard/host.ts";
import { DEMO_GUARD_URL } from "../../src/main.ts";
import { planServers } from "../../src/registry.ts";

/** The demo policy with a budget of one `create_issue` per agent. */
export const LIMITED_POLICY = {
  "allow-only": { repos: ["acme/web"], "min-integrity": "approved", "tool-call-limits": { create_issue: 1 } },
};

/** Base URL the in-process gateway is addressed with. */
export const BASE = "http://127.0.0.1";

/** A gateway around the demo upstream; `gateway` is merged into the config's `gateway` block. */
export async function authGateway(gateway: Record<string, unknown>, opts: { authFetch?: typeof fetch } = {}) {
  const demo = createDemoUpstream();
  const config = parseConfig({
    mcpServers: {
      demo: {
        type: "http",
        url: "http://demo.internal/mcp",
        guard: "demo",
        "guard-policies": LIMITED_POLICY,
      },
    },
    guards: { demo: { type: "wasm", path: "demo.wasm" } },
    gateway,
  });
  const bytes = await Deno.readFile(DEMO_GUARD_URL);
  const { plans } = await planServers(
    config,
    (g) => loadGuardModule(bytes, { name: g.name, limits: config.limits }),
  );
  const logs: Record<string, unknown>[] = [];
  const upstreamHeaders: Headers[] = [];
  const gw: Gateway = createGateway({
    config,
    plans,
    store: new MemoryAgentLabelStore(),
    log: (r) => logs.push(r),
    fetch: (input, init) => {
      const req = new Request(input, init);
      upstreamHeaders.push(new Headers(req.headers));
      return demo.fetch(req);
    },
    authFetch: opts.authFetch,
  });
  const clients: Client[] = [];
  return {
    config,
    demo,
    gw,
    logs,
    /** Headers of every request the gateway sent upstream. */
    upstreamHeaders,
    /** An SDK client on `/mcp/demo` sending `headers` on every request. */
    async connect(headers: Record<string, string>): Promise<Client> {
      const client = new Client({ name: "auth-test", version: "1" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${BASE}/mcp/demo`), {
          fetch: async (input, init) => await gw.fetch(new Request(input, init)),
          requestInit: { headers },
        }),
      );
      clients.push(client);
      return client;
    },
    /** A raw request to the gateway. */
    async request(path: string, headers: Record<string, string>, init: RequestInit = {}) {
      const res = await gw.fetch(new Request(`${BASE}${path}`, { ...init, headers }));
      const text = await res.text();
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(text);
      } catch { /* not JSON */ }
      return { status: res.status, headers: res.headers, body, text };
    },
    async [Symbol.asyncDispose]() {
      for (const c of clients) await c.close().catch(() => {});
      await gw.close();
      await demo.close();
    },
  };
}

/** `create_issue` in acme/web (allowed by the policy; budget 1 per agent). */
export const CREATE = { name: "create_issue", arguments: { repo: "acme/web", title: "t", body: "b" } };
/** A read that `label_agent`/`label_response` label (taint). */
export const LIST = { name: "list_issues", arguments: { repo: "acme/web" } };

/** SHA-256 hex of a key, as `apiKeySha256` holds it. */
export async function sha256Hex(text: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}
