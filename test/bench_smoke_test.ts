/**
 * Runs the quick mode of each benchmark module once (gateway, model, fuel, cold start) and checks the
 * structure of what it reports and writes. No timing assertions: speed is the benchmarks' business.
 *
 * @module
 */
import { assert, assertEquals, assertGreater } from "@std/assert";
import type { BenchReport } from "../bench/lib.ts";

const BENCHES = ["gateway", "model", "fuel", "coldstart"] as const;

for (const name of BENCHES) {
  Deno.test(`bench ${name}: quick mode prints tables and writes raw samples`, async () => {
    const dir = await Deno.makeTempDir({ prefix: `bench_${name}_` });
    try {
      const mod = await import(`../bench/${name}_bench.ts`) as {
        run: (o: { quick: boolean; resultsDir: URL; print: boolean }) => Promise<BenchReport>;
      };
      const report = await mod.run({ quick: true, resultsDir: new URL(`file://${dir}/`), print: false });
      assertEquals(report.name, name);
      assertEquals(report.quick, true);
      assertGreater(report.tables.length, 0);
      for (const t of report.tables) {
        assertGreater(t.rows.length, 0);
        for (const row of t.rows) assertEquals(row.length, t.header.length, `${t.title}: ${row.join(" | ")}`);
      }
      for (const tg of report.targets) {
        assert(typeof tg.value === "number" && Number.isFinite(tg.value), `${tg.name} has no measured value`);
        assertEquals(tg.met, tg.op === "<=" ? tg.value <= tg.limit : tg.value >= tg.limit);
      }
      const saved = JSON.parse(await Deno.readTextFile(report.resultsFile));
      assertEquals(saved.name, name);
      assertEquals(saved.quick, true);
      assertEquals(saved.tables.length, report.tables.length);
      assert(typeof saved.machine.runtime === "string" && saved.raw !== undefined);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
