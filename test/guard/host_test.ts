/**
 * The guard host against hand-written WAT guards (test/fixtures/wat/host/): every call-protocol rule
 * of guard-abi.md §1.2-1.4 and every limit.
 */
import { assert, assertEquals, assertGreaterOrEqual, assertRejects, assertStringIncludes } from "@std/assert";
import wabtInit from "wabt";
import type { BackendCaller, GuardContext, GuardSession } from "../../src/difc/guard.ts";
import { loadGuardModule, WasmGuard, type WasmGuardOptions } from "../../src/guard/host.ts";
import { assertJspi } from "../../src/guard/jspi.ts";
import { GuardError, type GuardErrorKind } from "../../src/guard/limits.ts";
import { preparedRecord, prepareGuard } from "../../src/guard/prepare.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);

async function wat(name: string): Promise<Uint8Array<ArrayBuffer>> {
  const text = await Deno.readTextFile(new URL(`${name}.wat`, FIXTURES));
  const mod = wabt.parseWat(`${name}.wat`, text, { bulk_memory: true, mutable_globals: true });
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

function load(name: string, opts: WasmGuardOptions = {}): Promise<WasmGuard> {
  return wat(name).then((bytes) => loadGuardModule(bytes, { name, ...opts }));
}

interface LogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

function context(
  over: Partial<GuardContext> = {},
): { ctx: GuardContext; logs: LogLine[]; msgs: () => string[] } {
  const logs: LogLine[] = [];
  const ctx: GuardContext = {
    signal: new AbortController().signal,
    backend: () => Promise.reject(new Error("no backend")),
    log: (level, msg, fields) => logs.push({ level, msg, fields }),
    ...over,
  };
  return { ctx, logs, msgs: () => logs.map((l) => l.msg) };
}

async function rejectsKind(
  p: Promise<unknown>,
  kind: GuardErrorKind,
  includes?: string,
): Promise<GuardError> {
  const e = await assertRejects(() => p, GuardError);
  const err = e as GuardError;
  assertEquals(err.kind, kind, `expected kind ${kind}, got ${err.kind}: ${err.message}`);
  if (includes) assertStringIncludes(err.message, includes);
  return err;
}

const MiB = 1024 * 1024;

// ---- call protocol ----

Deno.test("JSPI is available on this runtime", () => {
  assertJspi();
});

Deno.test("alloc path: input copied, output read, out then in freed after the call", async () => {
  const guard = await load("echo_alloc");
  const { ctx, msgs } = context();
  const s = guard.open(ctx);
  const input = JSON.stringify({ "allow-only": { repos: "all", "min-integrity": "none" } });
  assertEquals(await s.labelAgent(input), input);
  assertEquals(msgs(), ["alloc", "alloc", "call", "free-out", "free-in"]);
  assertEquals(await s.labelResource("ünïcode ✓"), "ünïcode ✓");
  assertEquals(s.usage().memoryPages, 65); // 2 pages + what the bump allocator grew for 4 MiB
  s.close();
});

Deno.test("label_response sees the injected tool_args (input_len > 50)", async () => {
  const guard = await load("echo_alloc");
  const s = guard.open(context().ctx);
  assertEquals(await s.labelResponse("{}"), "short");
  assertEquals(
    await s.labelResponse(
      JSON.stringify({ capabilities: {}, tool_args: { owner: "acme", repo: "web" }, tool_name: "get_file" }),
    ),
    "long",
  );
});

Deno.test("direct path: output at the end of memory, input right before it, memory grown", async () => {
  const guard = await load("echo_direct");
  const s = guard.open(context().ctx);
  assertEquals(await s.labelAgent('{"a":1}'), '{"a":1}');
  assertEquals(await s.labelResource("x".repeat(1000)), "EA");
  // required = input + 4 MiB + 64 KiB, from 1 page: ceil((required - 64 KiB) / 64 KiB) pages added.
  assertEquals(s.usage().memoryPages, 1 + Math.ceil((7 + 4 * MiB + 65536 - 65536) / 65536));
  assertEquals(await s.labelResponse("{}"), "");
});

Deno.test("input above maxInputBytes fails before any guard call; the session stays usable", async () => {
  const guard = await load("echo_alloc", { limits: { maxInputBytes: 16 } });
  const { ctx, msgs } = context();
  const s = guard.open(ctx);
  const err = await rejectsKind(
    s.labelAgent("x".repeat(17)),
    "input_size",
    "input too large: 17 bytes (max 16)",
  );
  assertEquals([err.limit, err.value], ["maxInputBytes", 16]);
  assertEquals(msgs(), []);
  assertEquals(await s.labelAgent("ok"), "ok");
});

Deno.test("-2 without hint doubles 4 → 8 → 16 MiB, then 'exceeds maximum'", async () => {
  const guard = await load("output_codes");
  const { ctx, msgs } = context();
  const err = await rejectsKind(
    guard.open(ctx).labelAgent("{}"),
    "output_size",
    "guard requires buffer of 33554432 bytes which exceeds maximum of 16777216 bytes",
  );
  assertEquals(err.limit, "maxOutputBytes");
  assertEquals(msgs().filter((m) => m === "attempt").length, 3);
});

Deno.test("-2 with a 5 MiB hint retries once with exactly that size", async () => {
  const guard = await load("output_codes");
  const { ctx, msgs } = context();
  assertEquals(await guard.open(ctx).labelResource("{}"), "{}");
  assertEquals(msgs().filter((m) => m === "attempt").length, 2);
});

Deno.test("-2 forever with a hint: 'failed after 3 attempts'", async () => {
  const guard = await load("output_codes");
  await rejectsKind(
    guard.open(context().ctx).labelResponse("{}"),
    "output_size",
    "failed after 3 attempts, buffer size 5242880 still insufficient",
  );
});

Deno.test("return 0 is empty output, 2 is two zero bytes, other negatives are guard errors", async () => {
  const guard = await load("misc_returns");
  const s = guard.open(context().ctx);
  assertEquals(await s.labelAgent("{}"), "");
  assertEquals(await s.labelResource("{}"), "\0\0");
  const err = await rejectsKind(
    s.labelResponse("{}"),
    "guard_error",
    "WASM function returned error code: -5",
  );
  assertEquals(err.value, -5);
  assertEquals(await s.labelResponse("{}"), "ok", "an error code does not end the session");
});

Deno.test("an output length beyond memory is an error", async () => {
  const guard = await load("huge_output");
  await rejectsKind(
    guard.open(context().ctx).labelAgent("{}"),
    "guard_error",
    "failed to read output from WASM memory (len=100000000)",
  );
});

Deno.test("a guard without memory loads but every call fails with 'WASM module has no memory'", async () => {
  const guard = await load("no_memory");
  await rejectsKind(guard.open(context().ctx).labelAgent("{}"), "memory", "WASM module has no memory");
});

Deno.test("load rejects modules that break the export rules", async () => {
  const cases: Array<[string, string]> = [
    ["no_result", "must have signature (i32,i32,i32,i32)->i32"],
    ["wrong_signature", "label_resource must have signature (i32,i32,i32,i32)->i32"],
    ["missing_label_agent", "must export label_agent"],
    ["start_only", "TinyGo"],
    ["empty", "must export label_resource and label_response"],
  ];
  for (const [name, text] of cases) {
    await rejectsKind(load(name), "abi", text);
  }
});

Deno.test("an unprepared compiled module is checked for names, arity and imports", async () => {
  const missing = await WebAssembly.compile(await wat("missing_label_agent"));
  try {
    new WasmGuard(missing);
    throw new Error("accepted");
  } catch (e) {
    assert(e instanceof GuardError && e.kind === "abi", String(e));
  }
  const wrong = new WasmGuard(await WebAssembly.compile(await wat("wrong_signature")));
  await rejectsKind(wrong.open(context().ctx).labelAgent("{}"), "abi", "got 2 parameters");
});

Deno.test("hostile imports are rejected at load", async () => {
  const text = `(module (import "env" "secret" (func)) (memory (export "memory") 1)
    (func (export "label_agent") (param i32 i32 i32 i32) (result i32) (i32.const 0))
    (func (export "label_resource") (param i32 i32 i32 i32) (result i32) (i32.const 0))
    (func (export "label_response") (param i32 i32 i32 i32) (result i32) (i32.const 0)))`;
  const m = wabt.parseWat("x.wat", text);
  const bytes = new Uint8Array(m.toBinary({}).buffer);
  m.destroy();
  await rejectsKind(loadGuardModule(bytes), "abi", "env.secret");
  assertEquals(
    (() => {
      try {
        new WasmGuard(new WebAssembly.Module(bytes));
      } catch (e) {
        return (e as GuardError).kind;
      }
    })(),
    "abi",
  );
});

// ---- traps and session lifetime ----

Deno.test("a trap ends the session with the wasm error; the next session is unaffected", async () => {
  const guard = await load("trap");
  const s = guard.open(context().ctx);
  await rejectsKind(s.labelResource("{}"), "trap", "unreachable");
  await rejectsKind(s.labelAgent("{}"), "trap", "unavailable after a previous failure");
  const next = guard.open(context().ctx);
  assertEquals(await next.labelAgent("{}"), "ok");
});

Deno.test("deep recursion (stack overflow) is a trap", async () => {
  const guard = await load("spin");
  await rejectsKind(guard.open(context().ctx).labelResource("{}"), "trap", "stack");
});

Deno.test("proc_exit ends the call with GuardError('proc_exit')", async () => {
  const guard = await load("proc_exit");
  const err = await rejectsKind(guard.open(context().ctx).labelAgent("{}"), "proc_exit", "proc_exit(3)");
  assertEquals(err.value, 3);
});

Deno.test("a closed session refuses calls", async () => {
  const guard = await load("echo_direct");
  const s = guard.open(context().ctx);
  s.close();
  s.close();
  await rejectsKind(s.labelAgent("{}"), "guard_error", "closed");
});

Deno.test("fresh instance per session: state written in one session is invisible in the next", async () => {
  const guard = await load("state");
  const a = guard.open(context().ctx);
  assertEquals(await a.labelAgent("{}"), "11");
  assertEquals(await a.labelAgent("{}"), "22");
  const b = guard.open(context().ctx);
  assertEquals(await b.labelAgent("{}"), "11");
});

// ---- CPU limits ----

Deno.test("an infinite loop runs out of fuel; the error names the limit", async () => {
  const guard = await load("spin", { limits: { fuel: 5_000_000, fuelSlice: 100_000 } });
  const s = guard.open(context().ctx);
  const err = await rejectsKind(s.labelAgent("{}"), "fuel", "limits.fuel=5000000");
  assertEquals([err.limit, err.value], ["fuel", 5_000_000]);
  assertEquals(s.usage().fuel, 5_000_001);
  await rejectsKind(s.labelResponse("{}"), "fuel", "unavailable");
});

Deno.test("an infinite loop is aborted by the session signal", async () => {
  const guard = await load("spin");
  const ac = new AbortController();
  const s = guard.open(context({ signal: ac.signal }).ctx);
  const timer = setTimeout(() => ac.abort(new Error("client gone")), 30);
  try {
    await rejectsKind(s.labelAgent("{}"), "aborted", "client gone");
  } finally {
    clearTimeout(timer);
  }
});

Deno.test("an infinite loop hits the per-call deadline", async () => {
  const guard = await load("spin", { limits: { timeoutMs: 50 } });
  const err = await rejectsKind(guard.open(context().ctx).labelAgent("{}"), "timeout", "limits.timeoutMs=50");
  assertEquals([err.limit, err.value], ["timeoutMs", 50]);
});

Deno.test("an already aborted signal stops the first call", async () => {
  const guard = await load("echo_direct");
  const ac = new AbortController();
  ac.abort();
  await rejectsKind(guard.open(context({ signal: ac.signal }).ctx).labelAgent("{}"), "aborted");
});

Deno.test("fuel is counted per function entry and loop iteration and summed in usage()", async () => {
  const guard = await load("compute", { limits: { fuelSlice: 1000 } });
  const s = guard.open(context().ctx);
  assertEquals(await s.labelResource("{}"), "ok");
  // label_resource entry + $work entry + 1000 loop iterations
  assertEquals(s.usage().fuel, 1002);
  assertEquals(await s.labelResource("{}"), "ok");
  assertEquals(s.usage().fuel, 2004);
  const u = s.usage();
  assertEquals(u.backendCalls, 0);
  assertGreaterOrEqual(u.ms, 0);
});

Deno.test("a spinning start function runs under the first call's budget and is stopped by it", async () => {
  // The preparer exports the start function; the host runs it through JSPI before the first call.
  const guard = await load("start_spin", { limits: { fuel: 5_000_000 } });
  const s = guard.open(context().ctx);
  const err = await rejectsKind(s.labelAgent("{}"), "fuel", "limits.fuel=5000000");
  assertEquals([err.limit, err.value], ["fuel", 5_000_000]);
  await rejectsKind(s.labelAgent("{}"), "fuel", "unavailable");
});

Deno.test("a start function runs before the first call; its fuel is counted", async () => {
  const guard = await load("start_short");
  const s = guard.open(context().ctx);
  assertEquals(await s.labelAgent("{}"), "s");
  assertGreaterOrEqual(s.usage().fuel, 500_000);
});

Deno.test("a spinning guard is aborted while a concurrent session completes", async () => {
  const spin = await load("spin");
  const echo = await load("echo_alloc");
  const ac = new AbortController();
  const spinning = spin.open(context({ signal: ac.signal }).ctx).labelAgent("{}");
  const spinResult = spinning.then(() => "finished", (e: GuardError) => e.kind);
  const other = echo.open(context().ctx);
  assertEquals(await other.labelAgent('{"x":1}'), '{"x":1}');
  assertEquals(await other.labelResource("{}"), "{}");
  ac.abort();
  assertEquals(await spinResult, "aborted");
});

// ---- memory ----

Deno.test("memory.grow stops at the cap (declared maximum 4096 clamped to 80 pages)", async () => {
  // the direct path itself needs 4 MiB + 64 KiB + input (66 pages) for its buffers
  const guard = await load("grow_bomb", { limits: { maxMemoryPages: 80 } });
  const s = guard.open(context().ctx);
  assertEquals(await s.labelAgent("{}"), "");
  assertEquals(s.usage().memoryPages, 80);
});

Deno.test("a declared minimum above the cap is rejected at load", async () => {
  const err = await assertRejects(
    () => load("big_min_memory", { limits: { maxMemoryPages: 64 } }),
    GuardError,
  );
  assertEquals((err as GuardError).kind, "memory");
});

Deno.test("second line of defence: an unprepared module growing past the cap kills the session", async () => {
  const module = await WebAssembly.compile(await wat("grow_bomb"));
  const guard = new WasmGuard(module, { limits: { maxMemoryPages: 8 } });
  assertEquals(guard.metered, false);
  const s = guard.open(context().ctx);
  const err = await rejectsKind(s.labelResource("{}"), "memory", "limits.maxMemoryPages=8");
  assertEquals([err.limit, err.value], ["maxMemoryPages", 8]);
  await rejectsKind(s.labelResource("{}"), "memory", "unavailable");
});

Deno.test("compiled modules (Workers path) need the build's record and caps ≤ the limits", async () => {
  const plain = await WebAssembly.compile(await wat("echo_alloc"));
  await rejectsKind(loadGuardModule(plain), "abi", "not a module our build prepared");
  const prepared = prepareGuard(await wat("echo_alloc"), { maxMemoryPages: 512 }).bytes;
  const record = preparedRecord(prepared);
  const compiled = await WebAssembly.compile(prepared);
  await rejectsKind(loadGuardModule(compiled), "abi", "trusted only with the record");
  const err = await rejectsKind(
    loadGuardModule(compiled, { limits: { maxMemoryPages: 128 }, prepared: record }),
    "abi",
    "maxMemoryPages=512, above limits.maxMemoryPages=128",
  );
  assertEquals(err.limit, "maxMemoryPages");
  const unmeteredBytes = prepareGuard(await wat("echo_alloc"), { fuel: false }).bytes;
  const unmetered = await WebAssembly.compile(unmeteredBytes);
  await rejectsKind(
    loadGuardModule(unmetered, { prepared: preparedRecord(unmeteredBytes) }),
    "abi",
    "without fuel",
  );
  await rejectsKind(
    loadGuardModule(unmetered, { prepared: record }),
    "abi",
    "differs from the one the build",
  );
  const guard = await loadGuardModule(compiled, { prepared: record });
  assert(guard.metered);
  assertEquals(await guard.open(context().ctx).labelAgent("hi"), "hi");
  // prepared bytes are never trusted: they carry our mark and fuel import
  await rejectsKind(loadGuardModule(prepared), "abi", "refused: it has a");
});

// ---- host imports ----

function recordingBackend(): { backend: BackendCaller; calls: Array<{ tool: string; args: unknown }> } {
  const calls: Array<{ tool: string; args: unknown }> = [];
  const backend: BackendCaller = (tool, args, signal) => {
    calls.push({ tool, args });
    assert(signal instanceof AbortSignal);
    if (tool === "fail") return Promise.reject(new Error("backend down"));
    if (tool === "small") return Promise.resolve("abcdef"); // JSON "\"abcdef\"": 8 bytes
    return Promise.resolve({ content: [{ type: "text", text: "r" }], args });
  };
  return { backend, calls };
}

Deno.test("call_backend: 50 calls per export call, the 51st returns -1 without calling", async () => {
  const guard = await load("backend");
  const { backend, calls } = recordingBackend();
  const s = guard.open(context({ backend }).ctx);
  assertEquals(await s.labelAgent("{}"), "o".repeat(50) + "e");
  assertEquals(calls.length, 50);
  assertEquals(await s.labelAgent("{}"), "o".repeat(50) + "e", "the counter resets per export call");
  assertEquals(s.usage().backendCalls, 102);
});

Deno.test("call_backend: args parsed, result JSON written into the guard's buffer", async () => {
  const guard = await load("backend");
  const { backend, calls } = recordingBackend();
  const s = guard.open(context({ backend }).ctx);
  const out = await s.labelResource('{"owner":"acme"}');
  assertEquals(JSON.parse(out), { content: [{ type: "text", text: "r" }], args: { owner: "acme" } });
  assertEquals(calls, [{ tool: "echo", args: { owner: "acme" } }]);
});

Deno.test("call_backend: -2 with and without hint, exact fit, null args, bad JSON, out of bounds, errors", async () => {
  const guard = await load("backend");
  const { backend, calls } = recordingBackend();
  const s = guard.open(context({ backend }).ctx);
  const out = await s.labelResponse("{}");
  assertEquals(out.slice(0, 8), "ttotoeee");
  assertEquals(out.slice(8, 10), "AA", "a result_size < 4 buffer is left untouched");
  assertEquals([...out.slice(10)].map((c) => c.charCodeAt(0)), [8, 0, 0, 0], "LE u32 size hint");
  assertEquals(calls.find((c) => c.tool === "nullargs")?.args, null);
  assertEquals(calls.filter((c) => c.tool === "small").length, 4, "bad args never reach the backend");
});

Deno.test("call_backend: a re-entrant call on the same session is refused", async () => {
  const guard = await load("backend");
  const ref: { session?: GuardSession } = {};
  let reentry: unknown;
  const backend: BackendCaller = async () => {
    try {
      await ref.session!.labelAgent("{}");
    } catch (e) {
      reentry = e;
      throw e;
    }
    return {};
  };
  const session = guard.open(context({ backend }).ctx);
  ref.session = session;
  assertEquals(await session.labelResource("{}"), "e");
  assert(reentry instanceof GuardError);
  assertStringIncludes(reentry.message, "busy");
});

Deno.test("a second call while one is suspended in call_backend is refused", async () => {
  const guard = await load("backend");
  let release: (v: unknown) => void = () => {};
  const backend: BackendCaller = () => new Promise((r) => (release = r));
  const s = guard.open(context({ backend }).ctx);
  const first = s.labelResource("{}");
  await new Promise((r) => setTimeout(r, 0));
  await rejectsKind(s.labelAgent("{}"), "guard_error", "busy");
  release({ ok: true });
  assertEquals(JSON.parse(await first), { ok: true });
});

Deno.test("the signal aborts a suspended call_backend even if the backend ignores it", async () => {
  const guard = await load("backend");
  const ac = new AbortController();
  let seen: AbortSignal | undefined;
  let started: () => void = () => {};
  const isStarted = new Promise<void>((r) => (started = r));
  const backend: BackendCaller = (_t, _a, signal) => {
    seen = signal;
    started();
    return new Promise(() => {});
  };
  const s = guard.open(context({ signal: ac.signal, backend }).ctx);
  const call = s.labelResource("{}");
  await isStarted;
  ac.abort(new Error("shutdown"));
  await rejectsKind(call, "aborted", "shutdown");
  assert(seen?.aborted, "the backend's signal is aborted too");
});

Deno.test("the deadline aborts a suspended call_backend", async () => {
  const guard = await load("backend", { limits: { timeoutMs: 30 } });
  const backend: BackendCaller = (_t, _a, signal) =>
    new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  await rejectsKind(
    guard.open(context({ backend }).ctx).labelResource("{}"),
    "timeout",
    "limits.timeoutMs=30",
  );
});

Deno.test("host_log levels 0-3 map to debug/info/warn/error, others to debug; bad pointers are ignored", async () => {
  const guard = await load("host_log");
  const { ctx, logs } = context();
  await guard.open(ctx).labelAgent("{}");
  assertEquals(logs.map((l) => [l.level, l.msg]), [
    ["debug", "m0"],
    ["info", "m1"],
    ["warn", "m2"],
    ["error", "m3"],
    ["debug", "m7"],
  ]);
  assertEquals(logs[0].fields?.guard, "host_log");
});

Deno.test("host_log: lines the context's sink would drop are not read, kept or sent (ctx.wantsLog)", async () => {
  const guard = await load("host_log", { limits: { callMemoBytes: 0 } });
  const { ctx, logs } = context();
  const asked: string[] = [];
  const s = guard.open({
    ...ctx,
    wantsLog: (level) => {
      asked.push(level);
      return level === "warn" || level === "error";
    },
  });
  await s.labelAgent("{}");
  assertEquals(logs.map((l) => [l.level, l.msg]), [["warn", "m2"], ["error", "m3"]]);
  assertEquals(asked.slice(0, 5), ["debug", "info", "warn", "warn", "error"]);
});

Deno.test("WASI: stdin is empty, no args or env, stdout/stderr go to the logger", async () => {
  const guard = await load("stdio");
  const { ctx, logs } = context();
  assertEquals(await guard.open(ctx).labelAgent("{}"), "0000000");
  assertEquals(logs.map((l) => [l.level, l.msg, l.fields?.stream]), [
    ["info", "hello", "stdout"],
    ["warn", "oops", "stderr"],
  ]);
});

Deno.test("alloc/dealloc run directly: calling call_backend or spinning in them fails the call as a trap", async () => {
  const guard = await load("hostile_alloc", {
    limits: { fuel: 5_000_000, fuelSlice: 10_000, initialOutputBytes: 64 },
  });
  let backendCalls = 0;
  const { ctx } = context({ backend: () => (backendCalls++, Promise.resolve({})) });
  await rejectsKind(
    guard.open(ctx).labelAgent("x"),
    "trap",
    "alloc called call_backend or ran longer than one fuel slice",
  );
  assertEquals(backendCalls, 0, "the backend is never reached from alloc");
  await rejectsKind(guard.open(ctx).labelAgent("xy"), "trap", "limits.fuelSlice=10000");
  assertEquals(await guard.open(ctx).labelAgent("xyz"), "", "a fresh session is unaffected");
});

Deno.test("alloc/dealloc near the end of a fuel slice still run (the host tops the counter up first)", async () => {
  const guard = await load("busy_free", { limits: { fuelSlice: 100, initialOutputBytes: 64 } });
  const { ctx } = context();
  const s = guard.open(ctx);
  for (let i = 0; i < 5; i++) assertEquals(await s.labelAgent("{}"), "");
  assertGreaterOrEqual(s.usage().fuel, 5 * 95, "fuel spent in label_agent and dealloc is still counted");
});
