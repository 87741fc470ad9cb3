/**
 * Requests the gateway itself sends upstream (unified `initialize` and `tools/list`, guard
 * `call_backend`, answers to upstream requests, notifications): one POST, the gateway's own body and
 * id, redirects never followed. Nothing read here reaches an agent except through a caller that
 * applies the channel table.
 *
 * @module
 */
import { type JsonRpcMessage, type JsonRpcRequest } from "./jsonrpc.ts";
import { readSseBlocks } from "./sse.ts";
import { discardRest } from "./relay.ts";
import { isEventStream, isJson, upstreamRequestHeaders } from "./headers.ts";
import { BodyTooLargeError, readBounded, UpstreamError } from "./http.ts";
import type { Upstream } from "./proxy.ts";
import { errorMessage } from "../util.ts";

/** Largest upstream JSON response read into memory (tool results can be large; 32 MiB). */
export const MAX_UPSTREAM_JSON_BYTES = 32 * 1024 * 1024;

/** The upstream session to speak on. */
export interface SessionRef {
  sessionId?: string;
  protocolVersion?: string;
}

/** Gateway-originated upstream traffic. */
export interface UpstreamClient {
  /** Sends one request and waits for the response with its id (JSON or SSE reply). */
  rpc(up: Upstream, link: SessionRef, msg: JsonRpcRequest, signal: AbortSignal): Promise<
    { response: JsonRpcMessage; headers: Headers }
  >;
  /** Posts a notification or a response; throws on a non-2xx answer. */
  post(up: Upstream, link: SessionRef, msg: JsonRpcMessage, signal: AbortSignal): Promise<void>;
}

/**
 * Builds the client over `doFetch`.
 *
 * @example
 * ```ts
 * const client = createUpstreamClient(fetch);
 * const { response } = await client.rpc(up, {}, { jsonrpc: "2.0", id: mintUpstreamId(), method: "ping" }, signal);
 * ```
 */
export function createUpstreamClient(doFetch: typeof fetch): UpstreamClient {
  async function send(up: Upstream, link: SessionRef, msg: JsonRpcMessage, signal: AbortSignal) {
    const headers = upstreamRequestHeaders({
      method: "POST",
      configured: up.headers,
      sessionId: link.sessionId,
      protocolVersion: link.protocolVersion,
      rewrittenBody: msg,
    });
    try {
      return await doFetch(up.url, {
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
  }

  async function rpc(up: Upstream, link: SessionRef, msg: JsonRpcRequest, signal: AbortSignal) {
    const res = await send(up, link, msg, signal);
    if (!res.ok || res.body === null) {
      await res.body?.cancel().catch(() => {});
      throw new UpstreamError(up.id, `answered HTTP ${res.status} to ${msg.method}`, res.status);
    }
    const match = (m: unknown): m is JsonRpcMessage =>
      typeof m === "object" && m !== null && !("method" in m) && (m as { id?: unknown }).id === msg.id;
    if (isJson(res.headers)) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(await readBounded(res.body, MAX_UPSTREAM_JSON_BYTES));
      } catch (e) {
        // Not the parser's message: it quotes the upstream's text.
        const why = e instanceof BodyTooLargeError ? e.message : "invalid JSON";
        throw new UpstreamError(up.id, `sent an unreadable answer to ${msg.method} (${why})`);
      }
      const found = (Array.isArray(parsed) ? parsed : [parsed]).find(match);
      if (!found) throw new UpstreamError(up.id, `did not answer ${msg.method}`);
      return { response: found, headers: res.headers };
    }
    if (!isEventStream(res.headers)) {
      await res.body.cancel().catch(() => {});
      throw new UpstreamError(up.id, `answered ${msg.method} with an unsupported content-type`);
    }
    const reader = readSseBlocks(res.body);
    let answered = false;
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
        if (match(m)) {
          answered = true;
          return { response: m, headers: res.headers };
        }
      }
    } finally {
      // After the answer, the rest is read within a bound and dropped, not cancelled: an upstream
      // that ends its stream right away keeps the connection reusable (a cancelled body closes it,
      // and every call_backend then paid a new connection on both sides).
      if (answered) void discardRest(reader);
      else await reader.cancel().catch(() => {});
    }
    throw new UpstreamError(up.id, `closed the stream before answering ${msg.method}`);
  }

  async function post(up: Upstream, link: SessionRef, msg: JsonRpcMessage, signal: AbortSignal) {
    const res = await send(up, link, msg, signal);
    await res.body?.cancel().catch(() => {});
    if (!res.ok) throw new UpstreamError(up.id, `answered HTTP ${res.status} to a notification`, res.status);
  }

  return { rpc, post };
}
