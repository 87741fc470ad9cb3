/**
 * Upstream ids and what the gateway expects back.
 *
 * The gateway owns the JSON-RPC ids it sends upstream: every forwarded request, every guard
 * `call_backend` and every gateway-originated request gets a fresh id from {@link mintUpstreamId}.
 * An {@link Exchange} (one agent POST, or one GET stream) holds an {@link Expectation} per minted id;
 * an upstream response is matched by that id only, answered once, and mapped back to the agent's
 * own id. A response with any other id (stray, duplicate, replayed, another exchange's) matches
 * nothing and is withheld. {@link InflightRegistry} knows, per agent session, which agent ids are in
 * flight and under which minted id: a second request with an id already in flight is refused, and a
 * cancellation is mapped to the upstream id.
 *
 * @module
 */
import type { ToolCallGuard, Upstream } from "./proxy.ts";
import {
  ErrorCode,
  errorResponse,
  type JsonRpcErrorObject,
  type JsonRpcId,
  type JsonRpcMessage,
} from "./jsonrpc.ts";
import { randomHex } from "../util.ts";
import { idKey } from "./sessions.ts";

/** Requests in flight per agent session; beyond it new requests get `-32600`. */
export const MAX_INFLIGHT_PER_SESSION = 1_000;

// Made on first use: Workers forbid random values at module scope.
let idPrefix: string | undefined;
let idSeq = 0;

/**
 * A fresh upstream request id, unique in this isolate: `mcpeg-<8 hex>-<n>`.
 *
 * @example
 * ```ts
 * mintUpstreamId(); // "mcpeg-1a2b3c4d-17"
 * ```
 */
export function mintUpstreamId(): string {
  idPrefix ??= `mcpeg-${randomHex(4)}-`;
  return idPrefix + (++idSeq);
}

/** What the gateway expects back for one forwarded request. */
export interface Expectation {
  /** The agent's id, restored on the answer. */
  agentId: JsonRpcId;
  method: string;
  /** The guard of a `tools/call`. */
  guard?: ToolCallGuard;
  /** The request's `_meta.progressToken`, when it asked for progress. */
  progressToken?: string | number;
}

/** Where one agent session's in-flight requests are registered (see {@link InflightRegistry}). */
export interface InflightSlot {
  registry: InflightRegistry;
  key: string;
}

/** One agent POST (or GET stream) being forwarded to one upstream. */
export class Exchange {
  /** Minted upstream id → expectation. */
  readonly pending = new Map<string, Expectation>();
  /** Requests the upstream sent on this exchange (see relay.ts). */
  upstreamRequests = 0;
  constructor(readonly upstream: Upstream, readonly slot?: InflightSlot) {}

  /** Registers a request about to be sent upstream under `upstreamId`. */
  expect(upstreamId: string, e: Expectation): void {
    this.pending.set(upstreamId, e);
    this.slot?.registry.add(this.slot.key, e.agentId, { server: this.upstream.id, upstreamId });
  }

  /** The expectation an upstream response id answers, removed; `undefined` for any other id. */
  take(upstreamId: unknown): Expectation | undefined {
    if (typeof upstreamId !== "string") return undefined;
    const e = this.pending.get(upstreamId);
    if (!e) return undefined;
    this.pending.delete(upstreamId);
    this.slot?.registry.remove(this.slot.key, e.agentId);
    return e;
  }

  /** Whether `token` is the progress token of a request still pending here. */
  hasProgressToken(token: unknown): boolean {
    if (typeof token !== "string" && typeof token !== "number") return false;
    for (const e of this.pending.values()) if (e.progressToken === token) return true;
    return false;
  }

  /** The agent's id for one of this exchange's minted ids. */
  agentIdOf(upstreamId: unknown): JsonRpcId | undefined {
    return typeof upstreamId === "string" ? this.pending.get(upstreamId)?.agentId : undefined;
  }

  /** Aborts every guard still waiting and forgets the expectations. */
  abortAll(reason: unknown): void {
    for (const e of this.pending.values()) e.guard?.abort(reason);
    this.#forget();
  }

  /** Error responses for every request still unanswered; aborts their guards. */
  failAll(err: JsonRpcErrorObject): JsonRpcMessage[] {
    const out: JsonRpcMessage[] = [];
    for (const e of this.pending.values()) {
      e.guard?.abort(err.message);
      out.push(errorResponse(e.agentId, err.code, err.message, err.data));
    }
    this.#forget();
    return out;
  }

  #forget(): void {
    if (this.slot) {
      for (const e of this.pending.values()) this.slot.registry.remove(this.slot.key, e.agentId);
    }
    this.pending.clear();
  }
}

/** One in-flight request: the server it went to, under the gateway's id. */
export interface InflightEntry {
  server: string;
  upstreamId: string;
}

/**
 * The agent ids in flight per agent session (routed: upstream + session + agent; unified: the
 * gateway session), each with the minted id it was sent under. Entries live exactly as long as the
 * request is pending in its {@link Exchange}.
 */
export class InflightRegistry {
  readonly #sessions = new Map<string, Map<string, InflightEntry>>();

  /** Whether the agent id is in flight on the session. */
  has(key: string, agentId: JsonRpcId): boolean {
    return this.#sessions.get(key)?.has(idKey(agentId)) ?? false;
  }

  /** Whether the session may start one more request. */
  full(key: string): boolean {
    return (this.#sessions.get(key)?.size ?? 0) >= MAX_INFLIGHT_PER_SESSION;
  }

  /** Where an in-flight agent id went: its server and the minted upstream id. */
  lookup(key: string, agentId: unknown): InflightEntry | undefined {
    if (typeof agentId !== "string" && typeof agentId !== "number") return undefined;
    return this.#sessions.get(key)?.get(idKey(agentId));
  }

  add(key: string, agentId: JsonRpcId, entry: InflightEntry): void {
    let s = this.#sessions.get(key);
    if (!s) this.#sessions.set(key, s = new Map());
    s.set(idKey(agentId), entry);
  }

  remove(key: string, agentId: JsonRpcId): void {
    const s = this.#sessions.get(key);
    if (!s) return;
    s.delete(idKey(agentId));
    if (s.size === 0) this.#sessions.delete(key);
  }
}

/** The `-32600` answer to a request whose id is duplicated in its batch or already in flight. */
export function duplicateIdError(id: JsonRpcId): JsonRpcMessage {
  return errorResponse(
    id,
    ErrorCode.InvalidRequest,
    `Invalid Request: id ${JSON.stringify(id)} is used by another request in flight on this session`,
  );
}
