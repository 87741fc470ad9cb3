/**
 * Hostile guards (test/fixtures/wat/hostile/) through the real gateway, many at once: each one fails
 * closed with a JSON-RPC error naming what went wrong, its call never reaches the upstream, and a
 * well-behaved server (the demo guard in front of the demo upstream) keeps answering meanwhile.
 */
import { assert, assertEquals, assertLessOrEqual, assertStringIncludes } from "@std/assert";
import { createDemoUpstream } from "../../src/demo/upstream.ts";
import type { Guard } from "../../src/difc/guard.ts";
import { GuardError } from "../../src/guard/limits.ts";
import {
  callTool,
  fullRun,
  initSession,
  loadDemoGuard,
  loadHostile,
  pool,
  rawUpstream,
  resultText,
  serve,
  startStressGateway,
} from "./harness.ts";

/** Limits for the hostile guards: small fuel so a spinning guard costs tens of ms, not seconds. */
const HOSTILE_LIMITS = { fuel: 20_000_000, timeoutMs: 5_000 };
/** The host's default call_backend budget per export call. */
const MAX_BACKEND_CALLS = 50;
/** The host's default memory cap in pages. */
const MAX_MEMORY_PAGES = 512;

/** Each hostile guard, the GuardError kinds it may end in and a text its error must include. */
const HOSTILE: Record<string, { kinds: string[]; includes: string }> = {
  infinite_loop: { kinds: ["fuel"], includes: "ran out of fuel" },
  deep_recursion: { kinds: ["trap"], includes: "WASM guard trap in label_resource" },
  grow_bomb: { kinds: ["output"], includes: "empty output" },
  max_above_cap: { kinds: ["trap"], includes: "out of bounds" },
  backend_flood: { kinds: ["output"], includes: "empty output" },
  trap: { kinds: ["trap"], includes: "unreachable" },
  huge_output: { kinds: ["output_size"], includes: "exceeds maximum" },
  proc_exit: { kinds: ["proc_exit"], includes: "proc_exit(7)" },
  stdin_env: { kinds: ["output"], includes: "failed to unmarshal label_resource WASM response" },
};
/** Requests per hostile guard (CI / STRESS=full) and how many run at once over all guards. */
const PER_GUARD = fullRun() ? 64 : 12;
const HOSTILE_CONCURRENCY = 16;
/** Concurrent well-behaved clients. */
const GOOD_CONCURRENCY = 4;
const POLICY = { "allow-only": { repos: ["acme/web"], "min-integrity": "approved" } };

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

Deno.test({
  name: "hostile guards fail closed under concurrency while a well-behaved server keeps answering",
  sanitizeOps: false, // the SDK upstream's transports settle timers after close
  sanitizeResources: false,
  async fn() {
    const seen = new Map<string, number>();
    const raw = await serve(rawUpstream((name) => {
      seen.set(name, (seen.get(name) ?? 0) + 1);
      return { content: [{ type: "text", text: `{"full_name":"x","visibility":"public"}` }] };
    }));
    const demo = createDemoUpstream();
    const demoUp = await serve(demo.fetch);
    const guards: Record<string, Guard> = { demo: await loadDemoGuard() };
    const servers: Record<string, { url: string; guard: string; policy: unknown }> = {
      good: { url: `${demoUp.url}/mcp`, guard: "demo", policy: POLICY },
    };
    for (const name of Object.keys(HOSTILE)) {
      guards[name] = await loadHostile(name, HOSTILE_LIMITS);
      servers[name] = { url: `${raw.url}/mcp`, guard: name, policy: POLICY };
    }
    const gw = await startStressGateway({ servers, guards });
    try {
      const goodUrl = `${gw.base}/mcp/good`;
      const sid = await initSession(goodUrl, "good-agent");
      const latencies: number[] = [];
      const goodFailures: string[] = [];
      let hostileDone = false;
      let goodId = 0;
      const goodClient = async () => {
        while (!hostileDone) {
          const id = ++goodId;
          const t0 = performance.now();
          const r = await callTool(goodUrl, "good-agent", sid, id, "list_issues", { repo: "acme/web" });
          latencies.push(performance.now() - t0);
          const text = resultText(r.msg?.result);
          if (!text.includes('"number":1') || !text.includes("[Filtered] 1 item(s)")) {
            goodFailures.push(`#${id}: HTTP ${r.status} ${JSON.stringify(r.msg).slice(0, 300)}`);
          }
        }
      };
      const goods = Array.from({ length: GOOD_CONCURRENCY }, goodClient);

      const names = Object.keys(HOSTILE);
      const wrong: string[] = [];
      const t0 = performance.now();
      await pool(names.length * PER_GUARD, HOSTILE_CONCURRENCY, async (i) => {
        const name = names[i % names.length];
        const r = await callTool(`${gw.base}/mcp/${name}`, `hostile-${i % 3}`, undefined, i, "probe", {});
        const err = r.msg?.error as { code?: number; message?: string; data?: { kind?: string } } | undefined;
        const want = HOSTILE[name];
        if (
          r.status !== 200 || err?.code !== -32002 || !want.kinds.includes(err.data?.kind ?? "") ||
          !err.message?.includes(want.includes)
        ) {
          wrong.push(`${name}: HTTP ${r.status} ${JSON.stringify(r.msg ?? r.all).slice(0, 300)}`);
        }
      });
      const hostileMs = performance.now() - t0;
      hostileDone = true;
      await Promise.all(goods);

      latencies.sort((a, b) => a - b);
      console.log(
        `hostile: ${names.length * PER_GUARD} hostile calls in ${Math.round(hostileMs)} ms; ` +
          `${latencies.length} good calls alongside: p50 ${percentile(latencies, 0.5).toFixed(1)} ms, ` +
          `p99 ${percentile(latencies, 0.99).toFixed(1)} ms, max ${latencies.at(-1)?.toFixed(1)} ms; ` +
          `upstream saw ${JSON.stringify(Object.fromEntries(seen))}`,
      );
      assertEquals(wrong, [], "every hostile guard fails closed with its own error");
      assertEquals(goodFailures, [], "the well-behaved server kept answering correctly");
      assert(latencies.length >= GOOD_CONCURRENCY, "good calls ran while the hostile ones did");
      assertEquals(seen.get("probe") ?? 0, 0, "no hostile call reached the upstream");
      assertLessOrEqual(seen.get("get_repo") ?? 0, PER_GUARD * MAX_BACKEND_CALLS, "call_backend is capped");
      assert((seen.get("get_repo") ?? 0) > 0, "the flood did reach call_backend");
      // Every guard failure was logged as one tool_call record with decision "error".
      const errors = gw.logs.filter((l) => l.event === "tool_call" && l.decision === "error");
      const bad = gw.logs.filter((l) =>
        l.event === "tool_call" && l.server !== "good" && l.decision !== "error"
      );
      assertEquals(bad, [], "no other decision for a hostile guard");
      assertEquals(errors.length, names.length * PER_GUARD);
      // A guard cannot flood the gateway's log: ignoring the call_backend limit 9,950 times per call
      // costs a bounded number of log lines, not one per refused call.
      console.log(`guard_log records per guard: ${JSON.stringify(Object.fromEntries(gw.guardLogs))}`);
      assertLessOrEqual(gw.guardLogs.get("backend_flood") ?? 0, PER_GUARD * (MAX_BACKEND_CALLS + 10));
    } finally {
      await gw.close();
      await demo.close();
      await demoUp.close();
      await raw.close();
    }
  },
});

function ctx(backend = () => Promise.resolve({}) as Promise<unknown>) {
  return { signal: new AbortController().signal, backend, log: () => {} };
}

Deno.test("hostile guards at the host: what each one sees and where it stops", async () => {
  // stdin is empty, fd 3 does not exist (EBADF = 8), no arguments, no environment.
  const env = (await loadHostile("stdin_env", HOSTILE_LIMITS)).open(ctx());
  assertEquals(await env.labelResource("{}"), "STDIN:0,0 FD3:8 ARGC:0 ENVC:0 ENVB:0 ENV0:");

  // The declared 4 GiB maximum was clamped: memory never exceeds the cap.
  const cap = (await loadHostile("max_above_cap", HOSTILE_LIMITS)).open(ctx());
  const e1 = await cap.labelResource("{}").then(() => null, (e) => e);
  assert(e1 instanceof GuardError && e1.kind === "trap", String(e1));
  assertLessOrEqual(cap.usage().memoryPages, MAX_MEMORY_PAGES);

  // The bomb stops at the cap exactly.
  const bomb = (await loadHostile("grow_bomb", HOSTILE_LIMITS)).open(ctx());
  assertEquals(await bomb.labelResource("{}"), "");
  assertEquals(bomb.usage().memoryPages, MAX_MEMORY_PAGES);

  // call_backend: 50 calls reach the backend, the other 9,950 get -1 without a call.
  let backendCalls = 0;
  const flood = (await loadHostile("backend_flood", HOSTILE_LIMITS)).open(ctx(() => {
    backendCalls++;
    return Promise.resolve({ ok: true });
  }));
  assertEquals(await flood.labelResource("{}"), "");
  assertEquals(backendCalls, MAX_BACKEND_CALLS);
  assertEquals(flood.usage().backendCalls, 10_000);

  // The spinning guard stops on fuel; an abort stops it too, long before its fuel is spent.
  const loop = await loadHostile("infinite_loop", { fuel: 1_000_000_000, timeoutMs: 60_000 });
  const ac = new AbortController();
  const spinning = loop.open({ ...ctx(), signal: ac.signal });
  const p = spinning.labelResource("{}").then(() => null, (e) => e);
  setTimeout(() => ac.abort(new Error("client went away")), 50);
  const e2 = await p;
  assert(e2 instanceof GuardError && e2.kind === "aborted", String(e2));
  assertStringIncludes(e2.message, "client went away");
});
