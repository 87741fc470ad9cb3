/**
 * The three guard operations on parsed input. Each returns an `Outcome`: a JSON answer, "no labels"
 * (the export returns 0), or a failure (the export returns -1, after logging why).
 *
 * @module
 */

import { isErrorResult, repoIsPublic, toolPayload } from "./backend";
import { jsonArray, jsonObject, jsonString, jsonStringArray, JsonValue } from "./json";
import {
  issueLabels,
  issueNumber,
  labelsJson,
  READ_TOOLS,
  readIntegrity,
  repoSecrecy,
  WRITE_TOOLS,
  writeIntegrity,
} from "./labels";
import { log, LOG_DEBUG, LOG_ERROR } from "./log";
import { integrityTags, LEVEL_NAMES, parsePolicy, Policy, policyError, privateTag, scopeOf } from "./policy";
import { loadPolicy, POLICY_CAPACITY, storePolicy } from "./state";

/** What an operation produced. */
export class Outcome {
  /** The answer; null means "no labels" when `failed` is false. */
  value: JsonValue | null = null;
  failed: bool = false;
}

/** A successful outcome carrying `v`. */
function answer(v: JsonValue): Outcome {
  const o = new Outcome();
  o.value = v;
  return o;
}

/** A failed outcome; `why` goes to the host log at error level. */
function failure(why: string): Outcome {
  log(LOG_ERROR, why);
  const o = new Outcome();
  o.failed = true;
  return o;
}

/** "No fine-grained labels" (the export returns 0). */
function noLabels(): Outcome {
  return new Outcome();
}

/** The stored policy, or null after logging that `label_agent` has not run on this instance. */
function requirePolicy(op: string): Policy | null {
  const p = loadPolicy();
  if (p === null) log(LOG_ERROR, op + ": no policy; label_agent must succeed on this instance first");
  return p;
}

/**
 * `label_agent`: validates and stores the policy, answers the agent's labels. An invalid policy
 * fails (and the export then clears any stored one).
 */
export function labelAgent(input: JsonValue): Outcome {
  const p = parsePolicy(input);
  if (p === null) {
    return failure("label_agent: invalid policy: " + policyError);
  }
  if (!storePolicy(p)) {
    return failure("label_agent: policy larger than " + POLICY_CAPACITY.toString() + " bytes");
  }
  const secrecy: string[] = [];
  const integrity: string[] = [];
  for (let i = 0; i < p.repos.length; i++) {
    secrecy.push(privateTag(p.repos[i]));
    const tags = integrityTags(p.repos[i], p.minLevel);
    for (let j = 0; j < tags.length; j++) integrity.push(tags[j]);
  }
  const level = LEVEL_NAMES[p.minLevel];
  log(LOG_DEBUG, "policy: " + p.repos.length.toString() + " repo scope(s), min-integrity " + level);
  const agent = jsonObject().set("secrecy", jsonStringArray(secrecy)).set(
    "integrity",
    jsonStringArray(integrity),
  );
  const normalized = jsonObject()
    .set("scope_kind", jsonString(p.repos.length == 1 ? "Repo" : "Composite"))
    .set("min-integrity", jsonString(level));
  return answer(
    jsonObject().set("agent", agent).set("difc_mode", jsonString("filter")).set(
      "normalized_policy",
      normalized,
    ),
  );
}

/** The lower-cased `repo` argument, or null if missing or empty. */
function repoArg(args: JsonValue | null): string | null {
  if (args === null) return null;
  const repo = args.getString("repo");
  if (repo === null || repo.length == 0) return null;
  return repo.toLowerCase();
}

/**
 * `label_resource`: the operation and resource labels of a tool call. Known tools need a `repo`
 * argument (and `get_issue` a `number`); their secrecy depends on the repository's visibility, which
 * is looked up with `call_backend("get_repo")`.
 */
export function labelResource(input: JsonValue): Outcome {
  const p = requirePolicy("label_resource");
  if (p === null) return failure("label_resource: refused");
  const tool = input.getString("tool_name");
  if (tool === null) return failure("label_resource: missing tool_name");
  const isRead = READ_TOOLS.includes(tool);
  if (!isRead && !WRITE_TOOLS.includes(tool)) {
    const resource = labelsJson("tool:" + tool, [], []);
    return answer(jsonObject().set("resource", resource).set("operation", jsonString("write")));
  }
  const args = input.get("tool_args");
  const repo = repoArg(args);
  if (repo === null) return failure("label_resource: " + tool + ' needs a "repo" argument');
  let description = "repo:" + repo;
  if (tool == "get_issue") {
    const number = issueNumber(args === null ? null : args.get("number"));
    if (number === null) return failure('label_resource: get_issue needs an integer "number" argument');
    description = "issue:" + repo + "#" + number;
  }
  const scope = scopeOf(p, repo);
  const secrecy = repoSecrecy(scope, repoIsPublic(repo));
  const resource = labelsJson(description, secrecy, isRead ? readIntegrity(scope) : writeIntegrity(scope));
  return answer(
    jsonObject().set("resource", resource).set("operation", jsonString(isRead ? "read" : "write")),
  );
}

/**
 * `label_response`: per-issue labels for `list_issues` (path format over `/items`) and `get_issue`
 * (default labels). Other tools and error results get no labels. An unreadable result fails.
 */
export function labelResponse(input: JsonValue): Outcome {
  const p = requirePolicy("label_response");
  if (p === null) return failure("label_response: refused");
  const tool = input.getString("tool_name");
  if (tool === null) return failure("label_response: missing tool_name");
  if (tool != "list_issues" && tool != "get_issue") return noLabels();
  const result = input.get("tool_result");
  if (result === null || !result.isObject()) return failure("label_response: tool_result is not an object");
  if (isErrorResult(result)) return noLabels();
  const data = toolPayload(result);
  if (data === null || !data.isObject()) {
    return failure("label_response: " + tool + " result is not a JSON object");
  }
  let repo = data.getString("repo");
  if (repo === null) repo = repoArg(input.get("tool_args"));
  if (repo === null) return failure("label_response: cannot tell which repository " + tool + " answered for");
  repo = repo.toLowerCase();
  const scope = scopeOf(p, repo);
  const isPublic = repoIsPublic(repo);
  if (tool == "get_issue") {
    const labels = issueLabels(p, data, repo, scope, isPublic);
    if (labels === null) return failure("label_response: get_issue result has no issue number");
    return answer(jsonObject().set("labeled_paths", jsonArray()).set("default_labels", labels));
  }
  const items = data.get("items");
  if (items === null || !items.isArray()) {
    return failure("label_response: list_issues result has no items array");
  }
  const paths = jsonArray();
  for (let i = 0; i < items.items.length; i++) {
    const labels = issueLabels(p, items.items[i], repo, scope, isPublic);
    if (labels === null) {
      return failure("label_response: list_issues item " + i.toString() + " is not an issue");
    }
    paths.push(jsonObject().set("path", jsonString("/items/" + i.toString())).set("labels", labels));
  }
  return answer(jsonObject().set("labeled_paths", paths).set("items_path", jsonString("/items")));
}
