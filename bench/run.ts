/**
 * `deno task bench [NAME...]`: runs every benchmark module in turn, or only the named ones
 * (`deno task bench fuel gateway`). Each module exports `run()`, prints its own table and writes its
 * raw samples under `bench/results/`; with `BENCH_QUICK=1` the few-second runs write under
 * `.tmp/bench-quick/` instead, so the committed results stay those of full runs. Add new benchmarks
 * to the list.
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
  "./channels_bench.ts",
];

const names = BENCHES.map((p) => p.replace(/^\.\/(\w+)_bench\.ts$/, "$1"));
const unknown = Deno.args.filter((a) => !names.includes(a));
if (unknown.length > 0) {
  console.error(`bench: unknown benchmark ${unknown.join(", ")}; known: ${names.join(", ")}`);
  Deno.exit(2);
}
for (const path of BENCHES.filter((_, i) => Deno.args.length === 0 || Deno.args.includes(names[i]))) {
  const mod = await import(path) as { run: () => Promise<void> };
  console.log(`\n== ${path}`);
  await mod.run();
}
