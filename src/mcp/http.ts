/**
 * HTTP plumbing of the MCP endpoint: JSON responses, bounded body reads, the agent's POST body, the
 * method check and the errors that name an upstream. No MCP decisions live here.
 *
 * @module
 */
import {
  ErrorCode,
  errorResponse,
  isRequest,
  JsonRpcParseError,
  parseBody,
  type ParsedBody,
} from "./jsonrpc.ts";

/** Methods of the Streamable HTTP endpoint. */
export const ALLOWED_METHODS = ["GET", "POST", "DELETE"] as const;

/** A JSON response with `content-type: application/json` and any extra headers. */
export function jsonResponse(
  body: unknown,
  status = 200,
  extra: Record<string, string> | Headers = {},
): Response {
  let headers: Record<string, string> | Headers;
  if (extra instanceof Headers) {
    headers = new Headers(extra);
    headers.set("content-type", "application/json");
  } else {
    // A record goes to the Response as it is (no Headers object to copy again); a content type of
    // its own, in any case, is replaced.
    headers = { "content-type": "application/json" };
    for (const k of Object.keys(extra)) if (k.toLowerCase() !== "content-type") headers[k] = extra[k];
  }
  return new Response(JSON.stringify(body), { status, headers });
}

/**
 * One error per request in `body` (the same code and message for each, under each request's own id),
 * as a batch when the body was one; an empty body when it holds no request; a single `null`-id error
 * when there is no body.
 *
 * @example
 * ```ts
 * refuseAll({ batch: true, messages }, 400, -32600, "batches are not supported");
 * ```
 */
export function refuseAll(
  body: ParsedBody | undefined,
  status: number,
  code: number,
  message: string,
  headers?: Record<string, string>,
): Response {
  if (!body) return jsonResponse(errorResponse(null, code, message), status, headers);
  const answers = body.messages.filter(isRequest).map((m) => errorResponse(m.id, code, message));
  // Notifications and responses get no answer (JSON-RPC); the status alone says what happened.
  if (answers.length === 0) return new Response(null, { status, headers });
  return jsonResponse(body.batch ? answers : answers[0], status, headers);
}

/**
 * 404 for an unknown or foreign session, which makes spec-following clients re-initialize; each
 * request of the body gets the error under its own id.
 */
export function sessionNotFound(body?: ParsedBody): Response {
  return refuseAll(body, 404, ErrorCode.RequestTimeout, "Session not found");
}

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

/** A body over the limit. */
export class BodyTooLargeError extends Error {
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

/** First buffer of a {@link ChunkReader} over a byte stream; doubled while reads fill it. */
const FIRST_CHUNK_BYTES = 8 * 1024;
/** Largest buffer a {@link ChunkReader} grows to. */
const MAX_CHUNK_BYTES = 64 * 1024;

/** Reads a body chunk by chunk: {@link chunkReader}. */
export interface ChunkReader {
  /**
   * The next chunk, or `null` at the end of the body; rejects when the body fails. A chunk is valid
   * only until the next call: its memory may be reused for the next read.
   */
  read(): Promise<Uint8Array | null>;
  /** Cancels the body. */
  cancel(reason?: unknown): Promise<void>;
}

/**
 * A reader of `body` that reuses one buffer across reads when the body is a byte stream (fetch and
 * server request bodies are): a default reader over such a stream allocates a fresh 64 KiB buffer
 * for every read, which for small MCP messages costs more CPU (allocation and garbage collection)
 * than the rest of the read. The buffer starts at 8 KiB and doubles, up to 64 KiB, while reads fill
 * it. Any other stream is read with a default reader; so is every stream when `byteStream` is
 * `false`, for bodies that are known not to be byte streams (Deno's server request bodies), where
 * asking for a BYOB reader only throws (and an exception costs more than the whole read).
 *
 * @example
 * ```ts
 * const r = chunkReader(res.body!);
 * for (let c = await r.read(); c !== null; c = await r.read()) decoder.decode(c, { stream: true });
 * ```
 */
export function chunkReader(body: ReadableStream<Uint8Array>, byteStream = true): ChunkReader {
  let byob: ReadableStreamBYOBReader | undefined;
  if (byteStream) {
    try {
      byob = body.getReader({ mode: "byob" });
    } catch {
      // Not a byte stream (a locked stream throws again below, as it should).
    }
  }
  if (byob === undefined) {
    const reader = body.getReader();
    return {
      async read() {
        const r = await reader.read();
        return r.done ? null : r.value;
      },
      cancel: (reason) => reader.cancel(reason),
    };
  }
  let size = FIRST_CHUNK_BYTES;
  let buf: ArrayBuffer | undefined;
  // A source that closes its stream while a read is pending must also answer that read
  // (`byobRequest.respond(0)`); runtime bodies do, a script's byte stream may not. The end of the
  // stream ends the read either way.
  const closed = byob.closed.then(() => null);
  closed.catch(() => {});
  return {
    async read() {
      const r = await Promise.race([byob.read(new Uint8Array(buf ?? new ArrayBuffer(size))), closed]);
      buf = undefined;
      if (r === null || r.done) return null;
      const chunk = r.value;
      if (chunk.byteLength >= size && size < MAX_CHUNK_BYTES) size *= 2;
      // The next read reuses the buffer only when it is the one passed in (a runtime may hand back
      // a chunk of its own instead, which is not the reader's to reuse).
      else if (chunk.byteOffset === 0 && chunk.buffer.byteLength === size) buf = chunk.buffer as ArrayBuffer;
      return chunk;
    },
    cancel: (reason) => byob.cancel(reason),
  };
}

/**
 * Reads a body as UTF-8 text, at most `limit` bytes (`byteStream`: see {@link chunkReader}).
 *
 * @throws {BodyTooLargeError} past the limit (the body is cancelled).
 */
export async function readBounded(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
  byteStream = true,
): Promise<string> {
  if (!body) return "";
  const reader = chunkReader(body, byteStream);
  const decoder = new TextDecoder();
  let text = "";
  let n = 0;
  for (;;) {
    const chunk = await reader.read();
    if (chunk === null) break;
    n += chunk.byteLength;
    if (n > limit) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLargeError(limit);
    }
    text += decoder.decode(chunk, { stream: true });
  }
  return text + decoder.decode();
}

/** A Content-Length value as servers accept it: decimal digits only. */
const DECIMAL = /^[0-9]+$/;
const utf8 = new TextDecoder();

/**
 * Reads and parses the agent's POST body, or returns the error response to send: 413 over `limit`
 * (by `Content-Length` or by counting), 400 with `-32700` for bad JSON or `-32600` for JSON that is
 * not JSON-RPC.
 */
export async function readAgentBody(req: Request, limit: number): Promise<ParsedBody | Response> {
  const length = req.headers.get("content-length");
  const declared = Number(length ?? "NaN");
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
  if (length !== null && DECIMAL.test(length) && req.headers.get("transfer-encoding") === null) {
    // A body framed by its Content-Length alone (at most `limit`, checked above): the server hands
    // over exactly that many bytes (Deno's server refuses a request with Content-Length and
    // Transfer-Encoding, or two lengths, with a 400), so it is read in one piece, without a stream
    // read per chunk. The size is checked again, whatever built the request.
    const bytes = new Uint8Array(await req.arrayBuffer());
    if (bytes.byteLength > limit) return tooLarge();
    text = utf8.decode(bytes);
  } else {
    try {
      // Not a byte stream on Deno's server (nor for a Request built in-process): a default reader.
      text = await readBounded(req.body, limit, false);
    } catch (e) {
      if (e instanceof BodyTooLargeError) return tooLarge();
      throw e;
    }
  }
  try {
    return parseBody(text);
  } catch (e) {
    if (e instanceof JsonRpcParseError) return jsonResponse(errorResponse(e.id, e.code, e.message), 400);
    throw e;
  }
}
