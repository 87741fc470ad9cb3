/**
 * The shared tier of the `call_backend` cache (`src/mcp/shared_answers.ts`) over Deno's own Cache
 * API, and `BackendCache` using it as two isolates would. The attacker here is anyone else who can
 * write the same Cache API (another Worker on the zone): whatever they put there, under whichever
 * URL, a guard never sees it (MARKER-FORGED), and nothing they can read names a lookup or shows an
 * answer (MARKER-SECRET).
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { BackendCache, type BackendLookup } from "../../src/mcp/backend_cache.ts";
import {
  type CacheLike,
  MIN_SHARED_SECRET_LENGTH,
  sealedCacheStore,
  type SharedAnswerStore,
} from "../../src/mcp/shared_answers.ts";

const SECRET = "a".repeat(32) + "-test-secret";
const OTHER_SECRET = "b".repeat(40);
const live = () => new AbortController().signal;

/** What a test sees of Deno's real Cache API: the cache, and what was written to it (URL and body). */
interface RealCache {
  cache: CacheLike & Cache;
  writes: { url: string; body: Uint8Array<ArrayBuffer> }[];
}

/** Runs `fn` on Deno's real Cache API under a fresh name, recording every write; deletes it after. */
async function withRealCache(fn: (c: RealCache) => Promise<void>): Promise<void> {
  const name = `shared-answers-test-${crypto.randomUUID()}`;
  const inner = await caches.open(name);
  const writes: RealCache["writes"] = [];
  const cache = Object.assign(Object.create(inner) as Cache, {
    match: (req: string) => inner.match(req),
    put: async (req: string, res: Response) => {
      const body = new Uint8Array(await res.clone().arrayBuffer());
      writes.push({ url: req, body });
      await inner.put(req, res);
    },
  });
  try {
    await fn({ cache, writes });
  } finally {
    await caches.delete(name);
  }
}

const repoKey = (repo: string) => `scope\ngh\n\nget_repo\n{"repo":"${repo}"}`;

Deno.test("shared answers: what one store seals another with the same secret opens, until it expires", () =>
  withRealCache(async ({ cache }) => {
    let now = 1_000_000;
    const a = await sealedCacheStore(cache, SECRET, { now: () => now });
    const b = await sealedCacheStore(cache, SECRET, { now: () => now });
    const answer = { content: [{ type: "text", text: '{"visibility":"private"}' }] };
    await a.put(repoKey("acme/web"), answer, 60_000);
    assertEquals(await b.get(repoKey("acme/web")), { value: answer, expiresAt: 1_060_000 });
    assertEquals(await b.get(repoKey("acme/other")), undefined, "another lookup misses");
    now += 60_000;
    assertEquals(await b.get(repoKey("acme/web")), undefined, "past its sealed expiry: never used");
    assertEquals(b.stats(), { hits: 1, misses: 1, rejected: 1, failed: 0, puts: 0, putsFailed: 0 });
  }));

Deno.test("shared answers: forged, altered, cut or moved entries are refused (MARKER-FORGED never comes out)", () =>
  withRealCache(async ({ cache, writes }) => {
    const ours = await sealedCacheStore(cache, SECRET);
    // The attacker knows the URL of a lookup (the worst case) and writes there with its own key.
    await ours.put(repoKey("acme/web"), { visibility: "private" }, 60_000);
    await ours.put(repoKey("acme/public"), { visibility: "public" }, 60_000);
    const [web, pub] = writes.map((w) => w.url);
    const attacker = await sealedCacheStore(
      { match: () => Promise.resolve(undefined), put: (_u, res) => cache.put(web, res) },
      OTHER_SECRET,
    );
    await attacker.put(repoKey("acme/web"), { visibility: "public", note: "MARKER-FORGED" }, 60_000);
    const seen: unknown[] = [await ours.get(repoKey("acme/web"))];
    // Another lookup's authentic entry copied to this URL.
    await cache.put(web, new Response(writes[1].body));
    seen.push(await ours.get(repoKey("acme/web")));
    // One flipped byte, a cut body, an empty one, plain JSON.
    const good = writes[0].body;
    const flipped = good.slice();
    flipped[20] ^= 1;
    for (
      const body of [flipped, good.slice(0, good.length - 1), new Uint8Array(0), '{"visibility":"public"}']
    ) {
      await cache.put(web, new Response(body));
      seen.push(await ours.get(repoKey("acme/web")));
    }
    // Larger than any answer the call_backend cache keeps, even sealed with the secret: not read.
    await ours.put(repoKey("acme/big"), { pad: "x".repeat(4 << 20) }, 60_000);
    seen.push(await ours.get(repoKey("acme/big")));
    assertEquals(seen, Array(7).fill(undefined));
    assertEquals(ours.stats().rejected, 7);
    assertEquals(
      (await ours.get(repoKey("acme/public")))?.value,
      { visibility: "public" },
      "untouched entry",
    );
    assertEquals(pub === web, false);
  }));

Deno.test("shared answers: neither the URL nor the body shows the lookup or the answer (MARKER-SECRET)", () =>
  withRealCache(async ({ cache, writes }) => {
    const store = await sealedCacheStore(cache, SECRET);
    await store.put(repoKey("acme/MARKER-SECRET-repo"), { description: "MARKER-SECRET-text" }, 60_000);
    assertEquals(writes.length, 1);
    const { url, body } = writes[0];
    assertEquals(url.includes("MARKER"), false, url);
    assertEquals(new TextDecoder().decode(body).includes("MARKER"), false);
    assert(/^https:\/\/backend-cache\.mcp-edge-guard\.invalid\/v1\/[0-9a-f]{64}$/.test(url), url);
    // A store with another secret finds nothing at the URLs it would use.
    const other = await sealedCacheStore(cache, OTHER_SECRET);
    assertEquals(await other.get(repoKey("acme/MARKER-SECRET-repo")), undefined);
    assertEquals(other.stats().misses, 1);
  }));

Deno.test("shared answers: a slow or failing cache is a miss and a failed write is dropped; short secrets are refused", async () => {
  const hanging: CacheLike = {
    match: () => new Promise(() => {}),
    put: () => Promise.reject(new Error("full")),
  };
  const store = await sealedCacheStore(hanging, SECRET, { getTimeoutMs: 30 });
  assertEquals(await store.get(repoKey("acme/web")), undefined);
  await store.put(repoKey("acme/web"), { a: 1 }, 1000);
  const stalled = await sealedCacheStore(
    { match: () => new Promise(() => {}), put: () => new Promise(() => {}) },
    SECRET,
    { getTimeoutMs: 30 },
  );
  await stalled.put(repoKey("acme/web"), { a: 1 }, 1000); // returns: a write never holds the lookup
  assertEquals(stalled.stats().putsFailed, 1);
  const throwing: CacheLike = {
    match: () => Promise.reject(new Error("down")),
    put: () => Promise.resolve(),
  };
  const store2 = await sealedCacheStore(throwing, SECRET);
  assertEquals(await store2.get(repoKey("acme/web")), undefined);
  assertEquals(store.stats(), { hits: 0, misses: 0, rejected: 0, failed: 1, puts: 0, putsFailed: 1 });
  assertEquals(store2.stats().failed, 1);
  await assertRejects(
    () => sealedCacheStore(hanging, "x".repeat(MIN_SHARED_SECRET_LENGTH - 1)),
    Error,
    "at least 32 characters",
  );
});

/** A fetch that counts upstream calls. */
function upstream(answer: (n: number) => unknown) {
  let n = 0;
  return { fn: () => Promise.resolve(answer(++n)), calls: () => n };
}

const lookup = (repo: string, scope = "http://upstream-a/mcp"): BackendLookup => ({
  serverId: "gh",
  tool: "get_repo",
  args: { repo },
  scope,
});

Deno.test("backend cache + shared tier: a second isolate's first lookup is answered without the upstream", () =>
  withRealCache(async ({ cache }) => {
    const shared: SharedAnswerStore = await sealedCacheStore(cache, SECRET);
    const up = upstream((n) => ({ visibility: "private", n }));
    const isolateA = new BackendCache({ shared });
    const isolateB = new BackendCache({ shared: await sealedCacheStore(cache, SECRET) });
    assertEquals(await isolateA.lookup(lookup("acme/web"), 60_000, up.fn, live()), {
      visibility: "private",
      n: 1,
    });
    assertEquals(await isolateB.lookup(lookup("acme/web"), 60_000, up.fn, live()), {
      visibility: "private",
      n: 1,
    });
    assertEquals(up.calls(), 1);
    // Now kept in B itself: answered with the very value, without asking the shared tier again.
    const kept = isolateB.peek(lookup("acme/web"), 60_000);
    assertEquals(kept, { visibility: "private", n: 1 });
    assert(Object.isFrozen(kept));
    // A gateway whose server of that id is another upstream (scope) shares nothing; nor does TTL 0.
    const otherGateway = new BackendCache({ shared });
    await otherGateway.lookup(lookup("acme/web", "http://upstream-b/mcp"), 60_000, up.fn, live());
    await isolateB.lookup(lookup("acme/zero"), 0, up.fn, live());
    await isolateA.lookup(lookup("acme/zero"), 60_000, up.fn, live());
    assertEquals(up.calls(), 4);
    assertEquals(shared.stats().puts, 3, "acme/web per upstream, acme/zero once (by A); TTL 0 wrote nothing");
  }));

Deno.test("backend cache + shared tier: error results are not shared; a shared answer lives no longer than its sealed expiry", () =>
  withRealCache(async ({ cache }) => {
    let wall = 5_000_000, mono = 0;
    const store = await sealedCacheStore(cache, SECRET, { now: () => wall });
    const a = new BackendCache({ shared: store, wallNow: () => wall, now: () => mono });
    const b = new BackendCache({ shared: store, wallNow: () => wall, now: () => mono });
    const failing = upstream(() => ({ isError: true, content: [] }));
    await a.lookup(lookup("acme/err"), 60_000, failing.fn, live());
    await b.lookup(lookup("acme/err"), 60_000, failing.fn, live());
    assertEquals(failing.calls(), 2, "an isError answer is neither kept nor shared");
    const up = upstream((n) => ({ n }));
    await a.lookup(lookup("acme/web"), 60_000, up.fn, live());
    // 50 s later B takes it from the shared tier: 10 s of it are left, whatever B's own TTL.
    wall += 50_000;
    mono += 50_000;
    assertEquals(await b.lookup(lookup("acme/web"), 60_000, up.fn, live()), { n: 1 });
    mono += 10_001;
    assertEquals(b.peek(lookup("acme/web"), 60_000), undefined, "expired in B with the shared entry");
    assertEquals(up.calls(), 1);
  }));
