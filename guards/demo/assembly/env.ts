/**
 * The two host functions of the gh-aw-mcpg guard ABI. AssemblyScript names the import module after
 * this file, so these become `env.call_backend` and `env.host_log`.
 *
 * @module
 */

/**
 * Performs a `tools/call` against the guarded upstream. Returns the result JSON's length (written at
 * `resultPtr`), `-2` when `resultSize` is too small (the needed size is then a little-endian u32 at
 * `resultPtr` if `resultSize >= 4`), or `-1` on any error.
 */
export declare function call_backend(
  toolPtr: i32,
  toolLen: i32,
  argsPtr: i32,
  argsLen: i32,
  resultPtr: i32,
  resultSize: i32,
): i32;

/** Writes one UTF-8 log line. Levels: 0 debug, 1 info, 2 warn, 3 error. */
export declare function host_log(level: i32, msgPtr: i32, msgLen: i32): void;
