/**
 * Hostile-corpus benchmark: every spinning export of `test/fixtures/wat/hostile/` (catch-and-retry
 * in both exception-handling encodings, nested catch recursion, every bulk operation, tail-call
 * loops, a spinning start function, plain loops and recursion) plus a generated guard whose loop
 * body is a long straight-line run, under the default limits except a shorter deadline.
 *
 * Per module it reports:
 * - the longest event-loop block while the guard runs: the largest gap between two consecutive
 *   macrotasks of a probe that re-posts itself through a `MessageChannel` (no timer clamping), so a
 *   gap is the time the guard held the thread between two yields;
 * - how the call ended (kind) and, for a timeout, the time from the deadline to the rejection.
 *
 * Targets (issue 9): no guard blocks the event loop for more than 10 ms, and the default budget ends
 * any guard within `limits.timeoutMs` + 10 ms.
 *
 * ```sh
 * deno run -A bench/hostile_bench.ts
 * BENCH_QUICK=1 deno run -A bench/hostile_bench.ts
 * ```
 * Raw samples: bench/results/hostile.json.
 *
 * @module
 */
import wabtInit from "wabt";
import type { GuardContext } from "../src/difc/guard.ts";
import { loadGuardModule, type WasmGuard } from "../src/guard/host.ts";
import { DEFAULT_LIMITS, GuardError } from "../src/guard/limits.ts";
import { type BenchOptions, type BenchReport, finish, fmt, isQuick, target } from "./lib.ts";

const HOSTILE = new URL("../test/fixtures/wat/hostile/", import.meta.url);
const FEATURES = { exceptions: true, tail_call: true, bulk_memory: true, reference_types: true };
/** Target: longest block between two yields. */
const MAX_BLOCK_TARGET_MS = 10;
/** Target: a stop comes at most this long after the deadline. */
const LATE_STOP_TARGET_MS = 10;
/** Statements in the generated long loop body (~1 µs per iteration, one plain fuel unit). */
const LONG_BODY_STATEMENTS = 2_000;

/** Spinning fixtures and their spinning exports. */
const CASES: ReadonlyArray<[string, readonly ("label_agent" | "label_resource")[]]> = [
  ["infinite_loop", ["label_resource"]],
  ["eh_legacy_catch_all", ["label_agent", "label_resource"]],
  ["eh_new_catch_all", ["label_agent", "label_resource"]],
  ["recursion_catch_legacy", ["label_agent", "label_resource"]],
  ["recursion_catch_new", ["label_agent", "label_resource"]],
  ["eh_catch_import_error", ["label_resource"]],
  ["bulk_memory_fill_copy", ["label_agent", "label_resource"]],
  ["bulk_memory_init_grow", ["label_agent", "label_resource"]],
  ["bulk_table_fill_copy", ["label_agent", "label_resource"]],
  ["bulk_table_init_grow", ["label_agent", "label_resource"]],
  ["tail_call_loop", ["label_agent", "label_resource"]],
  ["start_spin_eh", ["label_agent"]],
  ["long_body (generated)", ["label_agent"]],
];

interface Plan {
  timeoutMs: number;
  /** Runs per module and export (the worst is reported). */
  runs: number;
}
const FULL: Plan = { timeoutMs: 1_000, runs: 3 };
const QUICK: Plan = { timeoutMs: 150, runs: 1 };

function longBodyWat(): string {
  const body = Array.from(
    { length: LONG_BODY_STATEMENTS },
    (_, i) => `(local.set $a (i32.xor (i32.add (local.get $a) (i32.const ${i})) (local.get $n)))`,
  ).join("\n");
  return `(module (memory (export "memory") 1)
    (func (export "label_agent") (param $n i32) (param i32 i32 i32) (result i32) (local $a i32)
      (loop $l ${body} (br $l)) (local.get $a))
    (func (export "label_resource") (param i32 i32 i32 i32) (result i32) (i32.const 0))
    (func (export "label_response") (param i32 i32 i32 i32) (result i32) (i32.const 0)))`;
}

async function wasmOf(name: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const text = name.startsWith("long_body")
    ? longBodyWat()
    : await Deno.readTextFile(new URL(`${name}.wat`, HOSTILE));
  const m = wabt.parseWat(`${name}.wat`, text, FEATURES);
  try {
    return new Uint8Array(m.toBinary({}).buffer);
  } finally {
    m.destroy();
  }
}

/** Measures the largest gap between consecutive macrotasks until stopped. */
function blockProbe(): { stop: () => number } {
  const ch = new MessageChannel();
  let last = performance.now();
  let worst = 0;
  let running = true;
  ch.port1.onmessage = () => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
    if (running) ch.port2.postMessage(0);
  };
  ch.port2.postMessage(0);
  return {
    stop: () => {
      running = false;
      ch.port1.close();
      ch.port2.close();
      return Math.max(worst, performance.now() - last);
    },
  };
}

interface Sample {
  module: string;
  fn: string;
  kind: string;
  ms: number;
  maxBlockMs: number;
  /** Rejection time minus the deadline, for timeouts. */
  lateMs: number | null;
}

const ctx = (): GuardContext => ({
  signal: new AbortController().signal,
  backend: () => Promise.resolve({ ok: true }),
  log: () => {},
});

async function measure(guard: WasmGuard, module: string, fn: string, timeoutMs: number): Promise<Sample> {
  const s = guard.open(ctx());
  const probe = blockProbe();
  await new Promise((r) => setTimeout(r, 5)); // let the probe start
  const t0 = performance.now();
  let kind = "returned";
  try {
    await (fn === "label_agent" ? s.labelAgent("{}") : s.labelResource("{}"));
  } catch (e) {
    kind = e instanceof GuardError ? e.kind : String(e);
  }
  const end = performance.now();
  const maxBlockMs = probe.stop();
  s.close();
  return {
    module,
    fn,
    kind,
    ms: end - t0,
    maxBlockMs,
    lateMs: kind === "timeout" ? end - (t0 + timeoutMs) : null,
  };
}

/** Runs the hostile-corpus benchmark; prints a table, writes bench/results/hostile.json. */
export async function run(opts: BenchOptions = {}): Promise<BenchReport> {
  const plan = isQuick(opts) ? QUICK : FULL;
  // The call memo off: a hostile guard that answers must run every time it is measured.
  const limits = { timeoutMs: plan.timeoutMs, callMemoBytes: 0 };
  const samples: Sample[] = [];
  for (const [module, fns] of CASES) {
    const guard = await loadGuardModule(await wasmOf(module), { name: module, limits });
    for (const fn of fns) {
      for (let i = 0; i < plan.runs; i++) samples.push(await measure(guard, module, fn, plan.timeoutMs));
    }
  }
  const worst = new Map<string, Sample>();
  for (const x of samples) {
    const key = `${x.module} ${x.fn}`;
    const w = worst.get(key);
    if (!w || x.maxBlockMs > w.maxBlockMs || (x.lateMs ?? -Infinity) > (w.lateMs ?? -Infinity)) {
      worst.set(key, {
        ...x,
        maxBlockMs: Math.max(x.maxBlockMs, w?.maxBlockMs ?? 0),
        lateMs: x.lateMs === null && w?.lateMs == null
          ? null
          : Math.max(x.lateMs ?? -Infinity, w?.lateMs ?? -Infinity),
      });
    }
  }
  const rows = [...worst.values()].map((x) => [
    x.module,
    x.fn,
    x.kind,
    fmt(x.ms, 0),
    fmt(x.maxBlockMs),
    x.lateMs === null ? "-" : fmt(x.lateMs),
  ]);
  const maxBlock = Math.max(...samples.map((x) => x.maxBlockMs));
  const maxLate = Math.max(...samples.map((x) => x.lateMs ?? -Infinity));
  const tables = [{
    title: `hostile corpus, default limits with timeoutMs=${plan.timeoutMs} (fuel ${
      DEFAULT_LIMITS.fuel.toLocaleString("en-US")
    }, fuelSlice ${
      DEFAULT_LIMITS.fuelSlice.toLocaleString("en-US")
    }, yield every ${DEFAULT_LIMITS.yieldIntervalMs} ms); worst of ${plan.runs} run(s)`,
    header: ["module", "export", "ended by", "call ms", "longest block ms", "deadline->stop ms"],
    rows,
  }];
  const targets = [
    target("longest event-loop block between two yields", maxBlock, "<=", MAX_BLOCK_TARGET_MS, " ms"),
    target("deadline -> stop", maxLate, "<=", LATE_STOP_TARGET_MS, " ms"),
  ];
  return await finish("hostile", opts, tables, targets, { plan, samples });
}

if (import.meta.main) await run();
