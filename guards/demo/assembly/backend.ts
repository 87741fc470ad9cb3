/**
 * `call_backend` with the buffer-growing retry, and the repository visibility lookup built on it.
 *
 * @module
 */

import { call_backend } from "./env";
import { jsonError, jsonObject, jsonString, JsonValue, parseJson, parseJsonString, writeJson } from "./json";
import { log, LOG_DEBUG, LOG_WARN } from "./log";
import { cachedVisibility, rememberVisibility } from "./state";

/** First result buffer: a get_repo result is ~150 bytes, so one call normally suffices. */
export const BACKEND_INITIAL_BYTES: i32 = 4096;
/** Largest result buffer, the same cap the host puts on guard outputs (16 MiB). */
export const BACKEND_MAX_BYTES: i32 = 16 * 1024 * 1024;
/** Calls per lookup, counting the first; each counts toward the host's 50-call budget. */
export const BACKEND_MAX_ATTEMPTS: i32 = 4;

/**
 * Calls upstream tool `tool` with `args` and returns the parsed result object, or null if the host
 * returned -1, the result outgrew `BACKEND_MAX_BYTES`, or it was not valid JSON. On -2 the buffer
 * grows to max(hint, 2 × current) and the call is repeated.
 */
export function callBackend(tool: string, args: JsonValue): JsonValue | null {
  const name = String.UTF8.encode(tool);
  const body = writeJson(args);
  let size = BACKEND_INITIAL_BYTES;
  for (let attempt = 1; attempt <= BACKEND_MAX_ATTEMPTS; attempt++) {
    const buf = new ArrayBuffer(size);
    const ptr = changetype<usize>(buf);
    const rc = call_backend(
      <i32> changetype<usize>(name),
      name.byteLength,
      <i32> body.ptr,
      body.length,
      <i32> ptr,
      size,
    );
    if (rc >= 0) {
      if (rc > size) return null;
      const v = parseJson(ptr, <usize> rc);
      if (v === null) log(LOG_WARN, "call_backend " + tool + ": result is not JSON: " + jsonError);
      return v;
    }
    if (rc != -2) {
      log(LOG_WARN, "call_backend " + tool + " failed with " + rc.toString());
      return null;
    }
    const hint = <i32> load<u32>(ptr);
    const next = hint > size * 2 ? hint : size * 2;
    log(LOG_DEBUG, "call_backend " + tool + ": result needs " + hint.toString() + " bytes, retrying");
    if (next > BACKEND_MAX_BYTES || next <= 0) {
      log(
        LOG_WARN,
        "call_backend " + tool + ": result larger than " + BACKEND_MAX_BYTES.toString() + " bytes",
      );
      return null;
    }
    size = next;
  }
  log(
    LOG_WARN,
    "call_backend " + tool + ": no result after " + BACKEND_MAX_ATTEMPTS.toString() + " attempts",
  );
  return null;
}

/**
 * The JSON payload of an MCP tool result: `content[0].text` parsed as JSON, else
 * `structuredContent`. Null if neither yields a value.
 */
export function toolPayload(result: JsonValue): JsonValue | null {
  const content = result.get("content");
  if (content !== null && content.isArray() && content.items.length > 0) {
    const first = content.items[0];
    const text = first.getString("text");
    if (text !== null) return parseJsonString(text);
    return null;
  }
  return result.get("structuredContent");
}

/** True if the MCP tool result has `"isError": true`. */
export function isErrorResult(result: JsonValue): bool {
  const e = result.get("isError");
  return e !== null && e.boolValue;
}

/**
 * Asks the upstream's `get_repo` whether `repo` is public (once per repository and instance). Any failure (call refused, error result,
 * unexpected shape) answers false: an unknown repository is treated as private.
 */
export function repoIsPublic(repo: string): bool {
  const known = cachedVisibility(repo);
  if (known >= 0) return known == 1;
  const result = callBackend("get_repo", jsonObject().set("repo", jsonString(repo)));
  if (result === null || !result.isObject()) {
    log(LOG_WARN, "visibility of " + repo + " unknown (call_backend failed); treating it as private");
    return false;
  }
  if (isErrorResult(result)) {
    log(LOG_WARN, "visibility of " + repo + " unknown (get_repo returned an error); treating it as private");
    return false;
  }
  const payload = toolPayload(result);
  if (payload === null || !payload.isObject()) {
    log(LOG_WARN, "visibility of " + repo + " unknown (unexpected get_repo result); treating it as private");
    return false;
  }
  const visibility = payload.getString("visibility");
  const isPublic = visibility !== null && visibility == "public";
  rememberVisibility(repo, isPublic);
  return isPublic;
}
