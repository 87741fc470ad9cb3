/**
 * The DIFC labeling pipeline for one `tools/call` (guard-abi.md §4.5 phases 0-6): one guard session,
 * `label_agent` → agent labels, `label_resource` → coarse check, then (after the transport called the
 * upstream) `label_response` → per-item filtering, strict/filter/propagate handling, the `[Filtered]`
 * notice, propagate-mode accumulation, and one structured log record per call.
 *
 * It knows nothing about wasm, HTTP or MCP transport: it sees the {@link Guard} seam, an
 * {@link AgentLabelStore} and plain JSON values.
 *
 * ## Differences from gh-aw-mcpg (for the README)
 *
 * Kept as in the reference: the flow rules, check order, wildcard, reason strings, the coarse read
 * bypass in every mode (a coarse-denied read still reaches the upstream; enforcement is per item, and
 * a read with no fine-grained labels is released), the mode matrix, the `DIFC Violation:` message,
 * the strict-mode and single-item error texts, the `[Filtered] ...` notice text, the singular-tool
 * rule (name not starting with `list_`/`search_`), propagate accumulation over ALL items with the
 * union-based overall labels, the built-in noop/write-sink answers.
 *
 * Deliberate differences:
 * 1. Errors are JSON-RPC errors with real codes ({@link DIFC_ERROR_CODES}) and structured `data`; the
 *    reference sends `code: 0` (a go-sdk artefact). Messages are the reference's.
 * 2. Nothing filtered → the upstream result is returned untouched (`content`, `structuredContent`,
 *    `isError`, `_meta`, ...). The reference always flattens labeled results to one text block holding
 *    a bare JSON array and drops `structuredContent`, sibling fields and `isError`.
 * 3. Items filtered → the result is rebuilt: for path labels on the unwrapped JSON, the accessible items
 *    are put back at `items_path` inside that JSON (siblings such as `total_count` kept) and serialised
 *    as the one text block; `structuredContent` is replaced by the same rebuilt value when it equalled
 *    the unwrapped JSON, and dropped otherwise, so no filtered item leaks through it. Path labels on the
 *    raw result (no JSON text) are applied to a copy of the result itself. Legacy `items` and
 *    whole-result labels give the reference's text array of accessible `data` and keep only
 *    `isError` of the upstream result (its other fields may hold the filtered data itself); path
 *    labels keep `isError` and other sibling fields. The `[Filtered]` notice block is appended as
 *    in the reference.
 * 4. Fail closed on guard bugs: an item with no labels (legacy item without `labels`, path entry
 *    without `labels`, unmatched item with no `default_labels`), a non-object `label_response` output,
 *    and a bad JSON Pointer escape are errors (`response labeling failed: ...`). The reference panics,
 *    or labels such items empty / `unlabeled`.
 * 5. `allow-only.tool-call-limits` is stripped from the `label_agent` payload (and returned by
 *    `buildLabelAgentPayload` for the gateway to enforce) instead of failing session init.
 * 6. `label_agent` runs on every call, on the fresh guard session (the guard keeps its policy only in
 *    instance memory), and its `difc_mode` is the mode of that call. (A wasm host may instead start the
 *    fresh instance from a snapshot of the state `label_agent` left for the identical input, see
 *    `limits.labelAgentSnapshots`; the session answers the same.) Its tags are unioned into the
 *    agent's stored labels once per (agent, server, payload), atomically in the store, so a later
 *    call cannot undo a propagate-mode integrity drop. The reference runs `label_agent` once per
 *    (session, server) on a long-lived instance; agent labels here are keyed by agent ID, which the
 *    transport derives from the session identity (§4.3).
 * 7. Strict-mode blocks log each filtered item too (the reference only logs a summary line).
 * 8. A `label_response` output > the output limit is a guard error (the host's limits), never "no labels".
 * 9. Tag lists in messages and logs are sorted (the reference prints Go map order).
 *
 * @module
 */
import type { Guard, GuardContext, GuardSession, GuardUsage } from "./guard.ts";
import { GuardError } from "../guard/limits.ts";
import {
  coarseOutcome,
  type DifcMode,
  evaluate,
  formatViolation,
  isAllowed,
  type Operation,
  shouldAccumulate,
  shouldLabelResponse,
} from "./evaluator.ts";
import { type LabeledResource, type Labels, unionTags } from "./labels.ts";
import { buildLabelAgentPayload, canonicalJson, PolicyError } from "./payload.ts";
import {
  GuardOutputError,
  type LabeledItem,
  parseLabelAgentOutput,
  parseLabelResourceOutput,
  parseLabelResponseOutput,
  type ResponseLabels,
} from "./parse.ts";
import { AgentLabelLimitError, type AgentLabelStore } from "./store.ts";
import { errorMessage, isObject, sha256Hex } from "../util.ts";

export type { DifcMode } from "./evaluator.ts";

/** JSON-RPC error codes of DIFC outcomes (implementation-defined server-error range -32000..-32099). */
export const DIFC_ERROR_CODES = Object.freeze({
  /** A flow rule denied the call: coarse write/read-write denial, strict-mode block, single item filtered. */
  DIFC_VIOLATION: -32001,
  /** The guard failed or answered nonsense (policy payload, trap, limit, bad JSON): fail closed. */
  GUARD_FAILURE: -32002,
  /** The agent label store could not be read or updated: fail closed. */
  LABEL_STORE_FAILURE: -32003,
  /** `allow-only.tool-call-limits` reached for this agent, server and tool. */
  TOOL_CALL_LIMIT: -32004,
});

/** A JSON-RPC error to send to the client instead of a result. */
export class DifcError extends Error {
  readonly code: number;
  readonly data?: unknown;
  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.name = "DifcError";
    this.code = code;
    this.data = data;
  }
}

/** One `tools/call` to guard. */
export interface ToolCallRequest {
  serverId: string;
  agentId: string;
  /** The upstream's own tool name. */
  toolName: string;
  /** The client's `arguments`; absent (or null) → `{}`. */
  args: unknown;
  /** The resolved server policy; `null` = none (no `label_agent`, `defaultMode` applies). */
  policy: unknown | null;
  /** Gateway `trustedBots`, injected into the wasm `label_agent` payload. */
  trustedBots?: string[];
  /** `labelAgentInputFor(policy, …)` computed ahead of time; built from `policy` when absent. */
  labelAgentInput?: LabelAgentInput;
  defaultMode: DifcMode;
}

/** What the pipeline needs from the gateway. */
export interface PipelineDeps {
  guard: Guard;
  store: AgentLabelStore;
  /** Structured log sink: one `tool_call` record per call, one `difc_filtered` record per removed item. */
  log: (record: Record<string, unknown>) => void;
}

/** The guarded call after phases 0-2, waiting for the upstream's answer. */
export interface ToolCallGuarding {
  readonly operation: Operation;
  /** Phases 4-6 on the upstream's JSON-RPC `result`; resolves to the result for the client. */
  finish(upstreamResult: unknown): Promise<unknown>;
  /** The upstream failed (JSON-RPC error, transport failure): closes the guard session and logs. */
  abort(reason?: unknown): void;
}

/** Tools whose name starts with one of these return collections; every other tool is "singular". */
const COLLECTION_TOOL_PREFIXES = ["list_", "search_"];

/** Per-item detail is listed in the notice only up to this many filtered items (reference: 5). */
const MAX_FILTERED_ITEMS_IN_NOTICE = 5;

/** `call decision` values in the `tool_call` log record. */
export type CallDecision = "allow" | "filter" | "deny" | "block" | "error" | "aborted";

interface FilteredDetail {
  item: LabeledItem;
  reason: string;
  secrecy: boolean;
}

/** The `label_agent` input of a server and the key under which its tags are unioned once per agent. */
export interface LabelAgentInput {
  json: string;
  onceKey: string;
}

/**
 * Builds a server's `label_agent` input: the validated §2.1 payload for wasm guards, the policy's
 * canonical JSON for built-in guards. Policies are fixed per server, so the gateway calls this once
 * per server at startup and passes the result in {@link ToolCallRequest.labelAgentInput}.
 *
 * @example
 * ```ts
 * const input = await labelAgentInputFor(policy, "wasm", "github", ["bot[bot]"]);
 * ```
 * @throws {PolicyError} for an invalid policy.
 */
export async function labelAgentInputFor(
  policy: unknown,
  guardType: string,
  serverId: string,
  trustedBots: readonly string[] = [],
): Promise<LabelAgentInput> {
  const json = guardType === "wasm"
    ? buildLabelAgentPayload(policy, trustedBots).json
    : canonicalJson(policy);
  return { json, onceKey: await sha256Hex(`${serverId}\n${json}`) };
}

function guardFailure(prefix: string, phase: string, e: unknown): DifcError {
  if (e instanceof DifcError) return e;
  const data: Record<string, unknown> = { type: "guard_failure", phase };
  if (e instanceof GuardError) {
    data.kind = e.kind;
    if (e.limit !== undefined) data.limit = e.limit;
    if (e.value !== undefined) data.value = e.value;
  } else if (e instanceof GuardOutputError) {
    data.kind = "output";
  } else if (e instanceof PolicyError) {
    data.kind = "policy";
  } else {
    data.kind = "internal";
  }
  return new DifcError(DIFC_ERROR_CODES.GUARD_FAILURE, prefix + errorMessage(e), data);
}

/**
 * Runs a store operation; any failure, a store limit ({@link AgentLabelLimitError}, which then names
 * the limit and its value in `data`) included, denies the call.
 */
async function storeOp<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const data: Record<string, unknown> = { type: "label_store_failure" };
    if (e instanceof AgentLabelLimitError) Object.assign(data, { limit: e.limit, value: e.value });
    throw new DifcError(
      DIFC_ERROR_CODES.LABEL_STORE_FAILURE,
      `agent label store failed: ${errorMessage(e)}`,
      data,
    );
  }
}

/** Collects the fields of the one `tool_call` record and emits it exactly once. */
class CallRecord {
  readonly fields: Record<string, unknown>;
  #emitted = false;
  readonly #log: PipelineDeps["log"];

  constructor(req: ToolCallRequest, log: PipelineDeps["log"]) {
    this.#log = log;
    this.fields = {
      event: "tool_call",
      agent: req.agentId,
      server: req.serverId,
      tool: req.toolName,
      operation: null,
      resource: null,
      decision: null,
      mode: req.defaultMode,
      items_total: 0,
      items_filtered: 0,
      fuel: 0,
      backend_calls: 0,
      memo_hits: 0,
      guard_ms: 0,
    };
  }

  usage(u: GuardUsage | null): void {
    if (!u) return;
    this.fields.fuel = u.fuel;
    this.fields.backend_calls = u.backendCalls;
    this.fields.memo_hits = u.memoHits ?? 0;
    this.fields.guard_ms = Math.round(u.ms * 1000) / 1000;
  }

  emit(decision: CallDecision, extra: Record<string, unknown> = {}): void {
    if (this.#emitted) return;
    this.#emitted = true;
    try {
      this.#log({ timestamp: new Date().toISOString(), ...this.fields, ...extra, decision });
    } catch {
      // A broken log sink must not change the security decision.
    }
  }
}

function safeUsage(session: GuardSession): GuardUsage | null {
  try {
    return session.usage();
  } catch {
    return null;
  }
}

function safeClose(session: GuardSession): void {
  try {
    session.close();
  } catch {
    // close is best effort; the session is dropped either way
  }
}

/**
 * Phases 0-2 (§4.5): opens ONE guard session, runs `label_agent` when a policy exists (its tags are
 * unioned into the agent's stored labels and its `difc_mode` becomes this call's mode), labels the
 * resource and runs the coarse check.
 *
 * @throws {DifcError} `DIFC Violation: ...` (-32001) for a coarse-denied write/read-write;
 *   `guard session initialization failed: LabelAgent failed: ...` or
 *   `guard labeling failed: resource labeling failed: ...` (-32002); a store failure (-32003).
 * @example
 * ```ts
 * const g = await beginToolCall(req, { guard, store, log: console.log }, ctx);
 * const upstream = await callUpstream(req.toolName, req.args);
 * const result = await g.finish(upstream); // or g.abort(err) when the upstream failed
 * ```
 */
export async function beginToolCall(
  req: ToolCallRequest,
  deps: PipelineDeps,
  ctx: GuardContext,
): Promise<ToolCallGuarding> {
  const record = new CallRecord(req, deps.log);
  const args = req.args === undefined || req.args === null ? {} : req.args;
  let session: GuardSession;
  try {
    session = deps.guard.open(ctx);
  } catch (e) {
    const err = guardFailure("guard session initialization failed: ", "open", e);
    record.emit("error", { error: err.message });
    throw err;
  }
  let mode = req.defaultMode;
  try {
    let agent: Labels | undefined;
    if (req.policy !== null && req.policy !== undefined) {
      let agentOut;
      let onceKey: string;
      try {
        const input = req.labelAgentInput ??
          await labelAgentInputFor(req.policy, deps.guard.type, req.serverId, req.trustedBots);
        onceKey = input.onceKey;
        agentOut = parseLabelAgentOutput(await session.labelAgent(input.json));
      } catch (e) {
        throw guardFailure("guard session initialization failed: LabelAgent failed: ", "label_agent", e);
      }
      // addLabels resolves to the agent's labels after the union: no second store round trip.
      agent = await storeOp(() => deps.store.addLabels(req.agentId, agentOut, onceKey));
      mode = agentOut.mode;
      record.fields.mode = mode;
    }
    agent ??= await storeOp(() => deps.store.get(req.agentId));
    let labeled;
    try {
      const input = canonicalJson({ capabilities: {}, tool_args: args, tool_name: req.toolName });
      labeled = parseLabelResourceOutput(await session.labelResource(input));
    } catch (e) {
      throw guardFailure("guard labeling failed: resource labeling failed: ", "label_resource", e);
    }
    const { resource, operation } = labeled;
    record.fields.operation = operation;
    record.fields.resource = {
      description: resource.description,
      secrecy: resource.secrecy,
      integrity: resource.integrity,
    };
    const result = evaluate(agent, resource, operation, mode);
    const outcome = coarseOutcome(result, operation);
    record.fields.coarse = outcome;
    if (outcome === "denied") {
      throw new DifcError(DIFC_ERROR_CODES.DIFC_VIOLATION, formatViolation(result, agent, resource), {
        type: "difc_violation",
        reason: result.reason,
        resource: resource.description,
        secrecy_to_add: result.secrecyToAdd,
        integrity_to_drop: result.integrityToDrop,
      });
    }
    if (outcome === "bypass-read") record.fields.coarse_reason = result.reason;
    return new Guarding(req, deps, session, record, args, mode, resource, operation);
  } catch (e) {
    record.usage(safeUsage(session));
    safeClose(session);
    const err = e instanceof DifcError ? e : guardFailure("guard labeling failed: ", "internal", e);
    const decision: CallDecision = err.code === DIFC_ERROR_CODES.DIFC_VIOLATION ? "deny" : "error";
    record.emit(decision, { error: err.message.split("\n")[0] });
    throw err;
  }
}

/** Phases 4-6 for one call. */
class Guarding implements ToolCallGuarding {
  readonly operation: Operation;
  #done = false;

  constructor(
    readonly req: ToolCallRequest,
    readonly deps: PipelineDeps,
    readonly session: GuardSession,
    readonly record: CallRecord,
    readonly args: unknown,
    readonly mode: DifcMode,
    readonly resource: LabeledResource,
    operation: Operation,
  ) {
    this.operation = operation;
  }

  #closed = false;

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.record.usage(safeUsage(this.session));
    safeClose(this.session);
  }

  abort(reason?: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#close();
    this.record.emit("aborted", reason === undefined ? {} : { error: errorMessage(reason) });
  }

  async finish(upstreamResult: unknown): Promise<unknown> {
    if (this.#done) {
      throw new DifcError(DIFC_ERROR_CODES.GUARD_FAILURE, "guard session already finished", {
        type: "guard_failure",
        phase: "finish",
        kind: "internal",
      });
    }
    this.#done = true;
    try {
      const { decision, result } = await this.#run(upstreamResult);
      this.record.emit(decision);
      return result;
    } catch (e) {
      const err = e instanceof DifcError ? e : guardFailure("response labeling failed: ", "internal", e);
      this.record.emit(err.code === DIFC_ERROR_CODES.DIFC_VIOLATION ? "block" : "error", {
        error: err.message,
      });
      throw err;
    } finally {
      this.#close();
    }
  }

  async #run(upstreamResult: unknown): Promise<{ decision: CallDecision; result: unknown }> {
    const { req, deps, mode, operation } = this;
    let labels: ResponseLabels | null = null;
    if (shouldLabelResponse(operation, mode)) {
      try {
        const input = canonicalJson({
          capabilities: {},
          tool_args: this.args,
          tool_name: req.toolName,
          tool_result: upstreamResult,
        });
        labels = parseLabelResponseOutput(await this.session.labelResponse(input), upstreamResult);
      } catch (e) {
        throw guardFailure("response labeling failed: response labeling failed: ", "label_response", e);
      }
    }
    this.#close(); // no more guard calls: release the instance before store I/O

    let result = upstreamResult;
    let decision: CallDecision = "allow";
    if (labels) {
      const agent = await storeOp(() => deps.store.get(req.agentId));
      const keep: boolean[] = [];
      const filtered: FilteredDetail[] = [];
      for (const item of labels.items) {
        const r = evaluate(agent, item.labels, operation, mode);
        keep.push(isAllowed(r));
        if (!isAllowed(r)) filtered.push({ item, reason: r.reason, secrecy: r.secrecyToAdd.length > 0 });
      }
      this.record.fields.items_total = labels.items.length;
      this.record.fields.items_filtered = filtered.length;
      for (const f of filtered) this.#logFiltered(f);
      if (filtered.length > 0) {
        if (mode === "strict") {
          throw new DifcError(
            DIFC_ERROR_CODES.DIFC_VIOLATION,
            `DIFC policy violation: ${filtered.length} of ${labels.items.length} items in response are not accessible to agent ${req.agentId}`,
            { type: "difc_violation", filtered: filtered.length, total: labels.items.length },
          );
        }
        if (isSingularTool(req.toolName) && labels.items.length === 1) {
          throw new DifcError(DIFC_ERROR_CODES.DIFC_VIOLATION, singleItemMessage(filtered[0]), {
            type: "difc_violation",
            reason: filtered[0].reason,
            resource: filtered[0].item.labels.description,
          });
        }
        result = rebuildResult(upstreamResult, labels, keep, filteredNotice(filtered));
        decision = "filter";
      }
    }
    if (shouldAccumulate(operation, mode)) {
      const overall = labels ? overallLabels(labels.items) : this.resource;
      const after = await storeOp(() => deps.store.propagate(req.agentId, overall));
      this.record.fields.agent_after = after;
    }
    return { decision, result };
  }

  #logFiltered(f: FilteredDetail): void {
    const rec: Record<string, unknown> = {
      timestamp: new Date().toISOString(),
      event: "difc_filtered",
      _schema: "difc-filtered/v2",
      server_id: this.req.serverId,
      tool_name: this.req.toolName,
      agent: this.req.agentId,
      description: f.item.labels.description,
      reason: f.reason,
      secrecy_tags: f.item.labels.secrecy,
      integrity_tags: f.item.labels.integrity,
      ...itemMetadata(f.item.data),
    };
    try {
      this.deps.log(rec);
    } catch {
      // logging never changes the decision
    }
  }
}

/** True unless the tool name marks a collection tool (`list_*`, `search_*`). */
export function isSingularTool(toolName: string): boolean {
  return !COLLECTION_TOOL_PREFIXES.some((p) => toolName.startsWith(p));
}

/** Union of all items' secrecy and of all items' integrity (the reference's `Overall()`). */
export function overallLabels(items: readonly LabeledItem[]): Labels {
  let secrecy: string[] = [];
  let integrity: string[] = [];
  for (const it of items) {
    secrecy = unionTags(secrecy, it.labels.secrecy);
    integrity = unionTags(integrity, it.labels.integrity);
  }
  return { secrecy, integrity };
}

function policyLabel(filtered: readonly FilteredDetail[]): string {
  const s = filtered.filter((f) => f.secrecy).length;
  const i = filtered.length - s;
  if (s > 0 && i === 0) return "secrecy policy";
  if (i > 0 && s === 0) return "integrity policy";
  return "access policy";
}

function singleItemMessage(f: FilteredDetail): string {
  const policy = policyLabel([f]);
  const desc = f.item.labels.description;
  let msg = desc !== ""
    ? `[Filtered] ${desc} exists but is not accessible — filtered by ${policy}`
    : `[Filtered] resource exists but is not accessible — filtered by ${policy}`;
  if (f.reason !== "") msg += ` (${f.reason})`;
  return msg;
}

/**
 * The notice block appended when items were removed (§3.5 step 6), word for word as the reference.
 *
 * @example
 * ```ts
 * // "[Filtered] 1 item(s) in this response were removed by secrecy policy and are not shown: repo:x (…)."
 * ```
 */
function filteredNotice(filtered: readonly FilteredDetail[]): string {
  const n = filtered.length;
  const policy = policyLabel(filtered);
  if (n <= MAX_FILTERED_ITEMS_IN_NOTICE) {
    const parts: string[] = [];
    for (const f of filtered) {
      const desc = f.item.labels.description;
      if (desc === "" && f.reason === "") continue;
      if (desc !== "" && f.reason !== "") parts.push(`${desc} (${f.reason})`);
      else parts.push(desc !== "" ? desc : f.reason);
    }
    if (parts.length > 0) {
      return `[Filtered] ${n} item(s) in this response were removed by ${policy} and are not shown: ${
        parts.join("; ")
      }.`;
    }
  }
  return `[Filtered] ${n} item(s) in this response were removed by ${policy} and are not shown.`;
}

type Obj = Record<string, unknown>;

/** Identifying metadata of a filtered item for the audit record (§4.9). */
function itemMetadata(data: unknown): Obj {
  if (!isObject(data)) return {};
  const out: Obj = {};
  const str = (...keys: string[]) => {
    for (const k of keys) if (typeof data[k] === "string" && data[k] !== "") return data[k] as string;
    return undefined;
  };
  const aa = str("author_association", "authorAssociation");
  if (aa) out.author_association = aa;
  const login = (o: unknown) => (isObject(o) && typeof o.login === "string" ? o.login : undefined);
  const al = login(data.user) ?? login(data.author);
  if (al) out.author_login = al;
  const url = str("html_url", "htmlUrl");
  if (url) out.html_url = url;
  const num = data.number;
  if (typeof num === "number" && Number.isInteger(num)) out.number = String(num);
  else if (typeof num === "string" && /^\d+$/.test(num)) out.number = num;
  const sha = str("sha");
  if (sha) out.sha = sha;
  return out;
}

/** A copy of `root` with the value at `pointer` replaced; containers on the way are shallow-copied. */
function setAt(root: unknown, pointer: readonly string[], value: unknown): unknown {
  if (pointer.length === 0) return value;
  const [head, ...rest] = pointer;
  if (Array.isArray(root)) {
    const copy = [...root];
    const i = Number(head);
    copy[i] = setAt(copy[i], rest, value);
    return copy;
  }
  const copy: Obj = { ...(root as Obj) };
  copy[head] = setAt(copy[head], rest, value);
  return copy;
}

function textBlock(text: string): Obj {
  return { type: "text", text };
}

/**
 * Rebuilds a result with only the accessible items (see the module doc, difference 3), keeping the
 * upstream's other fields, and appends the notice block.
 */
function rebuildResult(
  upstream: unknown,
  labels: ResponseLabels,
  keep: readonly boolean[],
  notice: string,
): unknown {
  const accessible = labels.items.filter((_, i) => keep[i]).map((it) => it.data);
  const loc = labels.format === "path" ? labels.location : null;
  const base: Obj = {};
  if (isObject(upstream)) {
    if (loc?.kind === "array") Object.assign(base, upstream);
    else if (upstream.isError !== undefined) base.isError = upstream.isError;
  }

  if (loc && loc.kind === "array" && !loc.unwrapped) {
    // Path labels applied to the raw result object: filter in place.
    const rebuilt = setAt(upstream, loc.pointer, accessible);
    const out: Obj = isObject(rebuilt) ? { ...rebuilt } : { content: [textBlock(JSON.stringify(rebuilt))] };
    if (loc.pointer[0] === "structuredContent") {
      out.content = [textBlock(JSON.stringify(out.structuredContent))];
    } else {
      delete out.structuredContent;
    }
    out.content = [...(Array.isArray(out.content) ? out.content : []), textBlock(notice)];
    return out;
  }

  let text: string;
  delete base.structuredContent;
  if (loc && loc.kind === "array") {
    const rebuilt = setAt(loc.root, loc.pointer, accessible);
    text = JSON.stringify(rebuilt);
    if (
      isObject(upstream) && upstream.structuredContent !== undefined &&
      canonicalJson(upstream.structuredContent) === canonicalJson(loc.root)
    ) {
      base.structuredContent = rebuilt;
    }
  } else {
    text = JSON.stringify(accessible);
  }
  base.content = [textBlock(text), textBlock(notice)];
  return base;
}
