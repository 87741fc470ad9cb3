/**
 * Pipeline tests through the real `Guard` seam: in-test guards are plain objects answering with canned
 * guard JSON (the wasm host is tested elsewhere), plus the built-in noop and write-sink guards.
 */
import { assert, assertEquals, assertInstanceOf, assertRejects, assertStringIncludes } from "@std/assert";
import { NoopGuard, WriteSinkGuard } from "../../src/difc/builtin.ts";
import type { Guard, GuardContext, GuardSession } from "../../src/difc/guard.ts";
import {
  beginToolCall,
  DIFC_ERROR_CODES,
  DifcError,
  type DifcMode,
  type PipelineDeps,
  type ToolCallRequest,
} from "../../src/difc/pipeline.ts";
import { MemoryAgentLabelStore } from "../../src/difc/store.ts";
import { GuardError } from "../../src/guard/limits.ts";

const J = JSON.stringify;

type Answer = string | Error | ((input: string) => string);

interface ScriptedGuard extends Guard {
  inputs: { agent: string[]; resource: string[]; response: string[] };
  opened: number;
  closed: number;
}

/** A guard whose three exports answer from a script; records inputs and session lifecycle. */
function scripted(
  script: { agent?: Answer; resource?: Answer; response?: Answer },
  type = "wasm",
): ScriptedGuard {
  const g: ScriptedGuard = {
    name: "scripted",
    type,
    inputs: { agent: [], resource: [], response: [] },
    opened: 0,
    closed: 0,
    open(_ctx: GuardContext): GuardSession {
      g.opened++;
      let closed = false;
      const answer = (a: Answer | undefined, input: string, log: string[]) => {
        if (closed) return Promise.reject(new Error("session used after close"));
        log.push(input);
        if (a === undefined) return Promise.resolve("");
        if (a instanceof Error) return Promise.reject(a);
        return Promise.resolve(typeof a === "function" ? a(input) : a);
      };
      return {
        labelAgent: (i) => answer(script.agent, i, g.inputs.agent),
        labelResource: (i) => answer(script.resource, i, g.inputs.resource),
        labelResponse: (i) => answer(script.response, i, g.inputs.response),
        usage: () => ({ fuel: 1234, backendCalls: 2, memoryPages: 17, ms: 1.5 }),
        close: () => {
          if (!closed) g.closed++;
          closed = true;
        },
      };
    },
  };
  return g;
}

const ctx = (): GuardContext => ({
  signal: new AbortController().signal,
  backend: () => Promise.reject(new Error("no backend in this test")),
  log: () => {},
});

const POLICY = { "allow-only": { repos: ["acme/*"], "min-integrity": "approved" } };
const agentAnswer = (secrecy: string[], integrity: string[], mode: DifcMode = "filter") =>
  J({ agent: { secrecy, integrity }, difc_mode: mode });
const resourceAnswer = (
  operation: string,
  secrecy: string[] = [],
  integrity: string[] = [],
  description = "resource",
) => J({ resource: { description, secrecy, integrity }, operation });
const L = (description: string, secrecy: string[] = [], integrity: string[] = []) => ({
  description,
  secrecy,
  integrity,
});
const mcpText = (v: unknown, extra: Record<string, unknown> = {}) => ({
  content: [{ type: "text", text: J(v) }],
  ...extra,
});

function setup(guard: Guard, store = new MemoryAgentLabelStore()) {
  const logs: Record<string, unknown>[] = [];
  const deps: PipelineDeps = { guard, store, log: (r) => logs.push(r) };
  const req = (over: Partial<ToolCallRequest> = {}): ToolCallRequest => ({
    serverId: "github",
    agentId: "agent-1",
    toolName: "list_issues",
    args: { owner: "acme" },
    policy: POLICY,
    defaultMode: "strict",
    ...over,
  });
  const calls = () => logs.filter((r) => r.event === "tool_call");
  const filteredLogs = () => logs.filter((r) => r.event === "difc_filtered");
  return { deps, store, logs, req, calls, filteredLogs };
}

/** Runs phases 0-2, the "upstream" (a canned result), and phases 4-6. */
async function run(s: ReturnType<typeof setup>, req: ToolCallRequest, upstream: unknown) {
  const g = await beginToolCall(req, s.deps, ctx());
  return await g.finish(upstream);
}

async function expectDifcError(p: Promise<unknown>, code: number, msg: string): Promise<DifcError> {
  const e = await assertRejects(() => p, DifcError, msg);
  assertEquals(e.code, code);
  return e;
}

// ------------------------------------------------------------------------------------------------
// Inputs

Deno.test("guard inputs: wasm label_agent payload, label_resource and label_response JSON", async () => {
  const guard = scripted({
    agent: agentAnswer([], []),
    resource: resourceAnswer("read"),
    response: "",
  });
  const s = setup(guard);
  const upstream = mcpText({ a: "<&>" }, { isError: false });
  const out = await run(
    s,
    s.req({ args: undefined, trustedBots: ["bot[bot]"], toolName: "get_me" }),
    upstream,
  );
  assertEquals(out, upstream);
  assertEquals(guard.inputs.agent, [
    '{"allow-only":{"min-integrity":"approved","repos":["acme/*"]},"trusted-bots":["bot[bot]"]}',
  ]);
  assertEquals(guard.inputs.resource, ['{"capabilities":{},"tool_args":{},"tool_name":"get_me"}']);
  assertEquals(JSON.parse(guard.inputs.response[0]), {
    capabilities: {},
    tool_args: {},
    tool_name: "get_me",
    tool_result: upstream,
  });
  assertEquals(guard.opened, 1);
  assertEquals(guard.closed, 1);
});

Deno.test("no policy: label_agent is not called and the default mode applies", async () => {
  const guard = scripted({
    resource: resourceAnswer("read"),
    response: J({ labeled_paths: [], default_labels: L("d", ["private:x"]) }),
  });
  const s = setup(guard);
  await expectDifcError(
    run(s, s.req({ policy: null, defaultMode: "strict" }), mcpText([1])),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "DIFC policy violation: 1 of 1 items in response are not accessible to agent agent-1",
  );
  assertEquals(guard.inputs.agent, []);
  assertEquals(s.calls()[0].mode, "strict");
  assertEquals(s.calls()[0].decision, "block");
});

Deno.test("invalid policy for a wasm guard fails session init before calling the guard", async () => {
  const guard = scripted({ agent: agentAnswer([], []) });
  const s = setup(guard);
  const e = await expectDifcError(
    beginToolCall(
      s.req({ policy: { "allow-only": { repos: "mine", "min-integrity": "none" } } }),
      s.deps,
      ctx(),
    ),
    DIFC_ERROR_CODES.GUARD_FAILURE,
    "guard session initialization failed: LabelAgent failed: invalid repos value: expected all, public, or non-empty array of scoped strings",
  );
  assertEquals((e.data as Record<string, unknown>).kind, "policy");
  assertEquals(guard.inputs.agent, []);
  assertEquals(guard.closed, 1);
});

// ------------------------------------------------------------------------------------------------
// Coarse check (Phase 2)

Deno.test("write blocked by the coarse check: DIFC Violation message, upstream never reached", async () => {
  const guard = scripted({
    agent: agentAnswer(["private:acme"], ["none:acme"]),
    resource: resourceAnswer("write", [], [], "create_gist"),
  });
  const s = setup(guard);
  const e = await expectDifcError(
    beginToolCall(s.req({ toolName: "create_gist" }), s.deps, ctx()),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "DIFC Violation: Agent carries private (acme)-scoped data that cannot be written to 'create_gist' due to secrecy constraints.",
  );
  assertStringIncludes(e.message, "Required Action: Add secrecy tags [private:acme]");
  assertStringIncludes(
    e.message,
    "Current Agent Labels:\n  Secrecy: [private:acme]\n  Integrity: [none:acme]\n",
  );
  assertStringIncludes(e.message, "Resource Requirements:\n  Secrecy: []\n  Integrity: []\n");
  assertEquals((e.data as Record<string, unknown>).secrecy_to_add, ["private:acme"]);
  assertEquals(guard.closed, 1);
  const [rec] = s.calls();
  assertEquals(rec.decision, "deny");
  assertEquals(rec.operation, "write");
  assertEquals(rec.fuel, 1234);
  assertEquals(rec.backend_calls, 2);
});

Deno.test("allowed write: result untouched, label_response never called", async () => {
  const guard = scripted({
    agent: agentAnswer([], ["none:acme"]),
    resource: resourceAnswer("write", [], ["none:acme"]),
    response: new Error("must not be called"),
  });
  const s = setup(guard);
  const upstream = mcpText({ ok: true }, { structuredContent: { ok: true } });
  const g = await beginToolCall(s.req({ toolName: "create_issue" }), s.deps, ctx());
  assertEquals(g.operation, "write");
  assertEquals(await g.finish(upstream), upstream);
  assertEquals(guard.inputs.response, []);
  assertEquals(s.calls()[0].decision, "allow");
});

Deno.test("read-write coarse denial is blocked (integrity)", async () => {
  const guard = scripted({
    agent: agentAnswer([], ["approved:acme"]),
    resource: resourceAnswer("read-write", [], [], "rw"),
  });
  const s = setup(guard);
  await expectDifcError(
    beginToolCall(s.req(), s.deps, ctx()),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "DIFC Violation: Resource 'rw' has lower integrity than agent requires. The agent cannot read data with integrity below \"approved\".",
  );
});

Deno.test("coarse-denied read in strict mode still reaches the upstream and is released without item labels", async () => {
  const guard = scripted({
    agent: agentAnswer([], ["approved:acme"], "strict"),
    resource: resourceAnswer("read", ["private:other"], []),
    response: "{}",
  });
  const s = setup(guard);
  const g = await beginToolCall(s.req(), s.deps, ctx());
  const upstream = mcpText([1, 2]);
  assertEquals(await g.finish(upstream), upstream);
  assertEquals(s.calls()[0].coarse, "bypass-read");
});

// ------------------------------------------------------------------------------------------------
// Filtering (Phases 4-5)

const ISSUES = {
  total_count: 3,
  items: [{ number: 1, title: "public ok" }, {
    number: 2,
    title: "SECRET-TITLE",
    html_url: "https://x/2",
    user: { login: "mallory" },
  }, {
    number: 3,
    title: "fine",
  }],
};
const issueLabels = J({
  labeled_paths: [
    { path: "/items/1", labels: L("issue #2", ["private:other"], ["approved:acme"]) },
  ],
  default_labels: L("issue", [], ["approved:acme"]),
  items_path: "/items",
});

Deno.test("filter mode: filtered item removed in place, siblings kept, notice appended, audit record", async () => {
  const guard = scripted({
    agent: agentAnswer(["private:acme"], ["approved:acme"]),
    resource: resourceAnswer("read"),
    response: issueLabels,
  });
  const s = setup(guard);
  const upstream = mcpText(ISSUES, { isError: false, _meta: { trace: "t1" }, structuredContent: ISSUES });
  const out = await run(s, s.req(), upstream) as Record<string, unknown>;
  const content = out.content as { type: string; text: string }[];
  assertEquals(content.length, 2);
  assertEquals(JSON.parse(content[0].text), { total_count: 3, items: [ISSUES.items[0], ISSUES.items[2]] });
  assertEquals(
    content[1].text,
    "[Filtered] 1 item(s) in this response were removed by secrecy policy and are not shown: issue #2 " +
      "(Resource 'issue #2' has secrecy requirements that agent doesn't meet. The agent is not authorized to access private (other)-scoped data.).",
  );
  assertEquals(out.structuredContent, { total_count: 3, items: [ISSUES.items[0], ISSUES.items[2]] });
  assertEquals(out.isError, false);
  assertEquals(out._meta, { trace: "t1" });
  assert(!J(out).includes("SECRET-TITLE"));
  // the upstream object was not mutated
  assertEquals((upstream as Record<string, unknown>).structuredContent, ISSUES);

  const [f] = s.filteredLogs();
  assertEquals(f._schema, "difc-filtered/v2");
  assertEquals(f.server_id, "github");
  assertEquals(f.tool_name, "list_issues");
  assertEquals(f.description, "issue #2");
  assertEquals(f.secrecy_tags, ["private:other"]);
  assertEquals(f.integrity_tags, ["approved:acme"]);
  assertEquals(f.author_login, "mallory");
  assertEquals(f.html_url, "https://x/2");
  assertEquals(f.number, "2");
  const [rec] = s.calls();
  assertEquals([rec.decision, rec.items_total, rec.items_filtered, rec.mode], ["filter", 3, 1, "filter"]);
});

Deno.test("filter mode: structuredContent that differs from the text JSON is dropped, never leaked", async () => {
  const guard = scripted({
    agent: agentAnswer([], ["approved:acme"]),
    resource: resourceAnswer("read"),
    response: issueLabels,
  });
  const s = setup(guard);
  const upstream = mcpText(ISSUES, { structuredContent: { rows: ISSUES.items, extra: 1 } });
  const out = await run(s, s.req(), upstream) as Record<string, unknown>;
  assertEquals("structuredContent" in out, false);
  assert(!J(out).includes("SECRET-TITLE"));
});

Deno.test("nothing filtered: the upstream result is returned as is (shape preserved)", async () => {
  const guard = scripted({
    agent: agentAnswer(["private:other"], ["approved:acme"]),
    resource: resourceAnswer("read"),
    response: issueLabels,
  });
  const s = setup(guard);
  const upstream = mcpText(ISSUES, { isError: true, structuredContent: ISSUES, _meta: { a: 1 } });
  assertEquals(await run(s, s.req(), upstream), upstream);
  assertEquals(s.calls()[0].decision, "allow");
  assertEquals(s.calls()[0].items_total, 3);
  assertEquals(s.filteredLogs(), []);
});

Deno.test("strict mode: any filtered item blocks the whole response", async () => {
  const guard = scripted({
    agent: agentAnswer([], ["approved:acme"], "strict"),
    resource: resourceAnswer("read"),
    response: issueLabels,
  });
  const s = setup(guard);
  const e = await expectDifcError(
    run(s, s.req(), mcpText(ISSUES)),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "DIFC policy violation: 1 of 3 items in response are not accessible to agent agent-1",
  );
  assertEquals(
    e.message,
    "DIFC policy violation: 1 of 3 items in response are not accessible to agent agent-1",
  );
  assertEquals(s.calls()[0].decision, "block");
  assertEquals(s.filteredLogs().length, 1);
});

Deno.test("singular tool with its one item filtered → error; collection tool → empty list + notice", async () => {
  const labels = J({ labeled_paths: [], default_labels: L("issue #7", [], ["none:acme"]) });
  const mk = () =>
    scripted({
      agent: agentAnswer([], ["approved:acme"]),
      resource: resourceAnswer("read"),
      response: labels,
    });
  const s1 = setup(mk());
  await expectDifcError(
    run(s1, s1.req({ toolName: "issue_read" }), mcpText({ number: 7 })),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "[Filtered] issue #7 exists but is not accessible — filtered by integrity policy (Resource 'issue #7' has lower integrity than agent requires. The agent cannot read data with integrity below \"approved\".)",
  );
  assertEquals(s1.calls()[0].decision, "block");

  const s2 = setup(mk());
  const out = await run(s2, s2.req({ toolName: "search_issues" }), mcpText({ number: 7 })) as Record<
    string,
    unknown
  >;
  const content = out.content as { text: string }[];
  assertEquals(content[0].text, "[]");
  assertStringIncludes(
    content[1].text,
    "[Filtered] 1 item(s) in this response were removed by integrity policy",
  );
});

Deno.test("singular tool without a description uses the generic sentence", async () => {
  const guard = scripted({
    agent: agentAnswer([], [], "filter"),
    resource: resourceAnswer("read"),
    response: J({ items: [{ data: { x: 1 }, labels: { secrecy: ["private:x"], integrity: [] } }] }),
  });
  const s = setup(guard);
  await expectDifcError(
    run(s, s.req({ toolName: "get_secret" }), mcpText({ x: 1 })),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "[Filtered] resource exists but is not accessible — filtered by secrecy policy (Resource '' has secrecy",
  );
});

Deno.test("legacy items: filtered result is the JSON array of accessible data; notice lists ≤ 5 items", async () => {
  const items = [
    { data: { id: "a" }, labels: L("A", [], ["i"]) },
    { data: { id: "b" }, labels: L("B", ["private:b"], ["i"]) },
    { data: { id: "c" }, labels: L("C", [], []) },
  ];
  const guard = scripted({
    agent: agentAnswer([], ["i"]),
    resource: resourceAnswer("read"),
    response: J({ items }),
  });
  const s = setup(guard);
  const out = await run(
    s,
    s.req(),
    mcpText({ anything: true }, { structuredContent: { anything: true } }),
  ) as Record<string, unknown>;
  const content = out.content as { text: string }[];
  assertEquals(JSON.parse(content[0].text), [{ id: "a" }]);
  assertEquals("structuredContent" in out, false);
  assertEquals(
    content[1].text,
    "[Filtered] 2 item(s) in this response were removed by access policy and are not shown: " +
      "B (Resource 'B' has secrecy requirements that agent doesn't meet. The agent is not authorized to access private (b)-scoped data.); " +
      "C (Resource 'C' has lower integrity than agent requires. The agent cannot read data with integrity below [i].).",
  );
});

Deno.test("notice with more than 5 filtered items only gives the count", async () => {
  const guard = scripted({
    agent: agentAnswer([], ["i"]),
    resource: resourceAnswer("read"),
    response: J({ labeled_paths: [], default_labels: L("x") }),
  });
  const s = setup(guard);
  const out = await run(s, s.req(), mcpText([1, 2, 3, 4, 5, 6])) as Record<string, unknown>;
  const content = out.content as { text: string }[];
  assertEquals(content[0].text, "[]");
  assertEquals(
    content[1].text,
    "[Filtered] 6 item(s) in this response were removed by integrity policy and are not shown.",
  );
});

Deno.test("path labels on the raw result (no JSON text): filtered in place inside structuredContent", async () => {
  const upstream = {
    content: [{ type: "text", text: "3 rows (see structured content)" }],
    structuredContent: { rows: [{ r: 0 }, { r: 1, secret: "S1" }, { r: 2 }] },
    isError: false,
  };
  const guard = scripted({
    agent: agentAnswer([], []),
    resource: resourceAnswer("read"),
    response: J({
      labeled_paths: [{ path: "/structuredContent/rows/1", labels: L("row 1", ["private:x"]) }],
      default_labels: L("row"),
      items_path: "/structuredContent/rows",
    }),
  });
  const s = setup(guard);
  const out = await run(s, s.req(), upstream) as Record<string, unknown>;
  assertEquals(out.structuredContent, { rows: [{ r: 0 }, { r: 2 }] });
  const content = out.content as { text: string }[];
  assertEquals(JSON.parse(content[0].text), { rows: [{ r: 0 }, { r: 2 }] });
  assertStringIncludes(content[1].text, "[Filtered] 1 item(s)");
  assert(!J(out).includes("S1"));
  assertEquals(out.isError, false);
});

Deno.test("read-write in filter mode: items are checked with read and write rules", async () => {
  const guard = scripted({
    agent: agentAnswer(["private:acme"], []),
    resource: resourceAnswer("read-write", ["private:acme"], []),
    response: J({
      labeled_paths: [{ path: "/0", labels: L("same scope", ["private:acme"]) }],
      default_labels: L("public item"), // read ok, write fails: agent secrecy not ⊆ []
    }),
  });
  const s = setup(guard);
  const out = await run(s, s.req(), mcpText(["a", "b"])) as Record<string, unknown>;
  const content = out.content as { text: string }[];
  assertEquals(JSON.parse(content[0].text), ["a"]);
  assertStringIncludes(content[1].text, "cannot be written to 'public item'");
});

Deno.test("read-write in strict mode: label_response is not called", async () => {
  const guard = scripted({
    agent: agentAnswer([], [], "strict"),
    resource: resourceAnswer("read-write"),
    response: new Error("must not be called"),
  });
  const s = setup(guard);
  const upstream = mcpText([1]);
  assertEquals(await run(s, s.req(), upstream), upstream);
  assertEquals(guard.inputs.response, []);
});

// ------------------------------------------------------------------------------------------------
// Propagate (Phase 6)

Deno.test("propagate: reads are never filtered; labels accumulate across calls (∪ secrecy, ∩ integrity)", async () => {
  const responses = [
    J({
      labeled_paths: [{ path: "/0", labels: L("a", ["private:a"], ["x", "y"]) }],
      default_labels: L("b", ["private:b"], ["x"]),
    }),
    J({ labeled_paths: [], default_labels: L("c", ["private:c"], ["y"]) }),
    J({ labeled_paths: [], default_labels: L("d", [], ["x", "y"]) }),
  ];
  let call = 0;
  const guard = scripted({
    agent: agentAnswer([], ["x", "y"], "propagate"),
    resource: resourceAnswer("read"),
    response: () => responses[call++],
  });
  const s = setup(guard);
  const up1 = mcpText([1, 2]);
  assertEquals(await run(s, s.req(), up1), up1); // nothing removed
  // overall = union over items (reference semantics): integrity [x y] ∩ [x y]
  assertEquals(await s.store.get("agent-1"), { secrecy: ["private:a", "private:b"], integrity: ["x", "y"] });
  // second call: label_agent runs again on the fresh session, but its union is not re-applied,
  // so the integrity drop of "x" sticks
  const up2 = mcpText([3]);
  assertEquals(await run(s, s.req(), up2), up2);
  assertEquals(await s.store.get("agent-1"), {
    secrecy: ["private:a", "private:b", "private:c"],
    integrity: ["y"],
  });
  // a changed policy payload is a new initialisation: its tags are unioned again
  await run(s, s.req({ trustedBots: ["new-bot"] }), mcpText([9]));
  assertEquals((await s.store.get("agent-1")).integrity, ["x", "y"]);
  assertEquals(guard.inputs.agent.length, 3);
  assertEquals(s.calls().map((c) => c.decision), ["allow", "allow", "allow"]);
});

Deno.test("propagate without response labels accumulates the resource labels; writes never accumulate", async () => {
  let op = "read";
  const guard = scripted({
    agent: agentAnswer([], ["x"], "propagate"),
    resource: () => resourceAnswer(op, ["private:r"], []),
    response: "",
  });
  const s = setup(guard);
  await run(s, s.req(), mcpText(1));
  assertEquals(await s.store.get("agent-1"), { secrecy: ["private:r"], integrity: [] });
  // a write to a resource with more secrecy is allowed and adds nothing to the agent
  op = "write";
  const writeGuard = scripted({
    agent: agentAnswer([], [], "propagate"),
    resource: resourceAnswer("write", ["private:r", "private:extra"], []),
  });
  const w = setup(writeGuard, s.store);
  await run(w, w.req(), mcpText("ok"));
  assertEquals(await s.store.get("agent-1"), { secrecy: ["private:r"], integrity: [] });
});

Deno.test("propagate read-write: items failing the write part are removed; accumulation uses ALL items", async () => {
  const guard = scripted({
    agent: agentAnswer([], [], "propagate"),
    resource: resourceAnswer("read-write"),
    response: J({
      labeled_paths: [{ path: "/1", labels: L("needs integrity", [], ["merged:x"]) }],
      default_labels: L("plain", ["private:p"], []),
    }),
  });
  const s = setup(guard);
  const out = await run(s, s.req(), mcpText(["p", "m"])) as Record<string, unknown>;
  const content = out.content as { text: string }[];
  assertEquals(JSON.parse(content[0].text), ["p"]);
  assertStringIncludes(content[1].text, "Agent lacks required integrity to write to 'needs integrity'");
  assertEquals(await s.store.get("agent-1"), { secrecy: ["private:p"], integrity: [] });
});

// ------------------------------------------------------------------------------------------------
// Built-in guards

Deno.test("write-sink: a tainted agent cannot write to a public sink, can write where accepted", async () => {
  const store = new MemoryAgentLabelStore();
  // taint the agent through a propagate-mode read on another server
  const reader = setup(
    scripted({
      agent: agentAnswer([], [], "propagate"),
      resource: resourceAnswer("read", ["private:acme/web"], []),
      response: "",
    }),
    store,
  );
  await run(reader, reader.req(), mcpText({ readme: "..." }));
  assertEquals((await store.get("agent-1")).secrecy, ["private:acme/web"]);

  const sinkReq = (s: ReturnType<typeof setup>, policy: unknown) =>
    s.req({ serverId: "out", toolName: "create_issue", policy, args: { title: "t" } });
  const publicSink = setup(new WriteSinkGuard({ accept: ["*"], sinkVisibility: "public" }), store);
  await expectDifcError(
    beginToolCall(
      sinkReq(publicSink, { "write-sink": { accept: ["*"], "sink-visibility": "public" } }),
      publicSink.deps,
      ctx(),
    ),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "DIFC Violation: Agent carries private (acme/web)-scoped data that cannot be written to 'write-sink:public (create_issue)'",
  );
  assertEquals(publicSink.calls()[0].mode, "filter");

  const wrongSink = setup(
    new WriteSinkGuard({ accept: ["private:other"], sinkVisibility: "private" }),
    store,
  );
  await assertRejects(
    () =>
      beginToolCall(
        sinkReq(wrongSink, { "write-sink": { accept: ["private:other"] } }),
        wrongSink.deps,
        ctx(),
      ),
    DifcError,
  );

  for (const accept of [["private:acme/web"], ["*"]]) {
    const sink = setup(new WriteSinkGuard({ accept, sinkVisibility: "" }), store);
    const g = await beginToolCall(sinkReq(sink, { "write-sink": { accept } }), sink.deps, ctx());
    assertEquals(g.operation, "write");
    const upstream = mcpText({ created: true });
    assertEquals(await g.finish(upstream), upstream);
    assertEquals(
      (sink.calls()[0].resource as Record<string, unknown>).description,
      "write-sink (create_issue)",
    );
  }
  // write-sink adds no agent labels
  assertEquals(await store.get("agent-1"), { secrecy: ["private:acme/web"], integrity: [] });
});

Deno.test("noop: strict, read-write, empty labels; denies an agent holding integrity tags", async () => {
  const store = new MemoryAgentLabelStore();
  const clean = setup(new NoopGuard(), store);
  const g = await beginToolCall(clean.req({ agentId: "clean", policy: null }), clean.deps, ctx());
  assertEquals(g.operation, "read-write");
  const upstream = mcpText([1]);
  assertEquals(await g.finish(upstream), upstream);

  await store.addLabels("trusted", { secrecy: [], integrity: ["approved:acme"] });
  const s = setup(new NoopGuard(), store);
  await expectDifcError(
    beginToolCall(s.req({ agentId: "trusted", policy: { anything: true } }), s.deps, ctx()),
    DIFC_ERROR_CODES.DIFC_VIOLATION,
    "DIFC Violation: Resource 'noop resource (no restrictions)' has lower integrity than agent requires.",
  );
  assertEquals(s.calls()[0].mode, "strict"); // from the noop's label_agent
});

// ------------------------------------------------------------------------------------------------
// Fail closed

Deno.test("guard errors in each phase fail closed with the reference prefixes", async () => {
  const fuel = new GuardError("fuel", "fuel budget of 1000 units exhausted", { limit: "fuel", value: 1000 });
  const s1 = setup(scripted({ agent: fuel }));
  const e1 = await expectDifcError(
    beginToolCall(s1.req(), s1.deps, ctx()),
    DIFC_ERROR_CODES.GUARD_FAILURE,
    "guard session initialization failed: LabelAgent failed: fuel budget of 1000 units exhausted",
  );
  assertEquals(e1.data, {
    type: "guard_failure",
    phase: "label_agent",
    kind: "fuel",
    limit: "fuel",
    value: 1000,
  });
  assertEquals(s1.calls()[0].decision, "error");

  const s2 = setup(scripted({ agent: '{"difc_mode":"nope"}' }));
  await expectDifcError(
    beginToolCall(s2.req(), s2.deps, ctx()),
    DIFC_ERROR_CODES.GUARD_FAILURE,
    "guard session initialization failed: LabelAgent failed: invalid difc_mode from label_agent",
  );

  const s3 = setup(
    scripted({ agent: agentAnswer([], []), resource: new GuardError("trap", "wasm trap: unreachable") }),
  );
  await expectDifcError(
    beginToolCall(s3.req(), s3.deps, ctx()),
    DIFC_ERROR_CODES.GUARD_FAILURE,
    "guard labeling failed: resource labeling failed: wasm trap: unreachable",
  );

  const s4 = setup(scripted({ agent: agentAnswer([], []), resource: '{"operation":"read"}' }));
  await expectDifcError(
    beginToolCall(s4.req(), s4.deps, ctx()),
    DIFC_ERROR_CODES.GUARD_FAILURE,
    "guard labeling failed: resource labeling failed: invalid resource format in guard response",
  );

  const g5 = scripted({
    agent: agentAnswer([], []),
    resource: resourceAnswer("read"),
    response: new GuardError("aborted", "aborted"),
  });
  const s5 = setup(g5);
  await expectDifcError(
    run(s5, s5.req(), mcpText([1])),
    DIFC_ERROR_CODES.GUARD_FAILURE,
    "response labeling failed: response labeling failed: aborted",
  );
  assertEquals(g5.closed, 1);
  assertEquals(s5.calls()[0].decision, "error");
});

Deno.test("missing item labels fail the call instead of releasing or crashing", async () => {
  const s = setup(scripted({
    agent: agentAnswer([], []),
    resource: resourceAnswer("read"),
    response: J({ items: [{ data: { secret: 1 } }] }),
  }));
  const e = await expectDifcError(
    run(s, s.req(), mcpText({ secret: 1 })),
    DIFC_ERROR_CODES.GUARD_FAILURE,
    "response labeling failed: response labeling failed: label_response items[0] has no labels",
  );
  assertEquals((e.data as Record<string, unknown>).kind, "output");
});

Deno.test("a broken store fails closed", async () => {
  const store = new MemoryAgentLabelStore();
  store.get = () => Promise.reject(new Error("kv unavailable"));
  store.addLabels = () => Promise.reject(new Error("kv unavailable"));
  const s = setup(scripted({ agent: agentAnswer([], []), resource: resourceAnswer("read") }), store);
  await expectDifcError(
    beginToolCall(s.req(), s.deps, ctx()),
    DIFC_ERROR_CODES.LABEL_STORE_FAILURE,
    "agent label store failed: kv unavailable",
  );
});

Deno.test("a broken store fails closed without a policy too (labels are read, not added)", async () => {
  const store = new MemoryAgentLabelStore();
  store.get = () => Promise.reject(new Error("kv unavailable"));
  const s = setup(scripted({ resource: resourceAnswer("read") }), store);
  await expectDifcError(
    beginToolCall(s.req({ policy: null }), s.deps, ctx()),
    DIFC_ERROR_CODES.LABEL_STORE_FAILURE,
    "agent label store failed: kv unavailable",
  );
});

Deno.test("store limits deny the call and keep the agent's labels: MAX_AGENT_TAGS after the upstream, MAX_AGENTS before", async () => {
  let n = 0;
  const guard = scripted({
    agent: agentAnswer([], [], "propagate"),
    resource: resourceAnswer("read"),
    response: () => J({ labeled_paths: [], default_labels: L(`r${n}`, [`private:r${n++}`], []) }),
  });
  const s = setup(guard, new MemoryAgentLabelStore({ maxTags: 2, maxAgents: 1 }));
  await run(s, s.req(), mcpText("first"));
  await run(s, s.req(), mcpText("second"));
  assertEquals((await s.store.get("agent-1")).secrecy, ["private:r0", "private:r1"]);
  // A third secrecy tag would pass the limit: the answer is withheld (its taint could not be recorded).
  const e = await expectDifcError(
    run(s, s.req(), mcpText("SECRET-MARKER")),
    DIFC_ERROR_CODES.LABEL_STORE_FAILURE,
    'agent label store failed: agent "agent-1" would hold 3 secrecy tags, over MAX_AGENT_TAGS (2)',
  );
  assertEquals(e.data, { type: "label_store_failure", limit: "MAX_AGENT_TAGS", value: 2 });
  assertEquals(J(e).includes("SECRET-MARKER") || e.message.includes("SECRET-MARKER"), false);
  assertEquals((await s.store.get("agent-1")).secrecy, ["private:r0", "private:r1"], "labels never dropped");
  assertEquals(s.calls().map((c) => c.decision), ["allow", "allow", "error"]);
  // A second agent cannot be recorded in a full store: denied before the upstream is reached.
  const e2 = await expectDifcError(
    beginToolCall(s.req({ agentId: "agent-2" }), s.deps, ctx()),
    DIFC_ERROR_CODES.LABEL_STORE_FAILURE,
    "(MAX_AGENTS)",
  );
  assertEquals(e2.data, { type: "label_store_failure", limit: "MAX_AGENTS", value: 1 });
  assertEquals(guard.inputs.resource.length, 3, "label_resource never ran for agent-2");
});

Deno.test("a throwing log sink does not change the outcome", async () => {
  const guard = scripted({ agent: agentAnswer([], []), resource: resourceAnswer("read"), response: "" });
  const deps: PipelineDeps = {
    guard,
    store: new MemoryAgentLabelStore(),
    log: () => {
      throw new Error("log down");
    },
  };
  const g = await beginToolCall(
    { serverId: "s", agentId: "a", toolName: "t", args: {}, policy: POLICY, defaultMode: "filter" },
    deps,
    ctx(),
  );
  assertEquals(await g.finish({ content: [] }), { content: [] });
});

Deno.test("abort closes the session and logs once; finish afterwards is refused", async () => {
  const guard = scripted({ agent: agentAnswer([], []), resource: resourceAnswer("read") });
  const s = setup(guard);
  const g = await beginToolCall(s.req(), s.deps, ctx());
  g.abort(new Error("upstream 502"));
  g.abort();
  assertEquals(guard.closed, 1);
  assertEquals(s.calls().length, 1);
  assertEquals(s.calls()[0].decision, "aborted");
  assertEquals(s.calls()[0].error, "upstream 502");
  const e = await assertRejects(() => g.finish({}), DifcError, "guard session already finished");
  assertInstanceOf(e, DifcError);
  assertEquals(s.calls().length, 1);
});

Deno.test("one tool_call record per call with usage and resource labels", async () => {
  const guard = scripted({
    agent: agentAnswer([], []),
    resource: resourceAnswer("read", ["s"], ["i"], "thing"),
    response: "",
  });
  const s = setup(guard);
  await run(s, s.req(), mcpText(1));
  const recs = s.calls();
  assertEquals(recs.length, 1);
  const r = recs[0];
  assertEquals(
    [r.agent, r.server, r.tool, r.operation, r.decision, r.mode, r.fuel, r.backend_calls, r.guard_ms],
    ["agent-1", "github", "list_issues", "read", "allow", "filter", 1234, 2, 1.5],
  );
  assertEquals(r.resource, { description: "thing", secrecy: ["s"], integrity: ["i"] });
});
