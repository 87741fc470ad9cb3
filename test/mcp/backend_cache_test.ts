import { assert, assertEquals, assertRejects } from "@std/assert";
import {
  BACKEND_CACHE_MAX_BYTES,
  BACKEND_CACHE_MAX_ENTRIES,
  BackendCache,
  type BackendLookup,
  DEFAULT_BACKEND_CACHE_TTL_MS,
} from "../../src/mcp/backend_cache.ts";
import { parseConfig } from "../../src/config.ts";

const live = () => new AbortController().signal;
const repo = (name: string, args: unknown = { repo: name }): BackendLookup => ({
  serverId: "gh",
  tool: "get_repo",
  args,
});

/** A fetch that counts calls and answers after `gate` resolves (immediately by default). */
function counter(answer: (n: number) => unknown = (n) => ({ n }), gate?: Promise<void>) {
  const seen: AbortSignal[] = [];
  const fn = async (signal: AbortSignal) => {
    seen.push(signal);
    const n = seen.length;
    if (gate) await gate;
    if (signal.aborted) throw signal.reason;
    return answer(n);
  };
  return { fn, seen, calls: () => seen.length };
}

Deno.test("backend cache: concurrent identical lookups make one upstream call (single-flight)", async () => {
  const cache = new BackendCache();
  let open!: () => void;
  const gate = new Promise<void>((r) => open = r);
  const c = counter(undefined, gate);
  const all = Array.from({ length: 10 }, () => cache.lookup(repo("acme/web"), 60_000, c.fn, live()));
  open();
  const results = await Promise.all(all);
  assertEquals(c.calls(), 1);
  for (const r of results) assertEquals(r, { n: 1 });
  assertEquals(cache.stats().joined, 9);
  // Later lookups hit the kept answer.
  assertEquals(await cache.lookup(repo("acme/web"), 60_000, c.fn, live()), { n: 1 });
  assertEquals(c.calls(), 1);
  assertEquals(cache.stats().hits, 1);
});

Deno.test("backend cache: keyed by canonical arguments, tool, server and protocol version", async () => {
  const cache = new BackendCache();
  const c = counter();
  await cache.lookup(repo("x", { owner: "acme", repo: "web", opts: { a: 1, b: 2 } }), 60_000, c.fn, live());
  // Same arguments, other key order at every level: one entry.
  await cache.lookup(repo("x", { opts: { b: 2, a: 1 }, repo: "web", owner: "acme" }), 60_000, c.fn, live());
  assertEquals(c.calls(), 1);
  await cache.lookup(repo("x", { owner: "acme", repo: "api" }), 60_000, c.fn, live());
  await cache.lookup({ ...repo("acme/web"), tool: "get_file" }, 60_000, c.fn, live());
  await cache.lookup({ ...repo("acme/web"), serverId: "other" }, 60_000, c.fn, live());
  await cache.lookup({ ...repo("acme/web"), protocolVersion: "2025-06-18" }, 60_000, c.fn, live());
  assertEquals(c.calls(), 5);
  // No arguments and empty arguments are the same upstream call.
  await cache.lookup({ serverId: "gh", tool: "get_repo", args: undefined }, 60_000, c.fn, live());
  await cache.lookup(repo("x", {}), 60_000, c.fn, live());
  assertEquals(c.calls(), 6);
});

Deno.test("backend cache: answers expire after the TTL", async () => {
  let now = 1000;
  const cache = new BackendCache({ now: () => now });
  const c = counter();
  assertEquals(await cache.lookup(repo("a"), 500, c.fn, live()), { n: 1 });
  now += 499;
  assertEquals(await cache.lookup(repo("a"), 500, c.fn, live()), { n: 1 });
  now += 1;
  assertEquals(await cache.lookup(repo("a"), 500, c.fn, live()), { n: 2 });
  assertEquals(c.calls(), 2);
});

Deno.test("backend cache: TTL 0 disables it (every lookup calls the upstream, with the caller's signal)", async () => {
  const cache = new BackendCache();
  let open!: () => void;
  const gate = new Promise<void>((r) => open = r);
  const c = counter(undefined, gate);
  const signal = live();
  const p = [cache.lookup(repo("a"), 0, c.fn, signal), cache.lookup(repo("a"), 0, c.fn, signal)];
  open();
  await Promise.all(p);
  await cache.lookup(repo("a"), 0, c.fn, signal);
  assertEquals(c.calls(), 3);
  assert(c.seen.every((s) => s === signal));
  assertEquals(cache.stats().entries, 0);
});

Deno.test("backend cache: errors and isError results are not kept", async () => {
  const cache = new BackendCache();
  let fail = true;
  const flaky = (_s: AbortSignal) =>
    fail ? Promise.reject(new Error("upstream down")) : Promise.resolve({ ok: 1 });
  await assertRejects(() => cache.lookup(repo("a"), 60_000, flaky, live()), Error, "upstream down");
  fail = false;
  assertEquals(await cache.lookup(repo("a"), 60_000, flaky, live()), { ok: 1 });

  const c = counter((n) => ({ isError: true, content: [{ type: "text", text: `rate limited ${n}` }] }));
  await cache.lookup(repo("b"), 60_000, c.fn, live());
  await cache.lookup(repo("b"), 60_000, c.fn, live());
  assertEquals(c.calls(), 2);
});

Deno.test("backend cache: bounded by entries and by bytes, least recently used out first", async () => {
  const cache = new BackendCache({ maxEntries: 3, maxBytes: 10_000, maxEntryBytes: 10_000 });
  const c = counter();
  for (const r of ["a", "b", "c"]) await cache.lookup(repo(r), 60_000, c.fn, live());
  await cache.lookup(repo("a"), 60_000, c.fn, live()); // a is now the most recent
  await cache.lookup(repo("d"), 60_000, c.fn, live()); // b goes
  assertEquals(cache.stats().entries, 3);
  const before = c.calls();
  await cache.lookup(repo("a"), 60_000, c.fn, live());
  await cache.lookup(repo("c"), 60_000, c.fn, live());
  assertEquals(c.calls(), before);
  await cache.lookup(repo("b"), 60_000, c.fn, live());
  assertEquals(c.calls(), before + 1);

  const big = new BackendCache({ maxEntries: 100, maxBytes: 2_000, maxEntryBytes: 900 });
  const text = (n: number) => () => ({ text: "x".repeat(n) });
  for (let i = 0; i < 10; i++) await big.lookup(repo(`r${i}`), 60_000, counter(text(500)).fn, live());
  assert(big.stats().bytes <= 2_000, `bytes ${big.stats().bytes}`);
  assertEquals(big.stats().entries, 3);
  // One answer above the per-entry bound is used, not kept.
  const huge = counter(text(5_000));
  assertEquals(
    (await big.lookup(repo("huge"), 60_000, huge.fn, live()) as { text: string }).text.length,
    5_000,
  );
  await big.lookup(repo("huge"), 60_000, huge.fn, live());
  assertEquals(huge.calls(), 2);
  assert(BACKEND_CACHE_MAX_ENTRIES > 0 && BACKEND_CACHE_MAX_BYTES > 0);
});

Deno.test("backend cache: a waiter that aborts leaves; the shared call stops only when none wait", async () => {
  const cache = new BackendCache();
  let open!: () => void;
  const gate = new Promise<void>((r) => open = r);
  const c = counter(undefined, gate);
  const a = new AbortController(), b = new AbortController();
  const pa = cache.lookup(repo("a"), 60_000, c.fn, a.signal);
  const pb = cache.lookup(repo("a"), 60_000, c.fn, b.signal);
  a.abort(new Error("agent A left"));
  await assertRejects(() => pa, Error, "agent A left");
  assert(!c.seen[0].aborted, "B still waits: the upstream call goes on");
  open();
  assertEquals(await pb, { n: 1 });

  // Every waiter gone: the upstream call is aborted and nothing is kept.
  let open2!: () => void;
  const gate2 = new Promise<void>((r) => open2 = r);
  const c2 = counter(undefined, gate2);
  const d = new AbortController();
  const pd = cache.lookup(repo("z"), 60_000, c2.fn, d.signal);
  d.abort(new Error("gone"));
  await assertRejects(() => pd, Error, "gone");
  assert(c2.seen[0].aborted);
  open2();
  await new Promise((r) => setTimeout(r, 0));
  assertEquals(await cache.lookup(repo("z"), 60_000, c2.fn, live()), { n: 2 });
});

Deno.test("backend cache: kept answers are frozen", async () => {
  const cache = new BackendCache();
  const value = await cache.lookup(
    repo("a"),
    60_000,
    () => Promise.resolve({ visibility: "public", o: {} }),
    live(),
  );
  assert(Object.isFrozen(value) && Object.isFrozen((value as { o: object }).o));
});

Deno.test("config: mcpServers.<id>.backendCacheTtl is seconds, 0 disables, default 60 s", () => {
  const cfg = (extra: Record<string, unknown>) =>
    parseConfig({
      mcpServers: { gh: { type: "http", url: "http://127.0.0.1:1/mcp", ...extra } },
      gateway: { port: 8080, apiKey: "k" },
    }, {});
  assertEquals(cfg({}).servers[0].backendCacheTtlMs, DEFAULT_BACKEND_CACHE_TTL_MS);
  assertEquals(cfg({ backendCacheTtl: 0 }).servers[0].backendCacheTtlMs, 0);
  assertEquals(cfg({ backendCacheTtl: 5 }).servers[0].backendCacheTtlMs, 5000);
  for (const bad of [-1, 1.5, "60", 86_401]) {
    let threw = false;
    try {
      cfg({ backendCacheTtl: bad });
    } catch {
      threw = true;
    }
    assert(threw, `backendCacheTtl ${bad} accepted`);
  }
});
