/**
 * Unified mode, `/mcp`: every upstream behind one gateway-owned session. Tools are named
 * `<server>___<tool>` (config refuses server names that would make the split ambiguous); the gateway
 * answers `initialize`, `ping` and `tools/list` itself and forwards `tools/call` to the named
 * upstream through {@link ProxyCore.forward}. Every other method gets `-32601`.
 *
 * Unified mode speaks the 2025 session protocols (2025-03-26 … 2025-11-25); a request without a
 * session that is not `initialize` gets 400, which makes 2026-era clients fall back to `initialize`.
 * GET answers 405: the fan-in of several upstream GET streams is not implemented; SDK clients accept
 * 405 and then only use POST streams. DELETE deletes every upstream session of the gateway session.
 *
 * @module
 */
import {
  ErrorCode,
  errorResponse,
  isErrorResponse,
  isNotification,
  isRequest,
  isResponse,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
} from "./jsonrpc.ts";
import { upstreamRequestHeaders } from "./headers.ts";
import { agentNotificationAllowed, isGuarded } from "./channels.ts";
import { mintUpstreamId } from "./exchange.ts";
import {
  checkMethod,
  jsonResponse,
  readAgentBody,
  refuseAll,
  sessionNotFound,
  UpstreamError,
} from "./http.ts";
import { filterTools, UNIFIED_TOOL_SEPARATOR } from "./relay.ts";
import { GatewaySession, GatewaySessionStore, mintSessionId, type UpstreamLink } from "./sessions.ts";
import type { BackendRef, ProxyCore, Upstream } from "./proxy.ts";
import { GATEWAY_VERSION } from "../version.ts";

/** Versions the unified endpoint negotiates with agents (session-based era). */
export const SESSION_PROTOCOL_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26"];
/** Pages of `tools/list` fetched per upstream in unified mode: bounds a server that never ends. */
const MAX_TOOLS_LIST_PAGES = 100;
/** Tools kept per upstream in a unified `tools/list`: bounds what one upstream's list can hold. */
export const MAX_TOOLS_PER_UPSTREAM = 10_000;
/** Gateway name in unified `initialize` results. */
const GATEWAY_INFO = { name: "mcp-edge-guard", version: GATEWAY_VERSION };

/** The unified endpoint. */
export interface Unified {
  handle(req: Request, agentId: string): Promise<Response>;
  /** Forgets every session and waits for pending upstream initializations. */
  close(): Promise<void>;
}

/**
 * The unified handler over `core`.
 *
 * @example
 * ```ts
 * const unified = createUnified(core);
 * app.all("/mcp", (c) => unified.handle(c.req.raw, agentId));
 * ```
 */
export function createUnified(core: ProxyCore): Unified {
  const { opts, client, log } = core;
  // A session forgotten for idleness ends its upstream sessions too.
  const sessions = new GatewaySessionStore({}, (gw) => void endLinks(gw));

  function linkSignal(): AbortSignal {
    return AbortSignal.any([core.life, AbortSignal.timeout(opts.toolTimeoutMs)]);
  }

  async function initLink(gw: GatewaySession, up: Upstream): Promise<UpstreamLink> {
    const signal = linkSignal();
    const init: JsonRpcRequest = {
      jsonrpc: "2.0",
      id: mintUpstreamId(),
      method: "initialize",
      params: {
        ...gw.initParams,
        protocolVersion: gw.protocolVersion,
        // A guarded server is not told of the agent's sampling/elicitation/roots (see channels.ts).
        ...(isGuarded(up) ? { capabilities: {} } : {}),
      },
    };
    const { response, headers } = await client.rpc(up, {}, init, signal);
    if (isErrorResponse(response)) {
      throw new UpstreamError(up.id, `initialize failed with error ${response.error.code}`);
    }
    const result = (response as { result?: { protocolVersion?: unknown } }).result;
    const link: UpstreamLink = {
      sessionId: headers.get("mcp-session-id") ?? undefined,
      protocolVersion: typeof result?.protocolVersion === "string"
        ? result.protocolVersion
        : gw.protocolVersion,
    };
    await client.post(up, link, { jsonrpc: "2.0", method: "notifications/initialized" }, signal);
    return link;
  }

  function ensureLink(gw: GatewaySession, up: Upstream): Promise<UpstreamLink> {
    let p = gw.links.get(up.id);
    if (!p) {
      p = initLink(gw, up);
      gw.links.set(up.id, p);
      p.catch((e) => {
        if (gw.links.get(up.id) === p) gw.links.delete(up.id);
        log({ event: "mcp_upstream_init_failed", upstream: up.id, error: String(e) });
      });
    }
    return p;
  }

  async function toolsList(gw: GatewaySession, id: JsonRpcId): Promise<Response> {
    const lists = await Promise.all([...opts.upstreams.values()].map(async (up) => {
      try {
        const link = await ensureLink(gw, up);
        const tools: unknown[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < MAX_TOOLS_LIST_PAGES && tools.length < MAX_TOOLS_PER_UPSTREAM; page++) {
          const { response } = await client.rpc(up, link, {
            jsonrpc: "2.0",
            id: mintUpstreamId(),
            method: "tools/list",
            params: cursor ? { cursor } : {},
          }, linkSignal());
          if (isErrorResponse(response)) {
            throw new UpstreamError(up.id, `tools/list error ${response.error.code}`);
          }
          const r = (response as { result: { tools?: unknown; nextCursor?: unknown } }).result;
          // Filtered page by page, so only allowed tools are held, at most MAX_TOOLS_PER_UPSTREAM.
          if (Array.isArray(r?.tools)) {
            for (const t of filterTools(up, r.tools, true)) {
              if (tools.length >= MAX_TOOLS_PER_UPSTREAM) break;
              tools.push(t);
            }
          }
          if (typeof r?.nextCursor !== "string" || r.nextCursor === "") break;
          cursor = r.nextCursor;
        }
        return tools;
      } catch (e) {
        log({ event: "mcp_tools_list_failed", upstream: up.id, error: String(e) });
        return [];
      }
    }));
    return jsonResponse({ jsonrpc: "2.0", id, result: { tools: lists.flat() } }, 200, {
      "mcp-session-id": gw.id,
    });
  }

  async function initialize(agentId: string, m: JsonRpcRequest): Promise<Response> {
    const params = m.params ?? {};
    const asked = typeof params.protocolVersion === "string" ? params.protocolVersion : "";
    const version = SESSION_PROTOCOL_VERSIONS.includes(asked) ? asked : SESSION_PROTOCOL_VERSIONS[0];
    const refused = sessions.room(agentId);
    if (refused) {
      return jsonResponse(errorResponse(m.id, ErrorCode.ConnectionClosed, refused.message), refused.status);
    }
    const gw = new GatewaySession(mintSessionId(), agentId, version, params);
    sessions.add(gw);
    // Upstreams are initialized now, in parallel; one that fails is retried on first use.
    await Promise.allSettled([...opts.upstreams.values()].map((up) => ensureLink(gw, up)));
    return jsonResponse(
      {
        jsonrpc: "2.0",
        id: m.id,
        result: {
          protocolVersion: version,
          capabilities: { tools: { listChanged: false } },
          serverInfo: GATEWAY_INFO,
        },
      },
      200,
      { "mcp-session-id": gw.id },
    );
  }

  async function endLinks(gw: GatewaySession): Promise<void> {
    await Promise.allSettled([...gw.links].map(async ([upId, p]) => {
      const link = await p;
      const up = opts.upstreams.get(upId);
      if (!up || link.sessionId === undefined) return;
      const res = await core.fetch(up.url, {
        method: "DELETE",
        headers: upstreamRequestHeaders({
          method: "DELETE",
          configured: up.headers,
          sessionId: link.sessionId,
          protocolVersion: link.protocolVersion,
        }),
        signal: linkSignal(),
        redirect: "manual",
      });
      await res.body?.cancel().catch(() => {});
    }));
  }

  async function remove(gw: GatewaySession): Promise<Response> {
    sessions.delete(gw.id);
    await endLinks(gw);
    return new Response(null, { status: 200 });
  }

  /** An agent notification, sent to the upstreams it concerns. */
  async function notification(gw: GatewaySession, m: JsonRpcNotification): Promise<void> {
    if (m.method === "notifications/initialized") return;
    if (m.method === "notifications/cancelled") {
      const entry = core.inflight.lookup(sessionKey(gw), m.params?.requestId);
      const up = entry && opts.upstreams.get(entry.server);
      if (!entry || !up) return;
      const params: Record<string, unknown> = { requestId: entry.upstreamId };
      if (typeof m.params?.reason === "string") params.reason = m.params.reason;
      await client.post(
        up,
        await ensureLink(gw, up),
        { jsonrpc: "2.0", method: m.method, params },
        linkSignal(),
      );
      return;
    }
    await Promise.allSettled([...opts.upstreams.values()].map(async (up) => {
      if (isGuarded(up) && !agentNotificationAllowed(m.method)) return;
      const link = await ensureLink(gw, up);
      await client.post(up, link, isGuarded(up) ? { jsonrpc: "2.0", method: m.method } : m, linkSignal());
    }));
  }

  function sessionKey(gw: GatewaySession): string {
    return `unified\n${gw.id}`;
  }

  async function handle(req: Request, agentId: string): Promise<Response> {
    const bad = checkMethod(req);
    if (bad) return bad;
    const sid = req.headers.get("mcp-session-id");
    if (req.method === "GET") {
      return jsonResponse(
        errorResponse(
          null,
          ErrorCode.ConnectionClosed,
          "Method Not Allowed: the unified endpoint has no GET stream",
        ),
        405,
        { allow: "POST, DELETE" },
      );
    }
    if (req.method === "DELETE") {
      const gw = sid ? sessions.get(sid, agentId) : undefined;
      return gw ? await remove(gw) : sessionNotFound();
    }
    const parsed = await readAgentBody(req, opts.maxBodyBytes);
    if (parsed instanceof Response) return parsed;
    if (parsed.batch) {
      // Each request of the batch gets its own refusal; nothing of it goes upstream.
      const why = "Invalid Request: batches are not supported on the unified endpoint";
      return refuseAll(parsed, 400, ErrorCode.InvalidRequest, why);
    }
    const m = parsed.messages[0];
    if (!sid) {
      if (isRequest(m) && m.method === "initialize") return await initialize(agentId, m);
      return refuseAll(
        parsed,
        400,
        ErrorCode.ConnectionClosed,
        "Bad Request: Mcp-Session-Id header is required",
      );
    }
    const gw = sessions.get(sid, agentId);
    if (!gw) return sessionNotFound(parsed);
    const headers = { "mcp-session-id": gw.id };
    const accepted = () => new Response(null, { status: 202, headers });

    if (isResponse(m)) {
      // The agent's answer to a server→client request: only requests the gateway relayed (noop
      // servers) have an origin; anything else is dropped.
      const origin = m.id === null ? undefined : gw.takeServerRequest(m.id);
      const up = origin && opts.upstreams.get(origin.upstreamId);
      if (!origin || !up || isGuarded(up)) {
        log({ level: "debug", event: "mcp_unmatched_response" });
        return accepted();
      }
      const link = await ensureLink(gw, up);
      await client.post(up, link, { ...m, id: origin.id } as JsonRpcMessage, linkSignal()).catch((e) =>
        log({ event: "mcp_response_forward_failed", upstream: up.id, error: String(e) })
      );
      return accepted();
    }
    if (isNotification(m)) {
      await notification(gw, m).catch((e) => log({ event: "mcp_notification_failed", error: String(e) }));
      return accepted();
    }
    if (!isRequest(m as JsonRpcMessage)) return accepted();
    const rq = m as JsonRpcRequest;
    switch (rq.method) {
      case "initialize":
        return jsonResponse(
          errorResponse(rq.id, ErrorCode.InvalidRequest, "Invalid Request: already initialized"),
          400,
        );
      case "ping":
        return jsonResponse({ jsonrpc: "2.0", id: rq.id, result: {} }, 200, headers);
      case "tools/list":
        return await toolsList(gw, rq.id);
      case "tools/call":
        break;
      default:
        return jsonResponse(
          errorResponse(
            rq.id,
            ErrorCode.MethodNotFound,
            `Method not found: ${rq.method} (the unified endpoint serves tools)`,
          ),
          200,
          headers,
        );
    }
    // Server ids never end in "_" nor contain "___" (config.ts), so the first "___" is the boundary.
    const full = typeof rq.params?.name === "string" ? rq.params.name : "";
    const cut = full.indexOf(UNIFIED_TOOL_SEPARATOR);
    const up = cut > 0 ? opts.upstreams.get(full.slice(0, cut)) : undefined;
    if (!up) {
      return jsonResponse(
        errorResponse(
          rq.id,
          ErrorCode.InvalidParams,
          `unknown tool "${full}": expected <server>${UNIFIED_TOOL_SEPARATOR}<tool>`,
        ),
        200,
        headers,
      );
    }
    let link: UpstreamLink;
    try {
      link = await ensureLink(gw, up);
    } catch {
      return jsonResponse(
        errorResponse(rq.id, ErrorCode.ConnectionClosed, `upstream "${up.id}" unavailable`),
        502,
        headers,
      );
    }
    const ref: BackendRef = {
      upstreamId: up.id,
      sessionId: link.sessionId,
      protocolVersion: link.protocolVersion,
    };
    return await core.forward({
      req,
      agentId,
      upstream: up,
      ref,
      messages: [{ ...rq, params: { ...rq.params, name: full.slice(cut + UNIFIED_TOOL_SEPARATOR.length) } }],
      batch: false,
      sessionKey: sessionKey(gw),
      unified: true,
      relay: {
        mapServerRequest: (id) => gw.mapServerRequest(up.id, id),
        serverRequestAgentId: (id) => gw.agentIdOf(up.id, id),
      },
      onUpstreamResponse(res) {
        if (res.status === 404) gw.links.delete(up.id);
        return undefined;
      },
      agentSessionId: () => gw.id,
    });
  }

  async function close(): Promise<void> {
    const all = sessions.all();
    for (const gw of all) sessions.delete(gw.id);
    await Promise.allSettled(all.flatMap((gw) => [...gw.links.values()]));
  }

  return { handle, close };
}
