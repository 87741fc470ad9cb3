/**
 * `deno task build [--config FILE] [--out DIR]`: the Cloudflare Workers build.
 * Without `--config`, the file named by `MCP_EDGE_GUARD_BUILD_CONFIG` is used if set (so that
 * `deno task deploy:workers` can build a chosen config), else the demo configuration.
 *
 * 1. Reads the gateway configuration (default: the embedded demo's shape, i.e. the guard
 *    `guards/demo/demo-guard.wasm`) and prepares every `wasm` guard FROM ITS ORIGINAL with
 *    src/guard/prepare.ts (validation, ABI, caps from the config's `limits`, fuel injection). An
 *    input that already carries our mark, fuel import or reserved exports is refused, never
 *    copied. Each lands in `<out>/guards/<name>.wasm`.
 * 2. Generates `<out>/worker_guards.js`, the manifest: one `import source` per guard (a compiled
 *    `WebAssembly.Module` in workerd, no runtime compilation), `export const guards = {name: module}`
 *    and `export const records = {name: {mark, preparedSha256}}`, the record of what this build
 *    prepared. The Worker accepts a bundled module only when its mark equals its record's.
 *
 * Why the record proves the build made the module: the build is the only writer of `dist/guards/`
 * and of the manifest, and it never passes an input through (step 1), so the only modules carrying
 * a mark equal to a record are the ones it prepared; the mark binds the source's SHA-256 and every
 * cap. Someone who can only supply a `.wasm` gets it validated, capped and metered like any other;
 * a forged, stale or foreign mark makes the build fail. They cannot make a bundled module skip
 * preparation: that needs write access to `dist/` after the build (or to the build itself).
 * 3. Bundles src/worker.ts (Hono + the gateway) with esbuild into `<out>/worker.js`; the guard module
 *    and the `.wasm` files stay external, so wrangler uploads them as separate modules.
 *
 * The output depends only on the inputs (sorted guard names, no timestamps, paths relative to the
 * repository), so the same sources and config give the same bytes. The Worker itself only compares
 * each module's preparation mark (`WebAssembly.Module.customSections`) with its record in the
 * manifest and checks its caps against the limits; the build fails if the bundle contains the
 * wasm preparer or a runtime wasm compilation call.
 *
 * @module
 */
import * as esbuild from "esbuild";
import { parseArgs } from "node:util";
import { GuardError, type GuardLimits, resolveLimits } from "../src/guard/limits.ts";
import { type PreparedRecord, preparedRecord, prepareGuard } from "../src/guard/prepare.ts";
import { pickCaps } from "../src/guard/wasm/caps.ts";
import { demoConfig } from "../src/main.ts";

/** Repository root: esbuild runs from here so that the bundle holds no machine-specific paths. */
const REPO_ROOT = new URL("../", import.meta.url);
const WORKER_ENTRY = "src/worker.ts";
/** Specifier of the generated guard module as src/worker.ts imports it (kept external). */
const GUARDS_SPECIFIER = "./worker_guards.js";
/** Guard names become file names in the bundle. */
const GUARD_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Oldest JS syntax workerd must understand; it tracks current V8. */
const TARGET = "es2024";
/**
 * Text that must not appear in the bundle: runtime wasm compilation (forbidden in Workers) and the
 * preparer's entry points (build-time only). `WebAssembly.Instance` is fine: it takes a Module.
 */
const FORBIDDEN_IN_BUNDLE: readonly RegExp[] = [
  /WebAssembly\.(compile|compileStreaming|instantiate|instantiateStreaming)\b/,
  /new WebAssembly\.Module\(/,
  /\bprepareGuard\b/,
  /\brewriteModule\b/,
];

/** A configuration problem found by the build; names the field. */
export class BuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BuildError";
  }
}

/** Options of {@link buildWorker}. */
export interface BuildOptions {
  /** The configuration value (JSON-decoded). Default: the demo configuration. */
  config?: unknown;
  /** Where relative guard paths in `config` resolve (the config file's URL). Default: the repository. */
  configBase?: URL;
  /** Output directory (created). Default: `dist/` in the repository. */
  outDir?: URL;
}

/** What the build wrote. */
export interface BuildResult {
  outDir: URL;
  /** Bundle bytes (`worker.js`, without guards). */
  bundleBytes: number;
  /** The same, gzip-compressed (what Workers' size limit counts). */
  bundleGzipBytes: number;
  guards: { name: string; file: string; bytesIn: number; bytesOut: number; record: PreparedRecord }[];
}

/** Gzip-compressed size of `bytes`. */
export async function gzipSize(bytes: Uint8Array<ArrayBuffer>): Promise<number> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return (await new Response(stream).arrayBuffer()).byteLength;
}

/** The `wasm` guards of a raw configuration, sorted by name, with their source URL. */
function wasmGuards(config: unknown, base: URL): { name: string; url: URL }[] {
  const guards = (config as { guards?: unknown })?.guards ?? {};
  if (typeof guards !== "object" || guards === null || Array.isArray(guards)) {
    throw new BuildError("config guards: must be an object");
  }
  const out: { name: string; url: URL }[] = [];
  for (const [name, g] of Object.entries(guards as Record<string, { type?: unknown; path?: unknown }>)) {
    if (g?.type !== "wasm") continue;
    if (!GUARD_NAME.test(name)) {
      throw new BuildError(`config guards.${name}: guard names must match ${GUARD_NAME} to be bundled`);
    }
    if (typeof g.path !== "string" || !/\.wasm$/i.test(g.path)) {
      throw new BuildError(`config guards.${name}.path: must name a .wasm file`);
    }
    out.push({ name, url: new URL(g.path, base) });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The generated manifest: `import source` per guard, the name → Module map and the name → record map
 * of what this build prepared (see the module documentation).
 */
export function guardModuleSource(guards: readonly { name: string; record: PreparedRecord }[]): string {
  const lines = ["// Generated by scripts/build.ts: prepared guards as compiled WebAssembly.Module imports."];
  guards.forEach((g, i) => lines.push(`import source g${i} from "./guards/${g.name}.wasm";`));
  lines.push(`export const guards = Object.freeze({`);
  guards.forEach((g, i) => lines.push(`  ${JSON.stringify(g.name)}: g${i},`));
  lines.push("});", `export const records = Object.freeze({`);
  for (const g of guards) {
    const record = { mark: g.record.mark, preparedSha256: g.record.preparedSha256 };
    lines.push(`  ${JSON.stringify(g.name)}: Object.freeze(${JSON.stringify(record)}),`);
  }
  lines.push("});", "");
  return lines.join("\n");
}

/**
 * Runs the build.
 *
 * @example
 * ```ts
 * const r = await buildWorker({ outDir: new URL("./dist/", import.meta.url) });
 * console.log(r.bundleGzipBytes);
 * ```
 * @throws {BuildError} for a bad guard entry, a guard the preparer refuses (invalid, ABI, caps,
 *   already prepared or forged mark; the message names the guard and the preparer's reason), or a
 *   bundle that would compile wasm at runtime.
 */
export async function buildWorker(opts: BuildOptions = {}): Promise<BuildResult> {
  const outDir = opts.outDir ?? new URL("dist/", REPO_ROOT);
  const config = opts.config ?? demoConfig("http://127.0.0.1:8080/mcp", 8080, "127.0.0.1");
  const base = opts.configBase ?? REPO_ROOT;
  const rawLimits = (config as { limits?: Partial<GuardLimits> })?.limits ?? {};
  const caps = pickCaps(resolveLimits(pickDefined(rawLimits)));

  await Deno.remove(new URL("guards/", outDir), { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  await Deno.mkdir(new URL("guards/", outDir), { recursive: true });

  const guards: BuildResult["guards"] = [];
  for (const g of wasmGuards(config, base)) {
    const source = await Deno.readFile(g.url).catch((e) => {
      throw new BuildError(`config guards.${g.name}.path: cannot read ${g.url.href}: ${e.message}`);
    });
    let prepared: Uint8Array;
    try {
      prepared = prepareGuard(source, { caps, fuel: true }).bytes;
    } catch (e) {
      if (!(e instanceof GuardError)) throw e;
      throw new BuildError(`guard "${g.name}" (${g.url.href}): ${e.kind}: ${e.message}`);
    }
    const file = `guards/${g.name}.wasm`;
    await Deno.writeFile(new URL(file, outDir), prepared);
    guards.push({
      name: g.name,
      file,
      bytesIn: source.length,
      bytesOut: prepared.length,
      record: preparedRecord(prepared),
    });
  }
  await Deno.writeTextFile(new URL(GUARDS_SPECIFIER, outDir), guardModuleSource(guards));

  const outfile = new URL("worker.js", outDir);
  try {
    await esbuild.build({
      absWorkingDir: REPO_ROOT.pathname,
      entryPoints: [WORKER_ENTRY],
      bundle: true,
      format: "esm",
      platform: "neutral",
      target: TARGET,
      conditions: ["workerd", "worker", "browser"],
      mainFields: ["module", "main"],
      external: ["*.wasm", GUARDS_SPECIFIER],
      outfile: outfile.pathname,
      minifySyntax: true,
      minifyWhitespace: true,
      legalComments: "none",
      charset: "utf8",
      logLevel: "error",
    });
  } finally {
    await esbuild.stop();
  }
  const bundle = await Deno.readFile(outfile);
  const text = new TextDecoder().decode(bundle);
  for (const re of FORBIDDEN_IN_BUNDLE) {
    const m = re.exec(text);
    if (m) {
      throw new BuildError(
        `the Worker bundle contains "${m[0]}": runtime wasm compilation or the preparer must stay out of it`,
      );
    }
  }
  return { outDir, bundleBytes: bundle.length, bundleGzipBytes: await gzipSize(bundle), guards };
}

/** The numeric limits of a raw config block (the config parser reports anything else). */
function pickDefined(raw: Partial<GuardLimits>): Partial<GuardLimits> {
  return Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
}

function kib(n: number): string {
  return `${(n / 1024).toFixed(1)} KiB`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { config: { type: "string" }, out: { type: "string" } },
    strict: true,
  });
  const cwd = new URL(`file://${Deno.cwd()}/`);
  let config: unknown;
  let configBase: URL | undefined;
  const configPath = values.config ?? Deno.env.get("MCP_EDGE_GUARD_BUILD_CONFIG");
  if (configPath) {
    configBase = new URL(configPath, cwd);
    config = JSON.parse(await Deno.readTextFile(configBase));
  }
  const outDir = values.out === undefined ? undefined : new URL(values.out.replace(/\/?$/, "/"), cwd);
  try {
    const r = await buildWorker({ config, configBase, outDir });
    console.log(`built ${r.outDir.pathname}`);
    console.log(`  worker.js  ${kib(r.bundleBytes)} raw, ${kib(r.bundleGzipBytes)} gzipped (without guards)`);
    for (const g of r.guards) {
      console.log(`  ${g.file}  ${kib(g.bytesIn)} -> ${kib(g.bytesOut)} prepared`);
    }
  } catch (e) {
    console.error(`build failed: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
