/**
 * JSON-RPC 2.0 message types as MCP uses them, and a parser that classifies a POST body.
 *
 * The parser never throws a generic error: bad JSON is a {@link JsonRpcParseError} carrying
 * `-32700`, a well-formed JSON value that is not a JSON-RPC message (or batch of them) carries
 * `-32600`, and both name what was wrong.
 *
 * @module
 */
import { errorMessage, isObject } from "../util.ts";

/** A JSON-RPC id. `null` only appears on error responses to unidentifiable requests. */
export type JsonRpcId = string | number;

/** A request: has `method` and `id`. */
export interface JsonRpcRequest {
  jsonrpc: "2.0";
  id: JsonRpcId;
  method: string;
  params?: Record<string, unknown>;
}

/** A notification: has `method`, no `id`. */
export interface JsonRpcNotification {
  jsonrpc: "2.0";
  method: string;
  params?: Record<string, unknown>;
}

/** The error object of an error response. */
export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

/** A success response. */
export interface JsonRpcResult {
  jsonrpc: "2.0";
  id: JsonRpcId;
  result: unknown;
}

/** An error response. `id` is `null` when the request could not be identified. */
export interface JsonRpcErrorResponse {
  jsonrpc: "2.0";
  id: JsonRpcId | null;
  error: JsonRpcErrorObject;
}

/** Any single JSON-RPC message. */
export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResult | JsonRpcErrorResponse;

/** JSON-RPC and MCP error codes the gateway emits. */
export const ErrorCode = {
  /** Invalid JSON. */
  ParseError: -32700,
  /** JSON that is not a valid JSON-RPC message. */
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** SDK convention for transport-level failures (upstream unreachable, bad gateway). */
  ConnectionClosed: -32000,
  /** SDK convention for timeouts and unknown sessions. */
  RequestTimeout: -32001,
} as const;

/** Largest batch accepted; the SDK v1 server transport rejects batches above 100 as well. */
export const MAX_BATCH_LENGTH = 100;

/** A body that is not JSON (`-32700`) or not JSON-RPC (`-32600`). */
export class JsonRpcParseError extends Error {
  /** `-32700` or `-32600`. */
  readonly code: number;
  /** The id of the offending message when it could be read. */
  readonly id: JsonRpcId | null;
  constructor(code: number, message: string, id: JsonRpcId | null = null) {
    super(message);
    this.name = "JsonRpcParseError";
    this.code = code;
    this.id = id;
  }
}

/** A parsed POST body: one message or a (2025-03-26) batch. */
export interface ParsedBody {
  /** True when the body was a JSON array. */
  batch: boolean;
  messages: JsonRpcMessage[];
}

function isId(v: unknown): v is JsonRpcId {
  return typeof v === "string" || (typeof v === "number" && Number.isFinite(v));
}

/** True for a request (`method` and `id`). */
export function isRequest(m: JsonRpcMessage): m is JsonRpcRequest {
  return "method" in m && "id" in m;
}

/** True for a notification (`method`, no `id`). */
export function isNotification(m: JsonRpcMessage): m is JsonRpcNotification {
  return "method" in m && !("id" in m);
}

/** True for a response (success or error). */
export function isResponse(m: JsonRpcMessage): m is JsonRpcResult | JsonRpcErrorResponse {
  return !("method" in m) && ("result" in m || "error" in m);
}

/** True for an error response. */
export function isErrorResponse(m: JsonRpcMessage): m is JsonRpcErrorResponse {
  return !("method" in m) && "error" in m;
}

/**
 * Validates one decoded JSON value as a JSON-RPC message.
 *
 * @throws {JsonRpcParseError} `-32600` naming the first problem found.
 * @example
 * ```ts
 * const m = validateMessage({ jsonrpc: "2.0", id: 1, method: "ping" });
 * ```
 */
export function validateMessage(v: unknown, where = "message"): JsonRpcMessage {
  if (!isObject(v)) throw new JsonRpcParseError(ErrorCode.InvalidRequest, `${where} is not a JSON object`);
  const id = isId(v.id) ? v.id : null;
  const bad = (why: string) => new JsonRpcParseError(ErrorCode.InvalidRequest, `${where}: ${why}`, id);
  if (v.jsonrpc !== "2.0") throw bad('"jsonrpc" must be "2.0"');
  if ("id" in v && !isId(v.id) && !(v.id === null && "error" in v)) {
    throw bad('"id" must be a string or a number');
  }
  if ("method" in v) {
    if (typeof v.method !== "string" || v.method === "") throw bad('"method" must be a non-empty string');
    if ("params" in v && v.params !== undefined && !isObject(v.params) && !Array.isArray(v.params)) {
      throw bad('"params" must be an object');
    }
    if ("result" in v || "error" in v) throw bad('a message with "method" cannot carry "result" or "error"');
    return v as unknown as JsonRpcMessage;
  }
  if (!("id" in v)) throw bad('has neither "method" nor "id"');
  const hasResult = "result" in v, hasError = "error" in v;
  if (hasResult === hasError) throw bad('a response needs exactly one of "result" and "error"');
  if (hasError) {
    const e = v.error;
    if (!isObject(e) || typeof e.code !== "number" || typeof e.message !== "string") {
      throw bad('"error" must be an object with a numeric "code" and a string "message"');
    }
  }
  return v as unknown as JsonRpcMessage;
}

/**
 * Parses a POST body (text) into JSON-RPC messages.
 *
 * @throws {JsonRpcParseError} `-32700` for invalid JSON, `-32600` for an invalid message, an empty
 *   batch or a batch longer than {@link MAX_BATCH_LENGTH}.
 * @example
 * ```ts
 * const { batch, messages } = parseBody('{"jsonrpc":"2.0","id":1,"method":"tools/list"}');
 * ```
 */
export function parseBody(text: string): ParsedBody {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new JsonRpcParseError(
      ErrorCode.ParseError,
      `Parse error: body is not valid JSON (${errorMessage(e)})`,
    );
  }
  if (Array.isArray(v)) {
    if (v.length === 0) throw new JsonRpcParseError(ErrorCode.InvalidRequest, "Invalid Request: empty batch");
    if (v.length > MAX_BATCH_LENGTH) {
      throw new JsonRpcParseError(
        ErrorCode.InvalidRequest,
        `Invalid Request: batch of ${v.length} messages exceeds the limit of ${MAX_BATCH_LENGTH}`,
      );
    }
    return { batch: true, messages: v.map((m, i) => validateMessage(m, `batch element ${i}`)) };
  }
  return { batch: false, messages: [validateMessage(v)] };
}

/**
 * Builds an error response.
 *
 * @example
 * ```ts
 * errorResponse(7, -32602, 'tool "x" is not allowed');
 * ```
 */
export function errorResponse(
  id: JsonRpcId | null,
  code: number,
  message: string,
  data?: unknown,
): JsonRpcErrorResponse {
  const error: JsonRpcErrorObject = { code, message };
  if (data !== undefined) error.data = data;
  return { jsonrpc: "2.0", id, error };
}

/**
 * Turns a thrown value into a JSON-RPC error object: keeps a numeric `.code`, `.message` and `.data`
 * when present, else `fallbackCode` with the error's message.
 */
export function toErrorObject(
  e: unknown,
  fallbackCode: number = ErrorCode.InternalError,
): JsonRpcErrorObject {
  if (isObject(e) || e instanceof Error) {
    const o = e as { code?: unknown; message?: unknown; data?: unknown };
    const out: JsonRpcErrorObject = {
      code: typeof o.code === "number" && Number.isInteger(o.code) ? o.code : fallbackCode,
      message: typeof o.message === "string" && o.message !== "" ? o.message : String(e),
    };
    if (o.data !== undefined) out.data = o.data;
    return out;
  }
  return { code: fallbackCode, message: String(e) };
}
