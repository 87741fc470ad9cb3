/**
 * Agent label stores (guard-abi.md §3.6): one label pair per agent ID, starting empty, changed only by
 * the two monotonic operations the DIFC model defines:
 * - `addLabels` (after `label_agent`): secrecy ∪= tags, integrity ∪= tags;
 * - `propagate` (propagate-mode reads): secrecy ∪= overall.secrecy, integrity ∩= overall.integrity.
 * Every update is atomic per agent, so concurrent tool calls never lose each other's labels. The
 * one non-monotonic operation is the operator's `reset` (forget an agent), never used by the pipeline.
 *
 * `MemoryAgentLabelStore` lives in one isolate; `DenoKvAgentLabelStore` persists in Deno KV (Deno,
 * Deno Deploy) with versionstamp-checked atomic writes and retry.
 *
 * ## Limits (fail closed, never evict)
 *
 * An agent's labels are its taint: forgetting them (to make room, or because a set grew large) would
 * let it read again what its labels now forbid. So no store ever drops or truncates an agent's labels.
 * Instead, an update that would pass a limit is refused with {@link AgentLabelLimitError} and changes
 * nothing; the pipeline turns it into a denied `tools/call` (`-32003`, `agent label store failed: ...`,
 * `data.limit`), exactly like any other store failure, so nothing is released unrecorded.
 * - {@link MAX_AGENT_TAGS} tags per label set (secrecy, integrity) of one agent, in every store. An
 *   agent at the limit keeps its labels; only calls that would add tags beyond it are denied.
 * - {@link MAX_AGENTS} agents per in-memory store (and per Durable Object agent index): a new agent
 *   beyond it gets denied calls (its labels cannot be recorded), known agents are unaffected. Deno KV
 *   keeps agents on disk, not in memory, and has no agent count limit here.
 *
 * @module
 */
import { intersectTags, type Labels, sameTags, tagSet, unionTags } from "./labels.ts";

/** Where agent labels live. All methods resolve to sorted, de-duplicated tag lists. */
export interface AgentLabelStore {
  /** The agent's current labels (empty for an unknown agent). */
  get(agentId: string): Promise<Labels>;
  /**
   * Unions `labels` into the agent's labels (label_agent, §3.6). Resolves to the new labels.
   * With `onceKey`, the union is applied at most once per (agent, key), atomically: the pipeline
   * passes a hash of (server, payload) so that re-running `label_agent` on every fresh guard instance
   * does not undo propagate-mode integrity drops (the reference unions once per session and server).
   */
  addLabels(agentId: string, labels: Labels, onceKey?: string): Promise<Labels>;
  /** Secrecy ∪= `overall.secrecy`, integrity ∩= `overall.integrity` (propagate mode). New labels. */
  propagate(agentId: string, overall: Labels): Promise<Labels>;
  /** Every known agent's labels (the operator's `GET /admin/labels`, `deno task labels list`). */
  snapshot(): Promise<Record<string, Labels>>;
  /**
   * Forgets the agent: its labels and applied once-keys, as if it had never called (operator action,
   * `DELETE /admin/labels/:agent`). Its next call starts from empty labels and runs `label_agent`'s
   * union again. Resolves to the labels it held (empty for an unknown agent).
   */
  reset(agentId: string): Promise<Labels>;
}

/** Tags one agent may hold per label set (secrecy, integrity): see the module doc. */
export const MAX_AGENT_TAGS = 1_000;
/** Agents one {@link MemoryAgentLabelStore} (or the Durable Object agent index) may hold. */
export const MAX_AGENTS = 10_000;

/** `label_agent` merge. */
export function mergeAgentLabels(cur: Labels, add: Labels): Labels {
  return { secrecy: unionTags(cur.secrecy, add.secrecy), integrity: unionTags(cur.integrity, add.integrity) };
}

/** Propagate-mode accumulation. */
export function propagateLabels(cur: Labels, overall: Labels): Labels {
  return {
    secrecy: unionTags(cur.secrecy, overall.secrecy),
    integrity: intersectTags(cur.integrity, overall.integrity),
  };
}

/** A copy of a label pair (stores never hand out their own arrays). */
export function copyLabels(l: Labels): Labels {
  return { secrecy: [...l.secrecy], integrity: [...l.integrity] };
}

/**
 * The applied once-keys after applying `onceKey` (oldest dropped first, at most {@link MAX_ONCE_KEYS}).
 */
export function appendOnceKey(applied: readonly string[], onceKey: string | undefined): string[] {
  return onceKey === undefined ? [...applied] : [...applied, onceKey].slice(-MAX_ONCE_KEYS);
}

/**
 * Checks an agent's next labels against {@link MAX_AGENT_TAGS}, returning them unchanged.
 * @throws {AgentLabelLimitError} when a set would hold more tags than the limit.
 */
export function checkTagLimit(agentId: string, next: Labels, max = MAX_AGENT_TAGS): Labels {
  for (const set of ["secrecy", "integrity"] as const) {
    if (next[set].length > max) {
      throw new AgentLabelLimitError(
        "MAX_AGENT_TAGS",
        max,
        `agent ${JSON.stringify(agentId)} would hold ${next[set].length} ${set} tags, over MAX_AGENT_TAGS ` +
          `(${max}); its labels are kept as they are and the call is denied`,
      );
    }
  }
  return next;
}

/**
 * In-memory store for one isolate. Updates are synchronous inside the event loop, hence atomic.
 * Holds at most `maxAgents` agents and {@link MAX_AGENT_TAGS} tags per set and agent (module doc).
 *
 * @example
 * ```ts
 * const store = new MemoryAgentLabelStore();
 * await store.addLabels("agent-1", { secrecy: ["private:acme"], integrity: [] });
 * ```
 */
export class MemoryAgentLabelStore implements AgentLabelStore {
  /** Each agent's labels and the `onceKey`s applied to them. */
  readonly #agents = new Map<string, Labels & { applied: string[] }>();
  readonly #maxAgents: number;
  readonly #maxTags: number;

  constructor(limits: { maxAgents?: number; maxTags?: number } = {}) {
    this.#maxAgents = limits.maxAgents ?? MAX_AGENTS;
    this.#maxTags = limits.maxTags ?? MAX_AGENT_TAGS;
  }

  get(agentId: string): Promise<Labels> {
    const l = this.#agents.get(agentId);
    return Promise.resolve(l ? copyLabels(l) : { secrecy: [], integrity: [] });
  }

  #update(agentId: string, fn: (cur: Labels) => Labels, onceKey?: string): Promise<Labels> {
    try {
      const cur = this.#agents.get(agentId);
      if (!cur && this.#agents.size >= this.#maxAgents) {
        throw new AgentLabelLimitError(
          "MAX_AGENTS",
          this.#maxAgents,
          `the label store holds ${this.#maxAgents} agents (MAX_AGENTS); agent ${
            JSON.stringify(agentId)
          } cannot be recorded and the call is denied`,
        );
      }
      const applied = cur?.applied ?? [];
      if (onceKey !== undefined && applied.includes(onceKey)) return this.get(agentId);
      const next = checkTagLimit(agentId, fn(cur ?? { secrecy: [], integrity: [] }), this.#maxTags);
      this.#agents.set(agentId, { ...next, applied: appendOnceKey(applied, onceKey) });
      return Promise.resolve(copyLabels(next));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  addLabels(agentId: string, labels: Labels, onceKey?: string): Promise<Labels> {
    return this.#update(agentId, (cur) => mergeAgentLabels(cur, labels), onceKey);
  }

  propagate(agentId: string, overall: Labels): Promise<Labels> {
    return this.#update(agentId, (cur) => propagateLabels(cur, overall));
  }

  snapshot(): Promise<Record<string, Labels>> {
    const out: Record<string, Labels> = {};
    for (const [id, l] of this.#agents) out[id] = copyLabels(l);
    return Promise.resolve(out);
  }

  reset(agentId: string): Promise<Labels> {
    const l = this.#agents.get(agentId);
    this.#agents.delete(agentId);
    return Promise.resolve(l ? copyLabels(l) : { secrecy: [], integrity: [] });
  }
}

// Structural subset of Deno.Kv, so this module type-checks without the unstable KV types.
type KvKey = readonly (string | number)[];
interface KvEntryMaybe<T> {
  key: KvKey;
  value: T | null;
  versionstamp: string | null;
}
interface KvAtomic {
  check(...checks: { key: KvKey; versionstamp: string | null }[]): KvAtomic;
  set(key: KvKey, value: unknown): KvAtomic;
  commit(): Promise<{ ok: boolean }>;
}
/** The part of `Deno.Kv` the store uses. */
export interface KvLike {
  get<T>(key: KvKey): Promise<KvEntryMaybe<T>>;
  delete(key: KvKey): Promise<void>;
  atomic(): KvAtomic;
  list<T>(selector: { prefix: KvKey }): AsyncIterable<{ key: KvKey; value: T }>;
}

/** Optimistic-concurrency attempts per update before giving up; conflicts need a racing writer each time. */
export const KV_MAX_ATTEMPTS = 100;

/** A KV record: the labels plus the `onceKey`s already applied. */
interface StoredLabels extends Labels {
  applied?: string[];
}

/**
 * `onceKey`s remembered per agent (oldest dropped first). Keys are 64-hex hashes, so this bounds the
 * record far below Deno KV's 64 KiB value limit; a forgotten key only means one more (idempotent) union.
 */
export const MAX_ONCE_KEYS = 256;

/** Pause before retrying a commit that hit a locked local database (SQLite busy), in ms. */
const LOCKED_BACKOFF_MS = 2;

/** A store failure: an update that lost the race `KV_MAX_ATTEMPTS` times in a row, a limit, ... */
export class AgentLabelStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentLabelStoreError";
  }
}

/** An update refused because it would pass a store limit (nothing was changed). */
export class AgentLabelLimitError extends AgentLabelStoreError {
  readonly limit: "MAX_AGENT_TAGS" | "MAX_AGENTS";
  readonly value: number;
  constructor(limit: "MAX_AGENT_TAGS" | "MAX_AGENTS", value: number, message: string) {
    super(message);
    this.name = "AgentLabelLimitError";
    this.limit = limit;
    this.value = value;
  }
}

/**
 * Deno KV store. Keys are `[...prefix, agentId]`; values `{secrecy, integrity}`. Each update reads
 * the entry, computes the new labels and commits with a versionstamp check, retrying on conflict.
 * {@link MAX_AGENT_TAGS} per set keeps a record well under Deno KV's 64 KiB value limit for
 * tags of ordinary length; a longer record fails the commit, which is refused the same way.
 * The caller owns the `Deno.Kv` handle (and closes it).
 *
 * @example
 * ```ts
 * const kv = await Deno.openKv(":memory:"); // needs --unstable-kv (deno.json "unstable": ["kv"])
 * const store = new DenoKvAgentLabelStore(kv);
 * await store.propagate("agent-1", { secrecy: ["private:acme"], integrity: [] });
 * kv.close();
 * ```
 */
export class DenoKvAgentLabelStore implements AgentLabelStore {
  readonly #kv: KvLike;
  readonly #prefix: KvKey;
  readonly #maxTags: number;

  constructor(kv: KvLike, prefix: KvKey = ["difc", "agent-labels"], maxTags = MAX_AGENT_TAGS) {
    this.#kv = kv;
    this.#prefix = prefix;
    this.#maxTags = maxTags;
  }

  #key(agentId: string): KvKey {
    return [...this.#prefix, agentId];
  }

  async get(agentId: string): Promise<Labels> {
    const e = await this.#kv.get<Labels>(this.#key(agentId));
    return e.value
      ? { secrecy: tagSet(e.value.secrecy), integrity: tagSet(e.value.integrity) }
      : { secrecy: [], integrity: [] };
  }

  async #update(agentId: string, fn: (cur: Labels) => Labels, onceKey?: string): Promise<Labels> {
    const key = this.#key(agentId);
    for (let attempt = 0; attempt < KV_MAX_ATTEMPTS; attempt++) {
      const e = await this.#kv.get<StoredLabels>(key);
      const cur: StoredLabels = e.value ?? { secrecy: [], integrity: [] };
      const applied = cur.applied ?? [];
      if (onceKey !== undefined && applied.includes(onceKey)) return copyLabels(cur);
      const next: StoredLabels = { ...checkTagLimit(agentId, fn(cur), this.#maxTags) };
      const nextApplied = appendOnceKey(applied, onceKey);
      if (nextApplied.length > 0) next.applied = nextApplied;
      const unchanged = e.versionstamp !== null && onceKey === undefined &&
        sameTags(cur.secrecy, next.secrecy) &&
        sameTags(cur.integrity, next.integrity);
      if (unchanged) return copyLabels(next);
      let ok = false;
      try {
        ok =
          (await this.#kv.atomic().check({ key, versionstamp: e.versionstamp }).set(key, next).commit()).ok;
      } catch (err) {
        // A local SQLite-backed KV shared by several handles or processes reports contention as
        // "database is locked": wait briefly and retry like a lost race. Anything else is real.
        if (!/database is locked/i.test(String((err as Error)?.message))) throw err;
        await new Promise((r) => setTimeout(r, LOCKED_BACKOFF_MS * (1 + Math.random())));
      }
      if (ok) return copyLabels(next);
    }
    throw new AgentLabelStoreError(
      `agent label update for ${JSON.stringify(agentId)} lost ${KV_MAX_ATTEMPTS} consecutive write races`,
    );
  }

  addLabels(agentId: string, labels: Labels, onceKey?: string): Promise<Labels> {
    return this.#update(agentId, (cur) => mergeAgentLabels(cur, labels), onceKey);
  }

  propagate(agentId: string, overall: Labels): Promise<Labels> {
    return this.#update(agentId, (cur) => propagateLabels(cur, overall));
  }

  async snapshot(): Promise<Record<string, Labels>> {
    const out: Record<string, Labels> = {};
    for await (const e of this.#kv.list<Labels>({ prefix: this.#prefix })) {
      out[String(e.key[e.key.length - 1])] = {
        secrecy: tagSet(e.value.secrecy),
        integrity: tagSet(e.value.integrity),
      };
    }
    return out;
  }

  async reset(agentId: string): Promise<Labels> {
    const before = await this.get(agentId);
    await this.#kv.delete(this.#key(agentId));
    return before;
  }
}
