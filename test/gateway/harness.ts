/**
 * Test harness for end-to-end gateway tests: the real gateway (`startGateway` from `src/main.ts`,
 * `Deno.serve` on 127.0.0.1:0) in front of real upstreams on loopback, driven by the SDK v1 client.
 *
 * - {@link startTestGateway}: parses a gh-aw-mcpg style config, serves it, captures the log sink.
 * - {@link startDemo}: the demo upstream (`src/demo/upstream.ts`) on 127.0.0.1:0.
 * - {@link connectAgent}: an SDK `Client` over `StreamableHTTPClientTransport` with the API key.
 * - {@link compileWatGuards}: WAT fixtures from `test/fixtures/wat/gateway/` compiled by wabt into a
 *   temporary directory, usable as `guards.<name>.path` relative to the returned base URL.
 *
 * @module
 */
import wabtInit from "wabt";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { parseConfig } from "../../src/config.ts";
import type { Gateway } from "../../src/app.ts";
import type { AgentLabelStore } from "../../src/difc/store.ts";
import { startGateway } from "../../src/main.ts";
import { createDemoUpstream, type DemoUpstream } from "../../src/demo/upstream.ts";

/** The API key every test gateway is configured with. */
export const API_KEY = "gateway-test-key-3f9a";

/** Where relative paths in test configs resolve when no WAT guards are involved. */
const REPO_BASE = new URL("../../", import.meta.url);

/** A gateway served on 127.0.0.1 for one test. */
export interface TestGateway extends AsyncDisposable {
  /** `http://127.0.0.1:<port>` */
  base: string;
  port: number;
  /** Routed URL of a server, or the unified URL without an argument. */
  url(server?: string): string;
  /** Every record the gateway logged, in order. */
  logs: Record<string, unknown>[];
  store: AgentLabelStore;
  gateway: Gateway;
  close(): Promise<void>;
}

/**
 * Starts the gateway for `raw` config (the API key and loopback hostname are filled in; the port is
 * always 0). Guard paths resolve against `configBase`.
 *
 * @example
 * ```ts
 * await using gw = await startTestGateway({ mcpServers: { demo: { type: "http", url } } });
 * ```
 */
export async function startTestGateway(
  raw: Record<string, unknown>,
  opts: { configBase?: URL } = {},
): Promise<TestGateway> {
  const gatewayRaw = { apiKey: API_KEY, ...(raw.gateway as Record<string, unknown> ?? {}) };
  const config = parseConfig({ ...raw, gateway: gatewayRaw }, {});
  config.gateway.port = 0;
  config.gateway.hostname = "127.0.0.1";
  const logs: Record<string, unknown>[] = [];
  const { gateway, server, store } = await startGateway(config, {
    configBase: opts.configBase ?? REPO_BASE,
    env: {},
    log: (r) => logs.push(r),
  });
  const port = server.addr.port;
  const base = `http://127.0.0.1:${port}`;
  let closed: Promise<void> | undefined;
  const close = () =>
    closed ??= (async () => {
      await gateway.close();
      await server.shutdown();
    })();
  return {
    base,
    port,
    url: (s?: string) => s === undefined ? `${base}/mcp` : `${base}/mcp/${s}`,
    logs,
    store,
    gateway,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Serves `gw.gateway.fetch` on 127.0.0.1:0, adding the API key to every request: for third-party
 * clients that cannot send one (the conformance CLI). Host, Origin and the body reach the gateway
 * untouched, so its own checks (auth stays on, Host/Origin) run as for any agent.
 *
 * @example
 * ```ts
 * const front = keyedFront(gw);
 * await runConformance(`http://localhost:${front.port}/mcp/conf`);
 * await front.close();
 * ```
 */
export function keyedFront(gw: TestGateway): { port: number; close(): Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const headers = new Headers(req.headers);
    headers.set("authorization", `Bearer ${API_KEY}`);
    return gw.gateway.fetch(
      new Request(req.url, {
        method: req.method,
        headers,
        body: req.body,
        signal: req.signal,
      }),
    );
  });
  return { port: server.addr.port, close: () => server.shutdown() };
}

/** The demo upstream on loopback. */
export interface RunningDemo extends AsyncDisposable {
  url: string;
  upstream: DemoUpstream;
  /** Every request's headers as the upstream saw them. */
  seen: Headers[];
  close(): Promise<void>;
}

/**
 * Serves a fresh demo upstream on 127.0.0.1:0 (or `port`, to restart one on the same port).
 *
 * @example
 * ```ts
 * await using demo = await startDemo();
 * demo.upstream.stats(); // tools/call counts per tool
 * ```
 */
export function startDemo(port = 0): Promise<RunningDemo> {
  const upstream = createDemoUpstream();
  const seen: Headers[] = [];
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port,
      onListen: ({ port }) => {
        let closed: Promise<void> | undefined;
        const close = () =>
          closed ??= (async () => {
            await upstream.close();
            await server.shutdown();
          })();
        resolve({ url: `http://127.0.0.1:${port}/mcp`, upstream, seen, close, [Symbol.asyncDispose]: close });
      },
    }, (req) => {
      seen.push(new Headers(req.headers));
      return upstream.fetch(req);
    });
  });
}

/** Options of {@link connectAgent}. */
export interface AgentOptions {
  agentId?: string;
  /** Client capabilities to declare (e.g. sampling, elicitation). */
  capabilities?: Record<string, unknown>;
  /** Configure request handlers before connecting. */
  setup?: (client: Client) => void;
}

/**
 * Connects an SDK v1 client to `url` with the test API key (`Bearer`) and optional `X-Agent-ID`.
 *
 * @example
 * ```ts
 * const client = await connectAgent(gw.url("demo"), { agentId: "alice" });
 * ```
 */
export async function connectAgent(url: string, opts: AgentOptions = {}): Promise<Client> {
  const headers: Record<string, string> = { authorization: `Bearer ${API_KEY}` };
  if (opts.agentId) headers["x-agent-id"] = opts.agentId;
  const client = new Client({ name: "gateway-test-agent", version: "0.0.1" }, {
    capabilities: opts.capabilities ?? {},
  });
  opts.setup?.(client);
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  await client.connect(transport);
  return client;
}

/** Concatenated text blocks of a tool result. */
export function texts(result: unknown): string[] {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content.filter((c) => c.type === "text").map((c) => c.text ?? "");
}

/** Bounds a promise: rejects with a message naming `what` after `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `pred` every 10 ms; rejects after `ms`. */
export async function waitUntil(pred: () => boolean, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The WAT fixtures of the gateway tests. */
export const WAT_DIR = new URL("../fixtures/wat/gateway/", import.meta.url);

/** Compiled WAT guards in a temporary directory; `base` is the config base URL for `<name>.wasm`. */
export interface CompiledGuards extends AsyncDisposable {
  base: URL;
}

/**
 * Compiles `test/fixtures/wat/gateway/<name>.wat` for each name into `<tmp>/<name>.wasm`.
 *
 * @example
 * ```ts
 * await using wat = await compileWatGuards(["strict"]);
 * const gw = await startTestGateway(cfg, { configBase: wat.base }); // guards.x.path = "strict.wasm"
 * ```
 */
export async function compileWatGuards(names: string[]): Promise<CompiledGuards> {
  const wabt = await wabtInit();
  const dir = await Deno.makeTempDir({ prefix: "gateway-wat-" });
  try {
    for (const name of names) {
      const text = await Deno.readTextFile(new URL(`${name}.wat`, WAT_DIR));
      const mod = wabt.parseWat(`${name}.wat`, text, { bulk_memory: true });
      try {
        const { buffer } = mod.toBinary({});
        await Deno.writeFile(`${dir}/${name}.wasm`, buffer);
      } finally {
        mod.destroy();
      }
    }
  } catch (e) {
    await Deno.remove(dir, { recursive: true });
    throw e;
  }
  const remove = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  return { base: new URL(`file://${dir}/`), [Symbol.asyncDispose]: remove };
}

/** Raw POST of a JSON-RPC body (or any text) with the test API key unless `headers` override it. */
export function rawPost(url: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      authorization: `Bearer ${API_KEY}`,
      ...headers,
    },
    body,
  });
}

/** A JSON-RPC `initialize` request body. */
export function initializeBody(id: number | string = 0): string {
  return JSON.stringify({
    jsonrpc: "2.0",
    id,
    method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "0" } },
  });
}
