/**
 * The gateway as a Hono app: routes and wiring only.
 *
 * A request reads top to bottom: Host/Origin check (every route) → route → authentication and agent
 * identity (src/http/auth.ts: shared key, per-agent key or OAuth token) → MCP proxy, whose tools/call hook runs the DIFC pipeline (label_agent → label_resource →
 * coarse check → upstream → label_response → filtering) around the upstream call.
 *
 * Routes:
 * - `GET /health` (no auth, but the Host/Origin check like every route): overall and per-server status.
 * - `GET /reflect` (auth): the calling agent, how it was authenticated, its labels, and each server's
 *   guard and policy.
 * - `GET /.well-known/oauth-protected-resource[/<resource path>]` (no auth; only with `gateway.oauth`):
 *   RFC 9728 metadata of the gateway (`/mcp`) and of each routed server (`/mcp/<server>`).
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
import {
  type Authenticator,
  AuthError,
  type AuthError as AuthErrorType,
  type AuthSettings,
  type AuthTarget,
  createAuthenticator,
  type Identity,
} from "./http/auth.ts";
import { WELL_KNOWN_PRM } from "./http/oauth.ts";
import { ADMIN_PREFIX, createAdminHandler } from "./http/admin.ts";
import { createHealthProber } from "./http/health.ts";
import { checkHostAndOrigin } from "./http/origin.ts";
import { createMcpProxy, type McpProxy, type ToolCallHook, type Upstream } from "./mcp/proxy.ts";
import { BackendCache } from "./mcp/backend_cache.ts";
import type { SharedAnswerStore } from "./mcp/shared_answers.ts";
import type { ServerPlan } from "./registry.ts";
import { ErrorCode } from "./mcp/jsonrpc.ts";
import { type LogSink, logWrites } from "./log.ts";
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
  /** Fetch for the issuer's metadata and JWKS (`gateway.oauth`). Default: global fetch. */
  authFetch?: typeof fetch;
  /**
   * The `call_backend` cache's tier shared with other isolates (`src/mcp/shared_answers.ts`; the
   * Worker entry passes the sealed Cache API store when its secret is set). Default: none.
   */
  sharedAnswers?: SharedAnswerStore;
}

/** The app plus what its owner must close on shutdown. */
export interface Gateway {
  app: Hono;
  fetch: (req: Request) => Response | Promise<Response>;
  proxy: McpProxy;
  /** Stops accepting MCP requests (503) and closes upstream sessions. */
  close(): Promise<void>;
  /**
   * Replaces the keys and OAuth settings (revocation, rotation) without a restart: a new immutable
   * authenticator is built and swapped in one assignment; requests already admitted keep their identity,
   * every later request is checked against the new settings. Cached issuer keys start afresh.
   */
  reloadAuth(settings: AuthSettings): void;
  /** The authenticator in use now. */
  authenticator(): Authenticator;
}

/** The auth part of the gateway settings. */
export function authSettingsOf(g: GatewayConfig["gateway"]): AuthSettings {
  return { apiKey: g.apiKey, agents: g.agents, oauth: g.oauth };
}

/** How many agents' latest identities are kept for the decision log (least recently seen dropped). */
const IDENTITY_MEMORY = 4096;

/** The identity as `/reflect` shows it and the decision log records it (no secrets). */
export function describeIdentity(who: Identity): Record<string, unknown> {
  const out: Record<string, unknown> = { method: who.method, agentIdFrom: who.idFrom };
  if (who.method === "shared-key") out.trust = "the shared key's holder names the agent (X-Agent-ID)";
  if (who.token) Object.assign(out, who.token);
  return out;
}

export { GATEWAY_VERSION } from "./version.ts";

/** The level a guard's own line (host_log, WASI stdout) is written at: below warn it is debug output. */
function guardLogLevel(level: "debug" | "info" | "warn" | "error"): "debug" | "warn" | "error" {
  return level === "info" ? "debug" : level;
}

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
  // Guards' call_backend answers, shared by every request of this isolate (src/mcp/backend_cache.ts).
  const backendCache = new BackendCache({ shared: deps.sharedAnswers });
  const backendTtl = new Map(config.servers.map((s) => [s.id, s.backendCacheTtlMs]));
  const serverIds = config.servers.map((s) => s.id);
  const buildAuth = (settings: AuthSettings) =>
    createAuthenticator(settings, { servers: serverIds, fetch: deps.authFetch });
  // Swapped whole by reloadAuth; each request reads it once.
  let auth = buildAuth(authSettingsOf(g));
  // The latest identity under which each agent id was admitted, for the tool_call decision log (the
  // proxy hands the hook the agent id only). An id admitted by a per-agent key or a token cannot also
  // be claimed through the shared key, so the method recorded is the one that admitted the call unless
  // shared-key holders and token holders use the same name.
  // Kept as admitted; described only for a tools/call (auth runs on every request).
  const identities = new Map<string, Identity>();
  const remember = (who: Identity) => {
    identities.delete(who.id);
    identities.set(who.id, who);
    if (identities.size > IDENTITY_MEMORY) identities.delete(identities.keys().next().value!);
  };

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
      const who = identities.get(call.agentId);
      const authOf = who ? describeIdentity(who) : null;
      if (refused) {
        log({
          event: "tool_call",
          agent: call.agentId,
          auth: authOf,
          server: call.upstream.id,
          tool: call.name,
          decision: "limit",
        });
        return { block: { code: DIFC_ERROR_CODES.TOOL_CALL_LIMIT, message: refused } };
      }
      // The call_backend cache of this server: the guard's lookups, and what its call memo checks.
      const ttl = backendTtl.get(call.upstream.id) ?? 0;
      const { id: serverId, url: scope } = call.upstream, { protocolVersion } = call.backendRef;
      const lookup = (tool: string, args: unknown) => ({ serverId, protocolVersion, tool, args, scope });
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
          {
            guard: plan.guard,
            store,
            // The pipeline builds each record afresh: the identity is added in place.
            log: (r) => {
              if (r.event === "tool_call") r.auth = authOf;
              log(r);
            },
          },
          {
            signal: call.signal,
            backend: (tool, args, signal) =>
              backendCache.lookup(lookup(tool, args), ttl, (s) => call.backend(tool, args, s), signal),
            backendPeek: (tool, args) => backendCache.peek(lookup(tool, args), ttl),
            log: (level, msg, fields) => {
              const lvl = guardLogLevel(level);
              if (logWrites(log, lvl)) {
                log({ level: lvl, event: "guard_log", guard: plan.guard.name, msg, ...fields });
              }
            },
            wantsLog: (level) => logWrites(log, guardLogLevel(level)),
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
    const headers = c.req.raw.headers;
    // The URL's host is needed only without a Host header (a Request built in-process).
    const why = checkHostAndOrigin(headers, g, headers.has("host") ? undefined : new URL(c.req.url).host);
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

  // RFC 9728 protected resource metadata (no auth: it is how clients learn where to get a token).
  const metadata = (c: Context) => {
    const suffix = new URL(c.req.url).pathname.slice(WELL_KNOWN_PRM.length);
    const doc = auth.resourceMetadata(suffix);
    if (!doc) {
      return c.json({
        error: "not_found",
        message: `no protected resource metadata at ${WELL_KNOWN_PRM}${suffix}`,
      }, 404);
    }
    return c.json(doc, 200, { "cache-control": "public, max-age=300" });
  };
  app.get(WELL_KNOWN_PRM, metadata);
  app.get(`${WELL_KNOWN_PRM}/*`, metadata);

  /** Auth (Host/Origin was checked for every route above); the agent or a ready error response. */
  const admit = async (c: Context, target: AuthTarget): Promise<Identity | Response> => {
    try {
      const who = await auth.authenticate(c.req.raw.headers, target);
      remember(who);
      return who;
    } catch (e) {
      if (e instanceof AuthError) return authRefusal(c, e);
      throw e;
    }
  };
  const authRefusal = async (c: Context, e: AuthErrorType) => {
    await c.req.raw.body?.cancel().catch(() => {});
    return c.json({ error: e.code, message: e.message }, e.status, e.headers);
  };

  app.get("/reflect", async (c) => {
    const who = await admit(c, { kind: "reflect" });
    if (who instanceof Response) return who;
    const servers: Record<string, unknown> = {};
    for (const [id, p] of plans) {
      servers[id] = { guard: p.guard.name, type: p.guard.type, policy: p.policy?.policy ?? null };
    }
    return c.json({
      agent: { id: who.id, authentication: describeIdentity(who), labels: await store.get(who.id) },
      defaultMode: g.mode,
      servers,
      timestamp: new Date().toISOString(),
    });
  });

  const mcp = async (c: Context, serverId: string | null): Promise<Response> => {
    const who = await admit(c, serverId === null ? { kind: "unified" } : { kind: "server", serverId });
    if (who instanceof Response) return who;
    const agent = who.id;
    if (closing) return c.json({ error: "shutting_down", message: "Gateway is shutting down" }, 503);
    // The proxy answers methods other than GET/POST/DELETE with 405 itself.
    if (serverId === null) return proxy.unified(c.req.raw, agent);
    if (!upstreams.has(serverId)) {
      return c.json({ error: "not_found", message: `unknown server "${serverId}"` }, 404);
    }
    return proxy.routed(c.req.raw, serverId, agent);
  };

  // Operator routes (see and reset agents' labels), only with gateway.adminKey: src/http/admin.ts.
  const admin = createAdminHandler({ store, adminKey: g.adminKey, log });
  app.all(`${ADMIN_PREFIX}/*`, (c) => admin(c.req.raw));

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
    reloadAuth(settings) {
      auth = buildAuth(settings);
    },
    authenticator: () => auth,
  };
}
