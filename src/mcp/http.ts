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
  const headers = new Headers(extra);
  headers.set("content-type", "application/json");
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

const decoder = new TextDecoder();

/**
 * Reads a body as UTF-8 text, at most `limit` bytes.
 *
 * @throws {BodyTooLargeError} past the limit (the body is cancelled).
 */
export async function readBounded(body: ReadableStream<Uint8Array> | null, limit: number): Promise<string> {
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
  if (parts.length === 1) return decoder.decode(parts[0]);
  const all = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.byteLength;
  }
  return decoder.decode(all);
}

/**
 * Reads and parses the agent's POST body, or returns the error response to send: 413 over `limit`
 * (by `Content-Length` or by counting), 400 with `-32700` for bad JSON or `-32600` for JSON that is
 * not JSON-RPC.
 */
export async function readAgentBody(req: Request, limit: number): Promise<ParsedBody | Response> {
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
    return parseBody(text);
  } catch (e) {
    if (e instanceof JsonRpcParseError) return jsonResponse(errorResponse(e.id, e.code, e.message), 400);
    throw e;
  }
}
