/**
 * The upstreams the gateway is tested and demoed with, and the harness that runs third-party MCP parts:
 * the demo upstream through the official SDK client, the conformance suite against our fixture, and
 * server-everything as a real child process.
 */
import {
  assert,
  assertEquals,
  assertGreater,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
// The SDK's "./*" export maps types to "*.d.ts", so "x.js" would look for "x.js.d.ts": point at the types.
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  createDemoUpstream,
  DEMO_ISSUES,
  type DemoUpstream,
  MAX_DEMO_LATENCY_MS,
} from "../src/demo/upstream.ts";
import { startConformanceUpstream } from "./fixtures/conformance-upstream.ts";
import {
  ACTIVE_SERVER_SCENARIOS,
  ConformanceTimeoutError,
  listServerScenarios,
  PENDING_SERVER_SCENARIOS,
  runConformance,
  summarizeChecks,
} from "./helpers/conformance.ts";
import {
  freePort,
  NODE22,
  ProcessExitedError,
  ProcessStartTimeoutError,
  REPO_ROOT,
  startProcess,
} from "./helpers/processes.ts";
// `test` = Deno.test, ignored (saying why) where no Node >= 22.12 is available (scripts/node22.ts).
import { testWithNode22 as test } from "./helpers/processes.ts";

const DENO = new URL("../node_modules/deno/deno", import.meta.url).pathname;

/** Serves `upstream` on 127.0.0.1 and returns its URL plus a stop function (sessions first, then HTTP). */
function serveDemo(upstream: DemoUpstream): { url: URL; stop: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, upstream.fetch);
  return {
    url: new URL(`http://127.0.0.1:${server.addr.port}/mcp`),
    stop: async () => {
      await upstream.close();
      await server.shutdown();
    },
  };
}

async function connect(url: URL): Promise<Client> {
  const client = new Client({ name: "upstreams-test", version: "0.0.1" }, { capabilities: {} });
  await client.connect(new StreamableHTTPClientTransport(url));
  return client;
}

Deno.test("demo upstream serves the exact demo data to the SDK client", async () => {
  const upstream = createDemoUpstream();
  const { url, stop } = serveDemo(upstream);
  const client = await connect(url);
  try {
    const { tools } = await client.listTools();
    assertEquals(tools.map((t) => t.name).sort(), [
      "create_issue",
      "get_issue",
      "get_repo",
      "list_issues",
      "slow_echo",
    ]);

    const web = await client.callTool({ name: "get_repo", arguments: { repo: "acme/web" } });
    assertEquals(web.structuredContent, { full_name: "acme/web", visibility: "private" });
    assertEquals(web.content, [{ type: "text", text: '{"full_name":"acme/web","visibility":"private"}' }]);
    const site = await client.callTool({ name: "get_repo", arguments: { repo: "acme/public-site" } });
    assertEquals(site.structuredContent, { full_name: "acme/public-site", visibility: "public" });

    const list = await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
    const obj = list.structuredContent as { repo: string; total_count: number; items: unknown[] };
    assertEquals(obj.repo, "acme/web");
    assertEquals(obj.total_count, 3);
    assertEquals(obj.items, DEMO_ISSUES["acme/web"]);
    assertEquals(
      (obj.items as Array<{ title: string; author: string; author_association: string }>)
        .map((i) => [i.title, i.author, i.author_association]),
      [
        ["Rotate the staging keys", "alice", "MEMBER"],
        ["Leaked token in logs?", "mallory", "NONE"],
        ["Q3 launch plan", "carol", "OWNER"],
      ],
    );
    assertEquals(JSON.parse((list.content as Array<{ text: string }>)[0].text), obj);

    const publicIssues = await client.callTool({
      name: "list_issues",
      arguments: { repo: "acme/public-site" },
    });
    assertEquals(
      (publicIssues.structuredContent as { items: Array<{ number: number; title: string; author: string }> })
        .items
        .map((i) => [i.number, i.title, i.author]),
      [[1, "Typo on the homepage", "dave"], [2, "Add dark mode", "erin"]],
    );

    const issue = await client.callTool({ name: "get_issue", arguments: { repo: "acme/web", number: 2 } });
    assertEquals(issue.structuredContent, { ...DEMO_ISSUES["acme/web"][1], repo: "acme/web" });

    const missing = await client.callTool({ name: "get_repo", arguments: { repo: "acme/nope" } });
    assertEquals(missing.isError, true);
    assertEquals(missing.content, [{ type: "text", text: "Repository not found: acme/nope" }]);
  } finally {
    await client.close();
    await stop();
  }
});

/** Simulated upstream latency used by the latency test: long enough to dwarf loopback round trips. */
const TEST_LATENCY_MS = 60;
/** Timers fire on a millisecond clock; a wait may be measured up to this much short of its delay. */
const TIMER_GRANULARITY_MS = 1;

Deno.test("demo upstream latencyMs: every tools/call waits at least that long", async () => {
  const upstream = createDemoUpstream({ latencyMs: TEST_LATENCY_MS });
  const { url, stop } = serveDemo(upstream);
  const client = await connect(url);
  try {
    for (
      const [name, args] of [["get_repo", { repo: "acme/web" }], ["list_issues", {
        repo: "acme/web",
      }]] as const
    ) {
      const t0 = performance.now();
      const res = await client.callTool({ name, arguments: args });
      const elapsed = performance.now() - t0;
      assertEquals(res.isError, undefined, `${name} failed: ${JSON.stringify(res)}`);
      assert(
        elapsed >= TEST_LATENCY_MS - TIMER_GRANULARITY_MS,
        `${name} answered after ${elapsed.toFixed(1)} ms, before the simulated ${TEST_LATENCY_MS} ms`,
      );
    }
    const web = await client.callTool({ name: "get_repo", arguments: { repo: "acme/web" } });
    assertEquals(web.structuredContent, { full_name: "acme/web", visibility: "private" });
    assertEquals(upstream.stats(), { get_repo: 2, list_issues: 1 });
  } finally {
    await client.close();
    await stop();
  }
});

Deno.test("demo upstream latencyMs: a value that is not an integer from 0 to 60000 is a RangeError", () => {
  for (const bad of [-1, 1.5, 60_001, Number.NaN, Infinity, "5" as unknown as number]) {
    const err = assertThrows(() => createDemoUpstream({ latencyMs: bad }), RangeError);
    assertStringIncludes(err.message, "latencyMs");
  }
  // The bounds themselves are accepted (nothing is started until a request arrives).
  for (const ok of [0, MAX_DEMO_LATENCY_MS]) createDemoUpstream({ latencyMs: ok });
});

Deno.test("demo upstream create_issue is kept per instance and counted in stats()", async () => {
  const upstream = createDemoUpstream();
  const { url, stop } = serveDemo(upstream);
  const client = await connect(url);
  try {
    const created = await client.callTool({
      name: "create_issue",
      arguments: { repo: "acme/web", title: "Flaky deploy", body: "The deploy job fails one time in five." },
    });
    assertEquals(created.structuredContent, { number: 4, repo: "acme/web", created: true });
    const list = await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
    assertEquals((list.structuredContent as { total_count: number }).total_count, 4);
    // Invalid arguments still reached the upstream, so they are counted too.
    const bad = await client.callTool({ name: "create_issue", arguments: { repo: "acme/web" } });
    assertEquals(bad.isError, true);
    assertEquals(upstream.stats(), { create_issue: 2, list_issues: 1 });

    // A second instance starts from the pristine data.
    const other = createDemoUpstream();
    const second = serveDemo(other);
    const client2 = await connect(second.url);
    try {
      const fresh = await client2.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
      assertEquals((fresh.structuredContent as { total_count: number }).total_count, 3);
      assertEquals(other.stats(), { list_issues: 1 });
    } finally {
      await client2.close();
      await second.stop();
    }
  } finally {
    await client.close();
    await stop();
  }
});

Deno.test("demo upstream slow_echo reports progress and honours cancellation", async () => {
  const upstream = createDemoUpstream();
  const { url, stop } = serveDemo(upstream);
  const client = await connect(url);
  try {
    const progress: number[] = [];
    const done = await client.callTool({ name: "slow_echo", arguments: { text: "hi", ms: 200 } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    assertEquals(done.structuredContent, { text: "hi", waited_ms: 200 });
    assertGreater(progress.length, 1);
    assertEquals(progress, [...progress].sort((a, b) => a - b));

    const ac = new AbortController();
    const call = client.callTool({ name: "slow_echo", arguments: { text: "never", ms: 30_000 } }, undefined, {
      signal: ac.signal,
      onprogress: () => ac.abort("test cancels"),
    });
    await assertRejects(() => call, Error, "test cancels");
    // The session stays usable after a cancellation.
    const again = await client.callTool({ name: "get_repo", arguments: { repo: "acme/web" } });
    assertEquals(again.isError, undefined);
  } finally {
    await client.close();
    await stop();
  }
});

Deno.test("demo upstream handler: sessions, 404 for unknown or deleted sessions, 400/405", async () => {
  const upstream = createDemoUpstream();
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  const post = (body: unknown, extra: Record<string, string> = {}) =>
    upstream.fetch(
      new Request("http://demo.local/any/path", {
        method: "POST",
        headers: { ...headers, ...extra },
        body: JSON.stringify(body),
      }),
    );
  try {
    const init = await post({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "0" } },
    });
    assertEquals(init.status, 200);
    const sid = init.headers.get("mcp-session-id");
    assert(sid, "initialize must return a session id");
    assertStringIncludes(await init.text(), "mcp-edge-guard-demo-upstream");
    assertEquals(upstream.sessionCount(), 1);

    const notInit = await post({ jsonrpc: "2.0", id: 2, method: "tools/list" });
    assertEquals(notInit.status, 400);
    await notInit.body?.cancel();
    assertEquals(upstream.sessionCount(), 1);

    const unknown = await post({ jsonrpc: "2.0", id: 3, method: "tools/list" }, { "mcp-session-id": "nope" });
    assertEquals(unknown.status, 404);
    assertEquals((await unknown.json()).error.code, -32001);

    const del = await upstream.fetch(
      new Request("http://demo.local/mcp", { method: "DELETE", headers: { "mcp-session-id": sid } }),
    );
    assertEquals(del.status, 200);
    await del.body?.cancel();
    assertEquals(upstream.sessionCount(), 0);
    const after = await post({ jsonrpc: "2.0", id: 4, method: "tools/list" }, { "mcp-session-id": sid });
    assertEquals(after.status, 404);
    await after.body?.cancel();

    const get = await upstream.fetch(new Request("http://demo.local/mcp", { method: "GET" }));
    assertEquals(get.status, 400);
    await get.body?.cancel();
    const put = await upstream.fetch(new Request("http://demo.local/mcp", { method: "PUT", body: "{}" }));
    assertEquals(put.status, 405);
    assertEquals(put.headers.get("allow"), "GET, POST, DELETE");
    await put.body?.cancel();
  } finally {
    await upstream.close();
  }
});

test("conformance 0.1.16 knows exactly the server scenarios we record", async () => {
  assertEquals(
    (await listServerScenarios()).sort(),
    [...ACTIVE_SERVER_SCENARIOS, ...PENDING_SERVER_SCENARIOS].sort(),
  );
});

test("conformance suite (all server scenarios) passes against our fixture", async () => {
  await using fixture = await startConformanceUpstream({ port: 0 });
  const report = await runConformance(fixture.url, { suite: "all" });
  const expected: Record<string, string> = {};
  for (const s of ACTIVE_SERVER_SCENARIOS) expected[s] = "pass";
  expected["json-schema-2020-12"] = "pass";
  // Warnings only: the scenario's raw POST claims protocol 2025-03-26, for which no priming event is due.
  expected["server-sse-polling"] = "warning";
  assertEquals(report.verdicts, expected, report.output);
  assertEquals(report.exitCode, 0, report.output);
  const checks = Object.values(report.scenarios).reduce((n, s) => n + s.passed, 0);
  console.log(
    `conformance --suite all: ${ACTIVE_SERVER_SCENARIOS.length}/${ACTIVE_SERVER_SCENARIOS.length} active ` +
      `scenarios pass, ${checks} checks passed, ${report.durationMs} ms`,
  );
});

test("conformance fixture runs as its own process and rejects DNS rebinding", async () => {
  const port = freePort();
  await using fixture = await startProcess(DENO, {
    args: ["run", "-A", "test/fixtures/conformance-upstream.ts", "--port", String(port)],
    waitForStdout: /^listening (\S+)$/m,
  });
  const url = fixture.readyMatch![1];
  assertEquals(url, `http://127.0.0.1:${port}/mcp`);
  const report = await runConformance(url, { scenario: "dns-rebinding-protection" });
  assertEquals(report.verdicts, { "dns-rebinding-protection": "pass" }, report.output);
  const evil = await fetch(url, {
    method: "POST",
    headers: { origin: "http://evil.example.com" },
    body: "{}",
  });
  assertEquals(evil.status, 403);
  assertStringIncludes((await evil.json()).error.message, "Invalid Origin header: http://evil.example.com");
});

test("runConformance: timeout kills the CLI and removes its output directory", async () => {
  const tempRoot = await Deno.makeTempDir({ prefix: "conformance-root-" });
  try {
    // Nothing listens on this port: the CLI keeps failing, but the bound is far shorter than Node's start.
    await assertRejects(
      () => runConformance(`http://127.0.0.1:${freePort()}/mcp`, { timeoutMs: 50, tempRoot }),
      ConformanceTimeoutError,
      "did not finish within 50 ms",
    );
    assertEquals([...Deno.readDirSync(tempRoot)], []);
  } finally {
    await Deno.remove(tempRoot, { recursive: true });
  }
});

Deno.test("summarizeChecks: fail beats warning beats pass; INFO is ignored", () => {
  const info = { id: "i", status: "INFO" };
  assertEquals(summarizeChecks([info]).verdict, "inconclusive");
  assertEquals(summarizeChecks([info, { id: "a", status: "SUCCESS" }]).verdict, "pass");
  const warned = summarizeChecks([{ id: "a", status: "SUCCESS" }, {
    id: "w",
    status: "WARNING",
    errorMessage: "m",
  }]);
  assertEquals(warned.verdict, "warning");
  assertEquals(warned.problems, ["w: m"]);
  const failed = summarizeChecks([{ id: "w", status: "WARNING" }, {
    id: "f",
    status: "FAILURE",
    errorMessage: "x",
  }]);
  assertEquals([failed.verdict, failed.failed, failed.warnings], ["fail", 1, 1]);
  assertEquals(failed.checks, { f: "FAILURE", w: "WARNING" });
});

test("server-everything runs on a free port, the SDK client lists its tools, it is stopped by pid", async () => {
  const port = freePort();
  const proc = await startProcess(NODE22, {
    args: ["node_modules/@modelcontextprotocol/server-everything/dist/index.js", "streamableHttp"],
    // An empty environment: its get-env tool echoes the environment back.
    env: { PORT: String(port) },
    clearEnv: true,
    waitForPort: port,
  });
  try {
    const client = await connect(new URL(`http://127.0.0.1:${port}/mcp`));
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      for (const tool of ["echo", "get-sum", "trigger-long-running-operation"]) {
        assert(names.includes(tool), tool);
      }
      const echo = await client.callTool({ name: "echo", arguments: { message: "through the harness" } });
      assertEquals(echo.content, [{ type: "text", text: "Echo: through the harness" }]);
    } finally {
      await client.close();
    }
  } finally {
    await proc.stop();
  }
  // Stopped for real: its port no longer accepts connections.
  await assertRejects(() => Deno.connect({ hostname: "127.0.0.1", port }), Deno.errors.ConnectionRefused);
});

test("startProcess reports a process that exits before it is ready", async () => {
  const err = await assertRejects(
    () =>
      startProcess(NODE22, {
        args: ["-e", "console.error('boom'); process.exit(3)"],
        waitForPort: freePort(),
        cwd: REPO_ROOT,
      }),
    ProcessExitedError,
  );
  assertEquals(err.status.code, 3);
  assertStringIncludes(err.output, "boom");
});

test("startProcess kills a process that does not become ready in time", async () => {
  const err = await assertRejects(
    () =>
      startProcess(NODE22, {
        args: ["-e", "console.log('idle'); setInterval(() => {}, 1000)"],
        waitForPort: freePort(),
        startTimeoutMs: 500,
      }),
    ProcessStartTimeoutError,
    "within 500 ms",
  );
  assertStringIncludes(err.output, "idle");
});

Deno.test("freePort gives a port that can be bound on 127.0.0.1", () => {
  const port = freePort();
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  assertEquals((listener.addr as Deno.NetAddr).port, port);
  listener.close();
});
