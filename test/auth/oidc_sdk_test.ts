/**
 * The whole OAuth flow with real parts, in Deno: `oidc-provider` (a certified OpenID provider) on
 * loopback issues RFC 9068 JWT access tokens for RFC 8707 resource indicators through the
 * client_credentials grant; the official MCP SDK client (`ClientCredentialsProvider`) meets the
 * gateway's 401, discovers its RFC 9728 metadata and the provider's metadata, obtains a token and
 * calls tools through the gateway (started with `startGateway`, as `deno task start` does).
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/client/auth-extensions"
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";
import { parseConfig } from "../../src/config.ts";
import { createDemoUpstream } from "../../src/demo/upstream.ts";
import { MemoryAgentLabelStore } from "../../src/difc/store.ts";
import { DEMO_GUARD_URL, startGateway } from "../../src/main.ts";
import { freePort } from "../helpers/processes.ts";
import { LIMITED_POLICY } from "./harness.ts";
import { startOidcProvider, type TestClient } from "./oidc_provider.ts";

/** Two machine clients of the provider; their client ids become the agents' ids (`sub`). */
export const AGENT_A: TestClient = {
  clientId: "agent-a",
  clientSecret: "secret-a-0123456789abcdef0123456789",
};
export const AGENT_B: TestClient = {
  clientId: "agent-b",
  clientSecret: "secret-b-0123456789abcdef0123456789",
};
/** The scope the gateway requires. */
export const SCOPE = "mcp:tools";

/** The gateway config for an issuer and a gateway base URL. */
export function oauthConfig(
  upstreamUrl: string,
  issuer: string,
  gatewayBase: string,
): Record<string, unknown> {
  return {
    mcpServers: {
      demo: { type: "http", url: upstreamUrl, guard: "demo", "guard-policies": LIMITED_POLICY },
    },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
    gateway: { oauth: { issuer, audience: `${gatewayBase}/mcp`, requiredScopes: [SCOPE] } },
  };
}

/** An SDK client on `<base>/mcp/demo` that authenticates as `who` through the SDK's OAuth flow. */
export async function oauthClient(base: string, issuer: string, who: TestClient): Promise<Client> {
  const authProvider = new ClientCredentialsProvider({
    clientId: who.clientId,
    clientSecret: who.clientSecret,
    expectedIssuer: issuer,
    // SDK 1.32.2 requests client_credentials tokens with the provider's own `scope` only (fetchToken
    // reads clientMetadata.scope; the challenge's scope= and the metadata's scopes_supported are not used).
    scope: SCOPE,
  });
  const transport = new StreamableHTTPClientTransport(new URL(`${base}/mcp/demo`), { authProvider });
  const client = new Client({ name: "oauth-e2e", version: "1" });
  await client.connect(transport);
  return client;
}

Deno.test({
  name: "oidc-provider + MCP SDK OAuth client through the gateway in Deno",
  // oidc-provider (Koa on node:http) keeps keep-alive timers briefly after close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freePort();
    const base = `http://127.0.0.1:${port}`;
    await using op = await startOidcProvider({
      clients: [AGENT_A, AGENT_B],
      resources: [`${base}/mcp`, `${base}/mcp/demo`],
      resourceScope: SCOPE,
    });
    const demo = createDemoUpstream();
    const ac = new AbortController();
    const up = Deno.serve({ port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} }, demo.fetch);
    const config = parseConfig(oauthConfig(`http://127.0.0.1:${up.addr.port}/mcp`, op.issuer, base));
    config.gateway.port = port;
    const logs: Record<string, unknown>[] = [];
    const { server } = await startGateway(config, {
      configBase: new URL(import.meta.url),
      env: {},
      store: new MemoryAgentLabelStore(),
      signal: ac.signal,
      log: (r) => logs.push(r),
    });
    const clients: Client[] = [];
    try {
      const a = await oauthClient(base, op.issuer, AGENT_A);
      clients.push(a);
      const listed = await a.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
      assertStringIncludes(JSON.stringify(listed), "[Filtered] 1 item(s)");
      await a.callTool({ name: "create_issue", arguments: { repo: "acme/web", title: "t", body: "b" } });
      const limit = await assertRejects(() =>
        a.callTool({ name: "create_issue", arguments: { repo: "acme/web", title: "t", body: "b" } })
      );
      assertStringIncludes(limit.message, "-32004");

      // The token the SDK got names the per-server resource, and its holder is the client.
      const token = (a.transport as unknown as { _authProvider: ClientCredentialsProvider })._authProvider
        .tokens()?.access_token;
      assert(token, "the SDK holds a token");
      const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      assertEquals([payload.aud, payload.sub, payload.iss], [`${base}/mcp/demo`, "agent-a", op.issuer]);
      const reflect = await fetch(`${base}/reflect`, { headers: { authorization: `Bearer ${token}` } });
      const body = await reflect.json();
      assertEquals(reflect.status, 200, JSON.stringify(body));
      assertEquals(body.agent.id, "agent-a");
      assertEquals(body.agent.authentication.method, "oauth");
      assertEquals(body.agent.authentication.issuer, op.issuer);
      assertEquals(body.agent.authentication.scopes, [SCOPE]);
      // An X-Agent-ID cannot buy agent-a a fresh budget.
      const other = await fetch(`${base}/reflect`, {
        headers: { authorization: `Bearer ${token}`, "x-agent-id": "fresh-1" },
      });
      assertEquals(other.status, 403);
      await other.body?.cancel();
      // The token of the per-server resource does not open the unified endpoint.
      const unified = await fetch(`${base}/mcp`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: "{}",
      });
      assertEquals(unified.status, 401);
      await unified.body?.cancel();

      // Another client is another agent, with its own budget.
      const b = await oauthClient(base, op.issuer, AGENT_B);
      clients.push(b);
      await b.callTool({ name: "create_issue", arguments: { repo: "acme/web", title: "t", body: "b" } });
      assertEquals(demo.stats().create_issue, 2);
      const agents = logs.filter((l) => l.event === "tool_call").map((
        l,
      ) => [l.agent, (l.auth as { method: string }).method]);
      assertEquals(agents, [["agent-a", "oauth"], ["agent-a", "oauth"], ["agent-a", "oauth"], [
        "agent-b",
        "oauth",
      ]]);
      assertEquals(op.jwksFetches(), 1, "the gateway fetched the provider's JWKS once");
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      ac.abort();
      await server.finished;
      await up.finished;
      await demo.close();
    }
  },
});
