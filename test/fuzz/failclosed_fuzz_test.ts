/**
 * Property test of the fail-closed rule (issue 8): random sequences of agent messages (batches,
 * duplicate and type-confused ids such as 1 and "1", every method of the channel table, random
 * methods, notifications, concurrent POSTs on one session) against random behaviours of the raw
 * hostile upstream (`test/fixtures/hostile_upstream_raw.ts`: JSON or SSE, spraying every channel,
 * HTTP errors, reversed batches, GET streams), through the real gateway on loopback, routed and
 * unified, all four protocol versions.
 *
 * Properties: the upstream's marker never reaches the agent (any byte: status, headers, bodies, GET
 * streams), and every agent request gets exactly one answer, under its own id, in its own POST's
 * reply. A noop control shows the same upstream does reach an agent through an unguarded server.
 *
 * Bounded: FUZZ_RUNS runs (default 60), one upstream and one gateway for the whole property, all on
 * 127.0.0.1, stopped at the end.
 */
import fc from "fast-check";
import { assertStringIncludes } from "@std/assert";
import { compileWatGuards, startTestGateway } from "../gateway/harness.ts";
import { ALLOWED_TOOLS, newMarker } from "../fixtures/hostile_upstream_sdk.ts";
import { type RawBehaviour, startRawHostileUpstream } from "../fixtures/hostile_upstream_raw.ts";
import {
  assertExactlyOnce,
  type Msg,
  RawAgent,
  REFUSED,
  responsesOf,
  type Version,
} from "../helpers/failclosed.ts";

const RUNS = Number(Deno.env.get("FUZZ_RUNS") ?? 60);

const METHODS = [
  "initialize",
  "ping",
  "tools/list",
  "tools/call",
  "tools/call",
  "tools/call",
  ...REFUSED,
  "server/discover",
  "sampling/createMessage",
  "roots/list",
];
const NOTIFICATIONS = [
  "notifications/initialized",
  "notifications/cancelled",
  "notifications/progress",
  "notifications/roots/list_changed",
  "notifications/whatever",
];
/** A small id pool, so duplicates and 1-vs-"1" confusions are frequent. */
const ID = fc.constantFrom<unknown>(1, "1", 2, "2", 0, "0", "a", -1);
/** Random method names: letters, slashes and dashes only (never the marker). */
const randomMethod = fc.stringMatching(/^[a-z][a-z/_-]{0,15}$/);
const tool = fc.oneof(
  fc.constantFrom(...ALLOWED_TOOLS, "leak_tool", "nope"),
  fc.stringMatching(/^[a-z_]{1,10}$/),
);

type Step = { kind: "req"; id: unknown; method: string; tool: string; task: boolean; token: boolean } | {
  kind: "note";
  method: string;
  ref: unknown;
};

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("req" as const),
      id: ID,
      method: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...METHODS) }, {
        weight: 1,
        arbitrary: randomMethod,
      }),
      tool,
      task: fc.boolean(),
      token: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("note" as const),
      method: fc.constantFrom(...NOTIFICATIONS),
      ref: ID,
    }),
  },
);

const behaviour: fc.Arbitrary<RawBehaviour> = fc.record({
  reply: fc.constantFrom("json" as const, "sse" as const),
  spray: fc.boolean(),
  httpStatus: fc.constantFrom(200, 200, 200, 500, 403, 404),
  reverse: fc.boolean(),
  get: fc.constantFrom("spray" as const, "405" as const),
  ackBody: fc.boolean(),
});

const scenario = fc.record({
  version: fc.constantFrom<Version>("2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"),
  unified: fc.boolean(),
  behaviour,
  posts: fc.array(fc.array(step, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 4 }),
  concurrent: fc.boolean(),
  get: fc.boolean(),
});

function toMessage(agent: RawAgent, s: Step, unified: boolean): Msg {
  if (s.kind === "note") {
    const params: Msg = s.method === "notifications/cancelled"
      ? { requestId: s.ref }
      : s.method === "notifications/progress"
      ? { progressToken: s.ref, progress: 1 }
      : {};
    return { jsonrpc: "2.0", method: s.method, params };
  }
  const params: Msg = {};
  if (s.method === "tools/call") {
    params.name = unified ? `guarded___${s.tool}` : s.tool;
    params.arguments = { repo: "acme/web", number: 2, text: "t" };
    if (s.task) params.task = { ttl: 1000 };
  } else if (s.method === "initialize") {
    Object.assign(params, {
      protocolVersion: agent.version,
      capabilities: {},
      clientInfo: { name: "f", version: "0" },
    });
  } else if (s.method.startsWith("tasks/")) {
    params.taskId = "task-1";
  } else if (s.method === "resources/read" || s.method === "resources/subscribe") {
    params.uri = "file:///x";
  }
  if (s.token) params._meta = { progressToken: `tok-${String(s.id)}` };
  return agent.request(s.id, s.method, params);
}

Deno.test({
  name: "fuzz: random agent messages vs random hostile upstream: no marker, exactly one answer per request",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const marker = newMarker();
    await using wat = await compileWatGuards(["marker"]);
    await using up = await startRawHostileUpstream({ marker });
    await using gw = await startTestGateway({
      mcpServers: {
        guarded: {
          type: "http",
          url: up.url,
          guard: "marker",
          tools: [...ALLOWED_TOOLS],
          "guard-policies": { "allow-only": { repos: "all", "min-integrity": "none" } },
        },
      },
      guards: { marker: { type: "wasm", path: "marker.wasm" } },
    }, { configBase: wat.base });
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(scenario, async (sc) => {
        const unified = sc.unified && sc.version !== "2026-07-28";
        const agent = new RawAgent(unified ? gw.url() : gw.url("guarded"), sc.version, "fuzz-agent");
        up.behaviour = { ...up.behaviour, httpStatus: 200, reply: sc.behaviour.reply };
        await agent.init();
        up.behaviour = sc.behaviour;
        const bodies = sc.posts.map((p) => {
          const msgs = p.map((s) => toMessage(agent, s, unified));
          // Batches only where the protocol has them; other versions send the first message alone.
          return sc.version === "2025-03-26" && msgs.length > 1 ? msgs : msgs[0];
        });
        const send = (b: Msg | Msg[]) => agent.post(b);
        const replies = sc.concurrent ? await Promise.all(bodies.map(send)) : [];
        if (!sc.concurrent) { for (const b of bodies) replies.push(await send(b)); }
        if (sc.get) await agent.get(150);
        await agent.delete();
        if (agent.received.includes(marker)) {
          const line = agent.received.split("\n").find((l) => l.includes(marker))!;
          throw new Error(`the marker reached the agent: ${line.slice(0, 400)}`);
        }
        bodies.forEach((b, i) => {
          const sent = Array.isArray(b) ? b : [b];
          assertExactlyOnce(sent, responsesOf(replies[i].messages), `POST ${i} (HTTP ${replies[i].status})`);
        });
      }),
      { numRuns: RUNS, interruptAfterTimeLimit: 50_000, markInterruptAsFailure: false },
    );
    console.log(`failclosed fuzz: ${RUNS} runs in ${Date.now() - started} ms`);
  },
});

Deno.test({
  name: "fuzz control: the same hostile upstream reaches an agent through a noop server",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const marker = newMarker();
    await using up = await startRawHostileUpstream({ marker });
    await using gw = await startTestGateway({ mcpServers: { open: { type: "http", url: up.url } } });
    const agent = new RawAgent(gw.url("open"), "2025-11-25");
    await agent.init();
    await agent.post(agent.request(1, "tools/call", { name: "echo", arguments: { text: "x" } }));
    await agent.delete();
    assertStringIncludes(agent.received, marker);
  },
});
