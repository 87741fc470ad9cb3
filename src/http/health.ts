/**
 * Upstream reachability for `GET /health`.
 *
 * An upstream is "up" when it answers HTTP at all below 500 (an MCP endpoint answers a bare GET with
 * 400/405 or an SSE stream, all of which prove it is there), "down" on a network error, a timeout,
 * a 5xx or a redirect. Probes are cached per upstream so a health checker polling the gateway cannot turn it into a
 * load generator against the upstreams, and concurrent health requests share one probe.
 *
 * The probe carries the server's configured headers (often credentials), so it never follows a
 * redirect (`redirect: "manual"`): a 3xx is reported as `down` with the status, and the credentials
 * never reach the redirect's target. The MCP proxy does not follow redirects either, so an upstream
 * that only answers with one is unusable through the gateway, which is what `down` says.
 *
 * @module
 */

/** How long a probe result is reused. */
export const HEALTH_CACHE_MS = 5_000;
/** How long one probe may take before the upstream counts as down. */
export const HEALTH_PROBE_TIMEOUT_MS = 2_000;

/** One upstream's status. */
export interface UpstreamHealth {
  status: "up" | "down";
  /** HTTP status of the probe, when there was one. */
  httpStatus?: number;
  error?: string;
  checkedAt: string;
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
    try {
      const res = await fetchFn(up.url, {
        method: "GET",
        headers: { ...up.headers, accept: "text/event-stream" },
        signal: AbortSignal.timeout(HEALTH_PROBE_TIMEOUT_MS),
        redirect: "manual",
      });
      await res.body?.cancel();
      // Browsers' fetch hides a manual redirect behind an opaque response with status 0.
      if (res.type === "opaqueredirect" || (res.status >= 300 && res.status < 400)) {
        const httpStatus = res.status || undefined;
        return {
          status: "down",
          httpStatus,
          error: `redirect (HTTP ${res.status}), not followed`,
          checkedAt,
        };
      }
      return res.status < 500
        ? { status: "up", httpStatus: res.status, checkedAt }
        : { status: "down", httpStatus: res.status, error: `HTTP ${res.status}`, checkedAt };
    } catch (e) {
      return { status: "down", error: e instanceof Error ? `${e.name}: ${e.message}` : String(e), checkedAt };
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
