/**
 * Built-in guards (guard-abi.md §3.7), implementing the same {@link Guard} seam as wasm guards and
 * answering with the JSON text a wasm guard would return:
 * - `noop`: empty labels, operation `read-write`, `label_agent` → mode `strict`, no response labels.
 * - `write-sink`: empty agent labels, mode `filter`; every call is a `write` to a resource whose secrecy
 *   is the `accept` list (empty when `sink-visibility` is `public`) and whose integrity is empty.
 *
 * @module
 */
import type { Guard, GuardContext, GuardSession, GuardUsage } from "./guard.ts";
import type { WriteSinkPolicy } from "./payload.ts";

/** The built-in guards' fixed answers, serialised once. */
const emptyAgent = (mode: string) =>
  JSON.stringify({ agent: { secrecy: [], integrity: [] }, difc_mode: mode });
const NOOP_AGENT = emptyAgent("strict");
const WRITE_SINK_AGENT = emptyAgent("filter");
const NOOP_RESOURCE = JSON.stringify({
  operation: "read-write",
  resource: { description: "noop resource (no restrictions)", integrity: [], secrecy: [] },
});

function toolNameOf(inputJson: string): string {
  try {
    const v = JSON.parse(inputJson) as { tool_name?: unknown };
    return typeof v.tool_name === "string" ? v.tool_name : "";
  } catch {
    return "";
  }
}

/** A session whose three answers are computed in-process; usage counts only wall time. */
class BuiltinSession implements GuardSession {
  #ms = 0;
  readonly #agent: () => string;
  readonly #resource: (inputJson: string) => string;

  constructor(agent: () => string, resource: (inputJson: string) => string) {
    this.#agent = agent;
    this.#resource = resource;
  }

  #timed(fn: () => string): Promise<string> {
    const t0 = performance.now();
    try {
      return Promise.resolve(fn());
    } finally {
      this.#ms += performance.now() - t0;
    }
  }

  labelAgent(_inputJson: string): Promise<string> {
    return this.#timed(this.#agent);
  }

  labelResource(inputJson: string): Promise<string> {
    return this.#timed(() => this.#resource(inputJson));
  }

  labelResponse(_inputJson: string): Promise<string> {
    return Promise.resolve(""); // no fine-grained labels
  }

  usage(): GuardUsage {
    return { fuel: 0, backendCalls: 0, memoryPages: 0, ms: this.#ms };
  }

  close(): void {}
}

/**
 * The noop guard: used for servers without a guard. Because its resources have empty integrity and
 * the operation is `read-write`, an agent holding integrity tags is denied (the read part fails).
 *
 * @example
 * ```ts
 * const s = new NoopGuard().open(ctx);
 * await s.labelResource('{"tool_name":"x"}'); // '{"operation":"read-write","resource":{...}}'
 * ```
 */
export class NoopGuard implements Guard {
  readonly name: string;
  readonly type = "noop";

  constructor(name = "noop") {
    this.name = name;
  }

  open(_ctx: GuardContext): GuardSession {
    return new BuiltinSession(
      () => NOOP_AGENT,
      () => NOOP_RESOURCE,
    );
  }
}

/**
 * The write-sink guard for output channels (§3.7). A tainted agent (non-empty secrecy) may write only
 * when the accept list covers its secrecy; `accept: ["*"]` accepts all; a `public` sink accepts none.
 *
 * @example
 * ```ts
 * const g = new WriteSinkGuard({ accept: ["private:acme"], sinkVisibility: "private" });
 * ```
 */
export class WriteSinkGuard implements Guard {
  readonly name: string;
  readonly type = "write-sink";
  readonly #accept: string[];
  readonly #public: boolean;

  constructor(policy: WriteSinkPolicy, name = "write-sink") {
    this.name = name;
    this.#accept = [...policy.accept];
    this.#public = policy.sinkVisibility.trim().toLowerCase() === "public";
  }

  open(_ctx: GuardContext): GuardSession {
    return new BuiltinSession(
      () => WRITE_SINK_AGENT,
      (inputJson) => {
        const tool = toolNameOf(inputJson);
        const resource = this.#public
          ? { description: `write-sink:public (${tool})`, integrity: [], secrecy: [] }
          : { description: `write-sink (${tool})`, integrity: [], secrecy: this.#accept };
        return JSON.stringify({ operation: "write", resource });
      },
    );
  }
}
