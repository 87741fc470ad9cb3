/**
 * Gateway configuration: the gh-aw-mcpg JSON shape (what makes sense at the edge) plus our `limits`.
 *
 * A gh-aw-mcpg config with only `http` servers loads unchanged. Decisions:
 * - `stdio` / `local` / container servers cannot run at the edge: a {@link ConfigError} says so.
 * - Keys gh-aw-mcpg knows but that mean nothing at the edge (`domain`, `payloadDir`, `opentelemetry`,
 *   `env`, `auth`, ...) are accepted and reported in `warnings`. Unknown keys are warnings too (newer
 *   gh-aw-mcpg versions add keys; refusing them would break "loads unchanged"), except inside our own
 *   `limits` block, where a typo must not silently leave a limit at its default.
 * - `${VAR}` is expanded in every string value; an undefined variable is an error naming the field.
 * - No `apiKey`, no `agents` and no `oauth`: a random 64-hex shared key is generated (as the reference
 *   does) and reported by the entry point. With per-agent keys or OAuth configured, no shared key exists
 *   unless `apiKey` is set too.
 * - `gateway.agents` (per-agent keys) and `gateway.oauth` (JWT access tokens) are ours; like `limits`,
 *   unknown keys inside them are errors. See src/http/auth.ts for what each mode trusts.
 *
 * Runtime-neutral: no Deno or Workers APIs; the environment comes in as a plain record.
 *
 * @module
 */
import { type GuardLimits, resolveLimits } from "./guard/limits.ts";
import { UNIFIED_TOOL_SEPARATOR } from "./mcp/proxy.ts";
import { DEFAULT_BACKEND_CACHE_TTL_MS } from "./mcp/backend_cache.ts";
import { DIFC_MODES, type DifcMode, parseMode } from "./difc/evaluator.ts";
import { type AgentKey, isAgentId, MAX_AGENT_ID_LENGTH } from "./http/auth.ts";
import { ASYMMETRIC_ALGORITHMS, DEFAULT_CLOCK_TOLERANCE_S, type OAuthSettings } from "./http/oauth.ts";
import { isObject, randomHex } from "./util.ts";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";

/** A configuration problem. `path` is the JSON path of the bad field, e.g. `mcpServers.github.url`. */
export class ConfigError extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(`config ${path}: ${message}`);
    this.name = "ConfigError";
    this.path = path;
  }
}

/** One upstream MCP server. */
export interface ServerConfig {
  id: string;
  url: string;
  /** Headers sent upstream, after `${VAR}` expansion. The agent's own credentials are never forwarded. */
  headers: Record<string, string>;
  /** Tool allow-list; `["*"]` allows all. */
  tools: string[];
  /** Name of the guard in `guards`, or null. */
  guard: string | null;
  /** Raw `guard-policies` value (resolved by the DIFC layer), or null. */
  guardPolicies: unknown;
  /** Per-server tool timeout in ms, or null for the gateway's. */
  toolTimeoutMs: number | null;
  /**
   * How long a guard's `call_backend` answer is reused (`backendCacheTtl`, seconds in the file), in ms;
   * 0 disables the cache for this server. See src/mcp/backend_cache.ts.
   */
  backendCacheTtlMs: number;
}

/** A guard definition from `guards.<name>`. */
export type GuardConfig =
  | { name: string; type: "wasm"; path: string; policy: unknown }
  | { name: string; type: "noop"; policy: unknown };

/** Gateway-level settings. */
export interface GatewaySettings {
  port: number;
  hostname: string;
  /**
   * The shared key (the holder names agents with `X-Agent-ID`), or null when only per-agent keys
   * and/or OAuth authenticate agents.
   */
  apiKey: string | null;
  /** True when the key was generated because the config had no way to authenticate agents. */
  apiKeyGenerated: boolean;
  /** Per-agent keys (`gateway.agents`): the agent id comes from the key. */
  agents: AgentKey[];
  /** OAuth 2.1 resource server settings (`gateway.oauth`), or null. */
  oauth: OAuthSettings | null;
  /**
   * The operator's key for `/admin/*` (`gateway.adminKey`; src/http/admin.ts), or null: the operator
   * routes are off. Never an agent's key.
   */
  adminKey: string | null;
  toolTimeoutMs: number;
  trustedBots: string[];
  /** Default enforcement mode when a server has no policy (a guard's `label_agent` overrides it). */
  mode: DifcMode;
  /** Largest accepted request body in bytes. */
  maxBodyBytes: number;
  /** Extra allowed `Host` values beyond loopback names (DNS-rebinding protection). */
  allowedHosts: string[];
  /** Allowed `Origin` values; requests without `Origin` are allowed (non-browser agents). */
  allowedOrigins: string[];
}

/** The whole, validated configuration. */
export interface GatewayConfig {
  servers: ServerConfig[];
  guards: Map<string, GuardConfig>;
  gateway: GatewaySettings;
  limits: GuardLimits;
  /** Non-fatal findings (ignored keys, edge-irrelevant settings), each naming its path. */
  warnings: string[];
}

/** Defaults, each with its reason. */
export const CONFIG_DEFAULTS = {
  /** gh-aw-mcpg's default port. */
  port: 8080,
  /** Loopback only unless the operator says otherwise. */
  hostname: "127.0.0.1",
  /** gh-aw-mcpg's default tool timeout (60 s). */
  toolTimeoutSeconds: 60,
  /** Matches the 4 MiB body limit of the MCP SDK servers behind us, plus JSON-RPC overhead headroom. */
  maxBodyBytes: 4 * 1024 * 1024,
} as const;

/** Server ids end up in URL paths and unified tool names (`<id>___<tool>`). */
const SERVER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * Why `id` cannot be a server id in unified tool names, or null when it can.
 *
 * Unified mode names tools `<id>___<tool>` and splits at the FIRST `___`; tool names are the
 * upstream's and may start with `_`. The split gives back exactly `<id>` for every tool name if and
 * only if no `___` starts inside `<id>___`, before the separator, i.e. the id neither contains `___`
 * nor ends in `_`. Otherwise two servers could claim one name: `gh` + `_x` and `gh_` + `x` both give
 * `gh____x` (which the split reads as `gh`), and `a___b` + `c` reads as `a` + `b___c`. Such ids are
 * refused at load rather than resolved by a tie-break rule that an operator cannot see.
 *
 * @example
 * ```ts
 * unifiedIdProblem("gh"); // null
 * unifiedIdProblem("gh_"); // "must not end in '_' ..."
 * ```
 */
export function unifiedIdProblem(id: string): string | null {
  if (id.includes(UNIFIED_TOOL_SEPARATOR)) {
    return `must not contain '${UNIFIED_TOOL_SEPARATOR}' (the unified tool separator: ` +
      `<server>${UNIFIED_TOOL_SEPARATOR}<tool> would split inside the server id)`;
  }
  if (id.endsWith("_")) {
    return `must not end in '_' (unified tool names <server>${UNIFIED_TOOL_SEPARATOR}<tool> split at the ` +
      `first '${UNIFIED_TOOL_SEPARATOR}', so "${id}${UNIFIED_TOOL_SEPARATOR}x" would name a tool of ` +
      `server "${id.replace(/_+$/, "")}")`;
  }
  return null;
}

const KNOWN_TOP = new Set(["mcpServers", "gateway", "guards", "customSchemas", "limits", "guardsMode"]);
const IGNORED_TOP = new Set(["customSchemas"]);
const KNOWN_SERVER = new Set([
  "type",
  "url",
  "headers",
  "tools",
  "env",
  "guard",
  "guard-policies",
  "toolTimeout",
  "backendCacheTtl",
  "connectTimeout",
  "auth",
  "container",
  "entrypoint",
  "entrypointArgs",
  "mounts",
  "args",
  "command",
]);
const IGNORED_SERVER = new Set(["env", "connectTimeout"]);
const KNOWN_GATEWAY = new Set([
  "port",
  "hostname",
  "apiKey",
  "agentId",
  "domain",
  "startupTimeout",
  "toolTimeout",
  "payloadDir",
  "payloadSizeThreshold",
  "payloadPathPrefix",
  "trustedBots",
  "opentelemetry",
  "forcePublicRepos",
  "sinkVisibilityExemptServers",
  "maxBodyBytes",
  "allowedHosts",
  "allowedOrigins",
  "agents",
  "oauth",
  "adminKey",
]);
const IGNORED_GATEWAY = new Set([
  "domain",
  "startupTimeout",
  "payloadDir",
  "payloadSizeThreshold",
  "payloadPathPrefix",
  "opentelemetry",
  "forcePublicRepos",
  "sinkVisibilityExemptServers",
]);
const KNOWN_GUARD = new Set(["type", "path", "policy", "config"]);

type Obj = Record<string, unknown>;

function expectObj(v: unknown, path: string): Obj {
  if (!isObject(v)) throw new ConfigError(path, `must be an object, got ${describe(v)}`);
  return v;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "string" ? `the string ${JSON.stringify(v)}` : `${typeof v} ${JSON.stringify(v)}`;
}

function str(v: unknown, path: string): string {
  if (typeof v !== "string" || v.length === 0) {
    throw new ConfigError(path, `must be a non-empty string, got ${describe(v)}`);
  }
  return v;
}

function strArray(v: unknown, path: string, opts: { nonEmpty?: boolean } = {}): string[] {
  if (!Array.isArray(v)) throw new ConfigError(path, `must be an array of strings, got ${describe(v)}`);
  if (opts.nonEmpty && v.length === 0) throw new ConfigError(path, "must not be empty");
  return v.map((item, i) => str(item, `${path}[${i}]`));
}

function posInt(v: unknown, path: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1 || v > max) {
    throw new ConfigError(path, `must be an integer from 1 to ${max}, got ${describe(v)}`);
  }
  return v;
}

function nonNegInt(v: unknown, path: string, max: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > max) {
    throw new ConfigError(path, `must be an integer from 0 to ${max}, got ${describe(v)}`);
  }
  return v;
}

function checkKeys(o: Obj, path: string, known: Set<string>, ignored: Set<string>, warnings: string[]) {
  for (const k of Object.keys(o)) {
    const p = path ? `${path}.${k}` : k;
    if (!known.has(k)) warnings.push(`${p}: unknown key, ignored`);
    else if (ignored.has(k)) warnings.push(`${p}: has no effect at the edge, ignored`);
  }
}

/** Deepest nesting a config may have: real configs are under ten levels; this bounds recursion. */
export const MAX_CONFIG_DEPTH = 64;

/**
 * Expands `${VAR}` in every string of a JSON value. `$${` is not special; an undefined variable is an
 * error naming the field and the variable; nesting deeper than {@link MAX_CONFIG_DEPTH} is an error.
 */
export function expandEnv(
  value: unknown,
  env: Record<string, string | undefined>,
  path = "",
  depth = 0,
): unknown {
  if (depth > MAX_CONFIG_DEPTH && typeof value === "object" && value !== null) {
    throw new ConfigError(path || "(root)", `nesting deeper than ${MAX_CONFIG_DEPTH} levels`);
  }
  if (typeof value === "string") {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
      const v = env[name];
      if (v === undefined) throw new ConfigError(path || "(root)", `variable \${${name}} is not set`);
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, `${path}[${i}]`, depth + 1));
  if (isObject(value)) {
    const out: Obj = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = expandEnv(v, env, path ? `${path}.${k}` : k, depth + 1);
    }
    return out;
  }
  return value;
}

function parseModeField(v: unknown, path: string): DifcMode {
  try {
    if (typeof v === "string") return parseMode(v.trim());
  } catch {
    // reported below with the field path
  }
  throw new ConfigError(path, `must be one of ${DIFC_MODES.join(", ")}, got ${describe(v)}`);
}

function parseServer(id: string, raw: unknown, warnings: string[]): ServerConfig {
  const path = `mcpServers.${id}`;
  if (!SERVER_ID.test(id)) {
    throw new ConfigError(
      path,
      "server id must be 1-64 characters of letters, digits, '_', '.', '-' (used in URLs)",
    );
  }
  const ambiguous = unifiedIdProblem(id);
  if (ambiguous) throw new ConfigError(path, `server id ${ambiguous}`);
  const o = expectObj(raw, path);
  const type = o.type ?? (o.container !== undefined || o.command !== undefined ? "stdio" : undefined);
  if (type === "stdio" || type === "local" || o.container !== undefined || o.command !== undefined) {
    throw new ConfigError(
      `${path}.type`,
      `"${
        String(type)
      }" servers are not available at the edge (no processes or containers can be started); use an "http" server`,
    );
  }
  if (type !== "http") {
    throw new ConfigError(`${path}.type`, `must be "http", got ${describe(type)}`);
  }
  checkKeys(o, path, KNOWN_SERVER, IGNORED_SERVER, warnings);
  if (o.auth !== undefined) {
    warnings.push(`${path}.auth: OIDC upstream auth is not supported at the edge, ignored`);
  }
  const url = str(o.url, `${path}.url`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`${path}.url`, `is not a valid URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new ConfigError(`${path}.url`, `must be http(s), got ${parsed.protocol}`);
  }
  const headers: Record<string, string> = {};
  if (o.headers !== undefined) {
    for (const [k, v] of Object.entries(expectObj(o.headers, `${path}.headers`))) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k)) {
        throw new ConfigError(`${path}.headers`, `invalid header name ${JSON.stringify(k)}`);
      }
      if (typeof v !== "string" || /[\r\n\0]/.test(v)) {
        throw new ConfigError(`${path}.headers.${k}`, "must be a string without CR, LF or NUL");
      }
      headers[k] = v;
    }
  }
  const tools = o.tools === undefined ? ["*"] : strArray(o.tools, `${path}.tools`);
  const guard = o.guard === undefined ? null : str(o.guard, `${path}.guard`);
  const toolTimeoutMs = o.toolTimeout === undefined
    ? null
    : posInt(o.toolTimeout, `${path}.toolTimeout`, 86_400) * 1000;
  const guardPolicies = o["guard-policies"] === undefined
    ? null
    : expectObj(o["guard-policies"], `${path}.guard-policies`);
  const backendCacheTtlMs = o.backendCacheTtl === undefined
    ? DEFAULT_BACKEND_CACHE_TTL_MS
    : nonNegInt(o.backendCacheTtl, `${path}.backendCacheTtl`, 86_400) * 1000;
  return {
    id,
    url: parsed.toString(),
    headers,
    tools,
    guard,
    guardPolicies,
    toolTimeoutMs,
    backendCacheTtlMs,
  };
}

function parseGuard(name: string, raw: unknown, warnings: string[]): GuardConfig {
  const path = `guards.${name}`;
  const o = expectObj(raw, path);
  checkKeys(o, path, KNOWN_GUARD, new Set(), warnings);
  const policy = o.policy === undefined ? null : o.policy;
  if (o.type === "noop") return { name, type: "noop", policy };
  if (o.type !== "wasm") {
    throw new ConfigError(`${path}.type`, `must be "wasm" or "noop", got ${describe(o.type)}`);
  }
  const p = str(o.path, `${path}.path`);
  if (!/\.wasm$/i.test(p)) {
    throw new ConfigError(`${path}.path`, `must name a .wasm file, got ${JSON.stringify(p)}`);
  }
  return { name, type: "wasm", path: p, policy };
}

/** A per-agent key: the key itself (usually `${VAR}`) or its SHA-256, never both. */
const KNOWN_AGENT = new Set(["apiKey", "apiKeySha256"]);

function parseAgents(raw: unknown, path: string): AgentKey[] {
  const o = expectObj(raw, path);
  const out: AgentKey[] = [];
  for (const [id, v] of Object.entries(o)) {
    const p = `${path}.${id}`;
    if (!isAgentId(id)) {
      throw new ConfigError(
        p,
        `agent id must be 1-${MAX_AGENT_ID_LENGTH} characters of letters, digits and ._@:+- starting with a letter or digit`,
      );
    }
    const a = expectObj(v, p);
    for (const k of Object.keys(a)) {
      if (!KNOWN_AGENT.has(k)) throw new ConfigError(`${p}.${k}`, `unknown key; known: apiKey, apiKeySha256`);
    }
    if ((a.apiKey === undefined) === (a.apiKeySha256 === undefined)) {
      throw new ConfigError(
        p,
        "must have exactly one of apiKey (the key) and apiKeySha256 (its SHA-256, hex)",
      );
    }
    let keySha256: string;
    if (a.apiKeySha256 !== undefined) {
      const h = str(a.apiKeySha256, `${p}.apiKeySha256`);
      if (!/^[0-9a-fA-F]{64}$/.test(h)) {
        throw new ConfigError(`${p}.apiKeySha256`, "must be 64 hex digits (SHA-256 of the key)");
      }
      keySha256 = h.toLowerCase();
    } else {
      const key = str(a.apiKey, `${p}.apiKey`);
      // deno-lint-ignore no-control-regex
      if (/[\0-\x1f\x7f]/.test(key)) {
        throw new ConfigError(`${p}.apiKey`, "must not contain control characters");
      }
      keySha256 = bytesToHex(sha256(new TextEncoder().encode(key)));
    }
    const same = out.find((x) => x.keySha256 === keySha256);
    if (same) {
      throw new ConfigError(p, `has the same key as agent "${same.id}" (each agent needs its own key)`);
    }
    out.push({ id, keySha256 });
  }
  return out;
}

/** Hosts on which `http:` issuer and JWKS URLs are accepted (tests, local issuers). */
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);

function secureUrl(v: unknown, path: string, allowPath = true): string {
  const s = str(v, path);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ConfigError(path, `is not a valid URL: ${JSON.stringify(s)}`);
  }
  if (u.protocol !== "https:" && !(u.protocol === "http:" && LOOPBACK_HOSTS.has(u.hostname))) {
    throw new ConfigError(path, `must be an https URL (http only on loopback), got ${JSON.stringify(s)}`);
  }
  if (u.hash !== "" || u.search !== "" || u.username !== "" || u.password !== "") {
    throw new ConfigError(path, "must not have a query, fragment or credentials");
  }
  if (!allowPath && u.pathname !== "/") throw new ConfigError(path, "must not have a path");
  return s;
}

const KNOWN_OAUTH = new Set([
  "issuer",
  "audience",
  "jwksUrl",
  "agentClaim",
  "requiredScopes",
  "algorithms",
  "clockToleranceSeconds",
]);

function parseOAuth(raw: unknown, path: string): OAuthSettings {
  const o = expectObj(raw, path);
  for (const k of Object.keys(o)) {
    if (!KNOWN_OAUTH.has(k)) {
      throw new ConfigError(`${path}.${k}`, `unknown key; known: ${[...KNOWN_OAUTH].join(", ")}`);
    }
  }
  const issuer = secureUrl(o.issuer, `${path}.issuer`);
  const audience = secureUrl(o.audience, `${path}.audience`);
  const jwksUrl = o.jwksUrl === undefined ? null : secureUrl(o.jwksUrl, `${path}.jwksUrl`);
  const agentClaim = o.agentClaim === undefined ? "sub" : str(o.agentClaim, `${path}.agentClaim`);
  const requiredScopes = o.requiredScopes === undefined
    ? []
    : strArray(o.requiredScopes, `${path}.requiredScopes`);
  requiredScopes.forEach((sc, i) => {
    // RFC 6749 §3.3 scope-token: printable ASCII but space, quote and backslash.
    if (!/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(sc)) {
      throw new ConfigError(
        `${path}.requiredScopes[${i}]`,
        `is not a valid scope token: ${JSON.stringify(sc)}`,
      );
    }
  });
  const known: readonly string[] = ASYMMETRIC_ALGORITHMS;
  const algorithms = o.algorithms === undefined
    ? [...ASYMMETRIC_ALGORITHMS]
    : strArray(o.algorithms, `${path}.algorithms`, { nonEmpty: true });
  algorithms.forEach((alg, i) => {
    const p = `${path}.algorithms[${i}]`;
    if (alg.toLowerCase() === "none") {
      throw new ConfigError(p, `"none" is never accepted: tokens must be signed`);
    }
    if (/^HS/i.test(alg)) {
      throw new ConfigError(
        p,
        `${alg} is never accepted: tokens are verified with the issuer's public keys, and an HMAC algorithm ` +
          "would let anyone holding a public key sign tokens",
      );
    }
    if (!known.includes(alg)) {
      throw new ConfigError(p, `unknown algorithm ${JSON.stringify(alg)}; known: ${known.join(", ")}`);
    }
  });
  let clockToleranceSeconds: number = DEFAULT_CLOCK_TOLERANCE_S;
  if (o.clockToleranceSeconds !== undefined) {
    const v = o.clockToleranceSeconds;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > 300) {
      throw new ConfigError(
        `${path}.clockToleranceSeconds`,
        `must be an integer from 0 to 300, got ${describe(v)}`,
      );
    }
    clockToleranceSeconds = v;
  }
  return { issuer, audience, jwksUrl, agentClaim, requiredScopes, algorithms, clockToleranceSeconds };
}

/** Minimum length of `gateway.adminKey`: it unlocks every agent's labels. */
export const MIN_ADMIN_KEY_LENGTH = 16;

/** `gateway.adminKey`: a string of at least {@link MIN_ADMIN_KEY_LENGTH} characters that no agent uses. */
function parseAdminKey(raw: unknown, apiKey: string | null, agents: AgentKey[]): string | null {
  if (raw === undefined) return null;
  const p = "gateway.adminKey";
  const key = str(raw, p);
  // deno-lint-ignore no-control-regex
  if (/[\0-\x1f\x7f]/.test(key)) throw new ConfigError(p, "must not contain control characters");
  if (key.length < MIN_ADMIN_KEY_LENGTH) {
    throw new ConfigError(p, `must be at least ${MIN_ADMIN_KEY_LENGTH} characters`);
  }
  const hash = bytesToHex(sha256(new TextEncoder().encode(key)));
  if (key === apiKey || agents.some((a) => a.keySha256 === hash)) {
    throw new ConfigError(
      p,
      "must differ from gateway.apiKey and every agent's key (agents must not hold it)",
    );
  }
  return key;
}

/**
 * Parses and validates a configuration value (already JSON-decoded).
 *
 * @example
 * ```ts
 * const cfg = parseConfig(JSON.parse(text), Deno.env.toObject());
 * for (const w of cfg.warnings) console.warn(w);
 * ```
 * @throws {ConfigError} naming the path of the first bad field.
 */
export function parseConfig(input: unknown, env: Record<string, string | undefined> = {}): GatewayConfig {
  const warnings: string[] = [];
  const root = expectObj(expandEnv(input, env), "(root)");
  checkKeys(root, "", KNOWN_TOP, IGNORED_TOP, warnings);

  const serversRaw = expectObj(root.mcpServers ?? {}, "mcpServers");
  const servers = Object.entries(serversRaw).map(([id, raw]) => parseServer(id, raw, warnings));
  if (servers.length === 0) throw new ConfigError("mcpServers", "must define at least one server");

  const guards = new Map<string, GuardConfig>();
  if (root.guards !== undefined) {
    for (const [name, raw] of Object.entries(expectObj(root.guards, "guards"))) {
      guards.set(name, parseGuard(name, raw, warnings));
    }
  }
  for (const s of servers) {
    if (s.guard !== null && !guards.has(s.guard)) {
      throw new ConfigError(
        `mcpServers.${s.id}.guard`,
        `names guard "${s.guard}", which is not defined in guards`,
      );
    }
  }

  const g = expectObj(root.gateway ?? {}, "gateway");
  checkKeys(g, "gateway", KNOWN_GATEWAY, IGNORED_GATEWAY, warnings);
  let port: number = CONFIG_DEFAULTS.port;
  if (g.port !== undefined) {
    const p = typeof g.port === "string" && /^\d+$/.test(g.port) ? Number(g.port) : g.port;
    port = posInt(p, "gateway.port", 65_535);
  }
  const hostname = g.hostname === undefined ? CONFIG_DEFAULTS.hostname : str(g.hostname, "gateway.hostname");
  // gh-aw-mcpg: `apiKey`, with the older `agentId` accepted as the same secret.
  const keyRaw = g.apiKey ?? g.agentId;
  const keyPath = g.apiKey !== undefined ? "gateway.apiKey" : "gateway.agentId";
  const agents = g.agents === undefined ? [] : parseAgents(g.agents, "gateway.agents");
  const oauth = g.oauth === undefined ? null : parseOAuth(g.oauth, "gateway.oauth");
  const generate = keyRaw === undefined && g.agents === undefined && oauth === null;
  const apiKey = keyRaw === undefined ? (generate ? randomHex(32) : null) : str(keyRaw, keyPath);
  // deno-lint-ignore no-control-regex
  if (apiKey !== null && /[\0-\x1f\x7f]/.test(apiKey)) {
    throw new ConfigError(keyPath, "must not contain control characters");
  }
  if (apiKey !== null) {
    const shared = bytesToHex(sha256(new TextEncoder().encode(apiKey)));
    const same = agents.find((a) => a.keySha256 === shared);
    if (same) throw new ConfigError(keyPath, `is also agent "${same.id}"'s key (a key names one agent)`);
  }
  if (apiKey !== null && (agents.length > 0 || oauth !== null)) {
    warnings.push(
      `${keyPath}: a shared key is configured next to per-agent keys or OAuth; its holder names its own ` +
        "agent with X-Agent-ID (any name but a per-agent key's)",
    );
  }
  const adminKey = parseAdminKey(g.adminKey, apiKey, agents);
  const toolTimeoutMs = g.toolTimeout === undefined
    ? CONFIG_DEFAULTS.toolTimeoutSeconds * 1000
    : posInt(g.toolTimeout, "gateway.toolTimeout", 86_400) * 1000;
  const trustedBots = g.trustedBots === undefined
    ? []
    : strArray(g.trustedBots, "gateway.trustedBots", { nonEmpty: true });
  const maxBodyBytes = g.maxBodyBytes === undefined
    ? CONFIG_DEFAULTS.maxBodyBytes
    : posInt(g.maxBodyBytes, "gateway.maxBodyBytes");
  const allowedHosts = g.allowedHosts === undefined ? [] : strArray(g.allowedHosts, "gateway.allowedHosts");
  const allowedOrigins = g.allowedOrigins === undefined
    ? []
    : strArray(g.allowedOrigins, "gateway.allowedOrigins");
  const modeRaw = root.guardsMode ?? env.MCP_GATEWAY_GUARDS_MODE;
  const mode = modeRaw === undefined
    ? "strict"
    : parseModeField(modeRaw, root.guardsMode !== undefined ? "guardsMode" : "env MCP_GATEWAY_GUARDS_MODE");

  let limits: GuardLimits;
  const limitsRaw = root.limits === undefined ? {} : expectObj(root.limits, "limits");
  const knownLimits = new Set(Object.keys(resolveLimits()));
  for (const k of Object.keys(limitsRaw)) {
    if (!knownLimits.has(k)) {
      throw new ConfigError(`limits.${k}`, `unknown limit; known: ${[...knownLimits].join(", ")}`);
    }
  }
  try {
    limits = resolveLimits(limitsRaw as Partial<GuardLimits>);
  } catch (e) {
    const m = /^limits\.(\w+)/.exec((e as Error).message);
    throw new ConfigError(m ? `limits.${m[1]}` : "limits", (e as Error).message.replace(/^limits\.\w+ /, ""));
  }

  return {
    servers,
    guards,
    gateway: {
      port,
      hostname,
      apiKey,
      apiKeyGenerated: generate,
      agents,
      oauth,
      adminKey,
      toolTimeoutMs,
      trustedBots,
      mode,
      maxBodyBytes,
      allowedHosts,
      allowedOrigins,
    },
    limits,
    warnings,
  };
}

/**
 * Parses configuration JSON text, turning a syntax error into a {@link ConfigError} with the position.
 */
export function parseConfigText(
  text: string,
  env: Record<string, string | undefined> = {},
  source = "config",
): GatewayConfig {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ConfigError("(root)", `${source} is not valid JSON: ${(e as Error).message}`);
  }
  return parseConfig(value, env);
}
