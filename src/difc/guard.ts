/**
 * The `Guard` seam: what the DIFC pipeline needs from a guard, whatever runs it.
 *
 * WebAssembly guards (`src/guard/`) and the built-in guards (`noop`, `write-sink`) implement it. The
 * pipeline never sees wasm; the wasm host never sees MCP or HTTP.
 *
 * @module
 */

/**
 * Performs a metadata `tools/call` against the guarded upstream for the guard's `call_backend`.
 * Resolves to the upstream's JSON-RPC `result` object; rejects on any error (transport error,
 * JSON-RPC error, abort), which the wasm host turns into `-1` for the guard.
 */
export type BackendCaller = (toolName: string, args: unknown, signal: AbortSignal) => Promise<unknown>;

/** A structured log sink. `fields` are merged into one JSON log line. */
export type GuardLogger = (
  level: "debug" | "info" | "warn" | "error",
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/** Per-request context handed to a guard when a session opens. */
export interface GuardContext {
  /** Aborts every guard call of this session (client gone, tool timeout, shutdown). */
  signal: AbortSignal;
  /** Answers `call_backend`. */
  backend: BackendCaller;
  /**
   * The answer `backend` would give now from its cache without calling anything, or undefined when
   * it holds none (`src/mcp/backend_cache.ts`). Lets a wasm guard's call memo (`src/guard/memo.ts`)
   * answer calls that used `call_backend`; without it only calls that made none are memoised.
   */
  backendPeek?: (toolName: string, args: unknown) => unknown;
  /** Where `host_log` and WASI stdout/stderr go. */
  log: GuardLogger;
  /**
   * False when `log` would drop a line of `level`: the host then does not even read a guard's
   * `host_log` text from its memory. Absent: every line is built.
   */
  wantsLog?: (level: "debug" | "info" | "warn" | "error") => boolean;
}

/** Resource usage of one session, summed over its export calls. */
export interface GuardUsage {
  /** Fuel units spent. 0 for guards that are not metered. */
  fuel: number;
  /** `call_backend` calls made (including refused ones). */
  backendCalls: number;
  /** Linear memory size at the end of the last call, in pages. */
  memoryPages: number;
  /** Wall time spent inside guard calls, in ms (includes time suspended in `call_backend`). */
  ms: number;
  /** Calls answered from the guard's call memo, without running the guard (wasm guards only). */
  memoHits?: number;
}

/**
 * One guard session: for wasm guards, ONE fresh instance used for one request. The three calls take
 * the input JSON text and resolve to the guard's output JSON text (`""` when the guard returned 0).
 * They throw `GuardError` (`src/guard/limits.ts`) on any failure; the session is dead afterwards.
 */
export interface GuardSession {
  labelAgent(inputJson: string): Promise<string>;
  labelResource(inputJson: string): Promise<string>;
  labelResponse(inputJson: string): Promise<string>;
  usage(): GuardUsage;
  /** Releases the instance. Idempotent. */
  close(): void;
}

/** A guard, loaded once per isolate. `open` is cheap (a fresh instance for wasm guards). */
export interface Guard {
  readonly name: string;
  /** `"wasm"`, `"noop"` or `"write-sink"`. */
  readonly type: string;
  open(ctx: GuardContext): GuardSession;
}
