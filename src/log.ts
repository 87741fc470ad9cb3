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
 * A sink that writes each kept record as one JSON line with its time as `time` (ISO 8601): the
 * record's `timestamp` when it has one (which then is not repeated), else the time of writing.
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
  const sink: LogSink = (record) => {
    if (
      typeof record.level === "string" && LOG_LEVELS.indexOf(record.level as typeof LOG_LEVELS[number]) < min
    ) return;
    // One time field per line: a record's own `timestamp` (decision records carry the moment of the
    // decision) becomes `time`, which every other line has. The record is serialised as it is, the
    // time spliced in front (no copy of the record).
    const stamp = record.timestamp;
    if ("time" in record) {
      const { timestamp: _, ...rest } = record;
      write(JSON.stringify({ time: typeof stamp === "string" ? stamp : new Date().toISOString(), ...rest }));
      return;
    }
    let json: string;
    if (stamp === undefined) {
      json = JSON.stringify(record);
    } else {
      const { timestamp: _, ...rest } = record;
      json = JSON.stringify(rest);
    }
    const time = JSON.stringify(typeof stamp === "string" ? stamp : new Date().toISOString());
    write(json === "{}" ? `{"time":${time}}` : `{"time":${time},${json.slice(1)}`);
  };
  minLevels.set(sink, min);
  return sink;
}

/** The minimum level index of each sink built by {@link jsonLogSink}. */
const minLevels = new WeakMap<LogSink, number>();

/**
 * Whether `sink` writes a record at `level`: false only for a {@link jsonLogSink} whose minimum is
 * above it (any other sink decides for itself, so it gets every record). Callers check it before
 * building a record that would be dropped (guard log lines, one or more per guarded call).
 *
 * @example
 * ```ts
 * if (logWrites(log, "debug")) log({ level: "debug", event: "guard_log", msg: expensive() });
 * ```
 */
export function logWrites(sink: LogSink, level: typeof LOG_LEVELS[number]): boolean {
  const min = minLevels.get(sink);
  return min === undefined || LOG_LEVELS.indexOf(level) >= min;
}
