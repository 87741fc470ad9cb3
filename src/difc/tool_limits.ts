/**
 * `allow-only.tool-call-limits` (guard-abi.md §3.7): at most N calls of a tool per agent and server;
 * 0 means unlimited. Error text is the reference's: `tool call limit reached for "<tool>" (max: N)`.
 *
 * Difference from gh-aw-mcpg: the reference counts per MCP session; we count per agent identity (the
 * same key the agent labels use), so a client cannot reset its budget by opening a new session. Counts
 * live in the isolate's memory: on a multi-isolate platform each isolate counts on its own, which makes
 * the limit per isolate there (documented in the README).
 *
 * @module
 */

/** Counters kept before the oldest are dropped: bounds memory under an unbounded number of agents. */
export const MAX_TOOL_LIMIT_COUNTERS = 100_000;

/**
 * Per-isolate counters.
 *
 * @example
 * ```ts
 * const limiter = new ToolCallLimiter();
 * const why = limiter.take("agent-1", "github", "create_issue", { create_issue: 2 });
 * if (why) throw new Error(why);
 * ```
 */
export class ToolCallLimiter {
  readonly #counts = new Map<string, number>();
  readonly #max: number;

  constructor(maxCounters = MAX_TOOL_LIMIT_COUNTERS) {
    this.#max = maxCounters;
  }

  /**
   * Counts one call and returns `null`, or returns the refusal message when the limit is reached
   * (a refused call is not counted).
   */
  take(
    agentId: string,
    serverId: string,
    tool: string,
    limits: Readonly<Record<string, number>>,
  ): string | null {
    const max = limits[tool];
    if (max === undefined || max === 0) return null;
    const key = `${agentId}\u0000${serverId}\u0000${tool}`;
    const used = this.#counts.get(key) ?? 0;
    if (used >= max) return `tool call limit reached for "${tool}" (max: ${max})`;
    this.#counts.delete(key); // re-insert: Map order is then least-recently-used first
    this.#counts.set(key, used + 1);
    if (this.#counts.size > this.#max) this.#counts.delete(this.#counts.keys().next().value!);
    return null;
  }
}
