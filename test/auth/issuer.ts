/**
 * A minimal token issuer for the forged-token tests: a loopback HTTP server publishing OpenID
 * discovery metadata and a JWKS that the test can rotate or take down, plus helpers that sign
 * (and forge) tokens with `jose`.
 *
 * @module
 */
import {
  base64url,
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";

/** A signing key of the issuer. */
export interface IssuerKey {
  kid: string;
  alg: "ES256" | "RS256";
  privateKey: CryptoKey;
  publicJwk: JWK;
  /** The public key as PEM (what an HS256-with-public-key forgery uses as the secret). */
  publicPem: string;
}

/** Generates a key. */
export async function issuerKey(kid: string, alg: "ES256" | "RS256" = "ES256"): Promise<IssuerKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return {
    kid,
    alg,
    privateKey,
    publicJwk: { ...await exportJWK(publicKey), kid, alg, use: "sig" },
    publicPem: await exportSPKI(publicKey),
  };
}

/** The loopback issuer. */
export interface TestIssuer extends AsyncDisposable {
  issuer: string;
  jwksUrl: string;
  /** Keys published in the JWKS (replace to rotate). */
  published: IssuerKey[];
  /** While true, the JWKS and metadata endpoints answer 503. */
  down: boolean;
  /** JWKS requests received. */
  jwksHits: number;
  /** Metadata requests received, by path. */
  metadataHits: string[];
  /** A token signed with `key` (default: the first published key). `claims` override the defaults. */
  sign(
    claims: JWTPayload,
    opts?: { key?: IssuerKey; kid?: string; header?: Record<string, unknown> },
  ): Promise<string>;
  close(): Promise<void>;
}

/** Default claims: this issuer, `aud`, `sub`, issued now, valid 5 minutes. */
export async function startIssuer(audience: string): Promise<TestIssuer> {
  const first = await issuerKey("k1");
  const ac = new AbortController();
  // deno-lint-ignore prefer-const
  let self: TestIssuer;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (self.down) return new Response("down", { status: 503 });
    if (path === "/jwks") {
      self.jwksHits++;
      return Response.json({ keys: self.published.map((k) => k.publicJwk) });
    }
    if (path.includes("/.well-known/")) {
      self.metadataHits.push(path);
      if (path === "/.well-known/openid-configuration") {
        return Response.json({
          issuer: self.issuer,
          jwks_uri: self.jwksUrl,
          token_endpoint: `${self.issuer}/token`,
        });
      }
    }
    return new Response("not found", { status: 404 });
  });
  const issuer = `http://127.0.0.1:${server.addr.port}`;
  self = {
    issuer,
    jwksUrl: `${issuer}/jwks`,
    published: [first],
    down: false,
    jwksHits: 0,
    metadataHits: [],
    async sign(claims, opts = {}) {
      const key = opts.key ?? self.published[0];
      const now = Math.floor(Date.now() / 1000);
      return await new SignJWT({
        iss: issuer,
        aud: audience,
        sub: "agent-oauth",
        iat: now,
        exp: now + 300,
        ...claims,
      })
        .setProtectedHeader({ alg: key.alg, kid: opts.kid ?? key.kid, typ: "at+jwt", ...opts.header })
        .sign(key.privateKey);
    },
    async close() {
      ac.abort();
      await server.finished;
    },
    [Symbol.asyncDispose]() {
      return self.close();
    },
  };
  return self;
}

/** An unsigned token (`alg: none`). */
export function unsignedToken(claims: JWTPayload): string {
  const enc = (o: unknown) => base64url.encode(JSON.stringify(o));
  return `${enc({ alg: "none", typ: "JWT" })}.${enc(claims)}.`;
}

/** The classic key-confusion forgery: HS256 with the issuer's public key (PEM) as the HMAC secret. */
export async function hs256WithPublicKey(claims: JWTPayload, key: IssuerKey): Promise<string> {
  return await new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", kid: key.kid, typ: "at+jwt" })
    .sign(new TextEncoder().encode(key.publicPem));
}
