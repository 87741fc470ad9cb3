/**
 * Authentication and agent identity for MCP routes and `/reflect`.
 *
 * Three ways to establish who the agent is, any combination of which may be configured:
 *
 * | mode | configured as | the agent id comes from | trust |
 * |---|---|---|---|
 * | shared key | `gateway.apiKey` | `X-Agent-ID` (else `key-<hash>`) | the caller names itself |
 * | per-agent key | `gateway.agents.<id>.apiKey` / `.apiKeySha256` | the key | the key holder is `<id>` |
 * | OAuth 2.1 | `gateway.oauth` | a claim of a verified JWT (`sub`) | the issuer vouches |
 *
 * The shared key keeps gh-aw-mcpg's behaviour (guard-abi.md §4.3): whoever holds it may act as any agent,
 * so labels, taint and tool-call limits bind to a name the caller chose. It may not take a name that
 * belongs to a per-agent key. With a per-agent key or a token, `X-Agent-ID` is optional and, when sent,
 * must equal the authenticated id (403 otherwise); a token whose agent claim names a per-agent key's
 * agent is refused too, so an issuer's client cannot share that agent's labels or sessions.
 *
 * Keys are compared as SHA-256 digests, in constant time, against every configured key on every
 * request, so neither the length nor the position of a difference nor which key matched shows in the
 * timing. Only digests are held after the first request.
 *
 * Differences from gh-aw-mcpg, deliberate:
 * - The key is accepted as the raw `Authorization` value (the reference's form) and as `Bearer <key>`
 *   (what MCP SDK clients send).
 * - Without `X-Agent-ID`, the reference uses the shared key itself as the agent identity, which writes
 *   the secret into labels, logs and `/reflect`. We derive `key-<first 16 hex of SHA-256(key)>` instead:
 *   stable for the same key, useless to an attacker.
 *
 * An {@link Authenticator} is immutable: reloading keys or the OAuth settings builds a new one and the
 * gateway swaps its reference, so a request sees one consistent set of keys from start to end.
 *
 * @module
 */
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { toHex } from "../util.ts";
import {
  bearerChallenge,
  JWKS_MAX_AGE_MS,
  JwksCache,
  KeysUnavailableError,
  MAX_TOKEN_BYTES,
  metadataUrl,
  type OAuthSettings,
  protectedResourceMetadata,
  resourceUrl,
  TokenError,
  type VerifiedToken,
  verifyAccessToken,
} from "./oauth.ts";

/** Verified tokens remembered per authenticator (oldest dropped first). */
export const VERIFIED_TOKENS_CACHED = 4096;

/** An authentication failure, carrying the HTTP status, the JSON body's code and extra headers. */
export class AuthError extends Error {
  readonly status: 400 | 401 | 403 | 503;
  readonly code: string;
  /** Response headers (`WWW-Authenticate`, `Retry-After`). */
  readonly headers: Record<string, string>;
  constructor(
    status: 400 | 401 | 403 | 503,
    code: string,
    message: string,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "AuthError";
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/** Longest accepted `X-Agent-ID` (and agent id from any source). */
export const MAX_AGENT_ID_LENGTH = 128;
/** Agent ids: letters, digits and `._@:+-`, starting with a letter or digit. */
export const AGENT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@:+-]*$/;

/** True when `id` is a well-formed agent id. */
export function isAgentId(id: string): boolean {
  return id.length > 0 && id.length <= MAX_AGENT_ID_LENGTH && AGENT_ID_PATTERN.test(id);
}

const encoder = new TextEncoder();

/**
 * Compares two strings through their SHA-256 digests: the time depends neither on where they differ
 * nor on either length (32 bytes are always compared).
 */
export function constantTimeEqual(a: string, b: string): boolean {
  return constantTimeEqualBytes(sha256(a), sha256(b));
}

/** Compares two byte arrays in time that depends only on the second's length. */
export function constantTimeEqualBytes(x: Uint8Array, y: Uint8Array): boolean {
  // Always walk the expected value's length so a wrong-length guess costs the same as a wrong byte.
  let diff = x.length ^ y.length;
  for (let i = 0; i < y.length; i++) diff |= (x[i % (x.length || 1)] ?? 0) ^ y[i];
  return diff === 0;
}

// Synchronous (@noble/hashes): a credential is hashed on every request, and a WebCrypto digest
// round trip cost 13-60 µs of CPU per call against ~3 µs here (gateway profile, BENCHMARKS.md §1a).
function sha256(text: string): Uint8Array {
  return nobleSha256(encoder.encode(text));
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** One per-agent key: the agent it names and the SHA-256 of the key (lower-case hex). */
export interface AgentKey {
  id: string;
  keySha256: string;
}

/** Everything the authenticator reads from the configuration (`gateway.apiKey`, `agents`, `oauth`). */
export interface AuthSettings {
  /** The shared key, or null when only per-agent keys and/or OAuth are configured. */
  apiKey: string | null;
  agents: readonly AgentKey[];
  oauth: OAuthSettings | null;
}

/** How the agent was authenticated. */
export type AuthMethod = "shared-key" | "agent-key" | "oauth";

/** The authenticated agent, and how its identity was established (shown by `/reflect`, logged). */
export interface Identity {
  id: string;
  method: AuthMethod;
  /** Where the id came from: the caller's `X-Agent-ID`, the shared key's hash, the agent's key, a token claim. */
  idFrom: "x-agent-id" | "key-hash" | "agent-key" | "token-claim";
  /** For `oauth`: what the verified token said. */
  token?: {
    issuer: string;
    subject: string | null;
    clientId: string | null;
    claim: string;
    scopes: string[];
    expiresAt: string;
  };
}

/** Which route is being authenticated: a routed server, the unified endpoint, or `/reflect`. */
export type AuthTarget = { kind: "server"; serverId: string } | { kind: "unified" } | { kind: "reflect" };

/** Authenticates requests with one fixed set of keys and OAuth settings. */
export interface Authenticator {
  readonly settings: AuthSettings;
  /** The issuer's key cache (null without OAuth); diagnostics and tests. */
  readonly keys: JwksCache | null;
  /**
   * Checks the request's credentials and returns the agent.
   * @throws {AuthError} with the status and headers to answer.
   */
  authenticate(headers: Headers, target: AuthTarget): Promise<Identity>;
  /** RFC 9728 metadata for a well-known path suffix (`""`, `/mcp`, `/mcp/<server>`), or null. */
  resourceMetadata(suffix: string): Record<string, unknown> | null;
}

/** Options of {@link createAuthenticator}. */
export interface AuthenticatorOptions {
  /** Ids of the configured servers (their per-server resource URLs are accepted audiences). */
  servers: readonly string[];
  /** Fetch used for issuer metadata and JWKS. Default: global fetch. */
  fetch?: typeof fetch;
  /** Clock in ms (tests). */
  now?: () => number;
}

/**
 * Validates an `X-Agent-ID`: 1-128 characters of letters, digits and `._@:+-`, starting with a letter
 * or digit (so never `.`/`..`, never a path separator, never empty).
 */
export function validateAgentId(id: string): string {
  const t = id.trim();
  if (!isAgentId(t)) {
    throw new AuthError(
      400,
      "invalid_agent_id",
      `invalid X-Agent-ID: must be 1-${MAX_AGENT_ID_LENGTH} characters of letters, digits and ._@:+- starting with a letter or digit`,
    );
  }
  return t;
}

/**
 * Builds an authenticator. Cheap and synchronous; key digests are computed on first use and the
 * issuer's keys are fetched on the first token.
 *
 * @example
 * ```ts
 * const auth = createAuthenticator({ apiKey: null, agents: [{ id: "ci", keySha256 }], oauth: null },
 *   { servers: ["github"] });
 * const who = await auth.authenticate(req.headers, { kind: "server", serverId: "github" });
 * who.id; // "ci"
 * ```
 */
export function createAuthenticator(settings: AuthSettings, opts: AuthenticatorOptions): Authenticator {
  const oauth = settings.oauth;
  const keys = oauth
    ? new JwksCache({ issuer: oauth.issuer, jwksUrl: oauth.jwksUrl, fetch: opts.fetch, now: opts.now })
    : null;
  const reserved = new Set(settings.agents.map((a) => a.id));
  // Index 0 is the shared key when there is one; the rest are the agents' keys, in order.
  let digests: Uint8Array[] | undefined;
  const allDigests = () =>
    digests ??= [
      ...(settings.apiKey === null ? [] : [sha256(settings.apiKey)]),
      ...settings.agents.map((a) => fromHex(a.keySha256)),
    ];
  let sharedId: string | undefined;
  // Tokens verified on this route kind, by SHA-256 of the token: agents send the same token on every
  // request, and a signature check costs 0.3-0.5 ms (BENCHMARKS.md). An entry lives until the token
  // expires, and no longer than a JWKS refresh interval, so a key the issuer withdraws stops admitting
  // cached tokens no later than it stops admitting new ones.
  const verified = new Map<string, { token: VerifiedToken; until: number }>();
  const clock = opts.now ?? Date.now;
  const verify = async (
    presented: string,
    digest: Uint8Array,
    target: AuthTarget,
  ): Promise<VerifiedToken> => {
    const k = `${target.kind === "server" ? `s:${target.serverId}` : target.kind}\n${toHex(digest)}`;
    const hit = verified.get(k);
    const expiry = (t: VerifiedToken) => Date.parse(t.expiresAt) + oauth!.clockToleranceSeconds * 1000;
    if (hit && clock() < hit.until && Date.now() < expiry(hit.token)) return hit.token;
    if (hit) verified.delete(k);
    const t = await verifyAccessToken(presented, oauth!, keys!, audiencesFor(target), (id) => {
      if (!isAgentId(id)) throw new Error("bad id");
      return id;
    });
    if (verified.size >= VERIFIED_TOKENS_CACHED) verified.delete(verified.keys().next().value!);
    verified.set(k, { token: t, until: clock() + JWKS_MAX_AGE_MS });
    return t;
  };

  const challengeFor = (target: AuthTarget) => {
    if (!oauth) return null;
    const resource = target.kind === "server" ? resourceUrl(oauth.audience, target.serverId) : oauth.audience;
    return metadataUrl(resource);
  };
  const refuse = (
    target: AuthTarget,
    status: 401 | 403,
    code: string,
    message: string,
    extra: { error?: "invalid_token" | "insufficient_scope"; scope?: string[] } = {},
  ): AuthError => {
    const prm = challengeFor(target);
    const headers: Record<string, string> = {};
    if (prm && (status === 401 || extra.error === "insufficient_scope")) {
      headers["www-authenticate"] = bearerChallenge({
        resourceMetadata: prm,
        error: extra.error,
        description: extra.error ? message : undefined,
        scope: extra.scope ??
          (status === 401 && oauth!.requiredScopes.length ? oauth!.requiredScopes : undefined),
      });
    }
    return new AuthError(status, code, message, headers);
  };
  const audiencesFor = (target: AuthTarget): string[] => {
    const a = oauth!.audience;
    if (target.kind === "server") return [a, resourceUrl(a, target.serverId)];
    if (target.kind === "reflect") return [a, ...opts.servers.map((s) => resourceUrl(a, s))];
    return [a];
  };
  /** `X-Agent-ID` for an agent whose id is fixed by its credential: absent or equal. */
  const checkClaimedId = (headers: Headers, id: string, how: string) => {
    const explicit = headers.get("x-agent-id");
    if (explicit === null) return;
    const claimed = validateAgentId(explicit);
    if (claimed !== id) {
      throw new AuthError(
        403,
        "agent_id_mismatch",
        `X-Agent-ID "${claimed}" is not the agent authenticated by this ${how} ("${id}"); ` +
          `omit X-Agent-ID or send "${id}"`,
      );
    }
  };

  async function authenticate(headers: Headers, target: AuthTarget): Promise<Identity> {
    const raw = headers.get("authorization");
    if (raw === null || raw.trim() === "") {
      throw refuse(target, 401, "unauthorized", "missing Authorization header");
    }
    // deno-lint-ignore no-control-regex
    if (/[\0-\x08\x0a-\x1f\x7f]/.test(raw)) {
      throw new AuthError(400, "bad_request", "Authorization header contains control characters");
    }
    const presented = /^bearer\s+/i.test(raw) ? raw.replace(/^bearer\s+/i, "") : raw;
    if (presented.length > MAX_TOKEN_BYTES) {
      throw refuse(target, 401, "invalid_token", `credential longer than ${MAX_TOKEN_BYTES} bytes`, {
        error: oauth ? "invalid_token" : undefined,
      });
    }
    const known = allDigests();
    const digest = sha256(presented);
    let match = -1;
    for (let i = 0; i < known.length; i++) {
      if (constantTimeEqualBytes(digest, known[i])) match = i;
    }
    const sharedIndex = settings.apiKey === null ? -1 : 0;
    if (match !== -1 && match === sharedIndex) {
      const explicit = headers.get("x-agent-id");
      if (explicit === null) {
        sharedId ??= `key-${toHex(known[0].subarray(0, 8))}`;
        return { id: sharedId, method: "shared-key", idFrom: "key-hash" };
      }
      const id = validateAgentId(explicit);
      if (reserved.has(id)) {
        throw new AuthError(
          403,
          "agent_id_reserved",
          `agent "${id}" has its own key; the shared key cannot act as it`,
        );
      }
      return { id, method: "shared-key", idFrom: "x-agent-id" };
    }
    if (match !== -1) {
      const id = settings.agents[match - (sharedIndex + 1)].id;
      checkClaimedId(headers, id, "key");
      return { id, method: "agent-key", idFrom: "agent-key" };
    }
    if (!oauth) throw refuse(target, 401, "unauthorized", "invalid API key");
    try {
      const t = await verify(presented, digest, target);
      if (reserved.has(t.agentId)) {
        throw new AuthError(
          403,
          "agent_id_reserved",
          `token names agent "${t.agentId}", which has its own key; tokens cannot act as it`,
        );
      }
      checkClaimedId(headers, t.agentId, "token");
      return {
        id: t.agentId,
        method: "oauth",
        idFrom: "token-claim",
        token: {
          issuer: t.issuer,
          subject: t.subject,
          clientId: t.clientId,
          claim: oauth.agentClaim,
          scopes: t.scopes,
          expiresAt: t.expiresAt,
        },
      };
    } catch (e) {
      if (e instanceof TokenError) {
        if (e.missingScopes) {
          throw refuse(target, 403, "insufficient_scope", e.message, {
            error: "insufficient_scope",
            scope: oauth.requiredScopes,
          });
        }
        throw refuse(target, 401, "invalid_token", e.message, { error: "invalid_token" });
      }
      if (e instanceof KeysUnavailableError) {
        throw new AuthError(
          503,
          "auth_unavailable",
          `cannot verify tokens now: the issuer's keys are unavailable (${e.message})`,
          { "retry-after": "30" },
        );
      }
      throw e;
    }
  }

  return {
    settings,
    keys,
    authenticate,
    resourceMetadata: (suffix) => oauth ? protectedResourceMetadata(oauth, suffix, opts.servers) : null,
  };
}

/**
 * Checks the `Authorization` header against one shared `apiKey` and returns the agent id (the
 * gh-aw-mcpg mode; see {@link createAuthenticator} for all modes).
 *
 * @example
 * ```ts
 * const agentId = await authenticate(req.headers, "s3cret"); // throws AuthError on failure
 * ```
 */
export async function authenticate(headers: Headers, apiKey: string): Promise<string> {
  const auth = createAuthenticator({ apiKey, agents: [], oauth: null }, { servers: [] });
  return (await auth.authenticate(headers, { kind: "unified" })).id;
}
