/**
 * Upstream failure while an SSE response is streaming through the gateway, and gateway shutdown with
 * streams still open.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";
import { freePort, type ManagedProcess, startProcess } from "../helpers/processes.ts";
import {
  API_KEY,
  connectAgent,
  initializeBody,
  rawPost,
  startDemo,
  startTestGateway,
  texts,
  within,
} from "./harness.ts";

const UPSTREAM_MAIN = new URL("./demo_upstream_main.ts", import.meta.url).pathname;

/** Bound on each call that must not hang. */
const CALL_TIMEOUT_MS = 10_000;

function startUpstreamProcess(port: number): Promise<ManagedProcess> {
  return startProcess(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", "--allow-env", UPSTREAM_MAIN, "--port", String(port)],
    waitForPort: port,
  });
}

Deno.test("upstream killed mid-SSE-stream: JSON-RPC error for the call, no hang; works again after a restart", async () => {
  const port = freePort();
  let proc = await startUpstreamProcess(port);
  try {
    await using gw = await startTestGateway({
      mcpServers: {
        demo: {
          type: "http",
          url: `http://127.0.0.1:${port}/mcp`,
          guard: "demo",
          "guard-policies": DEMO_POLICY,
        },
        // The demo guard labels slow_echo a write; a noop server lets a label-free agent stream it.
        plain: { type: "http", url: `http://127.0.0.1:${port}/mcp` },
      },
      guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
    });
    const client = await connectAgent(gw.url("plain"), { agentId: "k" });
    const unified = await connectAgent(gw.url(), { agentId: "k" });
    try {
      const progress: number[] = [];
      const doomed = client.callTool({ name: "slow_echo", arguments: { text: "x", ms: 20_000 } }, undefined, {
        onprogress: (p) => {
          progress.push(p.progress);
          if (progress.length === 1) proc.stop(0);
        },
        timeout: CALL_TIMEOUT_MS * 2,
      });
      const err = await assertRejects(() => within(CALL_TIMEOUT_MS, "killed call", doomed), Error) as
        & Error
        & {
          code?: number;
        };
      assertEquals(err.code, -32000, err.message);
      assertMatch(err.message, /upstream "plain" stream failed/);
      assert(progress.length >= 1, "progress arrived before the kill");
      await proc.status;
      const aborted = gw.logs.filter((r) => r.event === "tool_call").map((r) => r.decision);
      assertEquals(aborted, ["aborted"]);

      proc = await startUpstreamProcess(port);
      // The upstream lost its sessions: a fresh agent session works at once.
      const fresh = await connectAgent(gw.url("demo"), { agentId: "k" });
      try {
        const r = await within(
          CALL_TIMEOUT_MS,
          "call after restart",
          fresh.callTool({ name: "list_issues", arguments: { repo: "acme/web" } }),
        );
        assertEquals(JSON.parse(texts(r)[0]).items.length, 2);
      } finally {
        await fresh.close();
      }
      // The unified session re-initializes its upstream link: the first call sees the lost session,
      // the next one works on the same gateway session.
      const first = await within(
        CALL_TIMEOUT_MS,
        "unified first call",
        unified.callTool({ name: "demo___get_repo", arguments: { repo: "acme/web" } }).then(
          () => "ok",
          (e) => e,
        ),
      );
      const second = await within(
        CALL_TIMEOUT_MS,
        "unified second call",
        unified.callTool({ name: "demo___get_repo", arguments: { repo: "acme/web" } }),
      );
      assertEquals(JSON.parse(texts(second)[0]).full_name, "acme/web");
      // The upstream's 404 (its session is gone) reaches the agent as the gateway's error, code only.
      assertMatch(String(first), /upstream \\"demo\\" answered tools\/call with error -32001/);
    } finally {
      await client.close();
      await unified.close();
    }
  } finally {
    await proc.stop();
  }
});

Deno.test("gateway close ends open GET and POST streams, so the server shuts down", async () => {
  await using demo = await startDemo();
  const gw = await startTestGateway({ mcpServers: { demo: { type: "http", url: demo.url } } });
  const init = await rawPost(gw.url("demo"), initializeBody());
  await init.body?.cancel();
  const sid = init.headers.get("mcp-session-id")!;
  const headers = { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" };
  const done = await rawPost(
    gw.url("demo"),
    JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    headers,
  );
  await done.body?.cancel();
  const get = await fetch(gw.url("demo"), {
    headers: { authorization: API_KEY, accept: "text/event-stream", ...headers },
  });
  assertEquals(get.status, 200);
  const slow = await rawPost(
    gw.url("demo"),
    JSON.stringify({
      jsonrpc: "2.0",
      id: 9,
      method: "tools/call",
      params: { name: "slow_echo", arguments: { text: "x", ms: 30_000 } },
    }),
    headers,
  );
  assertEquals(slow.headers.get("content-type"), "text/event-stream");
  // Neither stream is read or cancelled by the agent: close() alone must end them.
  await within(CALL_TIMEOUT_MS, "gateway shutdown with open streams", gw.close());
  assertEquals(await within(CALL_TIMEOUT_MS, "GET body", get.text()), "");
  const tail = await within(CALL_TIMEOUT_MS, "POST body", slow.text());
  assertMatch(tail, /"id":9/);
  assertMatch(tail, /"error"/);
});
