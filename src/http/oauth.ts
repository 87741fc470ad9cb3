/**
 * The gateway as an OAuth 2.1 resource server (MCP authorization, 2025-06-18 onward): Bearer JWT
 * access tokens verified at the edge against the issuer's JWKS, RFC 9728 protected resource metadata,
 * RFC 8707 audiences and the `WWW-Authenticate` challenges MCP clients follow.
 *
 * JOSE is the `jose` package (WebCrypto only: the same code runs on Deno, Deno Deploy and workerd).
 * Around it, this module owns:
 * - the key cache ({@link JwksCache}): keys fetched once, refreshed after {@link JWKS_MAX_AGE_MS}, on an
 *   unknown `kid` at most once per {@link JWKS_COOLDOWN_MS}, and kept for {@link JWKS_STALE_MS} when
 *   the endpoint fails (an outage does not lock every agent out; a key removed while the endpoint is up
 *   stops working at the next refresh);
 * - issuer discovery when `jwksUrl` is not configured (OpenID Connect discovery, then RFC 8414);
 * - the checks: algorithm allow-list (asymmetric only: `none` and HS* are refused at load, so a public
 *   key can never serve as an HMAC secret), `iss`, `aud` (the resource URL of the route), `exp`
 *   (required) and `nbf` with {@link OAuthSettings.clockToleranceSeconds} of skew, the agent claim and
 *   the required scopes.
 *
 * The token is never forwarded: the MCP proxy builds upstream requests from an allow-list of headers
 * that does not contain `Authorization`.
 *
 * @module
 */
import {
  createLocalJWKSet,
  type CryptoKey,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  jwtVerify,
} from "jose";
import { errorMessage, isObject } from "../util.ts";

/** The validated `gateway.oauth` block. */
export interface OAuthSettings {
  /** The authorization server's issuer identifier; tokens must carry it as `iss`. */
  issuer: string;
  /** This gateway's resource URL (RFC 8707), e.g. `https://gw.example.com/mcp`; tokens must name it in `aud`. */
  audience: string;
  /** JWKS location; null = discovered from the issuer's metadata. */
  jwksUrl: string | null;
  /** The claim that names the agent. Default `sub`. */
  agentClaim: string;
  /** Scopes every token must hold (403 `insufficient_scope` otherwise). */
  requiredScopes: string[];
  /** Accepted JWS algorithms (asymmetric only). */
  algorithms: string[];
  /** Allowed clock skew for `exp`/`nbf`, in seconds. */
  clockToleranceSeconds: number;
}

/** Asymmetric JWS algorithms `jose` verifies with WebCrypto; the default allow-list. */
export const ASYMMETRIC_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
] as const;

/** Default skew for `exp`/`nbf`: clocks of edge hosts and issuers agree within seconds. */
export const DEFAULT_CLOCK_TOLERANCE_S = 30;
/** Longest accepted token: real access tokens are 1-4 KiB; bounds the work an attacker can ask for. */
export const MAX_TOKEN_BYTES = 16 * 1024;
/** A fetched JWKS is used this long before it is fetched again. */
export const JWKS_MAX_AGE_MS = 5 * 60_000;
/** At most one fetch per this interval for an unknown `kid` (or after a failed fetch). */
export const JWKS_COOLDOWN_MS = 30_000;
/** Keys already fetched keep working this long while the JWKS endpoint fails. */
export const JWKS_STALE_MS = 60 * 60_000;
/** Deadline of one JWKS or metadata fetch. */
export const FETCH_TIMEOUT_MS = 5_000;
/** Largest JWKS or metadata document read. */
export const MAX_DOCUMENT_BYTES = 256 * 1024;

/** The issuer's keys or metadata cannot be had (and no usable cached copy exists): fail closed, 503. */
export class KeysUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeysUnavailableError";
  }
}

/** A token was refused: 401 `invalid_token` (or 403 `insufficient_scope` when `scope` is set). */
export class TokenError extends Error {
  /** Scopes that were required but missing (step-up), or null for an invalid token. */
  readonly missingScopes: string[] | null;
  constructor(message: string, missingScopes: string[] | null = null) {
    super(message);
    this.name = "TokenError";
    this.missingScopes = missingScopes;
  }
}

/** What a verified token says about its holder. */
export interface VerifiedToken {
  agentId: string;
  issuer: string;
  subject: string | null;
  clientId: string | null;
  scopes: string[];
  /** `exp` as an ISO date. */
  expiresAt: string;
}

/** Options shared by the fetching parts. */
export interface FetchOptions {
  fetch?: typeof fetch;
  /** Clock in ms (tests). */
  now?: () => number;
}

async function fetchJson(url: string, doFetch: typeof fetch, what: string): Promise<unknown> {
  let res: Response;
  try {
    res = await doFetch(url, {
      headers: { accept: "application/json" },
      redirect: "manual",
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
  } catch (e) {
    throw new KeysUnavailableError(`${what} ${url} unreachable: ${errorMessage(e)}`);
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    throw new KeysUnavailableError(`${what} ${url} answered HTTP ${res.status}`);
  }
  const declared = Number(res.headers.get("content-length") ?? "0");
  if (declared > MAX_DOCUMENT_BYTES) {
    await res.body?.cancel().catch(() => {});
    throw new KeysUnavailableError(`${what} ${url} is larger than ${MAX_DOCUMENT_BYTES} bytes`);
  }
  const text = await res.text();
  if (text.length > MAX_DOCUMENT_BYTES) {
    throw new KeysUnavailableError(`${what} ${url} is larger than ${MAX_DOCUMENT_BYTES} bytes`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new KeysUnavailableError(`${what} ${url} is not JSON`);
  }
}

/**
 * The metadata URLs of an issuer, in the order MCP clients try them: OpenID Connect discovery
 * (path appended), then RFC 8414 (well-known inserted before the path).
 */
export function issuerMetadataUrls(issuer: string): string[] {
  const u = new URL(issuer);
  const path = u.pathname.replace(/\/+$/, "");
  return [
    `${u.origin}${path}/.well-known/openid-configuration`,
    `${u.origin}/.well-known/oauth-authorization-server${path}`,
  ];
}

/**
 * The issuer's signing keys, cached.
 *
 * @example
 * ```ts
 * const keys = new JwksCache({ issuer, jwksUrl: null }); // discovers jwks_uri on first use
 * await jwtVerify(token, (h, t) => keys.key(h, t), { issuer, audience });
 * ```
 */
export class JwksCache {
  readonly #issuer: string;
  readonly #configuredUrl: string | null;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  #jwksUrl: string | null = null;
  #local: ReturnType<typeof createLocalJWKSet> | null = null;
  #fetchedAt = 0;
  #attemptedAt = Number.NEGATIVE_INFINITY;
  #lastError: KeysUnavailableError | null = null;
  #refreshing: Promise<void> | null = null;
  /** JWKS documents fetched so far (diagnostics, tests). */
  fetches = 0;

  constructor(opts: { issuer: string; jwksUrl: string | null } & FetchOptions) {
    this.#issuer = opts.issuer;
    this.#configuredUrl = opts.jwksUrl;
    this.#fetch = opts.fetch ?? ((input, init) => fetch(input, init));
    this.#now = opts.now ?? Date.now;
  }

  async #discover(): Promise<string> {
    if (this.#configuredUrl) return this.#configuredUrl;
    if (this.#jwksUrl) return this.#jwksUrl;
    let last: unknown;
    for (const url of issuerMetadataUrls(this.#issuer)) {
      try {
        const meta = await fetchJson(url, this.#fetch, "issuer metadata");
        if (!isObject(meta) || meta.issuer !== this.#issuer) {
          throw new KeysUnavailableError(
            `issuer metadata ${url} names issuer ${JSON.stringify(isObject(meta) ? meta.issuer : null)}, ` +
              `expected ${JSON.stringify(this.#issuer)}`,
          );
        }
        if (typeof meta.jwks_uri !== "string" || !/^https?:\/\//.test(meta.jwks_uri)) {
          throw new KeysUnavailableError(`issuer metadata ${url} has no http(s) jwks_uri`);
        }
        return this.#jwksUrl = meta.jwks_uri;
      } catch (e) {
        last = e;
      }
    }
    throw last instanceof KeysUnavailableError ? last : new KeysUnavailableError(errorMessage(last));
  }

  /** Fetches the key set (one fetch at a time; concurrent callers share it). */
  #refresh(): Promise<void> {
    this.#refreshing ??= (async () => {
      this.#attemptedAt = this.#now();
      try {
        const url = await this.#discover();
        this.fetches++;
        const doc = await fetchJson(url, this.#fetch, "JWKS");
        if (!isObject(doc) || !Array.isArray(doc.keys)) {
          throw new KeysUnavailableError(`JWKS ${url} has no "keys" array`);
        }
        this.#local = createLocalJWKSet(doc as unknown as JSONWebKeySet);
        this.#fetchedAt = this.#now();
        this.#lastError = null;
      } catch (e) {
        this.#lastError = e instanceof KeysUnavailableError ? e : new KeysUnavailableError(errorMessage(e));
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  /** The key for a token's protected header: the `jose` get-key function over the cache. */
  async key(
    header: Parameters<ReturnType<typeof createLocalJWKSet>>[0],
    token: Parameters<ReturnType<typeof createLocalJWKSet>>[1],
  ): Promise<CryptoKey> {
    const now = this.#now();
    const coolingDown = now - this.#attemptedAt < JWKS_COOLDOWN_MS;
    if (!this.#local || now - this.#fetchedAt >= JWKS_MAX_AGE_MS) {
      // Due for a fetch; after a failure, wait out the cooldown before asking the endpoint again.
      if (!coolingDown || this.#lastError === null) await this.#refresh();
      if (!this.#local || this.#now() - this.#fetchedAt >= JWKS_STALE_MS) {
        throw this.#lastError ?? new KeysUnavailableError("issuer keys not available");
      }
    }
    try {
      return await this.#local(header, token);
    } catch (e) {
      if (!(e instanceof errors.JWKSNoMatchingKey)) throw e;
      // While the endpoint fails, whether the key exists cannot be known: "unavailable", not "invalid".
      if (this.#lastError) throw this.#lastError;
      if (this.#now() - this.#attemptedAt < JWKS_COOLDOWN_MS) throw e;
      // A key we have not seen: the issuer may have rotated. One fetch per cooldown at most.
      await this.#refresh();
      if (this.#lastError) throw this.#lastError;
      return await this.#local!(header, token);
    }
  }
}

/** The scopes of a token: `scope` (RFC 9068, space-separated) or `scp` (string or array). */
function scopesOf(p: JWTPayload): string[] {
  const raw = p.scope ?? p.scp;
  if (typeof raw === "string") return raw.split(" ").filter((s) => s !== "");
  if (Array.isArray(raw)) return raw.filter((s): s is string => typeof s === "string");
  return [];
}

/** Why `jose` refused a token, in words an agent's operator can act on. */
function describeJoseError(e: unknown): string {
  if (e instanceof errors.JWTExpired) return "token expired";
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.claim === "nbf") return "token not yet valid (nbf)";
    if (e.claim === "iss") return "token issuer (iss) is not the configured issuer";
    if (e.claim === "aud") return "token audience (aud) does not name this resource";
    if (e.claim === "exp") return "token has no expiry (exp)";
    return `token claim check failed: ${e.message}`;
  }
  if (e instanceof errors.JOSEAlgNotAllowed) return "token algorithm not allowed";
  if (e instanceof errors.JWSSignatureVerificationFailed) return "token signature verification failed";
  if (e instanceof errors.JWKSNoMatchingKey) return "no key of the issuer matches the token";
  if (e instanceof errors.JWKSMultipleMatchingKeys) return "several keys of the issuer match the token";
  if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) return "malformed token";
  if (e instanceof errors.JOSENotSupported) return "token algorithm or key type not supported";
  return "token verification failed";
}

/**
 * Verifies a Bearer access token.
 *
 * @param audiences the resource URLs accepted on this route (any one in `aud` suffices).
 * @param validateId checks the agent claim's value (the `X-Agent-ID` rules); throws on a bad one.
 * @throws {TokenError} invalid token (401) or missing scopes (403).
 * @throws {KeysUnavailableError} keys cannot be had (503).
 *
 * @example
 * ```ts
 * const t = await verifyAccessToken(token, settings, keys, ["https://gw.example.com/mcp"], (id) => id);
 * t.agentId; // the `sub` claim by default
 * ```
 */
export async function verifyAccessToken(
  token: string,
  settings: OAuthSettings,
  keys: JwksCache,
  audiences: string[],
  validateId: (id: string) => string,
): Promise<VerifiedToken> {
  if (token.length > MAX_TOKEN_BYTES) throw new TokenError(`token longer than ${MAX_TOKEN_BYTES} bytes`);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, (h, t) => keys.key(h, t), {
      issuer: settings.issuer,
      audience: audiences,
      algorithms: settings.algorithms,
      clockTolerance: settings.clockToleranceSeconds,
      requiredClaims: ["exp"],
    }));
  } catch (e) {
    if (e instanceof KeysUnavailableError) throw e;
    throw new TokenError(describeJoseError(e));
  }
  const claim = payload[settings.agentClaim];
  if (typeof claim !== "string" || claim === "") {
    throw new TokenError(`token has no "${settings.agentClaim}" claim naming the agent`);
  }
  let agentId: string;
  try {
    agentId = validateId(claim);
  } catch {
    throw new TokenError(`token "${settings.agentClaim}" claim is not a valid agent id`);
  }
  const scopes = scopesOf(payload);
  const missing = settings.requiredScopes.filter((s) => !scopes.includes(s));
  if (missing.length > 0) throw new TokenError(`token lacks scope ${missing.join(" ")}`, missing);
  return {
    agentId,
    issuer: settings.issuer,
    subject: typeof payload.sub === "string" ? payload.sub : null,
    clientId: typeof payload.client_id === "string" ? payload.client_id : null,
    scopes,
    expiresAt: new Date((payload.exp as number) * 1000).toISOString(),
  };
}

/** The gateway's public base: the audience without a trailing `/mcp` (or `/`). */
function baseOf(audience: string): { origin: string; base: string } {
  const u = new URL(audience);
  const path = u.pathname.replace(/\/+$/, "").replace(/\/mcp$/, "");
  return { origin: u.origin, base: path };
}

/**
 * The resource URL of one route: the audience for `/mcp` and `/reflect`, `<base>/mcp/<server>` for a
 * routed server (so an issuer may mint tokens for one server only, RFC 8707).
 *
 * @example
 * ```ts
 * resourceUrl("https://gw.example.com/mcp", "github"); // "https://gw.example.com/mcp/github"
 * resourceUrl("https://gw.example.com/mcp", null);     // "https://gw.example.com/mcp"
 * ```
 */
export function resourceUrl(audience: string, serverId: string | null): string {
  if (serverId === null) return audience;
  const { origin, base } = baseOf(audience);
  return `${origin}${base}/mcp/${serverId}`;
}

/**
 * Where a resource's RFC 9728 metadata lives: the well-known path inserted between host and path.
 *
 * @example
 * ```ts
 * metadataUrl("https://gw.example.com/mcp/github");
 * // "https://gw.example.com/.well-known/oauth-protected-resource/mcp/github"
 * ```
 */
export function metadataUrl(resource: string): string {
  const u = new URL(resource);
  const path = u.pathname === "/" ? "" : u.pathname.replace(/\/+$/, "");
  return `${u.origin}${WELL_KNOWN_PRM}${path}`;
}

/** RFC 9728's well-known path. */
export const WELL_KNOWN_PRM = "/.well-known/oauth-protected-resource";

/**
 * The protected resource metadata document for a well-known path suffix, or null when the suffix
 * names no resource of this gateway. The bare well-known path (and the audience's own path) describe
 * the gateway; `/mcp/<server>` (under the audience's base) describes one server.
 */
export function protectedResourceMetadata(
  settings: OAuthSettings,
  suffix: string,
  servers: readonly string[],
): Record<string, unknown> | null {
  const s = suffix.replace(/\/+$/, "");
  const { base } = baseOf(settings.audience);
  const audiencePath = new URL(settings.audience).pathname.replace(/\/+$/, "");
  let resource: string | null = null;
  if (s === "" || s === audiencePath) resource = settings.audience;
  else {
    const m = /^(.*)\/mcp\/([^/]+)$/.exec(s);
    if (m && m[1] === base && servers.includes(m[2])) resource = resourceUrl(settings.audience, m[2]);
  }
  if (resource === null) return null;
  const doc: Record<string, unknown> = {
    resource,
    authorization_servers: [settings.issuer],
    bearer_methods_supported: ["header"],
    resource_signing_alg_values_supported: settings.algorithms,
    resource_name: "mcp-edge-guard",
  };
  if (settings.requiredScopes.length > 0) doc.scopes_supported = settings.requiredScopes;
  return doc;
}

/** A quoted-string for an auth-param (RFC 9110 §5.6.4): no quotes or backslashes, printable only. */
function quoted(v: string): string {
  // deno-lint-ignore no-control-regex
  return `"${v.replace(/["\\\x00-\x1f\x7f]/g, "'")}"`;
}

/**
 * The `WWW-Authenticate` value of a refusal (RFC 6750 §3 with RFC 9728 §5.1's `resource_metadata`).
 *
 * @example
 * ```ts
 * bearerChallenge({ resourceMetadata: "https://gw/.well-known/oauth-protected-resource/mcp" });
 * // 'Bearer resource_metadata="https://gw/.well-known/oauth-protected-resource/mcp"'
 * ```
 */
export function bearerChallenge(o: {
  resourceMetadata: string;
  error?: "invalid_token" | "insufficient_scope";
  description?: string;
  scope?: string[];
}): string {
  const params: string[] = [];
  if (o.error) params.push(`error=${quoted(o.error)}`);
  if (o.description) params.push(`error_description=${quoted(o.description)}`);
  if (o.scope && o.scope.length > 0) params.push(`scope=${quoted(o.scope.join(" "))}`);
  params.push(`resource_metadata=${quoted(o.resourceMetadata)}`);
  return `Bearer ${params.join(", ")}`;
}
