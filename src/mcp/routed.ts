/**
 * Routed mode, `/mcp/:server`: one upstream per endpoint. The upstream's `Mcp-Session-Id` is bound to
 * the agent it was issued to ({@link RoutedSessionBindings}) and the agent sees only a gateway-minted
 * alias of it; another agent presenting the alias gets 404.
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
import { ErrorCode, errorResponse, isRequest } from "./jsonrpc.ts";
import { agentResponseHeaders, isEventStream, upstreamRequestHeaders } from "./headers.ts";
import { guardedResponseHeaders, httpStatusReason, isGuarded } from "./channels.ts";
import { Exchange } from "./exchange.ts";
import { checkMethod, jsonResponse, readAgentBody, sessionNotFound } from "./http.ts";
import { relaySse } from "./relay.ts";
import { RoutedSessionBindings, type SessionLimitError } from "./sessions.ts";
import type { BackendRef, ProxyCore, Upstream } from "./proxy.ts";

/**
 * The routed handler over `core`.
 *
 * @example
 * ```ts
 * const routed = createRouted(core);
 * app.all("/mcp/:server", (c) => routed(c.req.raw, c.req.param("server"), agentId));
 * ```
 */
export function createRouted(
  core: ProxyCore,
): (req: Request, serverId: string, agentId: string) => Promise<Response> {
  const bindings = new RoutedSessionBindings();

  /** The agent's alias of the session id on an upstream response, if it names a bound one. */
  function agentSessionId(upstream: Upstream, res: Response): string | undefined {
    const upstreamSid = res.headers.get("mcp-session-id");
    return upstreamSid === null ? undefined : bindings.aliasOf(upstream.id, upstreamSid);
  }

  function sessionRefused(e: SessionLimitError | null): Response {
    const message = e?.message ?? "session limit reached";
    return jsonResponse(errorResponse(null, ErrorCode.ConnectionClosed, message), e?.status ?? 503);
  }

  function endUpstreamSession(upstream: Upstream, sessionId: string): void {
    core.fetch(upstream.url, {
      method: "DELETE",
      headers: upstreamRequestHeaders({ method: "DELETE", configured: upstream.headers, sessionId }),
      signal: AbortSignal.any([core.life, AbortSignal.timeout(core.opts.toolTimeoutMs)]),
      redirect: "manual",
    }).then((r) => r.body?.cancel()).catch((e) =>
      core.log({ event: "mcp_upstream_delete_failed", upstream: upstream.id, error: String(e) })
    );
  }

  return async function routed(req, serverId, agentId) {
    const bad = checkMethod(req);
    if (bad) return bad;
    const upstream = core.opts.upstreams.get(serverId);
    if (!upstream) {
      return jsonResponse(
        errorResponse(null, ErrorCode.InvalidRequest, `unknown MCP server "${serverId}"`),
        404,
      );
    }
    const guarded = isGuarded(upstream);
    // The agent's session id is the gateway's alias of the upstream's (see RoutedSessionBindings).
    const sid = req.headers.get("mcp-session-id") ?? undefined;
    let upstreamSid: string | undefined;
    if (sid !== undefined) {
      upstreamSid = bindings.resolve(upstream.id, sid, agentId).upstreamSid;
      if (upstreamSid === undefined) {
        if (req.method !== "POST") return sessionNotFound();
        const parsed = await readAgentBody(req, core.opts.maxBodyBytes);
        return sessionNotFound(parsed instanceof Response ? undefined : parsed);
      }
    }
    const ref: BackendRef = {
      upstreamId: upstream.id,
      sessionId: upstreamSid,
      protocolVersion: req.headers.get("mcp-protocol-version") ?? undefined,
    };
    if (req.method === "POST") {
      const parsed = await readAgentBody(req, core.opts.maxBodyBytes);
      if (parsed instanceof Response) return parsed;
      if (sid === undefined && parsed.messages.some((m) => isRequest(m) && m.method === "initialize")) {
        // A new session would be refused: say so before the upstream creates one.
        const refused = bindings.room(agentId);
        if (refused) return sessionRefused(refused);
      }
      return await core.forward({
        req,
        agentId,
        upstream,
        ref,
        ...parsed,
        sessionKey: `routed\n${upstream.id}\n${sid ?? ""}\n${agentId}`,
        onUpstreamResponse(res) {
          const newSid = res.headers.get("mcp-session-id");
          if (res.status === 404 && upstreamSid !== undefined) bindings.unbind(upstream.id, upstreamSid);
          if (newSid === null || newSid === upstreamSid) return undefined;
          const bound = bindings.bind(upstream.id, newSid, agentId);
          if (bound === "foreign") {
            core.log({ event: "mcp_session_collision", upstream: upstream.id });
            return jsonResponse(
              errorResponse(null, ErrorCode.ConnectionClosed, "upstream reused another agent's session id"),
              502,
            );
          }
          if (bound === "full") {
            // Over a session limit since the check above (concurrent initializes): the upstream
            // session just created is ended, the agent told why.
            endUpstreamSession(upstream, newSid);
            return sessionRefused(bindings.room(agentId));
          }
          return undefined;
        },
        agentSessionId: (res) => agentSessionId(upstream, res),
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
          sessionId: upstreamSid,
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
    if (upstreamSid !== undefined && (up.status === 404 || (req.method === "DELETE" && up.ok))) {
      bindings.unbind(upstream.id, upstreamSid);
    }
    const newSid = agentSessionId(upstream, up);
    const sse = req.method === "GET" && up.ok && up.body !== null && isEventStream(up.headers);
    const outHeaders = guarded
      ? guardedResponseHeaders(sse, newSid)
      : agentResponseHeaders(up.headers, newSid);
    if (sse) {
      const ex = new Exchange(upstream);
      return new Response(
        relaySse(up.body!, core.relayContext(ex, ref), {
          prefix: [],
          failure: () => undefined,
          done: () => {},
          closed: core.life,
        }),
        { status: guarded ? 200 : up.status, headers: outHeaders },
      );
    }
    if (!guarded) return new Response(up.body, { status: up.status, headers: outHeaders });
    // A guarded server's agent gets no upstream bytes here: the status, and for a failure a
    // gateway-written error with its standard reason.
    await up.body?.cancel().catch(() => {});
    if (up.ok) return new Response(null, { status: 200, headers: outHeaders });
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
