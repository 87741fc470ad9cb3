/**
 * Deno and Deno Deploy entry point.
 *
 * ```sh
 * deno task start [--config FILE [--watch-config]] [--port N] [--hostname H]
 * ```
 * Configuration comes from `--config FILE`, else from the JSON text in `MCP_EDGE_GUARD_CONFIG`, else
 * the embedded default: the in-process demo upstream behind the demo guard, with a printed example.
 *
 * Guards are read, prepared and compiled once at cold start. Agent labels live in memory by default;
 * `MCP_EDGE_GUARD_KV` selects Deno KV (`default` = `Deno.openKv()`, which on Deno Deploy is the
 * managed database; anything else is a local path). On Deno Deploy (`DENO_DEPLOYMENT_ID` set) KV is
 * the default and nothing is written to local files.
 *
 * Revocation and rotation without a restart: on `SIGHUP` (and, with `--watch-config`, whenever the
 * file changes) the `--config` file is read again and its `gateway.apiKey`, `gateway.agents` and
 * `gateway.oauth` replace the running ones in one swap (cached issuer keys are dropped too). A file
 * that does not parse, or that configures no way to authenticate, leaves the running settings in place
 * and logs why. Other sections (servers, guards, limits) need a restart. `${VAR}` is expanded from the
 * process environment as at startup. On Deno Deploy an environment change is a new deployment.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { authSettingsOf, createGateway, type Gateway, type LogSink } from "./app.ts";
import { ConfigError, type GatewayConfig, parseConfig, parseConfigText } from "./config.ts";
import { createDemoUpstream } from "./demo/upstream.ts";
import {
  type AgentLabelStore,
  DenoKvAgentLabelStore,
  type KvLike,
  MemoryAgentLabelStore,
} from "./difc/store.ts";
import { loadGuardModule } from "./guard/host.ts";
import { assertJspi } from "./guard/jspi.ts";
import { jsonLogSink } from "./log.ts";
import { planServers } from "./registry.ts";
import { callerDir, dirUrl, resolveFrom, resolvePath } from "./cli/paths.ts";

/** The demo guard shipped in `guards/demo/`. */
export const DEMO_GUARD_URL = new URL("../guards/demo/demo-guard.wasm", import.meta.url);
/** The demo policy: the agent may read private `acme/web` data written by approved authors. */
export const DEMO_POLICY = { "allow-only": { repos: ["acme/web"], "min-integrity": "approved" } };

/** The embedded default configuration around a running demo upstream. */
export function demoConfig(upstreamUrl: string, port: number, hostname: string): unknown {
  return {
    mcpServers: {
      demo: { type: "http", url: upstreamUrl, guard: "demo", "guard-policies": DEMO_POLICY },
    },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
    gateway: { port, hostname },
  };
}

/**
 * Writes each line to stderr with synchronous writes of its UTF-8 bytes: what `console.error` does
 * for one string, without formatting its arguments first (a guarded call writes at least one line).
 */
export function stderrLines(): (line: string) => void {
  const enc = new TextEncoder();
  return (line) => {
    let bytes = enc.encode(line + "\n");
    while (bytes.byteLength > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
  };
}

/** One JSON log line on stderr per record (`MCP_EDGE_GUARD_LOG_LEVEL`, default `info`). */
const logLine = jsonLogSink(stderrLines(), Deno.env.get("MCP_EDGE_GUARD_LOG_LEVEL") ?? "info");

async function openStore(env: Record<string, string | undefined>): Promise<AgentLabelStore> {
  const kv = env.MCP_EDGE_GUARD_KV ?? (env.DENO_DEPLOYMENT_ID ? "default" : undefined);
  if (kv === undefined) return new MemoryAgentLabelStore();
  // Deno.Kv keys may hold bigints and Uint8Arrays; the store only ever uses strings.
  return new DenoKvAgentLabelStore(await Deno.openKv(kv === "default" ? undefined : kv) as unknown as KvLike);
}

/** Reads a guard file given as a path (relative to `base`) or a file: URL. */
async function readGuard(path: string, base: URL): Promise<Uint8Array> {
  const url = /^file:/.test(path) ? new URL(path) : new URL(path, base);
  return await Deno.readFile(url);
}

/** Options of {@link startGateway}. */
export interface StartOptions {
  config?: GatewayConfig;
  /** Where relative guard paths are resolved. */
  configBase: URL;
  env: Record<string, string | undefined>;
  store?: AgentLabelStore;
  signal?: AbortSignal;
  onListen?: (addr: Deno.NetAddr) => void;
  /** Structured log sink; one JSON line on stderr by default. */
  log?: LogSink;
}

/**
 * Loads guards and serves the gateway until `signal` aborts. Used by the CLI entry below and by tests.
 */
export async function startGateway(
  config: GatewayConfig,
  opts: StartOptions,
): Promise<{ gateway: Gateway; server: Deno.HttpServer<Deno.NetAddr>; store: AgentLabelStore }> {
  assertJspi();
  const log = opts.log ?? logLine;
  const { plans, warnings } = await planServers(
    config,
    async (g) =>
      loadGuardModule(await readGuard(g.path, opts.configBase), { name: g.name, limits: config.limits }),
    opts.env.MCP_GATEWAY_GUARD_POLICY_JSON,
  );
  for (const w of [...config.warnings, ...warnings]) log({ level: "warn", event: "config", message: w });
  const store = opts.store ?? await openStore(opts.env);
  const gateway = createGateway({ config, plans, store, log });
  const server = Deno.serve({
    port: config.gateway.port,
    hostname: config.gateway.hostname,
    signal: opts.signal,
    onListen: opts.onListen ?? (() => {}),
  }, gateway.fetch);
  server.finished.then(() => gateway.close());
  return { gateway, server, store };
}

/**
 * Reads the configuration file again and swaps the gateway's keys and OAuth settings. Returns whether
 * the new settings are in force; on any problem the running ones stay and the reason is logged.
 *
 * @example
 * ```ts
 * Deno.addSignalListener("SIGHUP", () => reloadAuthFromFile(gateway, file, Deno.env.toObject(), log));
 * ```
 */
export async function reloadAuthFromFile(
  gateway: Gateway,
  file: URL,
  env: Record<string, string | undefined>,
  log: LogSink,
): Promise<boolean> {
  try {
    const next = parseConfigText(await Deno.readTextFile(file), env, file.pathname);
    if (next.gateway.apiKeyGenerated) {
      throw new ConfigError("gateway", "configures no apiKey, agents or oauth; keeping the running settings");
    }
    gateway.reloadAuth(authSettingsOf(next.gateway));
    log({
      level: "info",
      event: "auth_reload",
      sharedKey: next.gateway.apiKey !== null,
      agents: next.gateway.agents.map((a) => a.id),
      oauthIssuer: next.gateway.oauth?.issuer ?? null,
      note:
        "only gateway.apiKey, gateway.agents and gateway.oauth are reloaded; other changes need a restart",
    });
    return true;
  } catch (e) {
    log({ level: "error", event: "auth_reload", message: (e as Error).message });
    return false;
  }
}

/** Calls `reload` when `file` changes (editors often replace the file, so its directory is watched). */
async function watchConfig(file: URL, signal: AbortSignal, reload: () => void): Promise<void> {
  const path = decodeURIComponent(file.pathname);
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  const watcher = Deno.watchFs(dir, { recursive: false });
  signal.addEventListener("abort", () => watcher.close(), { once: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  for await (const ev of watcher) {
    if (!ev.paths.some((p) => p === path)) continue;
    clearTimeout(timer);
    timer = setTimeout(reload, 200); // one reload per burst of writes
  }
}

function banner(config: GatewayConfig, addr: Deno.NetAddr, demo: boolean): string {
  const base = `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}`;
  const lines = [
    `mcp-edge-guard listening on ${base}`,
    `  routed:  ${base}/mcp/<server>   unified: ${base}/mcp   health: ${base}/health`,
    `  servers: ${config.servers.map((s) => s.id).join(", ")}`,
  ];
  const g = config.gateway;
  // A key that came from the config or the environment is the operator's secret: it is never echoed
  // (terminals and process logs are often shared). Only a key the gateway made up is shown.
  if (g.apiKey !== null) {
    lines.push(
      g.apiKeyGenerated
        ? `  API key: ${g.apiKey}  (generated; set gateway.apiKey to fix it)`
        : "  API key: (from the configuration; not shown)",
    );
  }
  if (g.agents.length > 0) lines.push(`  agents:  ${g.agents.map((a) => a.id).join(", ")} (per-agent keys)`);
  if (g.oauth) lines.push(`  OAuth:   tokens of ${g.oauth.issuer} for ${g.oauth.audience}`);
  if (demo) {
    lines.push(
      "",
      "Embedded demo: upstream 'demo' (repos acme/web private, acme/public-site public) behind guards/demo,",
      `policy ${JSON.stringify(DEMO_POLICY)}. Try it (Node >= 20 and npm are enough):`,
      "",
      `  node_modules/deno/deno run -A examples/demo-client.ts ${base}/mcp/demo ${
        g.apiKeyGenerated ? g.apiKey : "<API key>"
      }`,
      "",
      "It lists acme/web issues (issue #2, by an outside contributor, is filtered), creates an issue in",
      "acme/web (allowed) and tries one in acme/public-site (blocked: outside the agent's policy scope).",
    );
  }
  return lines.join("\n");
}

/** What `deno task start --help` prints. */
export const USAGE = `usage: deno task start [--config FILE [--watch-config]] [--port N] [--hostname H]

  --config FILE     gateway configuration (JSON); relative to the directory you run the command in.
                    Without it: the JSON text in MCP_EDGE_GUARD_CONFIG, else the embedded demo.
  --watch-config    reload the keys and OAuth settings of --config FILE when it changes (also on SIGHUP)
  --port N          port to listen on (0 = any free port); overrides gateway.port
  --hostname H      address to listen on; overrides gateway.hostname (default 127.0.0.1)
  --help            this text

Environment: MCP_EDGE_GUARD_KV (Deno KV path or "default"), MCP_EDGE_GUARD_LOG_LEVEL (debug|info|warn|error).`;

/** One line on stderr and exit code 2: the user can act on it (wrong flag, busy port, bad config). */
function fail(message: string, usage = false): never {
  console.error(`mcp-edge-guard: ${message}`);
  if (usage) console.error(USAGE);
  Deno.exit(2);
}

/** The one-line explanation of a listen failure, or undefined for other errors. */
export function listenError(e: unknown, port: number, hostname: string): string | undefined {
  if (e instanceof Deno.errors.AddrInUse) {
    return `port ${port} on ${hostname} is already in use; choose another with --port N (or gateway.port)`;
  }
  if (e instanceof Deno.errors.AddrNotAvailable) {
    return `cannot listen on ${hostname}:${port}: address not available on this machine; check --hostname`;
  }
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return `not allowed to listen on ${hostname}:${port} (${(e as Error).message}); choose another --port`;
  }
  return undefined;
}

if (import.meta.main) {
  let values: { config?: string; port?: string; hostname?: string; "watch-config"?: boolean; help?: boolean };
  try {
    values = parseArgs({
      args: Deno.args,
      options: {
        config: { type: "string" },
        port: { type: "string" },
        hostname: { type: "string" },
        "watch-config": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    // node:util's text goes on about positionals starting with "-"; the first sentence is the point.
    fail((e as Error).message.split(/\. To specify|\n/)[0], true);
  }
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const env = Deno.env.toObject();
  const cwd = callerDir(env);
  // A relative local KV path is the caller's, like --config (":memory:" and "default" are names).
  const kvPath = env.MCP_EDGE_GUARD_KV;
  if (kvPath && kvPath !== "default" && !kvPath.startsWith(":") && !/^[a-z]+:/i.test(kvPath)) {
    env.MCP_EDGE_GUARD_KV = resolvePath(cwd, kvPath);
  }
  const controller = new AbortController();
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, () => controller.abort());
  let config: GatewayConfig | undefined;
  try {
    const port = values.port === undefined ? undefined : Number(values.port);
    if (port !== undefined && !(/^\d+$/.test(values.port!) && port >= 0 && port <= 65535)) {
      throw new ConfigError(
        "--port",
        `must be an integer from 0 to 65535, got ${JSON.stringify(values.port)}`,
      );
    }
    let base = dirUrl(cwd);
    let demo = false;
    let configFile: URL | undefined;
    if (values["watch-config"] && values.config === undefined) {
      throw new ConfigError("--watch-config", "needs --config FILE");
    }
    if (values.config !== undefined) {
      const file = configFile = resolveFrom(cwd, values.config);
      const text = await Deno.readTextFile(file).catch((e) => {
        throw new ConfigError("--config", `cannot read ${resolvePath(cwd, values.config!)}: ${e.message}`);
      });
      config = parseConfigText(text, env, values.config);
      base = file;
    } else if (env.MCP_EDGE_GUARD_CONFIG) {
      config = parseConfigText(env.MCP_EDGE_GUARD_CONFIG, env, "MCP_EDGE_GUARD_CONFIG");
    } else {
      demo = true;
      const upstream = createDemoUpstream();
      const up = Deno.serve(
        { port: 0, hostname: "127.0.0.1", signal: controller.signal, onListen() {} },
        upstream.fetch,
      );
      const url = `http://127.0.0.1:${up.addr.port}/mcp`;
      config = parseConfig(demoConfig(url, port || 8080, values.hostname ?? "127.0.0.1"), env); // --port 0 applies below
    }
    if (port !== undefined) config.gateway.port = port;
    if (values.hostname !== undefined) config.gateway.hostname = values.hostname;
    const cfg = config;
    const { gateway } = await startGateway(cfg, {
      configBase: base,
      env,
      signal: controller.signal,
      onListen: (addr) => console.log(banner(cfg, addr, demo)),
    });
    if (configFile) {
      const file = configFile;
      const reload = () => void reloadAuthFromFile(gateway, file, env, logLine);
      if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", reload);
      if (values["watch-config"]) watchConfig(file, controller.signal, reload).catch(() => {});
    }
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message);
    const listen = config && listenError(e, config.gateway.port, config.gateway.hostname);
    if (listen) fail(listen);
    throw e;
  }
}
