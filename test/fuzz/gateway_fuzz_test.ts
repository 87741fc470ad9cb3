/**
 * Property-based fuzzing of what agents send: JSON-RPC bodies (single, batch, garbage), headers
 * (X-Agent-ID, Mcp-Session-Id, Authorization, Content-Type, Accept, MCP-Protocol-Version), methods
 * and paths, straight into `app.fetch` (no sockets) in front of an in-process upstream.
 *
 * Properties: the app always answers (never throws), never with an unhandled 500, every JSON answer
 * parses, and no answer ever carries an item the guard labeled unreadable (marker oracle).
 */
import fc from "fast-check";
import { assert } from "@std/assert";
import type { Guard, GuardSession } from "../../src/difc/guard.ts";
import { API_KEY, rawUpstream, startStressGateway } from "../stress/harness.ts";

const SCALE = Deno.env.get("STRESS") === "full" ? 10 : 1;
const MARKER = "UNREADABLE-MARKER-5d0e";
const AGENT = JSON.stringify({ agent: { secrecy: [], integrity: [] }, difc_mode: "filter" });
const READ = JSON.stringify({
  operation: "read",
  resource: { description: "r", secrecy: [], integrity: [] },
});

/** A correct guard: labels every item whose data holds the marker as secret (unreadable). */
const markerGuard: Guard = {
  name: "marker",
  type: "wasm",
  open(): GuardSession {
    return {
      labelAgent: () => Promise.resolve(AGENT),
      labelResource: () => Promise.resolve(READ),
      labelResponse: (input) => {
        const result = (JSON.parse(input) as { tool_result?: { content?: { text?: string }[] } }).tool_result;
        let items: unknown[] = [];
        try {
          items = (JSON.parse(result?.content?.[0]?.text ?? "") as { items?: unknown[] }).items ?? [];
        } catch {
          items = [];
        }
        return Promise.resolve(JSON.stringify({
          items_path: "/items",
          labeled_paths: items.map((it, i) => ({
            path: `/items/${i}`,
            labels: JSON.stringify(it).includes(MARKER)
              ? { description: `item ${i}`, secrecy: ["secret:x"], integrity: [] }
              : { description: `item ${i}`, secrecy: [], integrity: [] },
          })),
          default_labels: { description: "default", secrecy: ["secret:x"], integrity: [] },
        }));
      },
      usage: () => ({ fuel: 0, backendCalls: 0, memoryPages: 0, ms: 0 }),
      close: () => {},
    };
  },
};

const upstream = rawUpstream((name) => {
  const items = [{ note: "open item" }, { note: `${MARKER} secret item` }, {
    note: `for ${name.slice(0, 20)}`,
  }];
  return { content: [{ type: "text", text: JSON.stringify({ items, total_count: items.length }) }] };
});
const upstreamFetch: typeof fetch = (input, init) =>
  Promise.resolve().then(() => upstream(new Request(input, init)));

/** Header-safe text (printable ASCII and a little Latin-1): what `Headers` accepts. */
const headerText = fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e\xa0-\xff]/g, ""));
const maybe = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined, freq: 3 });

const rpcId = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 8 }),
  fc.constant(null),
  fc.double(),
  fc.constant({}),
);
const method = fc.oneof(
  fc.constantFrom(
    "tools/call",
    "tools/list",
    "initialize",
    "ping",
    "notifications/initialized",
    "resources/read",
  ),
  fc.string({ maxLength: 12 }),
);
const toolName = fc.oneof(
  fc.constantFrom("list_things", "get_thing", "s___list_things", "x___y", "", "___"),
  fc.string({ maxLength: 12 }),
);
const message = fc.oneof(
  fc.record({
    jsonrpc: fc.oneof(fc.constant("2.0"), fc.jsonValue({ maxDepth: 1 })),
    id: rpcId,
    method,
    params: fc.oneof(
      fc.record({
        name: fc.oneof(toolName, fc.jsonValue({ maxDepth: 1 })),
        arguments: fc.jsonValue({ maxDepth: 3 }),
      }, {
        requiredKeys: [],
      }),
      fc.jsonValue({ maxDepth: 2 }),
    ),
  }, { requiredKeys: ["method"] }),
  fc.jsonValue({ maxDepth: 3 }),
);
const body = fc.oneof(
  message.map((m) => JSON.stringify(m)),
  fc.array(message, { maxLength: 4 }).map((b) => JSON.stringify(b)),
  fc.string({ maxLength: 60 }),
  fc.constantFrom("", "{", "[]", "null", '{"jsonrpc":"2.0"}', "\u0000", "[".repeat(5000)),
);
/** Mostly well-formed requests (so the fuzzed bodies reach the guard), with every kind of oddity mixed in. */
const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });
const request = fc.record({
  method: fc.oneof(w(8, fc.constant("POST")), w(1, fc.constantFrom("GET", "DELETE", "PUT", "PATCH"))),
  path: fc.oneof(
    w(8, fc.constant("/mcp/s")),
    w(2, fc.constantFrom("/mcp", "/mcp/", "/mcp/s/", "/mcp/nope", "/health", "/reflect", "/mcp/s/x")),
    w(1, headerText.map((s) => "/" + encodeURIComponent(s))),
  ),
  authorization: fc.oneof(
    w(8, fc.constantFrom(`Bearer ${API_KEY}`, API_KEY, `bearer   ${API_KEY}`)),
    w(1, maybe(headerText)),
  ),
  agent: fc.oneof(
    w(6, fc.constantFrom("agent-1", "agent-2", "bot@x.y")),
    w(1, fc.constantFrom(undefined, "a".repeat(129), "..", "-x", "")),
    w(1, headerText),
  ),
  session: fc.oneof(
    w(8, fc.constant(undefined)),
    w(2, fc.constant("REAL")),
    w(1, fc.oneof(fc.uuid(), headerText)),
  ),
  contentType: fc.oneof(
    w(6, fc.constant("application/json")),
    w(1, maybe(fc.oneof(fc.constantFrom("text/plain", "application/json; charset=utf-8"), headerText))),
  ),
  accept: fc.oneof(
    w(6, fc.constant("application/json, text/event-stream")),
    w(1, maybe(fc.oneof(fc.constantFrom("application/json", "text/event-stream", "*/*"), headerText))),
  ),
  protocol: maybe(fc.oneof(fc.constantFrom("2025-11-25", "2025-03-26", "2026-07-28"), headerText)),
  body: fc.oneof(
    w(
      4,
      fc.record({ id: rpcId, name: toolName, args: fc.jsonValue({ maxDepth: 3 }) }).map((c) =>
        JSON.stringify({
          jsonrpc: "2.0",
          id: c.id,
          method: "tools/call",
          params: { name: c.name, arguments: c.args },
        })
      ),
    ),
    w(3, body),
  ),
});

Deno.test("fuzz app.fetch: JSON-RPC bodies, headers, sessions: no crash, no unhandled 500, nothing unreadable released", async () => {
  const gw = await startStressGateway({
    servers: {
      s: {
        url: "http://upstream.invalid/mcp",
        guard: "marker",
        policy: { "allow-only": { repos: ["acme/*"], "min-integrity": "none" } },
      },
    },
    guards: { marker: markerGuard },
    listen: false,
    upstreamFetch,
  });
  try {
    // A real unified session for agent-1, so fuzzed requests can hit a live session too.
    const init = await gw.gateway.fetch(
      new Request("http://127.0.0.1/mcp", {
        method: "POST",
        headers: {
          authorization: `Bearer ${API_KEY}`,
          "x-agent-id": "agent-1",
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: {
            protocolVersion: "2025-11-25",
            capabilities: {},
            clientInfo: { name: "f", version: "0" },
          },
        }),
      }),
    );
    await init.body?.cancel();
    const realSession = init.headers.get("mcp-session-id");
    assert(realSession, "unified initialize gave a session");

    const statuses = new Map<number, number>();
    let released = 0;
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const headers = new Headers();
        const set = (k: string, v: string | undefined) => {
          if (v === undefined) return;
          try {
            headers.set(k, v);
          } catch {
            // not a valid header value: a client could not send it either
          }
        };
        set("host", "127.0.0.1");
        set("authorization", r.authorization);
        set("x-agent-id", r.agent);
        set("mcp-session-id", r.session === "REAL" ? realSession : r.session);
        set("content-type", r.contentType);
        set("accept", r.accept);
        set("mcp-protocol-version", r.protocol);
        const hasBody = r.method !== "GET";
        const req = new Request(`http://127.0.0.1${r.path}`, {
          method: r.method,
          headers,
          body: hasBody ? r.body : undefined,
        });
        const res = await gw.gateway.fetch(req);
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (res.status >= 500 && res.status !== 502 && res.status !== 503 && res.status !== 504) {
          throw new Error(`HTTP ${res.status} for ${JSON.stringify(r).slice(0, 300)}: ${text.slice(0, 300)}`);
        }
        if ((res.headers.get("content-type") ?? "").startsWith("application/json") && text !== "") {
          JSON.parse(text);
        }
        if (text.includes("[Filtered]")) released++;
        assert(!text.includes(MARKER), `released an unreadable item: ${text.slice(0, 300)}`);
      }),
      { numRuns: 30_000 * SCALE },
    );
    const unhandled = gw.logs.filter((l) => l.event === "unhandled");
    console.log(
      `gateway fuzz: statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}, ` +
        `${released} filtered results`,
    );
    assert(unhandled.length === 0, `unhandled errors: ${JSON.stringify(unhandled.slice(0, 3))}`);
    assert(released > 0, "some fuzzed calls reached the guard and were filtered");
  } finally {
    await gw.close();
  }
});
