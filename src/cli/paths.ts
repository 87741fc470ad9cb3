/**
 * Where a command-line path is relative to.
 *
 * `deno task` and npm scripts run every task from the project root, so `Deno.cwd()` is not where the
 * user typed the command. Both record that directory in `INIT_CWD`; the entry points resolve relative
 * paths given on their command line (or in the environment) against it, and against the working
 * directory when they are run directly.
 *
 * @module
 */
import { resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/**
 * The directory the user ran the command in: `INIT_CWD` when set, else the working directory.
 *
 * @example
 * ```ts
 * const dir = callerDir(Deno.env.toObject());
 * ```
 */
export function callerDir(env: Record<string, string | undefined>): string {
  return env.INIT_CWD || Deno.cwd();
}

/**
 * A file URL for `path`: absolute paths and `file:` URLs as they are, relative ones taken from `dir`.
 *
 * @example
 * ```ts
 * resolveFrom("/home/me/project", "gateway.json").pathname; // "/home/me/project/gateway.json"
 * ```
 */
export function resolveFrom(dir: string, path: string): URL {
  if (/^file:/.test(path)) return new URL(path);
  return pathToFileURL(resolve(dir, path));
}

/** The local path of `path` taken from `dir`, for APIs that take paths. */
export function resolvePath(dir: string, path: string): string {
  return /^file:/.test(path) ? fileURLToPath(path) : resolve(dir, path);
}

/** A file URL of directory `dir` with its trailing slash, a base for `new URL(relative, base)`. */
export function dirUrl(dir: string): URL {
  return pathToFileURL(resolve(dir) + sep);
}
