/**
 * DNS-rebinding protection: `Host` and `Origin` validation for every route, `/health` and unknown
 * paths included (403 on failure).
 *
 * A browser tricked into resolving an attacker's name to 127.0.0.1 sends the attacker's name as
 * `Host` and the attacker's page as `Origin`. Loopback names are always accepted for `Host`; other
 * names must be listed in `gateway.allowedHosts` (`"*"` accepts any, for deployments behind a public
 * hostname such as Workers). A request without `Origin` is not from a browser page and is accepted;
 * an `Origin` must be a loopback origin or listed in `gateway.allowedOrigins`.
 *
 * @module
 */

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

/** The hostname part of a Host header value (`name`, `name:port`, `[v6]:port`), lower-cased. */
export function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end < 0 ? h : h.slice(0, end + 1);
  }
  const colon = h.lastIndexOf(":");
  return colon < 0 ? h : h.slice(0, colon);
}

/**
 * Returns `null` when the request may proceed, or the reason it may not. `urlHost` (the request URL's
 * host) stands in for a missing `Host` header.
 *
 * @example
 * ```ts
 * const why = checkHostAndOrigin(req.headers, { allowedHosts: [], allowedOrigins: [] });
 * if (why) return c.json({ error: "forbidden", message: why }, 403);
 * ```
 */
export function checkHostAndOrigin(
  headers: Headers,
  opts: { allowedHosts: readonly string[]; allowedOrigins: readonly string[] },
  urlHost?: string,
): string | null {
  const anyHost = opts.allowedHosts.includes("*");
  // HTTP servers (Deno.serve, workerd) always give a Host; a Request built in-process has none, and its
  // URL's host is then what the caller addressed.
  const host = headers.get("host") ?? urlHost ?? null;
  if (!anyHost) {
    if (host === null) return "missing Host header";
    const name = hostName(host);
    if (!LOOPBACK_HOSTS.has(name) && !opts.allowedHosts.some((a) => a.toLowerCase() === name)) {
      return `Host ${
        JSON.stringify(host)
      } is not allowed (DNS-rebinding protection); add it to gateway.allowedHosts`;
    }
  }
  const origin = headers.get("origin");
  if (origin === null) return null;
  if (opts.allowedOrigins.includes("*") || opts.allowedOrigins.includes(origin)) return null;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return `Origin ${JSON.stringify(origin)} is not a valid origin`;
  }
  if (
    (url.protocol === "http:" || url.protocol === "https:") && LOOPBACK_HOSTS.has(url.hostname.toLowerCase())
  ) {
    return null;
  }
  return `Origin ${JSON.stringify(origin)} is not allowed; add it to gateway.allowedOrigins`;
}
