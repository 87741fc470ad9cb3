/**
 * Host-side cache of guard `call_backend` answers, shared by every request of one isolate.
 *
 * A guard asks the upstream for metadata (the demo and GitHub guards: a repository's visibility) on
 * every fresh instance; this cache lets concurrent and repeated lookups share one upstream call:
 *
 * - keyed by server id, the upstream protocol version, tool name and the canonical JSON of the
 *   arguments ({@link canonicalJson}: object keys sorted, so `{a,b}` and `{b,a}` are one entry);
 * - single-flight: while a lookup is in flight, identical lookups wait for it instead of calling the
 *   upstream again. The shared upstream call is aborted only when every waiter has given up;
 * - a TTL per server (`mcpServers.<id>.backendCacheTtl`, seconds; 0 disables the cache for that
 *   server, which then calls the upstream every time exactly as without a cache);
 * - bounded: at most {@link BACKEND_CACHE_MAX_ENTRIES} entries and {@link BACKEND_CACHE_MAX_BYTES} of
 *   JSON text, least recently used first out; an answer above {@link BACKEND_CACHE_MAX_ENTRY_BYTES}
 *   is used once and not kept;
 * - only successes are kept: a rejected lookup (transport error, JSON-RPC error, abort) and a tool
 *   result with `isError: true` are handed to their waiters and forgotten;
 * - optionally a second tier shared by the isolates of one location (`shared`, see
 *   `shared_answers.ts`: on Workers, the data center's Cache API, sealed with the operator's secret):
 *   a lookup this isolate has no live answer for asks it before the upstream, and an upstream answer
 *   this cache keeps is written there too (awaited, so the first lookup pays one cache write). An
 *   answer from it is kept here until its own expiry or this server's TTL, whichever is first.
 *
 * Cached answers are guard inputs only: the proxy never relays them to an agent. They are frozen,
 * so no guard host can change what another request reads.
 *
 * @module
 */
import { canonicalJson } from "../difc/payload.ts";
import { isObject, raceSignal } from "../util.ts";
import type { SharedAnswerStore } from "./shared_answers.ts";

/** Most answers kept. */
export const BACKEND_CACHE_MAX_ENTRIES = 4096;
/** Most JSON text kept over all answers (UTF-16 code units of the answers and keys, about bytes). */
export const BACKEND_CACHE_MAX_BYTES = 16 * 1024 * 1024;
/** An answer larger than this (JSON text) is used once and not kept. */
export const BACKEND_CACHE_MAX_ENTRY_BYTES = 1024 * 1024;
/** `backendCacheTtl` when a server does not set one, in ms. */
export const DEFAULT_BACKEND_CACHE_TTL_MS = 60_000;

/** What identifies one lookup. */
export interface BackendLookup {
  serverId: string;
  /** The upstream protocol version the lookup is sent with (answers may differ in shape). */
  protocolVersion?: string;
  tool: string;
  args: unknown;
  /**
   * What else names the upstream in the shared tier's key (the upstream URL): two gateways that
   * share a secret but give one server id to different upstreams never share answers.
   */
  scope?: string;
}

/** Bounds and clock (tests shrink them). */
export interface BackendCacheOptions {
  maxEntries?: number;
  maxBytes?: number;
  maxEntryBytes?: number;
  /** Milliseconds clock; default `performance.now`. */
  now?: () => number;
  /** The tier shared with other isolates; none by default. */
  shared?: SharedAnswerStore;
  /** Wall clock in ms for the shared tier's expiry times; default `Date.now`. */
  wallNow?: () => number;
}

/** Counters for tests and benchmarks. */
export interface BackendCacheStats {
  hits: number;
  /** Lookups that joined a call already in flight. */
  joined: number;
  /** Upstream calls made. */
  misses: number;
  entries: number;
  bytes: number;
}

interface Entry {
  value: unknown;
  expires: number;
  bytes: number;
}

interface Flight {
  promise: Promise<unknown>;
  waiters: number;
  ac: AbortController;
}

function deepFreeze(v: unknown): void {
  if (typeof v !== "object" || v === null || Object.isFrozen(v)) return;
  Object.freeze(v);
  for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
}

/**
 * The cache. One per gateway (isolate); {@link lookup} is the whole interface.
 *
 * @example
 * ```ts
 * const cache = new BackendCache();
 * const repo = await cache.lookup(
 *   { serverId: "github", tool: "get_repo", args: { repo: "acme/web" } },
 *   60_000,
 *   (signal) => proxy.callBackend(ref, "get_repo", { repo: "acme/web" }, signal),
 *   callSignal,
 * );
 * ```
 */
export class BackendCache {
  readonly #entries = new Map<string, Entry>();
  readonly #flights = new Map<string, Flight>();
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #maxEntryBytes: number;
  readonly #now: () => number;
  readonly #shared: SharedAnswerStore | undefined;
  readonly #wallNow: () => number;
  #bytes = 0;
  #hits = 0;
  #joined = 0;
  #misses = 0;

  constructor(opts: BackendCacheOptions = {}) {
    this.#maxEntries = opts.maxEntries ?? BACKEND_CACHE_MAX_ENTRIES;
    this.#maxBytes = opts.maxBytes ?? BACKEND_CACHE_MAX_BYTES;
    this.#maxEntryBytes = Math.min(opts.maxEntryBytes ?? BACKEND_CACHE_MAX_ENTRY_BYTES, this.#maxBytes);
    this.#now = opts.now ?? (() => performance.now());
    this.#shared = opts.shared;
    this.#wallNow = opts.wallNow ?? Date.now;
  }

  /** The cache key of a lookup. */
  static key(l: BackendLookup): string {
    return `${l.serverId}\n${l.protocolVersion ?? ""}\n${l.tool}\n${canonicalJson(l.args ?? {})}`;
  }

  /**
   * The answer to `l`: a live cached one, the one of an identical call in flight, or `fetch`'s.
   * `ttlMs` 0 calls `fetch` with `signal` and keeps nothing. Rejects with `signal`'s reason when it
   * aborts first; the shared upstream call itself is aborted once no caller waits for it.
   */
  lookup(
    l: BackendLookup,
    ttlMs: number,
    fetch: (signal: AbortSignal) => Promise<unknown>,
    signal: AbortSignal,
  ): Promise<unknown> {
    if (!(ttlMs > 0)) return fetch(signal);
    const key = BackendCache.key(l);
    const hit = this.#entries.get(key);
    if (hit) {
      this.#entries.delete(key);
      if (hit.expires > this.#now()) {
        this.#entries.set(key, hit); // most recently used last
        this.#hits++;
        return signal.aborted ? Promise.reject(signal.reason) : Promise.resolve(hit.value);
      }
      this.#bytes -= hit.bytes;
    }
    let flight = this.#flights.get(key);
    if (flight) {
      this.#joined++;
    } else {
      this.#misses++;
      const ac = new AbortController();
      const f: Flight = { promise: Promise.resolve(), waiters: 0, ac };
      f.promise = (async () => {
        try {
          if (this.#shared !== undefined) {
            return await this.#viaShared(this.#shared, key, l, ttlMs, fetch, ac.signal);
          }
          const value = await fetch(ac.signal);
          this.#store(key, value, ttlMs, this.#keepable(key, value));
          return value;
        } finally {
          if (this.#flights.get(key) === f) this.#flights.delete(key);
        }
      })();
      f.promise.catch(() => {}); // every waiter sees the rejection through raceSignal()
      this.#flights.set(key, f);
      flight = f;
    }
    const f = flight;
    f.waiters++;
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      if (--f.waiters === 0 && this.#flights.get(key) === f) {
        // Nobody waits any more: stop the upstream call, and let the next lookup start afresh.
        this.#flights.delete(key);
        f.ac.abort(signal.reason);
      }
    };
    return raceSignal(f.promise, signal, leave).finally(() => {
      if (!left) {
        left = true;
        f.waiters--;
      }
    });
  }

  /**
   * The live answer `lookup(l, ttlMs, …)` would give now without calling anything (the very value
   * it would give, made most recently used), or undefined when none is kept.
   */
  peek(l: BackendLookup, ttlMs: number): unknown {
    if (!(ttlMs > 0)) return undefined;
    const key = BackendCache.key(l);
    const hit = this.#entries.get(key);
    if (hit === undefined || !(hit.expires > this.#now())) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, hit);
    return hit.value;
  }

  /** Counters and sizes now. */
  stats(): BackendCacheStats {
    return {
      hits: this.#hits,
      joined: this.#joined,
      misses: this.#misses,
      entries: this.#entries.size,
      bytes: this.#bytes,
    };
  }

  /** Drops every kept answer (a call in flight still keeps its answer when it lands). */
  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  /**
   * A lookup this isolate has no live answer for, through the shared tier: its live answer, or the
   * upstream's, which is then written there when this cache would keep it.
   */
  async #viaShared(
    shared: SharedAnswerStore,
    key: string,
    l: BackendLookup,
    ttlMs: number,
    fetch: (signal: AbortSignal) => Promise<unknown>,
    signal: AbortSignal,
  ): Promise<unknown> {
    const sharedKey = `${l.scope ?? ""}\n${key}`;
    const found = await raceSignal(shared.get(sharedKey), signal);
    if (found !== undefined) {
      const left = Math.min(ttlMs, found.expiresAt - this.#wallNow());
      this.#store(key, found.value, left, this.#keepable(key, found.value));
      return found.value;
    }
    const value = await fetch(signal);
    const bytes = this.#keepable(key, value);
    if (bytes !== undefined) await shared.put(sharedKey, value, ttlMs);
    this.#store(key, value, ttlMs, bytes);
    return value;
  }

  /**
   * The bytes an answer counts when kept (its JSON text and key), or undefined when it is not kept:
   * an error result, not JSON, or above the per-entry bound.
   */
  #keepable(key: string, value: unknown): number | undefined {
    if (isObject(value) && value.isError === true) return undefined;
    const json = JSON.stringify(value);
    if (json === undefined) return undefined;
    const bytes = json.length + key.length;
    return bytes > this.#maxEntryBytes ? undefined : bytes;
  }

  #store(key: string, value: unknown, ttlMs: number, bytes: number | undefined): void {
    if (bytes === undefined || !(ttlMs > 0)) return;
    deepFreeze(value);
    const old = this.#entries.get(key);
    if (old) {
      this.#entries.delete(key);
      this.#bytes -= old.bytes;
    }
    this.#entries.set(key, { value, expires: this.#now() + ttlMs, bytes });
    this.#bytes += bytes;
    this.#evict();
  }

  /** Drops expired entries, then least recently used ones, until within both bounds. */
  #evict(): void {
    if (this.#entries.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) return;
    const now = this.#now();
    for (const [k, e] of this.#entries) {
      if (e.expires <= now) {
        this.#entries.delete(k);
        this.#bytes -= e.bytes;
      }
    }
    for (const [k, e] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(k);
      this.#bytes -= e.bytes;
    }
  }
}
