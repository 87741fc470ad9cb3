/**
 * Agent labels in Cloudflare Durable Objects: one object per agent (`idFromName("agent:" + id)`),
 * so every agent's labels have a single, strongly consistent owner wherever the Worker runs.
 *
 * - {@link AgentLabelsObject} is the Durable Object class (the Worker exports it as `AgentLabels`).
 *   It keeps the agent's record in memory, loaded once under `blockConcurrencyWhile`, and applies
 *   every update synchronously before writing it back, so concurrent tool calls are serialized by
 *   the object itself and never lose each other's labels. The merge rules are store.ts's
 *   ({@link mergeAgentLabels}, {@link propagateLabels}): monotonic union / intersection only.
 * - {@link DurableObjectAgentLabelStore} is the {@link AgentLabelStore} the gateway uses; it talks
 *   to the objects through their `fetch` (no `cloudflare:workers` import, so this module also
 *   type-checks and loads under Deno).
 * - One extra object (`index`) remembers which agents exist, for `snapshot()`. `reset(agent)` empties
 *   the agent's object (labels and once-keys) but keeps it in the index: other isolates may still
 *   hold the agent as registered and would not register it again, so removing it could hide its next
 *   labels from the list. A reset agent is listed with empty labels until it calls again.
 *
 * Limits (store.ts's module doc): an agent object refuses an update that would pass
 * `MAX_AGENT_TAGS` tags per set, and the index refuses to register an agent beyond
 * {@link MAX_AGENTS} (its list is one stored value: 10,000 ids of at most 128 characters stay under
 * the SQLite-backed storage's 2 MB value limit). Both answer HTTP 422 with `{error, limit, value}`,
 * which the store turns back into {@link AgentLabelLimitError}; nothing is evicted.
 *
 * @module
 */
import type { Labels } from "./labels.ts";
import { tagSet } from "./labels.ts";
import {
  AgentLabelLimitError,
  type AgentLabelStore,
  AgentLabelStoreError,
  appendOnceKey,
  checkTagLimit,
  copyLabels,
  MAX_AGENTS,
  mergeAgentLabels,
  propagateLabels,
} from "./store.ts";

// ---- structural subsets of the Workers runtime types (no @cloudflare/workers-types needed) ----

/** The part of `DurableObjectStorage` the objects use. */
export interface DurableObjectStorageLike {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
}

/** The part of `DurableObjectState` the objects use. */
export interface DurableObjectStateLike {
  storage: DurableObjectStorageLike;
  blockConcurrencyWhile<T>(fn: () => Promise<T>): Promise<T>;
}

/** A Durable Object stub: only `fetch` is used. */
export interface DurableObjectStubLike {
  fetch(input: string, init?: RequestInit): Promise<Response>;
}

/** The part of `DurableObjectNamespace` the store uses. */
export interface DurableObjectNamespaceLike {
  idFromName(name: string): unknown;
  get(id: never): DurableObjectStubLike;
}

// ---- the wire protocol between the store and the objects ----

/** Name prefix of per-agent objects; the index object is named {@link INDEX_OBJECT}. */
const AGENT_OBJECT_PREFIX = "agent:";
/** Name of the object listing known agents (cannot collide: agent objects carry the prefix). */
const INDEX_OBJECT = "index";
/** Storage key of an agent object's record. */
const RECORD_KEY = "labels";
/** Storage key of the index object's agent list. */
const AGENTS_KEY = "agents";
/** Status of an operation refused by a limit (the body names it). */
const LIMIT_STATUS = 422;
/** Agent ids remembered per store instance as already registered (a cache: forgetting costs a round trip). */
const MAX_REGISTERED_CACHE = 1_000;
/** Stub URLs need a host; the object never looks at it. */
const OBJECT_ORIGIN = "https://agent-labels.internal";
/** One operation sent to an agent object. */
type AgentOp =
  | { op: "get" }
  | { op: "reset" }
  | { op: "add"; labels: Labels; onceKey?: string; agentId?: string }
  | { op: "propagate"; overall: Labels; agentId?: string };

/** One operation sent to the index object. */
type IndexOp = { op: "register"; agentId: string } | { op: "list" };

/** An agent object's stored record. */
interface AgentRecord extends Labels {
  applied: string[];
}

function isLabels(v: unknown): v is Labels {
  const l = v as Labels;
  return typeof l === "object" && l !== null && Array.isArray(l.secrecy) && Array.isArray(l.integrity) &&
    [...l.secrecy, ...l.integrity].every((t) => typeof t === "string");
}

/**
 * The Durable Object class holding one agent's labels (or, for the `index` object, the agent list).
 * Requests are `POST` with a JSON operation; answers are JSON. Bad operations get a 400 naming them.
 *
 * @example
 * ```ts
 * // worker.ts
 * export class AgentLabels extends AgentLabelsObject {}
 * // wrangler.toml: [[durable_objects.bindings]] name = "AGENT_LABELS", class_name = "AgentLabels"
 * ```
 */
export class AgentLabelsObject {
  readonly #storage: DurableObjectStorageLike;
  #record: AgentRecord = { secrecy: [], integrity: [], applied: [] };
  #agents: string[] = [];

  constructor(state: DurableObjectStateLike, _env?: unknown) {
    this.#storage = state.storage;
    state.blockConcurrencyWhile(async () => {
      const rec = await this.#storage.get<AgentRecord>(RECORD_KEY);
      if (rec) this.#record = { ...copyLabels(rec), applied: [...(rec.applied ?? [])] };
      this.#agents = (await this.#storage.get<string[]>(AGENTS_KEY)) ?? [];
    });
  }

  /** Handles one operation (see the module doc). */
  async fetch(request: Request): Promise<Response> {
    let body: AgentOp | IndexOp;
    try {
      body = await request.json();
    } catch {
      return Response.json({ error: "agent label object: body is not JSON" }, { status: 400 });
    }
    // Each branch changes the in-memory state synchronously, then persists it: operations that
    // arrive while a write is in flight already see the new state.
    switch (body?.op) {
      case "get":
        return Response.json(copyLabels(this.#record));
      case "reset": {
        const before = copyLabels(this.#record);
        this.#record = { secrecy: [], integrity: [], applied: [] };
        await this.#storage.put(RECORD_KEY, this.#record);
        return Response.json(before);
      }
      case "add": {
        if (!isLabels(body.labels)) return badOp("add needs labels {secrecy, integrity}");
        const once = body.onceKey;
        if (once !== undefined && this.#record.applied.includes(once)) {
          return Response.json(copyLabels(this.#record));
        }
        const next = mergeAgentLabels(this.#record, body.labels);
        const applied = appendOnceKey(this.#record.applied, once);
        return await this.#save({ ...next, applied }, body.agentId);
      }
      case "propagate":
        if (!isLabels(body.overall)) return badOp("propagate needs overall {secrecy, integrity}");
        return await this.#save({
          ...propagateLabels(this.#record, body.overall),
          applied: this.#record.applied,
        }, body.agentId);
      case "register":
        if (typeof body.agentId !== "string") return badOp("register needs agentId");
        if (!this.#agents.includes(body.agentId) && this.#agents.length >= MAX_AGENTS) {
          return limitReached(
            new AgentLabelLimitError(
              "MAX_AGENTS",
              MAX_AGENTS,
              `the agent index holds ${MAX_AGENTS} agents (MAX_AGENTS); agent ${
                JSON.stringify(body.agentId)
              } cannot be recorded and the call is denied`,
            ),
          );
        }
        if (!this.#agents.includes(body.agentId)) {
          this.#agents = [...this.#agents, body.agentId];
          await this.#storage.put(AGENTS_KEY, this.#agents);
        }
        return Response.json({ ok: true });
      case "list":
        return Response.json(this.#agents);
      default:
        return badOp(`unknown operation ${JSON.stringify((body as { op?: unknown })?.op)}`);
    }
  }

  /** Persists `next` unless it passes `MAX_AGENT_TAGS` (`agentId` only names it in the error). */
  async #save(next: AgentRecord, agentId = "(unnamed)"): Promise<Response> {
    try {
      checkTagLimit(String(agentId), next);
    } catch (e) {
      if (e instanceof AgentLabelLimitError) return limitReached(e);
      throw e;
    }
    this.#record = next;
    await this.#storage.put(RECORD_KEY, next);
    return Response.json(copyLabels(next));
  }
}

function limitReached(e: AgentLabelLimitError): Response {
  return Response.json({ error: e.message, limit: e.limit, value: e.value }, { status: LIMIT_STATUS });
}

function badOp(message: string): Response {
  return Response.json({ error: `agent label object: ${message}` }, { status: 400 });
}

/**
 * {@link AgentLabelStore} over the `AgentLabels` Durable Object namespace: one object per agent.
 *
 * @example
 * ```ts
 * const store = new DurableObjectAgentLabelStore(env.AGENT_LABELS);
 * await store.addLabels("agent-1", { secrecy: ["private:acme/web"], integrity: [] });
 * ```
 */
export class DurableObjectAgentLabelStore implements AgentLabelStore {
  readonly #ns: DurableObjectNamespaceLike;
  /** Agents this isolate already registered in the index (saves a round trip per update). */
  readonly #registered = new Set<string>();

  constructor(namespace: DurableObjectNamespaceLike) {
    this.#ns = namespace;
  }

  async #call<T>(name: string, op: AgentOp | IndexOp): Promise<T> {
    const stub = this.#ns.get(this.#ns.idFromName(name) as never);
    const res = await stub.fetch(`${OBJECT_ORIGIN}/${op.op}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(op),
    });
    const text = await res.text();
    if (res.status === LIMIT_STATUS) {
      const body = JSON.parse(text) as { error: string; limit: AgentLabelLimitError["limit"]; value: number };
      throw new AgentLabelLimitError(body.limit, body.value, body.error);
    }
    if (!res.ok) {
      throw new AgentLabelStoreError(
        `agent label object ${JSON.stringify(name)} answered ${res.status} to "${op.op}": ${
          text.slice(0, 200)
        }`,
      );
    }
    return JSON.parse(text) as T;
  }

  async #agent(agentId: string, op: AgentOp): Promise<Labels> {
    if (op.op !== "get" && op.op !== "reset" && !this.#registered.has(agentId)) {
      await this.#call(INDEX_OBJECT, { op: "register", agentId });
      if (this.#registered.size >= MAX_REGISTERED_CACHE) this.#registered.clear();
      this.#registered.add(agentId);
    }
    const l = await this.#call<Labels>(AGENT_OBJECT_PREFIX + agentId, op);
    return { secrecy: tagSet(l.secrecy), integrity: tagSet(l.integrity) };
  }

  get(agentId: string): Promise<Labels> {
    return this.#agent(agentId, { op: "get" });
  }

  addLabels(agentId: string, labels: Labels, onceKey?: string): Promise<Labels> {
    return this.#agent(agentId, { op: "add", labels, onceKey, agentId });
  }

  propagate(agentId: string, overall: Labels): Promise<Labels> {
    return this.#agent(agentId, { op: "propagate", overall, agentId });
  }

  async snapshot(): Promise<Record<string, Labels>> {
    const agents = await this.#call<string[]>(INDEX_OBJECT, { op: "list" });
    const labels = await Promise.all(agents.map((a) => this.get(a)));
    return Object.fromEntries(agents.map((a, i) => [a, labels[i]]));
  }

  reset(agentId: string): Promise<Labels> {
    return this.#agent(agentId, { op: "reset" });
  }
}
