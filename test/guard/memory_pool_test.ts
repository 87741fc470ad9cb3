/**
 * The memory pool (`src/guard/host.ts`, "Memory pool"; `wasm/rewrite.ts`, "Pooled memories"): a
 * session that reuses a finished session's memory sees exactly what a new memory holds (zeros and
 * its own data segments, the module's minimum size) and never a byte of the earlier request, also
 * when that request grew the memory, wrote past the size it saw, or was closed while its call was
 * suspended in `call_backend`; guards answer and spend fuel exactly as with new memories.
 *
 * The probe is test/fixtures/wat/host/pool_probe.wat (commands in its header).
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import fc from "fast-check";
import wabtInit from "wabt";
import type { BackendCaller, GuardContext } from "../../src/difc/guard.ts";
import { buildLabelAgentPayload, canonicalJson } from "../../src/difc/payload.ts";
import { DEMO_ISSUES } from "../../src/demo/upstream.ts";
import { loadGuardModule, type WasmGuard } from "../../src/guard/host.ts";
import type { GuardLimits } from "../../src/guard/limits.ts";
import {
  FUEL_GLOBAL_EXPORT,
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  prepareGuard,
} from "../../src/guard/prepare.ts";
import { pagesExportName, pooledMemoryImportName, WRITTEN_IMPORT_NAME } from "../../src/guard/wasm/caps.ts";
import { START_EXPORT } from "../../src/guard/wasm/host_signatures.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);
const RUST_GUARD_URL = new URL("../../guards/rust-bench/rust-bench-guard.wasm", import.meta.url);

function wat(name: string, text: string): Uint8Array<ArrayBuffer> {
  const mod = wabt.parseWat(name, text, { bulk_memory: true, mutable_globals: true });
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/**
 * Small output buffers: the probe uses the direct layout inside its 2-page minimum. The call memo
 * and the instance pool are off: these tests need every session to make a new instance on a
 * (reused) memory (instance_pool_test.ts runs the same probes with instances reused).
 */
const PROBE_LIMITS: Partial<GuardLimits> = { initialOutputBytes: 4096, callMemoBytes: 0, idleInstances: 0 };

async function probe(limits: Partial<GuardLimits> = {}): Promise<WasmGuard> {
  const text = await Deno.readTextFile(new URL("pool_probe.wat", FIXTURES));
  return await loadGuardModule(wat("pool_probe.wat", text), {
    name: "pool-probe",
    limits: { ...PROBE_LIMITS, ...limits },
    verifyPoolReset: true,
  });
}

function ctx(backend: BackendCaller = () => Promise.resolve({ content: [] })): GuardContext {
  return { signal: new AbortController().signal, backend, log: () => {} };
}

/** "<pages><count>" from the probe's scan, as numbers. */
function scan(answer: string): { pages: number; nonZero: number } {
  assertEquals(answer.length, 16, `scan answer ${JSON.stringify(answer)}`);
  return { pages: parseInt(answer.slice(0, 8), 16), nonZero: parseInt(answer.slice(8), 16) };
}

/**
 * One session: label_agent (empty input: nothing of it stays in memory), then each command through
 * label_resource.
 */
async function session(guard: WasmGuard, ...commands: string[]): Promise<string[]> {
  const s = guard.open(ctx());
  try {
    await s.labelAgent("");
    const out: string[] = [];
    for (const c of commands) out.push(await s.labelResource(c));
    return out;
  } finally {
    s.close();
  }
}

Deno.test("pool: a reused memory holds nothing of the request before, at the size a new memory has", async () => {
  const guard = await probe();
  assertEquals((await session(guard, "WQ")).length, 1); // writes Q everywhere, grows to 4 pages
  assertEquals(guard.memoryPoolStatus().idle, 1);
  // Reused: the guard sees 2 pages (not the 4 the memory really has), no Q, its own data segment.
  const [seen, data] = await session(guard, "S", "D");
  assertEquals(scan(seen), { pages: 2, nonZero: 0 });
  assertEquals(data, "DATA");
  // The pages the first request grew into and filled are zero too once this one grows into them.
  assertEquals(scan((await session(guard, "G"))[0]), { pages: 4, nonZero: 0 });
  const st = guard.memoryPoolStatus();
  assertEquals([st.created, st.reused], [1, 2], "one memory served all three sessions");
});

Deno.test("pool: a write past the size the guard sees lands in zeroed pages and never reaches the next request", async () => {
  const guard = await probe();
  await session(guard, "WQ"); // the memory is now 4 pages for real
  // On the reused memory, 100 bytes past the 2 pages the guard sees is inside the real memory:
  // no trap (the one documented difference from a new memory) ...
  assertEquals(await session(guard, "ZR"), [""]);
  // ... and the next request that grows over it finds zeros.
  assertEquals(scan((await session(guard, "G"))[0]), { pages: 4, nonZero: 0 });
  // Without the pool the same store traps, as on any new memory.
  const fresh = await probe({ memoryPoolBytes: 0 });
  await session(fresh, "WQ");
  await assertRejects(() => session(fresh, "ZR"), Error, "out of bounds");
  assertEquals(fresh.memoryPoolStatus().reused, 0);
});

Deno.test("pool: what the host writes (call_backend answers, WASI) is recorded and zeroed like the guard's own writes", async () => {
  const guard = await probe();
  const s = guard.open(ctx(() => Promise.resolve({ content: [{ type: "text", text: "MARKER" }] })));
  await s.labelAgent("");
  assertEquals(await s.labelResource("K"), "");
  assertEquals(await s.labelResource("R"), "");
  assert(scan(await s.labelResource("S")).nonZero > 64, "the answer and the random bytes are in memory");
  s.close();
  assertEquals(scan((await session(guard, "S"))[0]), { pages: 2, nonZero: 0 });
  assertEquals(guard.memoryPoolStatus().reused, 1);
});

Deno.test("pool: a session closed while suspended in call_backend keeps its memory; its resumed writes reach no other request", async () => {
  let release!: () => void;
  const held = new Promise<unknown>((r) => release = () => r({ content: [] }));
  const guard = await probe();
  const a = guard.open(ctx(() => held));
  await a.labelAgent("");
  const call = a.labelResource("BX"); // suspended in call_backend
  await new Promise((r) => setTimeout(r, 10));
  a.close();
  assertEquals(guard.memoryPoolStatus().kept, 0, "not given back while its call is on the stack");
  // A session opened now gets a new memory, not A's.
  const b = guard.open(ctx());
  await b.labelAgent("");
  release();
  await assertRejects(() => call); // A resumes, writes X at 1024..1040, is stopped
  assertEquals(scan(await b.labelResource("S")), { pages: 2, nonZero: 0 });
  b.close();
  const st = guard.memoryPoolStatus();
  assertEquals(st.created, 2);
  assertEquals(st.kept, 2, "A's memory went back once its call ended, then B's");
  // Whichever of the two the next sessions get, no X.
  for (let i = 0; i < 3; i++) assertEquals(scan((await session(guard, "S"))[0]), { pages: 2, nonZero: 0 });
});

/** What a set of the probe counts before any session writes: its 1-page record and "DATA"'s block. */
const PROBE_SET_BASE = 65536 + 4096;

Deno.test("pool: bounded by the memory sets made resident, not their size; a set above half the bound is let go; 0 turns it off", async () => {
  // "WQ" writes blocks 0-31 and the 2 grown pages (blocks 32-63): 64 blocks a set beyond the base.
  const perSet = PROBE_SET_BASE + 64 * 4096;
  const guard = await probe({ memoryPoolBytes: 700 * 1024 });
  const sessions = [0, 1, 2].map(() => guard.open(ctx()));
  for (const s of sessions) {
    await s.labelAgent("");
    await s.labelResource("WQ");
  }
  for (const s of sessions) s.close();
  let st = guard.memoryPoolStatus();
  assertEquals([st.idle, st.idleBytes, st.kept, st.dropped], [2, 2 * perSet, 2, 1]);
  // Writing the same blocks again makes nothing more resident: the count stays.
  await session(guard, "WQ");
  st = guard.memoryPoolStatus();
  assertEquals([st.idle, st.idleBytes, st.reused, st.kept], [2, 2 * perSet, 1, 3]);
  // Above half of the bound: never kept.
  const small = await probe({ memoryPoolBytes: 600 * 1024 });
  await session(small, "WQ");
  st = small.memoryPoolStatus();
  assertEquals([st.idle, st.dropped], [0, 1]);
  const off = await probe({ memoryPoolBytes: 0 });
  await session(off, "S");
  await session(off, "S");
  st = off.memoryPoolStatus();
  assertEquals([st.pooled, st.created, st.reused, st.idle], [true, 2, 0, 0]);
});

Deno.test("pool: pages a set never wrote cost nothing; every block a session or the host wrote counts, once", async () => {
  const guard = await probe({ memoryPoolBytes: 8 << 20 });
  // "G" grows 2 pages and only reads them: the host's output (block 30) and input (block 31) are all
  // that was written, so with the block after them (which a reset also writes) the set counts three
  // blocks beyond its base although it holds 4 pages.
  await session(guard, "G");
  let st = guard.memoryPoolStatus();
  assertEquals(st.idleBytes, PROBE_SET_BASE + 3 * 4096);
  // "K": call_backend's answer is written by the host at 8192 (block 2), a block the guard never
  // writes; with the block after it, two more.
  await session(guard, "K");
  st = guard.memoryPoolStatus();
  assertEquals(st.idleBytes, PROBE_SET_BASE + 5 * 4096);
  // "R": random_get writes 20480..20544 (block 5) and the block after it: two more.
  await session(guard, "R");
  st = guard.memoryPoolStatus();
  assertEquals([st.created, st.idle, st.idleBytes], [1, 1, PROBE_SET_BASE + 7 * 4096]);
});

Deno.test("pool: a guard that writes a new block each request cannot grow a kept set past the bound", async () => {
  // Hostile: every session grows to page n + 1 and writes one byte at page n, a block no earlier
  // session of the set wrote. Each session alone writes little; what the set holds resident grows.
  const creep = wat(
    "creep.wat",
    `(module
      (memory (export "memory") 2 64)
      (func (export "label_agent") (param i32 i32 i32 i32) (result i32) (i32.const 0))
      (func (export "label_resource") (param $in i32) (param $len i32) (param $out i32) (param $size i32)
        (result i32) (local $n i32)
        (local.set $n (i32.load8_u (local.get $in)))
        (if (i32.gt_u (i32.add (local.get $n) (i32.const 1)) (memory.size))
          (then (drop (memory.grow (i32.sub (i32.add (local.get $n) (i32.const 1)) (memory.size))))))
        (i32.store8 (i32.mul (local.get $n) (i32.const 65536)) (i32.const 77))
        (i32.const 0))
      (func (export "label_response") (param i32 i32 i32 i32) (result i32) (i32.const 0)))`,
  );
  const cap = 512 * 1024;
  const guard = await loadGuardModule(creep, {
    name: "creep",
    limits: { ...PROBE_LIMITS, memoryPoolBytes: cap },
    verifyPoolReset: true,
  });
  const seen: number[] = [];
  for (let n = 2; n <= 25; n++) {
    await session(guard, String.fromCharCode(n));
    const st = guard.memoryPoolStatus();
    assert(st.idleBytes <= cap / 2, `after page ${n}: ${st.idleBytes} bytes idle`);
    seen.push(st.idleBytes);
  }
  // The record page, then the written block at page n and the block after it, 8 KiB more each time
  // (the input and output blocks once): the set is counted by every block it ever wrote.
  assertEquals(seen.slice(0, 23), Array.from({ length: 23 }, (_, i) => 65536 + 16384 + i * 8192));
  // Page 25 takes it past half the bound: it is let go, not kept with 26 pages' worth of writes.
  const st = guard.memoryPoolStatus();
  assertEquals([seen[23], st.idle, st.created, st.dropped], [0, 0, 1, 1]);
});

Deno.test("pool: demo and Rust guard answer and spend fuel exactly as with new memories, request after request", async () => {
  const toolResult = (value: unknown) => ({ content: [{ type: "text", text: JSON.stringify(value) }] });
  const backend: BackendCaller = (_tool, args) =>
    Promise.resolve(toolResult({
      full_name: (args as { repo: string }).repo,
      visibility: (args as { repo: string }).repo.endsWith("1") ? "public" : "private",
    }));
  const agent = buildLabelAgentPayload(DEMO_POLICY).json;
  for (const url of [DEMO_GUARD_URL, RUST_GUARD_URL]) {
    const bytes = await Deno.readFile(url);
    const pooled = await loadGuardModule(bytes, {
      name: "pooled",
      limits: { idleInstances: 0 },
      verifyPoolReset: true,
    });
    const recycled = await loadGuardModule(bytes, { name: "recycled", verifyPoolReset: true });
    const fresh = await loadGuardModule(bytes, { name: "fresh", limits: { memoryPoolBytes: 0 } });
    for (let i = 0; i < 40; i++) {
      const repo = `acme/repo-${i % 5}`;
      const items = DEMO_ISSUES["acme/web"].slice(0, 1 + (i % 3));
      const resource = canonicalJson({ capabilities: {}, tool_args: { repo }, tool_name: "list_issues" });
      const response = canonicalJson({
        capabilities: {},
        tool_args: { repo },
        tool_name: "list_issues",
        tool_result: toolResult({ repo, total_count: items.length, items }),
      });
      const run = async (g: WasmGuard) => {
        const s = g.open(ctx(backend));
        try {
          const out = [
            await s.labelAgent(agent),
            await s.labelResource(resource),
            await s.labelResponse(response),
          ];
          return { out, fuel: s.usage().fuel, pages: s.usage().memoryPages };
        } finally {
          s.close();
        }
      };
      const expected = await run(fresh);
      assertEquals(await run(pooled), expected, `${url.pathname} request ${i}`);
      assertEquals(await run(recycled), expected, `${url.pathname} request ${i}, reused instance`);
    }
    const st = pooled.memoryPoolStatus();
    assertEquals([st.created, st.reused], [1, 39], url.pathname);
    const rt = recycled.memoryPoolStatus();
    assertEquals([rt.created, rt.reused, rt.instances.reused], [1, 0, 39], url.pathname);
  }
});

/**
 * memory.size / memory.grow of a prepared module on a memory that is really `real` pages, against
 * the original module on a new memory: the same answers for every grow sequence.
 */
Deno.test("property: on a pooled memory of any real size, memory.grow and memory.size answer as on a new memory", () => {
  const source = wat(
    "grow.wat",
    `(module (memory (export "memory") 1 6)
      (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
      (func (export "size") (result i32) (memory.size))
      (func (export "label_agent") (param i32 i32 i32 i32) (result i32) (i32.const 0))
      (func (export "label_resource") (param i32 i32 i32 i32) (result i32) (i32.const 0))
      (func (export "label_response") (param i32 i32 i32 i32) (result i32) (i32.const 0)))`,
  );
  const prepared = new WebAssembly.Module(prepareGuard(source).bytes);
  const original = new WebAssembly.Module(source);
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.oneof(fc.integer({ min: 0, max: 7 }), fc.constantFrom(-1, 0x7fffffff, 0x80000000)), {
        maxLength: 8,
      }),
      (real, deltas) => {
        const memory = new WebAssembly.Memory({ initial: real, maximum: 6 });
        const fuel: { g?: WebAssembly.Global } = {};
        const refill = () => void (fuel.g!.value = 1 << 30); // a grow of 2^32-1 pages charges a lot
        const p = new WebAssembly.Instance(prepared, {
          [FUEL_IMPORT_MODULE]: {
            [FUEL_IMPORT_NAME]: refill,
            [pooledMemoryImportName(0)]: memory,
            [WRITTEN_IMPORT_NAME]: new WebAssembly.Memory({ initial: 1, maximum: 1 }),
          },
        }).exports;
        fuel.g = p[FUEL_GLOBAL_EXPORT] as WebAssembly.Global;
        (p[FUEL_GLOBAL_EXPORT] as WebAssembly.Global).value = 1_000_000;
        (p[START_EXPORT] as (() => void) | undefined)?.();
        const o = new WebAssembly.Instance(original).exports;
        const seen = (e: WebAssembly.Exports) => [
          (e.size as () => number)(),
          ...deltas.map((d) => [(e.grow as (n: number) => number)(d), (e.size as () => number)()]),
        ];
        assertEquals(seen(p), seen(o), `real ${real}, deltas ${deltas}`);
        assertEquals((p[pagesExportName(0)] as WebAssembly.Global).value, (o.size as () => number)());
        assert(memory.buffer.byteLength >= real * 65536);
      },
    ),
    { numRuns: 300 },
  );
});

/** One memory write of the generated modules: an instruction, its memory, address and offset. */
interface Write {
  op: number;
  mem: 0 | 1;
  addr: number;
  offset: number;
}

/** Every instruction kind that writes memory; `$m` is the memory, `A` the address expression. */
const WRITES: ((m: string, a: string, o: number) => string)[] = [
  (m, a, o) => `(i32.store ${m} offset=${o} ${a} (i32.const 0x51515151))`,
  (m, a, o) => `(i64.store ${m} offset=${o} ${a} (i64.const 0x5151515151515151))`,
  (m, a, o) => `(f32.store ${m} offset=${o} ${a} (f32.const 1.5))`,
  (m, a, o) => `(f64.store ${m} offset=${o} ${a} (f64.const 2.5))`,
  (m, a, o) => `(i32.store8 ${m} offset=${o} ${a} (i32.const 0x51))`,
  (m, a, o) => `(i32.store16 ${m} offset=${o} ${a} (i32.const 0x5151))`,
  (m, a, o) => `(i64.store8 ${m} offset=${o} ${a} (i64.const 0x51))`,
  (m, a, o) => `(i64.store16 ${m} offset=${o} ${a} (i64.const 0x5151))`,
  (m, a, o) => `(i64.store32 ${m} offset=${o} ${a} (i64.const 0x51515151))`,
  (m, a, o) => `(v128.store ${m} offset=${o} ${a} (v128.const i32x4 0x51 0x52 0x53 0x54))`,
  (m, a, o) =>
    `(v128.store8_lane ${m} offset=${o} 3 ${a} (v128.const i8x16 81 81 81 81 81 81 81 81 81 81 81 81 81 81 81 81))`,
  (m, a, o) => `(v128.store64_lane ${m} offset=${o} 1 ${a} (v128.const i64x2 0x51 0x5151))`,
  (m, a, o) => `(i32.atomic.store ${m} offset=${o} (i32.and ${a} (i32.const -4)) (i32.const 0x51))`,
  (m, a, o) => `(drop (i64.atomic.rmw.add ${m} offset=${o} (i32.and ${a} (i32.const -8)) (i64.const 0x51)))`,
  (m, a, o) => `(drop (i32.atomic.rmw8.xchg_u ${m} offset=${o} ${a} (i32.const 0x51)))`,
  (m, a, o) =>
    `(drop (i64.atomic.rmw.cmpxchg ${m} offset=${o} (i32.and ${a} (i32.const -8)) (i64.const 0) (i64.const 0x51)))`,
  (m, a, o) =>
    `(drop (i32.atomic.rmw16.cmpxchg_u ${m} offset=${o} (i32.and ${a} (i32.const -2)) (i32.const 0) (i32.const 0x51)))`,
  (m, a, o) => `(memory.fill ${m} (i32.add ${a} (i32.const ${o})) (i32.const 0x51) (i32.const 5000))`,
  (m, a, o) => `(memory.copy ${m} $a (i32.add ${a} (i32.const ${o})) (i32.const 100) (i32.const 70))`,
  (m, a, o) => `(memory.init ${m} $d (i32.add ${a} (i32.const ${o})) (i32.const 0) (i32.const 4))`,
  // grow first: the write lands in a page a new memory would not have yet
  (m, a, o) => `(drop (memory.grow ${m} (i32.const 1))) (i32.store8 ${m} offset=${o} ${a} (i32.const 0x51))`,
];

/** wabt features of the generated modules (`multi_memory` is missing from wabt's typings). */
const WRITE_FEATURES = { bulk_memory: true, multi_memory: true, simd: true, threads: true };

function writesModule(writes: Write[]): Uint8Array<ArrayBuffer> {
  const body = writes.map((w) => WRITES[w.op](w.mem === 0 ? "$a" : "$b", `(i32.const ${w.addr})`, w.offset));
  const text = `(module
    (memory $a (export "memory") 2 4)
    (memory $b 1 3)
    (data $d "QQQQ")
    (data (memory $a) (i32.const 100) "DATA")
    (func (export "label_agent") (param i32 i32 i32 i32) (result i32) (i32.const 0))
    (func (export "label_resource") (param i32 i32 i32 i32) (result i32) ${body.join("\n")} (i32.const 0))
    (func (export "label_response") (param i32 i32 i32 i32) (result i32) (i32.const 0)))`;
  const mod = wabt.parseWat("writes.wat", text, WRITE_FEATURES);
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

Deno.test("property: every kind of memory write is recorded: a reused memory equals a new one, byte for byte", async () => {
  // Addresses next to 4 KiB block boundaries (writes that straddle two blocks), in both memories.
  const write = fc.record({
    op: fc.integer({ min: 0, max: WRITES.length - 1 }),
    mem: fc.constantFrom(0 as const, 1 as const),
    addr: fc.tuple(fc.integer({ min: 0, max: 31 }), fc.integer({ min: -9, max: 9 }))
      .map(([block, d]) => Math.max(0, block * 4096 + d)),
    offset: fc.constantFrom(0, 3, 4096, 20_000),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(write, { minLength: 1, maxLength: 6 }), async (writes) => {
      const guard = await loadGuardModule(writesModule(writes), {
        name: "writes",
        limits: PROBE_LIMITS,
        verifyPoolReset: true,
      });
      for (let i = 0; i < 4; i++) {
        const s = guard.open(ctx());
        try {
          await s.labelAgent("");
          await s.labelResource("x"); // may trap (a write out of bounds): the memory goes back all the same
        } catch (e) {
          assert(!String(e).includes("differs from a new one"), String(e));
        } finally {
          s.close();
        }
      }
      assertEquals(guard.memoryPoolStatus().reused, 3);
    }),
    { numRuns: Number(Deno.env.get("FUZZ_RUNS") ?? 60) },
  );
});
