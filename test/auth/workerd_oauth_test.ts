/**
 * The OAuth flow against the BUILT Worker in real workerd (Miniflare): `oidc-provider` on loopback
 * (run by this Deno test) issues the tokens, the MCP SDK client's `ClientCredentialsProvider` finds the
 * Worker's 401 and RFC 9728 metadata and calls guarded tools; jose in the Worker fetches the provider's
 * JWKS over loopback and verifies with workerd's WebCrypto. Forged tokens are refused there too.
 */
import { assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { Miniflare } from "miniflare";
import { buildWorker } from "../../scripts/build.ts";
import { miniflareOptions } from "../workers/targets.ts";
import { AGENT_A, AGENT_B, oauthClient, SCOPE, startFlowParts } from "./oidc_flow.ts";
import { unsignedToken } from "./issuer.ts";

Deno.test({
  name: "oidc-provider + MCP SDK OAuth client through the built Worker in workerd",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using parts = await startFlowParts();
    const { port, base, op, demo, config } = parts;
    const dir = await Deno.makeTempDir({ prefix: "workerd_oauth_" });
    let mf: Miniflare | undefined;
    try {
      const built = await buildWorker({ config, outDir: new URL(`file://${dir}/dist/`) });
      mf = new Miniflare({
        ...miniflareOptions(`${dir}/dist`, built.guards.map((g) => g.file), config, `${dir}/state`),
        host: "127.0.0.1",
        port,
      });
      const url = (await mf.ready).href;
      assertEquals(new URL(url).port, String(port));

      const prm = await fetch(`${base}/.well-known/oauth-protected-resource/mcp/demo`);
      assertEquals((await prm.json()).resource, `${base}/mcp/demo`);

      const a = await oauthClient(base, op.issuer, AGENT_A);
      const listed = await a.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
      assertStringIncludes(JSON.stringify(listed), "[Filtered] 1 item(s)");
      await a.callTool({ name: "create_issue", arguments: { repo: "acme/web", title: "t", body: "b" } });
      const limit = await assertRejects(() =>
        a.callTool({ name: "create_issue", arguments: { repo: "acme/web", title: "t", body: "b" } })
      );
      assertStringIncludes(limit.message, "-32004");
      await a.close();

      const token = await op.token(AGENT_B, `${base}/mcp/demo`, SCOPE);
      const reflect = await fetch(`${base}/reflect`, { headers: { authorization: `Bearer ${token}` } });
      const body = await reflect.json();
      assertEquals(reflect.status, 200, JSON.stringify(body));
      assertEquals([body.agent.id, body.agent.authentication.method], ["agent-b", "oauth"]);
      const spoof = await fetch(`${base}/reflect`, {
        headers: { authorization: `Bearer ${token}`, "x-agent-id": "agent-a" },
      });
      assertEquals(spoof.status, 403);
      await spoof.body?.cancel();
      // A token for the gateway-wide resource, but without the scope: step-up.
      const noScope = await op.token(AGENT_B, `${base}/mcp`);
      const step = await fetch(`${base}/reflect`, { headers: { authorization: `Bearer ${noScope}` } });
      assertEquals(step.status, 403);
      assertStringIncludes(step.headers.get("www-authenticate") ?? "", 'error="insufficient_scope"');
      await step.body?.cancel();
      // Forged: alg none, and a real token with its payload swapped.
      const [h, , s] = token.split(".");
      const swapped = `${h}.${btoa(JSON.stringify({ sub: "agent-a" })).replace(/=+$/, "")}.${s}`;
      for (
        const forged of [unsignedToken({ iss: op.issuer, aud: `${base}/mcp`, sub: "x", exp: 2e9 }), swapped]
      ) {
        const r = await fetch(`${base}/reflect`, { headers: { authorization: `Bearer ${forged}` } });
        assertEquals(r.status, 401);
        assertStringIncludes(r.headers.get("www-authenticate") ?? "", 'error="invalid_token"');
        await r.body?.cancel();
      }
      assertEquals(demo.stats().create_issue, 1);
      assertEquals(op.jwksFetches(), 1, "the Worker fetched the provider's JWKS once");
    } finally {
      await mf?.dispose();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
