/**
 * Parsing of guard outputs (guard-abi.md §2.2-2.4): `label_agent`, `label_resource` and
 * `label_response` (path labels with RFC 6901 JSON Pointers over the unwrapped MCP result, or the
 * legacy `items` collection). Error texts follow the reference so clients and logs read the same.
 *
 * Differences from the reference, on purpose (fail closed; see also pipeline.ts):
 * - An item that ends up with no labels (a legacy `items` entry without `labels`, a `labeled_paths`
 *   entry without `labels`, or an unmatched item when there are no `default_labels`) is an error.
 *   The reference panics on the first, treats the second as public/no-integrity and the third as
 *   empty labels described `unlabeled`.
 * - A `label_response` output that is valid JSON but not an object (e.g. `null`) is an error; the
 *   reference reads `null` as "no labels".
 * - A JSON Pointer with a `~` not followed by `0` or `1` is an error (RFC 6901); the reference keeps
 *   the text as is.
 *
 * @module
 */
import { type DifcMode, type Operation, parseMode } from "./evaluator.ts";
import { type LabeledResource, tagSet } from "./labels.ts";
import { isObject } from "../util.ts";

/** A guard output that cannot be used. The message is what the client sees after the phase prefix. */
export class GuardOutputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GuardOutputError";
  }
}

type Obj = Record<string, unknown>;

/** Parses a guard output that must be a JSON object; `what` names it in errors, e.g. `label_resource WASM response`. */
function parseObject(text: string, what: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new GuardOutputError(`failed to unmarshal ${what}: ${(e as Error).message}`);
  }
  if (!isObject(v)) {
    throw new GuardOutputError(`failed to unmarshal ${what}: expected a JSON object, got ${kindOf(v)}`);
  }
  return v;
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

// ---------------------------------------------------------------------------------------------
// label_agent (§2.2)

/** The decoded `label_agent` answer. */
export interface LabelAgentOutput {
  /** Trimmed, non-empty, de-duplicated tags to union into the agent's labels. */
  secrecy: string[];
  integrity: string[];
  /** The enforcement mode for this call (lower-cased). */
  mode: DifcMode;
  /** Logged only; `scope_kind` lower-cased. */
  normalizedPolicy: Obj | null;
}

function strictTagArray(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((t) => typeof t === "string")) {
    throw new GuardOutputError(`failed to decode label_agent response: ${field} must be an array of strings`);
  }
  return v as string[];
}

/**
 * Parses the `label_agent` output text (`""` = the guard returned 0).
 *
 * @throws {GuardOutputError} `label_agent returned empty response`, `label_agent rejected policy: <e>`,
 *   `label_agent returned non-success status`, `label_agent returned error: <e>`,
 *   `label_agent response missing difc_mode`, `invalid difc_mode from label_agent: ...`, decode errors.
 * @example
 * ```ts
 * parseLabelAgentOutput('{"agent":{"secrecy":[],"integrity":["none:public"]},"difc_mode":"filter"}').mode; // "filter"
 * ```
 */
export function parseLabelAgentOutput(text: string): LabelAgentOutput {
  if (text === "") throw new GuardOutputError("label_agent returned empty response");
  const raw = parseObject(text, "label_agent response");
  for (const key of ["success", "ok"]) {
    if (raw[key] === false) {
      const e = raw.error;
      throw new GuardOutputError(
        typeof e === "string" && e.trim() !== ""
          ? `label_agent rejected policy: ${e}`
          : "label_agent returned non-success status",
      );
    }
  }
  if (typeof raw.error === "string" && raw.error.trim() !== "") {
    throw new GuardOutputError(`label_agent returned error: ${raw.error}`);
  }
  const agent = raw.agent;
  if (agent !== undefined && agent !== null && !isObject(agent)) {
    throw new GuardOutputError("failed to decode label_agent response: agent must be an object");
  }
  const secrecy = strictTagArray(agent?.secrecy, "agent.secrecy");
  const integrity = strictTagArray(agent?.integrity, "agent.integrity");
  const modeRaw = raw.difc_mode;
  if (modeRaw !== undefined && modeRaw !== null && typeof modeRaw !== "string") {
    throw new GuardOutputError("failed to decode label_agent response: difc_mode must be a string");
  }
  if (typeof modeRaw !== "string" || modeRaw.trim() === "") {
    throw new GuardOutputError("label_agent response missing difc_mode");
  }
  let mode: DifcMode;
  try {
    mode = parseMode(modeRaw);
  } catch (e) {
    throw new GuardOutputError(`invalid difc_mode from label_agent: ${(e as Error).message}`);
  }
  const np = raw.normalized_policy;
  if (np !== undefined && np !== null && !isObject(np)) {
    throw new GuardOutputError("failed to decode label_agent response: normalized_policy must be an object");
  }
  let normalizedPolicy: Obj | null = null;
  if (isObject(np)) {
    normalizedPolicy = { ...np };
    if (typeof np.scope_kind === "string") normalizedPolicy.scope_kind = np.scope_kind.toLowerCase();
  }
  const clean = (tags: string[]) => tagSet(tags.map((t) => t.trim()).filter((t) => t !== ""));
  return { secrecy: clean(secrecy), integrity: clean(integrity), mode, normalizedPolicy };
}

// ---------------------------------------------------------------------------------------------
// label_resource (§2.3)

/** The decoded `label_resource` answer. */
export interface LabelResourceOutput {
  resource: LabeledResource;
  operation: Operation;
}

/**
 * String elements of a tag array, others skipped (the reference's lenient resource decoding); a
 * missing or null list is empty. A list that is not an array at all (`"secrecy": "private:x"`) is an
 * error: reading it as empty would label the resource public, so we fail closed.
 */
function lenientTags(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new GuardOutputError(`${field} must be an array of strings, got ${kindOf(v)}`);
  return tagSet(v.filter((t): t is string => typeof t === "string"));
}

function lenientResource(o: Obj, fallbackDescription = ""): LabeledResource {
  return {
    description: typeof o.description === "string" ? o.description : fallbackDescription,
    secrecy: lenientTags(o.secrecy, "secrecy"),
    integrity: lenientTags(o.integrity, "integrity"),
  };
}

/** Valid `operation` values; anything else (or none) means `write`, the most restrictive. */
const OPERATIONS: readonly Operation[] = ["read", "write", "read-write"];

/**
 * Parses the `label_resource` output text. Tags are not trimmed; non-string tags are skipped;
 * `operation` must be exactly `read`, `write` or `read-write`, else `write`.
 *
 * @throws {GuardOutputError} `failed to unmarshal label_resource WASM response: ...`,
 *   `invalid resource format in guard response`.
 * @example
 * ```ts
 * parseLabelResourceOutput('{"resource":{"description":"x","secrecy":[],"integrity":[]},"operation":"read"}');
 * ```
 */
export function parseLabelResourceOutput(text: string): LabelResourceOutput {
  if (text === "") {
    throw new GuardOutputError("failed to unmarshal label_resource WASM response: empty output");
  }
  const raw = parseObject(text, "label_resource WASM response");
  if (!isObject(raw.resource)) throw new GuardOutputError("invalid resource format in guard response");
  const op = raw.operation;
  const operation: Operation = typeof op === "string" && (OPERATIONS as readonly string[]).includes(op)
    ? op as Operation
    : "write";
  return { resource: lenientResource(raw.resource), operation };
}

// ---------------------------------------------------------------------------------------------
// JSON Pointer and MCP unwrapping

/**
 * Splits an RFC 6901 JSON Pointer into unescaped segments. `""` and `"/"` address the root (as in the
 * reference); a missing leading `/` is tolerated.
 *
 * @throws {GuardOutputError} for a `~` not followed by `0` or `1`.
 * @example
 * ```ts
 * parseJsonPointer("/a~1b/m~0n/0"); // ["a/b", "m~n", "0"]
 * ```
 */
export function parseJsonPointer(ptr: string): string[] {
  if (ptr === "" || ptr === "/") return [];
  if (/~(?![01])/.test(ptr)) {
    throw new GuardOutputError(`invalid JSON pointer ${JSON.stringify(ptr)}: "~" must be followed by 0 or 1`);
  }
  const body = ptr.startsWith("/") ? ptr.slice(1) : ptr;
  return body.split("/").map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
}

/** Content block types that carry no text for unwrapping. */
const NON_TEXT_CONTENT = new Set(["image", "audio", "resource"]);

/**
 * The JSON inside an MCP tool result: all text content blocks (type `text`, empty or unknown; not
 * image/audio/resource) concatenated and parsed. `unwrapped: false` with the value itself when there
 * is no text or it is not JSON.
 *
 * @example
 * ```ts
 * unwrapMcpResult({ content: [{ type: "text", text: "[1," }, { type: "text", text: "2]" }] }).value; // [1, 2]
 * ```
 */
export function unwrapMcpResult(result: unknown): { value: unknown; unwrapped: boolean } {
  if (!isObject(result) || !Array.isArray(result.content)) return { value: result, unwrapped: false };
  const texts: string[] = [];
  for (const item of result.content) {
    if (!isObject(item)) continue;
    const type = typeof item.type === "string" ? item.type : "";
    if (NON_TEXT_CONTENT.has(type)) continue;
    if (typeof item.text === "string") texts.push(item.text);
  }
  const text = texts.join("");
  if (text === "") return { value: result, unwrapped: false };
  try {
    return { value: JSON.parse(text), unwrapped: true };
  } catch {
    // A gateway's filtered result (ours or the reference's) is the JSON block followed by a
    // `[Filtered] ...` notice block; concatenated they are not JSON. Without the trailing notices the
    // JSON is what the guard labeled, so a gateway placed in front of another can unwrap it.
    let n = texts.length;
    while (n > 1 && texts[n - 1].startsWith(FILTERED_NOTICE_PREFIX)) n--;
    if (n === texts.length) return { value: result, unwrapped: false };
    try {
      return { value: JSON.parse(texts.slice(0, n).join("")), unwrapped: true };
    } catch {
      return { value: result, unwrapped: false };
    }
  }
}

/** How a gateway's notice of removed items starts (pipeline.ts `filteredNotice`, as the reference). */
export const FILTERED_NOTICE_PREFIX = "[Filtered] ";

// ---------------------------------------------------------------------------------------------
// label_response (§2.4)

/** One labeled item of a response. */
export interface LabeledItem {
  data: unknown;
  labels: LabeledResource;
}

/** Where path-labeled items live, so a filtered result can be rebuilt in place. */
export type ItemsLocation =
  /** The whole original tool result is the one item. */
  | { kind: "whole-result" }
  /** The items are the array at `pointer` inside `root` (the unwrapped JSON, or the raw result). */
  | { kind: "array"; unwrapped: boolean; root: unknown; pointer: string[] };

/** Fine-grained labels of a response. */
export type ResponseLabels =
  | { format: "path"; items: LabeledItem[]; location: ItemsLocation }
  | { format: "legacy"; items: LabeledItem[] };

function pathFail(msg: string): never {
  throw new GuardOutputError(`failed to apply path labels: failed to resolve path labels: ${msg}`);
}

function decodeFail(msg: string): never {
  throw new GuardOutputError(`failed to parse path labels: ${msg}`);
}

/** A path-format label entry: tags must be string arrays (the reference decodes into a struct). */
function strictEntry(v: unknown, where: string): LabeledResource {
  if (!isObject(v)) decodeFail(`${where} must be an object`);
  if (v.description !== undefined && v.description !== null && typeof v.description !== "string") {
    decodeFail(`${where}.description must be a string`);
  }
  const tags = (k: "secrecy" | "integrity"): string[] => {
    const t = v[k];
    if (t === undefined || t === null) return [];
    if (!Array.isArray(t) || !t.every((x) => typeof x === "string")) {
      decodeFail(`${where}.${k} must be an array of strings`);
    }
    return tagSet(t as string[]);
  };
  return {
    description: typeof v.description === "string" ? v.description : "",
    secrecy: tags("secrecy"),
    integrity: tags("integrity"),
  };
}

function navigate(root: unknown, segments: string[], itemsPath: string): unknown[] {
  let cur = root;
  for (const seg of segments) {
    if (seg === "") continue;
    if (Array.isArray(cur)) {
      if (!/^-?\d+$/.test(seg)) {
        pathFail(`expected array index at ${JSON.stringify(itemsPath)}, got ${JSON.stringify(seg)}`);
      }
      const i = Number(seg);
      if (i < 0 || i >= cur.length) pathFail(`array index ${i} out of bounds`);
      cur = cur[i];
    } else if (isObject(cur)) {
      if (!Object.hasOwn(cur, seg)) pathFail(`path ${JSON.stringify(itemsPath)} not found in response`);
      cur = cur[seg];
    } else {
      pathFail(
        `cannot navigate path ${JSON.stringify(itemsPath)}: unexpected type at ${JSON.stringify(seg)}`,
      );
    }
  }
  if (!Array.isArray(cur)) pathFail(`items_path ${JSON.stringify(itemsPath)} does not point to an array`);
  return cur;
}

/** Index addressed by a labeled path under `itemsPath`, or -1 when the path does not address an item. */
function indexOf(path: string, itemsPath: string): number {
  const p = path.startsWith("/") ? path : "/" + path;
  const ip = itemsPath === "" || itemsPath.startsWith("/") ? itemsPath : "/" + itemsPath;
  let rest: string;
  if (ip === "") rest = p;
  else if (p.startsWith(ip + "/")) rest = p.slice(ip.length);
  else return -1;
  const seg = rest.slice(1).split("/")[0];
  return /^\d+$/.test(seg) ? Number(seg) : -1;
}

function parsePathFormat(raw: Obj, toolResult: unknown): ResponseLabels {
  const lp = raw.labeled_paths;
  if (lp !== null && !Array.isArray(lp)) decodeFail("labeled_paths must be an array");
  const ipRaw = raw.items_path;
  if (ipRaw !== undefined && ipRaw !== null && typeof ipRaw !== "string") {
    decodeFail("items_path must be a string");
  }
  const itemsPath = typeof ipRaw === "string" ? ipRaw : "";
  const defaults = raw.default_labels === undefined || raw.default_labels === null
    ? null
    : strictEntry(raw.default_labels, "default_labels");
  const byIndex = new Map<number, LabeledResource>();
  (lp ?? []).forEach((entry: unknown, i: number) => {
    if (!isObject(entry)) decodeFail(`labeled_paths[${i}] must be an object`);
    if (typeof entry.path !== "string") decodeFail(`labeled_paths[${i}].path must be a string`);
    if (entry.labels === undefined || entry.labels === null) {
      throw new GuardOutputError(
        `label_response labeled_paths[${i}] (${JSON.stringify(entry.path)}) has no labels`,
      );
    }
    const labels = strictEntry(entry.labels, `labeled_paths[${i}].labels`);
    const idx = indexOf(entry.path, itemsPath);
    if (idx >= 0) byIndex.set(idx, labels); // later duplicates win; non-matching paths are skipped
  });

  const { value, unwrapped } = unwrapMcpResult(toolResult);
  let arr: unknown[];
  let location: ItemsLocation;
  if (itemsPath === "") {
    if (!Array.isArray(value)) {
      if (defaults === null) {
        throw new GuardOutputError("label_response labeled the whole result but gave no default_labels");
      }
      return {
        format: "path",
        items: [{ data: toolResult, labels: defaults }],
        location: { kind: "whole-result" },
      };
    }
    arr = value;
    location = { kind: "array", unwrapped, root: value, pointer: [] };
  } else {
    const pointer = parseJsonPointer(itemsPath);
    arr = navigate(value, pointer, itemsPath);
    location = { kind: "array", unwrapped, root: value, pointer: pointer.filter((s) => s !== "") };
  }
  const items = arr.map((data, i) => {
    const labels = byIndex.get(i) ?? defaults;
    if (labels === null) {
      throw new GuardOutputError(
        `label_response item ${i} has no labels (no labeled_paths entry and no default_labels)`,
      );
    }
    return { data, labels };
  });
  return { format: "path", items, location };
}

function parseLegacyItems(items: unknown[]): ResponseLabels {
  const out: LabeledItem[] = [];
  items.forEach((entry, i) => {
    if (!isObject(entry)) return; // non-object entries are skipped, as in the reference
    if (!isObject(entry.labels)) throw new GuardOutputError(`label_response items[${i}] has no labels`);
    out.push({ data: entry.data, labels: lenientResource(entry.labels) });
  });
  return { format: "legacy", items: out };
}

/**
 * Parses the `label_response` output text against the raw tool result it labeled.
 * `""` (the guard returned 0) and objects with neither `labeled_paths` nor a non-empty `items` array
 * mean "no fine-grained labels" (`null`). `labeled_paths` (any value) takes precedence over `items`.
 *
 * @throws {GuardOutputError} for non-object output, undecodable path labels, unresolvable
 *   `items_path` (`failed to apply path labels: ...`), or an item without labels.
 * @example
 * ```ts
 * const r = parseLabelResponseOutput(
 *   '{"labeled_paths":[{"path":"/0","labels":{"secrecy":["s"],"integrity":[]}}],"default_labels":{"secrecy":[],"integrity":[]}}',
 *   { content: [{ type: "text", text: "[1,2]" }] },
 * );
 * r?.items.length; // 2
 * ```
 */
export function parseLabelResponseOutput(text: string, toolResult: unknown): ResponseLabels | null {
  if (text === "") return null;
  const raw = parseObject(text, "label_response WASM response");
  if (Object.hasOwn(raw, "labeled_paths")) return parsePathFormat(raw, toolResult);
  if (Array.isArray(raw.items) && raw.items.length > 0) return parseLegacyItems(raw.items);
  return null;
}
