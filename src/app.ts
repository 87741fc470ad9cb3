/**
 * The gateway as a Hono app: routes and wiring only.
 *
 * A request reads top to bottom: Host/Origin check (every route) → route → API key and agent
 * identity → MCP proxy, whose tools/call hook runs the DIFC pipeline (label_agent → label_resource →
 * coarse check → upstream → label_response → filtering) around the upstream call.
 *
 * Routes:
 * - `GET /health` (no auth, but the Host/Origin check like every route): overall and per-server status.
 * - `GET /reflect` (auth): the calling agent's labels and each server's guard and policy.
 * - `GET|POST|DELETE /mcp/:server` (routed) and `/mcp` (unified: `<server>___<tool>` names).
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { GatewayConfig } from "./config.ts";
import { buildLabelAgentPayload } from "./difc/payload.ts";
import {
  beginToolCall,
  DIFC_ERROR_CODES,
  DifcError,
  type LabelAgentInput,
  labelAgentInputFor,
} from "./difc/pipeline.ts";
import { ToolCallLimiter } from "./difc/tool_limits.ts";
import type { AgentLabelStore } from "./difc/store.ts";
import { authenticate, AuthError } from "./http/auth.ts";
import { createHealthProber } from "./http/health.ts";
import { checkHostAndOrigin } from "./http/origin.ts";
import { createMcpProxy, type McpProxy, type ToolCallHook, type Upstream } from "./mcp/proxy.ts";
import type { ServerPlan } from "./registry.ts";
import { ErrorCode } from "./mcp/jsonrpc.ts";
import type { LogSink } from "./log.ts";
import { GATEWAY_VERSION } from "./version.ts";

export type { LogSink } from "./log.ts";

/** Everything the app needs; the entry points (Deno, Workers) build it. */
export interface AppDeps {
  config: GatewayConfig;
  plans: Map<string, ServerPlan>;
  store: AgentLabelStore;
  log: LogSink;
  /** Upstream fetch (tests and the embedded demo may route it in-process). Default: global fetch. */
  fetch?: typeof fetch;
}

/** The app plus what its owner must close on shutdown. */
export interface Gateway {
  app: Hono;
  fetch: (req: Request) => Response | Promise<Response>;
  proxy: McpProxy;
  /** Stops accepting MCP requests (503) and closes upstream sessions. */
  close(): Promise<void>;
}

export { GATEWAY_VERSION } from "./version.ts";

/**
 * Builds the gateway.
 *
 * @example
 * ```ts
 * const gw = createGateway({ config, plans, store: new MemoryAgentLabelStore(), log: console.log });
 * Deno.serve({ port: config.gateway.port }, gw.fetch);
 * ```
 */
export function createGateway(deps: AppDeps): Gateway {
  const { config, plans, store, log } = deps;
  const g = config.gateway;
  const upstreams = new Map<string, Upstream>(
    config.servers.map((s) => [s.id, {
      id: s.id,
      url: s.url,
      headers: s.headers,
      tools: s.tools,
      toolTimeoutMs: s.toolTimeoutMs ?? undefined,
      // The channel table applies to every server but those whose guard is the built-in noop.
      guarded: plans.get(s.id)?.guard.type !== "noop",
    }]),
  );
  let closing = false;
  // allow-only.tool-call-limits per server (validated at startup by planServers).
  const toolLimits = new Map<string, Record<string, number>>();
  for (const [id, p] of plans) {
    if (p.policy?.kind === "allow-only") {
      toolLimits.set(id, buildLabelAgentPayload(p.policy.policy).toolCallLimits);
    }
  }
  // Each server's label_agent input, once (its policy was validated by planServers).
  const agentInputs = new Map<string, Promise<LabelAgentInput>>();
  for (const [id, p] of plans) {
    if (!p.policy) continue;
    const input = labelAgentInputFor(p.policy.policy, p.guard.type, id, g.trustedBots);
    input.catch(() => {}); // a failure surfaces (fail closed) where the input is awaited, per call
    agentInputs.set(id, input);
  }
  const limiter = new ToolCallLimiter();

  const hook: ToolCallHook = {
    async begin(call) {
      const plan = plans.get(call.upstream.id);
      if (!plan) {
        return {
          block: { code: ErrorCode.InternalError, message: `no guard plan for server "${call.upstream.id}"` },
        };
      }
      const limit = toolLimits.get(call.upstream.id);
      const refused = limit ? limiter.take(call.agentId, call.upstream.id, call.name, limit) : null;
      if (refused) {
        log({
          event: "tool_call",
          agent: call.agentId,
          server: call.upstream.id,
          tool: call.name,
          decision: "limit",
        });
        return { block: { code: DIFC_ERROR_CODES.TOOL_CALL_LIMIT, message: refused } };
      }
      try {
        const guarding = await beginToolCall(
          {
            serverId: call.upstream.id,
            agentId: call.agentId,
            toolName: call.name,
            args: call.args,
            policy: plan.policy?.policy ?? null,
            trustedBots: g.trustedBots,
            labelAgentInput: await agentInputs.get(call.upstream.id),
            defaultMode: g.mode,
          },
          { guard: plan.guard, store, log },
          {
            signal: call.signal,
            backend: call.backend,
            log: (level, msg, fields) =>
              log({ level, event: "guard_log", guard: plan.guard.name, msg, ...fields }),
          },
        );
        return { guard: guarding };
      } catch (e) {
        if (e instanceof DifcError) return { block: { code: e.code, message: e.message, data: e.data } };
        throw e;
      }
    },
  };

  const proxy = createMcpProxy({
    upstreams,
    hook,
    maxBodyBytes: g.maxBodyBytes,
    toolTimeoutMs: g.toolTimeoutMs,
    fetch: deps.fetch,
    log,
  });

  const app = new Hono();

  // Host/Origin (DNS-rebinding protection) first, on every route, unknown paths included: a page that
  // rebinds its name to the gateway must not read even /health (it names servers and guards) or learn
  // which paths exist.
  app.use("*", async (c, next) => {
    const why = checkHostAndOrigin(c.req.raw.headers, g, new URL(c.req.url).host);
    if (why) {
      await c.req.raw.body?.cancel().catch(() => {});
      return c.json({ error: "forbidden", message: why }, 403);
    }
    await next();
  });

  const probe = createHealthProber(deps.fetch);
  app.get("/health", async (c) => {
    const servers: Record<string, unknown> = {};
    await Promise.all([...plans].map(async ([id, p]) => {
      servers[id] = {
        ...await probe(upstreams.get(id)!),
        guard: { name: p.guard.name, type: p.guard.type },
        policy: p.policy?.kind ?? null,
      };
    }));
    const down = Object.values(servers).some((s) => (s as { status: string }).status === "down");
    const status = closing ? "shutting_down" : down ? "degraded" : "healthy";
    return c.json({ status, version: GATEWAY_VERSION, servers }, closing ? 503 : 200);
  });

  /** Auth (Host/Origin was checked for every route above); the agent id or a ready error response. */
  const admit = async (c: Context): Promise<string | Response> => {
    try {
      return await authenticate(c.req.raw.headers, g.apiKey);
    } catch (e) {
      if (e instanceof AuthError) return c.json({ error: e.code, message: e.message }, e.status);
      throw e;
    }
  };

  app.get("/reflect", async (c) => {
    const agent = await admit(c);
    if (agent instanceof Response) return agent;
    const servers: Record<string, unknown> = {};
    for (const [id, p] of plans) {
      servers[id] = { guard: p.guard.name, type: p.guard.type, policy: p.policy?.policy ?? null };
    }
    return c.json({
      agent: { id: agent, labels: await store.get(agent) },
      defaultMode: g.mode,
      servers,
      timestamp: new Date().toISOString(),
    });
  });

  const mcp = async (c: Context, serverId: string | null): Promise<Response> => {
    const agent = await admit(c);
    if (agent instanceof Response) return agent;
    if (closing) return c.json({ error: "shutting_down", message: "Gateway is shutting down" }, 503);
    // The proxy answers methods other than GET/POST/DELETE with 405 itself.
    if (serverId === null) return proxy.unified(c.req.raw, agent);
    if (!upstreams.has(serverId)) {
      return c.json({ error: "not_found", message: `unknown server "${serverId}"` }, 404);
    }
    return proxy.routed(c.req.raw, serverId, agent);
  };

  app.all("/mcp", (c) => mcp(c, null));
  app.all("/mcp/", (c) => mcp(c, null));
  app.all("/mcp/:server", (c) => mcp(c, c.req.param("server")));
  app.all("/mcp/:server/", (c) => mcp(c, c.req.param("server")));

  app.notFound((c) =>
    c.json(
      { error: "not_found", message: `no route for ${c.req.method} ${new URL(c.req.url).pathname}` },
      404,
    )
  );
  app.onError((err, c) => {
    log({ level: "error", event: "unhandled", message: err.message, stack: err.stack });
    return c.json({ error: "internal", message: "internal gateway error" }, 500);
  });

  return {
    app,
    fetch: (req) => app.fetch(req),
    proxy,
    async close() {
      closing = true;
      await proxy.close();
    },
  };
}
