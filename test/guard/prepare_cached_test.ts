/**
 * The cached-counter fuel shape: which functions get it, and that it spends exactly the units the
 * global shape spends, at the same points, with the same counter values seen by the check, on
 * hand-written edge cases and on randomized call trees (loops, nested loops, branches to the
 * function label, return, direct/indirect/tail calls, imports, recursion, exception handling, a
 * check that throws).
 */
import { assert, assertEquals, assertGreater } from "@std/assert";
import fc from "fast-check";
import {
  FUEL_GLOBAL_EXPORT,
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  type FuelScheme,
  prepareGuard,
  readPreparedMark,
} from "../../src/guard/prepare.ts";
import { compileWat } from "./bulk_harness.ts";
import { instantiate } from "../helpers/instantiate.ts";

const FEATURES = { exceptions: true, tail_call: true, bulk_memory: true, reference_types: true };
const LABELS = ["label_agent", "label_resource", "label_response"]
  .map((n) => `(func (export "${n}") (param i32 i32 i32 i32) (result i32) (i32.const 0))`)
  .join("\n");
const IMPORTS = `(import "env" "call_backend" (func $backend (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "host_log" (func $log (param i32 i32 i32)))`;

/** A guard module holding `fields`, the host imports and the three label stubs. */
function guardModule(fields: string): Uint8Array<ArrayBuffer> {
  return compileWat("cached.wat", `(module ${IMPORTS}\n${fields}\n${LABELS})`, FEATURES);
}

/** What one run of export `run` did. */
interface Trace {
  /** Returned value, or the thrown error's message. */
  outcome: string;
  /** Counter value at every check call, in order. */
  seen: number[];
  /** Counter after the run. */
  final: number;
  /** Units spent: refills minus what is left, as the host counts them. */
  spent: number;
}

interface RunOptions {
  /** Value the check refills (1 = check at almost every point). */
  refill: number;
  /** The check throws once more than this many units are spent (and leaves the counter negative). */
  budget?: number;
  /** Arguments to `run`. */
  args?: number[];
}

/** Prepares with `scheme` and runs `run`, counting fuel the way the host does. */
function runScheme(source: Uint8Array, scheme: FuelScheme, opts: RunOptions): Trace {
  const { bytes } = prepareGuard(source, { fuelScheme: scheme });
  const seen: number[] = [];
  const box: { fuel?: WebAssembly.Global } = {};
  let refill = opts.refill;
  let spent = 0;
  const budget = opts.budget ?? Infinity;
  const inst = instantiate(bytes, {
    env: {
      // Throws for some arguments, so exception handlers get to run.
      call_backend: (a: number) => {
        if ((a & 7) === 3) throw new Error("backend failed");
        return a & 0xff;
      },
      host_log: () => {},
    },
    [FUEL_IMPORT_MODULE]: {
      [FUEL_IMPORT_NAME]: () => {
        const value = box.fuel!.value as number;
        seen.push(value);
        spent += refill - value;
        refill = value;
        if (spent > budget) throw new Error("out of fuel");
        refill = opts.refill;
        box.fuel!.value = refill;
      },
    },
  });
  const fuel = box.fuel = inst.exports[FUEL_GLOBAL_EXPORT] as WebAssembly.Global;
  fuel.value = refill;
  let outcome: string;
  try {
    outcome = String((inst.exports.run as (...a: number[]) => number)(...(opts.args ?? [])));
  } catch (e) {
    outcome = `threw ${e instanceof Error ? e.message : String(e)}`;
  }
  const final = fuel.value as number;
  return { outcome, seen, final, spent: spent + refill - final };
}

/** Runs both shapes and asserts identical traces; returns the cached one. */
function assertSameAsGlobal(source: Uint8Array, opts: RunOptions, what = ""): Trace {
  const cached = runScheme(source, "cached", opts);
  const global = runScheme(source, "global", opts);
  assertEquals(cached, global, `${what} refill=${opts.refill} budget=${opts.budget}`);
  return cached;
}

// ---------------------------------------------------------------------------------------------
// Which functions get the cached shape

Deno.test("cached shape: functions with loops and no exception handling; the mark names it", () => {
  const source = guardModule(`
    (tag $e)
    (func $loops (param i32) (result i32) (local i32)
      (loop $l (local.set 1 (i32.add (local.get 1) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get 1) (local.get 0))))
      (local.get 1))
    (func $straight (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
    (func $eh_loop (param i32) (result i32) (local i32)
      (try (do (loop $l (local.set 1 (i32.add (local.get 1) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get 1) (local.get 0))))) (catch_all))
      (local.get 1))
    (func $throw_loop (param i32) (local i32)
      (loop $l (local.set 1 (i32.add (local.get 1) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get 1) (local.get 0))))
      (throw $e))
    (func (export "run") (param i32) (result i32)
      (i32.add (call $loops (local.get 0)) (i32.add (call $straight (local.get 0)) (call $eh_loop (local.get 0)))))`);
  const { bytes, report } = prepareGuard(source);
  assertEquals(report.fuelCachedFunctions, 1, "only $loops: the others have no loop or handle exceptions");
  assertEquals(report.fuelPoints, 5 + 3 + 3, "5 entries (with the label stubs: 8) and 3 loops");
  assertEquals(readPreparedMark(new WebAssembly.Module(bytes))?.fuelScheme, "cached");
  const global = prepareGuard(source, { fuelScheme: "global" });
  assertEquals(global.report.fuelCachedFunctions, 0);
  assertEquals(global.report.fuelPoints, report.fuelPoints);
  assertEquals(readPreparedMark(new WebAssembly.Module(global.bytes))?.fuelScheme, "global");
  assertEquals(prepareGuard(source, { fuel: false }).report.fuelCachedFunctions, 0);
  assertEquals(
    readPreparedMark(new WebAssembly.Module(prepareGuard(source, { fuel: false }).bytes))?.fuelScheme,
    undefined,
  );
  for (const refill of [1, 2, 5, 1000]) assertSameAsGlobal(source, { refill, args: [10] });
});

Deno.test("cached shape: a loop of N iterations spends 1 per entry + 1 per loop header, like the global shape", () => {
  const source = guardModule(`
    (func (export "run") (param $n i32) (result i32) (local $i i32)
      (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
      (local.get $i))`);
  for (const n of [1, 2, 100, 12345]) {
    const t = assertSameAsGlobal(source, { refill: 1_000_000, args: [n] });
    assertEquals(t.spent, 1 + n);
    assertEquals(t.final, 1_000_000 - 1 - n, "the counter is written back on exit");
    assertEquals(t.seen, []);
    const starved = assertSameAsGlobal(source, { refill: 0, args: [n] });
    assertEquals(starved.seen.length, 1 + n, "refill 0: every point reaches the check");
    assertEquals(starved.spent, 1 + n);
  }
});

Deno.test("cached shape: nested loops, branches and br_table to the function label, return", () => {
  const source = guardModule(`
    (func $nested (param $n i32) (result i32) (local $i i32) (local $j i32) (local $acc i32)
      (loop $outer
        (local.set $j (i32.const 0))
        (loop $inner
          (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $i) (local.get $j))))
          (br_if 2 (local.get $acc) (i32.gt_u (local.get $acc) (i32.const 5000)))
          (drop)
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $inner (i32.lt_u (local.get $j) (local.get $n))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $outer (i32.lt_u (local.get $i) (local.get $n))))
      (local.get $acc))
    (global $last (mut i32) (i32.const 0))
    (func $table (param $k i32) (local $i i32)
      (block $b
        (loop $l
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (global.set $last (local.get $i))
          (br_table $l $b 2 (i32.rem_u (i32.add (local.get $i) (local.get $k)) (i32.const 5)))))
      (if (i32.eq (local.get $i) (i32.const 2)) (then (global.set $last (i32.const 99)) (return)))
      (br 0))
    (func (export "run") (param $n i32) (result i32)
      (call $table (local.get $n))
      (i32.add (call $nested (local.get $n))
        (i32.add (global.get $last)
          (call $table (i32.add (local.get $n) (i32.const 1))) (i32.mul (global.get $last) (i32.const 1000)))))`);
  assertEquals(prepareGuard(source).report.fuelCachedFunctions, 2);
  for (const n of [0, 1, 3, 4, 9, 40]) {
    for (const refill of [0, 1, 3, 1_000_000]) assertSameAsGlobal(source, { refill, args: [n] }, `n=${n}`);
  }
});

Deno.test("cached shape: calls, imports, call_indirect, return_call and recursion keep the count", () => {
  const source = guardModule(`
    (type $t (func (param i32) (result i32)))
    (table 2 funcref)
    (elem (i32.const 0) $down $leaf)
    (func $leaf (param i32) (result i32) (local $i i32)
      (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (local.get 0))))
      (local.get $i))
    (func $down (param $d i32) (result i32) (local $i i32) (local $acc i32)
      (if (i32.eqz (local.get $d)) (then (return (i32.const 1))))
      (loop $l
        (call $log (i32.const 0) (i32.const 0) (i32.const 0))
        (local.set $acc (i32.add (local.get $acc) (call $leaf (local.get $i))))
        (local.set $acc (i32.add (local.get $acc)
          (call_indirect (type $t) (i32.sub (local.get $d) (i32.const 1)) (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 3))))
      (if (i32.gt_u (local.get $d) (i32.const 2))
        (then (return_call_indirect (type $t) (local.get $acc) (i32.const 1))))
      (return_call $leaf (i32.and (local.get $acc) (i32.const 15))))
    (func (export "run") (param $d i32) (result i32) (call $down (local.get $d)))`);
  assertEquals(prepareGuard(source).report.fuelCachedFunctions, 2);
  for (const d of [0, 1, 3, 4]) {
    for (const refill of [0, 1, 2, 7, 1_000_000]) {
      const t = assertSameAsGlobal(source, { refill, args: [d] }, `d=${d}`);
      assertGreater(t.spent, 1);
    }
  }
});

Deno.test("cached shape: a spinning function is stopped by a throwing check and stays stopped", () => {
  const source = guardModule(`
    (tag $e)
    (func $spin (loop $forever (br $forever)))
    (func $catcher (result i32) (local $caught i32)
      (loop $again
        (try (do (call $spin)) (catch_all (local.set $caught (i32.add (local.get $caught) (i32.const 1)))))
        (br_if $again (i32.lt_u (local.get $caught) (i32.const 3))))
      (local.get $caught))
    (func (export "run") (result i32) (call $catcher))`);
  const spin = assertSameAsGlobal(source, { refill: 1000, budget: 50_000 });
  // Each refill is counted as refill + 1 units (the point that went below zero). The 50th check
  // passes the budget and throws; $catcher catches it, but its next fuel point (the loop header,
  // outside the try) finds the counter still negative and the check throws again.
  assertEquals(spin.outcome, "threw out of fuel");
  assertEquals(spin.seen.slice(-2), [-1, -2]);
  assertEquals(spin.spent, 50 * 1001 + 1);
});

// ---------------------------------------------------------------------------------------------
// Randomized call trees against the global shape

type Stmt =
  | { t: "work"; k: number }
  | { t: "loop"; k: number; body: Stmt[] }
  | { t: "call"; f: number }
  | { t: "indirect"; f: number }
  | { t: "backend" }
  | { t: "log" }
  | {
    t: "exit";
    how: "br" | "br_if" | "br_table" | "return" | "tail" | "tail_indirect";
    f: number;
    k: number;
  }
  | { t: "try"; body: Stmt[] }
  | { t: "throw"; k: number };

const FUNCTIONS = 4;

function stmtArb(level: number): fc.Arbitrary<Stmt> {
  const f = fc.nat(FUNCTIONS - 1);
  const k = fc.integer({ min: 0, max: 7 });
  const leaves: fc.WeightedArbitrary<Stmt>[] = [
    { weight: 2, arbitrary: k.map((k) => ({ t: "work", k }) as Stmt) },
    { weight: 2, arbitrary: f.map((f) => ({ t: "call", f }) as Stmt) },
    { weight: 1, arbitrary: f.map((f) => ({ t: "indirect", f }) as Stmt) },
    { weight: 1, arbitrary: fc.constant({ t: "backend" } as Stmt) },
    { weight: 1, arbitrary: fc.constant({ t: "log" } as Stmt) },
    {
      weight: 3,
      arbitrary: fc.record({
        t: fc.constant("exit" as const),
        how: fc.constantFrom("br", "br_if", "br_table", "return", "tail", "tail_indirect"),
        f,
        k,
      }) as fc.Arbitrary<Stmt>,
    },
    { weight: 1, arbitrary: k.map((k) => ({ t: "throw", k }) as Stmt) },
  ];
  if (level >= 2) return fc.oneof(...leaves);
  const body = fc.array(stmtArb(level + 1), { maxLength: 3 });
  const loop = fc.record({ t: fc.constant("loop" as const), k: fc.integer({ min: 1, max: 3 }), body });
  const tryStmt = fc.record({ t: fc.constant("try" as const), body });
  return fc.oneof(
    ...leaves,
    { weight: 8, arbitrary: loop as fc.Arbitrary<Stmt> },
    { weight: 1, arbitrary: tryStmt as fc.Arbitrary<Stmt> },
  );
}

/** A condition on the accumulator that holds for some values. */
const when = (k: number) => `(i32.eq (i32.and (local.get $acc) (i32.const 7)) (i32.const ${k}))`;
const addAcc = (value: string) => `(local.set $acc (i32.add (local.get $acc) ${value}))`;

/** WAT for `s` at label depth `depth` (blocks open in the body) and loop nesting `level`. */
function stmtWat(s: Stmt, depth: number, level: number): string {
  const next = "(i32.sub (local.get $d) (i32.const 1))";
  switch (s.t) {
    case "work":
      return `(local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31)) (i32.const ${s.k})))`;
    case "loop":
      return `(local.set $c${level} (i32.const 0))
        (loop ${s.body.map((b) => stmtWat(b, depth + 1, level + 1)).join("\n")}
          ${addAcc(`(local.get $c${level})`)}
          (local.set $c${level} (i32.add (local.get $c${level}) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $c${level}) (i32.const ${s.k}))))`;
    case "call":
      return addAcc(`(call $f${s.f} ${next})`);
    case "indirect":
      return addAcc(`(call_indirect (type $t) ${next} (i32.const ${s.f}))`);
    case "backend":
      return addAcc(
        `(call $backend (local.get $acc) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))`,
      );
    case "log":
      return `(call $log (i32.const 0) (i32.const 0) (i32.const 0))`;
    case "exit":
      switch (s.how) {
        case "br":
          return `(if ${when(s.k)} (then (br ${depth + 1} (local.get $acc))))`;
        case "br_if":
          return `(drop (br_if ${depth} (local.get $acc) ${when(s.k)}))`;
        case "br_table":
          return `(drop (block (result i32) (br_table 0 ${depth + 1} (local.get $acc)
            (i32.and (i32.shr_u (local.get $acc) (i32.const ${s.k % 4})) (i32.const 1)))))`;
        case "return":
          return `(if ${when(s.k)} (then (return (local.get $acc))))`;
        case "tail":
          return `(if ${when(s.k)} (then (return_call $f${s.f} ${next})))`;
        case "tail_indirect":
          return `(if ${when(s.k)} (then (return_call_indirect (type $t) ${next} (i32.const ${s.f}))))`;
      }
      throw new Error("unreachable");
    case "try":
      return `(try (do ${s.body.map((b) => stmtWat(b, depth + 1, level)).join("\n")})
        (catch_all ${addAcc("(i32.const 1000)")}))`;
    case "throw":
      return `(if ${when(s.k)} (then (throw $e)))`;
  }
}

function programWat(bodies: Stmt[][]): string {
  const funcs = bodies.map((body, i) =>
    `(func $f${i} (param $d i32) (result i32) (local $acc i32) (local $c0 i32) (local $c1 i32) (local $c2 i32)
      (if (i32.le_s (local.get $d) (i32.const 0)) (then (return (i32.const 1))))
      (local.set $acc (local.get $d))
      ${body.map((s) => stmtWat(s, 0, 0)).join("\n")}
      (local.get $acc))`
  );
  return `(type $t (func (param i32) (result i32)))
    (tag $e)
    (table ${bodies.length} funcref)
    (elem (i32.const 0) ${bodies.map((_, i) => `$f${i}`).join(" ")})
    ${funcs.join("\n")}
    (func (export "run") (param $d i32) (result i32) (call $f0 (local.get $d)))`;
}

/** Property runs: each compiles one module and runs it 8 times per shape. */
const RUNS = 150;

Deno.test("randomized call trees: the cached shape spends exactly what the global shape spends", () => {
  let cachedFunctions = 0;
  let globalFunctions = 0;
  let stopped = 0;
  fc.assert(
    fc.property(
      fc.array(fc.array(stmtArb(0), { minLength: 1, maxLength: 4 }), {
        minLength: FUNCTIONS,
        maxLength: FUNCTIONS,
      }),
      fc.integer({ min: 1, max: 3 }),
      (bodies, depth) => {
        const source = guardModule(programWat(bodies));
        const { report } = prepareGuard(source);
        cachedFunctions += report.fuelCachedFunctions;
        globalFunctions += report.functions - report.fuelCachedFunctions;
        for (const refill of [0, 1, 2, 5, 1_000_000]) {
          assertSameAsGlobal(source, { refill, args: [depth] });
        }
        for (const budget of [3, 20, 200]) {
          const t = assertSameAsGlobal(source, { refill: 1, budget, args: [depth] });
          if (t.seen.length > 0 && t.spent > budget) stopped++;
        }
      },
    ),
    { numRuns: RUNS, seed: 20_250_301 },
  );
  assertGreater(cachedFunctions, RUNS / 2, "the generator produces cached-shape functions");
  assertGreater(globalFunctions, RUNS, "and global-shape ones");
  assertGreater(stopped, RUNS / 4, "and runs the budget stops");
});

Deno.test("randomized call trees: the prepared module validates in both shapes", () => {
  const bodies: Stmt[][] = [[{ t: "loop", k: 2, body: [{ t: "call", f: 1 }] }], [{ t: "work", k: 1 }]];
  for (const scheme of ["cached", "global"] as const) {
    assert(WebAssembly.validate(prepareGuard(guardModule(programWat(bodies)), { fuelScheme: scheme }).bytes));
  }
});
