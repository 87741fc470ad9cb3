/**
 * Upstream → agent: every message an upstream sends on a POST reply (JSON or SSE) or a GET stream
 * passes {@link toAgent}, which matches responses to their {@link Exchange} expectation, runs
 * `tools/call` results through the guard, and applies the channel table (`channels.ts`) for guarded
 * servers. {@link relaySseReply} answers from an SSE reply (whole when its first events answer every
 * request, else streamed block by block by {@link relaySse}); {@link relayJson} answers from a JSON
 * reply.
 *
 * @module
 */
import {
  ErrorCode,
  errorResponse,
  isErrorResponse,
  isRequest,
  isResponse,
  type JsonRpcErrorObject,
  type JsonRpcId,
  type JsonRpcMessage,
  toErrorObject,
  validateMessage,
} from "./jsonrpc.ts";
import { readSseBlocks, serializeSseBlock, type SseBlock, type SseBlockReader } from "./sse.ts";
import type { Exchange } from "./exchange.ts";
import { after, type Deadline } from "./deadline.ts";
import {
  answerUpstreamRequest,
  guardedNotification,
  isGuarded,
  metadataResult,
  unguardableResult,
  upstreamErrorForAgent,
} from "./channels.ts";
import type { Upstream } from "./proxy.ts";
import { errorMessage } from "../util.ts";

/** Separator between server id and tool name in unified mode (`github___get_issue`). */
export const UNIFIED_TOOL_SEPARATOR = "___";

/** Whether `tool` passes an allow-list. */
export function toolAllowed(up: Upstream, tool: string): boolean {
  return up.tools.includes("*") || up.tools.includes(tool);
}

/** Upstream requests the gateway answers per exchange on a guarded server; later ones are dropped. */
export const MAX_UPSTREAM_REQUESTS_ANSWERED = 16;

/** A structured log sink. */
export type Log = (rec: Record<string, unknown>) => void;

/** What {@link toAgent} needs besides the message. */
export interface RelayContext {
  exchange: Exchange;
  /**
   * Records about single withheld or refused messages go out at `debug`: an upstream decides how many
   * there are, and at the default level it must not be able to flood the gateway's log.
   */
  log: Log;
  /** Posts the gateway's answer to a request the upstream sent to a guarded server's agent. */
  answerUpstream(response: JsonRpcMessage): void;
  /** Unified mode: the agent-visible id of a server→client request of a noop server. */
  mapServerRequest?(id: JsonRpcId): JsonRpcId;
  /** Unified mode: the agent-visible id of an upstream's own request it now cancels. */
  serverRequestAgentId?(id: JsonRpcId): JsonRpcId | undefined;
}

/**
 * The tools of a `tools/list` result that pass the allow-list; with `prefix`, renamed
 * `<server>___<tool>` and described `[<server>] …` for the unified endpoint.
 */
export function filterTools(up: Upstream, tools: unknown[], prefix: boolean): unknown[] {
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

function result(id: JsonRpcId, r: unknown): JsonRpcMessage {
  return { jsonrpc: "2.0", id, result: r };
}

/**
 * One upstream message as the agent may see it, or `undefined` (withheld). Responses are matched to
 * the exchange by the gateway's id only and answered once under the agent's id.
 */
async function toAgent(msg: JsonRpcMessage, ctx: RelayContext): Promise<JsonRpcMessage | undefined> {
  const ex = ctx.exchange;
  const up = ex.upstream;
  if (isResponse(msg)) {
    const exp = ex.take(msg.id);
    if (!exp) {
      // Each pending request is answered once, through its guard. A stray, duplicate or replayed
      // response (or any response on a GET stream) could carry data no guard has seen: withheld.
      ctx.log({ level: "debug", event: "mcp_withheld_response", upstream: up.id });
      return undefined;
    }
    if (isErrorResponse(msg)) {
      exp.guard?.abort(msg.error);
      const err = isGuarded(up) ? upstreamErrorForAgent(msg.error, up.id, exp.method) : msg.error;
      return errorResponse(exp.agentId, err.code, err.message, err.data);
    }
    const r = (msg as { result: unknown }).result;
    if (exp.method === "tools/call" && exp.guard) {
      const bad = isGuarded(up) ? unguardableResult(r) : undefined;
      if (bad) {
        exp.guard.abort(bad);
        return errorResponse(exp.agentId, ErrorCode.InternalError, `upstream "${up.id}": ${bad}`);
      }
      try {
        return result(exp.agentId, await exp.guard.finish(r));
      } catch (e) {
        const err = toErrorObject(e);
        return errorResponse(exp.agentId, err.code, err.message, err.data);
      }
    }
    if (exp.method === "tools/list") {
      const list = (typeof r === "object" && r !== null ? r : {}) as {
        tools?: unknown;
        nextCursor?: unknown;
      };
      const tools = Array.isArray(list.tools) ? filterTools(up, list.tools, false) : [];
      if (!isGuarded(up)) return result(exp.agentId, Array.isArray(list.tools) ? { ...list, tools } : r);
      return result(
        exp.agentId,
        typeof list.nextCursor === "string" ? { tools, nextCursor: list.nextCursor } : { tools },
      );
    }
    if (isGuarded(up)) return result(exp.agentId, metadataResult(exp.method, r, up.id));
    return result(exp.agentId, r);
  }
  if (isRequest(msg)) {
    if (isGuarded(up)) {
      ctx.log({
        level: "debug",
        event: "mcp_upstream_request_refused",
        upstream: up.id,
        method: msg.method.slice(0, 64),
      });
      // Answered by the gateway, a bounded number per exchange: a flood of requests must not turn
      // into a flood of gateway POSTs (the rest are left unanswered, which the upstream can bear).
      if (++ex.upstreamRequests <= MAX_UPSTREAM_REQUESTS_ANSWERED) {
        ctx.answerUpstream(
          { jsonrpc: "2.0", id: msg.id, ...answerUpstreamRequest(msg.method) } as JsonRpcMessage,
        );
      }
      return undefined;
    }
    return ctx.mapServerRequest ? { ...msg, id: ctx.mapServerRequest(msg.id) } : msg;
  }
  // A notification (validated messages are a response, a request or a notification).
  if (isGuarded(up)) {
    const out = guardedNotification(msg, ex);
    if (!out) {
      ctx.log({
        level: "debug",
        event: "mcp_withheld_notification",
        upstream: up.id,
        method: msg.method.slice(0, 64),
      });
    }
    return out;
  }
  if (msg.method === "notifications/cancelled" && msg.params && "requestId" in msg.params) {
    const rid = msg.params.requestId;
    const mapped = ex.agentIdOf(rid) ??
      (typeof rid === "string" || typeof rid === "number" ? ctx.serverRequestAgentId?.(rid) : undefined);
    if (mapped !== undefined) return { ...msg, params: { ...msg.params, requestId: mapped } };
  }
  return msg;
}

/** Every message of a parsed JSON value (one message or a batch) that the agent may see. */
async function messagesToAgent(parsed: unknown, ctx: RelayContext): Promise<JsonRpcMessage[]> {
  const out: JsonRpcMessage[] = [];
  for (const v of Array.isArray(parsed) ? parsed : [parsed]) {
    // The same validation agent messages get: a non-string method, an error that is not an error
    // object, a missing jsonrpc is nothing the relay (or the agent) should have to handle.
    let m: JsonRpcMessage;
    try {
      m = validateMessage(v, "upstream message");
    } catch {
      ctx.log({ level: "debug", event: "mcp_withheld_message", upstream: ctx.exchange.upstream.id });
      continue;
    }
    const r = await toAgent(m, ctx);
    if (r) out.push(r);
  }
  return out;
}

/**
 * One SSE block for the agent. For a guarded server only the gateway's own framing goes out
 * (`event: message` and the rebuilt data; an upstream comment becomes a bare keep-alive comment;
 * upstream event ids, names and retry hints are dropped). For a noop server the block's framing is
 * kept.
 */
async function blockToAgent(b: SseBlock, ctx: RelayContext): Promise<SseBlock | undefined> {
  const guarded = isGuarded(ctx.exchange.upstream);
  let msgs: JsonRpcMessage[] = [];
  let batch = false;
  if (b.data !== undefined && b.data !== "") {
    let parsed: unknown;
    try {
      parsed = JSON.parse(b.data);
    } catch {
      // Data that is not JSON cannot be guarded: withheld (fail closed).
      ctx.log({
        level: "debug",
        event: "mcp_withheld_block",
        upstream: ctx.exchange.upstream.id,
        reason: "data is not JSON",
      });
      parsed = [];
    }
    batch = Array.isArray(parsed);
    msgs = await messagesToAgent(parsed, ctx);
  }
  const data = msgs.length === 0 ? undefined : JSON.stringify(batch ? msgs : msgs[0]);
  if (guarded) {
    if (data !== undefined) return { event: "message", data };
    return b.comments?.length ? { comments: [" keepalive"] } : undefined;
  }
  if (data !== undefined) return { ...b, data };
  const { data: _drop, ...rest } = b;
  return rest.id !== undefined || rest.retry !== undefined || rest.comments ? rest : undefined;
}

/** Options of {@link relaySse} and {@link relaySseReply}. */
export interface SseRelayOptions {
  /** Gateway answers sent first (blocked calls and refusals of the same POST). */
  prefix: JsonRpcMessage[];
  /** The error pending requests get when the stream ends early (default: "closed the stream"). */
  failure(): JsonRpcErrorObject | undefined;
  /** Called once when the relay ends, whatever the reason (for a finished reply: once the upstream's rest is read). */
  done(): void;
  /** Aborted when the gateway closes: ends the stream even when nothing reads it. */
  closed: AbortSignal;
}

const encoder = new TextEncoder();

/** A gateway-written message as one SSE block. */
function messageBlock(m: JsonRpcMessage): string {
  return serializeSseBlock({ event: "message", data: JSON.stringify(m) });
}

/**
 * Most SSE blocks, and longest time, the rest of an upstream reply is read after its last answer
 * before the gateway cancels it: a well-behaved upstream ends its stream right away (and the
 * connection stays reusable); one that goes on sending, or keeps it open, is not read for ever.
 */
export const DISCARD_MAX_BLOCKS = 64;
export const DISCARD_MAX_MS = 2000;

/** Reads the rest of an upstream stream and discards it, within the bounds above; never rejects. */
export async function discardRest(reader: SseBlockReader): Promise<void> {
  let deadline: Deadline | undefined;
  const late = new Promise<"late">((resolve) => deadline = after(DISCARD_MAX_MS, () => resolve("late")));
  try {
    for (let n = 0; n < DISCARD_MAX_BLOCKS; n++) {
      // after the last answer: nothing more for the agent
      const r = await Promise.race([reader.read(), late]);
      if (r === "late") break;
      if (r.done) return;
    }
    await reader.cancel(new Error("the reply's requests are answered")).catch(() => {});
  } catch {
    // failed or aborted (deadline, agent gone, gateway closing): nothing is waiting for it
  } finally {
    deadline!.cancel();
  }
}

/**
 * Streams an upstream SSE body to the agent block by block (a GET stream, or a POST reply after
 * {@link relaySseReply} began it). When the upstream ends or fails before answering, every pending
 * request gets a JSON-RPC error and the stream ends. With `expecting` (a POST's reply), the stream
 * also ends once every request of the exchange is answered: the rest of the upstream stream is read
 * and discarded.
 */
export function relaySse(
  body: ReadableStream<Uint8Array>,
  ctx: RelayContext,
  o: SseRelayOptions,
): ReadableStream<Uint8Array> {
  return sseStream(readSseBlocks(body), ctx, o, o.prefix.map(messageBlock), false);
}

function sseStream(
  reader: SseBlockReader,
  ctx: RelayContext,
  o: SseRelayOptions,
  first: string[],
  expecting: boolean,
  pending?: Promise<ReadableStreamReadResult<SseBlock>>,
): ReadableStream<Uint8Array> {
  const ex = ctx.exchange;
  // A read already started (see relaySseReply) is the stream's first; its failure is handled there.
  pending?.catch(() => {});
  let finished = false;
  let onClose: (() => void) | undefined;
  const unlisten = () => {
    if (onClose) o.closed.removeEventListener("abort", onClose);
  };
  const end = (ctl: ReadableStreamDefaultController<Uint8Array>, why: string) => {
    if (finished) return;
    unlisten();
    const err = o.failure() ?? {
      code: ErrorCode.ConnectionClosed,
      message: `upstream "${ex.upstream.id}" ${why} before sending the response`,
    };
    for (const m of ex.failAll(err)) ctl.enqueue(encoder.encode(messageBlock(m)));
    finished = true;
    o.done();
    ctl.close();
  };
  return new ReadableStream<Uint8Array>({
    start(ctl) {
      if (first.length > 0) ctl.enqueue(encoder.encode(first.join("")));
      // The gateway's close() ends the stream even when nothing is reading it (a graceful server
      // shutdown waits for every open response body).
      onClose = () => {
        end(ctl, "was closed by the gateway");
        reader.cancel(o.closed.reason).catch(() => {});
      };
      if (o.closed.aborted) onClose();
      else o.closed.addEventListener("abort", onClose, { once: true });
    },
    async pull(ctl) {
      for (;;) {
        if (finished) return;
        let r: ReadableStreamReadResult<SseBlock>;
        try {
          const next = pending ?? reader.read();
          pending = undefined;
          r = await next;
          if (finished) return;
        } catch (e) {
          if (finished) return;
          ctx.log({ event: "mcp_upstream_stream_failed", upstream: ex.upstream.id, error: String(e) });
          return end(ctl, `stream failed (${errorMessage(e)})`);
        }
        if (r.done) return end(ctl, "closed the stream");
        const out = await blockToAgent(r.value, ctx);
        if (finished) return;
        const s = out ? serializeSseBlock(out) : "";
        if (s !== "") ctl.enqueue(encoder.encode(s));
        if (expecting && ex.pending.size === 0) {
          finished = true;
          unlisten();
          ctl.close();
          discardRest(reader).finally(o.done);
          return;
        }
        if (s !== "") return;
      }
    },
    async cancel(reason) {
      if (finished) return;
      finished = true;
      unlisten();
      ex.abortAll(reason ?? "agent disconnected");
      o.done();
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}

/**
 * How long {@link relaySseReply} waits for the first thing the agent may see before it starts
 * streaming (response headers first, the rest as it comes). Nothing the agent may see waits for it:
 * the first block to show ends the wait.
 */
export const SSE_REPLY_WAIT_MS = 1000;

/**
 * The agent's body for an upstream SSE reply to a POST. The upstream is read until the agent has
 * something to see (at most {@link SSE_REPLY_WAIT_MS}). When every request of the exchange is
 * answered by then (the usual reply: one event, then the end of the stream), the body is returned
 * whole, as text, and the rest of the upstream stream is read and discarded; otherwise (progress
 * first, a batch answered over several events, a slow call) the reply goes on as a stream
 * ({@link relaySse}), each block as it comes, and ends once every request is answered. Either way the
 * reply ends when its requests are answered: MCP servers close a POST's stream after its responses,
 * and the gateway, as the agent's server, does too. A stream that ends or fails first gives every
 * pending request a JSON-RPC error.
 */
export async function relaySseReply(
  body: ReadableStream<Uint8Array>,
  ctx: RelayContext,
  o: SseRelayOptions,
): Promise<string | ReadableStream<Uint8Array>> {
  const ex = ctx.exchange;
  const reader = readSseBlocks(body);
  const out = o.prefix.map(messageBlock);
  if (ex.pending.size === 0) return sseStream(reader, ctx, o, out, false);
  const fail = (why: string) => {
    const err = o.failure() ?? {
      code: ErrorCode.ConnectionClosed,
      message: `upstream "${ex.upstream.id}" ${why} before sending the response`,
    };
    for (const m of ex.failAll(err)) out.push(messageBlock(m));
    o.done();
    return out.join("");
  };
  let deadline: Deadline | undefined;
  const late = new Promise<undefined>((resolve) => {
    deadline = after(SSE_REPLY_WAIT_MS, () => resolve(undefined));
  });
  try {
    for (;;) {
      const next = reader.read();
      let r: ReadableStreamReadResult<SseBlock> | undefined;
      try {
        r = await Promise.race([next, late]);
      } catch (e) {
        if (o.closed.aborted) return fail("was closed by the gateway");
        ctx.log({ event: "mcp_upstream_stream_failed", upstream: ex.upstream.id, error: String(e) });
        return fail(`stream failed (${errorMessage(e)})`);
      }
      if (r === undefined) return sseStream(reader, ctx, o, out, true, next);
      if (r.done) return fail("closed the stream");
      let block: SseBlock | undefined;
      try {
        block = await blockToAgent(r.value, ctx);
      } catch (e) {
        ex.abortAll(e);
        o.done();
        await reader.cancel(e).catch(() => {});
        throw e;
      }
      const s = block ? serializeSseBlock(block) : "";
      if (ex.pending.size === 0) {
        if (s !== "") out.push(s);
        discardRest(reader).finally(o.done);
        return out.join("");
      }
      if (s !== "") {
        out.push(s);
        return sseStream(reader, ctx, o, out, true);
      }
    }
  } finally {
    deadline!.cancel();
  }
}

/**
 * The answers in a non-2xx reply's JSON body. A single error with a `null` id answers the one request
 * of the exchange when there is exactly one (servers answer that way when they reject a request before
 * reading its id). Not JSON, or nothing matching: no answers.
 */
export async function relayErrorBody(text: string, ctx: RelayContext): Promise<JsonRpcMessage[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return [];
  }
  const only = ctx.exchange.pending.size === 1 ? ctx.exchange.pending.keys().next().value : undefined;
  if (only !== undefined && typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
    const m = parsed as Record<string, unknown>;
    if (m.id === null && "error" in m) parsed = { ...m, id: only };
  }
  return (await messagesToAgent(parsed, ctx)).filter((m) => !("method" in m));
}

/**
 * The agent's messages from a JSON reply's text: the upstream's answers as the agent may see them,
 * then an error for each request the reply did not answer. `undefined` when the text is not JSON.
 */
export async function relayJson(text: string, ctx: RelayContext): Promise<JsonRpcMessage[] | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  const out = await messagesToAgent(parsed, ctx);
  out.push(...ctx.exchange.failAll({
    code: ErrorCode.ConnectionClosed,
    message: `upstream "${ctx.exchange.upstream.id}" did not answer the request`,
  }));
  return out;
}
