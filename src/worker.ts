/**
 * Cloudflare Workers entry point (bundled by `deno task build` into `dist/worker.js`).
 *
 * - Configuration: the JSON text of the `MCP_EDGE_GUARD_CONFIG` var or secret (same shape as on
 *   Deno). `${VAR}` in it expands from the Worker's other string vars and secrets.
 * - Guards: workerd forbids compiling wasm at runtime, so the build prepares every configured WASM
 *   guard from its original (validation, ABI, caps, fuel) and the generated `worker_guards.js`
 *   imports each one as a compiled `WebAssembly.Module` (`import source`) next to the build's record
 *   of it. A guard is found by its name in `guards`; its `path` only matters to the build. The host
 *   accepts a module only when its preparation mark equals the record's and fits the limits.
 * - The gateway is built once per isolate, on the first request, and reused.
 * - Agent labels live in the `AGENT_LABELS` Durable Object namespace (one object per agent); without
 *   that binding they stay in isolate memory (a warning is logged).
 * - Host validation: requests arrive for the Worker's public hostname, so list it (or `"*"`) in
 *   `gateway.allowedHosts`; `gateway.port`/`hostname` mean nothing here.
 * - Authentication is configured as on Deno (`gateway.apiKey`, `gateway.agents`, `gateway.oauth`; see
 *   src/http/auth.ts). Keys are best given as `${VAR}` from secrets, or as `apiKeySha256`. Revocation
 *   and rotation: a changed secret or var is a new deployment, and new isolates build a new gateway
 *   with the new keys (there is no signal to reload on). The issuer's JWKS needs no deployment: it is
 *   fetched by each isolate on first use, refreshed every few minutes and on an unknown `kid`.
 * - Guards' `call_backend` answers: with the secret `MCP_EDGE_GUARD_CACHE_SECRET` set (32 characters
 *   or more), the isolates of a data center share them through the Cache API, sealed with keys
 *   derived from that secret (src/mcp/shared_answers.ts); without it each isolate keeps its own.
 * - A spinning guard is bounded by fuel, not time: Workers freeze `Date.now()` during execution, so
 *   `limits.fuel` is the budget that stops it (`limits.timeoutMs` still covers time spent waiting).
 *
 * @module
 */
import { createGateway, type Gateway } from "./app.ts";
import { jsonLogSink, type LogSink } from "./log.ts";
import { ConfigError, parseConfigText } from "./config.ts";
import {
  AgentLabelsObject,
  DurableObjectAgentLabelStore,
  type DurableObjectNamespaceLike,
} from "./difc/store_do.ts";
import { type AgentLabelStore, MemoryAgentLabelStore } from "./difc/store.ts";
import { guardFromPreparedModule } from "./guard/host.ts";
import { assertJspi } from "./guard/jspi.ts";
import { MIN_SHARED_SECRET_LENGTH, sealedCacheStore, type SharedAnswerStore } from "./mcp/shared_answers.ts";
import { planServers } from "./registry.ts";
// @ts-types="./worker_guards.d.ts"
import { guards as bundledGuards, records as bundledRecords } from "./worker_guards.js";

/** The bindings this Worker reads; every other string binding is available to `${VAR}` expansion. */
export interface WorkerEnv {
  /** The gateway configuration as JSON text (a var or, when it holds keys, a secret). */
  MCP_EDGE_GUARD_CONFIG?: string;
  /** Durable Object namespace of {@link AgentLabels}. */
  AGENT_LABELS?: DurableObjectNamespaceLike;
  /** Secret that turns on (and seals) the shared `call_backend` cache. */
  MCP_EDGE_GUARD_CACHE_SECRET?: string;
  [binding: string]: unknown;
}

/** The part of the Workers `ExecutionContext` this entry uses (nothing yet). */
export type WorkerContext = unknown;

/** The Durable Object class holding one agent's labels (bound as `AGENT_LABELS` in wrangler.toml). */
export class AgentLabels extends AgentLabelsObject {}

/** One JSON log line per record; Workers collect console output as logs. */
let log: LogSink = jsonLogSink((line) => console.log(line));

/** The gateway of this isolate, built on first use. */
let gateway: Promise<Gateway> | undefined;

/** A startup failure answered to every request until one succeeds. */
class StartupError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = "StartupError";
  }
}

/** Worker env → the string record `${VAR}` expansion reads (bindings that are not strings are skipped). */
function stringVars(env: WorkerEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (typeof v === "string") out[k] = v;
  return out;
}

async function buildGateway(env: WorkerEnv): Promise<Gateway> {
  if (typeof env.MCP_EDGE_GUARD_CONFIG !== "string" || env.MCP_EDGE_GUARD_CONFIG.trim() === "") {
    throw new StartupError(
      "config",
      "MCP_EDGE_GUARD_CONFIG is not set: put the gateway configuration JSON in this var or secret " +
        "(wrangler secret put MCP_EDGE_GUARD_CONFIG)",
    );
  }
  const vars = stringVars(env);
  log = jsonLogSink((line) => console.log(line), vars.MCP_EDGE_GUARD_LOG_LEVEL ?? "info");
  const config = parseConfigText(env.MCP_EDGE_GUARD_CONFIG, vars, "MCP_EDGE_GUARD_CONFIG");
  const { plans, warnings } = await planServers(config, (g) => {
    const module = bundledGuards[g.name];
    if (!module) {
      const known = Object.keys(bundledGuards).join(", ") || "none";
      throw new Error(
        `guard "${g.name}" is not in this Worker bundle (bundled: ${known}); ` +
          "run `deno task build --config <this config>` and deploy again",
      );
    }
    return Promise.resolve(
      guardFromPreparedModule(
        module,
        { name: g.name, limits: config.limits, prepared: bundledRecords[g.name] },
        "run `deno task build` with the deployed configuration",
      ),
    );
  }, vars.MCP_GATEWAY_GUARD_POLICY_JSON);
  for (const w of [...config.warnings, ...warnings]) log({ level: "warn", event: "config", message: w });
  let store: AgentLabelStore;
  if (env.AGENT_LABELS) {
    store = new DurableObjectAgentLabelStore(env.AGENT_LABELS);
  } else {
    log({
      level: "warn",
      event: "config",
      message: "no AGENT_LABELS Durable Object binding: agent labels live in isolate memory only",
    });
    store = new MemoryAgentLabelStore();
  }
  return createGateway({ config, plans, store, log, sharedAnswers: await sharedAnswerStore(vars) });
}

/** The Cache API cache that holds the sealed `call_backend` answers. */
const SHARED_CACHE_NAME = "mcp-edge-guard-backend";

async function sharedAnswerStore(vars: Record<string, string>): Promise<SharedAnswerStore | undefined> {
  const secret = vars.MCP_EDGE_GUARD_CACHE_SECRET;
  if (secret === undefined) return undefined;
  if (secret.length < MIN_SHARED_SECRET_LENGTH) {
    throw new StartupError(
      "config",
      `MCP_EDGE_GUARD_CACHE_SECRET has ${secret.length} characters; it needs ${MIN_SHARED_SECRET_LENGTH} ` +
        "or more (wrangler secret put MCP_EDGE_GUARD_CACHE_SECRET, e.g. the output of openssl rand -hex 32)",
    );
  }
  const store = await sealedCacheStore(await caches.open(SHARED_CACHE_NAME), secret);
  log({ level: "info", event: "config", message: "call_backend answers are shared through the Cache API" });
  return store;
}

function startupFailure(e: unknown): Response {
  const code = e instanceof StartupError ? e.code : e instanceof ConfigError ? "config" : "startup";
  const message = (e as Error)?.message ?? String(e);
  log({ level: "error", event: "startup", code, message });
  return Response.json({ error: code, message: `mcp-edge-guard cannot start: ${message}` }, { status: 500 });
}

export default {
  /**
   * Serves one request: JSPI check, lazy gateway construction, then the Hono app.
   *
   * @example
   * ```ts
   * const res = await worker.fetch(new Request("https://gw.example.workers.dev/health"), env, ctx);
   * ```
   */
  async fetch(request: Request, env: WorkerEnv, _ctx?: WorkerContext): Promise<Response> {
    try {
      assertJspi();
    } catch (e) {
      return startupFailure(new StartupError("runtime", (e as Error).message));
    }
    let gw: Gateway;
    try {
      gateway ??= buildGateway(env);
      gw = await gateway;
    } catch (e) {
      gateway = undefined; // a fixed secret or redeploy should not need a new isolate
      return startupFailure(e);
    }
    return await gw.fetch(request);
  },
};
