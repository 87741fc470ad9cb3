/**
 * The whole OAuth flow with real parts, in Deno: `oidc-provider` (a certified OpenID provider) on
 * loopback issues RFC 9068 JWT access tokens for RFC 8707 resource indicators through the
 * client_credentials grant; the official MCP SDK client (`ClientCredentialsProvider`) meets the
 * gateway's 401, discovers its RFC 9728 metadata and the provider's metadata, obtains a token and
 * calls tools through the gateway (started with `startGateway`, as `deno task start` does).
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { parseConfig } from "../../src/config.ts";
import { MemoryAgentLabelStore } from "../../src/difc/store.ts";
import { startGateway } from "../../src/main.ts";
import { AGENT_A, AGENT_B, heldToken, oauthClient, SCOPE, startFlowParts } from "./oidc_flow.ts";

Deno.test({
  name: "oidc-provider + MCP SDK OAuth client through the gateway in Deno",
  // oidc-provider (Koa on node:http) keeps keep-alive timers briefly after close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using parts = await startFlowParts();
    const { base, op, demo } = parts;
    const ac = new AbortController();
    const config = parseConfig(parts.config);
    config.gateway.port = parts.port;
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
      const token = heldToken(a);
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
    }
  },
});
