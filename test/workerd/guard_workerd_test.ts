/**
 * The guard host in real workerd (via Miniflare): a Worker bundled with esbuild imports PREPARED
 * guards as compiled modules (`import source`) with the record of each (as `deno task build` writes
 * its manifest), so no runtime compilation happens in the Worker. Checks JSPI `call_backend`, the
 * fuel budget with a concurrent session, the memory cap, the build record, and the hostile corpus:
 * prepared at build time (refusals asserted there, since workerd cannot prepare) and run in workerd.
 */
import { assert, assertEquals, assertLess, assertStringIncludes } from "@std/assert";
import * as esbuild from "esbuild";
import { convertV4MiniflareOptions, Miniflare } from "miniflare";
import wabtInit from "wabt";
import { GuardError } from "../../src/guard/limits.ts";
import { type PreparedRecord, preparedRecord, prepareGuard } from "../../src/guard/prepare.ts";
import { hostileBytes, hostileNames, REFUSALS } from "../helpers/hostile_corpus.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);
const WORKER = new URL("./guard_worker.ts", import.meta.url);
/** What "keeps answering" means while a hostile guard runs in the same isolate. */
const ANSWER_WITHIN_MS = 1_000;

/** One bundled module: prepared bytes and the record of them (none: the manifest has no entry). */
interface Bundled {
  name: string;
  bytes: Uint8Array;
  record?: PreparedRecord;
}

/**
 * Prepared guards as compiled modules (`import source`, the one `.wasm` import form that works in
 * workerd and Deno) and the record of each, as `deno task build` writes its manifest. Written next
 * to the bundle (the `.wasm` files exist only there); `guard_modules.d.ts` types it.
 */
function guardModulesJs(guards: Bundled[]): string {
  const lines = guards.map((g, i) => `import source m${i} from "./${g.name}.wasm";`);
  lines.push(
    `export const modules = { ${guards.map((g, i) => `${JSON.stringify(g.name)}: m${i}`).join(", ")} };`,
  );
  const records = guards.filter((g) => g.record !== undefined).map((g) => [g.name, g.record]);
  lines.push(`export const records = ${JSON.stringify(Object.fromEntries(records))};`);
  return lines.join("\n") + "\n";
}

async function preparedGuard(name: string, maxMemoryPages = 512): Promise<Bundled> {
  const mod = wabt.parseWat(`${name}.wat`, await Deno.readTextFile(new URL(`${name}.wat`, FIXTURES)), {
    bulk_memory: true,
  });
  try {
    const bytes = prepareGuard(new Uint8Array(mod.toBinary({}).buffer), { maxMemoryPages }).bytes;
    return { name, bytes, record: preparedRecord(bytes) };
  } finally {
    mod.destroy();
  }
}

/** Bundles the guard worker with `guards` into `dir` and starts it in workerd. */
async function startGuardWorker(dir: string, guards: Bundled[]): Promise<Miniflare> {
  for (const g of guards) await Deno.writeFile(`${dir}/${g.name}.wasm`, g.bytes);
  await Deno.writeTextFile(`${dir}/guard_modules.js`, guardModulesJs(guards));
  try {
    await esbuild.build({
      entryPoints: [WORKER.pathname],
      bundle: true,
      format: "esm",
      platform: "neutral",
      target: "esnext",
      external: ["*.wasm", "./guard_modules.js"],
      outfile: `${dir}/worker.js`,
      logLevel: "error",
    });
  } finally {
    await esbuild.stop();
  }
  const bundle = await Deno.readTextFile(`${dir}/worker.js`);
  assertStringIncludes(bundle, 'from "./guard_modules.js"');
  assertEquals(/\bDeno\./.test(bundle), false, "no Deno APIs in the bundled host");
  const mf = new Miniflare(convertV4MiniflareOptions({
    cf: false,
    modulesRoot: dir,
    modules: [
      { type: "ESModule", path: `${dir}/worker.js` },
      { type: "ESModule", path: `${dir}/guard_modules.js` },
      ...guards.map((g) => ({ type: "CompiledWasm", path: `${dir}/${g.name}.wasm` })),
    ],
    compatibilityDate: "2026-11-01",
    // deno-lint-ignore no-explicit-any
  } as any));
  await mf.ready;
  return mf;
}

// deno-lint-ignore no-explicit-any
async function get(mf: Miniflare, path: string): Promise<any> {
  const res = await mf.dispatchFetch(`http://localhost${path}`);
  const text = await res.text();
  assertEquals(res.status, 200, text);
  return JSON.parse(text);
}

Deno.test({
  name: "guard host in workerd: JSPI call_backend, fuel abort, memory cap",
  // esbuild's service process and Miniflare's workerd are stopped below; Miniflare keeps internal
  // timers/sockets briefly after dispose(), which Deno's sanitizers would report.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "guard_workerd_" });
    let mf: Miniflare | undefined;
    try {
      const spin = await preparedGuard("spin");
      mf = await startGuardWorker(dir, [
        await preparedGuard("backend"),
        spin,
        { ...await preparedGuard("grow_bomb", 80), name: "grow" },
      ]);

      const backend = await get(mf, "/backend");
      assertEquals(backend.output, { tool: "echo", args: { q: 1 } });
      assertEquals(backend.usage.backendCalls, 1);

      const spun = await get(mf, "/spin");
      assertEquals(spun.spun.kind, "fuel");
      assertEquals([spun.spun.limit, spun.spun.value], ["fuel", 20_000_000]);
      assertEquals(spun.other, { value: "ok" });

      const grow = await get(mf, "/grow");
      assertEquals(grow.memoryPages, 80);
      assertEquals(grow.smallerCap.kind, "abi");
      assertStringIncludes(grow.smallerCap.message, "maxMemoryPages=80, above limits.maxMemoryPages=64");
      assertEquals(grow.smallerCap.limit, "maxMemoryPages");
      // A bundled module with another module's record, or none, is refused.
      assertStringIncludes(grow.foreignRecord.message, "differs from the one the build recorded");
      assertStringIncludes(grow.noRecord.message, "trusted only with the record");
    } finally {
      await mf?.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "hostile corpus in workerd: refused at build time, or bounded in the isolate while it keeps answering",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "guard_workerd_corpus_" });
    let mf: Miniflare | undefined;
    try {
      // Build time (Deno): every fixture is prepared from its original, or refused.
      const bundled: Bundled[] = [await preparedGuard("backend")];
      const refused: string[] = [];
      for (const name of await hostileNames()) {
        const source = await hostileBytes(name);
        try {
          const bytes = prepareGuard(source).bytes;
          assertEquals(REFUSALS[name], undefined, `${name} must be refused at build time`);
          bundled.push({ name, bytes, record: preparedRecord(bytes) });
        } catch (e) {
          assert(e instanceof GuardError, `${name}: ${e}`);
          if (REFUSALS[name]) assertStringIncludes(e.message, REFUSALS[name].text, name);
          refused.push(name);
        }
      }
      // A forged module slipped into the bundle: with no record, and with a record vouching for its mark.
      const forged = await hostileBytes("mark_forged");
      const forgedMark = new TextDecoder().decode(
        WebAssembly.Module.customSections(new WebAssembly.Module(forged), "mcp_edge_guard.prepared")[0],
      );
      bundled.push({ name: "forged_unrecorded", bytes: forged });
      bundled.push({
        name: "forged_recorded",
        bytes: forged,
        record: { mark: forgedMark, preparedSha256: "" },
      });
      mf = await startGuardWorker(dir, bundled);

      for (const name of ["forged_unrecorded", "forged_recorded"]) {
        const r = await get(mf, `/corpus/${name}`);
        assertEquals(r.loadError?.kind, "abi", `${name}: ${JSON.stringify(r)}`);
      }
      const lines: string[] = [];
      let worst = 0;
      for (
        const g of bundled.filter((b) => b.record && b.name !== "backend" && !b.name.startsWith("forged"))
      ) {
        const t0 = performance.now();
        const hostile = get(mf!, `/corpus/${g.name}`);
        // While it runs in the same isolate, another guarded request is answered.
        const t1 = performance.now();
        const other = await get(mf!, "/backend");
        const otherMs = performance.now() - t1;
        const r = await hostile;
        const ms = performance.now() - t0;
        worst = Math.max(worst, otherMs);
        assertEquals(other.output, { tool: "echo", args: { q: 1 } }, `${g.name}: the other request`);
        assertLess(otherMs, ANSWER_WITHIN_MS, `${g.name}: the other request answered within 1 s`);
        assertEquals(r.loadError, undefined, `${g.name}: ${JSON.stringify(r.loadError)}`);
        const outcome = r.error ? `${r.error.kind}: ${String(r.error.message).slice(0, 70)}` : "answered";
        if (r.error) assert(typeof r.error.kind === "string" && r.error.kind !== "", g.name);
        // The next request on the same isolate succeeds.
        assertEquals(
          (await get(mf!, "/backend")).output,
          { tool: "echo", args: { q: 1 } },
          `${g.name}: next`,
        );
        lines.push(`${g.name}: ${outcome} in ${Math.round(ms)} ms; other request ${otherMs.toFixed(0)} ms`);
      }
      console.log(lines.join("\n"));
      console.log(
        `workerd corpus: ${refused.length} refused at build time, ${lines.length} ran; worst other-request ` +
          `answer while a hostile guard ran: ${worst.toFixed(0)} ms`,
      );
      assert(refused.length >= Object.keys(REFUSALS).length);
    } finally {
      await mf?.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
