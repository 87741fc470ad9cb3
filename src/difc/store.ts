/**
 * Agent label stores (guard-abi.md §3.6): one label pair per agent ID, starting empty, changed only by
 * the two monotonic operations the DIFC model defines:
 * - `addLabels` (after `label_agent`): secrecy ∪= tags, integrity ∪= tags;
 * - `propagate` (propagate-mode reads): secrecy ∪= overall.secrecy, integrity ∩= overall.integrity.
 * Every update is atomic per agent, so concurrent tool calls never lose each other's labels.
 *
 * `MemoryAgentLabelStore` lives in one isolate; `DenoKvAgentLabelStore` persists in Deno KV (Deno,
 * Deno Deploy) with versionstamp-checked atomic writes and retry.
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
  /** Every known agent's labels, e.g. for a reflect endpoint. */
  snapshot(): Promise<Record<string, Labels>>;
}

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
 * In-memory store for one isolate. Updates are synchronous inside the event loop, hence atomic.
 *
 * @example
 * ```ts
 * const store = new MemoryAgentLabelStore();
 * await store.addLabels("agent-1", { secrecy: ["private:acme"], integrity: [] });
 * ```
 */
export class MemoryAgentLabelStore implements AgentLabelStore {
  readonly #agents = new Map<string, Labels>();
  readonly #applied = new Map<string, Set<string>>();

  get(agentId: string): Promise<Labels> {
    const l = this.#agents.get(agentId);
    return Promise.resolve(l ? copyLabels(l) : { secrecy: [], integrity: [] });
  }

  #update(agentId: string, fn: (cur: Labels) => Labels): Promise<Labels> {
    const cur = this.#agents.get(agentId) ?? { secrecy: [], integrity: [] };
    const next = fn(cur);
    this.#agents.set(agentId, next);
    return Promise.resolve(copyLabels(next));
  }

  addLabels(agentId: string, labels: Labels, onceKey?: string): Promise<Labels> {
    if (onceKey !== undefined) {
      const keys = this.#applied.get(agentId) ?? new Set<string>();
      this.#applied.set(agentId, keys);
      if (keys.has(onceKey)) return this.get(agentId);
      keys.add(onceKey);
    }
    return this.#update(agentId, (cur) => mergeAgentLabels(cur, labels));
  }

  propagate(agentId: string, overall: Labels): Promise<Labels> {
    return this.#update(agentId, (cur) => propagateLabels(cur, overall));
  }

  snapshot(): Promise<Record<string, Labels>> {
    const out: Record<string, Labels> = {};
    for (const [id, l] of this.#agents) out[id] = copyLabels(l);
    return Promise.resolve(out);
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

/** An update that lost the race `KV_MAX_ATTEMPTS` times in a row. */
export class AgentLabelStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentLabelStoreError";
  }
}

/**
 * Deno KV store. Keys are `[...prefix, agentId]`; values `{secrecy, integrity}`. Each update reads
 * the entry, computes the new labels and commits with a versionstamp check, retrying on conflict.
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

  constructor(kv: KvLike, prefix: KvKey = ["difc", "agent-labels"]) {
    this.#kv = kv;
    this.#prefix = prefix;
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
      const next: StoredLabels = { ...fn(cur) };
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
}
