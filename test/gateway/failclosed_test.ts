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
 *
 * Set FAILCLOSED_STRICT=1 to run the tests that are gated until the gateway implements the rule.
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
  type Reply,
  responsesOf,
  type Version,
  VERSIONS,
} from "../helpers/failclosed.ts";

/** Tests that fail until the gateway implements the fail-closed rule run only with FAILCLOSED_STRICT=1. */
const GATED = !Deno.env.get("FAILCLOSED_STRICT");

/** Methods refused on guarded servers (JSON-RPC -32601 naming "guarded", nothing sent upstream). */
const REFUSED = [
  "resources/list",
  "resources/read",
  "resources/templates/list",
  "resources/subscribe",
  "resources/unsubscribe",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
  "tasks/get",
  "tasks/result",
  "tasks/list",
  "tasks/cancel",
  "subscriptions/listen",
  "x-unknown/method",
] as const;

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

  assertEquals(answerOf(byMethod(msgs, "ping")[0]).result, {}, "ping answered {}");
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
  const ids = new Set(msgs.map((m) => JSON.stringify(m.id)));
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
          ignore: GATED,
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
