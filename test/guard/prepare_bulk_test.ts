/**
 * Bulk operations after preparation run through chunking helpers (`src/guard/wasm/rewrite.ts`): the
 * same results as the single operation (memory and table contents, traps and their reasons) at
 * exact boundaries, with zero lengths, end offsets that wrap around 2^32, overlapping copies in
 * both directions, dropped segments, several memories and tables; the same fuel whatever the chunk
 * size; a fuel check between chunks; helpers only for what the code uses.
 */
import { assert, assertEquals, assertGreaterOrEqual } from "@std/assert";
import {
  BULK_BYTES_PER_FUEL_UNIT,
  BULK_MEMORY_CHUNK_BYTES,
  BULK_TABLE_CHUNK_ENTRIES,
  TABLE_ENTRY_FUEL_UNITS,
} from "../../src/guard/limits.ts";
import { type BulkModule, c, compileBulk, type Preparation, rewriteBulk, runBulk } from "./bulk_harness.ts";

const PAGE = 65_536;
const PREPARATIONS: Preparation[] = [
  { scheme: "cached" },
  { scheme: "global" },
  { scheme: "cached", chunks: { bytes: 16, entries: 1 } },
  { scheme: "global", chunks: { bytes: 48, entries: 3 } },
];

/** Every preparation gives the original's outcomes and states, and all spend the same fuel. */
function assertSameAsOriginal(m: BulkModule): ReturnType<typeof runBulk> {
  const original = compileBulk(m);
  const want = runBulk(original, m);
  let spent: number | null = null;
  for (const p of PREPARATIONS) {
    const got = runBulk(rewriteBulk(original, p).bytes, m);
    const label = JSON.stringify(p);
    for (let k = 0; k < m.ops.length; k++) {
      assertEquals(
        [got.outcomes[k], got.states[k]],
        [want.outcomes[k], want.states[k]],
        `${label}, op ${k}: ${m.ops[k]}`,
      );
    }
    spent ??= got.spent;
    assertEquals(got.spent, spent, `${label}: fuel does not depend on the chunk size or the shape`);
  }
  return want;
}

const fill = (mem: number, d: number, v: number, n: number) =>
  `(memory.fill $m${mem} ${c(d)} ${c(v)} ${c(n)})`;
const copy = (dm: number, sm: number, d: number, s: number, n: number) =>
  `(memory.copy $m${dm} $m${sm} ${c(d)} ${c(s)} ${c(n)})`;
const init = (mem: number, seg: number, d: number, s: number, n: number) =>
  `(memory.init $m${mem} $d${seg} ${c(d)} ${c(s)} ${c(n)})`;
const tfill = (t: number, i: number, f: number | null, n: number) =>
  `(table.fill $t${t} ${c(i)} ${f === null ? "(ref.null func)" : `(ref.func $f${f})`} ${c(n)})`;
const tcopy = (dt: number, st: number, d: number, s: number, n: number) =>
  `(table.copy $t${dt} $t${st} ${c(d)} ${c(s)} ${c(n)})`;
const tinit = (t: number, seg: number, d: number, s: number, n: number) =>
  `(table.init $t${t} $e${seg} ${c(d)} ${c(s)} ${c(n)})`;

Deno.test("bulk helpers: memory.fill at the boundaries, zero lengths and wrapping end offsets", () => {
  const run = assertSameAsOriginal({
    memories: [1],
    data: [],
    tables: [],
    elems: [],
    ops: [
      fill(0, 0, 1, 0),
      fill(0, PAGE, 2, 0),
      fill(0, PAGE + 1, 3, 0),
      fill(0, PAGE - 16, 4, 16),
      fill(0, PAGE - 15, 5, 16),
      fill(0, 100, 6, 1000),
      fill(0, 0, 7, PAGE),
      fill(0, 1, 8, PAGE),
      fill(0, 0xffffffff, 9, 1),
      fill(0, 1, 10, 0xffffffff),
      fill(0, 0xfffffff0, 11, 0x20),
      fill(0, 3, 0x1234, 77),
    ],
  });
  assertEquals(run.outcomes.map((o) => o === "ok"), [
    true,
    true,
    false,
    true,
    false,
    true,
    true,
    false,
    false,
    false,
    false,
    true,
  ]);
});

Deno.test("bulk helpers: overlapping memory.copy forwards and backwards, across memories, out of bounds", () => {
  const run = assertSameAsOriginal({
    memories: [1, 2],
    data: [],
    tables: [],
    elems: [],
    ops: [
      copy(0, 0, 10, 0, 1000), // dst > src, overlapping: backwards
      copy(0, 0, 0, 10, 1000), // dst < src, overlapping: forwards
      copy(0, 0, 5, 5, 300),
      copy(0, 0, 1, 0, PAGE - 1),
      copy(0, 0, 0, 1, PAGE - 1),
      copy(0, 0, PAGE - 100, 0, 100),
      copy(0, 0, 0, PAGE - 99, 100), // source end out of bounds
      copy(0, 0, PAGE - 99, 0, 100), // destination end out of bounds
      copy(0, 1, 0, PAGE, PAGE), // from the second memory's upper half
      copy(1, 0, 2 * PAGE - 50, 0, 50),
      copy(1, 0, 2 * PAGE - 49, 0, 50),
      copy(1, 1, 3, 0, 2 * PAGE - 3),
      copy(0, 0, 0xfffffff0, 0, 0x20),
      copy(0, 0, 0, 0xfffffff0, 0x20),
      copy(0, 0, PAGE, PAGE, 0),
      copy(0, 0, PAGE + 1, 0, 0),
      copy(0, 0, 0, PAGE + 1, 0),
    ],
  });
  assertEquals(run.outcomes.filter((o) => o !== "ok").length, 7);
});

Deno.test("bulk helpers: memory.init within the segment's current length, before and after data.drop", () => {
  const run = assertSameAsOriginal({
    memories: [1, 1],
    data: [40, 600],
    tables: [],
    elems: [],
    ops: [
      init(0, 0, 0, 0, 40),
      init(0, 0, 100, 1, 40), // beyond the segment
      init(0, 0, PAGE - 10, 0, 10),
      init(0, 0, PAGE - 9, 0, 10), // beyond the memory
      init(0, 0, PAGE, 40, 0),
      init(0, 0, PAGE + 1, 40, 0),
      init(0, 0, 0, 41, 0),
      init(1, 1, 7, 3, 597),
      init(1, 1, 0, 0xffffffff, 2),
      "(data.drop $d0)",
      init(0, 0, 0, 0, 0), // an empty range of a dropped segment is fine
      init(0, 0, 0, 1, 0), // ... but not past its (now zero) length
      init(0, 0, 0, 0, 1),
      init(1, 1, 1000, 0, 600),
    ],
  });
  assertEquals(run.outcomes.filter((o) => o !== "ok").length, 7);
});

Deno.test("bulk helpers: table.fill, table.copy and table.init on two tables, with drops", () => {
  const run = assertSameAsOriginal({
    memories: [1],
    data: [],
    tables: [10, 23],
    elems: [6, 9],
    ops: [
      tfill(0, 0, 3, 10),
      tfill(0, 10, 1, 0),
      tfill(0, 11, 1, 0),
      tfill(0, 5, null, 6),
      tfill(1, 2, null, 17),
      tfill(1, 0xffffffff, 2, 2),
      tcopy(1, 1, 1, 0, 22), // overlapping, backwards
      tcopy(1, 1, 0, 2, 21), // overlapping, forwards
      tcopy(0, 1, 0, 13, 10),
      tcopy(0, 1, 1, 13, 10),
      tcopy(1, 0, 20, 0, 3),
      tinit(1, 1, 14, 0, 9),
      tinit(1, 1, 15, 0, 9),
      tinit(0, 0, 4, 1, 5),
      tinit(0, 0, 4, 2, 5),
      "(elem.drop $e0)",
      tinit(0, 0, 10, 0, 0),
      tinit(0, 0, 0, 1, 0),
      tinit(1, 1, 0, 0, 9),
    ],
  });
  assertEquals(run.outcomes.filter((o) => o !== "ok").length, 7);
});

Deno.test("bulk helpers: the fuel check runs between the chunks of one operation", () => {
  const n = 4 * PAGE;
  const m: BulkModule = { memories: [4], data: [], tables: [], elems: [], ops: [fill(0, 0, 1, n)] };
  const prepared = rewriteBulk(compileBulk(m), { scheme: "cached" }).bytes;
  // A refill of one chunk's units: the counter runs out at every chunk of the fill.
  const perChunk = BULK_MEMORY_CHUNK_BYTES / BULK_BYTES_PER_FUEL_UNIT;
  const base = runBulk(prepared, { ...m, ops: [] }, perChunk);
  const run = runBulk(prepared, m, perChunk);
  assertEquals(run.outcomes, ["ok"]);
  assertGreaterOrEqual(run.checks - base.checks, n / BULK_MEMORY_CHUNK_BYTES - 1);
  assertEquals(
    run.spent - base.spent,
    n / BULK_BYTES_PER_FUEL_UNIT + 1,
    "the fill plus its function's entry",
  );

  const t: BulkModule = {
    memories: [1],
    data: [],
    tables: [3 * BULK_TABLE_CHUNK_ENTRIES],
    elems: [],
    ops: [],
  };
  const tOps = { ...t, ops: [tfill(0, 0, 2, 3 * BULK_TABLE_CHUNK_ENTRIES)] };
  const tPrepared = rewriteBulk(compileBulk(tOps), { scheme: "global" }).bytes;
  const tUnits = BULK_TABLE_CHUNK_ENTRIES * TABLE_ENTRY_FUEL_UNITS;
  const tBase = runBulk(tPrepared, t, tUnits);
  const tRun = runBulk(tPrepared, tOps, tUnits);
  assertGreaterOrEqual(tRun.checks - tBase.checks, 2);
});

Deno.test("bulk helpers: one per operation and index immediates used, none (and no new type) without bulk ops", () => {
  const helpers = (ops: string[], memories = [1, 1]) =>
    rewriteBulk(compileBulk({ memories, data: [4], tables: [4, 4], elems: [2], ops }), { scheme: "cached" })
      .helpers;
  assertEquals(helpers([]), 0);
  assertEquals(helpers(["(data.drop $d0)", "(elem.drop $e0)"]), 0);
  assertEquals(helpers([fill(0, 0, 0, 1), fill(0, 5, 0, 1), fill(1, 0, 0, 1)]), 2);
  assertEquals(helpers([copy(0, 1, 0, 0, 1), copy(1, 0, 0, 0, 1), copy(0, 1, 1, 1, 1)]), 2);
  assertEquals(
    helpers([init(0, 0, 0, 0, 1), init(1, 0, 0, 0, 1), tinit(0, 0, 0, 0, 1), tinit(1, 0, 0, 0, 1)]),
    4,
  );
  assertEquals(
    helpers([tfill(0, 0, 1, 1), tfill(1, 0, null, 1), tcopy(0, 1, 0, 0, 1), tcopy(0, 1, 0, 0, 2)]),
    3,
  );

  // Without bulk operations the output is what it was before helpers existed: no extra type.
  const plain = compileBulk({ memories: [1], data: [], tables: [], elems: [], ops: ["(nop)"] });
  const { bytes } = rewriteBulk(plain, { scheme: "cached" });
  assert(WebAssembly.validate(bytes));
  const types = (b: Uint8Array) =>
    WebAssembly.Module.imports(new WebAssembly.Module(b as Uint8Array<ArrayBuffer>));
  assertEquals(types(bytes).length, 1, "only the fuel check is imported");
});
