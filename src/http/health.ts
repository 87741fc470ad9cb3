/**
 * Upstream health for `GET /health`: can the gateway start an MCP session with each upstream?
 *
 * The probe is an MCP `initialize` request (`POST`, with the server's configured headers), the one
 * request every Streamable HTTP server must answer with 2xx whatever its session model. An upstream is
 * - `up` when it answers 2xx with a JSON-RPC result (its `protocolVersion`, when it is one the gateway
 *   serves, is reported as `mcp`); a session it opened is closed again with `DELETE` right away;
 * - `down` otherwise, with the reason: a network error or timeout, an HTTP error (a 401/403 means the
 *   configured credentials are refused, a 4xx that it does not speak MCP at this URL), a JSON-RPC
 *   error to `initialize`, an answer that is not JSON-RPC, or a redirect.
 * (A bare `GET`, as used before, only proves something listens: MCP servers answer it 400 or 405,
 * which is why `/health` used to show `"status":"up","httpStatus":400`.)
 *
 * Probes are cached per upstream so a health checker polling the gateway cannot turn it into a
 * load generator (or a session generator) against the upstreams, and concurrent health requests
 * share one probe.
 *
 * The probe carries the server's configured headers (often credentials), so it never follows a
 * redirect (`redirect: "manual"`): a 3xx is reported as `down` with the status, and the credentials
 * never reach the redirect's target. The MCP proxy does not follow redirects either, so an upstream
 * that only answers with one is unusable through the gateway, which is what `down` says.
 *
 * @module
 */
import { GATEWAY_VERSION } from "../version.ts";
import { PROTOCOL_VERSIONS } from "../mcp/channels.ts";

/** How long a probe result is reused. */
export const HEALTH_CACHE_MS = 5_000;
/** How long one probe may take before the upstream counts as down. */
export const HEALTH_PROBE_TIMEOUT_MS = 2_000;
/** Most of an `initialize` answer read (a server's capabilities and instructions fit easily). */
export const HEALTH_MAX_BODY_BYTES = 64 * 1024;
/** Protocol version the probe asks for; servers answer with one they support. */
export const HEALTH_PROTOCOL_VERSION = "2025-06-18";

/** One upstream's status. */
export interface UpstreamHealth {
  status: "up" | "down";
  /** HTTP status of the probe, when there was one. */
  httpStatus?: number;
  /**
   * What the upstream said to `initialize`, when it answered with a result: only the protocol version,
   * and only when it is one the gateway serves (`null` otherwise). `/health` needs no key, so it
   * repeats no upstream text (server names, instructions, error messages).
   */
  mcp?: { protocolVersion: string | null };
  error?: string;
  checkedAt: string;
}

const INITIALIZE = JSON.stringify({
  jsonrpc: "2.0",
  id: "mcp-edge-guard-health",
  method: "initialize",
  params: {
    protocolVersion: HEALTH_PROTOCOL_VERSION,
    capabilities: {},
    clientInfo: { name: "mcp-edge-guard-health", version: GATEWAY_VERSION },
  },
});

/**
 * Reads `res`'s body as text, at most `max` bytes, then cancels the rest. An SSE answer is read only
 * until its first complete event (the `initialize` response): servers may keep the stream open.
 */
async function readCapped(res: Response, max: number): Promise<string> {
  if (!res.body) return "";
  const sse = res.headers.get("content-type")?.includes("event-stream") ?? false;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      text += decoder.decode(value, { stream: true });
      if (sse && /(^|\n)data:[^\n]*\r?\n\r?\n/.test(text)) break;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return text.slice(0, max);
}

/** The JSON-RPC message of a JSON or SSE answer, or undefined. */
function rpcMessage(text: string, contentType: string): Record<string, unknown> | undefined {
  const candidates = contentType.includes("event-stream")
    ? text.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim())
    : [text];
  for (const c of candidates) {
    try {
      const m = JSON.parse(c);
      if (m && typeof m === "object" && (("result" in m) || ("error" in m))) return m;
    } catch { /* not this one */ }
  }
  return undefined;
}

/**
 * Creates a cached prober.
 *
 * @example
 * ```ts
 * const probe = createHealthProber(fetch);
 * const h = await probe({ id: "gh", url: "https://mcp.example/mcp", headers: {} });
 * ```
 */
export function createHealthProber(
  fetchFn: typeof fetch = fetch,
  now: () => number = Date.now,
): (up: { id: string; url: string; headers: Record<string, string> }) => Promise<UpstreamHealth> {
  const cache = new Map<string, { at: number; result: Promise<UpstreamHealth> }>();
  const probe = async (up: { url: string; headers: Record<string, string> }): Promise<UpstreamHealth> => {
    const checkedAt = new Date(now()).toISOString();
    const signal = AbortSignal.timeout(HEALTH_PROBE_TIMEOUT_MS);
    const down = (error: string, httpStatus?: number): UpstreamHealth => ({
      status: "down",
      ...(httpStatus ? { httpStatus } : {}),
      error,
      checkedAt,
    });
    try {
      const res = await fetchFn(up.url, {
        method: "POST",
        headers: {
          ...up.headers,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: INITIALIZE,
        signal,
        redirect: "manual",
      });
      // Browsers' fetch hides a manual redirect behind an opaque response with status 0.
      if (res.type === "opaqueredirect" || (res.status >= 300 && res.status < 400)) {
        await res.body?.cancel();
        return down(`redirect (HTTP ${res.status}), not followed`, res.status || undefined);
      }
      if (!res.ok) {
        await res.body?.cancel();
        const why = res.status === 401 || res.status === 403
          ? "the configured credentials were refused"
          : res.status >= 500
          ? "server error"
          : "not an MCP endpoint at this URL, or it refused the request";
        return down(`HTTP ${res.status} to initialize (${why})`, res.status);
      }
      const contentType = res.headers.get("content-type") ?? "";
      const session = res.headers.get("mcp-session-id");
      const msg = rpcMessage(await readCapped(res, HEALTH_MAX_BODY_BYTES), contentType);
      if (session) {
        // Close the session the probe opened; failing to is the upstream's problem, not a health one.
        await fetchFn(up.url, {
          method: "DELETE",
          headers: {
            ...up.headers,
            "mcp-session-id": session,
            "mcp-protocol-version": HEALTH_PROTOCOL_VERSION,
          },
          signal,
          redirect: "manual",
        }).then((r) => r.body?.cancel(), () => {});
      }
      if (!msg) return down("answered initialize without a JSON-RPC response", res.status);
      if (msg.error !== undefined) {
        const code = (msg.error as { code?: unknown })?.code;
        return down(
          `initialize failed with JSON-RPC error ${Number.isSafeInteger(code) ? code : "(no code)"}`,
          res.status,
        );
      }
      const v = (msg.result as { protocolVersion?: unknown } | null)?.protocolVersion;
      const known = (PROTOCOL_VERSIONS as readonly unknown[]).includes(v);
      return {
        status: "up",
        httpStatus: res.status,
        mcp: { protocolVersion: known ? v as string : null },
        checkedAt,
      };
    } catch (e) {
      return down(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    }
  };
  return (up) => {
    const hit = cache.get(up.id);
    if (hit && now() - hit.at < HEALTH_CACHE_MS) return hit.result;
    const result = probe(up);
    cache.set(up.id, { at: now(), result });
    return result;
  };
}
