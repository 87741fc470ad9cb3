/**
 * Routed mode, `/mcp/:server`: one upstream per endpoint. The upstream's `Mcp-Session-Id` is bound to
 * the agent it was issued to ({@link RoutedSessionBindings}); another agent presenting it gets 404.
 * Stateless 2026-07-28 traffic (no session; `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) passes too, its
 * headers derived from the body the gateway sends.
 *
 * - POST → {@link ProxyCore.forward}.
 * - GET (the server→client stream) → relayed through the channel table; responses on it are always
 *   withheld (no agent request is pending on a GET stream).
 * - DELETE → forwarded; the binding is dropped.
 *
 * @module
 */
import { ErrorCode, errorResponse } from "./jsonrpc.ts";
import { agentResponseHeaders, isEventStream, upstreamRequestHeaders } from "./headers.ts";
import { guardedResponseHeaders, httpStatusReason, isGuarded } from "./channels.ts";
import { Exchange } from "./exchange.ts";
import { checkMethod, jsonResponse, readAgentBody, sessionNotFound } from "./http.ts";
import { relaySse } from "./relay.ts";
import { RoutedSessionBindings } from "./sessions.ts";
import type { BackendRef, ProxyCore } from "./proxy.ts";

/**
 * The routed handler over `core`.
 *
 * @example
 * ```ts
 * const routed = createRouted(core);
 * app.all("/mcp/:server", (c) => routed(c.req.raw, c.req.param("server"), agentId));
 * ```
 */
export function createRouted(core: ProxyCore): (req: Request, serverId: string, agentId: string) => Promise<Response> {
  const bindings = new RoutedSessionBindings();

  return async function routed(req, serverId, agentId) {
    const bad = checkMethod(req);
    if (bad) return bad;
    const upstream = core.opts.upstreams.get(serverId);
    if (!upstream) {
      return jsonResponse(errorResponse(null, ErrorCode.InvalidRequest, `unknown MCP server "${serverId}"`), 404);
    }
    const guarded = isGuarded(upstream);
    const sid = req.headers.get("mcp-session-id") ?? undefined;
    if (sid !== undefined && bindings.check(upstream.id, sid, agentId) !== "ok") {
      await req.body?.cancel().catch(() => {});
      return sessionNotFound();
    }
    const ref: BackendRef = {
      upstreamId: upstream.id,
      sessionId: sid,
      protocolVersion: req.headers.get("mcp-protocol-version") ?? undefined,
    };
    if (req.method === "POST") {
      const parsed = await readAgentBody(req, core.opts.maxBodyBytes);
      if (parsed instanceof Response) return parsed;
      return await core.forward({
        req,
        agentId,
        upstream,
        ref,
        ...parsed,
        sessionKey: `routed\n${upstream.id}\n${sid ?? ""}\n${agentId}`,
        onUpstreamResponse(res) {
          const newSid = res.headers.get("mcp-session-id");
          if (res.status === 404 && sid !== undefined) bindings.unbind(upstream.id, sid);
          if (newSid !== null && bindings.bind(upstream.id, newSid, agentId) === "foreign") {
            core.log({ event: "mcp_session_collision", upstream: upstream.id });
            return jsonResponse(
              errorResponse(null, ErrorCode.ConnectionClosed, "upstream reused another agent's session id"),
              502,
            );
          }
          return undefined;
        },
        agentSessionId: (res) => res.headers.get("mcp-session-id") ?? undefined,
      });
    }
    // GET (server→client stream) and DELETE (end the session).
    let up: Response;
    try {
      up = await core.fetch(upstream.url, {
        method: req.method,
        headers: upstreamRequestHeaders({
          method: req.method as "GET" | "DELETE",
          configured: upstream.headers,
          agent: req.headers,
          sessionId: sid,
        }),
        // close() must end open GET streams too, or a graceful server shutdown waits for them forever.
        signal: AbortSignal.any([req.signal, core.life]),
        redirect: "manual",
      });
    } catch (e) {
      core.log({ event: "mcp_upstream_unreachable", upstream: upstream.id, error: String(e) });
      return jsonResponse(
        errorResponse(null, ErrorCode.ConnectionClosed, `upstream "${upstream.id}" unreachable`),
        502,
      );
    }
    if (sid !== undefined && (up.status === 404 || (req.method === "DELETE" && up.ok))) {
      bindings.unbind(upstream.id, sid);
    }
    const newSid = up.headers.get("mcp-session-id") ?? undefined;
    const sse = req.method === "GET" && up.ok && up.body !== null && isEventStream(up.headers);
    const outHeaders = guarded ? guardedResponseHeaders(sse, newSid) : agentResponseHeaders(up.headers, newSid);
    if (sse) {
      const ex = new Exchange(upstream);
      return new Response(
        relaySse(up.body!, core.relayContext(ex, ref), {
          prefix: [],
          failure: () => undefined,
          done: () => {},
          closed: core.life,
        }),
        { status: up.status, headers: outHeaders },
      );
    }
    if (!guarded) return new Response(up.body, { status: up.status, headers: outHeaders });
    // A guarded server's agent gets no upstream bytes here: the status, and for a failure a
    // gateway-written error with its standard reason.
    await up.body?.cancel().catch(() => {});
    if (up.ok) return new Response(null, { status: up.status, headers: outHeaders });
    return jsonResponse(
      errorResponse(
        null,
        ErrorCode.ConnectionClosed,
        `upstream "${upstream.id}" answered HTTP ${up.status} (${httpStatusReason(up.status)})`,
      ),
      up.status,
      outHeaders,
    );
  };
}
