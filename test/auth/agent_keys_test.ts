/**
 * Per-agent keys: the agent id comes from the key, `X-Agent-ID` cannot change it, and the per-agent
 * state (tool-call budget, labels, sessions, decision log) follows the authenticated id. The issue's
 * attack (a fresh `X-Agent-ID` for a fresh budget) is reproduced against the shared key, where it is the
 * documented behaviour, and against per-agent keys, where it now fails.
 */
import { assert, assertEquals, assertMatch, assertRejects, assertStringIncludes } from "@std/assert";
import { authGateway, CREATE, LIST, sha256Hex } from "./harness.ts";
import { AuthError, constantTimeEqualBytes, createAuthenticator } from "../../src/http/auth.ts";

const ALICE_KEY = "alice-key-0123456789abcdef";
const BOB_KEY = "bob-key-fedcba9876543210";
const SHARED = "shared-key-trusts-the-caller";

async function gatewayWithAgents() {
  return await authGateway({
    apiKey: SHARED,
    agents: { alice: { apiKey: ALICE_KEY }, bob: { apiKeySha256: await sha256Hex(BOB_KEY) } },
  });
}

Deno.test("agent keys: the shared key trusts the caller (the issue's attack works there, as documented)", async () => {
  await using t = await gatewayWithAgents();
  const a = await t.connect({ authorization: `Bearer ${SHARED}`, "x-agent-id": "worker-1" });
  await a.callTool(CREATE);
  const refused = await assertRejects(() => a.callTool(CREATE));
  assertStringIncludes(refused.message, "-32004");
  // A fresh name is a fresh agent: this is what "trusts the caller" means.
  const fresh = await t.connect({ authorization: `Bearer ${SHARED}`, "x-agent-id": "fresh-1" });
  await fresh.callTool(CREATE);
  assertEquals(t.demo.stats().create_issue, 2);
});

Deno.test("agent keys: changing X-Agent-ID cannot reset the budget (403), the key's budget holds", async () => {
  await using t = await gatewayWithAgents();
  const alice = await t.connect({ authorization: `Bearer ${ALICE_KEY}` });
  await alice.callTool(CREATE);
  const limit = await assertRejects(() => alice.callTool(CREATE));
  assertStringIncludes(limit.message, "-32004");

  // The attack: same key, a new X-Agent-ID.
  for (const fresh of ["fresh-1", "fresh-2", "bob"]) {
    const r = await t.request("/mcp/demo", {
      authorization: `Bearer ${ALICE_KEY}`,
      "x-agent-id": fresh,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    }, {
      method: "POST",
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } },
      }),
    });
    assertEquals(r.status, 403, r.text);
    assertEquals(r.body.error, "agent_id_mismatch");
    assertStringIncludes(
      String(r.body.message),
      `"${fresh}" is not the agent authenticated by this key ("alice")`,
    );
  }
  // Sending the key's own id is fine, and the budget is still spent.
  const again = await t.connect({ authorization: `Bearer ${ALICE_KEY}`, "x-agent-id": "alice" });
  const still = await assertRejects(() => again.callTool(CREATE));
  assertStringIncludes(still.message, "-32004");
  assertEquals(t.demo.stats().create_issue, 1, "one call reached the upstream");

  // Bob (configured by hash) has his own budget.
  const bob = await t.connect({ authorization: BOB_KEY });
  await bob.callTool(CREATE);
  assertEquals(t.demo.stats().create_issue, 2);
});

Deno.test("agent keys: labels cannot be shed by a new X-Agent-ID; the shared key cannot take a keyed agent's name", async () => {
  await using t = await gatewayWithAgents();
  const alice = await t.connect({ authorization: `Bearer ${ALICE_KEY}` });
  await alice.callTool(LIST);
  const r1 = await t.request("/reflect", { authorization: `Bearer ${ALICE_KEY}` });
  assertEquals(r1.status, 200);
  const agent = r1.body.agent as {
    id: string;
    labels: { secrecy: string[]; integrity: string[] };
    authentication: Record<string, unknown>;
  };
  assertEquals(agent.id, "alice");
  assertEquals(agent.authentication, { method: "agent-key", agentIdFrom: "agent-key" });
  assert(agent.labels.secrecy.length + agent.labels.integrity.length > 0, "label_agent labelled alice");

  const shed = await t.request("/reflect", {
    authorization: `Bearer ${ALICE_KEY}`,
    "x-agent-id": "clean-slate",
  });
  assertEquals([shed.status, shed.body.error], [403, "agent_id_mismatch"]);

  // The shared key may name agents, but not one that has its own key.
  for (const id of ["alice", "bob"]) {
    const r = await t.request("/reflect", { authorization: SHARED, "x-agent-id": id });
    assertEquals([r.status, r.body.error], [403, "agent_id_reserved"], id);
  }
  const shared = await t.request("/reflect", { authorization: SHARED, "x-agent-id": "someone" });
  assertEquals(shared.status, 200);
  assertEquals((shared.body.agent as Record<string, unknown>).authentication, {
    method: "shared-key",
    agentIdFrom: "x-agent-id",
    trust: "the shared key's holder names the agent (X-Agent-ID)",
  });
  const hashed = await t.request("/reflect", { authorization: SHARED });
  assertMatch(String((hashed.body.agent as Record<string, unknown>).id), /^key-[0-9a-f]{16}$/);
});

Deno.test("agent keys: another agent's session is refused; the decision log records the authenticated agent", async () => {
  await using t = await gatewayWithAgents();
  const alice = await t.connect({ authorization: `Bearer ${ALICE_KEY}` });
  await alice.callTool(LIST);
  // Bob replays alice's session id: the session is bound to alice.
  const sid = (alice.transport as unknown as { sessionId?: string }).sessionId;
  assert(sid, "routed session id");
  const r = await t.request("/mcp/demo", {
    authorization: BOB_KEY,
    "mcp-session-id": sid,
    "mcp-protocol-version": "2025-06-18",
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  }, { method: "POST", body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "tools/list" }) });
  assert(r.status === 404 || r.status === 403, `foreign session refused, got ${r.status} ${r.text}`);

  const calls = t.logs.filter((l) => l.event === "tool_call");
  assertEquals(calls.length, 1);
  assertEquals(calls[0].agent, "alice");
  assertEquals(calls[0].auth, { method: "agent-key", agentIdFrom: "agent-key" });
});

Deno.test("agent keys: wrong, missing and oversized keys are 401; no key is forwarded upstream", async () => {
  await using t = await gatewayWithAgents();
  const tries: Record<string, string>[] = [{}, { authorization: "Bearer nope" }, {
    authorization: `Bearer ${ALICE_KEY}x`,
  }];
  for (const h of tries) {
    const r = await t.request("/reflect", h);
    assertEquals(r.status, 401, JSON.stringify(h));
  }
  const big = await t.request("/reflect", { authorization: `Bearer ${"a".repeat(16 * 1024 + 1)}` });
  assertEquals(big.status, 401);
  assertStringIncludes(String(big.body.message), "longer than 16384 bytes");
  const alice = await t.connect({ authorization: `Bearer ${ALICE_KEY}` });
  await alice.callTool(LIST);
  assert(t.upstreamHeaders.length > 0);
  for (const h of t.upstreamHeaders) {
    assertEquals(h.get("authorization"), null);
    assertEquals(h.get("x-agent-id"), null);
  }
});

Deno.test("agent keys: digests compared in constant time against every key; which key matched decides the agent", async () => {
  assertEquals(constantTimeEqualBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2])), true);
  assertEquals(constantTimeEqualBytes(new Uint8Array([1, 2]), new Uint8Array([1, 3])), false);
  assertEquals(constantTimeEqualBytes(new Uint8Array([1]), new Uint8Array([1, 0])), false);
  const agents = await Promise.all(
    ["a1", "a2", "a3"].map(async (id) => ({ id, keySha256: await sha256Hex(`key-of-${id}`) })),
  );
  const auth = createAuthenticator({ apiKey: null, agents, oauth: null }, { servers: [] });
  for (const a of agents) {
    const who = await auth.authenticate(new Headers({ authorization: `key-of-${a.id}` }), {
      kind: "unified",
    });
    assertEquals(who.id, a.id);
  }
  // No shared key configured: a shared-key style request with X-Agent-ID is just an unknown key.
  const e = await assertRejects(
    () =>
      auth.authenticate(new Headers({ authorization: "whatever", "x-agent-id": "a1" }), { kind: "unified" }),
    AuthError,
  );
  assertEquals(e.status, 401);
});
