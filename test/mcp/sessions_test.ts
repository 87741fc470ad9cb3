import { assertEquals, assertInstanceOf, assertMatch, assertStringIncludes, assertThrows } from "@std/assert";
import {
  GatewaySession,
  GatewaySessionStore,
  MAX_SESSIONS,
  MAX_SESSIONS_PER_AGENT,
  RoutedSessionBindings,
  SESSION_IDLE_MS,
  SessionLimitError,
} from "../../src/mcp/sessions.ts";

Deno.test("routed bindings: one agent's flood never evicts another agent's binding (default limits)", () => {
  const b = new RoutedSessionBindings();
  assertEquals(b.bind("gh", "victim-sid", "victim"), "ok");
  let refused = 0;
  for (let i = 0; i < MAX_SESSIONS + 10; i++) {
    if (b.bind("gh", `flood-${i}`, "flooder") === "full") refused++;
  }
  assertEquals(b.countOf("flooder"), MAX_SESSIONS_PER_AGENT);
  assertEquals(refused, MAX_SESSIONS + 10 - MAX_SESSIONS_PER_AGENT);
  assertEquals(b.check("gh", "victim-sid", "victim"), "ok");
  assertEquals(b.check("gh", "flood-0", "flooder"), "ok", "the flooder's first sessions are kept too");
  assertEquals(b.check("gh", `flood-${MAX_SESSIONS_PER_AGENT}`, "flooder"), "unknown");
  assertEquals(b.bind("gh", "victim-sid-2", "victim"), "ok", "other agents still get new sessions");
});

Deno.test("routed bindings: over the agent's cap a new session is refused with a 429 error; DELETE frees room", () => {
  const b = new RoutedSessionBindings({ maxPerAgent: 2, max: 10 });
  assertEquals(b.bind("gh", "s1", "a"), "ok");
  assertEquals(b.bind("gh", "s2", "a"), "ok");
  const why = b.room("a")!;
  assertInstanceOf(why, SessionLimitError);
  assertEquals([why.limit, why.value, why.status], ["MAX_SESSIONS_PER_AGENT", 2, 429]);
  assertStringIncludes(why.message, 'agent "a" already holds 2 sessions');
  assertEquals(b.bind("gh", "s3", "a"), "full");
  assertEquals(b.check("gh", "s3", "a"), "unknown", "a refused session id stays unknown (404)");
  assertEquals(b.bind("gh", "s1", "a"), "ok", "re-binding a held session is not a new session");
  assertEquals(b.bind("gh", "s1", "b"), "foreign");
  assertEquals(b.bind("gh", "t1", "b"), "ok");
  b.unbind("gh", "s1");
  assertEquals(b.room("a"), null);
  assertEquals(b.bind("gh", "s3", "a"), "ok");
});

Deno.test("routed bindings: at the global bound everyone is refused (503) and nobody is evicted", () => {
  const b = new RoutedSessionBindings({ maxPerAgent: 3, max: 5 });
  for (const sid of ["a1", "a2", "a3"]) assertEquals(b.bind("gh", sid, "a"), "ok");
  for (const sid of ["b1", "b2"]) assertEquals(b.bind("gh", sid, "b"), "ok");
  assertEquals(b.bind("gh", "c1", "c"), "full");
  assertEquals(b.bind("gh", "b3", "b"), "full");
  const why = b.room("c")!;
  assertEquals([why.limit, why.value, why.status], ["MAX_SESSIONS", 5, 503]);
  for (const sid of ["a1", "a2", "a3"]) assertEquals(b.check("gh", sid, "a"), "ok");
  for (const sid of ["b1", "b2"]) assertEquals(b.check("gh", sid, "b"), "ok");
});

Deno.test("routed bindings: idle bindings expire; use by the owner (not by others) keeps them alive", () => {
  let t = 0;
  const b = new RoutedSessionBindings({ maxPerAgent: 1, max: 10, now: () => t });
  assertEquals(b.bind("gh", "s1", "a"), "ok");
  t += SESSION_IDLE_MS - 1;
  assertEquals(b.check("gh", "s1", "a"), "ok");
  t += SESSION_IDLE_MS - 1;
  assertEquals(b.check("gh", "s1", "b"), "foreign");
  assertEquals(b.bind("gh", "s2", "a"), "full");
  t += 1;
  assertEquals(b.check("gh", "s1", "a"), "unknown", "another agent's lookups did not keep it alive");
  assertEquals(b.countOf("a"), 0);
  assertEquals(b.bind("gh", "s2", "a"), "ok");
});

Deno.test("unified sessions: per-agent and global limits refuse with SessionLimitError; expiry is reported", () => {
  let t = 0;
  const expired: string[] = [];
  const store = new GatewaySessionStore(
    { maxPerAgent: 2, max: 3, now: () => t },
    (s) => expired.push(s.id),
  );
  const mk = (id: string, agent: string) => new GatewaySession(id, agent, "2025-11-25", {});
  store.add(mk("a1", "a"));
  store.add(mk("a2", "a"));
  const e1 = assertThrows(() => store.add(mk("a3", "a")), SessionLimitError);
  assertEquals([e1.limit, e1.status], ["MAX_SESSIONS_PER_AGENT", 429]);
  store.add(mk("b1", "b"));
  const e2 = assertThrows(() => store.add(mk("c1", "c")), SessionLimitError);
  assertEquals([e2.limit, e2.status], ["MAX_SESSIONS", 503]);
  assertEquals(store.get("a1", "b"), undefined, "another agent's session is invisible");
  assertEquals(store.get("a1", "a")?.id, "a1");
  assertEquals(store.all().map((s) => s.id).sort(), ["a1", "a2", "b1"]);
  store.delete("a2");
  store.add(mk("c1", "c"));
  t += SESSION_IDLE_MS;
  assertEquals(store.get("a1", "a"), undefined);
  assertEquals(expired.sort(), ["a1", "b1", "c1"]);
  assertEquals(store.all(), []);
  assertEquals(store.room("a"), null);
});

Deno.test("routed bindings: the agent sees a gateway-minted alias, never the upstream's session id", () => {
  const b = new RoutedSessionBindings();
  const upstreamSid = "LEAK-chosen-by-the-upstream";
  assertEquals(b.bind("gh", upstreamSid, "a"), "ok");
  const alias = b.aliasOf("gh", upstreamSid)!;
  assertMatch(alias, /^[0-9a-f]{64}$/);
  assertEquals(b.aliasOf("gh", upstreamSid), alias, "one alias per binding");
  assertEquals(b.resolve("gh", alias, "a"), { check: "ok", upstreamSid });
  assertEquals(b.resolve("gh", alias, "b"), { check: "foreign" }, "another agent learns nothing");
  assertEquals(b.resolve("gh", upstreamSid, "a"), { check: "unknown" }, "the upstream's id is not an alias");
  assertEquals(b.resolve("other", alias, "a"), { check: "unknown" }, "aliases are per upstream");
  b.unbind("gh", upstreamSid);
  assertEquals(b.resolve("gh", alias, "a"), { check: "unknown" });
});
