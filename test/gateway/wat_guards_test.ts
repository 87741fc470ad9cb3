/**
 * The DIFC pipeline through the real gateway with hand-written WAT guards (compiled by wabt, prepared
 * and metered by the real host): strict blocking, propagate accumulation, fail-closed guard failures
 * (trap, fuel, timeout, garbage output, label_agent error) followed by a working request, and the
 * built-in write-sink and noop guards.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";
import { API_KEY, compileWatGuards, connectAgent, startDemo, startTestGateway, texts } from "./harness.ts";

/** Fuel budget small enough that an endless loop ends in a few ms, large enough for the helpers. */
const SMALL_FUEL = 2_000_000;
/** Deadline that ends a spinning guard quickly when fuel is effectively unlimited. */
const TINY_TIMEOUT_MS = 100;
/** Fuel high enough that the deadline, not fuel, stops the spinning guard. */
const HUGE_FUEL = 1_000_000_000_000;

type RpcError = Error & { code?: number; data?: Record<string, unknown> };

async function callFails(client: Client, name: string, args: Record<string, unknown>): Promise<RpcError> {
  return await assertRejects(() => client.callTool({ name, arguments: args }), Error) as RpcError;
}

async function reflect(base: string, agent: string): Promise<{ secrecy: string[]; integrity: string[] }> {
  const r = await fetch(`${base}/reflect`, { headers: { authorization: API_KEY, "x-agent-id": agent } });
  return (await r.json()).agent.labels;
}

function hostileConfig(url: string, limits: Record<string, number>): Record<string, unknown> {
  return {
    mcpServers: {
      hostile: {
        type: "http",
        url,
        guard: "hostile",
        "guard-policies": { "allow-only": { repos: ["acme/web"], "min-integrity": "none" } },
      },
      badagent: {
        type: "http",
        url,
        guard: "hostile",
        "guard-policies": { "allow-only": { repos: ["acme/agent-fail"], "min-integrity": "none" } },
      },
    },
    guards: { hostile: { type: "wasm", path: "hostile.wasm" } },
    limits,
  };
}

Deno.test("hostile guard: trap, fuel, garbage output and label_agent error fail closed; the next call works", async () => {
  await using wat = await compileWatGuards(["hostile"]);
  await using demo = await startDemo();
  await using gw = await startTestGateway(hostileConfig(demo.url, { fuel: SMALL_FUEL }), {
    configBase: wat.base,
  });
  const client = await connectAgent(gw.url("hostile"), { agentId: "h1" });
  const bad = await connectAgent(gw.url("badagent"), { agentId: "h1" });
  try {
    const works = async () => {
      const r = await client.callTool({ name: "get_repo", arguments: { repo: "acme/web" } });
      assertEquals(JSON.parse(texts(r)[0]).visibility, "private");
    };
    await works();

    const trap = await callFails(client, "get_repo", { repo: "mode-trap" });
    assertEquals(trap.code, -32002);
    assertMatch(trap.message, /^MCP error -32002: guard labeling failed: /);
    assertEquals(trap.data?.kind, "trap");
    await works();

    const fuel = await callFails(client, "get_repo", { repo: "mode-spin" });
    assertMatch(fuel.message, /^MCP error -32002: guard labeling failed: /);
    assertEquals(fuel.data?.kind, "fuel");
    await works();

    const garbage = await callFails(client, "get_repo", { repo: "mode-garbage" });
    assertEquals(garbage.code, -32002);
    assertMatch(garbage.message, /^MCP error -32002: response labeling failed: /);
    await works();

    const init = await callFails(bad, "get_repo", { repo: "acme/web" });
    assertEquals(init.code, -32002);
    assertMatch(init.message, /^MCP error -32002: guard session initialization failed: /);
    await works();

    // Only the garbage call and the five good ones reached the upstream; trap/spin/init failed before it.
    assertEquals(demo.upstream.stats().get_repo, 6);
    const decisions = gw.logs.filter((r) => r.event === "tool_call").map((r) => r.decision);
    assertEquals(decisions, [
      "allow",
      "error",
      "allow",
      "error",
      "allow",
      "error",
      "allow",
      "error",
      "allow",
    ]);
  } finally {
    await client.close();
    await bad.close();
  }
});

Deno.test("hostile guard: a spin under a tiny limits.timeoutMs ends as a timeout; the next call works", async () => {
  await using wat = await compileWatGuards(["hostile"]);
  await using demo = await startDemo();
  await using gw = await startTestGateway(
    hostileConfig(demo.url, { fuel: HUGE_FUEL, timeoutMs: TINY_TIMEOUT_MS }),
    { configBase: wat.base },
  );
  const client = await connectAgent(gw.url("hostile"));
  try {
    const err = await callFails(client, "get_repo", { repo: "mode-spin" });
    assertMatch(err.message, /^MCP error -32002: guard labeling failed: /);
    assertEquals(err.data?.kind, "timeout");
    const r = await client.callTool({ name: "get_repo", arguments: { repo: "acme/public-site" } });
    assertEquals(JSON.parse(texts(r)[0]).visibility, "public");
  } finally {
    await client.close();
  }
});

Deno.test("strict guard: a response with one filtered item is blocked whole; a clean one passes untouched", async () => {
  await using wat = await compileWatGuards(["strict"]);
  await using demo = await startDemo();
  await using gw = await startTestGateway({
    mcpServers: {
      s: {
        type: "http",
        url: demo.url,
        guard: "strict",
        "guard-policies": { "allow-only": { repos: "all", "min-integrity": "none" } },
      },
    },
    guards: { strict: { type: "wasm", path: "strict.wasm" } },
  }, { configBase: wat.base });
  const client = await connectAgent(gw.url("s"), { agentId: "st" });
  try {
    const err = await callFails(client, "list_issues", { repo: "mixed" });
    assertEquals(err.code, -32001);
    assertMatch(
      err.message,
      /DIFC policy violation: 1 of 2 items in response are not accessible to agent st/,
    );
    assertEquals(demo.upstream.stats().list_issues, 1, "strict mode blocks after the upstream answered");
    const ok = await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
    assertEquals(JSON.parse(texts(ok)[0]).total_count, 3, "nothing filtered: the result is untouched");
    assertEquals(texts(ok).length, 1);
    const calls = gw.logs.filter((r) => r.event === "tool_call");
    assertEquals(calls.map((c) => [c.mode, c.decision]), [["strict", "block"], ["strict", "allow"]]);
  } finally {
    await client.close();
  }
});

Deno.test("propagate guard: reads are released and the agent's labels accumulate across calls (/reflect)", async () => {
  await using wat = await compileWatGuards(["propagate"]);
  await using demo = await startDemo();
  await using gw = await startTestGateway({
    mcpServers: {
      p: {
        type: "http",
        url: demo.url,
        guard: "prop",
        "guard-policies": { "allow-only": { repos: "all", "min-integrity": "none" } },
      },
    },
    guards: { prop: { type: "wasm", path: "propagate.wasm" } },
  }, { configBase: wat.base });
  const client = await connectAgent(gw.url("p"), { agentId: "pa" });
  try {
    assertEquals(await reflect(gw.base, "pa"), { secrecy: [], integrity: [] });
    await client.callTool({ name: "get_repo", arguments: { repo: "acme/web" } });
    assertEquals(await reflect(gw.base, "pa"), { secrecy: ["private:acme/web"], integrity: [] });
    await client.callTool({ name: "get_repo", arguments: { repo: "acme/public-site" } });
    assertEquals(await reflect(gw.base, "pa"), {
      secrecy: ["private:acme/web", "private:other"],
      integrity: [],
    });
    const calls = gw.logs.filter((r) => r.event === "tool_call");
    assertEquals(calls.map((c) => [c.mode, c.decision]), [["propagate", "allow"], ["propagate", "allow"]]);
  } finally {
    await client.close();
  }
});

Deno.test("write-sink and noop servers: a tainted agent may write to an accepting sink only; noop is strict read-write", async () => {
  await using demo = await startDemo();
  const server = (extra: Record<string, unknown>) => ({ type: "http", url: demo.url, ...extra });
  await using gw = await startTestGateway({
    mcpServers: {
      demo: server({ guard: "demo", "guard-policies": DEMO_POLICY }),
      sink: server({ "guard-policies": { "write-sink": { accept: ["private:acme/web"] } } }),
      publicsink: server({
        "guard-policies": { "write-sink": { accept: ["private:acme/web"], "sink-visibility": "public" } },
      }),
      plain: server({}),
    },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
  });
  const tainted = await connectAgent(gw.url("demo"), { agentId: "tainted" });
  const sink = await connectAgent(gw.url("sink"), { agentId: "tainted" });
  const publicSink = await connectAgent(gw.url("publicsink"), { agentId: "tainted" });
  const plainTainted = await connectAgent(gw.url("plain"), { agentId: "tainted" });
  const plainFresh = await connectAgent(gw.url("plain"), { agentId: "fresh" });
  try {
    await tainted.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
    const labels = await reflect(gw.base, "tainted");
    assertEquals(labels.secrecy, ["private:acme/web"]);
    assert(labels.integrity.length > 0);

    const issue = { repo: "acme/web", title: "t", body: "b" };
    const ok = await sink.callTool({ name: "create_issue", arguments: issue });
    assertEquals(JSON.parse(texts(ok)[0]).created, true);
    const blocked = await callFails(publicSink, "create_issue", issue);
    assertEquals(blocked.code, -32001);
    assertMatch(blocked.message, /DIFC Violation: Agent carries private \(acme\/web\)-scoped data/);
    assertEquals(demo.upstream.stats().create_issue, 1, "the public-sink write never reached the upstream");

    const fresh = await plainFresh.callTool({ name: "get_repo", arguments: { repo: "acme/web" } });
    assertEquals(JSON.parse(texts(fresh)[0]).full_name, "acme/web");
    const denied = await callFails(plainTainted, "get_repo", { repo: "acme/web" });
    assertEquals(denied.code, -32001);
    assertMatch(denied.message, /DIFC Violation: /);
    const byServer = gw.logs.filter((r) => r.event === "tool_call").map((
      r,
    ) => [r.server, r.mode, r.decision]);
    assertEquals(byServer, [
      ["demo", "filter", "filter"],
      ["sink", "filter", "allow"],
      ["publicsink", "filter", "deny"],
      ["plain", "strict", "allow"],
      ["plain", "strict", "deny"],
    ]);
  } finally {
    for (const c of [tainted, sink, publicSink, plainTainted, plainFresh]) await c.close();
  }
});
