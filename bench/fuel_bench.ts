/**
 * Fuel metering benchmark, side by side in one process on one compute-heavy guard
 * (`test/fixtures/wat/bench/sort_guard.wat`: hash the input, fill an array from a PRNG, Shell sort it,
 * hash the result, all in `label_resource`).
 *
 * 1. Guard CPU, metered vs unmetered (same module prepared with and without fuel), runs interleaved
 *    round-robin so machine drift hits every variant alike (target: overhead ≤ 10 % at the default
 *    `fuelSlice`). CPU is measured with the periodic yield switched off (`yieldIntervalMs` huge), so
 *    it is the cost of the counters and the host checks alone; the default configuration (yield every
 *    `yieldIntervalMs`) is measured too, as wall time, because every yield waits for a macrotask.
 * 2. A `fuelSlice` sweep: check overhead of each slice size against the abort latency it gives, i.e.
 *    the time from the moment the abort was due (a timer armed before the call) to the rejection of a
 *    guard spinning in a tight loop. On one thread the abort can only be seen when the guard yields,
 *    so this includes the wait for the next fuel check; `abort()` → rejection is reported too.
 *
 * ```sh
 * deno run -A bench/fuel_bench.ts
 * BENCH_QUICK=1 deno run -A bench/fuel_bench.ts
 * ```
 * Raw samples: bench/results/fuel.json.
 *
 * @module
 */
import wabtInit from "wabt";
import type { GuardContext } from "../src/difc/guard.ts";
import { WasmGuard } from "../src/guard/host.ts";
import { DEFAULT_LIMITS, GuardError } from "../src/guard/limits.ts";
import { prepareGuard } from "../src/guard/prepare.ts";
import {
  type BenchOptions,
  type BenchReport,
  finish,
  fmt,
  isQuick,
  median,
  ratio,
  summarize,
  target,
} from "./lib.ts";

const FIXTURE = new URL("../test/fixtures/wat/bench/sort_guard.wat", import.meta.url);
/** Fuel overhead target at the default slice. */
const OVERHEAD_TARGET_PCT = 10;
/** Slices swept (fuel units between two host checks); the default is included. */
const SLICES = [10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];
/**
 * The spinning guard's signal is aborted after a uniformly random delay in this range, so the abort
 * lands at a random point of a slice (a fixed delay would always hit the same phase).
 */
const ABORT_DELAY_MIN_MS = 20;
const ABORT_DELAY_SPREAD_MS = 100;
/** `yieldIntervalMs` that never elapses during a run: measures metering CPU without yields. */
const NO_YIELD_MS = 1_000_000_000;

interface Plan {
  /** Input length: the guard sorts 1024 x this many u32 values. */
  inputBytes: number;
  /** Interleaved runs per variant. */
  runs: number;
  abortRuns: number;
}
const FULL: Plan = { inputBytes: 256, runs: 15, abortRuns: 10 };
const QUICK: Plan = { inputBytes: 32, runs: 3, abortRuns: 2 };

const ctx = (signal: AbortSignal = new AbortController().signal): GuardContext => ({
  signal,
  backend: () => Promise.reject(new Error("no backend in the fuel benchmark")),
  log: () => {},
});

async function sortGuardBytes(): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const m = wabt.parseWat("sort_guard.wat", await Deno.readTextFile(FIXTURE));
  try {
    return new Uint8Array(m.toBinary({}).buffer);
  } finally {
    m.destroy();
  }
}

/** One label_resource on a fresh session: guard time in ms (the session's own usage.ms) and fuel. */
async function computeOnce(
  guard: WasmGuard,
  input: string,
): Promise<{ ms: number; fuel: number; out: string }> {
  const s = guard.open(ctx());
  try {
    const out = await s.labelResource(input);
    const u = s.usage();
    return { ms: u.ms, fuel: u.fuel, out };
  } finally {
    s.close();
  }
}

/** Spins the guard, aborts its signal after a while; ms from due time and from abort() to rejection. */
async function abortLatency(guard: WasmGuard): Promise<{ fromDue: number; fromAbort: number }> {
  const ac = new AbortController();
  let abortedAt = 0;
  // The timer is armed before the guard starts; it fires at the guard's next yield.
  const delay = ABORT_DELAY_MIN_MS + Math.random() * ABORT_DELAY_SPREAD_MS;
  const dueAt = performance.now() + delay;
  setTimeout(() => {
    abortedAt = performance.now();
    ac.abort(new Error("benchmark abort"));
  }, delay);
  const s = guard.open(ctx(ac.signal));
  const rejected = s.labelResponse("{}").then(
    () => {
      throw new Error("the spinning guard returned");
    },
    (e) => {
      if (!(e instanceof GuardError) || e.kind !== "aborted") throw e;
      return performance.now();
    },
  );
  const end = await rejected;
  s.close();
  return { fromDue: end - dueAt, fromAbort: end - abortedAt };
}

/** Runs the fuel benchmark; prints tables, writes bench/results/fuel.json. */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const plan = isQuick(opts) ? QUICK : FULL;
  const bytes = await sortGuardBytes();
  const meteredModule = await WebAssembly.compile(prepareGuard(bytes).bytes);
  // The same metering without the memory pool's write recording: what the recording itself costs.
  // Every variant runs the guard on a new instance on every call, as before the call memo and the
  // instance pool (the memo would answer repeats without running the guard).
  const run = { callMemoBytes: 0, idleInstances: 0 };
  const unpooled = new WasmGuard(
    await WebAssembly.compile(prepareGuard(bytes, { poolMemories: false }).bytes),
    {
      name: "sort-unpooled",
      limits: { ...run, yieldIntervalMs: NO_YIELD_MS },
    },
  );
  const unmeteredModule = await WebAssembly.compile(prepareGuard(bytes, { fuel: false }).bytes);
  const unmetered = new WasmGuard(unmeteredModule, { name: "sort-unmetered", fuel: false, limits: run });
  const metered = SLICES.map((fuelSlice) =>
    new WasmGuard(meteredModule, {
      name: `sort-slice-${fuelSlice}`,
      limits: { ...run, fuelSlice, yieldIntervalMs: NO_YIELD_MS },
    })
  );
  const yielding = SLICES.map((fuelSlice) =>
    new WasmGuard(meteredModule, { name: `sort-slice-${fuelSlice}-yielding`, limits: { ...run, fuelSlice } })
  );
  const input = JSON.stringify({ pad: "x".repeat(Math.max(0, plan.inputBytes - 10)) });
  const elements = Math.min(262_144, new TextEncoder().encode(input).length * 1024);

  // Warm-up, and every variant must compute the same answer.
  const ref = await computeOnce(unmetered, input);
  for (const g of metered) {
    const r = await computeOnce(g, input);
    if (r.out !== ref.out) throw new Error(`${g.name} answered ${r.out}, unmetered ${ref.out}`);
  }

  const unmeteredMs: number[] = [];
  const meteredMs: number[][] = SLICES.map(() => []);
  const defaultIdx = SLICES.indexOf(DEFAULT_LIMITS.fuelSlice);
  const yieldingMs: number[] = [];
  const unpooledMs: number[] = [];
  let fuelPerRun = 0;
  // Variants: -2 metered without write recording, -1 unmetered, 0..n-1 metered without yields, n the
  // default configuration (yielding).
  const variants = [-2, -1, ...SLICES.keys(), SLICES.length];
  for (let i = 0; i < plan.runs; i++) {
    // Round-robin, rotating the start so no variant always runs first.
    const k = i % variants.length;
    for (const v of [...variants.slice(k), ...variants.slice(0, k)]) {
      if (v === -2) unpooledMs.push((await computeOnce(unpooled, input)).ms);
      else if (v === -1) unmeteredMs.push((await computeOnce(unmetered, input)).ms);
      else if (v === SLICES.length) yieldingMs.push((await computeOnce(yielding[defaultIdx], input)).ms);
      else {
        const r = await computeOnce(metered[v], input);
        meteredMs[v].push(r.ms);
        fuelPerRun = r.fuel;
      }
    }
  }

  const aborts: Array<{ fromDue: number; fromAbort: number }[]> = [];
  for (const g of yielding) {
    const xs: { fromDue: number; fromAbort: number }[] = [];
    for (let i = 0; i < plan.abortRuns; i++) xs.push(await abortLatency(g));
    aborts.push(xs);
  }

  const base = median(unmeteredMs);
  const overheadPct = (xs: number[]) => (ratio(median(xs), base) - 1) * 100;
  const rows = SLICES.map((slice, i) => {
    const due = summarize(aborts[i].map((a) => a.fromDue));
    const fromAbort = summarize(aborts[i].map((a) => a.fromAbort));
    return [
      slice.toLocaleString("en-US") + (i === defaultIdx ? " (default)" : ""),
      fmt(median(meteredMs[i]) * slice / fuelPerRun, 3),
      fmt(median(meteredMs[i])),
      `${fmt(overheadPct(meteredMs[i]), 1)} %`,
      fmt(due.p50),
      fmt(due.max),
      fmt(fromAbort.p50),
    ];
  });
  const tables = [
    {
      title: `guard CPU: label_resource sorting ${elements.toLocaleString("en-US")} u32 (${
        fuelPerRun.toLocaleString("en-US")
      } fuel units), ${plan.runs} interleaved runs per variant; abort latency of a spinning guard, ${plan.abortRuns} runs`,
      header: [
        "fuelSlice",
        "ms per slice",
        "CPU median ms",
        "CPU overhead",
        "due->reject p50 ms",
        "due->reject max ms",
        "abort()->reject p50 ms",
      ],
      rows: [["unmetered", "-", fmt(base), "0.0 %", "-", "-", "-"], ...rows],
    },
    {
      title:
        `default configuration (fuelSlice ${DEFAULT_LIMITS.fuelSlice}, yield every ${DEFAULT_LIMITS.yieldIntervalMs} ms): wall time of the same call`,
      header: ["variant", "median ms", "vs unmetered"],
      rows: [
        ["unmetered", fmt(base), "0.0 %"],
        [
          "metered, no yields, memories not pooled (no write recording)",
          fmt(median(unpooledMs)),
          `${fmt(overheadPct(unpooledMs), 1)} %`,
        ],
        [
          "metered, no yields (CPU; pooled memories: writes recorded)",
          fmt(median(meteredMs[defaultIdx])),
          `${fmt(overheadPct(meteredMs[defaultIdx]), 1)} %`,
        ],
        ["metered, yielding (default)", fmt(median(yieldingMs)), `${fmt(overheadPct(yieldingMs), 1)} %`],
      ],
    },
  ];
  const targets = [
    target(
      `fuel overhead at the default fuelSlice (${DEFAULT_LIMITS.fuelSlice}), memories not pooled`,
      overheadPct(unpooledMs),
      "<=",
      OVERHEAD_TARGET_PCT,
      " %",
    ),
    target(
      `fuel + write-recording overhead at the default fuelSlice (${DEFAULT_LIMITS.fuelSlice})`,
      overheadPct(meteredMs[defaultIdx]),
      "<=",
      OVERHEAD_TARGET_PCT,
      " %",
    ),
  ];
  return await finish("fuel", opts, tables, targets, {
    plan,
    elements,
    fuelPerRun,
    yieldIntervalMs: DEFAULT_LIMITS.yieldIntervalMs,
    abortDelayMs: [ABORT_DELAY_MIN_MS, ABORT_DELAY_MIN_MS + ABORT_DELAY_SPREAD_MS],
    unmeteredMs,
    unpooledMs,
    metered: SLICES.map((fuelSlice, i) => ({ fuelSlice, ms: meteredMs[i], abortLatencyMs: aborts[i] })),
    yieldingDefaultMs: yieldingMs,
  });
}

if (import.meta.main) await run();
