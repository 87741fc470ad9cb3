/**
 * The DIFC flow rules (guard-abi.md §3.2-3.4): read/write/read-write checks with the `*` wildcard,
 * the reason strings clients see, the mode matrix, and the `DIFC Violation:` message of §3.8.
 *
 * Pure functions over plain label sets; no I/O.
 *
 * @module
 */
import {
  differenceTags,
  formatIntegrityLevel,
  formatSecrecyLevel,
  formatTagList,
  type LabeledResource,
  type Labels,
  WILDCARD_TAG,
} from "./labels.ts";

/** Enforcement modes (§3.4). */
export type DifcMode = "strict" | "filter" | "propagate";

/** What a tool call does to the resource, as `label_resource` classifies it. */
export type Operation = "read" | "write" | "read-write";

/** Outcome of one evaluation. */
export type Decision = "allow" | "deny" | "allow-with-propagate";

/** Result of evaluating one agent against one resource or item. */
export interface EvaluationResult {
  decision: Decision;
  /** Secrecy tags the agent would have to add (the secrecy check's missing tags). */
  secrecyToAdd: string[];
  /** Integrity tags the agent would have to drop (the integrity check's missing tags). */
  integrityToDrop: string[];
  /** Human-readable reason; empty when allowed without propagation. */
  reason: string;
}

/** The three modes, for validation. */
export const DIFC_MODES: readonly DifcMode[] = ["strict", "filter", "propagate"];

/**
 * Parses a mode name case-insensitively.
 *
 * @throws {Error} `unknown enforcement mode: <s> (valid modes: strict, filter, propagate)`.
 * @example
 * ```ts
 * parseMode("Filter"); // "filter"
 * ```
 */
export function parseMode(s: string): DifcMode {
  const m = s.toLowerCase();
  if ((DIFC_MODES as readonly string[]).includes(m)) return m as DifcMode;
  throw new Error(`unknown enforcement mode: ${s} (valid modes: strict, filter, propagate)`);
}

/**
 * Secrecy-kind flow `src → target`: every tag of `src` must be in `target`, unless `target` holds `*`.
 * Returns the tags of `src` missing from `target`.
 */
function secrecyMissing(src: readonly string[], target: readonly string[]): string[] {
  if (target.includes(WILDCARD_TAG)) return [];
  return differenceTags(src, target);
}

/**
 * Integrity-kind flow `src → target`: every tag of `target` must be in `src`, unless `src` holds `*`.
 * Returns the tags of `target` missing from `src`.
 */
function integrityMissing(src: readonly string[], target: readonly string[]): string[] {
  if (src.includes(WILDCARD_TAG)) return [];
  return differenceTags(target, src);
}

function allowed(): EvaluationResult {
  return { decision: "allow", secrecyToAdd: [], integrityToDrop: [], reason: "" };
}

function evaluateRead(agent: Labels, res: LabeledResource, mode: DifcMode): EvaluationResult {
  // read: A.integrity ⊆ R.integrity (pass if * ∈ R.integrity); R.secrecy ⊆ A.secrecy (pass if * ∈ A.secrecy)
  const integrityToDrop = integrityMissing(res.integrity, agent.integrity);
  const secrecyToAdd = secrecyMissing(res.secrecy, agent.secrecy);
  if (mode === "propagate") {
    if (integrityToDrop.length === 0 && secrecyToAdd.length === 0) return allowed();
    const parts: string[] = [];
    if (secrecyToAdd.length > 0) parts.push(`adding secrecy tags ${formatTagList(secrecyToAdd)}`);
    if (integrityToDrop.length > 0) parts.push(`dropping integrity tags ${formatTagList(integrityToDrop)}`);
    return {
      decision: "allow-with-propagate",
      secrecyToAdd,
      integrityToDrop,
      reason: `Read allowed with label propagation: ${parts.join(" and ")}`,
    };
  }
  if (integrityToDrop.length > 0) {
    return {
      decision: "deny",
      secrecyToAdd: [],
      integrityToDrop,
      reason: `Resource '${res.description}' has lower integrity than agent requires. ` +
        `The agent cannot read data with integrity below ${formatIntegrityLevel(integrityToDrop)}.`,
    };
  }
  if (secrecyToAdd.length > 0) {
    return {
      decision: "deny",
      secrecyToAdd,
      integrityToDrop: [],
      reason: `Resource '${res.description}' has secrecy requirements that agent doesn't meet. ` +
        `The agent is not authorized to access ${formatSecrecyLevel(secrecyToAdd)}-scoped data.`,
    };
  }
  return allowed();
}

function evaluateWrite(agent: Labels, res: LabeledResource): EvaluationResult {
  // write: R.integrity ⊆ A.integrity (pass if * ∈ A.integrity); A.secrecy ⊆ R.secrecy (pass if * ∈ R.secrecy)
  const integrityToDrop = integrityMissing(agent.integrity, res.integrity);
  if (integrityToDrop.length > 0) {
    return {
      decision: "deny",
      secrecyToAdd: [],
      integrityToDrop,
      reason: `Agent lacks required integrity to write to '${res.description}'. ` +
        `The agent's integrity level is insufficient; it needs ${
          formatIntegrityLevel(integrityToDrop)
        } integrity.`,
    };
  }
  const secrecyToAdd = secrecyMissing(agent.secrecy, res.secrecy);
  if (secrecyToAdd.length > 0) {
    return {
      decision: "deny",
      secrecyToAdd,
      integrityToDrop: [],
      reason: `Agent carries ${formatSecrecyLevel(secrecyToAdd)}-scoped data that cannot be written to ` +
        `'${res.description}' due to secrecy constraints. ` +
        "The target resource is not authorized to receive this sensitive data.",
    };
  }
  return allowed();
}

/**
 * Evaluates whether `agent` may perform `op` on `resource` under `mode` (§3.2).
 *
 * Read checks integrity first, then secrecy; write likewise; read-write runs the read rules and then
 * the write rules, the first failure deciding. In propagate mode a failing read is allowed with
 * decision `allow-with-propagate`; a read-write whose read part propagates and whose write part passes
 * ends as plain `allow` (as in the reference).
 *
 * @example
 * ```ts
 * const r = evaluate({ secrecy: [], integrity: ["approved:acme"] },
 *   { description: "issue #1", secrecy: [], integrity: [] }, "read", "filter");
 * r.decision; // "deny"
 * ```
 */
export function evaluate(
  agent: Labels,
  resource: LabeledResource,
  op: Operation,
  mode: DifcMode,
): EvaluationResult {
  switch (op) {
    case "read":
      return evaluateRead(agent, resource, mode);
    case "write":
      return evaluateWrite(agent, resource);
    case "read-write": {
      const r = evaluateRead(agent, resource, mode);
      if (!isAllowed(r)) return r;
      const w = evaluateWrite(agent, resource);
      if (!isAllowed(w)) return w;
      return allowed();
    }
  }
}

/** True for `allow` and `allow-with-propagate`. */
export function isAllowed(r: EvaluationResult): boolean {
  return r.decision !== "deny";
}

/** Phase 2 outcome: a denied read still reaches the upstream (enforcement moves to per-item filtering). */
export type CoarseOutcome = "allowed" | "bypass-read" | "denied";

/** Classifies a Phase 2 evaluation (§3.3). */
export function coarseOutcome(result: EvaluationResult, op: Operation): CoarseOutcome {
  if (isAllowed(result)) return "allowed";
  return op === "read" ? "bypass-read" : "denied";
}

/** Whether `label_response` runs (§3.4): never for writes; read-write only outside strict mode. */
export function shouldLabelResponse(op: Operation, mode: DifcMode): boolean {
  if (op === "write") return false;
  return op !== "read-write" || mode !== "strict";
}

/** Whether read labels accumulate into the agent (§3.6): propagate mode, reads and read-writes. */
export function shouldAccumulate(op: Operation, mode: DifcMode): boolean {
  return op !== "write" && mode === "propagate";
}

/**
 * The client-facing coarse-denial message (§3.8): `DIFC Violation: <reason>`, the required actions with
 * their implications, the agent's current labels and the resource's requirements.
 *
 * @example
 * ```ts
 * formatViolation(result, agentLabels, resource).startsWith("DIFC Violation: "); // true
 * ```
 */
export function formatViolation(result: EvaluationResult, agent: Labels, resource: LabeledResource): string {
  let msg = `DIFC Violation: ${result.reason}\n\n`;
  if (result.secrecyToAdd.length > 0) {
    const tags = formatTagList(result.secrecyToAdd);
    msg += `Required Action: Add secrecy tags ${tags}\n` +
      "\nImplications of adding secrecy tags:\n" +
      "  - Agent will be restricted from writing to resources that lack these tags\n" +
      "  - This includes public resources (e.g., public repositories, public internet)\n" +
      "  - Agent will be marked as handling sensitive information\n" +
      `  - Future writes must target resources with tags: ${tags}\n`;
  }
  if (result.integrityToDrop.length > 0) {
    const tags = formatTagList(result.integrityToDrop);
    msg += `\nRequired Action: Drop integrity tags ${tags}\n` +
      "\nImplications of dropping integrity tags:\n" +
      "  - Agent will no longer be able to write to high-integrity resources\n" +
      `  - Specifically, agent cannot write to resources requiring tags: ${tags}\n` +
      "  - This action acknowledges that agent has been influenced by lower-integrity data\n" +
      "  - Agent's outputs will be considered less trustworthy\n";
  }
  msg += "\nCurrent Agent Labels:\n" +
    `  Secrecy: ${formatTagList(agent.secrecy)}\n` +
    `  Integrity: ${formatTagList(agent.integrity)}\n` +
    "\nResource Requirements:\n" +
    `  Secrecy: ${formatTagList(resource.secrecy)}\n` +
    `  Integrity: ${formatTagList(resource.integrity)}\n`;
  return msg;
}
