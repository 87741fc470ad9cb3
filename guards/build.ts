/**
 * Rebuilds every guard under `guards/` from source and prints the sizes.
 *
 * A guard is a folder with an `asconfig.json` (AssemblyScript). It is compiled with the
 * AssemblyScript compiler from `node_modules/assemblyscript` (`bin/asc.js`), run by this Deno
 * binary, with the folder as working directory and the config's `release` target. The output name
 * is the target's `outFile`, inside the guard folder. Builds are deterministic: the same sources and
 * compiler give the same bytes (checked by `test/guards/demo_guard_test.ts`).
 *
 * Usage: `deno task build:guards` (= `deno run -A guards/build.ts`).
 *
 * @module
 */

/** The `guards/` folder. */
export const GUARDS_DIR: URL = new URL("./", import.meta.url);

/** The AssemblyScript compiler's CLI entry. */
export const ASC_ENTRY: URL = new URL("../node_modules/assemblyscript/bin/asc.js", import.meta.url);

/** The build configuration file that marks a guard folder. */
export const GUARD_CONFIG = "asconfig.json";

/** The asconfig target used for the shipped binaries. */
export const BUILD_TARGET = "release";

/** The result of one guard build. */
export interface GuardBuild {
  /** The guard folder name, e.g. `demo`. */
  name: string;
  /** Where the `.wasm` was written. */
  outFile: string;
  /** Size of the `.wasm` in bytes. */
  bytes: number;
  /** Wall time of the compiler run in ms. */
  ms: number;
}

/** Raised when the compiler fails; carries its output. */
export class GuardBuildError extends Error {
  constructor(guardDir: string, code: number, output: string) {
    super(`building the guard in ${guardDir} failed (asc exit code ${code}):\n${output}`);
    this.name = "GuardBuildError";
  }
}

/**
 * Lists the guard folders under `root` (those holding an `asconfig.json`), sorted by name.
 *
 * @example
 * ```ts
 * const dirs = await findGuards(); // ["/…/guards/demo"]
 * ```
 */
export async function findGuards(root: URL = GUARDS_DIR): Promise<string[]> {
  const dirs: string[] = [];
  for await (const entry of Deno.readDir(root)) {
    if (!entry.isDirectory) continue;
    const dir = new URL(`${entry.name}/`, root);
    try {
      await Deno.stat(new URL(GUARD_CONFIG, dir));
      dirs.push(decodeURIComponent(dir.pathname).replace(/\/$/, ""));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return dirs.sort();
}

/** The `outFile` of the release target in the guard's asconfig.json. */
async function configuredOutFile(guardDir: string): Promise<string> {
  const config = JSON.parse(await Deno.readTextFile(`${guardDir}/${GUARD_CONFIG}`));
  const outFile = config?.targets?.[BUILD_TARGET]?.outFile;
  if (typeof outFile !== "string" || outFile === "") {
    throw new GuardBuildError(guardDir, -1, `${GUARD_CONFIG} has no targets.${BUILD_TARGET}.outFile`);
  }
  return `${guardDir}/${outFile}`;
}

/**
 * Compiles the guard in `guardDir`. `outFile` (absolute) overrides the configured output, e.g. to
 * build into a temporary folder and compare with the committed binary.
 *
 * @example
 * ```ts
 * const { bytes, ms } = await buildGuard("guards/demo", await Deno.makeTempFile({ suffix: ".wasm" }));
 * ```
 * @throws {GuardBuildError} with the compiler's output when compilation fails.
 */
export async function buildGuard(guardDir: string, outFile?: string): Promise<GuardBuild> {
  const target = outFile ?? await configuredOutFile(guardDir);
  const ascPath = decodeURIComponent(ASC_ENTRY.pathname);
  const started = performance.now();
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ascPath, "--config", GUARD_CONFIG, "--target", BUILD_TARGET, "--outFile", target],
    cwd: guardDir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - started;
  const output = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  if (code !== 0) throw new GuardBuildError(guardDir, code, output);
  const { size } = await Deno.stat(target);
  const name = guardDir.slice(guardDir.lastIndexOf("/") + 1);
  return { name, outFile: target, bytes: size, ms };
}

/** Builds every guard under `root` in turn. */
export async function buildAllGuards(root: URL = GUARDS_DIR): Promise<GuardBuild[]> {
  const results: GuardBuild[] = [];
  for (const dir of await findGuards(root)) results.push(await buildGuard(dir));
  return results;
}

if (import.meta.main) {
  const results = await buildAllGuards();
  for (const r of results) {
    console.log(
      `${r.name}: ${r.outFile} ${r.bytes} bytes (${(r.bytes / 1024).toFixed(1)} KiB) in ${
        r.ms.toFixed(0)
      } ms`,
    );
  }
  if (results.length === 0) console.log("no guards found (no asconfig.json under guards/)");
}
