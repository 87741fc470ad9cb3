/**
 * The channel table: every MCP message that can cross the gateway, and what the gateway lets through
 * for a **guarded** server (one whose guard is not the built-in `noop`).
 *
 * The rule this module enforces, and the only place it is decided:
 *
 * > Every byte an agent receives about a guarded server was produced by the gateway itself or passed
 * > that server's guard.
 *
 * Concretely, for a guarded server:
 * - `tools/call` results go through the guard (`ToolCallGuard.finish`); an upstream error answer keeps
 *   only its code (the message and data are upstream text no guard saw).
 * - `tools/list` is filtered by the allowed-tools list and re-serialized: `{ tools, nextCursor }`, each
 *   tool as the upstream described it (the allow-list is the operator's approval of that metadata).
 * - `initialize`, `server/discover` and `ping` results are rebuilt from scratch: the version and the
 *   tools capability, the gateway's own `serverInfo`, no upstream `instructions`.
 * - Notifications from the upstream are rebuilt from the few fields that carry no upstream data
 *   (progress numbers for a token of a request in the same exchange, the mapped id of a cancellation,
 *   a bare `list_changed`) or withheld.
 * - Requests from the upstream (sampling, elicitation, roots, ping) are answered by the gateway; the
 *   agent never sees them.
 * - Every other request is refused with `-32601` before anything reaches the upstream; every other
 *   agent notification is dropped.
 *
 * A server with the `noop` guard is transparent: its messages pass as they are (ids still mapped).
 *
 * The table ({@link CHANNELS}) lists each method with the protocol versions that define it; the
 * functions below are the decisions. The README's channel table is generated from the same data.
 *
 * @module
 */
import { ErrorCode, type JsonRpcErrorObject, type JsonRpcMessage, type JsonRpcRequest } from "./jsonrpc.ts";
import { GATEWAY_VERSION } from "../version.ts";
import { encodeHeaderValue } from "./headers.ts";

/** Protocol versions the gateway serves (the table covers each). */
export const PROTOCOL_VERSIONS = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"] as const;
/** One of {@link PROTOCOL_VERSIONS}. */
export type ProtocolVersion = typeof PROTOCOL_VERSIONS[number];

/** Who sends the message, and whether it expects an answer. */
export type Direction =
  | "agent request"
  | "agent notification"
  | "upstream request"
  | "upstream notification";

/** What happens to a message on a guarded server. */
export type Treatment =
  /** Result labeled and checked by the server's guard. */
  | "guarded"
  /** Result filtered by the gateway (allowed-tools list) and re-serialized. */
  | "filtered"
  /** Rebuilt by the gateway from fields that carry no upstream data. */
  | "metadata"
  /** Answered by the gateway with an error; nothing reaches the upstream (or, for upstream requests, the agent). */
  | "refused"
  /** Answered by the gateway itself (`ping` from the upstream). */
  | "answered"
  /** Dropped silently: a notification has no answer to give. */
  | "withheld";

/** One row of the channel table. */
export interface Channel {
  method: string;
  direction: Direction;
  /** First protocol version that defines it. */
  since: ProtocolVersion;
  /** Last protocol version that defines it, when it was removed. */
  until?: ProtocolVersion;
  guarded: Treatment;
  /** Why, in a few words (README). */
  note: string;
}

const V1: ProtocolVersion = "2025-03-26";
const V2: ProtocolVersion = "2025-06-18";
const V3: ProtocolVersion = "2025-11-25";
const V4: ProtocolVersion = "2026-07-28";

/**
 * Every request and notification of MCP 2025-03-26 … 2026-07-28, with its treatment on a guarded
 * server. A method not listed here is treated as `refused` (requests) or `withheld` (notifications).
 */
export const CHANNELS: readonly Channel[] = [
  // agent → upstream requests
  {
    method: "initialize",
    direction: "agent request",
    since: V1,
    guarded: "metadata",
    note: "result rebuilt: version, tools capability, gateway serverInfo",
  },
  {
    method: "server/discover",
    direction: "agent request",
    since: V4,
    guarded: "metadata",
    note: "result rebuilt: versions, tools capability",
  },
  { method: "ping", direction: "agent request", since: V1, guarded: "metadata", note: "result is {}" },
  {
    method: "tools/list",
    direction: "agent request",
    since: V1,
    guarded: "filtered",
    note: "allowed-tools list; extra result keys dropped",
  },
  {
    method: "tools/call",
    direction: "agent request",
    since: V1,
    guarded: "guarded",
    note: "label_resource before, label_response after; task-augmented calls refused",
  },
  {
    method: "resources/list",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "no guard labels resources",
  },
  {
    method: "resources/templates/list",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "no guard labels resources",
  },
  {
    method: "resources/read",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "no guard labels resources",
  },
  {
    method: "resources/subscribe",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "no guard labels resources",
  },
  {
    method: "resources/unsubscribe",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "no guard labels resources",
  },
  {
    method: "prompts/list",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "no guard labels prompts",
  },
  {
    method: "prompts/get",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "no guard labels prompts",
  },
  {
    method: "completion/complete",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "completions echo upstream data",
  },
  {
    method: "logging/setLevel",
    direction: "agent request",
    since: V1,
    guarded: "refused",
    note: "log messages are withheld anyway",
  },
  {
    method: "tasks/get",
    direction: "agent request",
    since: V3,
    guarded: "refused",
    note: "task results bypass the guard",
  },
  {
    method: "tasks/result",
    direction: "agent request",
    since: V3,
    guarded: "refused",
    note: "task results bypass the guard",
  },
  {
    method: "tasks/list",
    direction: "agent request",
    since: V3,
    guarded: "refused",
    note: "task results bypass the guard",
  },
  {
    method: "tasks/cancel",
    direction: "agent request",
    since: V3,
    guarded: "refused",
    note: "tasks are refused",
  },
  {
    method: "subscriptions/listen",
    direction: "agent request",
    since: V4,
    guarded: "refused",
    note: "a stream of upstream notifications",
  },
  // agent → upstream notifications
  {
    method: "notifications/initialized",
    direction: "agent notification",
    since: V1,
    until: V3,
    guarded: "metadata",
    note: "forwarded as the gateway writes it",
  },
  {
    method: "notifications/cancelled",
    direction: "agent notification",
    since: V1,
    guarded: "metadata",
    note: "request id mapped to the gateway's",
  },
  {
    method: "notifications/roots/list_changed",
    direction: "agent notification",
    since: V1,
    until: V3,
    guarded: "withheld",
    note: "roots are refused",
  },
  {
    method: "notifications/progress",
    direction: "agent notification",
    since: V1,
    guarded: "withheld",
    note: "the gateway sends no upstream requests that take progress",
  },
  // upstream → agent notifications
  {
    method: "notifications/progress",
    direction: "upstream notification",
    since: V1,
    guarded: "metadata",
    note: "progressToken/progress/total only, for a request of the same exchange",
  },
  {
    method: "notifications/cancelled",
    direction: "upstream notification",
    since: V1,
    guarded: "metadata",
    note: "request id mapped back; no reason",
  },
  {
    method: "notifications/tools/list_changed",
    direction: "upstream notification",
    since: V1,
    guarded: "metadata",
    note: "no params",
  },
  {
    method: "notifications/message",
    direction: "upstream notification",
    since: V1,
    guarded: "withheld",
    note: "log text is upstream data",
  },
  {
    method: "notifications/resources/list_changed",
    direction: "upstream notification",
    since: V1,
    guarded: "withheld",
    note: "resources are refused",
  },
  {
    method: "notifications/resources/updated",
    direction: "upstream notification",
    since: V1,
    guarded: "withheld",
    note: "resources are refused",
  },
  {
    method: "notifications/prompts/list_changed",
    direction: "upstream notification",
    since: V1,
    guarded: "withheld",
    note: "prompts are refused",
  },
  {
    method: "notifications/tasks/status",
    direction: "upstream notification",
    since: V3,
    guarded: "withheld",
    note: "tasks are refused",
  },
  {
    method: "notifications/elicitation/complete",
    direction: "upstream notification",
    since: V3,
    guarded: "withheld",
    note: "elicitation is refused",
  },
  {
    method: "notifications/subscriptions/acknowledged",
    direction: "upstream notification",
    since: V4,
    guarded: "withheld",
    note: "subscriptions are refused",
  },
  // upstream → agent requests (2025 era; 2026-07-28 has none on the wire)
  {
    method: "ping",
    direction: "upstream request",
    since: V1,
    until: V3,
    guarded: "answered",
    note: "the gateway answers {}",
  },
  {
    method: "sampling/createMessage",
    direction: "upstream request",
    since: V1,
    until: V3,
    guarded: "refused",
    note: "would carry upstream text to the agent's model",
  },
  {
    method: "roots/list",
    direction: "upstream request",
    since: V1,
    until: V3,
    guarded: "refused",
    note: "the agent's roots are not the upstream's business",
  },
  {
    method: "elicitation/create",
    direction: "upstream request",
    since: V2,
    until: V3,
    guarded: "refused",
    note: "would carry upstream text to the user",
  },
];

/**
 * Whether the channel table applies to a server: every server is guarded unless it says it is not
 * (its guard is the built-in `noop`). An upstream record without the flag fails closed.
 */
export function isGuarded(up: { guarded?: boolean }): boolean {
  return up.guarded !== false;
}

const AGENT_REQUESTS = new Map(
  CHANNELS.filter((c) => c.direction === "agent request").map((c) => [c.method, c.guarded]),
);

/** The error a guarded server's refused method gets (stable: tests and clients match on it). */
function refusedError(method: string, serverId: string): JsonRpcErrorObject {
  return {
    code: ErrorCode.MethodNotFound,
    message: `Method not found: "${method}" is not available on guarded server "${serverId}" ` +
      `(its guard cannot label it; see the channel table in the README)`,
  };
}

/**
 * Decides an agent request for a guarded server: `undefined` lets it go on (to the guard for
 * `tools/call`), an error object refuses it before anything reaches the upstream.
 *
 * @example
 * ```ts
 * agentRequestRefusal({ jsonrpc: "2.0", id: 1, method: "resources/read" }, "gh"); // { code: -32601, … }
 * ```
 */
export function agentRequestRefusal(m: JsonRpcRequest, serverId: string): JsonRpcErrorObject | undefined {
  const t = AGENT_REQUESTS.get(m.method);
  if (t === undefined || t === "refused") return refusedError(m.method, serverId);
  if (m.method === "tools/call" && m.params?.task !== undefined) {
    return refusedError("tools/call with params.task (task-augmented)", serverId);
  }
  return undefined;
}

/** Whether an agent notification is forwarded to a guarded server. */
export function agentNotificationAllowed(method: string): boolean {
  return method === "notifications/initialized" || method === "notifications/cancelled";
}

/**
 * What the upstream receives for an agent request: the gateway's own serialization of exactly what
 * was checked, under the gateway's id. On a guarded server: for `tools/call`, `params` keeps only
 * `name`, `arguments` and `_meta` (an upstream that decodes keys case-insensitively must not find a
 * `"Name"` beside `"name"`); the agent's client capabilities (in `initialize` and in 2026-07-28
 * `_meta`) are not declared, since the gateway refuses the server-to-client requests they allow.
 * Other requests keep their parsed params (JSON.parse already left one value per key).
 */
export function upstreamRequest(m: JsonRpcRequest, upstreamId: string, guarded: boolean): JsonRpcRequest {
  let params = m.params;
  if (guarded && params) {
    if (m.method === "tools/call") {
      const p: Record<string, unknown> = { name: params.name };
      if (params.arguments !== undefined) p.arguments = params.arguments;
      if (params._meta !== undefined) p._meta = withoutClientCapabilities(params._meta);
      params = p;
    } else if (m.method === "initialize") {
      // The gateway answers sampling, elicitation and roots itself (refused): declaring the
      // agent's support for them would invite requests the agent never sees.
      params = { ...params, capabilities: {} };
    } else if (params._meta !== undefined) {
      params = { ...params, _meta: withoutClientCapabilities(params._meta) };
    }
  }
  return params === undefined
    ? { jsonrpc: "2.0", id: upstreamId, method: m.method }
    : { jsonrpc: "2.0", id: upstreamId, method: m.method, params };
}

/** The 2026-07-28 per-request declaration of the client's capabilities (sampling, elicitation, …). */
const CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities";

function withoutClientCapabilities(meta: unknown): unknown {
  if (typeof meta !== "object" || meta === null || !(CLIENT_CAPABILITIES_META in meta)) return meta;
  // Declared empty rather than dropped: 2026-07-28 servers require the key on every request.
  return { ...meta, [CLIENT_CAPABILITIES_META]: {} };
}

/** What a guarded server's `initialize`/`server/discover`/`ping` result becomes. */
export function metadataResult(method: string, result: unknown, serverId: string): unknown {
  const r = (typeof result === "object" && result !== null ? result : {}) as Record<string, unknown>;
  const tools = toolsCapability(r.capabilities);
  const serverInfo = { name: `mcp-edge-guard/${serverId}`, version: GATEWAY_VERSION };
  if (method === "initialize") {
    return {
      protocolVersion: typeof r.protocolVersion === "string" ? r.protocolVersion : undefined,
      capabilities: { tools },
      serverInfo,
    };
  }
  if (method === "server/discover") {
    const versions = Array.isArray(r.supportedVersions)
      ? r.supportedVersions.filter((v): v is string => PROTOCOL_VERSIONS.includes(v as ProtocolVersion))
      : [];
    return {
      supportedVersions: versions,
      capabilities: { tools },
      ...(r.resultType === "complete" ? { resultType: "complete" } : {}),
      _meta: { "io.modelcontextprotocol/serverInfo": serverInfo },
    };
  }
  return r.resultType === "complete" ? { resultType: "complete" } : {};
}

function toolsCapability(caps: unknown): Record<string, boolean> {
  const t = typeof caps === "object" && caps !== null ? (caps as Record<string, unknown>).tools : undefined;
  const listChanged = typeof t === "object" && t !== null &&
    (t as Record<string, unknown>).listChanged === true;
  return listChanged ? { listChanged: true } : {};
}

/** A guarded `tools/call` result the guard cannot label: `resultType` other than `complete` (MRTR). */
export function unguardableResult(result: unknown): string | undefined {
  if (typeof result !== "object" || result === null) return undefined;
  const t = (result as Record<string, unknown>).resultType;
  if (t === undefined || t === "complete") return undefined;
  return `result type ${JSON.stringify(String(t).slice(0, 40))} cannot be guarded`;
}

/** The error an agent gets for an upstream error answer on a guarded server: the code only. */
export function upstreamErrorForAgent(
  err: JsonRpcErrorObject,
  upstreamId: string,
  method: string,
): JsonRpcErrorObject {
  const code = Number.isSafeInteger(err.code) ? err.code : ErrorCode.InternalError;
  return { code, message: `upstream "${upstreamId}" answered ${method} with error ${code}` };
}

/** Where the gateway rebuilds an upstream notification: the tokens and id maps of one exchange. */
export interface NotificationContext {
  /** Whether `token` is the progress token of a request in flight in this exchange. */
  hasProgressToken(token: unknown): boolean;
  /** The agent's id for a gateway-minted upstream id, if it is one of this exchange's. */
  agentIdOf(upstreamId: unknown): string | number | undefined;
}

/**
 * An upstream notification as a guarded server's agent may see it, or `undefined` (withheld).
 *
 * @example
 * ```ts
 * guardedNotification({ jsonrpc: "2.0", method: "notifications/message", params: { data: "x" } }, ctx); // undefined
 * ```
 */
export function guardedNotification(
  m: { method: string; params?: Record<string, unknown> },
  ctx: NotificationContext,
): JsonRpcMessage | undefined {
  const p = m.params ?? {};
  switch (m.method) {
    case "notifications/progress": {
      if (!ctx.hasProgressToken(p.progressToken) || typeof p.progress !== "number") return undefined;
      const params: Record<string, unknown> = { progressToken: p.progressToken, progress: p.progress };
      if (typeof p.total === "number") params.total = p.total;
      return { jsonrpc: "2.0", method: m.method, params };
    }
    case "notifications/cancelled": {
      const id = ctx.agentIdOf(p.requestId);
      return id === undefined ? undefined : { jsonrpc: "2.0", method: m.method, params: { requestId: id } };
    }
    case "notifications/tools/list_changed":
      return { jsonrpc: "2.0", method: m.method };
    default:
      return undefined;
  }
}

/**
 * The gateway's answer to a request an upstream sends to a guarded server's agent: `{}` for `ping`,
 * an error for everything else. The agent never sees the request.
 */
export function answerUpstreamRequest(method: string): { result: unknown } | { error: JsonRpcErrorObject } {
  if (method === "ping") return { result: {} };
  return {
    error: {
      code: ErrorCode.MethodNotFound,
      message: `Method not found: the gateway does not relay "${
        method.slice(0, 64)
      }" to agents of a guarded server`,
    },
  };
}

/** HTTP reason phrases the gateway may repeat (never the upstream's own text). */
const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  408: "Request Timeout",
  409: "Conflict",
  413: "Payload Too Large",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** A short, safe description of an upstream HTTP status (no upstream text). */
export function httpStatusReason(status: number): string {
  return REASONS[status] ??
    (status >= 500 ? "server error" : status >= 400 ? "client error" : "unexpected status");
}

/**
 * Which `Mcp-Param-*` header values a guarded server may receive with `sent`: the header encodings of
 * its top-level arguments, so that an upstream reading parameters from headers cannot be handed a
 * value the guard did not check. Give the result to `upstreamRequestHeaders` as `paramValueAllowed`.
 */
export function checkedParamValues(sent: JsonRpcMessage | undefined): (value: string) => boolean {
  const args = sent && "method" in sent && sent.method === "tools/call" ? sent.params?.arguments : undefined;
  if (typeof args !== "object" || args === null || Array.isArray(args)) return () => false;
  let values: Set<string> | undefined;
  return (value) => {
    if (!values) {
      values = new Set();
      for (const v of Object.values(args)) {
        if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") {
          values.add(encodeHeaderValue(String(v)));
        }
      }
    }
    return values.has(value);
  };
}

/**
 * Response headers for a guarded server's agent: only what the gateway writes (content type of the
 * relay it chose, no upstream header values).
 */
export function guardedResponseHeaders(eventStream: boolean, sessionId?: string): Record<string, string> {
  const h: Record<string, string> = eventStream
    ? { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" }
    : { "content-type": "application/json", "cache-control": "no-cache" };
  if (sessionId !== undefined) h["mcp-session-id"] = sessionId;
  return h;
}

/**
 * The channel table as the README's Markdown table (the README test checks that they agree).
 *
 * @example
 * ```ts
 * console.log(channelTableMarkdown()); // deno eval 'import { channelTableMarkdown } from "./src/mcp/channels.ts"; console.log(channelTableMarkdown())'
 * ```
 */
export function channelTableMarkdown(): string {
  const rows = CHANNELS.map((c) => {
    const versions = c.until ? (c.until === c.since ? c.since : `${c.since} … ${c.until}`) : `${c.since} …`;
    return `| \`${c.method}\` | ${c.direction} | ${versions} | ${c.guarded} | ${c.note} |`;
  });
  return [
    "| Method | Sent by | Versions | On a guarded server | Why |",
    "|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}
