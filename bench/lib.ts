/**
 * Shared helpers of the benchmark modules: statistics (percentiles, ratios), quick mode, targets,
 * table printing and the raw-sample JSON files under `bench/results/`.
 *
 * Every benchmark module exports `run(opts?: BenchOptions): Promise<BenchReport>`: it prints its
 * tables, writes its raw samples to `<resultsDir>/<name>.json` and returns the same report, so the
 * smoke test can check its structure without timing anything.
 *
 * @module
 */

/** Environment variable that switches every benchmark to its few-second quick mode. */
export const QUICK_ENV = "BENCH_QUICK";

/** Default directory of raw-sample JSON files (full runs: these are the committed results). */
export const DEFAULT_RESULTS_DIR: URL = new URL("./results/", import.meta.url);

/**
 * Where quick runs write: a few-second run's samples must never replace the committed full-run
 * results that BENCHMARKS.md cites, so they go to the git-ignored `.tmp/`.
 */
export const QUICK_RESULTS_DIR: URL = new URL("../.tmp/bench-quick/", import.meta.url);

/**
 * The directory a run writes its raw samples to: `opts.resultsDir`, else {@link QUICK_RESULTS_DIR}
 * in quick mode, else {@link DEFAULT_RESULTS_DIR}.
 *
 * @example
 * ```ts
 * const file = new URL("guard.json", resultsDirFor({}));
 * ```
 */
export function resultsDirFor(opts: BenchOptions = {}): URL {
  return opts.resultsDir ?? (isQuick(opts) ? QUICK_RESULTS_DIR : DEFAULT_RESULTS_DIR);
}

/** Options every benchmark's `run` accepts. */
export interface BenchOptions {
  /** Few-second mode (default: `BENCH_QUICK=1` in the environment). */
  quick?: boolean;
  /** Where the raw-sample JSON goes (default `bench/results/`, `.tmp/bench-quick/` in quick mode). */
  resultsDir?: URL;
  /** Print tables to stdout (default true). */
  print?: boolean;
}

/** A performance target and whether this run met it. */
export interface Target {
  name: string;
  value: number;
  op: "<=" | ">=";
  limit: number;
  unit: string;
  met: boolean;
}

/** A printed table: a title, a header row and string cells. */
export interface Table {
  title: string;
  header: string[];
  rows: string[][];
}

/** What a benchmark's `run` returns. */
export interface BenchReport {
  name: string;
  quick: boolean;
  tables: Table[];
  targets: Target[];
  /** The raw-sample JSON file written. */
  resultsFile: URL;
}

/** Percentile summary of a sample set, in the samples' unit. */
export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** True when `opts.quick` is set, else when `BENCH_QUICK` is `1`/`true` in the environment. */
export function isQuick(opts: BenchOptions = {}): boolean {
  if (opts.quick !== undefined) return opts.quick;
  const v = Deno.env.get(QUICK_ENV);
  return v === "1" || v === "true";
}

/**
 * Nearest-rank percentile (`p` in 0..100) of unsorted samples; NaN for no samples.
 *
 * @example
 * ```ts
 * percentile([5, 1, 3, 2, 4], 50); // 3
 * ```
 */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** The median (nearest rank) of unsorted samples. */
export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

/**
 * min / p50 / p90 / p99 / max / mean of unsorted samples.
 *
 * @example
 * ```ts
 * const s = summarize([1, 2, 3]); // { n: 3, min: 1, p50: 2, ... }
 * ```
 */
export function summarize(xs: readonly number[]): Summary {
  const n = xs.length;
  return {
    n,
    // reduce, not Math.min(...xs): a spread of 10⁵+ samples overflows the call stack.
    min: n ? xs.reduce((a, b) => (b < a ? b : a)) : NaN,
    p50: percentile(xs, 50),
    p90: percentile(xs, 90),
    p99: percentile(xs, 99),
    max: n ? xs.reduce((a, b) => (b > a ? b : a)) : NaN,
    mean: n ? xs.reduce((a, b) => a + b, 0) / n : NaN,
  };
}

/** `a / b`, NaN when `b` is 0 or either is not finite. */
export function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN;
}

/**
 * Builds a target record: `value op limit`.
 *
 * @example
 * ```ts
 * target("p50 ratio gateway/direct, c=1", 1.1, "<=", 1.25, "x"); // met: true
 * ```
 */
export function target(name: string, value: number, op: "<=" | ">=", limit: number, unit = ""): Target {
  const met = op === "<=" ? value <= limit : value >= limit;
  return { name, value, op, limit, unit, met: Number.isFinite(value) && met };
}

/** Formats a number with `digits` decimals ("-" for NaN). */
export function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "-";
}

/** Renders a table as aligned text (numbers right-aligned, text left-aligned). */
export function renderTable(t: Table): string {
  const all = [t.header, ...t.rows];
  const widths = t.header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const numeric = (s: string) => /^[-+]?[\d.,]+\s*(%|x|ms|µs|MiB|KiB|B|\/s)?$/.test(s);
  const line = (r: string[]) =>
    r.map((c, i) => (numeric(c) && i > 0 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ")
      .trimEnd();
  return [
    `-- ${t.title}`,
    line(t.header),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...t.rows.map(line),
  ].join("\n");
}

/** Renders targets as one table. */
export function targetsTable(targets: readonly Target[]): Table {
  return {
    title: "targets",
    header: ["target", "measured", "limit", "met"],
    rows: targets.map((t) => [
      t.name,
      `${fmt(t.value)}${t.unit}`,
      `${t.op} ${t.limit}${t.unit}`,
      t.met ? "yes" : "NO",
    ]),
  };
}

/** One line about the machine and runtime, for tables and result files. */
export function machineNote(): Record<string, unknown> {
  let loadavg: number[] | null = null;
  try {
    loadavg = Deno.loadavg();
  } catch {
    // not available on every OS
  }
  return {
    runtime: `deno ${Deno.version.deno}, v8 ${Deno.version.v8}`,
    os: `${Deno.build.os} ${Deno.build.arch}`,
    cpus: navigator.hardwareConcurrency,
    loadavg,
    totalMemMiB: Math.round(Deno.systemMemoryInfo().total / 1048576),
  };
}

/**
 * Prints the tables (unless `opts.print === false`), writes `{name, date, machine, quick, tables,
 * targets, raw}` to `<resultsDir>/<name>.json` and returns the report.
 *
 * @example
 * ```ts
 * return await finish("model", opts, [table], [target(...)], { samples });
 * ```
 */
export async function finish(
  name: string,
  opts: BenchOptions,
  tables: Table[],
  targets: Target[],
  raw: unknown,
): Promise<BenchReport> {
  const quick = isQuick(opts);
  const all = targets.length ? [...tables, targetsTable(targets)] : tables;
  if (opts.print !== false) {
    console.log(`\n${name}${quick ? " (quick mode)" : ""}: ${JSON.stringify(machineNote())}`);
    for (const t of all) console.log(`\n${renderTable(t)}`);
  }
  const dir = resultsDirFor(opts);
  await Deno.mkdir(dir, { recursive: true });
  const resultsFile = new URL(`${name}.json`, dir);
  await Deno.writeTextFile(
    resultsFile,
    JSON.stringify(
      { name, date: new Date().toISOString(), machine: machineNote(), quick, tables: all, targets, raw },
      capSamples,
    ),
  );
  return { name, quick, tables: all, targets, resultsFile };
}

/**
 * Largest sample array kept whole in a results file. A throughput run collects 10⁵-10⁶ latencies;
 * longer arrays are kept as an evenly strided subset (`{count, stride, samples}`), which preserves the
 * distribution while keeping results files small enough to commit.
 */
export const MAX_RAW_SAMPLES = 10_000;

function capSamples(_key: string, value: unknown): unknown {
  if (!Array.isArray(value) || value.length <= MAX_RAW_SAMPLES || typeof value[0] !== "number") return value;
  const stride = Math.ceil(value.length / MAX_RAW_SAMPLES);
  return { count: value.length, stride, samples: value.filter((_, i) => i % stride === 0) };
}

/** A FIFO mutex: `run(fn)` waits for every earlier holder, then runs `fn` alone. */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();
  /** Runs `fn` when every earlier `run` has settled. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn, fn);
    this.#tail = next.catch(() => {});
    return next;
  }
}

/** What {@link closedLoop} measured. Failed calls are counted, not timed. */
export interface LoopResult {
  /** Latency of each successful call, ms. */
  latencies: number[];
  elapsedMs: number;
  /** Successful calls. */
  ops: number;
  errors: number;
  firstError?: string;
}

/**
 * Runs `concurrency` workers; each repeats `fn(worker)` until `durationMs` passed (or `maxOps` in
 * total were started), recording each call's latency in ms. Resolves when every worker stopped.
 *
 * @example
 * ```ts
 * const r = await closedLoop(8, 2000, () => fetch(url).then((res) => res.body?.cancel()));
 * const perSecond = r.ops / (r.elapsedMs / 1000);
 * ```
 */
export async function closedLoop(
  concurrency: number,
  durationMs: number,
  fn: (worker: number) => Promise<void>,
  maxOps = Infinity,
): Promise<LoopResult> {
  const latencies: number[] = [];
  let started = 0, errors = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  const end = t0 + durationMs;
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    while (performance.now() < end && started < maxOps) {
      started++;
      const s = performance.now();
      try {
        await fn(w);
        latencies.push(performance.now() - s);
      } catch (e) {
        errors++;
        firstError ??= e instanceof Error ? e.message : String(e);
      }
    }
  }));
  return { latencies, elapsedMs: performance.now() - t0, ops: latencies.length, errors, firstError };
}

/**
 * The `--v8-flags=…` argument of `deno task start` (deno.json), so that a benchmark's server child
 * runs under the same V8 settings as the gateway does in production; null when the task has none.
 */
export async function startTaskV8Flags(): Promise<string | null> {
  const deno = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  return (deno.tasks.start as string).split(" ").find((a) => a.startsWith("--v8-flags=")) ?? null;
}
