/**
 * Guard policies: resolving a server's policy (guard-abi.md §4.7), validating the `allow-only` policy
 * and building the `label_agent` input payload (§2.1) with the reference's error texts, and the
 * canonical JSON used for every guard input.
 *
 * Differences from the reference, on purpose:
 * - `allow-only.tool-call-limits` is accepted: it is validated (map of tool → integer ≥ 0), stripped
 *   from the payload (the guard never sees it) and returned so the gateway can enforce it. The
 *   reference rejects it here although its own config model emits it (§7).
 * - Guard inputs are serialised with sorted keys (as Go does) but without Go's `\u003c`-style HTML
 *   escaping; JSON readers cannot tell the difference.
 *
 * @module
 */
import { isObject } from "../util.ts";

/** A policy that cannot be turned into a `label_agent` payload, or a server policy that is invalid. */
export class PolicyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PolicyError";
  }
}

type Obj = Record<string, unknown>;

/**
 * JSON text with object keys sorted at every level (Go's `json.Marshal` of maps). `undefined` members
 * are dropped, as `JSON.stringify` does. Stable, so it doubles as a cache key.
 *
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [{ d: 1, c: 2 }] }); // '{"a":[{"c":2,"d":1}],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (!isObject(v)) return v;
    const out: Obj = {};
    for (const k of Object.keys(v).sort()) out[k] = v[k];
    return out;
  });
}

/** Top-level payload keys the reference accepts. */
const TOP_LEVEL_KEYS = new Set(["allow-only", "allowonly", "trusted-bots"]);

/** `allow-only` keys the reference forwards to the guard. */
const ALLOW_ONLY_KEYS = new Set([
  "repos",
  "min-integrity",
  "integrity",
  "blocked-users",
  "refusal-labels",
  "approval-labels",
  "trusted-users",
  "endorsement-reactions",
  "disapproval-reactions",
  "disapproval-integrity",
  "endorser-min-integrity",
]);

/** Gateway-enforced key: validated and stripped before `label_agent` (see module doc). */
const TOOL_CALL_LIMITS_KEY = "tool-call-limits";

/** Valid integrity levels, lowest first. */
export const INTEGRITY_LEVELS = ["none", "unapproved", "approved", "merged"] as const;

/** GitHub owner names are at most 39 characters; the reference uses the same bound. */
const MAX_OWNER_CHARS = 39;
/** GitHub repository names are at most 100 characters. */
const MAX_REPO_CHARS = 100;

const SHAPE_HINT = 'expected {"allow-only":{"repos":...,"min-integrity":...}}';

function isScopeToken(s: string, max: number): boolean {
  return s.length >= 1 && s.length <= max && /^[a-z0-9_-]+$/.test(s);
}

/** `owner/*`, `owner/repo` or `owner/prefix*` with lowercase `[a-z0-9_-]` tokens. */
export function isValidRepoScope(scope: string): boolean {
  const parts = scope.split("/");
  if (parts.length !== 2) return false;
  const [owner, repo] = parts;
  if (!isScopeToken(owner, MAX_OWNER_CHARS)) return false;
  if (repo === "*") return true;
  const stars = repo.split("*").length - 1;
  if (stars > 1 || (stars === 1 && !repo.endsWith("*"))) return false;
  const name = stars === 1 ? repo.slice(0, -1) : repo;
  return isScopeToken(name, MAX_REPO_CHARS);
}

function validateScopeArray(scopes: unknown[]): void {
  if (scopes.length === 0) throw new PolicyError("allow-only.repos array must contain at least one scope");
  const seen = new Set<string>();
  for (const v of scopes) {
    if (typeof v !== "string") throw new PolicyError("allow-only.repos array values must be strings");
    const s = v.trim();
    if (!isValidRepoScope(s)) {
      throw new PolicyError(
        `allow-only.repos scope ${JSON.stringify(s)} is invalid; expected owner/*, owner/repo, or owner/re*`,
      );
    }
    if (seen.has(s)) throw new PolicyError("allow-only.repos must not contain duplicates");
    seen.add(s);
  }
}

function isValidReposValue(repos: unknown): boolean {
  if (typeof repos === "string") {
    const r = repos.trim().toLowerCase();
    return r === "all" || r === "public";
  }
  if (Array.isArray(repos)) {
    try {
      validateScopeArray(repos);
      return true;
    } catch {
      return false;
    }
  }
  return false;
}

function validateIntegrityField(field: string, raw: unknown): void {
  const s = typeof raw === "string" ? raw.trim().toLowerCase() : "";
  if (!(INTEGRITY_LEVELS as readonly string[]).includes(s)) {
    throw new PolicyError(`${field} must be one of: ${INTEGRITY_LEVELS.join(", ")}`);
  }
}

function validateStringArray(field: string, raw: unknown, requireNonEmpty: boolean): void {
  if (!Array.isArray(raw)) {
    throw new PolicyError(
      requireNonEmpty
        ? `invalid ${field} value: expected non-empty array of strings`
        : `invalid ${field} value: expected array of strings`,
    );
  }
  if (requireNonEmpty && raw.length === 0) {
    throw new PolicyError(`invalid ${field} value: must be a non-empty array when present`);
  }
  for (const e of raw) {
    if (typeof e !== "string" || e.trim() === "") {
      throw new PolicyError(`invalid ${field} value: each entry must be a non-empty string`);
    }
  }
}

function normalizeLabelList(field: string, raw: unknown): string[] {
  if (Array.isArray(raw)) {
    validateStringArray(field, raw, false);
    return raw.map((s) => (s as string).trim());
  }
  if (typeof raw !== "string") {
    throw new PolicyError(
      `invalid ${field} value: expected array of strings or comma/newline-delimited string`,
    );
  }
  const out = raw.split(/[,\n]/).map((s) => s.trim()).filter((s) => s !== "");
  if (out.length === 0) {
    throw new PolicyError(`invalid ${field} value: must include at least one non-empty label`);
  }
  return out;
}

function normalizeToolCallLimits(raw: unknown): Record<string, number> {
  if (!isObject(raw)) {
    throw new PolicyError("allow-only.tool-call-limits must be an object of tool name to integer");
  }
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(raw)) {
    const tool = k.trim();
    if (tool === "") throw new PolicyError("allow-only.tool-call-limits key must be a non-empty string");
    if (typeof v !== "number" || !Number.isSafeInteger(v)) {
      throw new PolicyError(`allow-only.tool-call-limits[${JSON.stringify(tool)}] must be an integer`);
    }
    if (v < 0) throw new PolicyError(`allow-only.tool-call-limits[${JSON.stringify(tool)}] must be >= 0`);
    out[tool] = v;
  }
  return out;
}

/**
 * Coerces a policy to a plain JSON object: a string is parsed (and must be an object), any other value
 * goes through a JSON round-trip.
 *
 * @throws {PolicyError} `policy is required`, `policy string is empty`,
 *   `policy string is not valid JSON object: ...`, `policy JSON must decode to an object`.
 */
export function normalizePolicyInput(policy: unknown): Obj {
  if (policy === null || policy === undefined) throw new PolicyError("policy is required");
  let value: unknown;
  if (typeof policy === "string") {
    const t = policy.trim();
    if (t === "") throw new PolicyError("policy string is empty");
    try {
      value = JSON.parse(t);
    } catch (e) {
      throw new PolicyError(`policy string is not valid JSON object: ${(e as Error).message}`);
    }
    if (!isObject(value)) throw new PolicyError("policy JSON must decode to an object");
    return value;
  }
  try {
    value = JSON.parse(JSON.stringify(policy));
  } catch (e) {
    throw new PolicyError(`failed to decode label_agent policy payload: ${(e as Error).message}`);
  }
  if (!isObject(value)) {
    throw new PolicyError(
      `failed to decode label_agent policy payload: expected an object, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** The validated `label_agent` input. */
export interface LabelAgentPayload {
  /** The payload object (`allow-only`, optional `trusted-bots`). */
  payload: Obj;
  /** Its canonical JSON: the guard input and the per-session cache key ("policy hash"). */
  json: string;
  /** `allow-only.tool-call-limits` (trimmed tool names), stripped from the payload; `{}` if none. */
  toolCallLimits: Record<string, number>;
}

/**
 * Validates an `allow-only` policy and builds the `label_agent` input of §2.1, injecting
 * `trusted-bots` from the gateway config when non-empty. Error texts are the reference's.
 *
 * @throws {PolicyError} naming the bad key or value, e.g.
 *   `invalid guard policy transport shape: unexpected allow-only key "x"`.
 * @example
 * ```ts
 * const { json } = buildLabelAgentPayload({ "allow-only": { repos: "public", "min-integrity": "none" } });
 * // json === '{"allow-only":{"min-integrity":"none","repos":"public"}}'
 * ```
 */
export function buildLabelAgentPayload(
  policy: unknown,
  trustedBots: readonly string[] = [],
): LabelAgentPayload {
  const payload = normalizePolicyInput(policy);
  if ("policy" in payload) {
    throw new PolicyError(
      "gateway policy adapter is outdated: remove legacy envelope key policy before calling label_agent",
    );
  }
  if (trustedBots.length > 0) payload["trusted-bots"] = [...trustedBots];

  const hasAllowOnly = "allow-only" in payload;
  const allowOnlyRaw = hasAllowOnly ? payload["allow-only"] : payload["allowonly"];
  if (!hasAllowOnly && !("allowonly" in payload)) {
    throw new PolicyError(
      "label_agent policy must use top-level allow-only object (received policy.allow-only)",
    );
  }
  for (const k of Object.keys(payload).sort()) {
    if (!TOP_LEVEL_KEYS.has(k)) {
      throw new PolicyError(`invalid guard policy transport shape: unexpected key ${JSON.stringify(k)}`);
    }
  }
  if (!isObject(allowOnlyRaw)) throw new PolicyError(`invalid guard policy transport shape: ${SHAPE_HINT}`);
  const allowOnly = allowOnlyRaw;

  let toolCallLimits: Record<string, number> = {};
  if (TOOL_CALL_LIMITS_KEY in allowOnly) {
    toolCallLimits = normalizeToolCallLimits(allowOnly[TOOL_CALL_LIMITS_KEY]);
    delete allowOnly[TOOL_CALL_LIMITS_KEY];
  }

  const integrityField = "min-integrity" in allowOnly ? "min-integrity" : "integrity";
  if (!("repos" in allowOnly) || !(integrityField in allowOnly)) {
    throw new PolicyError(
      "invalid guard policy transport shape: missing required fields repos and/or min-integrity in allow-only object",
    );
  }
  for (const k of Object.keys(allowOnly).sort()) {
    if (!ALLOW_ONLY_KEYS.has(k)) {
      throw new PolicyError(
        `invalid guard policy transport shape: unexpected allow-only key ${JSON.stringify(k)}`,
      );
    }
  }
  if (!isValidReposValue(allowOnly.repos)) {
    throw new PolicyError("invalid repos value: expected all, public, or non-empty array of scoped strings");
  }
  validateIntegrityField(integrityField, allowOnly[integrityField]);
  if ("blocked-users" in allowOnly) validateStringArray("blocked-users", allowOnly["blocked-users"], false);
  if ("refusal-labels" in allowOnly) {
    allowOnly["refusal-labels"] = normalizeLabelList("refusal-labels", allowOnly["refusal-labels"]);
  }
  if ("approval-labels" in allowOnly) {
    validateStringArray("approval-labels", allowOnly["approval-labels"], false);
  }
  if ("trusted-bots" in payload) validateStringArray("trusted-bots", payload["trusted-bots"], true);
  if ("trusted-users" in allowOnly) validateStringArray("trusted-users", allowOnly["trusted-users"], false);
  for (const k of ["endorsement-reactions", "disapproval-reactions"]) {
    if (k in allowOnly) validateStringArray(k, allowOnly[k], false);
  }
  for (const k of ["disapproval-integrity", "endorser-min-integrity"]) {
    if (k in allowOnly) validateIntegrityField(k, allowOnly[k]);
  }
  return { payload, json: canonicalJson(payload), toolCallLimits };
}

// ---------------------------------------------------------------------------------------------
// Policy resolution (§4.7)

/** The write-sink policy of §3.7, validated. */
export interface WriteSinkPolicy {
  accept: string[];
  /** `public`, `private`, `internal`, or `""` when unset (lower-cased, trimmed). */
  sinkVisibility: string;
}

/** A server's resolved policy. */
export type ResolvedPolicy =
  | { kind: "allow-only"; policy: Obj; source: PolicySource }
  | { kind: "write-sink"; writeSink: WriteSinkPolicy; policy: Obj; source: PolicySource };

/** Where a resolved policy came from, in precedence order. */
export type PolicySource = "override" | "server" | "config";

const VISIBILITIES = new Set(["public", "private", "internal"]);

function findKey(raw: Obj, ...variants: string[]): string | undefined {
  return Object.keys(raw).find((k) => variants.includes(k.toLowerCase()));
}

function validateAcceptEntry(entry: string): void {
  let scope = entry;
  const i = entry.indexOf(":");
  if (i > 0) {
    const vis = entry.slice(0, i);
    scope = entry.slice(i + 1);
    if (!VISIBILITIES.has(vis)) {
      throw new PolicyError(
        `write-sink.accept entry ${
          JSON.stringify(entry)
        } is invalid: visibility prefix must be private, public, or internal; got ${JSON.stringify(vis)}`,
      );
    }
  }
  if (!isValidRepoScope(scope) && !isScopeToken(scope, MAX_OWNER_CHARS)) {
    throw new PolicyError(
      `write-sink.accept entry ${JSON.stringify(entry)} is invalid: scope ${
        JSON.stringify(scope)
      } is invalid; expected owner, owner/*, owner/repo, or owner/re*`,
    );
  }
}

/**
 * Validates a `write-sink` object: `accept` non-empty (`["*"]` alone, or unique valid entries),
 * `sink-visibility` one of public/private/internal when present.
 *
 * @throws {PolicyError} with the reference's `write-sink.*` messages.
 */
export function parseWriteSinkPolicy(raw: unknown): WriteSinkPolicy {
  if (!isObject(raw)) throw new PolicyError("write-sink policy must be an object");
  const accept = raw.accept;
  if (!Array.isArray(accept) || accept.length === 0) {
    throw new PolicyError("write-sink.accept must contain at least one entry");
  }
  if (!accept.every((a) => typeof a === "string")) {
    throw new PolicyError("write-sink.accept entries must be strings");
  }
  const visRaw = raw["sink-visibility"];
  if (visRaw !== undefined && typeof visRaw !== "string") {
    throw new PolicyError("write-sink.sink-visibility must be a string");
  }
  const sinkVisibility = (visRaw ?? "").trim().toLowerCase();
  if (sinkVisibility !== "" && !VISIBILITIES.has(sinkVisibility)) {
    throw new PolicyError(
      `write-sink.sink-visibility must be one of: public, private, internal; got ${JSON.stringify(visRaw)}`,
    );
  }
  const entries = (accept as string[]).map((a) => a.trim());
  if (!(entries.length === 1 && entries[0] === "*")) {
    const seen = new Set<string>();
    for (const e of entries) {
      if (e === "") throw new PolicyError("write-sink.accept entries must be non-empty strings");
      if (e === "*") throw new PolicyError('write-sink.accept wildcard "*" must be the only entry');
      if (seen.has(e)) throw new PolicyError("write-sink.accept must not contain duplicates");
      seen.add(e);
      validateAcceptEntry(e);
    }
  }
  return { accept: accept as string[], sinkVisibility };
}

/** Parses one policy object: modern (`allow-only`/`write-sink`, any key case) or legacy flat form. */
function parsePolicyMap(raw: Obj, source: PolicySource): ResolvedPolicy | null {
  if (Object.keys(raw).length === 0) return null;
  const wsKey = findKey(raw, "write-sink", "writesink");
  if (wsKey !== undefined) {
    return { kind: "write-sink", writeSink: parseWriteSinkPolicy(raw[wsKey]), policy: raw, source };
  }
  const aoKey = findKey(raw, "allow-only", "allowonly");
  if (aoKey !== undefined) {
    const policy: Obj = { ...raw };
    delete policy[aoKey];
    policy["allow-only"] = raw[aoKey];
    buildLabelAgentPayload(policy); // validates; throws PolicyError
    return { kind: "allow-only", policy, source };
  }
  if (!("repos" in raw)) return null;
  const integrity = raw["min-integrity"] ?? raw.integrity;
  if (integrity === undefined) {
    throw new PolicyError("invalid server guard policy: repos specified without min-integrity");
  }
  const policy = { "allow-only": { repos: raw.repos, "min-integrity": integrity } };
  buildLabelAgentPayload(policy);
  return { kind: "allow-only", policy, source };
}

/** Inputs to {@link resolveGuardPolicy}. */
export interface PolicySources {
  serverId: string;
  /** Global override (CLI/env in the reference); applies to every server. */
  override?: unknown;
  /** The server's `guard-policies` value. */
  serverPolicies?: unknown;
  /** `guards.<name>.policy` of the server's guard. */
  guardPolicy?: unknown;
}

/**
 * Resolves a server's policy (§4.7): the global override, else the server's `guard-policies` (modern
 * object, legacy flat `{repos, min-integrity}`, a map keyed by server ID, or a single nested object),
 * else the guard's own policy, else `null` (no policy: `label_agent` is not called).
 *
 * @throws {PolicyError} when the chosen policy is invalid (the gateway must refuse to start).
 * @example
 * ```ts
 * resolveGuardPolicy({ serverId: "github", serverPolicies: { github: { repos: "all", "min-integrity": "none" } } });
 * ```
 */
export function resolveGuardPolicy(src: PolicySources): ResolvedPolicy | null {
  const asMap = (v: unknown, what: string): Obj => {
    const o = typeof v === "string" ? normalizePolicyInput(v) : v;
    if (!isObject(o)) throw new PolicyError(`${what} must be an object`);
    return o;
  };
  if (src.override !== undefined && src.override !== null) {
    const p = parsePolicyMap(asMap(src.override, "guard policy override"), "override");
    if (p === null) throw new PolicyError("policy must include allow-only or write-sink");
    return p;
  }
  if (src.serverPolicies !== undefined && src.serverPolicies !== null) {
    const raw = asMap(src.serverPolicies, `guard-policies of server "${src.serverId}"`);
    const direct = parsePolicyMap(raw, "server");
    if (direct) return direct;
    if (src.serverId in raw) {
      const nested = raw[src.serverId];
      if (!isObject(nested)) {
        throw new PolicyError(`invalid guard policy for server '${src.serverId}': expected object`);
      }
      const p = parsePolicyMap(nested, "server");
      if (p) return p;
    }
    const values = Object.values(raw);
    if (values.length === 1 && isObject(values[0])) {
      const p = parsePolicyMap(values[0], "server");
      if (p) return p;
    }
  }
  if (src.guardPolicy !== undefined && src.guardPolicy !== null) {
    const p = parsePolicyMap(asMap(src.guardPolicy, "guard policy"), "config");
    if (p === null) throw new PolicyError("policy must include allow-only or write-sink");
    return p;
  }
  return null;
}
