/**
 * The instance pool (`src/guard/host.ts`, "Instance pool"; `limits.idleInstances`): an instance whose
 * session ended with no failure and no call on its stack is reused by a later session after its
 * memories, mutable globals and memory sizes are set back to a new instance's, and only while its
 * tables are unchanged. A reused instance never shows a byte or a global of the request before;
 * failed, aborted and table-changing instances are never reused.
 *
 * Probes: test/fixtures/wat/host/snapshot_probe.wat (dumps memory and globals as hex, then writes its
 * input into both; its policy's first byte picks a side effect: 'T' table.set, 'G' table.grow) and
 * pool_probe.wat (commands in its header). `verifyPoolReset` compares every reused instance's
 * memories and globals with a new instance's, right before its first call.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import fc from "fast-check";
import wabtInit from "wabt";
import type { BackendCaller, GuardContext } from "../../src/difc/guard.ts";
import { loadGuardModule, type WasmGuard } from "../../src/guard/host.ts";
import type { GuardLimits } from "../../src/guard/limits.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);
/** The memo off: every session must run on an instance to be observed. */
const LIMITS: Partial<GuardLimits> = { callMemoBytes: 0, labelAgentSnapshots: 0, initialOutputBytes: 4096 };

function wat(name: string, text: string, features: Record<string, boolean> = {}): Uint8Array<ArrayBuffer> {
  const mod = wabt.parseWat(name, text, { bulk_memory: true, mutable_globals: true, ...features });
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

async function load(fixture: string, limits: Partial<GuardLimits> = {}): Promise<WasmGuard> {
  const text = await Deno.readTextFile(new URL(fixture, FIXTURES));
  return await loadGuardModule(wat(fixture, text, { reference_types: true }), {
    name: fixture,
    limits: { ...LIMITS, ...limits },
    verifyPoolReset: true,
  });
}

function ctx(
  backend: BackendCaller = () => Promise.resolve({ content: [{ type: "text", text: "MARKER" }] }),
) {
  return { signal: new AbortController().signal, backend, log: () => {} } as GuardContext;
}

const hex = (s: string) =>
  [...new TextEncoder().encode(s)].map((b) => b.toString(16).padStart(2, "0")).join("");
const POLICY = '{"allow-only":{"min-integrity":"none","repos":"all"}}';

async function request(guard: WasmGuard, policy: string, secret: string) {
  const s = guard.open(ctx());
  try {
    await s.labelAgent(policy);
    const resource = await s.labelResource(`${secret}-resource`);
    const response = await s.labelResponse(`${secret}-response`);
    return { resource, response };
  } finally {
    s.close();
  }
}

Deno.test("instance pool: a reused instance starts with a new instance's memory and globals, never the request before's", async () => {
  const guard = await load("snapshot_probe.wat");
  const first = await request(guard, POLICY, "MARKER-A");
  // Positive control: within its request the probe sees its own data (memory and globals).
  assert(first.response.includes(hex("MARKER-A-resource")));
  for (let i = 0; i < 5; i++) {
    const next = await request(guard, POLICY, `other-${i}`);
    assertEquals(next.resource, first.resource, "the same state as the first, new instance");
    assert(!next.resource.includes(hex("MARKER")) && !next.response.includes(hex("MARKER")));
  }
  const st = guard.memoryPoolStatus().instances;
  assertEquals([st.recycled, st.reused, st.idle], [true, 5, 1]);
  // Off: the same answers from new instances.
  const off = await load("snapshot_probe.wat", { idleInstances: 0 });
  assertEquals((await request(off, POLICY, "x")).resource, first.resource);
  assertEquals(off.memoryPoolStatus().instances.reused, 0);
});

Deno.test("instance pool: an instance whose table changed is never reused", async () => {
  for (const policy of ["T" + POLICY, "G" + POLICY]) {
    const guard = await load("snapshot_probe.wat");
    const a = await request(guard, policy, "a");
    const b = await request(guard, policy, "b");
    assertEquals(b.resource, a.resource);
    const st = guard.memoryPoolStatus();
    assertEquals([st.instances.reused, st.instances.dropped, st.reused], [0, 2, 1], policy[0]);
  }
});

Deno.test("instance pool: failed, aborted and closed-while-suspended sessions give no instance back", async () => {
  const guard = await load("pool_probe.wat");
  const s = guard.open(ctx());
  await s.labelAgent("");
  await assertRejects(() => s.labelResource("Z\x51")); // traps on a new memory, past the visible size
  s.close();
  let release!: () => void;
  const held = new Promise<unknown>((r) => release = () => r({ content: [] }));
  const t = guard.open(ctx(() => held));
  await t.labelAgent("");
  const call = t.labelResource("BX"); // suspended in call_backend
  await new Promise((r) => setTimeout(r, 10));
  t.close();
  release();
  await assertRejects(() => call);
  const ac = new AbortController();
  const u = guard.open({ ...ctx(), signal: ac.signal });
  await u.labelAgent("");
  ac.abort();
  await assertRejects(() => u.labelResource("S"));
  u.close();
  assertEquals(guard.memoryPoolStatus().instances.kept, 0);
});

Deno.test("instance pool: what the guard and the host wrote, grew into and wrote past is gone for the next session", async () => {
  const guard = await load("pool_probe.wat");
  const scan = (a: string) => ({ pages: parseInt(a.slice(0, 8), 16), nonZero: parseInt(a.slice(8), 16) });
  const run = async (...commands: string[]) => {
    const s = guard.open(ctx());
    try {
      await s.labelAgent("");
      const out = [];
      for (const c of commands) out.push(await s.labelResource(c));
      return out;
    } finally {
      s.close();
    }
  };
  // Q everywhere, grown to 4 pages; a write past the visible size on the (then 2-page) reused memory;
  // a call_backend answer (MARKER) and random bytes in blocks the guard never writes itself.
  await run("WQ");
  await run("ZR");
  await run("K", "R", "BX");
  for (let i = 0; i < 3; i++) {
    const [seen, data] = await run("S", "D");
    assertEquals(scan(seen), { pages: 2, nonZero: 0 });
    assertEquals(data, "DATA");
    // Grown first (a session's own earlier answers would be inside the grown pages).
    assertEquals(scan((await run("G"))[0]), { pages: 4, nonZero: 0 });
  }
  assertEquals(guard.memoryPoolStatus().instances.reused, 8);
});

/** A module whose label_resource writes memory and a mutable global; generated per property run. */
function writesModule(writes: { addr: number; value: number }[], global: number): Uint8Array<ArrayBuffer> {
  const body = writes.map((w) => `(i32.store8 (i32.const ${w.addr}) (i32.const ${w.value}))`).join("\n");
  return wat(
    "writes.wat",
    `(module
      (memory (export "memory") 2 4)
      (global $g (mut i32) (i32.const 5))
      (global $h (mut i64) (i64.const 6))
      (data (i32.const 4090) "DATA-STRADDLING")
      (func (export "label_agent") (param i32 i32 i32 i32) (result i32)
        (i32.store (local.get 2) (global.get $g)) (i32.const 4))
      (func (export "label_resource") (param i32 i32 i32 i32) (result i32)
        ${body}
        (global.set $g (i32.const ${global}))
        (global.set $h (i64.const ${global}))
        (drop (memory.grow (i32.const 1)))
        (i32.const 0))
      (func (export "label_response") (param i32 i32 i32 i32) (result i32) (i32.const 0)))`,
  );
}

Deno.test("property: a reused instance equals a new one (memory byte for byte, globals, sizes) whatever was written", async () => {
  const write = fc.record({
    addr: fc.tuple(fc.integer({ min: 0, max: 31 }), fc.integer({ min: -9, max: 9 }))
      .map(([block, d]) => Math.max(0, block * 4096 + d)),
    value: fc.integer({ min: 1, max: 255 }),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.array(write, { minLength: 1, maxLength: 8 }),
      fc.integer(),
      async (writes, global) => {
        const guard = await loadGuardModule(writesModule(writes, global), {
          name: "writes",
          limits: LIMITS,
          verifyPoolReset: true,
        });
        const answers = [];
        for (let i = 0; i < 4; i++) {
          const s = guard.open(ctx());
          try {
            answers.push(await s.labelAgent(""));
            await s.labelResource("x");
          } finally {
            s.close();
          }
        }
        // label_agent reads $g before label_resource sets it: 5 in every session.
        assertEquals(new Set(answers).size, 1);
        assertEquals(guard.memoryPoolStatus().instances.reused, 3);
      },
    ),
    { numRuns: Number(Deno.env.get("FUZZ_RUNS") ?? 60) },
  );
});
