/**
 * A second tier for the `call_backend` cache (`backend_cache.ts`), shared by every isolate that
 * reaches the same Cache API: on Cloudflare Workers, the isolates of one data center. An isolate's
 * own cache starts empty; with this tier its first lookup of a repository another isolate already
 * asked about is answered from the data center's cache instead of the upstream.
 *
 * The Cache API is shared with every other Worker on the same zone, so nothing in it is trusted
 * for being there:
 * - the entry's URL is an HMAC-SHA-256 of the lookup under a key derived from the operator's secret,
 *   so nobody without the secret can tell which lookup an entry answers or place one for a lookup;
 * - the body is AES-256-GCM under a second derived key, with the lookup itself as additional data: an
 *   entry that was forged, altered, cut short, or copied from another lookup's URL fails to open and
 *   counts as a miss (`rejected`), and the upstream is asked as if nothing were kept;
 * - the expiry time is inside the sealed body: a reader never uses an entry past it, whatever the
 *   cache's own `max-age` did, and never longer than its own server's TTL.
 * Answers are upstream metadata fetched with the gateway's own credentials (the same for every agent,
 * see the README's "call_backend cache"); sealing them also keeps them from anyone who can read the
 * zone's cache. A read that takes longer than {@link SHARED_GET_TIMEOUT_MS} or fails counts as a
 * miss; a write that fails or takes as long is dropped. Neither ever fails a guard call.
 *
 * @module
 */
import { isObject } from "../util.ts";

/**
 * Longest wait for the shared cache: a read that takes longer is a miss (the lookup goes to the
 * upstream), a write that takes longer is given up (the lookup's answer is not held back).
 */
export const SHARED_GET_TIMEOUT_MS = 1000;
/** Shortest secret accepted: 32 characters. */
export const MIN_SHARED_SECRET_LENGTH = 32;
/**
 * Largest entry body read: the cache keeps answers of at most `BACKEND_CACHE_MAX_ENTRY_BYTES` (1 Mi
 * UTF-16 units of JSON, at most 3 MiB of UTF-8) plus the sealing; anything larger is not ours.
 */
const MAX_ENTRY_BODY_BYTES = 3 * 1024 * 1024 + 1024;
/** The origin of every entry's URL (never resolved: `.invalid`). */
const ENTRY_ORIGIN = "https://backend-cache.mcp-edge-guard.invalid/v1/";
const IV_BYTES = 12;
const UTF8 = new TextEncoder();
const UTF8_DECODER = new TextDecoder("utf-8", { fatal: true });

/** What {@link SharedAnswerStore.get} found. */
export interface SharedAnswer {
  value: unknown;
  /** Wall-clock ms (`Date.now()`) after which the answer must not be used. */
  expiresAt: number;
}

/** Counters for tests and benchmarks. */
export interface SharedAnswerStats {
  hits: number;
  misses: number;
  /** Entries found that failed to open (forged, altered, another lookup's) or had expired. */
  rejected: number;
  /** Lookups given up after {@link SHARED_GET_TIMEOUT_MS} or a cache error. */
  failed: number;
  puts: number;
  /** Writes the cache refused or failed. */
  putsFailed: number;
}

/** The shared tier as the `call_backend` cache uses it. Neither method ever rejects. */
export interface SharedAnswerStore {
  get(key: string): Promise<SharedAnswer | undefined>;
  put(key: string, value: unknown, ttlMs: number): Promise<void>;
  stats(): SharedAnswerStats;
}

/** The part of a Cache API `Cache` this tier uses. */
export interface CacheLike {
  match(request: string): Promise<Response | undefined>;
  put(request: string, response: Response): Promise<void>;
}

/** Options of {@link sealedCacheStore}. */
export interface SealedCacheOptions {
  /** Wall clock in ms; default `Date.now`. */
  now?: () => number;
  /** Default {@link SHARED_GET_TIMEOUT_MS}. */
  getTimeoutMs?: number;
}

async function deriveKeys(secret: string): Promise<{ name: CryptoKey; seal: CryptoKey }> {
  const base = await crypto.subtle.importKey("raw", UTF8.encode(secret), "HKDF", false, ["deriveKey"]);
  const derive = (info: string, alg: HmacImportParams | AesKeyGenParams, usages: KeyUsage[]) =>
    crypto.subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: UTF8.encode(info) },
      base,
      alg,
      false,
      usages,
    );
  const [name, seal] = await Promise.all([
    derive("mcp-edge-guard backend cache v1: entry name", { name: "HMAC", hash: "SHA-256", length: 256 }, [
      "sign",
    ]),
    derive("mcp-edge-guard backend cache v1: entry body", { name: "AES-GCM", length: 256 }, [
      "encrypt",
      "decrypt",
    ]),
  ]);
  return { name, seal };
}

function hex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `p`, or undefined once `ms` have passed (the timer is cleared either way). */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * The shared tier over a Cache API cache, sealed with keys derived from `secret` (at least
 * {@link MIN_SHARED_SECRET_LENGTH} characters; every isolate that is to share entries needs the same).
 *
 * @example
 * ```ts
 * const shared = await sealedCacheStore(await caches.open("mcp-edge-guard"), env.MCP_EDGE_GUARD_CACHE_SECRET);
 * const cache = new BackendCache({ shared });
 * ```
 * @throws {Error} when the secret is too short.
 */
export async function sealedCacheStore(
  cache: CacheLike,
  secret: string,
  opts: SealedCacheOptions = {},
): Promise<SharedAnswerStore> {
  if (typeof secret !== "string" || secret.length < MIN_SHARED_SECRET_LENGTH) {
    throw new Error(
      `the shared call_backend cache secret must be at least ${MIN_SHARED_SECRET_LENGTH} characters ` +
        "(for example: openssl rand -hex 32)",
    );
  }
  const keys = await deriveKeys(secret);
  const now = opts.now ?? Date.now;
  const getTimeoutMs = opts.getTimeoutMs ?? SHARED_GET_TIMEOUT_MS;
  const counts: SharedAnswerStats = { hits: 0, misses: 0, rejected: 0, failed: 0, puts: 0, putsFailed: 0 };
  const entryUrl = async (key: string) =>
    ENTRY_ORIGIN + hex(await crypto.subtle.sign("HMAC", keys.name, UTF8.encode(key)));

  /** The answer sealed in `body` for `key`, or undefined when it does not open or has expired. */
  const open = async (key: string, body: ArrayBuffer): Promise<SharedAnswer | undefined> => {
    if (body.byteLength <= IV_BYTES) return undefined;
    let plain: ArrayBuffer;
    try {
      plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: new Uint8Array(body, 0, IV_BYTES), additionalData: UTF8.encode(key) },
        keys.seal,
        new Uint8Array(body, IV_BYTES),
      );
    } catch {
      return undefined; // not sealed by a holder of the secret for this lookup
    }
    const entry = JSON.parse(UTF8_DECODER.decode(plain)) as unknown;
    if (!isObject(entry) || typeof entry.expiresAt !== "number" || !("value" in entry)) return undefined;
    return entry.expiresAt > now() ? { value: entry.value, expiresAt: entry.expiresAt } : undefined;
  };

  const get = async (key: string): Promise<SharedAnswer | undefined> => {
    const res = await cache.match(await entryUrl(key));
    if (res === undefined) {
      counts.misses++;
      return undefined;
    }
    const length = Number(res.headers.get("content-length") ?? 0);
    const body = length > MAX_ENTRY_BODY_BYTES ? null : await res.arrayBuffer();
    if (body === null) await res.body?.cancel();
    const found = body === null || body.byteLength > MAX_ENTRY_BODY_BYTES ? undefined : await open(key, body);
    if (found === undefined) counts.rejected++;
    else counts.hits++;
    return found;
  };

  return {
    async get(key) {
      try {
        const found = await withTimeout(get(key).then((a) => ({ a })), getTimeoutMs);
        if (found === undefined) counts.failed++;
        return found?.a;
      } catch {
        counts.failed++;
        return undefined;
      }
    },
    async put(key, value, ttlMs) {
      try {
        const expiresAt = now() + ttlMs;
        const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
        const sealed = await crypto.subtle.encrypt(
          { name: "AES-GCM", iv, additionalData: UTF8.encode(key) },
          keys.seal,
          UTF8.encode(JSON.stringify({ expiresAt, value })),
        );
        const body = new Uint8Array(IV_BYTES + sealed.byteLength);
        body.set(iv);
        body.set(new Uint8Array(sealed), IV_BYTES);
        const headers = {
          "content-type": "application/octet-stream",
          "cache-control": `max-age=${Math.max(1, Math.ceil(ttlMs / 1000))}`,
        };
        const put = cache.put(await entryUrl(key), new Response(body, { headers })).then(() => true);
        if (await withTimeout(put, getTimeoutMs)) counts.puts++;
        else counts.putsFailed++;
      } catch {
        counts.putsFailed++;
      }
    },
    stats: () => ({ ...counts }),
  };
}
