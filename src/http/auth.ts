/**
 * API-key authentication and agent identity for MCP routes.
 *
 * Differences from gh-aw-mcpg (guard-abi.md §4.3), both deliberate:
 * - The key is accepted as the raw `Authorization` value (the reference's form) and as `Bearer <key>`
 *   (what MCP SDK clients send).
 * - Without `X-Agent-ID`, the reference uses the key itself as the agent identity, which writes the
 *   secret into labels, logs and `/reflect`. We derive `key-<first 16 hex of SHA-256(key)>` instead:
 *   stable for the same key, useless to an attacker.
 *
 * @module
 */
import { sha256Hex } from "../util.ts";

/** An authentication failure, carrying the HTTP status and the JSON body to send. */
export class AuthError extends Error {
  readonly status: 400 | 401;
  readonly code: string;
  constructor(status: 400 | 401, code: string, message: string) {
    super(message);
    this.name = "AuthError";
    this.status = status;
    this.code = code;
  }
}

/** Longest accepted `X-Agent-ID`. */
export const MAX_AGENT_ID_LENGTH = 128;
const AGENT_ID = /^[A-Za-z0-9][A-Za-z0-9._@:+-]*$/;

const encoder = new TextEncoder();

/** Compares two strings in time that depends only on their lengths, not on where they differ. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  // Always walk the expected value's length so a wrong-length guess costs the same as a wrong byte.
  let diff = x.length ^ y.length;
  for (let i = 0; i < y.length; i++) diff |= (x[i % (x.length || 1)] ?? 0) ^ y[i];
  return diff === 0;
}

/** Hex of the first 8 bytes of SHA-256(text), computed once per distinct key (the configured one). */
const shortHashes = new Map<string, Promise<string>>();
function shortHash(text: string): Promise<string> {
  let h = shortHashes.get(text);
  if (!h) {
    h = sha256Hex(text).then((hex) => hex.slice(0, 16));
    if (shortHashes.size < 16) shortHashes.set(text, h); // only configured keys get here; bound it anyway
  }
  return h;
}

/**
 * Checks the `Authorization` header against `apiKey` and returns the agent identity.
 *
 * @example
 * ```ts
 * const agentId = await authenticate(req.headers, "s3cret"); // throws AuthError on failure
 * ```
 */
export async function authenticate(headers: Headers, apiKey: string): Promise<string> {
  const raw = headers.get("authorization");
  if (raw === null || raw.trim() === "") {
    throw new AuthError(401, "unauthorized", "missing Authorization header");
  }
  // deno-lint-ignore no-control-regex
  if (/[\0-\x08\x0a-\x1f\x7f]/.test(raw)) {
    throw new AuthError(400, "bad_request", "Authorization header contains control characters");
  }
  const presented = /^bearer\s+/i.test(raw) ? raw.replace(/^bearer\s+/i, "") : raw;
  if (!constantTimeEqual(presented, apiKey)) throw new AuthError(401, "unauthorized", "invalid API key");
  const explicit = headers.get("x-agent-id");
  if (explicit === null) return `key-${await shortHash(apiKey)}`;
  return validateAgentId(explicit);
}

/**
 * Validates an `X-Agent-ID`: 1-128 characters of letters, digits and `._@:+-`, starting with a letter
 * or digit (so never `.`/`..`, never a path separator, never empty).
 */
export function validateAgentId(id: string): string {
  const t = id.trim();
  if (t.length === 0 || t.length > MAX_AGENT_ID_LENGTH || !AGENT_ID.test(t)) {
    throw new AuthError(
      400,
      "invalid_agent_id",
      `invalid X-Agent-ID: must be 1-${MAX_AGENT_ID_LENGTH} characters of letters, digits and ._@:+- starting with a letter or digit`,
    );
  }
  return t;
}
