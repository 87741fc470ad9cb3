/**
 * Isolation: no data of one request reaches another through guard memory or shared state. The probe
 * guard (test/fixtures/wat/hostile/leak.wat) answers each call with whatever its static buffer held
 * before and then stores its own input there; a fresh instance per request must always see zeros.
 */
import { assert, assertEquals } from "@std/assert";
import type { GuardContext } from "../../src/difc/guard.ts";
import {
  callTool,
  fullRun,
  loadHostile,
  pool,
  rawUpstream,
  resultText,
  serve,
  startStressGateway,
} from "./harness.ts";

/** What the probe answers on an empty buffer. */
const CLEAN_AGENT = '{"agent":{"secrecy":[],"integrity":[]},"difc_mode":"filter"}';
const CLEAN_RESOURCE = '{"operation":"read","resource":{"description":"clean","secrecy":[],"integrity":[]}}';
const SESSIONS = fullRun() ? 20_000 : 2_000;
const GATEWAY_CALLS = fullRun() ? 20_000 : 2_000;

function ctx(): GuardContext {
  return {
    signal: new AbortController().signal,
    backend: () => Promise.reject(new Error("none")),
    log: () => {},
  };
}

Deno.test("isolation at the host: the probe remembers within a session, never across sessions", async () => {
  const guard = await loadHostile("leak");
  // Positive control: on one instance the probe does hand back the previous input.
  const same = guard.open(ctx());
  assertEquals(await same.labelResource("first-secret"), CLEAN_RESOURCE);
  assertEquals(await same.labelResource("second"), "first-secret");
  assertEquals(await same.labelResponse("resp-secret"), "");
  assertEquals(await same.labelResponse("x"), "resp-secret");
  same.close();

  // Many sessions, opened and used interleaved and concurrently: every call sees a clean buffer.
  const leaks: string[] = [];
  await pool(SESSIONS, 32, async (i) => {
    const s = guard.open(ctx());
    try {
      const a = await s.labelAgent(`policy-${i}`);
      const r = await s.labelResource(`secret-resource-${i}`);
      const p = await s.labelResponse(`secret-response-${i}`);
      if (a !== CLEAN_AGENT || r !== CLEAN_RESOURCE || p !== "") {
        leaks.push(`session ${i}: ${a} | ${r} | ${p}`);
      }
    } finally {
      s.close();
    }
  });
  assertEquals(leaks, []);
});

Deno.test("isolation with label-agent snapshots: restored sessions see the policy, never a request", async () => {
  // One policy for every session, so almost all of them start from the snapshot of the first.
  const guard = await loadHostile("leak", { labelAgentSnapshots: 16 });
  assert(guard.snapshotShape !== null, "the leak probe can be snapshotted");
  const policy = '{"allow-only":{"min-integrity":"none","repos":"all"}}';
  const leaks: string[] = [];
  await pool(SESSIONS, 32, async (i) => {
    const s = guard.open(ctx());
    try {
      const a = await s.labelAgent(policy);
      const r = await s.labelResource(`secret-resource-${i}`);
      const p = await s.labelResponse(`secret-response-${i}`);
      // Positive control on every 100th session: the snapshot holds this session's own policy
      // (label_agent's buffer), so a second label_agent answers it.
      const again = i % 100 === 0 ? await s.labelAgent("again") : policy;
      if (a !== CLEAN_AGENT || r !== CLEAN_RESOURCE || p !== "" || again !== policy) {
        leaks.push(`session ${i}: ${a} | ${r} | ${p} | ${again}`);
      }
    } finally {
      s.close();
    }
  });
  assertEquals(leaks, []);
  assertEquals(guard.snapshotStatus().map((x) => x.state), ["ready"]);
});

Deno.test("isolation through the gateway: concurrent agents never see each other's data", async () => {
  const up = await serve(rawUpstream((_name, args) => ({
    content: [{ type: "text", text: `echo:${String((args as { secret?: string }).secret)}` }],
  })));
  const probe = await loadHostile("leak");
  // Two servers with different policies share the guard module, so label_agent inputs differ too.
  const gw = await startStressGateway({
    servers: {
      a: {
        url: `${up.url}/mcp`,
        guard: "probe",
        policy: { "allow-only": { repos: ["acme/a"], "min-integrity": "none" } },
      },
      b: {
        url: `${up.url}/mcp`,
        guard: "probe",
        policy: { "allow-only": { repos: ["acme/b"], "min-integrity": "merged" } },
      },
    },
    guards: { probe },
  });
  try {
    const wrong: string[] = [];
    await pool(GATEWAY_CALLS, 64, async (i) => {
      const server = i % 2 === 0 ? "a" : "b";
      const secret = `secret-${i}-${crypto.randomUUID()}`;
      const r = await callTool(`${gw.base}/mcp/${server}`, `agent-${i % 7}`, undefined, i, "echo", {
        secret,
      });
      const text = resultText(r.msg?.result);
      if (r.status !== 200 || text !== `echo:${secret}`) {
        if (wrong.length < 10) wrong.push(`#${i}: HTTP ${r.status} ${JSON.stringify(r.all).slice(0, 300)}`);
        else wrong.length++;
      }
    });
    assertEquals(wrong, [], "every call answered with its own data only");
    const decisions = gw.logs.filter((l) => l.event === "tool_call").map((l) => l.decision);
    assertEquals(decisions.length, GATEWAY_CALLS);
    assert(decisions.every((d) => d === "allow"), "no probe ever saw a previous request's data");
  } finally {
    await gw.close();
    await up.close();
  }
});
