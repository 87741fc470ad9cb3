/**
 * Session state of the MCP proxy, per isolate.
 *
 * - Routed mode (`/mcp/:server`) passes the upstream's `Mcp-Session-Id` through but binds it to the
 *   agent and upstream it was issued for ({@link RoutedSessionBindings}); another agent presenting it
 *   gets 404, as if it did not exist.
 * - Unified mode (`/mcp`) owns the agent-facing session ({@link GatewaySession}): its own random id,
 *   one upstream session per upstream, and the id maps needed to multiplex several upstreams onto
 *   one agent connection.
 *
 * State lives in memory. A request that lands on an isolate that does not know the session gets
 * 404, which makes spec-following clients re-initialize.
 *
 * @module
 */
import type { JsonRpcId } from "./jsonrpc.ts";
import { randomHex } from "../util.ts";

/** Sessions kept per store before the oldest are dropped: bounds memory against session floods. */
export const MAX_SESSIONS = 10_000;

/** Random bytes in a minted gateway session id (hex-encoded, so visible ASCII as the spec asks). */
const SESSION_ID_BYTES = 32;

/**
 * Mints a gateway session id: 32 random bytes, hex (64 visible-ASCII characters).
 *
 * @example
 * ```ts
 * const sid = mintSessionId(); // "9f2c…"
 * ```
 */
export function mintSessionId(): string {
  return randomHex(SESSION_ID_BYTES);
}

/** Key for a JSON-RPC id in maps (`1` and `"1"` are different ids). */
export function idKey(id: JsonRpcId): string {
  return typeof id === "number" ? `n:${id}` : `s:${id}`;
}

/** Insertion-ordered map that drops its oldest entries beyond `max`. */
class BoundedMap<V> extends Map<string, V> {
  constructor(private readonly max: number) {
    super();
  }
  override set(k: string, v: V): this {
    if (this.has(k)) this.delete(k);
    super.set(k, v);
    while (this.size > this.max) this.delete(this.keys().next().value as string);
    return this;
  }
}

/** Outcome of checking a routed session id. */
export type BindingCheck = "ok" | "unknown" | "foreign";

/**
 * Upstream session ids seen in routed mode, bound to (upstream, agent).
 *
 * @example
 * ```ts
 * const b = new RoutedSessionBindings();
 * b.bind("gh", "sid-1", "agent-a");
 * b.check("gh", "sid-1", "agent-b"); // "foreign"
 * ```
 */
export class RoutedSessionBindings {
  readonly #map: BoundedMap<string>;
  constructor(max = MAX_SESSIONS) {
    this.#map = new BoundedMap(max);
  }
  #key(upstreamId: string, sid: string): string {
    return `${upstreamId}\n${sid}`;
  }
  /** Records that `sid` (issued by `upstreamId`) belongs to `agentId`. A foreign binding is kept. */
  bind(upstreamId: string, sid: string, agentId: string): BindingCheck {
    const k = this.#key(upstreamId, sid);
    const owner = this.#map.get(k);
    if (owner !== undefined && owner !== agentId) return "foreign";
    this.#map.set(k, agentId);
    return "ok";
  }
  /** Whether `agentId` may use `sid` on `upstreamId`. */
  check(upstreamId: string, sid: string, agentId: string): BindingCheck {
    const owner = this.#map.get(this.#key(upstreamId, sid));
    if (owner === undefined) return "unknown";
    return owner === agentId ? "ok" : "foreign";
  }
  /** Forgets a binding (DELETE, or the upstream answered 404). */
  unbind(upstreamId: string, sid: string): void {
    this.#map.delete(this.#key(upstreamId, sid));
  }
}

/** One upstream's side of a unified session. */
export interface UpstreamLink {
  /** The upstream's `Mcp-Session-Id`, when it issued one. */
  sessionId?: string;
  /** The version the upstream answered in `initialize`. */
  protocolVersion: string;
}

/** Where a server→client request came from, under the id the agent sees. */
export interface ServerRequestOrigin {
  upstreamId: string;
  id: JsonRpcId;
}

/** A unified-mode agent session. */
export class GatewaySession {
  readonly id: string;
  readonly agentId: string;
  /** Version negotiated with the agent. */
  readonly protocolVersion: string;
  /** The agent's `initialize` params, replayed to upstreams initialized lazily. */
  readonly initParams: Record<string, unknown>;
  /** Upstream links, or the pending initialization of one. */
  readonly links = new Map<string, Promise<UpstreamLink>>();
  /** Agent-visible id of a server→client request → its origin. */
  readonly serverRequests = new BoundedMap<ServerRequestOrigin>(MAX_SESSIONS);
  /** `${upstreamId}\n${idKey(upstream id)}` → agent-visible id, to map upstream cancellations. */
  readonly serverRequestsByOrigin = new BoundedMap<number>(MAX_SESSIONS);
  /** The agent's in-flight requests → the upstream serving them (for `notifications/cancelled`). */
  readonly inflight = new Map<string, string>();
  #nextServerRequestId = 1;

  constructor(id: string, agentId: string, protocolVersion: string, initParams: Record<string, unknown>) {
    this.id = id;
    this.agentId = agentId;
    this.protocolVersion = protocolVersion;
    this.initParams = initParams;
  }

  /** Gives a server→client request an agent-visible id that no other upstream can collide with. */
  mapServerRequest(upstreamId: string, id: JsonRpcId): number {
    const n = this.#nextServerRequestId++;
    this.serverRequests.set(String(n), { upstreamId, id });
    this.serverRequestsByOrigin.set(`${upstreamId}\n${idKey(id)}`, n);
    return n;
  }

  /** Resolves (and forgets) the origin of the agent's response to a server→client request. */
  takeServerRequest(agentId: JsonRpcId): ServerRequestOrigin | undefined {
    const k = String(agentId);
    const o = this.serverRequests.get(k);
    if (o) {
      this.serverRequests.delete(k);
      this.serverRequestsByOrigin.delete(`${o.upstreamId}\n${idKey(o.id)}`);
    }
    return o;
  }

  /** The agent-visible id of an upstream's server→client request, if it was mapped. */
  agentIdOf(upstreamId: string, id: JsonRpcId): number | undefined {
    return this.serverRequestsByOrigin.get(`${upstreamId}\n${idKey(id)}`);
  }
}

/** Unified sessions by gateway session id. */
export class GatewaySessionStore {
  readonly #map: BoundedMap<GatewaySession>;
  constructor(max = MAX_SESSIONS) {
    this.#map = new BoundedMap(max);
  }
  add(s: GatewaySession): void {
    this.#map.set(s.id, s);
  }
  /** The session, only when it exists and belongs to `agentId`. */
  get(id: string, agentId: string): GatewaySession | undefined {
    const s = this.#map.get(id);
    return s && s.agentId === agentId ? s : undefined;
  }
  delete(id: string): void {
    this.#map.delete(id);
  }
  all(): GatewaySession[] {
    return [...this.#map.values()];
  }
}
