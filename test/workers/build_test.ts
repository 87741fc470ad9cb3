/**
 * `deno task build` (scripts/build.ts): reproducible output, a bundle without the preparer or
 * runtime wasm compilation, prepared guards, and a Worker that explains a missing configuration.
 */
import { assert, assertEquals, assertGreater, assertStringIncludes } from "@std/assert";
import { Miniflare } from "miniflare";
import { BuildError, buildWorker, guardModuleSource } from "../../scripts/build.ts";
import { hostileBytes, hostileNames, MODULE_LEVEL_PREFIXES, REFUSALS } from "../helpers/hostile_corpus.ts";
import { inspectGuard, preparedRecord, sha256Hex } from "../../src/guard/prepare.ts";
import { miniflareOptions } from "./targets.ts";

/** Workers' gzipped size budget this project holds the bundle (without guards) to. */
const BUNDLE_GZIP_BUDGET = 256 * 1024;

async function filesOf(dir: string, sub = ""): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for await (const e of Deno.readDir(`${dir}/${sub}`)) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory) { for (const [k, v] of await filesOf(dir, rel)) out.set(k, v); }
    else out.set(rel, await Deno.readFile(`${dir}/${rel}`));
  }
  return out;
}

Deno.test({
  name: "build: same input, same bytes; no preparer or runtime compilation in the bundle",
  // esbuild's service process is stopped by buildWorker (esbuild.stop()).
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "workers_build_" });
    try {
      const a = await buildWorker({ outDir: new URL(`file://${dir}/a/`) });
      const b = await buildWorker({ outDir: new URL(`file://${dir}/b/`) });
      const fa = await filesOf(`${dir}/a`);
      const fb = await filesOf(`${dir}/b`);
      assertEquals([...fa.keys()].sort(), ["guards/demo.wasm", "worker.js", "worker_guards.js"]);
      assertEquals(fa, fb, "two builds of the same input are byte-identical");
      assertEquals([a.bundleBytes, a.bundleGzipBytes], [b.bundleBytes, b.bundleGzipBytes]);
      assertGreater(BUNDLE_GZIP_BUDGET, a.bundleGzipBytes);

      const bundle = new TextDecoder().decode(fa.get("worker.js"));
      assertStringIncludes(bundle, 'from"./worker_guards.js"');
      for (const bad of ["WebAssembly.compile", "WebAssembly.instantiate", "prepareGuard", "Deno.", dir]) {
        assertEquals(bundle.includes(bad), false, `bundle contains ${bad}`);
      }
      const demo = fa.get("guards/demo.wasm")!;
      const record = preparedRecord(demo);
      assertEquals(a.guards[0].record, record);
      assertEquals(
        new TextDecoder().decode(fa.get("worker_guards.js")),
        guardModuleSource([{ name: "demo", record }]),
      );
      assertEquals(record.preparedSha256, sha256Hex(demo), "the manifest records the bytes it wrote");
      const mark = inspectGuard(demo).prepared;
      assertEquals([mark?.fuel, mark?.maxMemoryPages, mark?.caps.maxTableEntries], [true, 512, 100_000]);
      assertEquals(mark?.sourceSha256, sha256Hex(await Deno.readFile("guards/demo/demo-guard.wasm")));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "built Worker without MCP_EDGE_GUARD_CONFIG answers 500 naming the secret",
  // Miniflare keeps internal timers and sockets briefly after dispose().
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "workers_noconfig_" });
    let mf: Miniflare | undefined;
    try {
      const r = await buildWorker({ outDir: new URL(`file://${dir}/`) });
      const opts = miniflareOptions(dir, r.guards.map((g) => g.file), undefined);
      mf = new Miniflare(opts);
      const res = await mf.dispatchFetch("http://localhost/health");
      const body = await res.json() as { error: string; message: string };
      assertEquals(res.status, 500);
      assertEquals(body.error, "config");
      assertStringIncludes(body.message, "MCP_EDGE_GUARD_CONFIG is not set");
    } finally {
      await mf?.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "build: every refused hostile fixture fails the build naming the guard and the reason",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "workers_build_hostile_" });
    try {
      const names = (await hostileNames(MODULE_LEVEL_PREFIXES)).filter((n) => REFUSALS[n] !== undefined);
      for (const name of names) {
        await Deno.writeFile(`${dir}/${name}.wasm`, await hostileBytes(name));
        const config = { guards: { [name]: { type: "wasm", path: `${name}.wasm` } } };
        let error: unknown = null;
        try {
          await buildWorker({
            config,
            configBase: new URL(`file://${dir}/`),
            outDir: new URL(`file://${dir}/out/`),
          });
        } catch (e) {
          error = e;
        }
        assert(error instanceof BuildError, `${name}: ${error}`);
        assertStringIncludes(error.message, `guard "${name}"`);
        assertStringIncludes(error.message, `${REFUSALS[name].kind}: `);
        assertStringIncludes(error.message, REFUSALS[name].text, name);
        assertEquals([...Deno.readDirSync(`${dir}/out/guards`)], [], `${name}: nothing written`);
      }
      // The capped fixtures build, and the manifest records what the build made of them.
      for (const name of ["mem_multi_grow", "table_grow_bomb"]) {
        await Deno.writeFile(`${dir}/${name}.wasm`, await hostileBytes(name));
      }
      const r = await buildWorker({
        config: {
          guards: {
            mem: { type: "wasm", path: "mem_multi_grow.wasm" },
            tables: { type: "wasm", path: "table_grow_bomb.wasm" },
          },
        },
        configBase: new URL(`file://${dir}/`),
        outDir: new URL(`file://${dir}/out/`),
      });
      assertEquals(r.guards.map((g) => g.name), ["mem", "tables"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
