/**
 * Which HTTP headers cross the gateway, in each direction, and how the 2026-07-28 request metadata
 * headers (`Mcp-Method`, `Mcp-Name`) are derived from a body the gateway rewrote.
 *
 * Never forwarded upstream: the agent's `Authorization`, cookies and anything else not listed here
 * (the spec forbids token passthrough; upstream credentials come from config only).
 *
 * @module
 */
import type { JsonRpcMessage } from "./jsonrpc.ts";

/** What an SDK server requires on POST: both types, even when the agent sent a lenient Accept. */
export const UPSTREAM_POST_ACCEPT = "application/json, text/event-stream";

/** Agent headers copied verbatim to the upstream (lower case), besides `mcp-param-*`. */
const FORWARDED_REQUEST_HEADERS = ["mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name"];

/** Upstream response headers copied to the agent (the session id is handled by the caller). */
const FORWARDED_RESPONSE_HEADERS = ["content-type", "cache-control", "allow"];

/** Prefix of the 2026-07-28 per-parameter headers (`Mcp-Param-{Name}`). */
const PARAM_HEADER_PREFIX = "mcp-param-";

/** Options for {@link upstreamRequestHeaders}. */
export interface UpstreamHeaderOptions {
  method: "POST" | "GET" | "DELETE";
  /** Headers from config (credentials for the upstream). */
  configured: Record<string, string>;
  /** The agent's request headers, when forwarding an agent request. */
  agent?: Headers;
  /** The upstream session id to send (already mapped). */
  sessionId?: string;
  /** Overrides the agent's `MCP-Protocol-Version`. */
  protocolVersion?: string;
  /** The body sent upstream, when the gateway wrote or rewrote it: `Mcp-Method`/`Mcp-Name` follow it. */
  rewrittenBody?: JsonRpcMessage;
  /** Which agent `Mcp-Param-*` values may pass (default: all); see `checkedParamValues` in channels.ts. */
  paramValueAllowed?: (value: string) => boolean;
}

/**
 * Builds the headers of an upstream request, as a record with lower-case names: fetch takes a record
 * without the copy (iteration, sorting) it makes of a `Headers` object. The record has no prototype,
 * so a configured header whose name is also an `Object.prototype` key stays a header.
 *
 * @example
 * ```ts
 * const h = upstreamRequestHeaders({ method: "POST", configured: { authorization: "Bearer cfg" }, agent: req.headers });
 * h["content-type"]; // "application/json"
 * ```
 */
export function upstreamRequestHeaders(o: UpstreamHeaderOptions): Record<string, string> {
  const h: Record<string, string> = Object.create(null);
  if (Object.keys(o.configured).length > 0) {
    // Configured names in any case, validated and combined exactly as a Headers object does.
    new Headers(o.configured).forEach((v, k) => h[k] = v);
  }
  if (o.method === "POST") {
    h["content-type"] = "application/json";
    h.accept = UPSTREAM_POST_ACCEPT;
  } else if (o.method === "GET") {
    h.accept = "text/event-stream";
  }
  if (o.agent) {
    // One pass over the agent's headers (names come lower-case, repeated ones combined).
    for (const [k, v] of o.agent) {
      if (FORWARDED_REQUEST_HEADERS.includes(k)) h[k] = v;
      else if (k.startsWith(PARAM_HEADER_PREFIX) && (o.paramValueAllowed?.(v) ?? true)) h[k] = v;
    }
  }
  if (o.protocolVersion !== undefined) h["mcp-protocol-version"] = o.protocolVersion;
  if (o.sessionId !== undefined) h["mcp-session-id"] = o.sessionId;
  else delete h["mcp-session-id"];
  if (o.rewrittenBody && "method" in o.rewrittenBody) {
    const m = o.rewrittenBody;
    const modern = "mcp-method" in h || h["mcp-protocol-version"] === MODERN_PROTOCOL_VERSION;
    if (modern) {
      h["mcp-method"] = m.method;
      const name = metadataName(m);
      if (name !== undefined) h["mcp-name"] = encodeHeaderValue(name);
      else delete h["mcp-name"];
    }
  }
  return h;
}

/** The first protocol revision with stateless HTTP and required `Mcp-Method`/`Mcp-Name` headers. */
export const MODERN_PROTOCOL_VERSION = "2026-07-28";

/** `params.name` (tools/call, prompts/get) or `params.uri` (resources/read): what `Mcp-Name` mirrors. */
function metadataName(m: JsonRpcMessage & { method: string }): string | undefined {
  const p = (m as { params?: Record<string, unknown> }).params;
  if (!p) return undefined;
  if (m.method === "tools/call" || m.method === "prompts/get") {
    return typeof p.name === "string" ? p.name : undefined;
  }
  if (m.method === "resources/read") return typeof p.uri === "string" ? p.uri : undefined;
  return undefined;
}

/** The 2026-07-28 error code for request metadata headers that disagree with the body. */
export const HEADER_MISMATCH = -32020;

/** Decodes a header value written by {@link encodeHeaderValue} (surrounding whitespace ignored). */
function decodeHeaderValue(v: string): string {
  const t = v.trim();
  const m = /^=\?base64\?([A-Za-z0-9+/=]*)\?=$/.exec(t);
  if (!m) return t;
  try {
    const bin = atob(m[1]);
    return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
  } catch {
    return t;
  }
}

/**
 * Why the agent's `Mcp-Method`/`Mcp-Name` headers do not describe the body, or `undefined`. Checked
 * for 2026-07-28 requests (`MCP-Protocol-Version: 2026-07-28`) and for any request that sends
 * `Mcp-Method`: a header is required where the revision requires it and must equal the body. The
 * gateway answers a mismatch itself (400, {@link HEADER_MISMATCH}), as the spec asks of intermediaries,
 * and sends upstream only headers derived from its own body, so an upstream that routes by header
 * cannot be told a different tool than the guard checked.
 */
export function metadataHeaderProblem(agent: Headers, m: JsonRpcMessage): string | undefined {
  if (!("method" in m)) return undefined;
  const modern = agent.get("mcp-protocol-version") === MODERN_PROTOCOL_VERSION;
  const method = agent.get("mcp-method");
  if (!modern && method === null) return undefined;
  if (method === null) return "the required Mcp-Method header is absent";
  if (decodeHeaderValue(method) !== m.method) {
    return `the body's method is ${JSON.stringify(m.method)} but the Mcp-Method header differs`;
  }
  const name = metadataName(m);
  if (name === undefined) return undefined;
  const sent = agent.get("mcp-name");
  if (sent === null) return modern ? "the required Mcp-Name header is absent" : undefined;
  if (decodeHeaderValue(sent) !== name) {
    return `the body names ${JSON.stringify(name)} but the Mcp-Name header differs`;
  }
  return undefined;
}

/**
 * Encodes a header value: visible ASCII and spaces as is, anything else (or leading/trailing
 * whitespace) in the Base64 sentinel form `=?base64?<utf-8 base64>?=` of 2026-07-28.
 */
export function encodeHeaderValue(v: string): string {
  if (/^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/.test(v)) return v;
  const bytes = new TextEncoder().encode(v);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `=?base64?${btoa(bin)}?=`;
}

/**
 * Builds the agent-facing response headers from an upstream response (a record with lower-case
 * names, see {@link upstreamRequestHeaders}). SSE replies get `X-Accel-Buffering: no` so that reverse
 * proxies in front of the gateway do not buffer them.
 */
export function agentResponseHeaders(up: Headers, sessionId?: string): Record<string, string> {
  const h: Record<string, string> = {};
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const v = up.get(name);
    if (v !== null) h[name] = v;
  }
  if (isEventStream(up)) h["x-accel-buffering"] = "no";
  if (sessionId !== undefined) h["mcp-session-id"] = sessionId;
  return h;
}

/** True when the headers announce `text/event-stream`. */
export function isEventStream(h: Headers): boolean {
  return (h.get("content-type") ?? "").toLowerCase().startsWith("text/event-stream");
}

/** True when the headers announce JSON. */
export function isJson(h: Headers): boolean {
  const ct = (h.get("content-type") ?? "").toLowerCase();
  return ct.startsWith("application/json") || /^application\/[a-z0-9.+-]*\+json/.test(ct);
}
