/**
 * The guard host in real workerd (via Miniflare): a Worker bundled with esbuild imports PREPARED
 * guards as compiled modules (`import source`), so no runtime compilation happens in the Worker.
 * Checks JSPI `call_backend`, the fuel budget with a concurrent session, and the memory cap.
 */
import { assertEquals, assertStringIncludes } from "@std/assert";
import * as esbuild from "esbuild";
import { convertV4MiniflareOptions, Miniflare } from "miniflare";
import wabtInit from "wabt";
import { type PreparedRecord, preparedRecord, prepareGuard } from "../../src/guard/prepare.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);
const WORKER = new URL("./guard_worker.ts", import.meta.url);
/**
 * Prepared guards as compiled modules (`import source`, the one `.wasm` import form that works in
 * workerd and Deno) and the record of each, as `deno task build` writes its manifest. Written next
 * to the bundle (the `.wasm` files exist only there); `guard_modules.d.ts` types it.
 */
function guardModulesJs(guards: { name: string; record: PreparedRecord }[]): string {
  const lines = guards.map((g, i) => `import source m${i} from "./${g.name}.wasm";`);
  lines.push(`export const modules = { ${guards.map((g, i) => `${JSON.stringify(g.name)}: m${i}`).join(", ")} };`);
  lines.push(`export const records = ${JSON.stringify(Object.fromEntries(guards.map((g) => [g.name, g.record])))};`);
  return lines.join("\n") + "\n";
}

async function preparedGuard(name: string, maxMemoryPages = 512): Promise<Uint8Array> {
  const mod = wabt.parseWat(`${name}.wat`, await Deno.readTextFile(new URL(`${name}.wat`, FIXTURES)), {
    bulk_memory: true,
  });
  try {
    return prepareGuard(new Uint8Array(mod.toBinary({}).buffer), { maxMemoryPages }).bytes;
  } finally {
    mod.destroy();
  }
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
      const guards: { name: string; bytes: Uint8Array }[] = [
        { name: "backend", bytes: await preparedGuard("backend") },
        { name: "spin", bytes: await preparedGuard("spin") },
        { name: "grow", bytes: await preparedGuard("grow_bomb", 80) },
      ];
      for (const g of guards) await Deno.writeFile(`${dir}/${g.name}.wasm`, g.bytes);
      await Deno.writeTextFile(
        `${dir}/guard_modules.js`,
        guardModulesJs(guards.map((g) => ({ name: g.name, record: preparedRecord(g.bytes) }))),
      );
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

      mf = new Miniflare(convertV4MiniflareOptions({
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

      const backend = await get(mf, "/backend");
      assertEquals(backend.output, { tool: "echo", args: { q: 1 } });
      assertEquals(backend.usage.backendCalls, 1);

      const spin = await get(mf, "/spin");
      assertEquals(spin.spun.kind, "fuel");
      assertEquals([spin.spun.limit, spin.spun.value], ["fuel", 20_000_000]);
      assertEquals(spin.other, { value: "ok" });

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
