/**
 * Modules made of bulk operations (`memory.fill/copy/init`, `table.fill/copy/init`, `data.drop`,
 * `elem.drop`) over several memories and tables, run op by op with and without the fuel rewrite,
 * recording after every op whether it trapped (and why) and the full state (every memory's bytes,
 * every table's entries). Used by `prepare_bulk_test.ts` and the bulk property of
 * `prepare_property_test.ts`.
 *
 * @module
 */
import wabtInit from "wabt";
import { FUEL_GLOBAL_EXPORT, FUEL_IMPORT_MODULE, FUEL_IMPORT_NAME } from "../../src/guard/prepare.ts";
import { parseModule } from "../../src/guard/wasm/module.ts";
import { type BulkChunks, type FuelScheme, rewriteModule } from "../../src/guard/wasm/rewrite.ts";
import { instantiate } from "../helpers/instantiate.ts";

const wabt = await wabtInit();
const FEATURES = { bulk_memory: true, reference_types: true, multi_memory: true };

/** Functions `$f0..` that tables hold; `$fK` returns K + 1, so a table entry reads back as a number. */
export const FUNCS = 6;

/** What a generated module declares; every op is one exported function `op<K>`. */
export interface BulkModule {
  /** Pages of each memory (`$m0`, ...). */
  memories: number[];
  /** Lengths of the passive data segments (`$d0`, ...). */
  data: number[];
  /** Entries of each funcref table (`$t0`, ...), initialised with a pattern of functions and nulls. */
  tables: number[];
  /** Lengths of the passive element segments (`$e0`, ...). */
  elems: number[];
  /** WAT instructions, one op each. */
  ops: string[];
}

const hex = (b: number) => `\\${b.toString(16).padStart(2, "0")}`;
/** A funcref element expression: null or one of the functions, by a pattern. */
const item = (k: number) => k % (FUNCS + 1) === FUNCS ? "(ref.null func)" : `(ref.func $f${k % (FUNCS + 1)})`;

/** The module's text. Memories are filled with a position-dependent pattern by the export `init`. */
export function bulkWat(m: BulkModule): string {
  const out: string[] = ["(module"];
  m.memories.forEach((p, i) => out.push(`(memory $m${i} (export "m${i}") ${p})`));
  m.data.forEach((n, i) => {
    const bytes = Array.from({ length: n }, (_, j) => hex((j * 29 + i * 101 + 7) & 0xff)).join("");
    out.push(`(data $d${i} "${bytes}")`);
  });
  for (let k = 0; k < FUNCS; k++) out.push(`(func $f${k} (result i32) (i32.const ${k + 1}))`);
  out.push(`(elem declare func ${Array.from({ length: FUNCS }, (_, k) => `$f${k}`).join(" ")})`);
  m.tables.forEach((n, i) => {
    out.push(`(table $t${i} (export "t${i}") ${n} funcref)`);
    const items = Array.from({ length: n }, (_, j) => item(j * 5 + i * 3 + 1)).join(" ");
    out.push(`(elem (table $t${i}) (i32.const 0) funcref ${items})`);
  });
  m.elems.forEach((n, i) => {
    out.push(`(elem $e${i} funcref ${Array.from({ length: n }, (_, j) => item(j * 3 + i + 2)).join(" ")})`);
  });
  const init = m.memories.map((_, i) =>
    `(local.set $a (i32.const 0))
     (loop $l${i}
       (i32.store $m${i} (local.get $a) (i32.add (i32.mul (local.get $a) (i32.const 0x9e3779b1)) (i32.const ${i})))
       (local.set $a (i32.add (local.get $a) (i32.const 4)))
       (br_if $l${i} (i32.lt_u (local.get $a) (i32.shl (memory.size $m${i}) (i32.const 16)))))`
  ).join("\n");
  out.push(`(func (export "init") (local $a i32) ${init})`);
  m.ops.forEach((op, k) => out.push(`(func (export "op${k}") ${op})`));
  out.push(")");
  return out.join("\n");
}

export function compileBulk(m: BulkModule): Uint8Array<ArrayBuffer> {
  return compileWat("bulk.wat", bulkWat(m), FEATURES);
}

/** Assembles and validates WAT text with wabt's `features` (names resolved). */
export function compileWat(
  name: string,
  text: string,
  features: Record<string, boolean>,
): Uint8Array<ArrayBuffer> {
  const mod = wabt.parseWat(name, text, features);
  try {
    mod.resolveNames();
    (mod as unknown as { validate(features: object): void }).validate(features);
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/** How to prepare: the fuel shape and the helpers' chunk sizes (default: the production ones). */
export interface Preparation {
  scheme: FuelScheme;
  chunks?: BulkChunks;
}

/** The fuel rewrite alone (the module is not a guard), as the preparer runs it. */
export function rewriteBulk(
  bytes: Uint8Array,
  p: Preparation,
): { bytes: Uint8Array<ArrayBuffer>; helpers: number } {
  const out = rewriteModule(parseModule(bytes), {
    maxMemoryPages: 64,
    fuel: {
      importModule: FUEL_IMPORT_MODULE,
      importName: FUEL_IMPORT_NAME,
      globalExport: FUEL_GLOBAL_EXPORT,
      initial: 0,
      scheme: p.scheme,
      bulkChunks: p.chunks,
    },
  });
  return { bytes: out.bytes, helpers: out.bulkHelpers };
}

/** The fuel rewrite alone (no validation), as the preparer runs it on a validated guard. */
export function rewriteWithFuel(bytes: Uint8Array): Uint8Array {
  return rewriteModule(parseModule(bytes), {
    maxMemoryPages: 8,
    fuel: {
      importModule: FUEL_IMPORT_MODULE,
      importName: FUEL_IMPORT_NAME,
      globalExport: FUEL_GLOBAL_EXPORT,
      initial: 1,
    },
  }).bytes;
}

/** What a run did, op by op. */
export interface BulkRun {
  /** Per op: "ok" or the trap's message. */
  outcomes: string[];
  /** Per op: the state after it (memory digests, table entries). */
  states: string[];
  /** Fuel units spent over the whole run (prepared runs only). */
  spent: number;
  /** Calls of the fuel check (prepared runs only). */
  checks: number;
}

function digest(bytes: Uint8Array): string {
  let h = 2166136261;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 16777619);
  return `${bytes.length}:${(h >>> 0).toString(16)}`;
}

function state(e: WebAssembly.Exports, m: BulkModule): string {
  const mems = m.memories.map((_, i) => digest(new Uint8Array((e[`m${i}`] as WebAssembly.Memory).buffer)));
  const tables = m.tables.map((_, i) => {
    const t = e[`t${i}`] as WebAssembly.Table;
    return Array.from({ length: t.length }, (_, j) => (t.get(j) as (() => number) | null)?.() ?? 0).join(",");
  });
  return [...mems, ...tables].join(" | ");
}

/**
 * Runs `init`, then every op in order on one instance, catching traps (a trap leaves the instance
 * usable). A prepared module gets a fuel check that refills `slice` units each time and counts.
 */
export function runBulk(bytes: Uint8Array<ArrayBuffer>, m: BulkModule, slice = 1_000_000): BulkRun {
  const box: { f?: WebAssembly.Global } = {};
  let spent = 0;
  let checks = 0;
  const inst = instantiate(bytes, {
    [FUEL_IMPORT_MODULE]: {
      [FUEL_IMPORT_NAME]: () => {
        checks++;
        spent += slice - (box.f!.value as number);
        box.f!.value = slice;
      },
    },
  });
  const e = inst.exports;
  const f = e[FUEL_GLOBAL_EXPORT];
  if (f instanceof WebAssembly.Global) {
    box.f = f;
    f.value = slice;
  }
  (e.init as () => void)();
  const outcomes: string[] = [];
  const states: string[] = [];
  m.ops.forEach((_, k) => {
    try {
      (e[`op${k}`] as () => void)();
      outcomes.push("ok");
    } catch (err) {
      if (!(err instanceof WebAssembly.RuntimeError)) throw err;
      outcomes.push(err.message);
    }
    states.push(state(e, m));
  });
  if (box.f) spent += slice - (box.f.value as number);
  return { outcomes, states, spent, checks };
}

/** The i32 operand `v` (any 32-bit value) as WAT. */
export const c = (v: number) => `(i32.const ${v | 0})`;
