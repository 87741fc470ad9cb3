/**
 * Properties of the metering over generated modules (fast-check):
 *
 * 1. Random valid modules from a small generator (arithmetic, globals, memory loads and stores,
 *    bulk `memory.fill`/`memory.copy`, bounded nested loops, if/else, blocks with `br_if`, calls):
 *    prepared, each answers exactly what the original answers (result, global, memory) in both fuel
 *    shapes; it spends a deterministic number of units T; with a budget of T it finishes with the
 *    same answer, and with T - 1 it is stopped by a trap (never a catchable exception).
 * 2. Mutations of the hostile and feature corpora: preparation refuses them with a GuardError, or
 *    the output validates and every label export, run under a fuel budget by a check that stops the
 *    way the host does, ends (returns or traps) within that budget.
 * 3. Random sequences of bulk operations (`memory.fill/copy/init`, `table.fill/copy/init`,
 *    `data.drop`, `elem.drop`) on one or two memories and tables, with offsets and lengths around
 *    every boundary (in bounds, exactly at the end, one past it, wrapping around 2^32, overlapping
 *    copies, dropped segments): op by op, the prepared module (both fuel shapes, production and
 *    tiny chunk sizes) traps exactly when the original does, with the same reason, and leaves the
 *    same memories and tables; every preparation spends the same units.
 *
 * @module
 */
import { assert, assertEquals, assertLessOrEqual } from "@std/assert";
import fc from "fast-check";
import wabtInit from "wabt";
import { GuardError } from "../../src/guard/limits.ts";
import {
  FUEL_GLOBAL_EXPORT,
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  type FuelScheme,
  prepareGuard,
} from "../../src/guard/prepare.ts";
import { START_EXPORT } from "../../src/guard/wasm/host_signatures.ts";
import {
  type BulkModule,
  c,
  compileBulk,
  FUNCS,
  type Preparation,
  rewriteBulk,
  runBulk,
} from "./bulk_harness.ts";
import { instantiate } from "../helpers/instantiate.ts";

const wabt = await wabtInit();
const FEATURES = { exceptions: true, tail_call: true, bulk_memory: true, reference_types: true };
const LABEL = "(param i32 i32 i32 i32) (result i32)";
const LABELS = ["label_agent", "label_resource", "label_response"]
  .map((n) => `(func (export "${n}") ${LABEL} (i32.const 0))`).join("\n");

function compile(text: string): Uint8Array<ArrayBuffer> {
  const mod = wabt.parseWat("gen.wat", text, FEATURES);
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

// ---- the generator: a seeded PRNG drives a small grammar of terminating programs ----

class Gen {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 1;
  }
  /** 0..n-1 (xorshift32). */
  int(n: number): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
}

const HELPERS = 3;

function expr(g: Gen, depth: number, inHelper: boolean): string {
  const leaf = () =>
    g.pick([
      () => `(i32.const ${g.int(2000) - 1000})`,
      () => inHelper ? "(local.get 0)" : g.pick(["(local.get $a)", "(local.get $b)", "(local.get $n)"]),
      () => "(global.get $g)",
    ])();
  if (depth <= 0) return leaf();
  const e = () => expr(g, depth - 1, inHelper);
  return g.pick([
    leaf,
    () => `(${g.pick(["i32.add", "i32.sub", "i32.mul", "i32.xor", "i32.shr_u"])} ${e()} ${e()})`,
    () => `(i32.load (i32.and ${e()} (i32.const 0xfffc)))`,
    () => inHelper ? leaf() : `(call $h${g.int(HELPERS)} ${e()})`,
  ])();
}

/** Masked into 0..32767 so that offset + length stays inside one page. */
const half = (e: string) => `(i32.and ${e} (i32.const 0x7fff))`;

function stmts(g: Gen, depth: number, loopDepth: number, count: number): string {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const e = () => expr(g, 2, false);
    const choices = [
      () => `(local.set $a ${e()})`,
      () => `(local.set $b ${e()})`,
      () => `(global.set $g ${e()})`,
      () => `(i32.store (i32.and ${e()} (i32.const 0xfffc)) ${e()})`,
      () => `(memory.fill ${half(e())} ${e()} ${half(e())})`,
      () => `(memory.copy ${half(e())} ${half(e())} ${half(e())})`,
    ];
    if (depth > 0) {
      choices.push(
        () =>
          `(if ${e()} (then ${stmts(g, depth - 1, loopDepth, 2)}) (else ${
            stmts(g, depth - 1, loopDepth, 1)
          }))`,
        () =>
          `(block $B${depth} ${stmts(g, depth - 1, loopDepth, 1)} (br_if $B${depth} ${e()}) ${
            stmts(g, depth - 1, loopDepth, 1)
          })`,
      );
      if (loopDepth < 2) {
        const i = `$i${loopDepth}`;
        choices.push(() =>
          `(local.set ${i} (i32.const ${1 + g.int(40)}))
           (loop $L${loopDepth} ${stmts(g, depth - 1, loopDepth + 1, 2)}
             (local.set ${i} (i32.sub (local.get ${i}) (i32.const 1)))
             (br_if $L${loopDepth} (i32.gt_s (local.get ${i}) (i32.const 0))))`
        );
      }
    }
    out.push(g.pick(choices)());
  }
  return out.join("\n");
}

/** A random terminating guard module whose export `run(n)` returns a checksum of what it did. */
function generate(seed: number): string {
  const g = new Gen(seed);
  const helpers = Array.from({ length: HELPERS }, (_, k) => {
    const loop = g.int(2) === 0 ? "" : `(local.set 1 (i32.const ${1 + g.int(20)}))
         (loop $h (local.set 0 (i32.add (local.get 0) ${expr(g, 1, true)}))
           (local.set 1 (i32.sub (local.get 1) (i32.const 1)))
           (br_if $h (local.get 1)))`;
    return `(func $h${k} (param i32) (result i32) (local i32) ${loop} ${expr(g, 2, true)})`;
  }).join("\n");
  return `(module
    (memory (export "memory") 1)
    (global $g (mut i32) (i32.const 0))
    ${helpers}
    (func (export "run") (param $n i32) (result i32) (local $a i32) (local $b i32) (local $i0 i32) (local $i1 i32)
      ${stmts(g, 3, 0, 3 + g.int(4))}
      (i32.add (local.get $a) (i32.add (local.get $b) (global.get $g))))
    ${LABELS})`;
}

// ---- running: the original, and the prepared module under a budget checked like the host ----

interface Outcome {
  /** run's result, or "stopped" when the fuel check stopped it (a trap). */
  result: number | "stopped";
  memory: string;
  /** Units spent, as the host counts them. */
  spent: number;
}

function digest(mem: WebAssembly.Memory): string {
  const b = new Uint8Array(mem.buffer);
  let h = 2166136261;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 16777619);
  return `${b.length}:${h >>> 0}`;
}

const N = 7;

function runOriginal(bytes: Uint8Array<ArrayBuffer>): Omit<Outcome, "spent"> {
  const e = instantiate(bytes).exports;
  const result = (e.run as (n: number) => number)(N);
  return { result, memory: digest(e.memory as WebAssembly.Memory) };
}

/**
 * Runs `call` on a prepared instance with the host's protocol: refills of `slice` units, and once
 * more than `budget` units are spent the check leaves the counter negative, so the injected code
 * traps. Any other exception is a test failure.
 */
function runMetered(
  bytes: Uint8Array<ArrayBuffer>,
  budget: number,
  call: (e: WebAssembly.Exports) => number,
  slice = 1000,
): { result: number | "stopped"; spent: number; exports: WebAssembly.Exports } {
  const box: { f?: WebAssembly.Global } = {};
  let spent = 0;
  let refill = Math.min(slice, budget);
  const inst = instantiate(bytes, {
    [FUEL_IMPORT_MODULE]: {
      [FUEL_IMPORT_NAME]: () => {
        const f = box.f!;
        spent += refill - (f.value as number);
        refill = f.value as number;
        if (spent > budget) return; // stopped: the counter stays negative
        refill = Math.min(slice, budget - spent);
        f.value = refill;
      },
    },
    env: { call_backend: () => -1, host_log: () => {} },
    wasi_snapshot_preview1: new Proxy({}, { get: () => () => 0 }),
  });
  const f = box.f = inst.exports[FUEL_GLOBAL_EXPORT] as WebAssembly.Global;
  f.value = refill;
  let result: number | "stopped";
  try {
    (inst.exports[START_EXPORT] as (() => void) | undefined)?.();
    result = call(inst.exports);
  } catch (e) {
    if (!(e instanceof WebAssembly.RuntimeError) || spent <= budget) throw e;
    result = "stopped";
  }
  if (result !== "stopped") spent += refill - (f.value as number);
  return { result, spent, exports: inst.exports };
}

function runPrepared(bytes: Uint8Array<ArrayBuffer>, budget: number): Outcome {
  const r = runMetered(bytes, budget, (e) => (e.run as (n: number) => number)(N));
  const g = r.exports.__mcp_edge_guard_fuel_check_allowed; // present: the prepared module's E
  assert(g instanceof WebAssembly.Global);
  return { result: r.result, memory: digest(r.exports.memory as WebAssembly.Memory), spent: r.spent };
}

Deno.test("property: generated modules answer like the original and spend exactly their units", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 0x7fffffff }), (seed) => {
      const original = compile(generate(seed));
      assert(WebAssembly.validate(original), `seed ${seed}: the generator must emit valid modules`);
      const want = runOriginal(original);
      const totals: number[] = [];
      for (const scheme of ["cached", "global"] as FuelScheme[]) {
        const prepared = prepareGuard(original, { fuelScheme: scheme }).bytes;
        const free = runPrepared(prepared, Number.MAX_SAFE_INTEGER);
        assertEquals({ ...free, spent: 0 }, { ...want, spent: 0 }, `seed ${seed} (${scheme})`);
        totals.push(free.spent);
        const exact = runPrepared(prepared, free.spent);
        assertEquals(exact, free, `seed ${seed} (${scheme}): a budget of exactly the units spent suffices`);
        const short = runPrepared(prepared, free.spent - 1);
        assertEquals(short.result, "stopped", `seed ${seed} (${scheme}): one unit less must stop it`);
      }
      assertEquals(totals[0], totals[1], `seed ${seed}: both fuel shapes spend the same units`);
    }),
    { numRuns: 60 },
  );
});

// ---- mutations of the corpus ----

async function corpus(): Promise<Uint8Array<ArrayBuffer>[]> {
  const out: Uint8Array<ArrayBuffer>[] = [];
  for (const dir of ["hostile", "prepare"]) {
    const base = new URL(`../fixtures/wat/${dir}/`, import.meta.url);
    for await (const e of Deno.readDir(base)) {
      if (!e.name.endsWith(".wat")) continue;
      try {
        const text = await Deno.readTextFile(new URL(e.name, base));
        const mod = wabt.parseWat(e.name, text, { ...FEATURES, simd: true, threads: true });
        try {
          out.push(new Uint8Array(mod.toBinary({}).buffer));
        } finally {
          mod.destroy();
        }
      } catch {
        // a fixture wabt cannot assemble with these features is not part of this corpus
      }
    }
  }
  return out;
}

const CORPUS = await corpus();
/** Budget for every export of a mutated module, in units: a spinning export is stopped here. */
const MUTANT_BUDGET = 200_000;

Deno.test("property: corpus mutations are refused or end within their fuel budget", () => {
  assert(CORPUS.length > 20, `corpus of ${CORPUS.length} modules`);
  let prepared = 0, ran = 0;
  fc.assert(
    fc.property(
      fc.nat({ max: CORPUS.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 }),
      (which, edits) => {
        const bytes = new Uint8Array(CORPUS[which]);
        for (const [at, value] of edits) bytes[8 + (at % (bytes.length - 8))] = value;
        let out: Uint8Array<ArrayBuffer>;
        try {
          out = prepareGuard(bytes).bytes;
        } catch (e) {
          if (e instanceof GuardError) return; // refused
          throw e;
        }
        prepared++;
        assert(WebAssembly.validate(out), "a module the preparer accepts must validate");
        for (const name of ["label_agent", "label_resource", "label_response"]) {
          let r;
          try {
            r = runMetered(
              out,
              MUTANT_BUDGET,
              (e) => (e[name] as (...a: number[]) => number)(0, 0, 0, 0),
              10_000,
            );
          } catch (e) {
            // Any trap of the guard's own (or a link error of a mutated import) ends it too.
            if (e instanceof WebAssembly.RuntimeError || e instanceof WebAssembly.LinkError) continue;
            if (e instanceof RangeError || e instanceof TypeError) continue; // stack overflow, bad import use
            throw e;
          }
          ran++;
          if (r.result !== "stopped") assertLessOrEqual(r.spent, MUTANT_BUDGET);
        }
      },
    ),
    { numRuns: 300 },
  );
  assert(prepared > 0 && ran > 0, `prepared ${prepared}, ran ${ran}`);
});

// ---- bulk operations: the chunking helpers against the single operations ----

/** An operand: a kind (how it relates to the bounds) and a random value. */
const operand = fc.tuple(fc.nat({ max: 8 }), fc.nat());
type Operand = [number, number];

/**
 * An offset into something of `size` elements: 0, the end, just below or past it, inside, near
 * 2^32 (an end offset that wraps), or any 31-bit value.
 */
function offset([kind, r]: Operand, size: number): number {
  switch (kind) {
    case 0:
      return 0;
    case 1:
    case 2:
      return size;
    case 3:
      return Math.max(0, size - (r % 64));
    case 4:
      return size + 1 + (r % 16);
    case 5:
    case 6:
      return r % (size + 1);
    case 7:
      return 2 ** 32 - 1 - (r % 64);
    default:
      return r;
  }
}

/**
 * A length when `room` elements are left before the nearest end: 0, exactly up to the end, one
 * past it, inside, near 2^32, or any 31-bit value.
 */
function length([kind, r]: Operand, room: number): number {
  const fit = Math.max(0, room);
  switch (kind) {
    case 0:
      return 0;
    case 1:
    case 2:
      return fit;
    case 3:
      return fit + 1;
    case 4:
    case 5:
      return r % (fit + 1);
    case 6:
      return fit + 1 + (r % 64);
    case 7:
      return 2 ** 32 - 1 - (r % 64);
    default:
      return r;
  }
}

/** A copy's source: for a third of the kinds near its destination `d` (overlapping either way). */
function source(d: number, b: Operand, size: number): number {
  const span = Math.max(1, Math.min(64, size >> 1));
  return b[0] >= 6 ? Math.max(0, d + (b[1] % (2 * span + 1)) - span) : offset(b, size);
}

/** One op: kind (fill, copy, init, drop for memories then tables), two indices, three operands. */
const bulkOpArb = fc.tuple(
  fc.nat({ max: 7 }),
  fc.nat({ max: 1 }),
  fc.nat({ max: 1 }),
  operand,
  operand,
  operand,
);

const bulkModuleArb = fc.record({
  memories: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: 1, maxLength: 2 }),
  data: fc.array(fc.nat({ max: 300 }), { minLength: 1, maxLength: 2 }),
  tables: fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 2 }),
  elems: fc.array(fc.nat({ max: 20 }), { minLength: 1, maxLength: 2 }),
  ops: fc.array(bulkOpArb, { minLength: 1, maxLength: 10 }),
}).map((m): BulkModule => {
  const PAGE = 65_536;
  const ops = m.ops.map(([kind, i, j, a, b, n]) => {
    const mem = (k: number) => k % m.memories.length;
    const tab = (k: number) => k % m.tables.length;
    const memSize = (k: number) => m.memories[mem(k)] * PAGE;
    switch (kind) {
      case 0: {
        const d = offset(a, memSize(i));
        return `(memory.fill $m${mem(i)} ${c(d)} ${c(b[1])} ${c(length(n, memSize(i) - d))})`;
      }
      case 1: {
        const d = offset(a, memSize(i));
        const s = source(d, b, memSize(j));
        const len = length(n, Math.min(memSize(i) - d, memSize(j) - s));
        return `(memory.copy $m${mem(i)} $m${mem(j)} ${c(d)} ${c(s)} ${c(len)})`;
      }
      case 2: {
        const seg = j % m.data.length;
        const [d, s] = [offset(a, memSize(i)), offset(b, m.data[seg])];
        return `(memory.init $m${mem(i)} $d${seg} ${c(d)} ${c(s)} ${
          c(length(n, Math.min(memSize(i) - d, m.data[seg] - s)))
        })`;
      }
      case 3:
        return `(data.drop $d${j % m.data.length})`;
      case 4: {
        const d = offset(a, m.tables[tab(i)]);
        const value = b[1] % (FUNCS + 1) === FUNCS ? "(ref.null func)" : `(ref.func $f${b[1] % (FUNCS + 1)})`;
        return `(table.fill $t${tab(i)} ${c(d)} ${value} ${c(length(n, m.tables[tab(i)] - d))})`;
      }
      case 5: {
        const d = offset(a, m.tables[tab(i)]);
        const s = source(d, b, m.tables[tab(j)]);
        const len = length(n, Math.min(m.tables[tab(i)] - d, m.tables[tab(j)] - s));
        return `(table.copy $t${tab(i)} $t${tab(j)} ${c(d)} ${c(s)} ${c(len)})`;
      }
      case 6: {
        const seg = j % m.elems.length;
        const [d, s] = [offset(a, m.tables[tab(i)]), offset(b, m.elems[seg])];
        return `(table.init $t${tab(i)} $e${seg} ${c(d)} ${c(s)} ${
          c(length(n, Math.min(m.tables[tab(i)] - d, m.elems[seg] - s)))
        })`;
      }
      default:
        return `(elem.drop $e${j % m.elems.length})`;
    }
  });
  return { memories: m.memories, data: m.data, tables: m.tables, elems: m.elems, ops };
});

const BULK_PREPARATIONS: Preparation[] = [
  { scheme: "cached" },
  { scheme: "global" },
  { scheme: "cached", chunks: { bytes: 16, entries: 1 } },
  { scheme: "global", chunks: { bytes: 4_096, entries: 7 } },
];

Deno.test("property: bulk operations give the original's memories, tables and traps, and the same fuel at any chunk size", () => {
  let traps = 0, ops = 0;
  fc.assert(
    fc.property(bulkModuleArb, (m) => {
      const original = compileBulk(m);
      const want = runBulk(original, m);
      let spent: number | null = null;
      for (const p of BULK_PREPARATIONS) {
        const got = runBulk(rewriteBulk(original, p).bytes, m);
        for (let k = 0; k < m.ops.length; k++) {
          assertEquals(
            [got.outcomes[k], got.states[k]],
            [want.outcomes[k], want.states[k]],
            `${JSON.stringify(p)}, op ${k}: ${m.ops[k]}`,
          );
        }
        spent ??= got.spent;
        assertEquals(got.spent, spent, `${JSON.stringify(p)}: the same units as every other preparation`);
      }
      ops += m.ops.length;
      traps += want.outcomes.filter((o) => o !== "ok").length;
    }),
    { numRuns: 120 },
  );
  // The operands are drawn so that both sides are well represented.
  assert(traps > ops / 10 && traps < ops * 0.9, `${traps} of ${ops} ops trapped`);
});
