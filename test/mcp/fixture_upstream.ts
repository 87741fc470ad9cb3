/**
 * Real upstream MCP servers on 127.0.0.1 for the proxy tests: an SDK v1 `McpServer` behind
 * `WebStandardStreamableHTTPServerTransport` served by `Deno.serve`, and a raw TCP server that
 * starts an SSE reply and then drops the connection.
 *
 * @module
 */
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import {
  type CallToolResult,
  CreateMessageResultSchema,
  ElicitResultSchema,
} from "@modelcontextprotocol/sdk/types.js";
import * as z from "zod";

/** A running upstream. */
export interface TestUpstream {
  url: string;
  /** Headers of every request the upstream received. */
  seen: Headers[];
  /** HTTP methods of every request the upstream received. */
  methods: string[];
  /** Bodies of every POST the upstream received. */
  bodies: unknown[];
  close(): Promise<void>;
}

function buildServer(): McpServer {
  const s = new McpServer({ name: "fixture-upstream", version: "0.0.1" });
  s.registerTool("echo", { description: "echoes", inputSchema: { message: z.string() } }, ({ message }) => ({
    content: [{ type: "text", text: `Echo: ${message}` }],
  }));
  s.registerTool("secret", { description: "returns a secret" }, () => ({
    content: [{ type: "text", text: "the secret is 42" }],
  }));
  s.registerTool("hidden", { description: "not on any allow-list" }, () => ({
    content: [{ type: "text", text: "hidden" }],
  }));
  s.registerTool(
    "progress",
    { description: "reports progress", inputSchema: { steps: z.number() } },
    async ({ steps }, extra) => {
      const token = extra._meta?.progressToken;
      for (let i = 1; i <= steps; i++) {
        if (token !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress: i, total: steps },
          });
        }
      }
      return { content: [{ type: "text", text: "progress done" }] };
    },
  );
  s.registerTool(
    "sample",
    { description: "asks the client's LLM", inputSchema: { prompt: z.string() } },
    async (
      { prompt },
      extra,
    ) => {
      const r = await extra.sendRequest({
        method: "sampling/createMessage",
        params: { messages: [{ role: "user", content: { type: "text", text: prompt } }], maxTokens: 10 },
      }, CreateMessageResultSchema);
      const text = r.content.type === "text" ? r.content.text : "?";
      return { content: [{ type: "text", text: `LLM said: ${text}` }] };
    },
  );
  s.registerTool("elicit", { description: "asks the user" }, async (extra) => {
    const r = await extra.sendRequest({
      method: "elicitation/create",
      params: {
        message: "Your name?",
        requestedSchema: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
      },
    }, ElicitResultSchema);
    return { content: [{ type: "text", text: `action=${r.action} name=${String(r.content?.name)}` }] };
  });
  s.registerTool(
    "slow",
    { description: "waits until cancelled" },
    (extra) =>
      new Promise<CallToolResult>((resolve) => {
        const done = () => resolve({ content: [{ type: "text", text: "slow cancelled" }] });
        if (extra.signal.aborted) done();
        else extra.signal.addEventListener("abort", done, { once: true });
      }),
  );
  return s;
}

/**
 * Starts a stateful SDK upstream. `json` switches the transport to JSON-response mode.
 *
 * @example
 * ```ts
 * const up = await startSdkUpstream(); try { … } finally { await up.close(); }
 * ```
 */
export function startSdkUpstream(opts: { json?: boolean } = {}): Promise<TestUpstream> {
  const sessions = new Map<string, { t: WebStandardStreamableHTTPServerTransport; s: McpServer }>();
  const seen: Headers[] = [];
  const bodies: unknown[] = [];
  const methods: string[] = [];
  const notFound = () =>
    Response.json({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null }, {
      status: 404,
    });
  const handler = async (req: Request): Promise<Response> => {
    seen.push(new Headers(req.headers));
    methods.push(req.method);
    const sid = req.headers.get("mcp-session-id");
    let body: unknown;
    if (req.method === "POST") {
      body = await req.json();
      bodies.push(body);
    }
    if (sid) {
      const e = sessions.get(sid);
      return e ? await e.t.handleRequest(req, { parsedBody: body }) : notFound();
    }
    const t = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => crypto.randomUUID(),
      enableJsonResponse: opts.json === true,
      onsessioninitialized: (id) => {
        sessions.set(id, { t, s });
      },
      onsessionclosed: (id) => {
        sessions.delete(id);
      },
    });
    const s = buildServer();
    await s.connect(t);
    return await t.handleRequest(req, { parsedBody: body });
  };
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: ({ port }) => {
        resolve({
          url: `http://127.0.0.1:${port}/mcp`,
          seen,
          methods,
          bodies,
          async close() {
            for (const { s } of sessions.values()) await s.close();
            sessions.clear();
            await server.shutdown();
          },
        });
      },
    }, handler);
  });
}

/**
 * Starts a raw TCP "upstream" that answers every request with a chunked SSE reply carrying one
 * progress notification (for `progressToken` "p") and then closes the socket mid-body.
 */
export function startDyingUpstream(): { url: string; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        const buf = new Uint8Array(65536);
        await conn.read(buf).catch(() => null);
        const event = 'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress",' +
          '"params":{"progressToken":"p","progress":1}}\n\n';
        const head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n" +
          "transfer-encoding: chunked\r\n\r\n";
        const chunk = `${new TextEncoder().encode(event).byteLength.toString(16)}\r\n${event}\r\n`;
        await conn.write(new TextEncoder().encode(head + chunk)).catch(() => 0);
        await new Promise((r) => setTimeout(r, 20));
        conn.close();
        conns.delete(conn);
      })();
    }
  })().catch(() => {});
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
    },
  };
}
