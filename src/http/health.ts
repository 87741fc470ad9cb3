/**
 * Upstream reachability for `GET /health`.
 *
 * An upstream is "up" when it answers HTTP at all below 500 (an MCP endpoint answers a bare GET with
 * 400/405 or an SSE stream, all of which prove it is there), "down" on a network error, a timeout or
 * a 5xx. Probes are cached per upstream so a health checker polling the gateway cannot turn it into a
 * load generator against the upstreams, and concurrent health requests share one probe.
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
      });
      await res.body?.cancel();
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
