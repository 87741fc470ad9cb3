/**
 * The gateway's structured log: one JSON object per line.
 *
 * Records with a `level` (`debug`, `info`, `warn`, `error`: guard logs, config warnings, errors) are
 * written at or above the minimum level; records without one (the per-call `tool_call` and
 * `difc_filtered` decision records) are always written.
 *
 * @module
 */

/** Where records go. */
export type LogSink = (record: Record<string, unknown>) => void;

/** Known levels, lowest first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/**
 * A sink that writes each kept record as one JSON line with a timestamp.
 *
 * @example
 * ```ts
 * const log = jsonLogSink((line) => console.error(line), Deno.env.get("MCP_EDGE_GUARD_LOG_LEVEL"));
 * log({ level: "warn", event: "config", message: "..." });
 * ```
 * @throws {RangeError} for an unknown `minLevel`.
 */
export function jsonLogSink(write: (line: string) => void, minLevel: string = "info"): LogSink {
  const min = LOG_LEVELS.indexOf(minLevel as typeof LOG_LEVELS[number]);
  if (min < 0) {
    throw new RangeError(
      `log level must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(minLevel)}`,
    );
  }
  return (record) => {
    if (
      typeof record.level === "string" && LOG_LEVELS.indexOf(record.level as typeof LOG_LEVELS[number]) < min
    ) return;
    write(JSON.stringify({ time: new Date().toISOString(), ...record }));
  };
}
