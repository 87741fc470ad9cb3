/**
 * Logging through `env.host_log`.
 *
 * @module
 */

import { host_log } from "./env";

/** `host_log` level for diagnostics. */
export const LOG_DEBUG: i32 = 0;
/** `host_log` level for normal events. */
export const LOG_INFO: i32 = 1;
/** `host_log` level for fail-safe fallbacks. */
export const LOG_WARN: i32 = 2;
/** `host_log` level for rejected input and aborts. */
export const LOG_ERROR: i32 = 3;

/** Sends `msg` (UTF-8 encoded) to the host log at `level`. */
export function log(level: i32, msg: string): void {
  const bytes = String.UTF8.encode(msg);
  host_log(level, <i32> changetype<usize>(bytes), bytes.byteLength);
}
