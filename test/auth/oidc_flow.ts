/**
 * What the Deno and workerd OAuth end-to-end tests share: the provider's clients, the gateway config
 * and an MCP SDK client that authenticates through the SDK's client_credentials flow.
 *
 * @module
 */
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/client/auth-extensions"
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";
import { createDemoUpstream } from "../../src/demo/upstream.ts";
import { DEMO_GUARD_URL } from "../../src/main.ts";
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

/** The access token the client's auth provider holds. */
export function heldToken(client: Client): string | undefined {
  return (client.transport as unknown as { _authProvider: ClientCredentialsProvider })._authProvider.tokens()
    ?.access_token;
}

/**
 * The parts around a gateway under test: a free port for the gateway (the audience must be known
 * before it starts), the provider accepting that gateway's resources, the demo upstream on loopback
 * and the gateway config tying them together. Disposing stops the provider and the upstream.
 */
export async function startFlowParts() {
  const port = freePort();
  const base = `http://127.0.0.1:${port}`;
  const op = await startOidcProvider({
    clients: [AGENT_A, AGENT_B],
    resources: [`${base}/mcp`, `${base}/mcp/demo`],
    resourceScope: SCOPE,
  });
  const demo = createDemoUpstream();
  const ac = new AbortController();
  const up = Deno.serve({ port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} }, demo.fetch);
  return {
    port,
    base,
    op,
    demo,
    config: oauthConfig(`http://127.0.0.1:${up.addr.port}/mcp`, op.issuer, base),
    async [Symbol.asyncDispose]() {
      ac.abort();
      await up.finished;
      await demo.close();
      await op.close();
    },
  };
}
