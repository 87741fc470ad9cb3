/**
 * Operator routes: see and reset agents' labels in whatever store the gateway runs with (memory,
 * Deno KV, Durable Objects).
 *
 * ```
 * GET    /admin/labels          {"agents": {"<agent>": {"secrecy": [...], "integrity": [...]}, ...}}
 * GET    /admin/labels/<agent>  {"agent": "<agent>", "labels": {...}}  (empty labels for an unknown agent)
 * DELETE /admin/labels/<agent>  {"agent": "<agent>", "reset": true, "previous": {...}}
 * ```
 * Every request needs `Authorization: Bearer <gateway.adminKey>`. The admin key is a separate
 * secret: config validation refuses one equal to the shared key or any agent's key, and agent keys and
 * tokens are never accepted here. Without `gateway.adminKey` the routes do not exist (404), so a
 * gateway exposes nothing new until the operator opts in. A reset is logged (`admin_labels_reset`).
 *
 * Why a reset is an operator action: labels only ever accumulate (the agent's taint), so the one way
 * back for an agent that read private data or untrusted content is for a person to decide the
 * session that read it is over. The next call of a reset agent starts from empty labels.
 *
 * @module
 */
import type { AgentLabelStore } from "../difc/store.ts";
import type { LogSink } from "../log.ts";
import { constantTimeEqual } from "./auth.ts";

/** Path prefix of the operator routes. */
export const ADMIN_PREFIX = "/admin";

/** What {@link createAdminHandler} needs. */
export interface AdminDeps {
  store: AgentLabelStore;
  /** `gateway.adminKey`; null disables the routes. */
  adminKey: string | null;
  log: LogSink;
}

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  Response.json(body, { status, headers: { "cache-control": "no-store", ...headers } });

/**
 * The handler of every `/admin/*` request.
 *
 * @example
 * ```ts
 * const admin = createAdminHandler({ store, adminKey: config.gateway.adminKey, log });
 * app.all("/admin/*", (c) => admin(c.req.raw));
 * ```
 */
export function createAdminHandler(deps: AdminDeps): (req: Request) => Promise<Response> {
  const { store, adminKey, log } = deps;
  return async (req) => {
    const path = new URL(req.url).pathname;
    await req.body?.cancel().catch(() => {});
    if (adminKey === null) {
      return json({
        error: "not_found",
        message: `no route for ${req.method} ${path} (gateway.adminKey is not set)`,
      }, 404);
    }
    const m = /^Bearer (.+)$/i.exec(req.headers.get("authorization") ?? "");
    if (!m || !constantTimeEqual(m[1], adminKey)) {
      return json(
        { error: "unauthorized", message: "operator routes need Authorization: Bearer <gateway.adminKey>" },
        401,
        { "www-authenticate": 'Bearer realm="mcp-edge-guard admin"' },
      );
    }
    if (path === `${ADMIN_PREFIX}/labels` || path === `${ADMIN_PREFIX}/labels/`) {
      if (req.method !== "GET") {
        return json({ error: "method_not_allowed", message: "use GET" }, 405, { allow: "GET" });
      }
      return json({ agents: await store.snapshot() });
    }
    const one = /^\/admin\/labels\/([^/]+)$/.exec(path);
    if (one) {
      let agent: string;
      try {
        agent = decodeURIComponent(one[1]);
      } catch {
        return json({ error: "bad_request", message: "agent id is not valid percent-encoding" }, 400);
      }
      if (req.method === "GET") return json({ agent, labels: await store.get(agent) });
      if (req.method === "DELETE") {
        const previous = await store.reset(agent);
        log({ level: "info", event: "admin_labels_reset", agent, previous });
        return json({ agent, reset: true, previous });
      }
      return json({ error: "method_not_allowed", message: "use GET or DELETE" }, 405, {
        allow: "GET, DELETE",
      });
    }
    return json({ error: "not_found", message: `no route for ${req.method} ${path}` }, 404);
  };
}
