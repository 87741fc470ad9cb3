/**
 * Authentication cost per request, side by side in one process: the shared key, a per-agent key
 * (among 16), and OAuth Bearer JWTs (ES256 and RS256) against a warm JWKS cache (the issuer is a
 * loopback server; its JWKS is fetched once, before timing). Each JWT variant runs twice: a new token
 * on every request (the whole verification: signature, claims) and the same token again (what an
 * agent does; the authenticator remembers verified tokens).
 *
 * Two levels, each variant interleaved round-robin in batches so machine drift hits all alike:
 * 1. `authenticate()` alone (the work added to every request);
 * 2. a whole `GET /reflect` through the Hono app (auth + route + label store read + JSON).
 *
 * ```sh
 * deno run -A bench/auth_bench.ts
 * BENCH_QUICK=1 deno run -A bench/auth_bench.ts
 * ```
 * Raw samples: bench/results/auth.json.
 *
 * @module
 */
import { createGateway } from "../src/app.ts";
import { parseConfig } from "../src/config.ts";
import { MemoryAgentLabelStore } from "../src/difc/store.ts";
import type { AuthTarget } from "../src/http/auth.ts";
import { planServers } from "../src/registry.ts";
import { issuerKey, startIssuer } from "../test/auth/issuer.ts";
import {
  type BenchOptions,
  type BenchReport,
  finish,
  fmt,
  isQuick,
  median,
  ratio,
  summarize,
} from "./lib.ts";

interface Plan {
  /** Timed requests per variant and level. */
  iterations: number;
  /** Requests of one variant in a row before the next variant runs. */
  batch: number;
}
const FULL: Plan = { iterations: 5_000, batch: 100 };
const QUICK: Plan = { iterations: 200, batch: 50 };

const AUDIENCE = "http://127.0.0.1/mcp";
const SHARED = "bench-shared-key-0123456789abcdef";
const AGENTS = 16;
/** Untimed requests per variant first (JIT, JWKS fetch, key import). */
const WARMUP = 50;

/** Runs the auth benchmark; prints tables, writes bench/results/auth.json. */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const plan = isQuick(opts) ? QUICK : FULL;
  await using iss = await startIssuer(AUDIENCE);
  const rsa = await issuerKey("rsa-1", "RS256");
  iss.published = [...iss.published, rsa];
  const agents: Record<string, { apiKey: string }> = {};
  for (let i = 0; i < AGENTS; i++) agents[`agent-${i}`] = { apiKey: `bench-agent-key-${i}-0123456789abcdef` };
  const config = parseConfig({
    mcpServers: { noop: { type: "http", url: "http://127.0.0.1:9/mcp", guard: "noop" } },
    guards: { noop: { type: "noop" } },
    gateway: {
      apiKey: SHARED,
      agents,
      oauth: { issuer: iss.issuer, audience: AUDIENCE, jwksUrl: iss.jwksUrl },
    },
  });
  const { plans } = await planServers(config, () => Promise.reject(new Error("no wasm guards")));
  const gw = createGateway({ config, plans, store: new MemoryAgentLabelStore(), log: () => {} });
  const es = await iss.sign({ sub: "bench-es256", scope: "mcp:tools" });
  const rs = await iss.sign({ sub: "bench-rs256", scope: "mcp:tools" }, { key: rsa });
  // Distinct tokens (unique jti) for the full-verification variants: one per timed request and level.
  const fresh = async (n: number, key?: typeof rsa) => {
    const out: Record<string, string>[] = [];
    for (let i = 0; i < n; i++) {
      out.push({ authorization: `Bearer ${await iss.sign({ sub: "bench-new", jti: `j${i}` }, { key })}` });
    }
    return out;
  };
  const n = 2 * plan.iterations + WARMUP;
  const constant = (h: Record<string, string>) => () => h;
  const cycling = (hs: Record<string, string>[]) => {
    let i = 0;
    return () => hs[i++ % hs.length];
  };
  const variants: { name: string; headers: () => Record<string, string> }[] = [
    {
      name: "shared key + X-Agent-ID",
      headers: constant({ authorization: `Bearer ${SHARED}`, "x-agent-id": "bench" }),
    },
    {
      name: `per-agent key (1 of ${AGENTS})`,
      headers: constant({ authorization: `Bearer ${agents["agent-7"].apiKey}` }),
    },
    { name: "JWT ES256, new token each request", headers: cycling(await fresh(n)) },
    { name: "JWT RS256, new token each request", headers: cycling(await fresh(n, rsa)) },
    { name: "JWT ES256, same token again", headers: constant({ authorization: `Bearer ${es}` }) },
    { name: "JWT RS256, same token again", headers: constant({ authorization: `Bearer ${rs}` }) },
  ];
  const target: AuthTarget = { kind: "reflect" };
  const auth = gw.authenticator();
  const authOnce = async (h: Record<string, string>) => {
    const headers = new Headers(h);
    const t0 = performance.now();
    await auth.authenticate(headers, target);
    return (performance.now() - t0) * 1000;
  };
  const reflectOnce = async (h: Record<string, string>) => {
    const t0 = performance.now();
    const res = await gw.fetch(new Request("http://127.0.0.1/reflect", { headers: h }));
    await res.arrayBuffer();
    const us = (performance.now() - t0) * 1000;
    if (res.status !== 200) throw new Error(`/reflect answered ${res.status}`);
    return us;
  };
  // Warm-up: JWKS fetched, keys imported, JIT warm.
  for (const v of variants) for (let i = 0; i < WARMUP; i++) await reflectOnce(v.headers());
  const jwksFetches = iss.jwksHits;

  const authUs: number[][] = variants.map(() => []);
  const reflectUs: number[][] = variants.map(() => []);
  for (let done = 0; done < plan.iterations; done += plan.batch) {
    const k = (done / plan.batch) % variants.length;
    const order = [...variants.keys()].slice(k).concat([...variants.keys()].slice(0, k));
    for (const v of order) {
      for (let i = 0; i < plan.batch; i++) authUs[v].push(await authOnce(variants[v].headers()));
      for (let i = 0; i < plan.batch; i++) reflectUs[v].push(await reflectOnce(variants[v].headers()));
    }
  }
  await gw.close();
  if (iss.jwksHits !== jwksFetches) throw new Error("the JWKS was fetched again during timing");

  const keyAuth = median(authUs[0]);
  const keyReflect = median(reflectUs[0]);
  const rows = variants.map((v, i) => {
    const a = summarize(authUs[i]);
    const r = summarize(reflectUs[i]);
    return [
      v.name,
      fmt(a.p50, 1),
      fmt(a.p99, 1),
      `${fmt(ratio(a.p50, keyAuth))}x`,
      fmt(r.p50, 1),
      fmt(r.p99, 1),
      fmt(r.p50 - keyReflect, 1),
      `${fmt(ratio(r.p50, keyReflect))}x`,
    ];
  });
  return await finish(
    "auth",
    opts,
    [{
      title:
        `authentication per request, µs (${plan.iterations} per variant and level, interleaved in batches of ${plan.batch}; JWKS fetched ${jwksFetches}x before timing, never during)`,
      header: [
        "credential",
        "authenticate p50",
        "p99",
        "vs shared key",
        "GET /reflect p50",
        "p99",
        "added p50",
        "vs shared key",
      ],
      rows,
    }],
    [],
    { variants: variants.map((v) => v.name), authUs, reflectUs },
  );
}

if (import.meta.main) await run();
