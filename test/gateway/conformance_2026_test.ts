/**
 * The 2026-07-28 conformance scenarios (`@modelcontextprotocol/conformance` 0.2.0-alpha line,
 * `server --suite all --spec-version 2026-07-28`) run directly against the SDK v2 fixture
 * (`test/fixtures/v2-upstream.ts`, stateless `createMcpHandler`) and through the gateway's routed URL
 * for a server with the noop guard: each check must get the same status both ways.
 *
 * The scenario set is whatever the installed CLI lists for 2026-07-28 (stateless server, header
 * validation, custom `Mcp-Param-*` headers, DNS rebinding, caching, tools, prompts, resources, the
 * multi-round-trip `input-required-result-*` scenarios), so a newer CLI cannot silently shrink it.
 *
 * `dns-rebinding-protection` through the gateway tests the gateway's own Host/Origin check
 * (src/http/origin.ts): the upstream only ever sees the gateway's Host. The gateway is configured
 * with no extra allowed hosts or origins, i.e. loopback only, which is what the scenario asks of a
 * localhost server.
 *
 * The CLI cannot send an API key, so it reaches the gateway through `keyedFront` (adds the key,
 * passes Host and Origin untouched).
 */
import { assert, assertEquals } from "@std/assert";
import { startV2Upstream } from "../fixtures/v2-upstream.ts";
import {
  CONFORMANCE_NEXT_CLI,
  type ConformanceReport,
  listServerScenarios,
  runConformance,
} from "../helpers/conformance.ts";
import { API_KEY, keyedFront, startTestGateway } from "./harness.ts";
// `test` = Deno.test, ignored (saying why) where no Node >= 22.12 is available (scripts/node22.ts).
import { testWithNode22 as test } from "../helpers/processes.ts";

const SPEC_VERSION = "2026-07-28";

/** Bound on one CLI run; a healthy run takes about 5 s, so this only cuts a hang short. */
const RUN_TIMEOUT_MS = 35_000;

/** The CLI's own per-scenario bound (its default is 30 s, too long for the whole test's budget). */
const SCENARIO_TIMEOUT_MS = 10_000;

/**
 * Fewest passing checks each run must have (152 of 152 pass directly today): a fixture or CLI that
 * stops exercising the scenarios cannot pass this test by failing identically on both sides.
 */
const MIN_PASSED_CHECKS = 140;

/** Scenarios that must pass in full on both sides (what issue 8 names explicitly). */
const MUST_PASS = [
  "server-stateless",
  "http-header-validation",
  "http-custom-header-server-validation",
  "dns-rebinding-protection",
  "tools-list",
  "tools-call-simple-text",
];

/** Per scenario: passed/failed/warning counts and each check's status (INFO checks left out). */
function checkTable(r: ConformanceReport) {
  return Object.fromEntries(
    Object.entries(r.scenarios).map(([name, s]) => [name, {
      passed: s.passed,
      failed: s.failed,
      warnings: s.warnings,
      checks: s.checks,
    }]),
  );
}

function totals(r: ConformanceReport) {
  const all = Object.values(r.scenarios);
  return {
    scenarios: all.length,
    passed: all.reduce((n, s) => n + s.passed, 0),
    failed: all.reduce((n, s) => n + s.failed, 0),
    warnings: all.reduce((n, s) => n + s.warnings, 0),
  };
}

/** One line per scenario, `name: direct p/f/w | gateway p/f/w`, for failure messages and the log. */
function verdictLines(direct: ConformanceReport, via: ConformanceReport): string {
  const names = [...new Set([...Object.keys(direct.scenarios), ...Object.keys(via.scenarios)])].sort();
  const cell = (r: ConformanceReport, n: string) => {
    const s = r.scenarios[n];
    return s ? `${s.verdict} ${s.passed}/${s.failed}/${s.warnings}` : "missing";
  };
  const problems = (n: string) => (via.scenarios[n]?.problems ?? []).join("; ");
  return names.map((n) => `${n}: direct ${cell(direct, n)} | gateway ${cell(via, n)} ${problems(n)}`)
    .join("\n");
}

test("conformance 2026-07-28: identical verdicts per check, SDK v2 upstream direct and through the gateway", async () => {
  const expected = (await listServerScenarios({ cli: CONFORMANCE_NEXT_CLI, specVersion: SPEC_VERSION }))
    .sort();
  for (const s of MUST_PASS) assert(expected.includes(s), `the CLI no longer lists ${s} for ${SPEC_VERSION}`);

  await using upstream = await startV2Upstream();
  await using gw = await startTestGateway({
    gateway: { allowedHosts: [], allowedOrigins: [] },
    guards: { open: { type: "noop" } },
    mcpServers: { v2: { type: "http", url: upstream.url, guard: "open" } },
  });
  const front = keyedFront(gw);
  try {
    const opts = {
      cli: CONFORMANCE_NEXT_CLI,
      specVersion: SPEC_VERSION,
      suite: "all" as const,
      timeoutMs: RUN_TIMEOUT_MS,
      scenarioTimeoutMs: SCENARIO_TIMEOUT_MS,
    };
    // `localhost` in the URL: the dns-rebinding scenario requires a loopback name.
    const direct = await runConformance(upstream.url.replace("127.0.0.1", "localhost"), opts);
    const via = await runConformance(`http://localhost:${front.port}/mcp/v2`, opts);
    const lines = verdictLines(direct, via);
    console.log(
      `direct ${JSON.stringify(totals(direct))} in ${direct.durationMs} ms; ` +
        `gateway ${JSON.stringify(totals(via))} in ${via.durationMs} ms\n${lines}`,
    );

    assertEquals(Object.keys(direct.scenarios), expected, "every listed scenario ran directly");
    assertEquals(Object.keys(via.scenarios), expected, "every listed scenario ran through the gateway");
    assertEquals(checkTable(via), checkTable(direct), lines);
    for (const r of [direct, via]) {
      assert(totals(r).passed >= MIN_PASSED_CHECKS, `only ${totals(r).passed} checks passed:\n${lines}`);
      for (const s of MUST_PASS) assertEquals(r.verdicts[s], "pass", `${s}:\n${lines}`);
    }
    assert(gw.logs.some((r) => r.event === "tool_call"), "tools/call went through the guard pipeline");
  } finally {
    await front.close();
  }
});

Deno.test("conformance 2026-07-28: through the gateway, a rebinding Host is refused by the gateway itself", async () => {
  await using upstream = await startV2Upstream();
  await using gw = await startTestGateway({ mcpServers: { v2: { type: "http", url: upstream.url } } });
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "tools/list",
    params: {
      _meta: {
        "io.modelcontextprotocol/protocolVersion": SPEC_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
      },
    },
  });
  // In-process, so that the Host header arrives as written (fetch() would send the real one).
  const post = (host: string) =>
    gw.gateway.fetch(
      new Request(gw.url("v2"), {
        method: "POST",
        headers: {
          host,
          authorization: `Bearer ${API_KEY}`,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-protocol-version": SPEC_VERSION,
          "mcp-method": "tools/list",
        },
        body,
      }),
    );
  const ok = await post(`localhost:${gw.port}`);
  assertEquals(ok.status, 200, await ok.text());
  // The gateway's own 403 is `{error, message}` JSON, not the SDK's JSON-RPC 403.
  const evil = await post(`evil.example:${gw.port}`);
  const refusal = await evil.json();
  assertEquals(evil.status, 403);
  assert(!("jsonrpc" in refusal), `the gateway answered, not the upstream: ${JSON.stringify(refusal)}`);
});
