/**
 * Hostile guards against the metering (test/fixtures/wat/hostile/, prefixes eh_, bulk_, tail_,
 * start_, recursion_, index_, atomics_): each is refused at load or ends with the right typed error
 * within its budget, by fuel and by deadline, also when it catches exceptions of either proposal and
 * retries; and the next session on the same compiled guard answers.
 */
import {
  assert,
  assertEquals,
  assertLessOrEqual,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import type { BackendCaller, GuardContext } from "../../src/difc/guard.ts";
import { loadGuardModule, type WasmGuard, type WasmGuardOptions } from "../../src/guard/host.ts";
import {
  BULK_BYTES_PER_FUEL_UNIT,
  BULK_MEMORY_CHUNK_BYTES,
  GuardError,
  type GuardErrorKind,
} from "../../src/guard/limits.ts";
import { hostileBytes } from "../helpers/hostile_corpus.ts";
import { rewriteWithFuel } from "./bulk_harness.ts";

/** Fuel-bounded: small enough that every spinning export runs out of fuel in well under a second. */
const FUEL_BOUND = { fuel: 20_000_000, timeoutMs: 30_000 };
/** Deadline-bounded: fuel that is never reached, a short deadline. */
const TIME_BOUND = { fuel: Number.MAX_SAFE_INTEGER, timeoutMs: 300 };
/**
 * How late after the deadline a stop may come in these tests: a hang check, not a latency target. The
 * target (`limits.timeoutMs` + 10 ms) is measured by `bench/hostile_bench.ts`; tests share two cores
 * with the rest of the parallel suite (a CI run saw a stop 467 ms late), so they allow seconds.
 */
const LATE_MS = 3_000;

async function load(name: string, opts: WasmGuardOptions): Promise<WasmGuard> {
  return loadGuardModule(await hostileBytes(name), { name, ...opts });
}

function context(over: Partial<GuardContext> = {}): GuardContext {
  return {
    signal: new AbortController().signal,
    backend: () => Promise.resolve({ ok: true }),
    log: () => {},
    ...over,
  };
}

type Export = "labelAgent" | "labelResource";

/** Calls `fn` on a fresh session; the typed error it ends with and how long it took. */
async function ends(guard: WasmGuard, fn: Export, ctx = context()): Promise<{ err: GuardError; ms: number }> {
  const s = guard.open(ctx);
  const t0 = performance.now();
  const err = await assertRejects(() => s[fn]("{}"), GuardError) as GuardError;
  const ms = performance.now() - t0;
  s.close();
  return { err, ms };
}

/** The next session on the same compiled guard answers label_response. */
async function nextCallSucceeds(guard: WasmGuard): Promise<void> {
  const s = guard.open(context());
  assertEquals(await s.labelResponse("{}"), "ok");
  s.close();
}

/** Spinning fixtures and the exports that spin. */
const SPINNING: Record<string, Export[]> = {
  eh_legacy_catch_all: ["labelAgent", "labelResource"],
  eh_new_catch_all: ["labelAgent", "labelResource"],
  recursion_catch_legacy: ["labelAgent", "labelResource"],
  recursion_catch_new: ["labelAgent", "labelResource"],
  bulk_memory_fill_copy: ["labelAgent", "labelResource"],
  bulk_memory_init_grow: ["labelAgent", "labelResource"],
  bulk_table_fill_copy: ["labelAgent", "labelResource"],
  bulk_table_init_grow: ["labelAgent", "labelResource"],
  tail_call_loop: ["labelAgent", "labelResource"],
  eh_catch_import_error: ["labelResource"],
};

for (const [name, fns] of Object.entries(SPINNING)) {
  Deno.test(`${name}: ends with a fuel error at limits.fuel, and with a timeout at the deadline`, async () => {
    const byFuel = await load(name, { limits: FUEL_BOUND });
    for (const fn of fns) {
      const { err } = await ends(byFuel, fn);
      assertEquals(err.kind, "fuel", `${fn}: ${err.message}`);
      assertEquals([err.limit, err.value], ["fuel", FUEL_BOUND.fuel]);
      await nextCallSucceeds(byFuel);
    }
    const byTime = await load(name, { limits: TIME_BOUND });
    for (const fn of fns) {
      const { err, ms } = await ends(byTime, fn);
      assertEquals(err.kind, "timeout", `${fn}: ${err.message}`);
      assertLessOrEqual(ms, TIME_BOUND.timeoutMs + LATE_MS, `${fn} stopped ${ms} ms after its call began`);
      await nextCallSucceeds(byTime);
    }
  });
}

Deno.test("a guard that catches and retries is stopped by its session's signal", async () => {
  for (
    const name of ["eh_legacy_catch_all", "eh_new_catch_all", "recursion_catch_legacy", "recursion_catch_new"]
  ) {
    const guard = await load(name, { limits: TIME_BOUND });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error("client went away")), 50);
    const { err, ms } = await ends(guard, "labelAgent", context({ signal: ac.signal }));
    assertEquals(err.kind, "aborted", `${name}: ${err.message}`);
    assertStringIncludes(err.message, "client went away");
    assertLessOrEqual(ms, 50 + LATE_MS);
    await nextCallSucceeds(guard);
  }
});

Deno.test("proc_exit caught by catch_all and retried still ends the call with proc_exit", async () => {
  const guard = await load("eh_catch_import_error", { limits: FUEL_BOUND });
  const { err } = await ends(guard, "labelAgent");
  assertEquals(err.kind, "proc_exit", err.message);
  assertStringIncludes(err.message, "proc_exit(3)");
  await nextCallSucceeds(guard);
});

Deno.test("a guard retrying call_backend after the deadline gets -1 and is stopped at its next fuel point", async () => {
  let calls = 0;
  const backend: BackendCaller = () => {
    calls++;
    return new Promise(() => {}); // never answers: the deadline ends the call
  };
  const guard = await load("eh_catch_import_error", { limits: TIME_BOUND });
  const { err, ms } = await ends(guard, "labelResource", context({ backend }));
  assertEquals(err.kind, "timeout", err.message);
  assertLessOrEqual(ms, TIME_BOUND.timeoutMs + LATE_MS);
  assertEquals(calls, 1, "after the stop call_backend refuses without calling the backend");
});

Deno.test("a spinning start function with a catch_all ends the first call (fuel or deadline), every time", async () => {
  const byFuel = await load("start_spin_eh", { limits: FUEL_BOUND });
  for (let i = 0; i < 2; i++) {
    const { err } = await ends(byFuel, "labelAgent");
    assertEquals([err.kind, err.limit], ["fuel", "fuel"], err.message);
  }
  const byTime = await load("start_spin_eh", { limits: TIME_BOUND });
  const { err, ms } = await ends(byTime, "labelResource");
  assertEquals(err.kind, "timeout", err.message);
  assertLessOrEqual(ms, TIME_BOUND.timeoutMs + LATE_MS);
});

Deno.test("bulk operations pay in proportion to their length, chunk by chunk, before each chunk runs", async () => {
  // 16 MiB per memory.fill at 16 bytes per unit: 2^20 units, so a 5,000,000-unit budget pays for 4
  // fills (plus loop units) and part of the 5th: it stops at the first chunk it cannot pay for.
  const guard = await load("bulk_memory_fill_copy", { limits: { fuel: 5_000_000, timeoutMs: 30_000 } });
  const s = guard.open(context());
  const t0 = performance.now();
  const err = await assertRejects(() => s.labelAgent("{}"), GuardError) as GuardError;
  const ms = performance.now() - t0;
  assertEquals(err.kind, "fuel");
  const spent = s.usage().fuel;
  const chunkUnits = BULK_MEMORY_CHUNK_BYTES / BULK_BYTES_PER_FUEL_UNIT;
  assert(spent > 5_000_000 && spent <= 5_000_000 + chunkUnits + 10, `spent ${spent}`);
  // A hang check (seconds on a loaded machine): four 16 MiB fills, not an unbounded loop.
  assertLessOrEqual(ms, 5_000, "four 16 MiB fills, not an unbounded loop");
});

const INDEX_CASES: Record<string, string> = {
  index_local: "uses local 4",
  index_global: "uses global 0",
  index_func: "uses function 3",
  index_type: "uses type 1",
};

for (const [name, text] of Object.entries(INDEX_CASES)) {
  Deno.test(`${name}: refused at load; the rewriter itself refuses it, naming the function and offset`, async () => {
    const err = await assertRejects(() => load(name, { limits: FUEL_BOUND }), GuardError) as GuardError;
    assertEquals(err.kind, "abi" as GuardErrorKind);
    // The preparer's own defence, behind validation: the rewrite alone refuses the module.
    const bytes = await hostileBytes(name);
    const own = assertThrows(() => rewriteWithFuel(bytes), GuardError);
    assertEquals(own.kind, "abi" as GuardErrorKind);
    assertStringIncludes(own.message, text);
    assertMatch(own.message, /function \d+ uses .* at byte offset \d+|^export|^the start/);
  });
}

Deno.test("atomics_wait: refused at load; a wait on a shared memory would block past the deadline", async () => {
  const err = await assertRejects(
    () => load("atomics_wait", { limits: TIME_BOUND }),
    GuardError,
  ) as GuardError;
  assertEquals(err.kind, "abi" as GuardErrorKind);
  assertStringIncludes(err.message, "unsupported WebAssembly opcode 0xfe 0x01");
  // The rewriter itself refuses it, and wait64 too (the wait32 opcode turned into wait64).
  const bytes = await hostileBytes("atomics_wait");
  assertStringIncludes(assertThrows(() => rewriteWithFuel(bytes), GuardError).message, "0xfe 0x01");
  const at = bytes.findIndex((b, i) => b === 0xfe && bytes[i + 1] === 0x01);
  bytes[at + 1] = 0x02;
  const wait64 = assertThrows(() => rewriteWithFuel(bytes), GuardError);
  assertEquals(wait64.kind, "abi" as GuardErrorKind);
  assertStringIncludes(wait64.message, "0xfe 0x02");
});
