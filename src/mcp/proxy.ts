/**
 * MCP Streamable HTTP forwarding between agents and upstream MCP servers, with a hook that guards
 * every `tools/call`. Web-standard `Request`/`Response` only; the app mounts it on its routes.
 *
 * ```ts
 * const proxy = createMcpProxy({ upstreams, hook, maxBodyBytes, toolTimeoutMs });
 * proxy.routed(req, serverId, agentId)   // /mcp/:server — one upstream, its session id passed through
 * proxy.unified(req, agentId)            // /mcp — all upstreams behind one gateway-owned session
 * proxy.callBackend(ref, name, args, signal)  // a tools/call on an upstream for a guard's call_backend
 * await proxy.close()
 * ```
 *
 * The contract:
 * - {@link ToolCallHook.begin} receives `{ upstream, name, args, id, signal, agentId, backend, backendRef }`.
 *   `backend` is a ready {@link BackendCaller} bound to the agent's upstream session; `backendRef` is
 *   the same target for {@link McpProxy.callBackend}.
 * - `callBackend(ref: BackendRef, …)` takes the upstream id plus the upstream session id and version
 *   (routed: the agent's session; unified: the gateway's link to that upstream).
 *
 * Behaviour, per method:
 * - POST: the body is parsed (413 over `maxBodyBytes`, 400 + `-32700` bad JSON, 400 + `-32600`
 *   invalid) and forwarded; JSON stays JSON, SSE is streamed block by block, 202 stays 202. Each
 *   `tools/call` is checked against the allow-list, then `hook.begin`; the upstream's response for
 *   its id goes through `guard.finish` before it is emitted (an upstream error → `guard.abort`).
 *   If the upstream stream ends or fails before answering a request, the agent gets a JSON-RPC
 *   error for that id and the stream ends. Resuming a POST stream (GET + `Last-Event-ID`) is
 *   therefore never needed, and responses replayed on a GET stream are withheld: a guarded result
 *   can only reach the agent through the guard.
 * - GET: routed passes the SSE stream through (server→client requests and notifications).
 *   Unified answers 405: the fan-in of several upstream GET streams is not implemented; SDK
 *   clients accept 405 and then only use POST streams.
 * - DELETE: routed forwards it; unified deletes every upstream session of the gateway session.
 * - Anything else: 405 with `Allow: GET, POST, DELETE` ({@link checkMethod}).
 *
 * Unified mode speaks the 2025 session protocols (2025-03-26 … 2025-11-25); a request without a
 * session that is not `initialize` gets 400, which makes 2026-era clients fall back to
 * `initialize`. Routed mode also passes stateless 2026-07-28 traffic (`Mcp-Method`, `Mcp-Name`,
 * `Mcp-Param-*` forwarded; rewritten when the gateway rewrites the body).
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
  isResponse,
  type JsonRpcErrorObject,
  type JsonRpcId,
  type JsonRpcMessage,
  JsonRpcParseError,
  type JsonRpcRequest,
  parseBody,
  toErrorObject,
} from "./jsonrpc.ts";
import { parseSseStream, serializeSseBlock, type SseBlock } from "./sse.ts";
import {
  agentResponseHeaders,
  isEventStream,
  isJson,
  MODERN_PROTOCOL_VERSION,
  upstreamRequestHeaders,
} from "./headers.ts";
import { GATEWAY_VERSION } from "../version.ts";
import {
  GatewaySession,
  GatewaySessionStore,
  idKey,
  mintSessionId,
  RoutedSessionBindings,
  type UpstreamLink,
} from "./sessions.ts";
import { errorMessage } from "../util.ts";

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
  log?: (rec: Record<string, unknown>) => void;
}

/** The proxy. */
export interface McpProxy {
  routed(req: Request, serverId: string, agentId: string): Promise<Response>;
  unified(req: Request, agentId: string): Promise<Response>;
  callBackend(ref: BackendRef, name: string, args: unknown, signal: AbortSignal): Promise<unknown>;
  close(): Promise<void>;
}

/** Separator between server id and tool name in unified mode (`github___get_issue`). */
export const UNIFIED_TOOL_SEPARATOR = "___";
/** Methods of the Streamable HTTP endpoint. */
export const ALLOWED_METHODS = ["GET", "POST", "DELETE"] as const;
/** Versions the unified endpoint negotiates with agents (session-based era). */
export const SESSION_PROTOCOL_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26"];
/** Largest upstream JSON response read into memory (tool results can be large; 32 MiB). */
export const MAX_UPSTREAM_JSON_BYTES = 32 * 1024 * 1024;
/** Pages of `tools/list` fetched per upstream in unified mode: bounds a server that never ends. */
const MAX_TOOLS_LIST_PAGES = 100;
/** Gateway name in unified `initialize` results. */
const GATEWAY_INFO = { name: "mcp-edge-guard", version: GATEWAY_VERSION };

/**
 * Rejects methods the MCP endpoint does not serve: 405 with `Allow`, else `undefined`.
 *
 * @example
 * ```ts
 * const r = checkMethod(req); if (r) return r;
 * ```
 */
export function checkMethod(req: Request): Response | undefined {
  if ((ALLOWED_METHODS as readonly string[]).includes(req.method)) return undefined;
  return jsonResponse(
    errorResponse(null, ErrorCode.ConnectionClosed, `Method Not Allowed: ${req.method}`),
    405,
    { allow: ALLOWED_METHODS.join(", ") },
  );
}

/** Whether `tool` passes an allow-list. */
export function toolAllowed(up: Upstream, tool: string): boolean {
  return up.tools.includes("*") || up.tools.includes(tool);
}

/** The allow-list error text (stable: tests and clients match on it). */
export function notAllowedMessage(tool: string): string {
  return `tool "${tool}" is not in the allowed-tools list for this server`;
}

function jsonResponse(body: unknown, status = 200, extra: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...extra },
  });
}

function sessionNotFound(): Response {
  return jsonResponse(errorResponse(null, ErrorCode.RequestTimeout, "Session not found"), 404);
}

/** A body over the limit. */
class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`Payload Too Large: body exceeds ${limit} bytes`);
    this.name = "BodyTooLargeError";
  }
}

/** An upstream answered something the gateway cannot use (non-2xx, wrong type, no response). */
export class UpstreamError extends Error {
  constructor(readonly upstreamId: string, message: string, readonly status?: number) {
    super(`upstream "${upstreamId}": ${message}`);
    this.name = "UpstreamError";
  }
}

async function readBounded(body: ReadableStream<Uint8Array> | null, limit: number): Promise<string> {
  if (!body) return "";
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > limit) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLargeError(limit);
    }
    parts.push(value);
  }
  const all = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.byteLength;
  }
  return new TextDecoder().decode(all);
}

/** Reads and parses the agent's POST body, or returns the error response to send. */
async function readAgentBody(
  req: Request,
  limit: number,
): Promise<{ batch: boolean; messages: JsonRpcMessage[]; text: string } | Response> {
  const declared = Number(req.headers.get("content-length") ?? "NaN");
  const tooLarge = () =>
    jsonResponse(
      errorResponse(null, ErrorCode.ConnectionClosed, `Payload Too Large: body exceeds ${limit} bytes`),
      413,
    );
  if (Number.isFinite(declared) && declared > limit) {
    await req.body?.cancel().catch(() => {});
    return tooLarge();
  }
  let text: string;
  try {
    text = await readBounded(req.body, limit);
  } catch (e) {
    if (e instanceof BodyTooLargeError) return tooLarge();
    throw e;
  }
  try {
    return { ...parseBody(text), text };
  } catch (e) {
    if (e instanceof JsonRpcParseError) return jsonResponse(errorResponse(e.id, e.code, e.message), 400);
    throw e;
  }
}

/** What the gateway expects back for one forwarded request. */
interface Expectation {
  id: JsonRpcId;
  method: string;
  guard?: ToolCallGuard;
}

/** One agent POST (or GET) being forwarded to one upstream. */
class Exchange {
  readonly pending = new Map<string, Expectation>();
  constructor(
    readonly upstream: Upstream,
    readonly gw: GatewaySession | undefined,
  ) {}

  /** Aborts every guard still waiting and forgets the expectations. */
  abortAll(reason: unknown): void {
    for (const e of this.pending.values()) e.guard?.abort(reason);
    this.pending.clear();
  }

  /** Error responses for every request still unanswered; aborts their guards. */
  failAll(err: JsonRpcErrorObject): JsonRpcMessage[] {
    const out: JsonRpcMessage[] = [];
    for (const e of this.pending.values()) {
      e.guard?.abort(err.message);
      out.push(errorResponse(e.id, err.code, err.message, err.data));
      this.gw?.inflight.delete(idKey(e.id));
    }
    this.pending.clear();
    return out;
  }
}

/**
 * Creates the proxy.
 *
 * @example
 * ```ts
 * const proxy = createMcpProxy({
 *   upstreams: new Map([["gh", { id: "gh", url: "http://127.0.0.1:3101/mcp", headers: {}, tools: ["*"] }]]),
 *   hook: { begin: () => Promise.resolve({ guard: { finish: (r) => Promise.resolve(r), abort() {} } }) },
 *   maxBodyBytes: 4 << 20,
 *   toolTimeoutMs: 60_000,
 * });
 * Deno.serve((req) => proxy.routed(req, "gh", "agent-1"));
 * ```
 */
export function createMcpProxy(opts: ProxyOptions): McpProxy {
  const doFetch = opts.fetch ?? fetch;
  const log = opts.log ?? (() => {});
  const bindings = new RoutedSessionBindings();
  const gwSessions = new GatewaySessionStore();
  const life = new AbortController();
  let backendSeq = 0;

  // ---------------------------------------------------------------- upstream → agent messages

  /** Rewrites one upstream message for the agent; `undefined` withholds it. */
  async function outgoing(msg: JsonRpcMessage, ex: Exchange): Promise<JsonRpcMessage | undefined> {
    if (isResponse(msg)) {
      // Only an error may carry a null id (the request could not be read); a result never does.
      if (msg.id === null && isErrorResponse(msg)) return msg;
      const k = msg.id === null ? "" : idKey(msg.id);
      const exp = ex.pending.get(k);
      if (!exp) {
        // Each pending request is answered once, through its guard. A duplicate or stray response
        // (or any response on a GET stream) could carry data no guard has seen: withheld.
        log({ event: "mcp_withheld_response", upstream: ex.upstream.id, id: msg.id });
        return undefined;
      }
      ex.pending.delete(k);
      ex.gw?.inflight.delete(k);
      if (exp.method === "tools/call" && exp.guard) {
        if (isErrorResponse(msg)) {
          exp.guard.abort(msg.error);
          return msg;
        }
        try {
          const result = await exp.guard.finish((msg as { result: unknown }).result);
          return { jsonrpc: "2.0", id: msg.id, result };
        } catch (e) {
          const err = toErrorObject(e);
          return errorResponse(msg.id, err.code, err.message, err.data);
        }
      }
      if (exp.method === "tools/list" && !isErrorResponse(msg)) {
        const result = (msg as { result: unknown }).result as { tools?: unknown };
        if (result && Array.isArray(result.tools)) {
          return {
            jsonrpc: "2.0",
            id: msg.id,
            result: { ...result, tools: filterTools(ex.upstream, result.tools, false) },
          };
        }
      }
      return msg;
    }
    if (!isRequest(msg) && !isNotification(msg)) {
      // Neither request, notification nor response: nothing a client needs, nothing a guard checked.
      log({ event: "mcp_withheld_message", upstream: ex.upstream.id });
      return undefined;
    }
    if (ex.gw) {
      if (isRequest(msg)) {
        return { ...msg, id: ex.gw.mapServerRequest(ex.upstream.id, msg.id) };
      }
      if (msg.method === "notifications/cancelled" && msg.params && "requestId" in msg.params) {
        const mapped = ex.gw.agentIdOf(ex.upstream.id, msg.params.requestId as JsonRpcId);
        if (mapped !== undefined) return { ...msg, params: { ...msg.params, requestId: mapped } };
      }
    }
    return msg;
  }

  async function outgoingBlock(b: SseBlock, ex: Exchange): Promise<SseBlock | undefined> {
    if (b.data === undefined || b.data === "") return b;
    let parsed: unknown;
    try {
      parsed = JSON.parse(b.data);
    } catch {
      // Data that is not JSON cannot be guarded: withheld (fail closed); the event's id/retry stay.
      log({ event: "mcp_withheld_block", upstream: ex.upstream.id, reason: "data is not JSON" });
      parsed = [];
    }
    const msgs = Array.isArray(parsed) ? parsed : [parsed];
    const out: JsonRpcMessage[] = [];
    for (const m of msgs) {
      if (typeof m !== "object" || m === null) continue;
      const r = await outgoing(m as JsonRpcMessage, ex);
      if (r) out.push(r);
    }
    if (out.length === 0) {
      const { data: _drop, ...rest } = b;
      return rest.id !== undefined || rest.retry !== undefined || rest.comments ? rest : undefined;
    }
    return { ...b, data: JSON.stringify(Array.isArray(parsed) ? out : out[0]) };
  }

  /**
   * Streams an upstream SSE body to the agent block by block. `prefix` messages (gateway answers
   * for blocked calls in a batch) go first. When the upstream ends or fails before answering,
   * every pending request gets a JSON-RPC error.
   */
  function relaySse(
    body: ReadableStream<Uint8Array>,
    ex: Exchange,
    prefix: JsonRpcMessage[],
    failure: () => JsonRpcErrorObject | undefined,
    done: () => void,
  ): ReadableStream<Uint8Array> {
    const reader = parseSseStream(body).getReader();
    const enc = new TextEncoder();
    const message = (m: JsonRpcMessage) =>
      enc.encode(serializeSseBlock({ event: "message", data: JSON.stringify(m) }));
    let finished = false;
    let onClose: (() => void) | undefined;
    const unlisten = () => {
      if (onClose) life.signal.removeEventListener("abort", onClose);
    };
    const end = (ctl: ReadableStreamDefaultController<Uint8Array>, why: string) => {
      if (finished) return;
      unlisten();
      const err = failure() ?? {
        code: ErrorCode.ConnectionClosed,
        message: `upstream "${ex.upstream.id}" ${why} before sending the response`,
      };
      for (const m of ex.failAll(err)) ctl.enqueue(message(m));
      finished = true;
      done();
      ctl.close();
    };
    return new ReadableStream<Uint8Array>({
      start(ctl) {
        for (const m of prefix) ctl.enqueue(message(m));
        // close() ends the stream even when nothing is reading it (a graceful server shutdown
        // waits for every open response body).
        onClose = () => {
          end(ctl, "was closed by the gateway");
          reader.cancel(life.signal.reason).catch(() => {});
        };
        if (life.signal.aborted) onClose();
        else life.signal.addEventListener("abort", onClose, { once: true });
      },
      async pull(ctl) {
        for (;;) {
          if (finished) return;
          let r: ReadableStreamReadResult<SseBlock>;
          try {
            r = await reader.read();
            if (finished) return;
          } catch (e) {
            if (finished) return;
            log({ event: "mcp_upstream_stream_failed", upstream: ex.upstream.id, error: String(e) });
            return end(ctl, `stream failed (${errorMessage(e)})`);
          }
          if (r.done) return end(ctl, "closed the stream");
          const out = await outgoingBlock(r.value, ex);
          if (finished) return;
          if (out) {
            const s = serializeSseBlock(out);
            if (s !== "") {
              ctl.enqueue(enc.encode(s));
              return;
            }
          }
        }
      },
      async cancel(reason) {
        if (finished) return;
        finished = true;
        unlisten();
        ex.abortAll(reason ?? "agent disconnected");
        done();
        await reader.cancel(reason).catch(() => {});
      },
    }, { highWaterMark: 0 });
  }

  // ---------------------------------------------------------------- tools/list filtering

  function filterTools(up: Upstream, tools: unknown[], prefix: boolean): unknown[] {
    const out: unknown[] = [];
    for (const t of tools) {
      if (typeof t !== "object" || t === null) continue;
      const tool = t as { name?: unknown; description?: unknown };
      if (typeof tool.name !== "string" || !toolAllowed(up, tool.name)) continue;
      if (!prefix) {
        out.push(t);
        continue;
      }
      out.push({
        ...tool,
        name: `${up.id}${UNIFIED_TOOL_SEPARATOR}${tool.name}`,
        description: `[${up.id}] ${typeof tool.description === "string" ? tool.description : ""}`.trimEnd(),
      });
    }
    return out;
  }

  // ---------------------------------------------------------------- the forwarding core

  interface ForwardParams {
    req: Request;
    agentId: string;
    upstream: Upstream;
    ref: BackendRef;
    messages: JsonRpcMessage[];
    batch: boolean;
    /** The agent's body text, sent verbatim when nothing was rewritten or removed. */
    text?: string;
    /** The body was rewritten by the gateway (headers must follow it). */
    rewritten: boolean;
    gw?: GatewaySession;
    /** Called with the upstream response before it is relayed (routed session binding). */
    onUpstreamResponse?(res: Response): Response | undefined;
    /** Session id to put on the agent response. */
    agentSessionId?(res: Response): string | undefined;
  }

  function backendFor(ref: BackendRef): BackendCaller {
    return (name, args, signal) => callBackend(ref, name, args, signal);
  }

  async function forward(p: ForwardParams): Promise<Response> {
    const ex = new Exchange(p.upstream, p.gw);
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
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    const cleanup = () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      p.req.signal.removeEventListener("abort", onAgentAbort);
      life.signal.removeEventListener("abort", onClose);
    };
    const hasCall = p.messages.some((m) => isRequest(m) && m.method === "tools/call");
    const deadlineMs = p.upstream.toolTimeoutMs ?? opts.toolTimeoutMs;
    if (hasCall) {
      timer = setTimeout(() => {
        timedOut = true;
        ac.abort(new DOMException(`tools/call timed out after ${deadlineMs} ms`, "TimeoutError"));
      }, deadlineMs);
    }
    const timeoutError = (): JsonRpcErrorObject | undefined =>
      timedOut
        ? {
          code: ErrorCode.RequestTimeout,
          message: `upstream "${p.upstream.id}" tools/call timed out after ${deadlineMs} ms`,
        }
        : undefined;

    try {
      for (const m of p.messages) {
        if (!isRequest(m)) {
          send.push(m);
          continue;
        }
        if (m.method === "tools/call") {
          const name = typeof m.params?.name === "string" ? m.params.name : undefined;
          if (name === undefined) {
            local.push(errorResponse(m.id, ErrorCode.InvalidParams, "tools/call needs a string params.name"));
            continue;
          }
          if (!toolAllowed(p.upstream, name)) {
            local.push(errorResponse(m.id, ErrorCode.InvalidParams, notAllowedMessage(name)));
            continue;
          }
          let decision: ToolCallDecision;
          try {
            decision = await opts.hook.begin({
              upstream: p.upstream,
              name,
              args: m.params?.arguments,
              id: m.id,
              signal: ac.signal,
              agentId: p.agentId,
              backend: backendFor(p.ref),
              backendRef: p.ref,
            });
          } catch (e) {
            const err = toErrorObject(e);
            local.push(errorResponse(m.id, err.code, `guard failed: ${err.message}`, err.data));
            continue;
          }
          if ("block" in decision) {
            const b = decision.block;
            local.push(errorResponse(m.id, b.code, b.message, b.data));
            continue;
          }
          ex.pending.set(idKey(m.id), { id: m.id, method: m.method, guard: decision.guard });
        } else {
          ex.pending.set(idKey(m.id), { id: m.id, method: m.method });
        }
        p.gw?.inflight.set(idKey(m.id), p.upstream.id);
        send.push(m);
      }

      if (send.length === 0) {
        cleanup();
        return jsonResponse(p.batch ? local : local[0]);
      }
      const changed = p.rewritten || send.length !== p.messages.length;
      const body = !changed && p.text !== undefined ? p.text : JSON.stringify(p.batch ? send : send[0]);
      const headers = upstreamRequestHeaders({
        method: "POST",
        configured: p.upstream.headers,
        agent: p.req.headers,
        sessionId: p.ref.sessionId,
        protocolVersion: p.ref.protocolVersion,
        rewrittenBody: changed && !p.batch ? send[0] : undefined,
      });

      let up: Response;
      try {
        up = await doFetch(p.upstream.url, {
          method: "POST",
          headers,
          body,
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
        if (!p.batch && errs.length === 1) return jsonResponse(errs[0], timedOut ? 504 : 502);
        const firstId = p.messages.find(isRequest)?.id ?? null;
        return jsonResponse(
          p.batch ? errs : errorResponse(firstId, err.code, err.message),
          timedOut ? 504 : 502,
        );
      }

      const early = p.onUpstreamResponse?.(up);
      if (early) {
        cleanup();
        ex.abortAll("session rejected");
        await up.body?.cancel().catch(() => {});
        return early;
      }
      const outHeaders = agentResponseHeaders(up.headers, p.agentSessionId?.(up));

      if (!up.ok) {
        const text = await readBounded(up.body, MAX_UPSTREAM_JSON_BYTES).catch(() => "");
        cleanup();
        ex.abortAll(`upstream HTTP ${up.status}`);
        if (p.gw) {
          const err = {
            code: ErrorCode.ConnectionClosed,
            message: `upstream "${p.upstream.id}" answered HTTP ${up.status}`,
          };
          const req0 = p.messages.find(isRequest);
          return jsonResponse(
            errorResponse(req0?.id ?? null, err.code, err.message, text.slice(0, 500)),
            502,
          );
        }
        return new Response(text === "" ? null : text, { status: up.status, headers: outHeaders });
      }

      if (up.status === 202 || up.body === null) {
        cleanup();
        const errs = [
          ...local,
          ...ex.failAll({
            code: ErrorCode.ConnectionClosed,
            message: `upstream "${p.upstream.id}" accepted the request without answering it`,
          }),
        ];
        await up.body?.cancel().catch(() => {});
        if (errs.length > 0) return jsonResponse(p.batch ? errs : errs[0]);
        return new Response(null, { status: up.status, headers: outHeaders });
      }

      if (isEventStream(up.headers)) {
        return new Response(relaySse(up.body, ex, local, timeoutError, cleanup), {
          status: up.status,
          headers: outHeaders,
        });
      }

      if (isJson(up.headers)) {
        let text: string;
        try {
          text = await readBounded(up.body, MAX_UPSTREAM_JSON_BYTES);
        } catch (e) {
          cleanup();
          const err = timeoutError() ?? {
            code: ErrorCode.ConnectionClosed,
            message: `upstream "${p.upstream.id}" response failed: ${
              e instanceof Error ? e.message : String(e)
            }`,
          };
          const errs = [...local, ...ex.failAll(err)];
          return jsonResponse(p.batch ? errs : errs[0], 502);
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          cleanup();
          const errs = [
            ...local,
            ...ex.failAll({
              code: ErrorCode.ConnectionClosed,
              message: `upstream "${p.upstream.id}" sent invalid JSON`,
            }),
          ];
          return jsonResponse(p.batch ? errs : errs[0], 502);
        }
        const outMsgs: JsonRpcMessage[] = [...local];
        for (const m of Array.isArray(parsed) ? parsed : [parsed]) {
          if (typeof m !== "object" || m === null) continue;
          const r = await outgoing(m as JsonRpcMessage, ex);
          if (r) outMsgs.push(r);
        }
        outMsgs.push(...ex.failAll({
          code: ErrorCode.ConnectionClosed,
          message: `upstream "${p.upstream.id}" did not answer the request`,
        }));
        cleanup();
        const out = p.batch || Array.isArray(parsed) ? outMsgs : outMsgs[0];
        return new Response(JSON.stringify(out), { status: up.status, headers: outHeaders });
      }

      // Neither JSON nor SSE: nothing the gateway can inspect; pending calls fail closed.
      cleanup();
      await up.body.cancel().catch(() => {});
      const errs = [
        ...local,
        ...ex.failAll({
          code: ErrorCode.ConnectionClosed,
          message: `upstream "${p.upstream.id}" answered with unsupported content-type ${
            JSON.stringify(up.headers.get("content-type"))
          }`,
        }),
      ];
      return jsonResponse(p.batch ? errs : errs[0], 502);
    } catch (e) {
      cleanup();
      ex.abortAll(e);
      throw e;
    }
  }

  // ---------------------------------------------------------------- gateway-originated requests

  /** Sends one request upstream and waits for its response (JSON or SSE). */
  async function rpc(
    up: Upstream,
    link: { sessionId?: string; protocolVersion?: string },
    msg: JsonRpcRequest,
    signal: AbortSignal,
  ): Promise<{ response: JsonRpcMessage; headers: Headers }> {
    const headers = upstreamRequestHeaders({
      method: "POST",
      configured: up.headers,
      sessionId: link.sessionId,
      protocolVersion: link.protocolVersion,
      rewrittenBody: msg,
    });
    let res: Response;
    try {
      res = await doFetch(up.url, {
        method: "POST",
        headers,
        body: JSON.stringify(msg),
        signal,
        redirect: "manual",
      });
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      throw new UpstreamError(up.id, `unreachable: ${errorMessage(e)}`);
    }
    if (!res.ok || res.body === null) {
      await res.body?.cancel().catch(() => {});
      throw new UpstreamError(up.id, `answered HTTP ${res.status} to ${msg.method}`, res.status);
    }
    const want = idKey(msg.id);
    const match = (m: unknown): m is JsonRpcMessage =>
      typeof m === "object" && m !== null && !("method" in m) && "id" in m &&
      idKey((m as { id: JsonRpcId }).id) === want;
    if (isJson(res.headers)) {
      const parsed = JSON.parse(await readBounded(res.body, MAX_UPSTREAM_JSON_BYTES));
      const found = (Array.isArray(parsed) ? parsed : [parsed]).find(match);
      if (!found) throw new UpstreamError(up.id, `did not answer ${msg.method}`);
      return { response: found, headers: res.headers };
    }
    if (!isEventStream(res.headers)) {
      await res.body.cancel().catch(() => {});
      throw new UpstreamError(
        up.id,
        `answered ${msg.method} with content-type ${res.headers.get("content-type")}`,
      );
    }
    const reader = parseSseStream(res.body).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!value.data) continue;
        let m: unknown;
        try {
          m = JSON.parse(value.data);
        } catch {
          continue;
        }
        if (match(m)) return { response: m, headers: res.headers };
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
    throw new UpstreamError(up.id, `closed the stream before answering ${msg.method}`);
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
    const msg: JsonRpcRequest = {
      jsonrpc: "2.0",
      id: `mcpeg-backend-${++backendSeq}`,
      method: "tools/call",
      params,
    };
    const { response } = await rpc(up, ref, msg, AbortSignal.any([signal, life.signal]));
    if (isErrorResponse(response)) {
      const e = new Error(response.error.message) as Error & { code: number; data?: unknown };
      e.code = response.error.code;
      e.data = response.error.data;
      throw e;
    }
    return (response as { result: unknown }).result;
  }

  // ---------------------------------------------------------------- routed mode

  async function routed(req: Request, serverId: string, agentId: string): Promise<Response> {
    const bad = checkMethod(req);
    if (bad) return bad;
    const upstream = opts.upstreams.get(serverId);
    if (!upstream) {
      return jsonResponse(
        errorResponse(null, ErrorCode.InvalidRequest, `unknown MCP server "${serverId}"`),
        404,
      );
    }
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
      const parsed = await readAgentBody(req, opts.maxBodyBytes);
      if (parsed instanceof Response) return parsed;
      return await forward({
        req,
        agentId,
        upstream,
        ref,
        ...parsed,
        rewritten: false,
        onUpstreamResponse(res) {
          const newSid = res.headers.get("mcp-session-id");
          if (res.status === 404 && sid !== undefined) bindings.unbind(upstream.id, sid);
          if (newSid !== null && bindings.bind(upstream.id, newSid, agentId) === "foreign") {
            log({ event: "mcp_session_collision", upstream: upstream.id });
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
    const headers = upstreamRequestHeaders({
      method: req.method as "GET" | "DELETE",
      configured: upstream.headers,
      agent: req.headers,
      sessionId: sid,
    });
    let up: Response;
    try {
      up = await doFetch(upstream.url, {
        method: req.method,
        headers,
        // close() must end open GET streams too, or a graceful server shutdown waits for them forever.
        signal: AbortSignal.any([req.signal, life.signal]),
        redirect: "manual",
      });
    } catch (e) {
      log({ event: "mcp_upstream_unreachable", upstream: upstream.id, error: String(e) });
      return jsonResponse(
        errorResponse(
          null,
          ErrorCode.ConnectionClosed,
          `upstream "${upstream.id}" unreachable: ${String(e)}`,
        ),
        502,
      );
    }
    if (sid !== undefined && (up.status === 404 || (req.method === "DELETE" && up.ok))) {
      bindings.unbind(upstream.id, sid);
    }
    const outHeaders = agentResponseHeaders(up.headers, up.headers.get("mcp-session-id") ?? undefined);
    if (req.method === "GET" && up.ok && up.body && isEventStream(up.headers)) {
      // No pending requests: every response on a GET stream is withheld (see the module doc).
      const ex = new Exchange(upstream, undefined);
      return new Response(relaySse(up.body, ex, [], () => undefined, () => {}), {
        status: up.status,
        headers: outHeaders,
      });
    }
    return new Response(up.body, { status: up.status, headers: outHeaders });
  }

  // ---------------------------------------------------------------- unified mode

  function linkSignal(): AbortSignal {
    return AbortSignal.any([life.signal, AbortSignal.timeout(opts.toolTimeoutMs)]);
  }

  async function initLink(gw: GatewaySession, up: Upstream): Promise<UpstreamLink> {
    const signal = linkSignal();
    const init: JsonRpcRequest = {
      jsonrpc: "2.0",
      id: "mcpeg-init",
      method: "initialize",
      params: { ...gw.initParams, protocolVersion: gw.protocolVersion },
    };
    const { response, headers } = await rpc(up, {}, init, signal);
    if (isErrorResponse(response)) {
      throw new UpstreamError(up.id, `initialize failed: ${response.error.message}`);
    }
    const result = (response as { result?: { protocolVersion?: unknown } }).result;
    const link: UpstreamLink = {
      sessionId: headers.get("mcp-session-id") ?? undefined,
      protocolVersion: typeof result?.protocolVersion === "string"
        ? result.protocolVersion
        : gw.protocolVersion,
    };
    await notify(up, link, { jsonrpc: "2.0", method: "notifications/initialized" }, signal);
    return link;
  }

  async function notify(
    up: Upstream,
    link: UpstreamLink,
    msg: JsonRpcMessage,
    signal: AbortSignal,
  ): Promise<void> {
    const headers = upstreamRequestHeaders({
      method: "POST",
      configured: up.headers,
      sessionId: link.sessionId,
      protocolVersion: link.protocolVersion,
    });
    const res = await doFetch(up.url, {
      method: "POST",
      headers,
      body: JSON.stringify(msg),
      signal,
      redirect: "manual",
    });
    await res.body?.cancel().catch(() => {});
    if (!res.ok) throw new UpstreamError(up.id, `answered HTTP ${res.status} to a notification`, res.status);
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

  async function unifiedToolsList(gw: GatewaySession, id: JsonRpcId): Promise<Response> {
    const lists = await Promise.all([...opts.upstreams.values()].map(async (up) => {
      try {
        const link = await ensureLink(gw, up);
        const tools: unknown[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < MAX_TOOLS_LIST_PAGES; page++) {
          const { response } = await rpc(up, link, {
            jsonrpc: "2.0",
            id: `mcpeg-list-${page}`,
            method: "tools/list",
            params: cursor ? { cursor } : {},
          }, linkSignal());
          if (isErrorResponse(response)) throw new UpstreamError(up.id, response.error.message);
          const r = (response as { result: { tools?: unknown[]; nextCursor?: unknown } }).result;
          tools.push(...(r.tools ?? []));
          if (typeof r.nextCursor !== "string" || r.nextCursor === "") break;
          cursor = r.nextCursor;
        }
        return filterTools(up, tools, true);
      } catch (e) {
        log({ event: "mcp_tools_list_failed", upstream: up.id, error: String(e) });
        return [];
      }
    }));
    return jsonResponse({ jsonrpc: "2.0", id, result: { tools: lists.flat() } }, 200, {
      "mcp-session-id": gw.id,
    });
  }

  async function unifiedInitialize(agentId: string, m: JsonRpcRequest): Promise<Response> {
    const params = m.params ?? {};
    const asked = typeof params.protocolVersion === "string" ? params.protocolVersion : "";
    const version = SESSION_PROTOCOL_VERSIONS.includes(asked) ? asked : SESSION_PROTOCOL_VERSIONS[0];
    const gw = new GatewaySession(mintSessionId(), agentId, version, params);
    gwSessions.add(gw);
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

  async function unified(req: Request, agentId: string): Promise<Response> {
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
      const gw = sid ? gwSessions.get(sid, agentId) : undefined;
      if (!gw) return sessionNotFound();
      gwSessions.delete(gw.id);
      await Promise.allSettled([...gw.links].map(async ([upId, p]) => {
        const link = await p;
        const up = opts.upstreams.get(upId);
        if (!up || link.sessionId === undefined) return;
        const res = await doFetch(up.url, {
          method: "DELETE",
          headers: upstreamRequestHeaders({
            method: "DELETE",
            configured: up.headers,
            sessionId: link.sessionId,
            protocolVersion: link.protocolVersion,
          }),
          signal: linkSignal(),
        });
        await res.body?.cancel().catch(() => {});
      }));
      return new Response(null, { status: 200 });
    }
    const parsed = await readAgentBody(req, opts.maxBodyBytes);
    if (parsed instanceof Response) return parsed;
    if (parsed.batch) {
      return jsonResponse(
        errorResponse(
          null,
          ErrorCode.InvalidRequest,
          "Invalid Request: batches are not supported on the unified endpoint",
        ),
        400,
      );
    }
    const m = parsed.messages[0];
    if (!sid) {
      if (isRequest(m) && m.method === "initialize") return await unifiedInitialize(agentId, m);
      return jsonResponse(
        errorResponse(null, ErrorCode.ConnectionClosed, "Bad Request: Mcp-Session-Id header is required"),
        400,
      );
    }
    const gw = gwSessions.get(sid, agentId);
    if (!gw) return sessionNotFound();
    const accepted = () => new Response(null, { status: 202, headers: { "mcp-session-id": gw.id } });

    if (isResponse(m)) {
      const origin = m.id === null ? undefined : gw.takeServerRequest(m.id);
      const up = origin && opts.upstreams.get(origin.upstreamId);
      if (!origin || !up) {
        log({ event: "mcp_unmatched_response", id: m.id });
        return accepted();
      }
      const link = await ensureLink(gw, up);
      await notify(up, link, { ...m, id: origin.id } as JsonRpcMessage, linkSignal()).catch((e) =>
        log({ event: "mcp_response_forward_failed", upstream: up.id, error: String(e) })
      );
      return accepted();
    }
    if (isNotification(m)) {
      if (m.method === "notifications/initialized") return accepted();
      let targets = [...opts.upstreams.values()];
      if (m.method === "notifications/cancelled") {
        const rid = m.params?.requestId;
        const owner = typeof rid === "string" || typeof rid === "number"
          ? gw.inflight.get(idKey(rid))
          : undefined;
        targets = targets.filter((u) => u.id === owner);
      }
      await Promise.allSettled(targets.map(async (up) => {
        const link = await ensureLink(gw, up);
        await notify(up, link, m, linkSignal());
      }));
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
        return jsonResponse({ jsonrpc: "2.0", id: rq.id, result: {} }, 200, { "mcp-session-id": gw.id });
      case "tools/list":
        return await unifiedToolsList(gw, rq.id);
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
          { "mcp-session-id": gw.id },
        );
    }
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
        { "mcp-session-id": gw.id },
      );
    }
    let link: UpstreamLink;
    try {
      link = await ensureLink(gw, up);
    } catch (e) {
      return jsonResponse(
        errorResponse(rq.id, ErrorCode.ConnectionClosed, `upstream "${up.id}" unavailable: ${String(e)}`),
        502,
        { "mcp-session-id": gw.id },
      );
    }
    const rewritten: JsonRpcRequest = {
      ...rq,
      params: { ...rq.params, name: full.slice(cut + UNIFIED_TOOL_SEPARATOR.length) },
    };
    const ref: BackendRef = {
      upstreamId: up.id,
      sessionId: link.sessionId,
      protocolVersion: link.protocolVersion,
    };
    return await forward({
      req,
      agentId,
      upstream: up,
      ref,
      messages: [rewritten],
      batch: false,
      rewritten: true,
      gw,
      onUpstreamResponse(res) {
        if (res.status === 404) gw.links.delete(up.id);
        return undefined;
      },
      agentSessionId: () => gw.id,
    });
  }

  async function close(): Promise<void> {
    life.abort(new DOMException("proxy closed", "AbortError"));
    const all = gwSessions.all();
    for (const gw of all) gwSessions.delete(gw.id);
    await Promise.allSettled(all.flatMap((gw) => [...gw.links.values()]));
  }

  return { routed, unified, callBackend, close };
}
