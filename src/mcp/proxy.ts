/**
 * MCP Streamable HTTP forwarding between agents and upstream MCP servers, with a hook that guards
 * every `tools/call`. Web-standard `Request`/`Response` only; the app mounts it on its routes.
 *
 * ```ts
 * const proxy = createMcpProxy({ upstreams, hook, maxBodyBytes, toolTimeoutMs });
 * proxy.routed(req, serverId, agentId)   // /mcp/:server — one upstream (routed.ts)
 * proxy.unified(req, agentId)            // /mcp — all upstreams behind one gateway-owned session (unified.ts)
 * proxy.callBackend(ref, name, args, signal)  // a tools/call on an upstream for a guard's call_backend
 * await proxy.close()
 * ```
 *
 * A request's path, one module each:
 * - `http.ts`: reading the agent's body (413 over `maxBodyBytes`, 400 + `-32700`/`-32600`);
 * - `channels.ts`: the channel table, what may cross for a guarded server (the one place it is decided);
 * - this file, {@link ProxyCore.forward}: agent messages → the gateway's own upstream request: ids
 *   minted by the gateway (`exchange.ts`), duplicates and refused methods answered locally, each
 *   `tools/call` checked against the allow-list and `hook.begin`;
 * - `relay.ts`: the upstream's reply (JSON or SSE) → the agent, through the guard and the channel table;
 * - `upstream.ts`: requests the gateway itself sends (unified setup, `call_backend`, answers).
 *
 * If the upstream ends or fails before answering a request, the agent gets a JSON-RPC error for it.
 * Resuming a POST stream (GET + `Last-Event-ID`) is therefore never needed, and responses replayed on a
 * GET stream are withheld: a guarded result can only reach the agent through the guard.
 *
 * @module
 */
import type { BackendCaller } from "../difc/guard.ts";
import {
  ErrorCode,
  errorResponse,
  isErrorResponse,
  isNotification,
  isRequest,
  type JsonRpcErrorObject,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  toErrorObject,
} from "./jsonrpc.ts";
import {
  agentResponseHeaders,
  HEADER_MISMATCH,
  isEventStream,
  isJson,
  metadataHeaderProblem,
  MODERN_PROTOCOL_VERSION,
  upstreamRequestHeaders,
} from "./headers.ts";
import {
  agentNotificationAllowed,
  agentRequestRefusal,
  checkedParamValues,
  guardedResponseHeaders,
  httpStatusReason,
  isGuarded,
  upstreamRequest,
} from "./channels.ts";
import {
  duplicateIdError,
  Exchange,
  InflightRegistry,
  MAX_INFLIGHT_PER_SESSION,
  mintUpstreamId,
} from "./exchange.ts";
import {
  type Log,
  type RelayContext,
  relayErrorBody,
  relayJson,
  relaySseReply,
  toolAllowed,
} from "./relay.ts";
import { after, type Deadline } from "./deadline.ts";
import { createUpstreamClient, MAX_UPSTREAM_JSON_BYTES, type UpstreamClient } from "./upstream.ts";
import { jsonResponse, readBounded, UpstreamError } from "./http.ts";
import { createRouted } from "./routed.ts";
import { createUnified } from "./unified.ts";
import { idKey } from "./sessions.ts";
import { errorMessage } from "../util.ts";

export { UNIFIED_TOOL_SEPARATOR } from "./relay.ts";

/** An upstream MCP server from config. */
export interface Upstream {
  id: string;
  url: string;
  /** Sent on every upstream request; the only source of upstream credentials. */
  headers: Record<string, string>;
  /** Allowed tool names; `["*"]` allows all. */
  tools: string[];
  /** This upstream's tools/call deadline in ms; default {@link ProxyOptions.toolTimeoutMs}. */
  toolTimeoutMs?: number;
  /**
   * `false` only for a server whose guard is the built-in `noop`: its traffic passes transparently.
   * Anything else (including an absent flag) applies the channel table (`channels.ts`).
   */
  guarded?: boolean;
}

/** Where a guard's `call_backend` goes: an upstream and, when it has one, the session to use. */
export interface BackendRef {
  upstreamId: string;
  sessionId?: string;
  protocolVersion?: string;
}

/** The guard's handle on one tools/call in flight. */
export interface ToolCallGuard {
  /** Receives the upstream's result; resolves to the result to emit, or throws a JSON-RPC-like error. */
  finish(result: unknown): Promise<unknown>;
  /** The call ended without a result (upstream error, abort, stream failure). */
  abort(reason?: unknown): void;
}

/** What a hook decides for one tools/call. */
export type ToolCallDecision =
  | { block: { code: number; message: string; data?: unknown } }
  | { guard: ToolCallGuard };

/** The tools/call seen by the hook. */
export interface ToolCallInfo {
  upstream: Upstream;
  /** The upstream's own tool name (unified prefix already stripped). */
  name: string;
  args: unknown;
  /** The agent's JSON-RPC id. */
  id: JsonRpcId;
  /** Aborted when the agent goes away or the tool timeout passes. */
  signal: AbortSignal;
  agentId: string;
  /** `call_backend` for the guard, on the same upstream session. */
  backend: BackendCaller;
  backendRef: BackendRef;
}

/** Called for every agent→upstream tools/call before it is forwarded. */
export interface ToolCallHook {
  begin(call: ToolCallInfo): Promise<ToolCallDecision>;
}

/** Proxy configuration. */
export interface ProxyOptions {
  upstreams: Map<string, Upstream>;
  hook: ToolCallHook;
  /** Largest agent request body, in bytes (413 above). */
  maxBodyBytes: number;
  /** Deadline for one tools/call, in ms: aborts the upstream fetch and the guard. */
  toolTimeoutMs: number;
  fetch?: typeof fetch;
  log?: Log;
}

/** The proxy. */
export interface McpProxy {
  routed(req: Request, serverId: string, agentId: string): Promise<Response>;
  unified(req: Request, agentId: string): Promise<Response>;
  callBackend(ref: BackendRef, name: string, args: unknown, signal: AbortSignal): Promise<unknown>;
  close(): Promise<void>;
}

/** The allow-list error text (stable: tests and clients match on it). */
export function notAllowedMessage(tool: string): string {
  return `tool "${tool}" is not in the allowed-tools list for this server`;
}

/** One agent POST to forward to one upstream. */
export interface ForwardParams {
  req: Request;
  agentId: string;
  upstream: Upstream;
  ref: BackendRef;
  messages: JsonRpcMessage[];
  batch: boolean;
  /** The agent session's key in the in-flight registry (duplicate ids, cancellation). */
  sessionKey: string;
  /** Unified mode: id maps for noop servers' server→client requests. */
  relay?: Pick<RelayContext, "mapServerRequest" | "serverRequestAgentId">;
  /**
   * Unified mode: an upstream's non-2xx answer is a gateway error for noop servers too, and a 404
   * (the upstream's session, not the agent's) becomes 502.
   */
  unified?: boolean;
  /** Called with the upstream response before it is relayed (routed session binding). */
  onUpstreamResponse?(res: Response): Response | undefined;
  /** Session id to put on the agent response. */
  agentSessionId?(res: Response): string | undefined;
}

/** What routed.ts and unified.ts share with the core. */
export interface ProxyCore {
  opts: ProxyOptions;
  fetch: typeof fetch;
  log: Log;
  /** Aborted by close(). */
  life: AbortSignal;
  client: UpstreamClient;
  inflight: InflightRegistry;
  forward(p: ForwardParams): Promise<Response>;
  /** A relay context for an exchange with no requests of the agent (GET streams). */
  relayContext(ex: Exchange, ref: BackendRef): RelayContext;
}

/** Response headers with the content type set to JSON (the gateway writes the body). */
function jsonHeaders(h: Record<string, string>): Record<string, string> {
  return { ...h, "content-type": "application/json" };
}

function progressTokenOf(m: JsonRpcRequest): string | number | undefined {
  const meta = m.params?._meta;
  const t = typeof meta === "object" && meta !== null
    ? (meta as { progressToken?: unknown }).progressToken
    : undefined;
  return typeof t === "string" || typeof t === "number" ? t : undefined;
}

/**
 * Creates the proxy.
 *
 * @example
 * ```ts
 * const proxy = createMcpProxy({
 *   upstreams: new Map([["gh", { id: "gh", url: "http://127.0.0.1:3101/mcp", headers: {}, tools: ["*"], guarded: false }]]),
 *   hook: { begin: () => Promise.resolve({ guard: { finish: (r) => Promise.resolve(r), abort() {} } }) },
 *   maxBodyBytes: 4 << 20,
 *   toolTimeoutMs: 60_000,
 * });
 * Deno.serve((req) => proxy.routed(req, "gh", "agent-1"));
 * ```
 */
export function createMcpProxy(opts: ProxyOptions): McpProxy {
  // Bound: core.fetch(...) calls it as a method, and workerd refuses a global fetch called on another `this`.
  const doFetch = opts.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));
  const log = opts.log ?? (() => {});
  const life = new AbortController();
  const client = createUpstreamClient(doFetch);
  const inflight = new InflightRegistry();

  /** Posts the gateway's answer to a request the upstream sent; failures are only logged. */
  function answerer(upstream: Upstream, ref: BackendRef) {
    return (response: JsonRpcMessage) => {
      client.post(
        upstream,
        ref,
        response,
        AbortSignal.any([life.signal, AbortSignal.timeout(opts.toolTimeoutMs)]),
      )
        .catch((e) => log({ event: "mcp_upstream_answer_failed", upstream: upstream.id, error: String(e) }));
    };
  }

  function relayContext(ex: Exchange, ref: BackendRef, extra?: ForwardParams["relay"]): RelayContext {
    const ctx: RelayContext = { exchange: ex, log, answerUpstream: answerer(ex.upstream, ref) };
    if (extra) {
      ctx.mapServerRequest = extra.mapServerRequest;
      ctx.serverRequestAgentId = extra.serverRequestAgentId;
    }
    return ctx;
  }

  /** An agent notification as the upstream receives it, or `undefined` (dropped). */
  function agentNotification(m: JsonRpcNotification, p: ForwardParams): JsonRpcMessage | undefined {
    const guarded = isGuarded(p.upstream);
    if (guarded && !agentNotificationAllowed(m.method)) return undefined;
    if (m.method === "notifications/cancelled") {
      const rid = m.params?.requestId;
      const upId = inflight.lookup(p.sessionKey, rid)?.upstreamId;
      // A cancellation of nothing the gateway sent: for a noop server it may name a server→client
      // request (the upstream's own id), which passes; a guarded server's agent has none.
      if (upId === undefined) return guarded ? undefined : m;
      const params: Record<string, unknown> = { requestId: upId };
      if (typeof m.params?.reason === "string") params.reason = m.params.reason;
      return { jsonrpc: "2.0", method: m.method, params };
    }
    return guarded ? { jsonrpc: "2.0", method: m.method } : m;
  }

  async function forward(p: ForwardParams): Promise<Response> {
    // Request metadata headers that lie about the body are refused before anything else.
    const lying = p.batch || p.unified ? undefined : metadataHeaderProblem(p.req.headers, p.messages[0]);
    if (lying) {
      const m = p.messages[0];
      const id = "id" in m && m.id !== null ? m.id : null;
      return jsonResponse(errorResponse(id, HEADER_MISMATCH, `Header mismatch: ${lying}`), 400);
    }
    const guarded = isGuarded(p.upstream);
    const ex = new Exchange(p.upstream, { registry: inflight, key: p.sessionKey });
    const local: JsonRpcMessage[] = [];
    const send: JsonRpcMessage[] = [];
    const ac = new AbortController();
    const onAgentAbort = () =>
      ac.abort(p.req.signal.reason ?? new DOMException("agent disconnected", "AbortError"));
    if (p.req.signal.aborted) onAgentAbort();
    else p.req.signal.addEventListener("abort", onAgentAbort, { once: true });
    // close() ends POST streams still open (their pending requests get a JSON-RPC error).
    const onClose = () => ac.abort(life.signal.reason);
    if (life.signal.aborted) onClose();
    else life.signal.addEventListener("abort", onClose, { once: true });
    let deadline: Deadline | undefined;
    let timedOut = false;
    const cleanup = () => {
      deadline?.cancel();
      p.req.signal.removeEventListener("abort", onAgentAbort);
      life.signal.removeEventListener("abort", onClose);
    };
    const deadlineMs = p.upstream.toolTimeoutMs ?? opts.toolTimeoutMs;
    if (p.messages.some((m) => isRequest(m) && m.method === "tools/call")) {
      deadline = after(deadlineMs, () => {
        timedOut = true;
        ac.abort(new DOMException(`tools/call timed out after ${deadlineMs} ms`, "TimeoutError"));
      });
    }
    const timeoutError = (): JsonRpcErrorObject | undefined =>
      timedOut
        ? {
          code: ErrorCode.RequestTimeout,
          message: `upstream "${p.upstream.id}" tools/call timed out after ${deadlineMs} ms`,
        }
        : undefined;
    const answer = (msgs: JsonRpcMessage[], status: number, headers?: Record<string, string>): Response => {
      if (msgs.length === 0) return new Response(null, { status: 202, headers });
      return jsonResponse(p.batch || msgs.length > 1 ? msgs : msgs[0], status, headers);
    };

    // Ids used twice in this POST (a batch): every request carrying one is refused.
    let seen: Map<string, number> | undefined;
    if (p.batch) {
      seen = new Map();
      for (const m of p.messages) if (isRequest(m)) seen.set(idKey(m.id), (seen.get(idKey(m.id)) ?? 0) + 1);
    }

    try {
      for (const m of p.messages) {
        if (!isRequest(m)) {
          if (isNotification(m)) {
            const n = agentNotification(m, p);
            if (n) send.push(n);
          } else if (guarded) {
            // The agent's answer to a server→client request. A guarded server's requests are
            // answered by the gateway and never reach an agent: there is nothing it may answer.
            log({ level: "debug", event: "mcp_withheld_agent_response", upstream: p.upstream.id });
          } else {
            send.push(m);
          }
          continue;
        }
        if ((seen?.get(idKey(m.id)) ?? 0) > 1 || inflight.has(p.sessionKey, m.id)) {
          local.push(duplicateIdError(m.id));
          continue;
        }
        if (inflight.full(p.sessionKey)) {
          local.push(errorResponse(
            m.id,
            ErrorCode.InvalidRequest,
            `Invalid Request: ${MAX_INFLIGHT_PER_SESSION} requests are already in flight on this session`,
          ));
          continue;
        }
        const refusal = guarded ? agentRequestRefusal(m, p.upstream.id) : undefined;
        if (refusal) {
          local.push(errorResponse(m.id, refusal.code, refusal.message));
          continue;
        }
        const upId = mintUpstreamId();
        // Registered before the hook runs, so a concurrent request with the same id is refused.
        const exp = { agentId: m.id, method: m.method, progressToken: progressTokenOf(m) };
        ex.expect(upId, exp);
        if (m.method === "tools/call") {
          const name = typeof m.params?.name === "string" ? m.params.name : undefined;
          const refuse = (code: number, message: string, data?: unknown) => {
            ex.take(upId);
            local.push(errorResponse(m.id, code, message, data));
          };
          if (name === undefined) {
            refuse(ErrorCode.InvalidParams, "tools/call needs a string params.name");
            continue;
          }
          if (!toolAllowed(p.upstream, name)) {
            refuse(ErrorCode.InvalidParams, notAllowedMessage(name));
            continue;
          }
          try {
            const decision = await opts.hook.begin({
              upstream: p.upstream,
              name,
              args: m.params?.arguments,
              id: m.id,
              signal: ac.signal,
              agentId: p.agentId,
              backend: (n, a, s) => callBackend(p.ref, n, a, s),
              backendRef: p.ref,
            });
            if ("block" in decision) {
              refuse(decision.block.code, decision.block.message, decision.block.data);
              continue;
            }
            Object.assign(exp, { guard: decision.guard });
          } catch (e) {
            const err = toErrorObject(e);
            refuse(err.code, `guard failed: ${err.message}`, err.data);
            continue;
          }
        }
        send.push(upstreamRequest(m, upId, guarded));
      }

      if (send.length === 0) {
        cleanup();
        return answer(local, 200);
      }
      const single = p.batch ? undefined : send[0];
      const headers = upstreamRequestHeaders({
        method: "POST",
        configured: p.upstream.headers,
        agent: p.req.headers,
        paramValueAllowed: guarded ? checkedParamValues(single) : undefined,
        sessionId: p.ref.sessionId,
        protocolVersion: p.ref.protocolVersion,
        rewrittenBody: single,
      });

      let up: Response;
      try {
        up = await doFetch(p.upstream.url, {
          method: "POST",
          headers,
          body: JSON.stringify(p.batch ? send : send[0]),
          signal: ac.signal,
          redirect: "manual",
        });
      } catch (e) {
        cleanup();
        const err = timeoutError() ?? {
          code: ErrorCode.ConnectionClosed,
          message: `upstream "${p.upstream.id}" unreachable: ${errorMessage(e)}`,
        };
        log({ event: "mcp_upstream_unreachable", upstream: p.upstream.id, error: String(e) });
        const errs = [...local, ...ex.failAll(err)];
        const status = timedOut ? 504 : 502;
        if (errs.length === 0) return jsonResponse(errorResponse(null, err.code, err.message), status);
        return answer(errs, status);
      }

      const early = p.onUpstreamResponse?.(up);
      if (early) {
        cleanup();
        ex.abortAll("session rejected");
        await up.body?.cancel().catch(() => {});
        return early;
      }
      const sid = p.agentSessionId?.(up);
      const sse = up.ok && up.body !== null && isEventStream(up.headers);
      const outHeaders = guarded ? guardedResponseHeaders(sse, sid) : agentResponseHeaders(up.headers, sid);

      const ctx = relayContext(ex, p.ref, p.relay);
      if (!up.ok) {
        cleanup();
        const status = p.unified && up.status === 404 ? 502 : up.status;
        const transparent = !guarded && !p.unified;
        // JSON-RPC errors in the body are answers like any other: matched by the gateway's id and
        // passed through the channel table (a guarded server's keep their code only). Requests left
        // unanswered get the status and its standard reason, never upstream text. A noop server's
        // body that answers none of the gateway's ids (or is not JSON) passes as it is.
        const text = isJson(up.headers) || transparent
          ? await readBounded(up.body, MAX_UPSTREAM_JSON_BYTES).catch(() => "")
          : (await up.body?.cancel().catch(() => {}), "");
        const answered = isJson(up.headers) ? await relayErrorBody(text, ctx) : [];
        if (answered.length === 0 && transparent) {
          ex.abortAll(`upstream HTTP ${up.status}`);
          return new Response(text === "" ? null : text, { status: up.status, headers: outHeaders });
        }
        const err = {
          code: ErrorCode.ConnectionClosed,
          message: `upstream "${p.upstream.id}" answered HTTP ${up.status} (${httpStatusReason(up.status)})`,
        };
        const errs = [...local, ...answered, ...ex.failAll(err)];
        if (errs.length === 0) {
          return jsonResponse(errorResponse(null, err.code, err.message), status, outHeaders);
        }
        return answer(errs, status, guarded ? outHeaders : jsonHeaders(outHeaders));
      }

      if (up.status === 202 || up.body === null) {
        cleanup();
        await up.body?.cancel().catch(() => {});
        const errs = [
          ...local,
          ...ex.failAll({
            code: ErrorCode.ConnectionClosed,
            message: `upstream "${p.upstream.id}" accepted the request without answering it`,
          }),
        ];
        if (errs.length > 0) return answer(errs, 200, outHeaders);
        return new Response(null, { status: guarded ? 202 : up.status, headers: outHeaders });
      }

      // A guarded server's 2xx status is not passed on either: 200 is the gateway's own.
      const okStatus = guarded ? 200 : up.status;
      if (sse) {
        const body = await relaySseReply(up.body, ctx, {
          prefix: local,
          failure: timeoutError,
          done: cleanup,
          closed: life.signal,
        });
        return new Response(body, { status: okStatus, headers: outHeaders });
      }

      if (isJson(up.headers)) {
        let out: JsonRpcMessage[] | undefined;
        let failure: JsonRpcErrorObject | undefined;
        try {
          out = await relayJson(await readBounded(up.body, MAX_UPSTREAM_JSON_BYTES), ctx);
          if (!out) {
            failure = {
              code: ErrorCode.ConnectionClosed,
              message: `upstream "${p.upstream.id}" sent invalid JSON`,
            };
          }
        } catch (e) {
          failure = timeoutError() ?? {
            code: ErrorCode.ConnectionClosed,
            message: `upstream "${p.upstream.id}" response failed: ${errorMessage(e)}`,
          };
        }
        cleanup();
        if (failure) return answer([...local, ...ex.failAll(failure)], 502, guarded ? outHeaders : undefined);
        return answer([...local, ...out!], okStatus, outHeaders);
      }

      // Neither JSON nor SSE: nothing the gateway can inspect; pending calls fail closed.
      cleanup();
      await up.body.cancel().catch(() => {});
      return answer(
        [
          ...local,
          ...ex.failAll({
            code: ErrorCode.ConnectionClosed,
            message: `upstream "${p.upstream.id}" answered with an unsupported content-type`,
          }),
        ],
        502,
      );
    } catch (e) {
      cleanup();
      ex.abortAll(e);
      throw e;
    }
  }

  async function callBackend(
    ref: BackendRef,
    name: string,
    args: unknown,
    signal: AbortSignal,
  ): Promise<unknown> {
    const up = opts.upstreams.get(ref.upstreamId);
    if (!up) throw new UpstreamError(ref.upstreamId, "is not configured");
    const params: Record<string, unknown> = { name, arguments: args ?? {} };
    if (ref.protocolVersion === MODERN_PROTOCOL_VERSION) {
      params._meta = { "io.modelcontextprotocol/protocolVersion": ref.protocolVersion };
    }
    const msg: JsonRpcRequest = { jsonrpc: "2.0", id: mintUpstreamId(), method: "tools/call", params };
    const { response } = await client.rpc(up, ref, msg, AbortSignal.any([signal, life.signal]));
    if (isErrorResponse(response)) {
      const e = new Error(response.error.message) as Error & { code: number; data?: unknown };
      e.code = response.error.code;
      e.data = response.error.data;
      throw e;
    }
    return (response as { result: unknown }).result;
  }

  const core: ProxyCore = {
    opts,
    fetch: doFetch,
    log,
    life: life.signal,
    client,
    inflight,
    forward,
    relayContext: (ex, ref) => relayContext(ex, ref),
  };
  const routed = createRouted(core);
  const unified = createUnified(core);

  async function close(): Promise<void> {
    life.abort(new DOMException("proxy closed", "AbortError"));
    await unified.close();
  }

  return { routed, unified: unified.handle, callBackend, close };
}
