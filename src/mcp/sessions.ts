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

/**
 * Session limits (routed bindings and unified sessions alike, each store counted on its own).
 *
 * Both stores are shared by every agent of the isolate, so one agent must not be able to push the
 * others' sessions out. The rules, in order:
 * 1. A session unused for {@link SESSION_IDLE_MS} is forgotten (the next request with its id gets 404
 *    and a spec-following client re-initializes, exactly as when it lands on another isolate). This
 *    is the same for everyone and is what frees sessions that clients never DELETE.
 * 2. An agent holding {@link MAX_SESSIONS_PER_AGENT} live sessions gets no new one: the new session is
 *    refused ({@link SessionLimitError}, HTTP 429). Its existing sessions keep working; DELETE or
 *    idle expiry gives room back. Refusing (rather than dropping the agent's own oldest session) keeps
 *    every session that was handed out valid until its owner ends it or leaves it idle.
 * 3. When the store holds {@link MAX_SESSIONS} live sessions in all, every new session is refused
 *    (HTTP 503), whoever asks. No agent's session is ever evicted to make room for another's.
 */
/** Live sessions one agent may hold per store. */
export const MAX_SESSIONS_PER_AGENT = 1_000;
/** Live sessions per store, all agents together: bounds memory against floods of agent ids. */
export const MAX_SESSIONS = 10_000;
/** A session unused this long (ms) is forgotten: 1 hour. */
export const SESSION_IDLE_MS = 60 * 60 * 1000;
/** Server→client requests remembered per unified session before the oldest are dropped. */
export const MAX_SERVER_REQUESTS = 10_000;

/** Overrides of the limits above (tests use small ones and a fake clock). */
export interface SessionLimits {
  max?: number;
  maxPerAgent?: number;
  idleMs?: number;
  now?: () => number;
}

/**
 * A new session refused because a limit of {@link SessionLimits} is reached. `status` is the HTTP
 * status to answer with: 429 for the agent's own limit, 503 for the store's.
 */
export class SessionLimitError extends Error {
  readonly limit: "MAX_SESSIONS_PER_AGENT" | "MAX_SESSIONS";
  readonly value: number;
  readonly status: 429 | 503;
  constructor(limit: "MAX_SESSIONS_PER_AGENT" | "MAX_SESSIONS", value: number, agentId: string) {
    super(
      limit === "MAX_SESSIONS_PER_AGENT"
        ? `agent ${
          JSON.stringify(agentId)
        } already holds ${value} sessions (${limit}); end one (DELETE) or wait for an idle one to expire`
        : `the gateway holds ${value} sessions (${limit}); no new session until one ends or expires`,
    );
    this.name = "SessionLimitError";
    this.limit = limit;
    this.value = value;
    this.status = limit === "MAX_SESSIONS_PER_AGENT" ? 429 : 503;
  }
}

interface Slot<V> {
  agentId: string;
  value: V;
  usedAt: number;
}

/**
 * Entries owned by agents, kept in least-recently-used order, with the limits described above.
 * `onExpire` hears of every entry forgotten for idleness.
 */
class AgentSessionTable<V> {
  readonly #slots = new Map<string, Slot<V>>();
  readonly #perAgent = new Map<string, number>();
  readonly #max: number;
  readonly #maxPerAgent: number;
  readonly #idleMs: number;
  readonly #now: () => number;
  readonly #onExpire: (v: V) => void;

  constructor(limits: SessionLimits, onExpire: (v: V) => void = () => {}) {
    this.#max = limits.max ?? MAX_SESSIONS;
    this.#maxPerAgent = limits.maxPerAgent ?? MAX_SESSIONS_PER_AGENT;
    this.#idleMs = limits.idleMs ?? SESSION_IDLE_MS;
    this.#now = limits.now ?? Date.now;
    this.#onExpire = onExpire;
  }

  /** Forgets idle entries; they are all at the front, since every use moves an entry to the back. */
  #expire(): void {
    const cutoff = this.#now() - this.#idleMs;
    for (const [k, slot] of this.#slots) {
      if (slot.usedAt > cutoff) break;
      this.delete(k);
      this.#onExpire(slot.value);
    }
  }

  /**
   * The live entry under `k`, or undefined. A lookup by its owner is a use (the entry moves to the
   * back and its idle clock restarts); another agent's lookup never keeps it alive.
   */
  get(k: string, agentId: string): Slot<V> | undefined {
    this.#expire();
    const slot = this.#slots.get(k);
    if (slot && slot.agentId === agentId) {
      this.#slots.delete(k);
      slot.usedAt = this.#now();
      this.#slots.set(k, slot);
    }
    return slot;
  }

  /** The value under `k` without counting as a use. */
  peek(k: string): V | undefined {
    return this.#slots.get(k)?.value;
  }

  /** Why a new entry for `agentId` would be refused now, or null. */
  room(agentId: string): SessionLimitError | null {
    this.#expire();
    if ((this.#perAgent.get(agentId) ?? 0) >= this.#maxPerAgent) {
      return new SessionLimitError("MAX_SESSIONS_PER_AGENT", this.#maxPerAgent, agentId);
    }
    if (this.#slots.size >= this.#max) return new SessionLimitError("MAX_SESSIONS", this.#max, agentId);
    return null;
  }

  /** Adds a new entry (the caller checked that `k` is free and {@link room} is null). */
  add(k: string, agentId: string, value: V): void {
    this.#slots.set(k, { agentId, value, usedAt: this.#now() });
    this.#perAgent.set(agentId, (this.#perAgent.get(agentId) ?? 0) + 1);
  }

  delete(k: string): void {
    const slot = this.#slots.get(k);
    if (!slot) return;
    this.#slots.delete(k);
    const n = (this.#perAgent.get(slot.agentId) ?? 1) - 1;
    if (n > 0) this.#perAgent.set(slot.agentId, n);
    else this.#perAgent.delete(slot.agentId);
  }

  values(): V[] {
    return [...this.#slots.values()].map((s) => s.value);
  }

  /** Live entries of `agentId` (for tests and diagnostics). */
  countOf(agentId: string): number {
    this.#expire();
    return this.#perAgent.get(agentId) ?? 0;
  }
}

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
 * Outcome of binding a routed session id: `"full"` means a session limit refused the new binding
 * (see {@link RoutedSessionBindings.room} for the error to answer with); the id stays unknown, so
 * every later request carrying it gets 404.
 */
export type BindResult = "ok" | "foreign" | "full";

/**
 * Upstream session ids seen in routed mode, bound to (upstream, agent), with the session limits of
 * {@link MAX_SESSIONS_PER_AGENT}, {@link MAX_SESSIONS} and {@link SESSION_IDLE_MS}.
 *
 * The agent never sees an upstream's session id: each binding has a gateway-minted alias
 * ({@link aliasOf}) that the agent uses instead, and {@link resolve} maps it back. An upstream's
 * `Mcp-Session-Id` is bytes the upstream chose; passing it on would let an upstream hand an agent
 * data that no guard saw.
 *
 * @example
 * ```ts
 * const b = new RoutedSessionBindings();
 * b.bind("gh", "sid-1", "agent-a");
 * b.check("gh", "sid-1", "agent-b"); // "foreign"
 * const alias = b.aliasOf("gh", "sid-1")!; // what agent-a sees
 * b.resolve("gh", alias, "agent-a"); // { check: "ok", upstreamSid: "sid-1" }
 * ```
 */
export class RoutedSessionBindings {
  /** `upstream\nupstream sid` → `upstream\nalias`. */
  readonly #table: AgentSessionTable<string>;
  /** `upstream\nalias` → upstream sid. */
  readonly #byAlias = new Map<string, string>();
  constructor(limits: SessionLimits = {}) {
    this.#table = new AgentSessionTable(limits, (aliasKey) => this.#byAlias.delete(aliasKey));
  }
  #key(upstreamId: string, sid: string): string {
    return `${upstreamId}\n${sid}`;
  }
  /**
   * Records that `sid` (issued by `upstreamId`) belongs to `agentId`. A foreign binding is kept;
   * a new binding over a session limit is refused (`"full"`) and nothing is evicted.
   */
  bind(upstreamId: string, sid: string, agentId: string): BindResult {
    const k = this.#key(upstreamId, sid);
    const slot = this.#table.get(k, agentId);
    if (slot) return slot.agentId === agentId ? "ok" : "foreign";
    if (this.#table.room(agentId)) return "full";
    const aliasKey = this.#key(upstreamId, mintSessionId());
    this.#table.add(k, agentId, aliasKey);
    this.#byAlias.set(aliasKey, sid);
    return "ok";
  }
  /** Whether `agentId` may use `sid` on `upstreamId` (a use: it restarts the idle clock). */
  check(upstreamId: string, sid: string, agentId: string): BindingCheck {
    const slot = this.#table.get(this.#key(upstreamId, sid), agentId);
    if (slot === undefined) return "unknown";
    return slot.agentId === agentId ? "ok" : "foreign";
  }
  /** The id the agent sees for a bound upstream session id. */
  aliasOf(upstreamId: string, sid: string): string | undefined {
    const aliasKey = this.#table.peek(this.#key(upstreamId, sid));
    return aliasKey?.slice(upstreamId.length + 1);
  }
  /** The upstream session behind an agent's session id, and whether the agent may use it. */
  resolve(
    upstreamId: string,
    agentSid: string,
    agentId: string,
  ): { check: BindingCheck; upstreamSid?: string } {
    const upstreamSid = this.#byAlias.get(this.#key(upstreamId, agentSid));
    if (upstreamSid === undefined) return { check: "unknown" };
    const check = this.check(upstreamId, upstreamSid, agentId);
    return check === "ok" ? { check, upstreamSid } : { check };
  }
  /** Forgets a binding (DELETE, or the upstream answered 404). */
  unbind(upstreamId: string, sid: string): void {
    const k = this.#key(upstreamId, sid);
    const aliasKey = this.#table.peek(k);
    if (aliasKey !== undefined) this.#byAlias.delete(aliasKey);
    this.#table.delete(k);
  }
  /**
   * Why a new session for `agentId` would be refused now, or null: lets the proxy refuse an
   * `initialize` before it creates an upstream session, and word the answer to a `"full"` bind.
   */
  room(agentId: string): SessionLimitError | null {
    return this.#table.room(agentId);
  }
  /** Live bindings held by `agentId`. */
  countOf(agentId: string): number {
    return this.#table.countOf(agentId);
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
  readonly serverRequests = new BoundedMap<ServerRequestOrigin>(MAX_SERVER_REQUESTS);
  /** `${upstreamId}\n${idKey(upstream id)}` → agent-visible id, to map upstream cancellations. */
  readonly serverRequestsByOrigin = new BoundedMap<number>(MAX_SERVER_REQUESTS);
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

/**
 * Unified sessions by gateway session id, with the session limits of {@link MAX_SESSIONS_PER_AGENT},
 * {@link MAX_SESSIONS} and {@link SESSION_IDLE_MS}. `onExpire` hears of each session forgotten for
 * idleness, so its owner can end the session's upstream links.
 *
 * @example
 * ```ts
 * const store = new GatewaySessionStore({}, (s) => closeLinks(s));
 * store.add(new GatewaySession(mintSessionId(), "agent-a", "2025-11-25", {})); // may throw SessionLimitError
 * ```
 */
export class GatewaySessionStore {
  readonly #table: AgentSessionTable<GatewaySession>;
  constructor(limits: SessionLimits = {}, onExpire?: (s: GatewaySession) => void) {
    this.#table = new AgentSessionTable(limits, onExpire);
  }
  /**
   * Adds a new session.
   * @throws {SessionLimitError} when its agent or the store is at its limit (nothing is evicted).
   */
  add(s: GatewaySession): void {
    this.#table.delete(s.id); // re-adding a session replaces it
    const refused = this.#table.room(s.agentId);
    if (refused) throw refused;
    this.#table.add(s.id, s.agentId, s);
  }
  /** Why a new session for `agentId` would be refused now, or null (check before initializing upstreams). */
  room(agentId: string): SessionLimitError | null {
    return this.#table.room(agentId);
  }
  /** The session, only when it exists and belongs to `agentId` (a use: it restarts the idle clock). */
  get(id: string, agentId: string): GatewaySession | undefined {
    const slot = this.#table.get(id, agentId);
    return slot && slot.agentId === agentId ? slot.value : undefined;
  }
  delete(id: string): void {
    this.#table.delete(id);
  }
  all(): GatewaySession[] {
    return this.#table.values();
  }
  /** Live sessions held by `agentId`. */
  countOf(agentId: string): number {
    return this.#table.countOf(agentId);
  }
}
