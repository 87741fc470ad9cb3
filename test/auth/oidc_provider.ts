/**
 * A real OpenID provider for tests: `oidc-provider` (a certified implementation) on 127.0.0.1:0,
 * issuing RFC 9068 JWT access tokens through the client_credentials grant for RFC 8707 resource
 * indicators. Runs in Deno (it prints an "unsupported runtime" warning: it is tested on Node, but
 * everything used here works).
 *
 * @module
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import Provider from "oidc-provider";

/** A registered client of the provider. */
export interface TestClient {
  clientId: string;
  clientSecret: string;
  /** Scopes the client may request, space-separated. */
  scope?: string;
}

/** Options of {@link startOidcProvider}. */
export interface OidcProviderOptions {
  clients: TestClient[];
  /** Resource indicators the provider accepts (exact URLs). */
  resources: string[];
  /** Scopes the resource server accepts, space-separated. Default `"mcp:tools"`. */
  resourceScope?: string;
  /** Access token lifetime in seconds. Default 300. */
  accessTokenTTL?: number;
}

/** A running provider. */
export interface OidcProvider {
  issuer: string;
  /** Number of JWKS fetches so far. */
  jwksFetches(): number;
  /** A token straight from the token endpoint (client_credentials, client_secret_basic). */
  token(client: TestClient, resource: string, scope?: string): Promise<string>;
  /** Stops the HTTP server. */
  close(): Promise<void>;
}

async function signingKey(kid: string): Promise<JWK> {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  return { ...await exportJWK(privateKey), kid, alg: "ES256", use: "sig" };
}

/**
 * Starts the provider on 127.0.0.1 (a free port).
 *
 * @example
 * ```ts
 * await using op = await startOidcProvider({ clients: [c], resources: ["http://127.0.0.1:1/mcp"] });
 * ```
 */
export async function startOidcProvider(opts: OidcProviderOptions): Promise<OidcProvider & AsyncDisposable> {
  let fetches = 0;
  const keys = [await signingKey("k1")];
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;
  const scope = opts.resourceScope ?? "mcp:tools";
  const provider = new Provider(issuer, {
    clients: opts.clients.map((c) => ({
      client_id: c.clientId,
      client_secret: c.clientSecret,
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "ES256",
      scope: c.scope ?? scope,
    })),
    jwks: { keys },
    ttl: {
      ClientCredentials: (_ctx: unknown, token: { resourceServer?: { accessTokenTTL?: number } }) =>
        token.resourceServer?.accessTokenTTL ?? 300,
    },
    scopes: scope.split(" "),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => opts.resources[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => {
          if (!opts.resources.includes(resource)) throw new Provider.errors.InvalidTarget();
          return {
            scope,
            audience: resource,
            accessTokenTTL: opts.accessTokenTTL ?? 300,
            accessTokenFormat: "jwt",
            jwt: { sign: { alg: "ES256" } },
          };
        },
      },
    },
  });
  // deno-lint-ignore no-explicit-any
  (provider as any).on("server_error", (_ctx: unknown, err: Error) => console.error("oidc-provider:", err));
  const handler = provider.callback();
  server.on("request", (req, res) => {
    if (req.url?.startsWith("/jwks")) fetches++;
    handler(req, res);
  });
  const op: OidcProvider = {
    issuer,
    jwksFetches: () => fetches,
    async token(client, resource, s) {
      const body = new URLSearchParams({ grant_type: "client_credentials", resource });
      if (s) body.set("scope", s);
      const res = await fetch(`${issuer}/token`, {
        method: "POST",
        headers: {
          authorization: `Basic ${btoa(`${client.clientId}:${client.clientSecret}`)}`,
          "content-type": "application/x-www-form-urlencoded",
        },
        body,
      });
      const json = await res.json();
      if (!res.ok) throw new Error(`token endpoint: ${res.status} ${JSON.stringify(json)}`);
      return json.access_token as string;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return { ...op, [Symbol.asyncDispose]: op.close };
}
