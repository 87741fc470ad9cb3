/**
 * The allow-only policy: parsing the `label_agent` input, the scope a repository falls under, and
 * the hierarchical integrity tags (guard-abi.md §3.1).
 *
 * @module
 */

import { jsonObject, jsonString, jsonStringArray, JsonValue } from "./json";

/** Integrity levels, lowest first. A level's tags include every lower level's tags. */
export const LEVEL_NAMES: string[] = ["none", "unapproved", "approved", "merged"];
/** Index of `none` in `LEVEL_NAMES`. */
export const LEVEL_NONE: i32 = 0;
/** Index of `unapproved` in `LEVEL_NAMES`. */
export const LEVEL_UNAPPROVED: i32 = 1;
/** Index of `approved` in `LEVEL_NAMES`. */
export const LEVEL_APPROVED: i32 = 2;

/** A validated policy. */
export class Policy {
  /** Repository scopes: `owner/repo`, `owner/*` or `owner/prefix*`, lower case. */
  repos: string[] = [];
  /** Index into `LEVEL_NAMES`. */
  minLevel: i32 = 0;
  /** Logins whose issues count as approved whatever their association. */
  trustedBots: string[] = [];
}

/** Why the last `parsePolicy` failed. */
export let policyError: string = "";

/** The index of level `name` (trimmed, any case) in `LEVEL_NAMES`, or -1. */
export function levelIndex(name: string): i32 {
  const n = name.trim().toLowerCase();
  for (let i = 0; i < LEVEL_NAMES.length; i++) {
    if (LEVEL_NAMES[i] == n) return i;
  }
  return -1;
}

/** True if `entry` is `owner/repo`, `owner/*` or `owner/prefix*` with non-empty parts. */
function validScope(entry: string): bool {
  const slash = entry.indexOf("/");
  if (slash <= 0 || slash == entry.length - 1 || entry.indexOf("/", slash + 1) >= 0) return false;
  const star = entry.indexOf("*");
  return star < 0 || star == entry.length - 1;
}

/** Reads a string array member; null (with `policyError` set) if present but not all strings. */
function stringList(obj: JsonValue, key: string, required: bool): string[] | null {
  const v = obj.get(key);
  if (v === null) {
    if (required) policyError = 'missing "' + key + '"';
    return required ? null : [];
  }
  if (!v.isArray()) {
    policyError = '"' + key + '" must be an array of strings';
    return null;
  }
  const out: string[] = [];
  for (let i = 0; i < v.items.length; i++) {
    const item = v.items[i];
    if (!item.isString() || item.stringValue.length == 0) {
      policyError = '"' + key + '" must contain non-empty strings only';
      return null;
    }
    out.push(item.stringValue);
  }
  return out;
}

/**
 * Validates a `label_agent` input: `{"allow-only":{"repos":[...],"min-integrity":L},
 * "trusted-bots"?:[...]}` (legacy spellings `allowonly` and `integrity` accepted, other keys
 * ignored). Returns null with `policyError` set when invalid.
 */
export function parsePolicy(input: JsonValue): Policy | null {
  policyError = "";
  if (!input.isObject()) {
    policyError = "policy must be a JSON object";
    return null;
  }
  let allowOnly = input.get("allow-only");
  if (allowOnly === null) allowOnly = input.get("allowonly");
  if (allowOnly === null || !allowOnly.isObject()) {
    policyError = 'missing "allow-only" object';
    return null;
  }
  const repos = stringList(allowOnly, "repos", true);
  if (repos === null) return null;
  if (repos.length == 0) {
    policyError = '"repos" must not be empty';
    return null;
  }
  const p = new Policy();
  for (let i = 0; i < repos.length; i++) {
    const entry = repos[i].trim().toLowerCase();
    if (!validScope(entry)) {
      policyError = 'invalid repos entry "' + repos[i] + '" (expected owner/repo, owner/* or owner/prefix*)';
      return null;
    }
    p.repos.push(entry);
  }
  let level = allowOnly.getString("min-integrity");
  if (level === null) level = allowOnly.getString("integrity");
  if (level === null) {
    policyError = 'missing "min-integrity"';
    return null;
  }
  p.minLevel = levelIndex(level);
  if (p.minLevel < 0) {
    policyError = 'invalid min-integrity "' + level + '" (expected none, unapproved, approved or merged)';
    return null;
  }
  const bots = stringList(input, "trusted-bots", false);
  if (bots === null) return null;
  p.trustedBots = bots;
  return p;
}

/** The policy in the form `parsePolicy` accepts, for storage between calls. */
export function policyToJson(p: Policy): JsonValue {
  const allowOnly = jsonObject()
    .set("repos", jsonStringArray(p.repos))
    .set("min-integrity", jsonString(LEVEL_NAMES[p.minLevel]));
  return jsonObject().set("allow-only", allowOnly).set("trusted-bots", jsonStringArray(p.trustedBots));
}

/** True if repository `repo` (lower case `owner/name`) falls under scope `entry`. */
function inScope(entry: string, repo: string): bool {
  if (entry.endsWith("*")) return repo.startsWith(entry.substring(0, entry.length - 1));
  return entry == repo;
}

/**
 * The scope token used in tags for `repo`: the first policy entry that covers it, else the
 * repository itself (tags no agent of this policy holds).
 */
export function scopeOf(p: Policy, repo: string): string {
  for (let i = 0; i < p.repos.length; i++) {
    if (inScope(p.repos[i], repo)) return p.repos[i];
  }
  return repo;
}

/** `["none:<scope>", ..., "<LEVEL_NAMES[maxLevel]>:<scope>"]`. */
export function integrityTags(scope: string, maxLevel: i32): string[] {
  const out: string[] = [];
  for (let i = 0; i <= maxLevel; i++) out.push(LEVEL_NAMES[i] + ":" + scope);
  return out;
}

/** `"private:<scope>"`, the secrecy tag of a private repository's data. */
export function privateTag(scope: string): string {
  return "private:" + scope;
}
