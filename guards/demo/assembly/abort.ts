/**
 * The guard's `abort`: selected with `--use abort=assembly/abort/guardAbort`, so the module does not
 * import `env.abort`. It logs the message through `env.host_log` and traps.
 *
 * @module
 */

import { log, LOG_ERROR } from "./log";

/** Set on the first abort, so an abort raised while building the message (out of memory) just traps. */
let aborting = false;

/** Logs `message at file:line:column` at error level, then executes `unreachable`. */
export function guardAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  if (!aborting) {
    aborting = true;
    const msg = message === null ? "abort" : message;
    const file = fileName === null ? "?" : fileName;
    log(LOG_ERROR, "guard abort: " + msg + " at " + file + ":" + line.toString() + ":" + column.toString());
  }
  unreachable();
}
