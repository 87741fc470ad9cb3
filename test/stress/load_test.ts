/**
 * Load: ≥ 20,000 guarded tools/call at concurrency 64 over loopback, through the real gateway, the
 * shipped demo guard (a real wasm instance per call, `call_backend` to the upstream) and the real
 * demo upstream (MCP SDK server). Agents differ in X-Agent-ID, server (policy) and tool, so each one
 * expects a different answer; every response is checked against its agent's expectation.
 *
 * `STRESS=full` runs 200,000 calls.
 */
import { assert, assertEquals, assertLess } from "@std/assert";
import { createDemoUpstream } from "../../src/demo/upstream.ts";
import {
  callTool,
  fullRun,
  initSession,
  loadDemoGuard,
  pool,
  resultText,
  rssMiB,
  serve,
  startStressGateway,
} from "./harness.ts";

/** Calls in the CI run (the brief's floor). */
const CI_CALLS = 20_000;
/** Calls with STRESS=full. */
const FULL_CALLS = 200_000;
/** Requests in flight at once. */
const CONCURRENCY = 64;
/** Generous leak bound: RSS may grow by this much over the run (V8 heap sizing, allocator caches). */
const MAX_RSS_GROWTH_MIB = 400;
/**
 * Goal for the highest RSS of this process (gateway, upstream and client together) sampled during the
 * measured run, after warm-up (issue 12). `deno task test` runs V8 with the heap growth bound of
 * `deno task start` (`--heap-growing-percent=30`, README "Platform limits"): peaks of 356-368 MiB, against
 * 440-710 MiB without it (BENCHMARKS.md §4a, this file alone). Reported, not asserted: peaks move from run to
 * run on the same code, a run without the flag (a plain `deno test`) is still a valid run of this test, and
 * under `--parallel` other test modules share the process and its RSS, which is why `deno task test` runs
 * this file alone after the rest of the suite (type-checked first by `deno check` in a process of its own:
 * the checker's memory in this process put 630 MiB into the report before the first call).
 */
const RSS_GOAL_MIB = 400;
/** How often RSS is sampled during the run. */
const RSS_SAMPLE_MS = 100;
const MIB = 1024 * 1024;
/** Distinct `call_backend` lookups of the agent kinds below (server + repository of get_repo). */
const BACKEND_KEYS = 4;

/** One kind of agent: where it calls, what, and what it must get back. */
interface AgentKind {
  server: string;
  tool: string;
  args: Record<string, unknown>;
  /** Checks one response; returns a description of what is wrong, or null. */
  check(msg: Record<string, unknown>): string | null;
}

function issueNumbers(result: unknown): number[] | null {
  const first = (result as { content?: { text?: string }[] })?.content?.[0]?.text;
  try {
    const v = JSON.parse(first ?? "") as { items?: { number: number }[] };
    return (v.items ?? []).map((i) => i.number);
  } catch {
    return null;
  }
}

function expectIssues(numbers: number[], filtered: number): AgentKind["check"] {
  return (msg) => {
    if (!("result" in msg)) return `expected a result, got ${JSON.stringify(msg).slice(0, 200)}`;
    const got = issueNumbers(msg.result);
    if (JSON.stringify(got) !== JSON.stringify(numbers)) return `issues ${JSON.stringify(got)} ≠ ${numbers}`;
    const text = resultText(msg.result);
    const notice = filtered > 0 ? `[Filtered] ${filtered} item(s)` : "[Filtered]";
    if (filtered > 0 !== text.includes(notice)) return `notice mismatch: ${text.slice(-200)}`;
    return null;
  };
}

function expectViolation(msg: Record<string, unknown>): string | null {
  const err = msg.error as { code?: number; message?: string } | undefined;
  if (err?.code !== -32001 || !err.message?.startsWith("DIFC Violation:")) {
    return `expected DIFC violation, got ${JSON.stringify(msg).slice(0, 200)}`;
  }
  return null;
}

const WEB_APPROVED = { "allow-only": { repos: ["acme/web"], "min-integrity": "approved" } };
const WEB_NONE = { "allow-only": { repos: ["acme/web"], "min-integrity": "none" } };
const SITE_APPROVED = { "allow-only": { repos: ["acme/public-site"], "min-integrity": "approved" } };

const KINDS: AgentKind[] = [
  // approved integrity on acme/web: issue #2 (author NONE) is filtered.
  { server: "web-approved", tool: "list_issues", args: { repo: "acme/web" }, check: expectIssues([1, 3], 1) },
  // none integrity: everything in acme/web is readable.
  { server: "web-none", tool: "list_issues", args: { repo: "acme/web" }, check: expectIssues([1, 2, 3], 0) },
  // approved on the public site: #1 (CONTRIBUTOR = unapproved) is filtered.
  {
    server: "site-approved",
    tool: "list_issues",
    args: { repo: "acme/public-site" },
    check: expectIssues([2], 1),
  },
  // writing private-tainted data to the public site is blocked before the upstream.
  {
    server: "web-approved",
    tool: "create_issue",
    args: { repo: "acme/public-site", title: "leak", body: "x" },
    check: expectViolation,
  },
  // a single readable issue through the none policy.
  {
    server: "web-none",
    tool: "get_issue",
    args: { repo: "acme/web", number: 2 },
    check: (msg) => {
      const text = resultText(msg.result);
      return text.includes('"number":2') && text.includes("mallory")
        ? null
        : `get_issue: ${text.slice(0, 200)}`;
    },
  },
];
/** Agents per kind, each with its own X-Agent-ID and session. */
const AGENTS_PER_KIND = 2;

Deno.test({
  name: `load: ${
    fullRun() ? FULL_CALLS : CI_CALLS
  } guarded tools/call at concurrency ${CONCURRENCY}, every answer right for its agent`,
  sanitizeOps: false, // the SDK upstream's transports settle timers after close
  sanitizeResources: false,
  async fn() {
    const total = fullRun() ? FULL_CALLS : CI_CALLS;
    const demo = createDemoUpstream();
    const up = await serve(demo.fetch);
    const gw = await startStressGateway({
      servers: {
        "web-approved": { url: `${up.url}/mcp`, guard: "demo", policy: WEB_APPROVED },
        "web-none": { url: `${up.url}/mcp`, guard: "demo", policy: WEB_NONE },
        "site-approved": { url: `${up.url}/mcp`, guard: "demo", policy: SITE_APPROVED },
      },
      guards: { demo: await loadDemoGuard() },
      log: () => {},
    });
    try {
      const agents: { id: string; kind: AgentKind; url: string; sid: string | undefined }[] = [];
      for (const [k, kind] of KINDS.entries()) {
        for (let a = 0; a < AGENTS_PER_KIND; a++) {
          const id = `agent-${k}-${a}`;
          const url = `${gw.base}/mcp/${kind.server}`;
          agents.push({ id, kind, url, sid: await initSession(url, id) });
        }
      }
      // Warm-up (JIT, pools), then the measured run.
      await pool(500, CONCURRENCY, async (i) => {
        const a = agents[i % agents.length];
        await callTool(a.url, a.id, a.sid, `w${i}`, a.kind.tool, a.kind.args);
      });
      const statsBefore = demo.stats();
      const rssBefore = rssMiB();
      let rssPeak = rssBefore;
      // What the peak is made of (V8 heap, memory outside it: wasm memories, buffers).
      let atPeak = Deno.memoryUsage();
      const sampler = setInterval(() => {
        const m = Deno.memoryUsage();
        if (m.rss / MIB > rssPeak) [rssPeak, atPeak] = [Math.round(m.rss / MIB * 10) / 10, m];
      }, RSS_SAMPLE_MS);
      const wrong: string[] = [];
      let ok = 0;
      const perTool = new Map<string, number>();
      const t0 = performance.now();
      await pool(total, CONCURRENCY, async (i) => {
        const a = agents[i % agents.length];
        let problem: string | null;
        try {
          const r = await callTool(a.url, a.id, a.sid, i, a.kind.tool, a.kind.args);
          const responses = r.all.filter((m) => "result" in m || "error" in m);
          if (r.status !== 200) problem = `HTTP ${r.status}`;
          else if (responses.length !== 1 || !r.msg) {
            problem = `expected 1 response for id ${i}, got ${responses.length}`;
          } else problem = a.kind.check(r.msg);
        } catch (e) {
          problem = `transport: ${e}`;
        }
        if (problem) {
          if (wrong.length < 20) wrong.push(`${a.id} #${i}: ${problem}`);
          else wrong.length++;
        } else {
          ok++;
          perTool.set(a.kind.tool, (perTool.get(a.kind.tool) ?? 0) + 1);
        }
      });
      const secs = (performance.now() - t0) / 1000;
      clearInterval(sampler);
      const rssAfter = rssMiB();
      rssPeak = Math.max(rssPeak, rssAfter);
      const stats = demo.stats();
      const reached = (tool: string) => (stats[tool] ?? 0) - (statsBefore[tool] ?? 0);
      console.log(
        `load: ${total} calls, ${ok} correct, ${wrong.length} wrong, ${secs.toFixed(1)} s ` +
          `(${
            Math.round(total / secs)
          } calls/s), RSS ${rssBefore} → ${rssAfter} MiB (peak ${rssPeak}: heap ` +
          `${Math.round(atPeak.heapTotal / MIB)}, external ${Math.round(atPeak.external / MIB)}; goal < ` +
          `${RSS_GOAL_MIB} ${
            rssPeak < RSS_GOAL_MIB ? "met" : "MISSED"
          }; the whole process's RSS, shared with ` +
          "any test modules running beside this one under --parallel), " +
          `upstream tools/call ${JSON.stringify(stats)}`,
      );
      assertEquals(wrong, [], "every response is the one its agent must get");
      assertEquals(ok, total);
      // What reached the upstream: every read once, no write; the guard's get_repo lookups come from the
      // call_backend cache (filled during warm-up), at most once per key and TTL.
      assertEquals(reached("create_issue"), 0, "blocked writes never reach the upstream");
      assertEquals(reached("list_issues"), perTool.get("list_issues"));
      assertEquals(reached("get_issue"), perTool.get("get_issue"));
      assert((statsBefore.get_repo ?? 0) >= 1, "the guard asked the upstream");
      const ttlMs = gw.config.servers[0].backendCacheTtlMs;
      assertLess(reached("get_repo"), BACKEND_KEYS * (2 + Math.ceil(secs * 1000 / ttlMs)), "cache hits");
      assertLess(rssAfter - rssBefore, MAX_RSS_GROWTH_MIB, "no leak of hundreds of MiB");
    } finally {
      await gw.close();
      await demo.close();
      await up.close();
    }
  },
});
