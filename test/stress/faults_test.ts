/**
 * Faults: each broken upstream, stuck guard, vanished client or failing label store gets a clear error
 * within its deadline, nothing keeps running behind it, and the next request succeeds.
 */
import { assert, assertEquals, assertLess, assertStringIncludes } from "@std/assert";
import type { Labels } from "../../src/difc/labels.ts";
import { type AgentLabelStore, MemoryAgentLabelStore } from "../../src/difc/store.ts";
import { startProcess } from "../helpers/processes.ts";
import {
  callTool,
  loadDemoGuard,
  loadHostile,
  POST_HEADERS,
  rawUpstream,
  readMessages,
  resultText,
  type Rpc,
  serve,
  type Served,
  startStressGateway,
  type StressGateway,
  waitFor,
} from "./harness.ts";

/** The gateway's tool timeout in these tests (the smallest the config accepts: 1 s). */
const TOOL_TIMEOUT_S = 1;
/**
 * Bound on how long any fault may take to produce its error: far above every deadline involved, far
 * below "hangs". Not a performance assertion.
 */
const FAULT_BOUND_MS = 15_000;
/** Appears only in data a guard must withhold. */
const MARKER = "SECRET-MARKER-7f3a";
const POLICY = { "allow-only": { repos: ["acme/web"], "min-integrity": "approved" } };

interface Fault {
  healthy: boolean;
  calls: number;
  aborted: number;
}

const OK_RESULT = { content: [{ type: "text", text: "fine" }] };
const json = (v: unknown, status = 200) =>
  new Response(typeof v === "string" ? v : JSON.stringify(v), {
    status,
    headers: { "content-type": "application/json" },
  });
const sse = (...data: string[]) =>
  new Response(data.map((d) => `event: message\ndata: ${d}\n\n`).join(""), {
    headers: { "content-type": "text/event-stream" },
  });

/** The demo repo data a demo-guarded fake upstream serves: issue #2 (author NONE) must be filtered. */
const ISSUES = {
  repo: "acme/web",
  total_count: 2,
  items: [
    { number: 1, title: "ok", body: "readable", author: "alice", author_association: "MEMBER" },
    { number: 2, title: "bad", body: MARKER, author: "mallory", author_association: "NONE" },
  ],
};
const issuesResult = (id: unknown) => ({
  jsonrpc: "2.0",
  id,
  result: { content: [{ type: "text", text: JSON.stringify(ISSUES) }], structuredContent: ISSUES },
});

/** An upstream with one fault for tools/call until `healthy` is set; `get_repo` always answers. */
async function faulty(
  fault: (req: Request, id: unknown, state: Fault) => Response | Promise<Response>,
): Promise<{ state: Fault; up: Served }> {
  const state: Fault = { healthy: false, calls: 0, aborted: 0 };
  const up = await serve(rawUpstream(async (name, _args, req, id) => {
    if (name === "get_repo") {
      return { content: [{ type: "text", text: '{"full_name":"acme/web","visibility":"private"}' }] };
    }
    state.calls++;
    req.signal.addEventListener("abort", () => state.aborted++, { once: true });
    if (state.healthy) return name === "list_issues" ? issuesResult(id).result : OK_RESULT;
    return await fault(req, id, state);
  }));
  return { state, up };
}

/** Resolves when the request is aborted (the gateway gave up on it); never answers otherwise. */
function hang(req: Request): Promise<Response> {
  return new Promise((resolve) => {
    req.signal.addEventListener("abort", () => resolve(new Response(null, { status: 499 })), { once: true });
  });
}

function toolCalls(gw: StressGateway, server: string): Record<string, unknown>[] {
  return gw.logs.filter((l) => l.event === "tool_call" && l.server === server);
}

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await p;
  return [v, performance.now() - t0];
}

function errorOf(msg: Rpc | undefined): { code?: number; message?: string; data?: Record<string, unknown> } {
  return (msg?.error ?? {}) as { code?: number; message?: string; data?: Record<string, unknown> };
}

Deno.test("faults: broken upstreams, stuck guards and vanished clients get clear, bounded errors", async (t) => {
  const ups = {
    hang: await faulty((req) => hang(req)),
    "http-500": await faulty(() => new Response("upstream exploded", { status: 500 })),
    "bad-json": await faulty((_req, id) => json(JSON.stringify(issuesResult(id)) + "}")),
    "bad-sse": await faulty((_req, id) => sse(JSON.stringify(issuesResult(id)) + "}")),
    "dup-response": await faulty((_req, id) =>
      sse(JSON.stringify(issuesResult(id)), JSON.stringify(issuesResult(id)))
    ),
    "dup-json": await faulty((_req, id) => json([issuesResult(id), issuesResult(id)])),
    "stray-sse": await faulty((_req, id) =>
      sse(
        JSON.stringify({ jsonrpc: "2.0", id: null, result: { content: [{ type: "text", text: MARKER }] } }),
        JSON.stringify({ jsonrpc: "2.0", payload: MARKER }),
        JSON.stringify({ jsonrpc: "2.0", id: 12345, result: { content: [{ type: "text", text: MARKER }] } }),
        JSON.stringify(issuesResult(id)),
      )
    ),
    "html": await faulty(() => new Response("<html>hi</html>", { headers: { "content-type": "text/html" } })),
    "disconnect": await faulty((req) => hang(req)),
    "spin": await faulty(() => json({})),
    "spin-disconnect": await faulty(() => json({})),
  };
  const probe = await loadHostile("leak"); // on a fresh instance: every call a public read, nothing filtered
  const spin = await loadHostile("infinite_loop", { fuel: Number.MAX_SAFE_INTEGER, timeoutMs: 60_000 });
  const demo = await loadDemoGuard();
  const demoGuarded = new Set(["bad-json", "bad-sse", "dup-response", "dup-json", "stray-sse"]);
  const servers = Object.fromEntries(
    Object.entries(ups).map(([id, u]) => [id, {
      url: `${u.up.url}/mcp`,
      guard: id.startsWith("spin") ? "spin" : demoGuarded.has(id) ? "demo" : "probe",
      policy: POLICY,
    }]),
  );
  const gw = await startStressGateway({
    servers,
    guards: { probe, spin, demo },
    toolTimeoutSeconds: TOOL_TIMEOUT_S,
  });
  const url = (s: string) => `${gw.base}/mcp/${s}`;
  const tool = (s: string) => (demoGuarded.has(s) ? "list_issues" : "probe");
  const args = { repo: "acme/web" };
  /** After the fault: the same server answers once its upstream is healthy again. */
  const recovers = async (s: keyof typeof ups) => {
    ups[s].state.healthy = true;
    const r = await callTool(url(s), "agent-f", undefined, 99, tool(s), args);
    assertEquals(r.status, 200, `${s} recovers: ${JSON.stringify(r.all)}`);
    const text = resultText(r.msg?.result);
    assert(demoGuarded.has(s) ? text.includes("[Filtered] 1 item(s)") : text === "fine", `${s}: ${text}`);
    assert(!text.includes(MARKER));
  };

  try {
    await t.step("upstream never answers: 504 at the tool timeout, upstream fetch aborted", async () => {
      const [r, ms] = await timed(callTool(url("hang"), "agent-f", undefined, 1, "probe", {}));
      assertEquals(r.status, 504);
      assertEquals(errorOf(r.msg).code, -32001);
      assertStringIncludes(errorOf(r.msg).message!, "timed out after 1000 ms");
      assertLess(ms, FAULT_BOUND_MS);
      await waitFor(() => ups.hang.state.aborted === 1, "the upstream saw its request aborted");
      assertEquals(toolCalls(gw, "hang").at(-1)?.decision, "aborted", "the guard session was closed");
      await recovers("hang");
    });

    await t.step("guard that never finishes: -32002 at the tool timeout, upstream never called", async () => {
      const [r, ms] = await timed(callTool(url("spin"), "agent-f", undefined, 2, "probe", {}));
      assertEquals(r.status, 200);
      assertEquals(errorOf(r.msg).code, -32002);
      assertEquals(errorOf(r.msg).data?.kind, "aborted");
      assertStringIncludes(errorOf(r.msg).message!, "timed out after 1000 ms");
      assertLess(ms, FAULT_BOUND_MS);
      assertEquals(ups.spin.state.calls, 0);
    });

    await t.step(
      "upstream 5xx: status kept, a gateway-written JSON-RPC error, guard session aborted",
      async () => {
        const r = await fetch(url("http-500"), {
          method: "POST",
          headers: { ...POST_HEADERS, "x-agent-id": "agent-f" },
          body: JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "probe" } }),
        });
        const text = await r.text();
        assertEquals(r.status, 500);
        assert(!text.includes("upstream exploded"), `the upstream's body reached the agent: ${text}`);
        const msg = JSON.parse(text);
        assertEquals(msg.id, 3);
        assertStringIncludes(msg.error.message, "answered HTTP 500 (Internal Server Error)");
        const rec = toolCalls(gw, "http-500").at(-1);
        assertEquals(rec?.decision, "aborted");
        assertStringIncludes(String(rec?.error), "answered HTTP 500");
        await recovers("http-500");
      },
    );

    await t.step("malformed JSON body: 502 JSON-RPC error, nothing of it released", async () => {
      const r = await callTool(url("bad-json"), "agent-f", undefined, 4, "list_issues", args);
      assertEquals(r.status, 502);
      assertStringIncludes(errorOf(r.msg).message!, "sent invalid JSON");
      assert(!JSON.stringify(r.all).includes(MARKER));
      await recovers("bad-json");
    });

    await t.step("malformed SSE data: withheld, the call gets an error, nothing of it released", async () => {
      const res = await fetch(url("bad-sse"), {
        method: "POST",
        headers: { ...POST_HEADERS, "x-agent-id": "agent-f" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 5,
          method: "tools/call",
          params: { name: "list_issues", arguments: args },
        }),
      });
      const text = await res.text();
      assert(!text.includes(MARKER), `unguarded upstream bytes reached the agent: ${text.slice(0, 300)}`);
      assertStringIncludes(text, "before sending the response");
      await recovers("bad-sse");
    });

    await t.step("duplicate and stray responses are withheld (SSE and JSON)", async () => {
      for (const [s, id] of [["dup-response", 6], ["dup-json", 7], ["stray-sse", 16]] as const) {
        const res = await fetch(url(s), {
          method: "POST",
          headers: { ...POST_HEADERS, "x-agent-id": "agent-f" },
          body: JSON.stringify({
            jsonrpc: "2.0",
            id,
            method: "tools/call",
            params: { name: "list_issues", arguments: args },
          }),
        });
        const msgs = await readMessages(res);
        assert(!JSON.stringify(msgs).includes(MARKER), `${s}: unfiltered duplicate released`);
        assertEquals(msgs.filter((m) => m.id === id).length, 1, `${s}: exactly one response`);
        assertEquals(
          msgs.length,
          1,
          `${s}: only the guarded response: ${JSON.stringify(msgs).slice(0, 300)}`,
        );
        assertStringIncludes(resultText(msgs[0].result), "[Filtered] 1 item(s)");
        await recovers(s);
      }
    });

    await t.step(
      "wrong content type: 502 JSON-RPC error (the type is upstream text: not repeated)",
      async () => {
        const r = await callTool(url("html"), "agent-f", undefined, 8, "probe", {});
        assertEquals(r.status, 502);
        assertStringIncludes(errorOf(r.msg).message!, "unsupported content-type");
        await recovers("html");
      },
    );

    await t.step(
      "client disconnects while the upstream works: upstream fetch and guard aborted",
      async () => {
        const ac = new AbortController();
        const call = callTool(url("disconnect"), "agent-f", undefined, 9, "probe", {}, ac.signal).catch((e) =>
          e
        );
        await waitFor(() => ups.disconnect.state.calls === 1, "the call reached the upstream");
        ac.abort();
        assert(await call instanceof Error);
        await waitFor(() => ups.disconnect.state.aborted === 1, "the upstream saw its request aborted");
        await waitFor(
          () => toolCalls(gw, "disconnect").at(-1)?.decision === "aborted",
          "guard session aborted",
        );
        await recovers("disconnect");
      },
    );

    await t.step(
      "client disconnects while the guard computes: guard aborted, upstream never called",
      async () => {
        const ac = new AbortController();
        const before = toolCalls(gw, "spin-disconnect").length;
        const call = callTool(url("spin-disconnect"), "agent-f", undefined, 10, "probe", {}, ac.signal)
          .catch((e) => e);
        await new Promise((r) => setTimeout(r, 100));
        ac.abort();
        assert(await call instanceof Error);
        await waitFor(() => toolCalls(gw, "spin-disconnect").length > before, "the call was logged");
        const rec = toolCalls(gw, "spin-disconnect").at(-1)!;
        assertEquals(rec.decision, "error");
        assertStringIncludes(String(rec.error), "call aborted");
        assert(
          !String(rec.error).includes("timed out"),
          `aborted by the client, not the timeout: ${rec.error}`,
        );
        assertEquals(ups["spin-disconnect"].state.calls, 0);
      },
    );

    await t.step(
      "upstream process killed mid-SSE-stream: the call gets an error, the stream ends",
      async () => {
        const proc = await startProcess(Deno.execPath(), {
          args: ["run", "--allow-net", "test/stress/sse_upstream_proc.ts"],
          waitForStdout: /PORT (\d+)/,
        });
        const local = await startStressGateway({
          servers: {
            dying: { url: `http://127.0.0.1:${proc.readyMatch![1]}/mcp`, guard: "probe", policy: POLICY },
            ok: { url: `${ups.hang.up.url}/mcp`, guard: "probe", policy: POLICY },
          },
          guards: { probe },
        });
        try {
          const res = await fetch(`${local.base}/mcp/dying`, {
            method: "POST",
            headers: { ...POST_HEADERS, "x-agent-id": "agent-f" },
            // Progress reaches the agent of a guarded server only for its own request's token.
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: 11,
              method: "tools/call",
              params: { name: "probe", _meta: { progressToken: "p-11" } },
            }),
          });
          assertEquals(res.headers.get("content-type"), "text/event-stream");
          const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
          let text = "";
          while (!text.includes("notifications/progress")) {
            const { value, done } = await reader.read();
            assert(!done, "the stream carried the progress event first");
            text += value;
          }
          Deno.kill(proc.pid, "SIGKILL");
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            text += value;
          }
          const msgs = text.split("\n").filter((l) => l.startsWith("data: ")).map((l) =>
            JSON.parse(l.slice(6))
          );
          const answer = msgs.find((m) => m.id === 11);
          assertEquals(answer?.error?.code, -32000, text);
          assertStringIncludes(answer.error.message, 'upstream "dying"');
          assertEquals(toolCalls(local, "dying").at(-1)?.decision, "aborted");
          // The dead upstream now answers with a clear 502; another server is unaffected.
          const dead = await callTool(`${local.base}/mcp/dying`, "agent-f", undefined, 12, "probe", {});
          assertEquals(dead.status, 502);
          assertStringIncludes(errorOf(dead.msg).message!, "unreachable");
          const ok = await callTool(`${local.base}/mcp/ok`, "agent-f", undefined, 13, "probe", {});
          assertEquals(resultText(ok.msg?.result), "fine");
        } finally {
          await proc.stop();
          await local.close();
        }
      },
    );

    await t.step("label store failure: fails closed with -32003, then recovers", async () => {
      let failing = true;
      const inner = new MemoryAgentLabelStore();
      const guardIt = <T>(fn: () => Promise<T>) =>
        failing ? Promise.reject(new Error("label database unavailable")) : fn();
      const store: AgentLabelStore = {
        get: (a) => guardIt(() => inner.get(a)),
        addLabels: (a, l: Labels, k?: string) => guardIt(() => inner.addLabels(a, l, k)),
        propagate: (a, l: Labels) => guardIt(() => inner.propagate(a, l)),
        snapshot: () => guardIt(() => inner.snapshot()),
        reset: (a) => guardIt(() => inner.reset(a)),
      };
      const local = await startStressGateway({
        servers: { s: { url: `${ups.hang.up.url}/mcp`, guard: "probe", policy: POLICY } },
        guards: { probe },
        store,
      });
      try {
        const before = ups.hang.state.calls;
        const r = await callTool(`${local.base}/mcp/s`, "agent-f", undefined, 14, "probe", {});
        assertEquals(errorOf(r.msg).code, -32003);
        assertStringIncludes(errorOf(r.msg).message!, "agent label store failed: label database unavailable");
        assertEquals(ups.hang.state.calls, before, "nothing reached the upstream");
        failing = false;
        const ok = await callTool(`${local.base}/mcp/s`, "agent-f", undefined, 15, "probe", {});
        assertEquals(resultText(ok.msg?.result), "fine");
      } finally {
        await local.close();
      }
    });
  } finally {
    await gw.close();
    for (const u of Object.values(ups)) await u.up.close();
  }
});
