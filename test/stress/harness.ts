/**
 * Shared parts of the stress tests: loopback servers, a gateway built from a real config through the
 * real registry, a raw JSON-RPC client over `fetch`, SSE decoding, hostile WAT guards and RSS.
 *
 * @module
 */
import { DEMO_GUARD_URL } from "../../src/main.ts";
import { createGateway, type Gateway, type LogSink } from "../../src/app.ts";
import { type GatewayConfig, parseConfig } from "../../src/config.ts";
import type { Guard } from "../../src/difc/guard.ts";
import { type AgentLabelStore, MemoryAgentLabelStore } from "../../src/difc/store.ts";
import { loadGuardModule, type WasmGuard } from "../../src/guard/host.ts";
import type { GuardLimits } from "../../src/guard/limits.ts";
import { planServers } from "../../src/registry.ts";
import { hostileBytes } from "../helpers/hostile_corpus.ts";

/** API key every stress gateway uses. */
export const API_KEY = "stress-key";
/** Headers of an agent POST. */
export const POST_HEADERS = {
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
  authorization: `Bearer ${API_KEY}`,
};

/** A server listening on 127.0.0.1, stopped by {@link Served.close}. */
export interface Served {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves `handler` on an ephemeral loopback port. */
export function serve(handler: (req: Request) => Response | Promise<Response>): Promise<Served> {
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: ({ port }) =>
        resolve({
          url: `http://127.0.0.1:${port}`,
          port,
          async close() {
            await server.shutdown();
          },
        }),
    }, handler);
  });
}

/** One server of a stress gateway: a URL and the guard (by name in `guards`) with its policy. */
export interface ServerSpec {
  url: string;
  guard?: string;
  policy?: unknown;
  tools?: string[];
}

/** A running stress gateway. */
export interface StressGateway {
  gateway: Gateway;
  config: GatewayConfig;
  store: AgentLabelStore;
  /** Log records except `guard_log` ones (kept up to 100,000). */
  logs: Record<string, unknown>[];
  /** `guard_log` records counted per guard name. */
  guardLogs: Map<string, number>;
  /** The gateway served on loopback (absent with `listen: false`). */
  base: string;
  close(): Promise<void>;
}

/**
 * Builds a gateway from a real config through `parseConfig` and `planServers`; wasm guards are taken
 * from `guards` by name (already loaded), so the config's `path` is only a label.
 */
export async function startStressGateway(opts: {
  servers: Record<string, ServerSpec>;
  guards?: Record<string, Guard>;
  toolTimeoutSeconds?: number;
  store?: AgentLabelStore;
  listen?: boolean;
  log?: LogSink;
  /** Upstream fetch (in-process upstreams); global fetch by default. */
  upstreamFetch?: typeof fetch;
}): Promise<StressGateway> {
  const guards = opts.guards ?? {};
  const raw = {
    mcpServers: Object.fromEntries(
      Object.entries(opts.servers).map(([id, s]) => [id, {
        type: "http",
        url: s.url,
        ...(s.guard ? { guard: s.guard } : {}),
        ...(s.policy ? { "guard-policies": s.policy } : {}),
        ...(s.tools ? { tools: s.tools } : {}),
      }]),
    ),
    guards: Object.fromEntries(Object.keys(guards).map((n) => [n, { type: "wasm", path: `${n}.wasm` }])),
    gateway: { apiKey: API_KEY, toolTimeout: opts.toolTimeoutSeconds ?? 30 },
  };
  const config = parseConfig(raw, {});
  const { plans } = await planServers(config, (g) => {
    const guard = guards[g.name];
    return guard ? Promise.resolve(guard) : Promise.reject(new Error(`no test guard ${g.name}`));
  });
  const store = opts.store ?? new MemoryAgentLabelStore();
  const logs: Record<string, unknown>[] = [];
  const guardLogs = new Map<string, number>();
  const log: LogSink = opts.log ?? ((r) => {
    if (r.event === "guard_log") {
      const g = String(r.guard);
      guardLogs.set(g, (guardLogs.get(g) ?? 0) + 1);
    } else if (logs.length < 100_000) logs.push(r);
  });
  const gateway = createGateway({ config, plans, store, log, fetch: opts.upstreamFetch });
  if (opts.listen === false) {
    return { gateway, config, store, logs, guardLogs, base: "", close: () => gateway.close() };
  }
  const served = await serve(gateway.fetch);
  return {
    gateway,
    config,
    store,
    logs,
    guardLogs,
    base: served.url,
    async close() {
      await gateway.close();
      await served.close();
    },
  };
}

/** A JSON-RPC message as decoded from a response. */
export type Rpc = Record<string, unknown> & { id?: unknown; result?: unknown; error?: unknown };

/** Reads every JSON-RPC message of a response, JSON or SSE. */
export async function readMessages(res: Response): Promise<Rpc[]> {
  const text = await res.text();
  const ct = res.headers.get("content-type") ?? "";
  if (ct.startsWith("text/event-stream")) {
    const out: Rpc[] = [];
    for (const block of text.split(/\r?\n\r?\n/)) {
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) =>
        l.slice(5).replace(/^ /, "")
      ).join("\n");
      if (data === "") continue;
      const v = JSON.parse(data);
      out.push(...(Array.isArray(v) ? v : [v]));
    }
    return out;
  }
  if (text === "") return [];
  const v = JSON.parse(text);
  return Array.isArray(v) ? v : [v];
}

/** The response for `id` among `msgs`, or undefined. */
export function responseFor(msgs: Rpc[], id: unknown): Rpc | undefined {
  return msgs.find((m) => m.id === id && ("result" in m || "error" in m));
}

/** Opens an MCP session for `agent` on `url` (routed); resolves to the session id (or undefined). */
export async function initSession(url: string, agent: string): Promise<string | undefined> {
  const res = await fetch(url, {
    method: "POST",
    headers: { ...POST_HEADERS, "x-agent-id": agent },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: {
        protocolVersion: "2025-11-25",
        capabilities: {},
        clientInfo: { name: "stress", version: "0" },
      },
    }),
  });
  const msgs = await readMessages(res);
  if (!responseFor(msgs, 0)) throw new Error(`initialize failed: HTTP ${res.status} ${JSON.stringify(msgs)}`);
  const sid = res.headers.get("mcp-session-id") ?? undefined;
  const ack = await fetch(url, {
    method: "POST",
    headers: { ...POST_HEADERS, "x-agent-id": agent, ...(sid ? { "mcp-session-id": sid } : {}) },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  await ack.body?.cancel();
  return sid;
}

/** A raw tools/call over fetch; resolves to the HTTP status and the response for `id` (if any). */
export async function callTool(
  url: string,
  agent: string,
  sid: string | undefined,
  id: number | string,
  name: string,
  args: unknown,
  signal?: AbortSignal,
): Promise<{ status: number; msg: Rpc | undefined; all: Rpc[] }> {
  const res = await fetch(url, {
    method: "POST",
    headers: { ...POST_HEADERS, "x-agent-id": agent, ...(sid ? { "mcp-session-id": sid } : {}) },
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: args } }),
    signal,
  });
  let all: Rpc[] = [];
  try {
    all = await readMessages(res);
  } catch {
    all = [];
  }
  return { status: res.status, msg: responseFor(all, id), all };
}

/** Text of all text blocks of a tools/call result. */
export function resultText(result: unknown): string {
  const content = (result as { content?: { type?: string; text?: string }[] } | undefined)?.content ?? [];
  return content.filter((c) => c.type === "text").map((c) => c.text ?? "").join("\n");
}

/**
 * A minimal stateless MCP upstream (JSON responses, no session): `initialize`, `tools/list` and
 * `tools/call` answered by `onCall`, which may also return a raw `Response` to misbehave.
 */
export function rawUpstream(
  onCall: (
    name: string,
    args: Record<string, unknown>,
    req: Request,
    id: unknown,
  ) => Promise<unknown> | unknown,
): (req: Request) => Promise<Response> {
  return async (req) => {
    if (req.method !== "POST") return new Response(null, { status: 405 });
    const msg = await req.json() as { id?: unknown; method?: string; params?: Record<string, unknown> };
    if (msg.id === undefined) return new Response(null, { status: 202 });
    const reply = (result: unknown) =>
      new Response(JSON.stringify({ jsonrpc: "2.0", id: msg.id, result }), {
        headers: { "content-type": "application/json" },
      });
    switch (msg.method) {
      case "initialize":
        return reply({
          protocolVersion: "2025-11-25",
          capabilities: { tools: {} },
          serverInfo: { name: "raw", version: "0" },
        });
      case "tools/list":
        return reply({ tools: [] });
      case "tools/call": {
        const out = await onCall(
          String(msg.params?.name),
          (msg.params?.arguments ?? {}) as Record<string, unknown>,
          req,
          msg.id,
        );
        return out instanceof Response ? out : reply(out);
      }
      default:
        return reply({});
    }
  };
}

/** Loads a hostile WAT guard through the real preparer and host. */
export async function loadHostile(name: string, limits: Partial<GuardLimits> = {}): Promise<WasmGuard> {
  return await loadGuardModule(await hostileBytes(name), { name, limits });
}

/** Loads the shipped demo guard. */
export async function loadDemoGuard(limits: Partial<GuardLimits> = {}): Promise<WasmGuard> {
  return await loadGuardModule(await Deno.readFile(DEMO_GUARD_URL), { name: "demo", limits });
}

/** Resident set size in MiB (rounded to 0.1). */
export function rssMiB(): number {
  return Math.round(Deno.memoryUsage().rss / 1024 / 1024 * 10) / 10;
}

/** True when `STRESS=full` asks for the long local run. */
export function fullRun(): boolean {
  return Deno.env.get("STRESS") === "full";
}

/** Polls `pred` every 5 ms; fails after `ms` instead of hanging the suite. */
export async function waitFor(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`gave up waiting (${ms} ms): ${what}`);
}

/** Runs `count` jobs with at most `concurrency` in flight; resolves when all have settled. */
export async function pool(
  count: number,
  concurrency: number,
  job: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await job(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}
