/**
 * `deno task bench`: runs every benchmark module in turn. Each module exports `run()`, prints its own
 * table and writes its raw samples under `bench/results/`. Add new benchmarks to the list.
 *
 * @module
 */

/** Benchmark modules, relative to this file. */
const BENCHES: readonly string[] = [
  "./guard_bench.ts",
  "./gateway_bench.ts",
  "./model_bench.ts",
  "./fuel_bench.ts",
  "./hostile_bench.ts",
  "./coldstart_bench.ts",
  "./workers_bench.ts",
  "./auth_bench.ts",
];

for (const path of BENCHES) {
  const mod = await import(path) as { run: () => Promise<void> };
  console.log(`\n== ${path}`);
  await mod.run();
}
