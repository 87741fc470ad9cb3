/**
 * Fail closed on every channel (issue 8): nothing from a guarded server reaches an agent unless its
 * guard saw it or the gateway wrote it.
 *
 * The real gateway (`startGateway`, Deno.serve on loopback) in front of hostile upstreams that put a
 * unique marker into every channel they have (`test/fixtures/hostile_upstream_sdk.ts`: SDK v1 for
 * 2025-03-26 / 2025-06-18 / 2025-11-25, SDK v2 for 2026-07-28; `test/fixtures/hostile_upstream_raw.ts`:
 * a hand-written misbehaving server). The guarded servers use the marker WAT guard
 * (`test/fixtures/wat/gateway/marker.wat`: blocks any result holding the marker) or the demo guard; the
 * `open` server has no guard (noop) and is the positive control: the same marker does reach the agent
 * through it, which proves each fixture really emits it on that channel.
 *
 * Agents: a raw `fetch` agent that keeps every byte (status, headers, bodies, GET streams) and the SDK
 * clients (v1 for 2025, v2 for 2026-07-28) over a recording `fetch`. Every version, routed
 * (`/mcp/<server>`) and unified (`/mcp`), JSON and SSE upstream replies.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";
import {
  type CompiledGuards,
  compileWatGuards,
  startTestGateway,
  type TestGateway,
  waitUntil,
} from "./harness.ts";
import {
  ALLOWED_TOOLS,
  type HostileUpstream,
  newMarker,
  startSdkV1HostileUpstream,
  startSdkV2HostileUpstream,
} from "../fixtures/hostile_upstream_sdk.ts";
import { type RawHostileUpstream, startRawHostileUpstream } from "../fixtures/hostile_upstream_raw.ts";
import {
  assertExactlyOnce,
  codeOf,
  messagesOf,
  type Msg,
  RawAgent,
  REFUSED,
  type Reply,
  responsesOf,
  type Version,
  VERSIONS,
} from "../helpers/failclosed.ts";

type UpstreamKind = "sdk" | "raw";
type Mode = "routed" | "unified";

interface Setup extends AsyncDisposable {
  kind: UpstreamKind;
  json: boolean;
  marker: string;
  upstream: HostileUpstream | RawHostileUpstream;
  gw: TestGateway;
  /** The URL the agent talks to. */
  url: string;
}

/** Params of a refused method (plausible enough that an upstream would answer it). */
function refusedParams(method: string): Msg {
  switch (method) {
    case "resources/read":
    case "resources/subscribe":
    case "resources/unsubscribe":
      return { uri: "file:///etc/passwd" };
    case "prompts/get":
      return { name: "leak" };
    case "completion/complete":
      return { ref: { type: "ref/prompt", name: "leak" }, argument: { name: "a", value: "" } };
    case "logging/setLevel":
      return { level: "debug" };
    case "tasks/get":
    case "tasks/result":
    case "tasks/cancel":
      return { taskId: "task-1" };
    case "subscriptions/listen":
      return { filter: {} };
    default:
      return {};
  }
}

let watGuards: Promise<CompiledGuards> | undefined;
/** The marker guard, compiled once for the file (removed by the last test's unload hook). */
function markerGuard(): Promise<CompiledGuards> {
  return watGuards ??= compileWatGuards(["marker"]);
}
globalThis.addEventListener("unload", () => {
  // best effort: the temp dir of the compiled guard
  void watGuards?.then((g) => g[Symbol.asyncDispose]());
});

/**
 * Starts an upstream and a gateway. `server` picks the gateway's servers: `guarded` (marker guard),
 * `demo` (demo guard) and `open` (noop). Unified gateways get only the guarded ones, or only `open`
 * for a control, so a noop server never mixes into a guarded unified session.
 */
async function setup(opts: {
  kind: UpstreamKind;
  version: Version;
  mode: Mode;
  server: "guarded" | "demo" | "open";
  json?: boolean;
  marker?: string;
}): Promise<Setup> {
  const marker = opts.marker ?? newMarker();
  const upstream = opts.kind === "raw"
    ? await startRawHostileUpstream({ marker, behaviour: { reply: opts.json ? "json" : "sse" } })
    : opts.version === "2026-07-28"
    ? await startSdkV2HostileUpstream({ marker, json: opts.json })
    : await startSdkV1HostileUpstream({ marker, json: opts.json });
  const wat = await markerGuard();
  const servers: Record<string, unknown> = {};
  const guarded = opts.server !== "open";
  if (opts.mode === "routed" || guarded) {
    servers.guarded = {
      type: "http",
      url: upstream.url,
      guard: "marker",
      tools: [...ALLOWED_TOOLS],
      "guard-policies": { "allow-only": { repos: "all", "min-integrity": "none" } },
    };
    servers.demo = {
      type: "http",
      url: upstream.url,
      guard: "demo",
      tools: [...ALLOWED_TOOLS],
      "guard-policies": DEMO_POLICY,
    };
  }
  if (opts.mode === "routed" || !guarded) servers.open = { type: "http", url: upstream.url };
  let gw: TestGateway;
  try {
    gw = await startTestGateway({
      mcpServers: servers,
      guards: {
        marker: { type: "wasm", path: "marker.wasm" },
        demo: { type: "wasm", path: DEMO_GUARD_URL.href },
      },
    }, { configBase: wat.base });
  } catch (e) {
    await upstream.close();
    throw e;
  }
  const url = opts.mode === "routed" ? gw.url(opts.server) : gw.url();
  const close = async () => {
    await gw.close();
    await upstream.close();
  };
  return {
    kind: opts.kind,
    json: opts.json ?? false,
    marker,
    upstream,
    gw,
    url,
    [Symbol.asyncDispose]: close,
  };
}

/** Tool name as the agent spells it for `mode`. */
function toolName(mode: Mode, server: string, tool: string): string {
  return mode === "routed" ? tool : `${server}___${tool}`;
}

/** The full agent script: every method of the channel table, then the GET stream and DELETE. */
function script(agent: RawAgent, mode: Mode, server: string): Msg[] {
  const t = (tool: string) => toolName(mode, server, tool);
  let n = 0;
  const r = (method: string, params: Msg = {}) => agent.request(++n, method, params);
  return [
    r("ping"),
    r("tools/list"),
    r("tools/call", {
      name: t("get_repo"),
      arguments: { repo: "acme/web" },
      _meta: { progressToken: "tok-1" },
    }),
    r("tools/call", { name: t("echo"), arguments: { text: "hello" } }),
    r("tools/call", { name: t("get_secret"), arguments: {} }),
    r("tools/call", { name: t("get_issue"), arguments: { repo: "acme/web", number: 2 } }),
    r("tools/call", { name: t("list_issues"), arguments: { repo: "acme/web" } }),
    r("tools/call", { name: t("fail_tool"), arguments: {} }),
    r("tools/call", { name: t("ask_user"), arguments: {} }),
    r("tools/call", { name: t("get_secret"), arguments: {}, task: { ttl: 60_000 } }),
    ...REFUSED.map((m) => r(m, refusedParams(m))),
  ];
}

/** Sends the script one request per POST (batched for 2025-03-26). */
async function runScript(agent: RawAgent, msgs: Msg[]): Promise<Reply[]> {
  if (agent.version === "2025-03-26") return [await agent.post(msgs)];
  const out: Reply[] = [];
  for (const m of msgs) out.push(await agent.post(m));
  return out;
}

/** Lines of `text` that hold `marker` (for failure messages). */
function leaks(text: string, marker: string): string {
  return text.split("\n").filter((l) => l.includes(marker)).slice(0, 8).map((l) => l.slice(0, 300)).join(
    "\n",
  );
}

function assertNoMarker(text: string, marker: string, where: string): void {
  if (text.includes(marker)) {
    throw new Error(`${where}: the marker reached the agent:\n${leaks(text, marker)}`);
  }
}

/** Requests in `msgs` by method. */
function byMethod(msgs: Msg[], method: string): Msg[] {
  return msgs.filter((m) => m.method === method);
}

/** Methods that reached the upstream (from its raw POST bodies). */
function upstreamMethods(up: HostileUpstream | RawHostileUpstream): string[] {
  const out: string[] = [];
  for (const b of up.bodies) {
    try {
      const v = JSON.parse(b);
      for (const m of Array.isArray(v) ? v : [v]) if (typeof m?.method === "string") out.push(m.method);
    } catch {
      // not JSON
    }
  }
  return out;
}

/**
 * The guarded run: the marker never reaches the agent, every request gets exactly one answer, the
 * refused methods get -32601 "guarded" and never reach the upstream, the gateway-owned answers
 * (initialize, ping, tools/list) have the gateway's shape.
 */
async function guardedRun(s: Setup, version: Version, mode: Mode, kind: UpstreamKind): Promise<void> {
  const agent = new RawAgent(s.url, version);
  const where = `${mode} ${version}`;
  const init = await agent.init();
  const msgs = script(agent, mode, "guarded");
  const before = upstreamMethods(s.upstream).length;
  const replies = await runScript(agent, msgs);
  await agent.get(300);
  await agent.delete();
  assertNoMarker(agent.received, s.marker, where);

  if (init) {
    const r = responsesOf(init.messages).find((m) => m.id === "init-0");
    const res = r?.result as Msg | undefined;
    assert(res, `${where}: initialize answered: ${init.text.slice(0, 300)}`);
    assertEquals(res.instructions, undefined, "no upstream instructions");
    assert(
      Object.keys(res.capabilities as Msg).every((k) => k === "tools"),
      `capabilities limited to tools: ${JSON.stringify(res.capabilities)}`,
    );
    assert(!String((res.serverInfo as Msg).name).startsWith("hostile-"), "the gateway's own serverInfo");
  }

  const answers = responsesOf(replies.flatMap((r) => r.messages));
  const got = assertExactlyOnce(msgs, answers, where);
  const answerOf = (m: Msg) => got.get(JSON.stringify(m.id))![0];
  if (mode === "unified" && version === "2025-03-26") {
    // The unified endpoint refuses batches: each request gets -32600, none reaches the upstream.
    for (const m of msgs) assertEquals(codeOf(answerOf(m)), -32600, `batched ${m.method} refused`);
    assertEquals(upstreamMethods(s.upstream).slice(before), [], "nothing of the batch went upstream");
    return;
  }

  const ping = answerOf(byMethod(msgs, "ping")[0]);
  if (kind === "sdk" && version === "2026-07-28") {
    // The SDK v2 server has no ping on 2026-07-28: its -32601 comes back, code only.
    assertEquals(codeOf(ping), -32601, JSON.stringify(ping));
  } else {
    assertEquals(ping.result, {}, `ping answered {}: ${JSON.stringify(ping)}`);
  }
  const list = answerOf(byMethod(msgs, "tools/list")[0]).result as Msg;
  assert(list, "tools/list answered");
  assert(
    Object.keys(list).every((k) => k === "tools" || k === "nextCursor"),
    `tools/list keys: ${Object.keys(list)}`,
  );
  const names = (list.tools as Msg[]).map((t) => String(t.name));
  assert(!names.some((n) => n.includes("leak_tool")), `disallowed tool listed: ${names}`);
  assert(names.some((n) => n.endsWith("get_repo")), `allowed tool listed: ${names}`);

  const calls = byMethod(msgs, "tools/call");
  const getRepo = answerOf(calls[0]);
  assert(getRepo.result, `get_repo allowed: ${JSON.stringify(getRepo)}`);
  assertEquals(answerOf(calls[1]).result !== undefined, true, "echo allowed");
  for (const c of calls.slice(2)) {
    assert(codeOf(answerOf(c)) !== undefined, `refused or blocked: ${JSON.stringify(c)}`);
  }
  const fail = answerOf(calls.find((c) => String((c.params as Msg).name).endsWith("fail_tool"))!);
  // The SDK v2 server turns a throwing tool into an isError result (blocked by the guard instead).
  if (kind === "raw" || version !== "2026-07-28") {
    assertEquals(codeOf(fail), -32050, "an upstream error keeps its code");
  }
  const task = answerOf(calls.find((c) => (c.params as Msg).task !== undefined)!);
  assertEquals(codeOf(task), -32601);
  assertStringIncludes(JSON.stringify(task.error), "guarded");
  for (const m of REFUSED) {
    const a = answerOf(byMethod(msgs, m)[0]);
    assertEquals(codeOf(a), -32601, `${m} refused: ${JSON.stringify(a)}`);
    if (mode === "routed") assertStringIncludes((a.error as Msg).message as string, "guarded");
  }
  checkAgentBound(replies, msgs, agent, where);
  if (mode === "routed" && !s.json) {
    // Progress of the agent's own request is relayed, rebuilt from the numbers only.
    const progress = replies.flatMap((r) => r.messages).filter((m) => m.method === "notifications/progress");
    assert(
      progress.some((p) => (p.params as Msg).progressToken === "tok-1"),
      `progress for the agent's token is relayed: ${JSON.stringify(progress)}`,
    );
  }
  if (s.kind === "raw" && !s.json && mode === "routed") {
    // The upstream's own requests (sampling, elicitation, roots) were answered by the gateway with errors.
    const raw = s.upstream as RawHostileUpstream;
    await waitUntil(
      () => raw.answers.some((a) => String(a.id).startsWith("s-")),
      "answers to upstream requests",
      3000,
    );
    for (const a of raw.answers) {
      assert("error" in a, `the gateway answers upstream requests with an error: ${JSON.stringify(a)}`);
    }
  }
  const reached = upstreamMethods(s.upstream).slice(before);
  for (const m of REFUSED) assert(!reached.includes(m), `${m} reached the upstream`);
  const taskCalls = s.upstream.bodies.filter((b) => b.includes('"task"'));
  assertEquals(taskCalls, [], "a task-augmented call never reaches the upstream");
}

/**
 * What a guarded server's agent may see besides responses: progress (numbers only, its own tokens),
 * cancellations of its own ids, bare list_changed; never a request.
 */
function checkAgentBound(replies: Reply[], msgs: Msg[], agent: RawAgent, where: string): void {
  // The agent's initialize ("init-0") may be cancelled by the upstream too.
  const ids = new Set([...msgs.map((m) => JSON.stringify(m.id)), JSON.stringify("init-0")]);
  const tokens = new Set(
    msgs.map((m) => JSON.stringify(((m.params as Msg | undefined)?._meta as Msg | undefined)?.progressToken)),
  );
  const all = [...replies.flatMap((r) => r.messages), ...messagesOfGet(agent.received)];
  for (const m of all) {
    if (typeof m.method !== "string") continue;
    assert(!("id" in m), `${where}: a server request reached the agent: ${JSON.stringify(m)}`);
    const p = (m.params ?? {}) as Msg;
    if (m.method === "notifications/progress") {
      assert(
        Object.keys(p).every((k) => ["progressToken", "progress", "total"].includes(k)),
        `progress keys: ${JSON.stringify(m)}`,
      );
      assert(
        tokens.has(JSON.stringify(p.progressToken)),
        `progress for a token the agent never sent: ${JSON.stringify(m)}`,
      );
    } else if (m.method === "notifications/cancelled") {
      assert(
        ids.has(JSON.stringify(p.requestId)),
        `cancellation of an id the agent never sent: ${JSON.stringify(m)}`,
      );
    } else if (/^notifications\/(tools|resources|prompts)\/list_changed$/.test(m.method)) {
      assertEquals(Object.keys(p).length, 0, `list_changed without params: ${JSON.stringify(m)}`);
    } else {
      throw new Error(`${where}: notification ${m.method} reached the agent: ${JSON.stringify(m)}`);
    }
  }
}

/** JSON-RPC messages of the GET stream bytes in a raw agent's record (SSE data lines after a GET). */
function messagesOfGet(received: string): Msg[] {
  return messagesOf(
    "text/event-stream",
    received.split("\n").filter((l) => l.startsWith("data:")).join("\n\n"),
  );
}

/** The noop control: the same script through `open` delivers the marker (and still one answer each). */
async function controlRun(
  s: Setup,
  version: Version,
  mode: Mode,
  json: boolean,
  kind: UpstreamKind,
): Promise<void> {
  const agent = new RawAgent(s.url, version);
  await agent.init();
  const msgs = script(agent, mode, "open");
  // Unified control: one request per POST (a batch may be refused there as a whole).
  const replies = mode === "unified"
    ? await Promise.all(msgs.map((m) => agent.post(m)))
    : await runScript(agent, msgs);
  await agent.get(300);
  await agent.delete();
  const text = agent.received;
  assertStringIncludes(text, s.marker, "the noop control sees the marker");
  const answers = responsesOf(replies.flatMap((r) => r.messages));
  const byId = new Map(answers.map((a) => [JSON.stringify(a.id), a]));
  const secret = byId.get(JSON.stringify(byMethod(msgs, "tools/call")[2].id));
  assertStringIncludes(JSON.stringify(secret), s.marker, "the blocked-on-guarded result carries the marker");
  const list = byId.get(JSON.stringify(byMethod(msgs, "tools/list")[0].id));
  assertStringIncludes(JSON.stringify(list), s.marker, "tools/list carries the marker");
  if (kind === "raw" || version !== "2026-07-28") {
    const fail = byId.get(JSON.stringify(byMethod(msgs, "tools/call")[5].id));
    assertEquals(
      codeOf(fail),
      -32050,
      `the fixture answers fail_tool with a JSON-RPC error: ${JSON.stringify(fail)}`,
    );
  }
  if (mode === "routed" && kind === "raw") {
    const read = byId.get(JSON.stringify(byMethod(msgs, "resources/read")[0].id));
    assertStringIncludes(JSON.stringify(read), s.marker, "resources/read carries the marker");
  }
  if (mode === "routed" && !json) {
    // Notifications on the POST stream (logging with the marker).
    assert(
      /notifications\/message[^\n]*LEAK-/.test(text),
      "a logging notification with the marker came through",
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// The matrix: upstream kind x version x mode x reply format, guarded and control.

for (const kind of ["raw", "sdk"] as const) {
  for (const json of [false, true]) {
    for (const version of VERSIONS) {
      for (const mode of ["routed", "unified"] as const) {
        const label = `${kind} upstream, ${json ? "JSON" : "SSE"}, ${version}, ${mode}`;
        // Unified 2026-07-28: the gateway may refuse modern requests without a session (400 → the
        // client falls back); that path is covered by the SDK v2 client test below.
        if (mode === "unified" && version === "2026-07-28") continue;
        Deno.test({
          name: `fail closed, ${label}: guarded server leaks nothing, answers once each`,
          sanitizeResources: false,
          sanitizeOps: false,
          fn: async () => {
            await using s = await setup({ kind, version, mode, server: "guarded", json });
            await guardedRun(s, version, mode, kind);
          },
        });
        Deno.test({
          name: `fail closed, ${label}: noop control delivers the marker`,
          sanitizeResources: false,
          sanitizeOps: false,
          fn: async () => {
            await using s = await setup({ kind, version, mode, server: "open", json });
            await controlRun(s, version, mode, json, kind);
          },
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The issue's concrete attacks, one at a time, routed and unified.

/** Tool calls the upstream received after `from` (its `calls` record). */
function callsSince(up: HostileUpstream, from: number): string[] {
  return up.calls.slice(from);
}

for (const mode of ["routed", "unified"] as const) {
  for (const server of ["demo", "guarded"] as const) {
    Deno.test({
      name:
        `attack, ${mode}, ${server} guard: duplicate ids in a batch get -32600 and never reach the upstream`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        await using s = await setup({ kind: "sdk", version: "2025-03-26", mode, server });
        const up = s.upstream as HostileUpstream;
        const agent = new RawAgent(s.url, "2025-03-26");
        await agent.init();
        const t = (tool: string) => toolName(mode, server, tool);
        const from = up.calls.length;
        const batches: Msg[][] = [
          // The blocked get_issue and an allowed call under one id.
          [
            agent.request(7, "tools/call", {
              name: t("get_issue"),
              arguments: { repo: "acme/web", number: 2 },
            }),
            agent.request(7, "tools/call", { name: t("get_repo"), arguments: { repo: "acme/web" } }),
          ],
          // The tools/list trick: an unfiltered list under a filtered list's id.
          [agent.request(8, "tools/list"), agent.request(8, "tools/list")],
          [
            agent.request(9, "tools/list"),
            agent.request(9, "tools/call", { name: t("get_secret"), arguments: {} }),
          ],
          // A duplicate next to a clean request: only the duplicates are refused.
          [
            agent.request("a", "tools/call", { name: t("get_secret"), arguments: {} }),
            agent.request("a", "ping"),
            agent.request("b", "ping"),
          ],
        ];
        for (const batch of batches) {
          const reply = await agent.post(batch);
          const got = assertExactlyOnce(batch, responsesOf(reply.messages), `${mode} batch`);
          for (const [id, rs] of got) {
            // Unified refuses whole batches (every request -32600); routed answers the unique id.
            if (id === '"b"' && mode === "routed") {
              assertEquals(rs[0].result, {}, "the unique id is answered normally");
              continue;
            }
            for (const r of rs) assertEquals(codeOf(r), -32600, `duplicate id ${id}: ${JSON.stringify(r)}`);
          }
        }
        assertNoMarker(agent.received, s.marker, `${mode} duplicate ids`);
        assertEquals(
          callsSince(up, from),
          [],
          "nothing of a duplicate reached the upstream (guard backend calls included)",
        );
      },
    });
  }

  Deno.test({
    name: `attack, ${mode}: a request id already in flight on the session gets -32600`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using s = await setup({ kind: "sdk", version: "2025-11-25", mode, server: "guarded" });
      const up = s.upstream as HostileUpstream;
      const agent = new RawAgent(s.url, "2025-11-25");
      await agent.init();
      const t = (tool: string) => toolName(mode, "guarded", tool);
      const slow = agent.request(5, "tools/call", { name: t("echo"), arguments: { text: "slow", ms: 700 } });
      const first = agent.post(slow);
      await waitUntil(() => up.calls.includes("echo"), "the slow call reached the upstream");
      const from = up.calls.length;
      const dup = agent.request(5, "tools/call", { name: t("get_secret"), arguments: {} });
      const second = await agent.post(dup);
      const r2 = responsesOf(second.messages);
      assertEquals(r2.length, 1, second.text);
      assertEquals(r2[0].id, 5);
      assertEquals(codeOf(r2[0]), -32600);
      const r1 = responsesOf((await first).messages);
      assertEquals(r1.length, 1);
      assertEquals(r1[0].id, 5);
      assertStringIncludes(JSON.stringify(r1[0].result), "slow", "the first request keeps its own answer");
      assertEquals(callsSince(up, from), [], "the duplicate never reached the upstream");
      assertNoMarker(agent.received, s.marker, `${mode} in-flight duplicate`);
    },
  });

  Deno.test({
    name: `attack, ${mode}: type-confused ids 1 and "1" are two requests, each answered once with its own id`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using s = await setup({ kind: "sdk", version: "2025-03-26", mode, server: "guarded" });
      const agent = new RawAgent(s.url, "2025-03-26");
      await agent.init();
      agent.received = ""; // about id mapping only (the matrix covers initialize)
      const t = (tool: string) => toolName(mode, "guarded", tool);
      const batch = [
        agent.request(1, "tools/call", { name: t("echo"), arguments: { text: "number-one" } }),
        agent.request("1", "tools/call", { name: t("echo"), arguments: { text: "string-one" } }),
        agent.request(2, "ping"),
      ];
      // Unified refuses batches: there the three go as concurrent POSTs on one session.
      const replies = mode === "routed"
        ? [await agent.post(batch)]
        : await Promise.all(batch.map((m) => agent.post(m)));
      const got = assertExactlyOnce(
        batch,
        responsesOf(replies.flatMap((r) => r.messages)),
        "type-confused ids",
      );
      assertStringIncludes(JSON.stringify(got.get("1")![0].result), "number-one");
      assertStringIncludes(JSON.stringify(got.get('"1"')![0].result), "string-one");
      assertNoMarker(agent.received, s.marker, "type-confused ids");
    },
  });

  for (const server of ["demo", "guarded"] as const) {
    Deno.test({
      name: `attack, ${mode}, ${server} guard: case-variant and extra params keys never reach the upstream`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        await using s = await setup({ kind: "sdk", version: "2025-11-25", mode, server });
        const up = s.upstream as HostileUpstream;
        const agent = new RawAgent(s.url, "2025-11-25");
        await agent.init();
        const from = up.bodies.length;
        // Written by hand: "name" twice (JSON.parse keeps the last), case variants, an extra key.
        const name = toolName(mode, server, "get_repo");
        const body =
          `{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"${
            toolName(mode, server, "create_issue")
          }","name":"${name}","arguments":{"repo":"acme/web"},"Name":"create_issue",` +
          `"Arguments":{"repo":"acme/public-site","title":"x","body":"y"},"NAME":"fail_tool","extra":"e",` +
          `"_meta":{"progressToken":"p-11"}}}`;
        const reply = await agent.post(body);
        const r = responsesOf(reply.messages);
        assertEquals(r.length, 1, reply.text);
        assert(r[0].result, `get_repo is allowed: ${reply.text}`);
        const sent = up.bodies.slice(from).filter((b) => b.includes('"tools/call"'));
        assert(sent.length >= 1, "the call reached the upstream");
        for (const b of sent) {
          for (const bad of ['"Name"', '"Arguments"', '"NAME"', '"extra"', "create_issue", "public-site"]) {
            assert(!b.includes(bad), `upstream body carries ${bad}: ${b}`);
          }
          assertEquals(b.split('"name"').length - 1, 1, `one "name" key: ${b}`);
          const params = JSON.parse(b).params as Msg;
          assert(
            Object.keys(params).every((k) => ["name", "arguments", "_meta"].includes(k)),
            `params keys: ${b}`,
          );
          assertEquals(params.name, "get_repo");
        }
        assertEquals(up.calls.slice(-1), ["get_repo"]);
      },
    });
  }

  Deno.test({
    name: `attack, ${mode}: a task-augmented call and tasks/result are refused before the upstream`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using s = await setup({ kind: "sdk", version: "2025-11-25", mode, server: "demo" });
      const up = s.upstream as HostileUpstream;
      const agent = new RawAgent(s.url, "2025-11-25");
      await agent.init();
      const from = up.bodies.length;
      const call = agent.request(21, "tools/call", {
        name: toolName(mode, "demo", "get_issue"),
        arguments: { repo: "acme/web", number: 2 },
        task: { ttl: 60_000 },
      });
      const r1 = responsesOf((await agent.post(call)).messages);
      assertEquals(r1.length, 1);
      assertEquals(codeOf(r1[0]), -32601);
      assertStringIncludes(JSON.stringify(r1[0].error), "guarded");
      for (const method of ["tasks/result", "tasks/get", "tasks/list", "tasks/cancel"]) {
        const r = responsesOf(
          (await agent.post(agent.request(22, method, { taskId: `task-${s.marker.slice(0, 5)}` }))).messages,
        );
        assertEquals(r.length, 1);
        assertEquals(codeOf(r[0]), -32601, `${method}: ${JSON.stringify(r[0])}`);
      }
      assertEquals(up.bodies.slice(from), [], "nothing reached the upstream");
      assertNoMarker(agent.received, s.marker, "tasks");
    },
  });

  Deno.test({
    name: `control, ${mode}: through a noop server the task channel carries the marker`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using s = await setup({ kind: "sdk", version: "2025-11-25", mode, server: "open" });
      const agent = new RawAgent(s.url, "2025-11-25");
      await agent.init();
      const call = agent.request(21, "tools/call", {
        name: toolName(mode, "open", "get_issue"),
        arguments: { repo: "acme/web", number: 2 },
        task: { ttl: 60_000 },
      });
      const r1 = await agent.post(call);
      if (mode === "routed") {
        assertStringIncludes(r1.text, s.marker, "the CreateTaskResult carries the marker");
        const r2 = await agent.post(agent.request(22, "tasks/result", { taskId: "task-1" }));
        assertStringIncludes(r2.text, s.marker, "tasks/result carries the marker");
      } else {
        assertStringIncludes(agent.received + r1.text, s.marker);
      }
    },
  });

  for (const status of [500, 403, 429]) {
    Deno.test({
      name:
        `attack, ${mode}: upstream HTTP ${status} body is not relayed; status kept, JSON-RPC error per request`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        await using s = await setup({ kind: "raw", version: "2025-11-25", mode, server: "guarded" });
        const raw = s.upstream as RawHostileUpstream;
        const agent = new RawAgent(s.url, "2025-11-25");
        await agent.init();
        raw.behaviour = { ...raw.behaviour, httpStatus: status };
        for (
          const m of [
            agent.request(31, "tools/call", {
              name: toolName(mode, "guarded", "echo"),
              arguments: { text: "x" },
            }),
            agent.request(32, "tools/list"),
          ]
        ) {
          const reply = await agent.post(m);
          assertNoMarker(agent.received, s.marker, `HTTP ${status}`);
          const r = responsesOf(reply.messages);
          assertEquals(r.length, 1, `one JSON-RPC answer: ${reply.status} ${reply.text.slice(0, 200)}`);
          assertEquals(r[0].id, m.id);
          // Unified tools/list is the gateway's merge: a failing upstream contributes no tools.
          if (mode === "unified" && m.method === "tools/list") assertEquals(r[0].result, { tools: [] });
          else assert(codeOf(r[0]) !== undefined, "an error");
          if (mode === "routed" && m.method === "tools/call") {
            assertEquals(reply.status, status, "status kept");
          }
        }
        assertNoMarker(agent.received, s.marker, `HTTP ${status}`);
      },
    });
  }

  Deno.test({
    name: `control, ${mode}: through a noop server an upstream HTTP 500 body reaches the agent`,
    sanitizeResources: false,
    sanitizeOps: false,
    ignore: mode === "unified", // unified has no transparent path for an upstream's error body
    fn: async () => {
      await using s = await setup({ kind: "raw", version: "2025-11-25", mode, server: "open" });
      const raw = s.upstream as RawHostileUpstream;
      const agent = new RawAgent(s.url, "2025-11-25");
      await agent.init();
      raw.behaviour = { ...raw.behaviour, httpStatus: 500 };
      const reply = await agent.post(
        agent.request(31, "tools/call", { name: "echo", arguments: { text: "x" } }),
      );
      assertEquals(reply.status, 500);
      assertStringIncludes(reply.text, s.marker);
    },
  });
}

Deno.test({
  name:
    "attack, 2026-07-28 routed: an MRTR InputRequiredResult to a guarded tools/call is refused (SDK v2 upstream)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    for (const json of [false, true]) {
      await using s = await setup({
        kind: "sdk",
        version: "2026-07-28",
        mode: "routed",
        server: "guarded",
        json,
      });
      const agent = new RawAgent(s.url, "2026-07-28");
      const reply = await agent.post(agent.request(41, "tools/call", { name: "ask_user", arguments: {} }));
      const r = responsesOf(reply.messages);
      assertEquals(r.length, 1, reply.text);
      assert(codeOf(r[0]) !== undefined, `refused: ${reply.text}`);
      assertNoMarker(agent.received, s.marker, "MRTR");
    }
  },
});

Deno.test({
  name: "control, 2026-07-28 routed: through a noop server the MRTR InputRequiredResult carries the marker",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using s = await setup({ kind: "sdk", version: "2026-07-28", mode: "routed", server: "open" });
    const agent = new RawAgent(s.url, "2026-07-28");
    const reply = await agent.post(agent.request(41, "tools/call", { name: "ask_user", arguments: {} }));
    assertStringIncludes(reply.text, "input_required");
    assertStringIncludes(reply.text, s.marker);
  },
});

Deno.test({
  name: "demo guard on the hostile SDK upstream: issue #2 (the marker) is blocked, #1 released",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using s = await setup({ kind: "sdk", version: "2025-11-25", mode: "routed", server: "demo" });
    const agent = new RawAgent(s.url, "2025-11-25");
    await agent.init();
    agent.received = ""; // this test is about the tool results only (the matrix covers initialize)
    const blocked = responsesOf(
      (await agent.post(
        agent.request(1, "tools/call", { name: "get_issue", arguments: { repo: "acme/web", number: 2 } }),
      )).messages,
    );
    assertEquals(blocked.length, 1);
    assert(codeOf(blocked[0]) !== undefined, `blocked: ${JSON.stringify(blocked[0])}`);
    const released = responsesOf(
      (await agent.post(
        agent.request(2, "tools/call", { name: "get_issue", arguments: { repo: "acme/web", number: 1 } }),
      )).messages,
    );
    assertStringIncludes(JSON.stringify(released[0].result), "nothing to see");
    assertNoMarker(agent.received, s.marker, "demo guard");
  },
});

// ---------------------------------------------------------------------------------------------------
// SDK clients over a recording fetch: every byte they received.

// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import {
  Client as ClientV2,
  StreamableHTTPClientTransport as TransportV2,
} from "@modelcontextprotocol/client";
import { API_KEY } from "./harness.ts";
import { recordingFetch } from "../helpers/failclosed.ts";

/** Runs `f`, returning the error code it rejected with, or "ok". */
async function outcome(f: () => Promise<unknown>): Promise<number | "ok"> {
  try {
    await f();
    return "ok";
  } catch (e) {
    return (e as { code?: number }).code ?? -1;
  }
}

/** The SDK v1 client session: every channel a 2025 client can touch. */
async function sdkV1Session(url: string, tool: (n: string) => string) {
  const sink = { text: "", pending: [] as Promise<void>[] };
  const asked: string[] = [];
  const client = new Client({ name: "failclosed-agent", version: "0" }, {
    capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } },
  });
  client.setRequestHandler(CreateMessageRequestSchema, () => {
    asked.push("sampling");
    return { role: "assistant", content: { type: "text", text: "ok" }, model: "m" };
  });
  client.setRequestHandler(ElicitRequestSchema, () => {
    asked.push("elicitation");
    return { action: "decline" };
  });
  client.setRequestHandler(ListRootsRequestSchema, () => {
    asked.push("roots");
    return { roots: [] };
  });
  const notes: unknown[] = [];
  client.fallbackNotificationHandler = (n) => {
    notes.push(n);
    return Promise.resolve();
  };
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${API_KEY}`, "x-agent-id": "sdk-agent" } },
    fetch: recordingFetch(sink),
  });
  await client.connect(transport);
  const progress: unknown[] = [];
  const results: Record<string, number | "ok"> = {};
  try {
    results.instructions = client.getInstructions() === undefined ? "ok" : -1;
    results.listTools = await outcome(() => client.listTools());
    results.getRepo = await outcome(() =>
      client.callTool({ name: tool("get_repo"), arguments: { repo: "acme/web" } }, undefined, {
        onprogress: (p) => void progress.push(p),
      })
    );
    results.getSecret = await outcome(() => client.callTool({ name: tool("get_secret"), arguments: {} }));
    results.failTool = await outcome(() => client.callTool({ name: tool("fail_tool"), arguments: {} }));
    results.listIssues = await outcome(() =>
      client.callTool({ name: tool("list_issues"), arguments: { repo: "acme/web" } })
    );
    results.listResources = await outcome(() => client.listResources());
    results.readResource = await outcome(() => client.readResource({ uri: "file:///x" }));
    results.listPrompts = await outcome(() => client.listPrompts());
    results.getPrompt = await outcome(() => client.getPrompt({ name: "leak" }));
    results.complete = await outcome(() =>
      client.complete({ ref: { type: "ref/prompt", name: "leak" }, argument: { name: "a", value: "" } })
    );
    results.setLevel = await outcome(() => client.setLoggingLevel("debug"));
    results.ping = await outcome(() => client.ping());
    await new Promise((r) => setTimeout(r, 200)); // the GET stream's first events
  } finally {
    await transport.terminateSession().catch(() => {});
    await client.close();
  }
  await Promise.race([Promise.all(sink.pending), new Promise((r) => setTimeout(r, 2000))]);
  return { text: sink.text, asked, results, progress, notes, serverVersion: client.getServerVersion() };
}

for (const mode of ["routed", "unified"] as const) {
  for (const json of [false, true]) {
    Deno.test({
      name: `SDK v1 client, ${mode}, ${
        json ? "JSON" : "SSE"
      } upstream: a guarded server leaks nothing to the client`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        await using s = await setup({ kind: "sdk", version: "2025-11-25", mode, server: "guarded", json });
        const r = await sdkV1Session(s.url, (n) => toolName(mode, "guarded", n));
        assertNoMarker(r.text, s.marker, `SDK v1 ${mode}`);
        assertEquals(r.asked, [], "no server request reached the client");
        assertEquals(r.results.getRepo, "ok");
        assertEquals(r.results.listTools, "ok");
        assertEquals(r.results.ping, "ok");
        for (
          const k of ["listResources", "readResource", "listPrompts", "getPrompt", "complete", "setLevel"]
        ) {
          assertEquals(r.results[k], -32601, `${k} refused`);
        }
        assert(typeof r.results.getSecret === "number", "the marker result is blocked");
        assert(!String(r.serverVersion?.name).startsWith("hostile-"));
        if (!json && mode === "routed") assert(r.progress.length > 0, "progress of the call is relayed");
      },
    });
  }
  Deno.test({
    name: `SDK v1 client, ${mode}: through a noop server the same session sees the marker`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using s = await setup({ kind: "sdk", version: "2025-11-25", mode, server: "open" });
      const r = await sdkV1Session(s.url, (n) => toolName(mode, "open", n));
      assertStringIncludes(r.text, s.marker);
      if (mode === "routed") {
        assertEquals(r.results.readResource, "ok", "resources reach a noop server");
        assert(r.asked.includes("sampling"), "the upstream's sampling request reached the client");
      }
    },
  });
}

/** The SDK v2 client pinned to 2026-07-28, routed. */
async function sdkV2Session(url: string) {
  const sink = { text: "", pending: [] as Promise<void>[] };
  const client = new ClientV2({ name: "failclosed-agent-v2", version: "0" }, {
    capabilities: {},
    versionNegotiation: { mode: { pin: "2026-07-28" } },
    // deno-lint-ignore no-explicit-any
  } as any);
  const transport = new TransportV2(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${API_KEY}`, "x-agent-id": "sdk-agent-v2" } },
    fetch: recordingFetch(sink),
  });
  const results: Record<string, number | "ok"> = {};
  // deno-lint-ignore no-explicit-any
  const c = client as any;
  try {
    await client.connect(transport);
    results.listTools = await outcome(() => c.listTools());
    results.getRepo = await outcome(() => c.callTool({ name: "get_repo", arguments: { repo: "acme/web" } }));
    results.getSecret = await outcome(() => c.callTool({ name: "get_secret", arguments: {} }));
    results.askUser = await outcome(() => c.callTool({ name: "ask_user", arguments: {} }));
    results.listResources = await outcome(() => c.listResources());
    results.readResource = await outcome(() => c.readResource({ uri: "file:///x" }));
    results.getPrompt = await outcome(() => c.getPrompt({ name: "leak" }));
  } finally {
    await client.close().catch(() => {});
  }
  await Promise.race([Promise.all(sink.pending), new Promise((r) => setTimeout(r, 2000))]);
  return { text: sink.text, results };
}

for (const json of [false, true]) {
  Deno.test({
    name: `SDK v2 client, 2026-07-28 routed, ${
      json ? "JSON" : "SSE"
    } upstream: a guarded server leaks nothing`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using s = await setup({
        kind: "sdk",
        version: "2026-07-28",
        mode: "routed",
        server: "guarded",
        json,
      });
      const r = await sdkV2Session(s.url);
      assertNoMarker(r.text, s.marker, "SDK v2");
      assertEquals(r.results.getRepo, "ok");
      assert(typeof r.results.getSecret === "number");
      assert(typeof r.results.askUser === "number", "the MRTR result is refused");
      for (const k of ["readResource", "getPrompt"]) assertEquals(r.results[k], -32601, k);
      // The gateway advertises only tools, so the client answers listResources itself (an empty list).
      assertEquals(r.results.listResources, "ok");
    },
  });
}

Deno.test({
  name: "SDK v2 client, 2026-07-28 routed: through a noop server the marker arrives",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using s = await setup({ kind: "sdk", version: "2026-07-28", mode: "routed", server: "open" });
    const r = await sdkV2Session(s.url);
    assertStringIncludes(r.text, s.marker);
    assertEquals(r.results.listResources, "ok", "resources reach a noop server");
  },
});

Deno.test({
  name: "SDK v2 client (auto), 2026-07-28 via unified: falls back or is served; nothing leaks",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using s = await setup({ kind: "sdk", version: "2026-07-28", mode: "unified", server: "guarded" });
    const sink = { text: "", pending: [] as Promise<void>[] };
    const client = new ClientV2({ name: "auto", version: "0" }, {
      capabilities: {},
      versionNegotiation: { mode: "auto" },
      // deno-lint-ignore no-explicit-any
    } as any);
    const transport = new TransportV2(new URL(s.url), {
      requestInit: { headers: { authorization: `Bearer ${API_KEY}` } },
      fetch: recordingFetch(sink),
    });
    // deno-lint-ignore no-explicit-any
    const c = client as any;
    try {
      await client.connect(transport);
      await c.listTools();
      await c.callTool({ name: "guarded___get_repo", arguments: { repo: "acme/web" } });
      await outcome(() => c.callTool({ name: "guarded___get_secret", arguments: {} }));
    } finally {
      await client.close().catch(() => {});
    }
    await Promise.race([Promise.all(sink.pending), new Promise((r) => setTimeout(r, 2000))]);
    assertNoMarker(sink.text, s.marker, "SDK v2 auto, unified");
  },
});

Deno.test({
  name: "attack: what a hostile upstream sprays is logged at debug only (it cannot flood the default log)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using s = await setup({ kind: "raw", version: "2025-11-25", mode: "routed", server: "guarded" });
    const agent = new RawAgent(s.url, "2025-11-25");
    await agent.init();
    for (let i = 0; i < 5; i++) {
      await agent.post(agent.request(100 + i, "tools/call", { name: "echo", arguments: { text: "x" } }));
    }
    await agent.get(300);
    const perMessage = s.gw.logs.filter((r) =>
      /^mcp_(withheld|upstream_request_refused|unmatched)/.test(String(r.event))
    );
    assert(perMessage.length >= 10, `the spray was withheld and recorded: ${perMessage.length}`);
    for (const r of perMessage) assertEquals(r.level, "debug", JSON.stringify(r));
    assertNoMarker(
      JSON.stringify(s.gw.logs.filter((r) => r.level !== "debug")),
      s.marker,
      "default-level log",
    );
  },
});
