/**
 * The call memo (`src/guard/memo.ts`, `limits.callMemoBytes`): a session whose calls repeat an
 * earlier session's is answered without an instance, with exactly what its own fresh instance would
 * have answered; answers that depended on `call_backend` only while the `call_backend` cache still
 * holds those answers; never a failure, a `random_get` run, or another instance's state; a session
 * that leaves the memo replays its earlier calls on its new instance and fails closed if they
 * answer differently.
 *
 * The probe (test/fixtures/wat/host/memo_probe.wat) answers "<F>[<previous input>]<extra>", so every
 * answer shows what the instance's earlier calls left in memory.
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import fc from "fast-check";
import wabtInit from "wabt";
import type { GuardContext } from "../../src/difc/guard.ts";
import { buildLabelAgentPayload, canonicalJson } from "../../src/difc/payload.ts";
import { DEMO_ISSUES } from "../../src/demo/upstream.ts";
import { loadGuardModule, type WasmGuard } from "../../src/guard/host.ts";
import type { GuardLimits } from "../../src/guard/limits.ts";
import { MEMO_MAX_INPUT_CHARS } from "../../src/guard/memo.ts";
import { BackendCache } from "../../src/mcp/backend_cache.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);
const RUST_GUARD_URL = new URL("../../guards/rust-bench/rust-bench-guard.wasm", import.meta.url);
const TTL = 60_000;

async function probe(limits: Partial<GuardLimits> = {}): Promise<WasmGuard> {
  const text = await Deno.readTextFile(new URL("memo_probe.wat", FIXTURES));
  const mod = wabt.parseWat("memo_probe.wat", text, { bulk_memory: true });
  try {
    return await loadGuardModule(new Uint8Array(mod.toBinary({}).buffer), {
      name: "memo-probe",
      limits: { initialOutputBytes: 4096, fuel: 2_000_000, ...limits },
    });
  } finally {
    mod.destroy();
  }
}

/**
 * A `call_backend` behind a real `BackendCache` (as the gateway wires it), with a clock the test
 * moves and an upstream answer the test can change.
 */
class Upstream {
  now = 0;
  answer = "first";
  calls = 0;
  readonly cache = new BackendCache({ now: () => this.now });
  ctx(log: GuardContext["log"] = () => {}): GuardContext {
    const lookup = { serverId: "s" };
    return {
      signal: new AbortController().signal,
      backend: (tool, args, signal) =>
        this.cache.lookup({ ...lookup, tool, args }, TTL, () => {
          this.calls++;
          return Promise.resolve({ content: [{ type: "text", text: this.answer }] });
        }, signal),
      backendPeek: (tool, args) => this.cache.peek({ ...lookup, tool, args }, TTL),
      log,
    };
  }
}

async function calls(guard: WasmGuard, ctx: GuardContext, inputs: string[]) {
  const s = guard.open(ctx);
  try {
    const out = [];
    for (const [i, input] of inputs.entries()) {
      const fn = i === 0 ? "labelAgent" : i === 1 ? "labelResource" : "labelResponse";
      out.push(await s[fn](input));
    }
    const u = s.usage();
    return { out, memoHits: u.memoHits, fuel: u.fuel, backendCalls: u.backendCalls, memories: u.memories };
  } finally {
    s.close();
  }
}

Deno.test("memo: a repeated session is answered without an instance, with its own fresh answers", async () => {
  const guard = await probe();
  const up = new Upstream();
  const first = await calls(guard, up.ctx(), ["P", "r1", "p1"]);
  assertEquals(first.out, ["A[]", "R[P]", "P[r1]"]);
  assertEquals(first.memoHits, 0);
  assert(first.fuel > 0);
  const again = await calls(guard, up.ctx(), ["P", "r1", "p1"]);
  assertEquals(again.out, first.out);
  assertEquals([again.memoHits, again.fuel, again.memories], [3, 0, 0], "no instance, no fuel");
  assertEquals(guard.memo!.stats().hits, 3);
});

Deno.test("memo: a call's answer depends on the whole history of its instance (no entry of another history)", async () => {
  const guard = await probe();
  const up = new Upstream();
  await calls(guard, up.ctx(), ["P", "MARKER-A", "x"]); // P[MARKER-A] is recorded after MARKER-A
  // The same last call after another history: a miss, run on a new instance after the replay.
  const b = await calls(guard, up.ctx(), ["P", "b", "x"]);
  assertEquals(b.out, ["A[]", "R[P]", "P[b]"]);
  assertEquals(b.memoHits, 1, "label_agent only; label_resource(b) was never seen");
  for (const o of b.out) assert(!o.includes("MARKER"), o);
  // A different first call: nothing of P's chain applies.
  const c = await calls(guard, up.ctx(), ["Q", "MARKER-A", "x"]);
  assertEquals(c.out, ["A[]", "R[Q]", "P[MARKER-A]"]);
  assertEquals(c.memoHits, 0);
  // The replayed state is the real one: the next call runs on it.
  const d = await calls(guard, up.ctx(), ["P", "r1", "y"]);
  assertEquals(d.out, ["A[]", "R[P]", "P[r1]"]);
  // Both histories that end in label_response(x) are remembered, each with its own answer.
  const a2 = await calls(guard, up.ctx(), ["P", "MARKER-A", "x"]);
  const b2 = await calls(guard, up.ctx(), ["P", "b", "x"]);
  assertEquals([a2.out[2], b2.out[2], a2.memoHits, b2.memoHits], ["P[MARKER-A]", "P[b]", 3, 3]);
});

Deno.test("memo: a call that failed without ending the session ends the session's memo (its state is unknown)", async () => {
  const guard = await probe();
  const up = new Upstream();
  const s = guard.open(up.ctx());
  await s.labelAgent("P");
  await assertRejects(() => s.labelResource("E-MARKER"), Error, "error code");
  assertEquals(await s.labelResponse("x"), "P[E-MARKER]", "the session goes on from the failed call's state");
  s.close();
  const t = guard.open(up.ctx());
  await t.labelAgent("P");
  assertEquals(await t.labelResponse("x"), "P[P]");
  t.close();
});

Deno.test("memo: an answer that used call_backend is given only while the cache holds that very answer", async () => {
  const guard = await probe();
  const up = new Upstream();
  up.answer = "MARKER-OLD";
  const first = await calls(guard, up.ctx(), ["P", "B1"]);
  assertStringIncludes(first.out[1], "MARKER-OLD");
  const hit = await calls(guard, up.ctx(), ["P", "B1"]);
  assertEquals([hit.out, hit.memoHits, hit.backendCalls, up.calls], [first.out, 2, 0, 1]);
  // The cached answer expires; the upstream now says something else.
  up.now += TTL + 1;
  up.answer = "new";
  const after = await calls(guard, up.ctx(), ["P", "B1"]);
  assertEquals(after.out[1], first.out[1].replace("MARKER-OLD", "new"));
  assertEquals([after.memoHits, after.backendCalls, up.calls], [1, 1, 2]);
  // A cleared cache: the same.
  up.cache.clear();
  up.answer = "newer";
  const cleared = await calls(guard, up.ctx(), ["P", "B1"]);
  assertStringIncludes(cleared.out[1], "newer");
  assertEquals(cleared.memoHits, 1);
  // Without a way to look into the cache (no backendPeek), a call_backend answer is never reused.
  const { backendPeek: _, ...noPeek } = up.ctx();
  const blind = await calls(guard, noPeek, ["P", "B1"]);
  assertEquals([blind.memoHits, blind.backendCalls], [1, 1]);
});

Deno.test("memo: the call_backend cache turned off (TTL 0) means every call_backend run runs again", async () => {
  const guard = await probe();
  let n = 0;
  const ctx = (): GuardContext => {
    const cache = new BackendCache();
    return {
      signal: new AbortController().signal,
      backend: (tool, args, signal) =>
        cache.lookup({ serverId: "s", tool, args }, 0, () => Promise.resolve({ n: ++n }), signal),
      backendPeek: (tool, args) => cache.peek({ serverId: "s", tool, args }, 0),
      log: () => {},
    };
  };
  const a = await calls(guard, ctx(), ["P", "B"]);
  const b = await calls(guard, ctx(), ["P", "B"]);
  assertEquals([a.out[1], b.out[1]], ['R[P]{"n":1}', 'R[P]{"n":2}']);
  assertEquals(b.memoHits, 1);
});

Deno.test("memo: failures and random_get runs are never remembered; log lines are written again on a hit", async () => {
  const guard = await probe();
  const up = new Upstream();
  for (let i = 0; i < 2; i++) {
    const s = guard.open(up.ctx());
    await s.labelAgent("P");
    await assertRejects(() => s.labelResource("S"), Error, "fuel");
    assert(s.usage().fuel > 1_000_000, "each session spins on its own instance");
    s.close();
  }
  const r1 = await calls(guard, up.ctx(), ["P", "N"]);
  const r2 = await calls(guard, up.ctx(), ["P", "N"]);
  assertEquals([r1.memoHits, r2.memoHits], [1, 1], "label_agent only");
  assert(r1.out[1] !== r2.out[1], `${r1.out[1]} / ${r2.out[1]}: each ran random_get itself`);
  // After random_get nothing more of that session is recorded.
  const r3 = await calls(guard, up.ctx(), ["P", "N", "z"]);
  assertEquals(r3.memoHits, 1);
  const lines: string[] = [];
  const log: GuardContext["log"] = (_level, msg) => lines.push(msg);
  await calls(guard, up.ctx(log), ["P", "L-line"]);
  const hit = await calls(guard, up.ctx(log), ["P", "L-line"]);
  assertEquals(hit.memoHits, 2);
  assertEquals(lines, ["L-line", "L-line"]);
  // Leaving the memo replays the call without writing its line a third time.
  const left = await calls(guard, up.ctx(log), ["P", "L-line", "z"]);
  assertEquals([left.memoHits, left.out[2]], [2, "P[L-line]"]);
  assertEquals(lines, ["L-line", "L-line", "L-line"]);
});

Deno.test("memo: a remembered answer the guard no longer gives fails the session closed when it is replayed", async () => {
  const guard = await probe();
  const up = new Upstream();
  await calls(guard, up.ctx(), ["P", "r"]);
  // Tamper with the entry (what a non-deterministic guard would amount to).
  const entry = guard.memo!.find(1, "label_resource", "r") ?? guard.memo!.find(0, "label_agent", "P");
  assert(entry);
  (entry as { output: string }).output = "FORGED";
  const s = guard.open(up.ctx());
  try {
    const seen = [await s.labelAgent("P"), await s.labelResource("r")];
    assert(seen.includes("FORGED"), "the forged answer is what the memo gives");
    await assertRejects(() => s.labelResponse("next"), Error, "differently");
    await assertRejects(() => s.labelResponse("next"), Error, "unavailable");
  } finally {
    s.close();
  }
});

Deno.test("memo: bounded in bytes and entries; long inputs are not kept; 0 turns it off", async () => {
  const guard = await probe({ callMemoBytes: 64 * 1024 });
  const up = new Upstream();
  for (let i = 0; i < 200; i++) await calls(guard, up.ctx(), ["P", `r${i}-${"x".repeat(100)}`]);
  const st = guard.memo!.stats();
  assert(st.bytes <= 64 * 1024 && st.entries < 200 && st.entries > 10, JSON.stringify(st));
  const long = "r".repeat(MEMO_MAX_INPUT_CHARS + 1);
  const big = await probe({ initialOutputBytes: 40_000 });
  await calls(big, up.ctx(), ["P", long]);
  const again = await calls(big, up.ctx(), ["P", long]);
  assertEquals(again.memoHits, 1);
  const off = await probe({ callMemoBytes: 0 });
  assertEquals(off.memo, null);
  await calls(off, up.ctx(), ["P", "r"]);
  assertEquals((await calls(off, up.ctx(), ["P", "r"])).memoHits, 0);
});

Deno.test("memo: a closed or aborted session is refused as before, memo or not", async () => {
  const guard = await probe();
  const up = new Upstream();
  await calls(guard, up.ctx(), ["P"]);
  const s = guard.open(up.ctx());
  s.close();
  await assertRejects(() => s.labelAgent("P"), Error, "closed");
  const ac = new AbortController();
  ac.abort();
  const a = guard.open({ ...up.ctx(), signal: ac.signal });
  await assertRejects(() => a.labelAgent("P"), Error, "abort");
  a.close();
});

Deno.test("property: demo and Rust guard answer with the memo exactly as without it, request after request", async () => {
  const toolResult = (value: unknown) => ({ content: [{ type: "text", text: JSON.stringify(value) }] });
  const agent = buildLabelAgentPayload(DEMO_POLICY).json;
  for (const url of [DEMO_GUARD_URL, RUST_GUARD_URL]) {
    const bytes = await Deno.readFile(url);
    const memo = await loadGuardModule(bytes, { name: "memo" });
    const plain = await loadGuardModule(bytes, { name: "plain", limits: { callMemoBytes: 0 } });
    const cache = new BackendCache();
    const ctx = (): GuardContext => ({
      signal: new AbortController().signal,
      backend: (tool, args, signal) =>
        cache.lookup({ serverId: "s", tool, args }, TTL, () => {
          const repo = (args as { repo: string }).repo;
          return Promise.resolve(
            toolResult({ full_name: repo, visibility: repo.endsWith("1") ? "public" : "private" }),
          );
        }, signal),
      backendPeek: (tool, args) => cache.peek({ serverId: "s", tool, args }, TTL),
      log: () => {},
    });
    let hits = 0;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 2 }), async (r, n) => {
        const repo = `acme/repo-${r}`;
        const items = DEMO_ISSUES["acme/web"].slice(0, 1 + n);
        const inputs = [
          agent,
          canonicalJson({ capabilities: {}, tool_args: { repo }, tool_name: "list_issues" }),
          canonicalJson({
            capabilities: {},
            tool_args: { repo },
            tool_name: "list_issues",
            tool_result: toolResult({ repo, total_count: items.length, items }),
          }),
        ];
        const a = await calls(memo, ctx(), inputs);
        const b = await calls(plain, ctx(), inputs);
        assertEquals(a.out, b.out);
        hits += a.memoHits ?? 0;
      }),
      { numRuns: 40 },
    );
    assert(hits > 40, `${url.pathname}: the memo answered ${hits} calls`);
  }
});
