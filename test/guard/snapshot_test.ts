/**
 * Label-agent snapshots (`src/guard/snapshot.ts`, `limits.labelAgentSnapshots`): a session started
 * from a snapshot sees exactly the state a session that ran `label_agent` itself sees (memory,
 * every mutable global, the answer, the log lines), never another request's data; runs that cannot
 * be snapshotted (call_backend, WASI, table changes, passive segments) fall back to running
 * `label_agent`; 0 turns the mechanism off.
 *
 * The probe (test/fixtures/wat/host/snapshot_probe.wat) dumps memory and globals as hex on every
 * label_resource / label_response call, then writes its input into both.
 */
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import wabtInit from "wabt";
import type { BackendCaller, GuardContext } from "../../src/difc/guard.ts";
import { loadGuardModule, type WasmGuard } from "../../src/guard/host.ts";
import type { GuardLimits } from "../../src/guard/limits.ts";
import { prepareGuard, readPreparedMark } from "../../src/guard/prepare.ts";

const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);
const wabt = await wabtInit();

function compile(name: string, text: string): Uint8Array<ArrayBuffer> {
  const mod = wabt.parseWat(name, text, { bulk_memory: true, mutable_globals: true, reference_types: true });
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

async function probeBytes(): Promise<Uint8Array<ArrayBuffer>> {
  return compile("snapshot_probe.wat", await Deno.readTextFile(new URL("snapshot_probe.wat", FIXTURES)));
}

/**
 * Snapshots on (the default, said here so the tests do not depend on it), the call memo and the
 * instance pool off: these tests need every session to run a new instance of its own (the memo and
 * the pool have tests of their own, memo_test.ts and instance_pool_test.ts).
 */
const ON = { labelAgentSnapshots: 16, callMemoBytes: 0, idleInstances: 0 };

async function probe(limits: Partial<GuardLimits> = {}): Promise<WasmGuard> {
  // verifyPoolReset: restored sessions' writes must be recorded like any other (memory pool).
  return await loadGuardModule(await probeBytes(), {
    name: "probe",
    limits: { ...ON, ...limits },
    verifyPoolReset: true,
  });
}

interface Ctx extends GuardContext {
  logs: string[];
  backendCalls: number;
}

function ctx(): Ctx {
  const c: Ctx = {
    signal: new AbortController().signal,
    backend: (() => {
      c.backendCalls++;
      return Promise.resolve({ content: [] });
    }) as BackendCaller,
    log: (_level, msg) => c.logs.push(msg),
    logs: [],
    backendCalls: 0,
  };
  return c;
}

const hex = (s: string) =>
  [...new TextEncoder().encode(s)].map((b) => b.toString(16).padStart(2, "0")).join("");
const POLICY = '{"allow-only":{"min-integrity":"none","repos":"all"}}';
const AGENT = '{"agent":{"secrecy":[],"integrity":[]},"difc_mode":"filter"}';

/** One request: label_agent(policy), label_resource(secret), label_response(secret): the dumps. */
async function request(guard: WasmGuard, policy: string, secret: string, c = ctx()) {
  const s = guard.open(c);
  try {
    const agent = await s.labelAgent(policy);
    const resource = await s.labelResource(`${secret}-resource`);
    const response = await s.labelResponse(`${secret}-response`);
    return { agent, resource, response, logs: c.logs, usage: s.usage() };
  } finally {
    s.close();
  }
}

Deno.test("snapshot: the preparer marks and exports every mutable global; fuel globals stay out", async () => {
  const prepared = prepareGuard(await probeBytes()).bytes;
  const mark = readPreparedMark(await WebAssembly.compile(prepared));
  assertEquals(mark?.snapshotGlobals, 4);
  const guard = await probe();
  assertEquals(guard.snapshotShape, {
    memories: ["__mcp_edge_guard_memory_0"],
    pages: ["__mcp_edge_guard_pages_0"],
    tables: ["__mcp_edge_guard_table_0"],
    globals: [0, 1, 2, 3].map((i) => `__mcp_edge_guard_global_${i}`),
  });
});

Deno.test("snapshot: a restored session sees exactly the state of one that ran label_agent, and only that", async () => {
  const on = await probe();
  const off = await probe({ labelAgentSnapshots: 0 });
  assertEquals(off.snapshotShape, null);

  const first = await request(on, POLICY, "secret-A"); // captures
  assertEquals(on.snapshotStatus().map((s) => s.state), ["ready"]);
  const restored = await request(on, POLICY, "secret-B");
  const ran = await request(off, POLICY, "secret-C");

  // Same answer, same state at label_resource as a session that ran label_agent itself.
  assertEquals(restored.agent, AGENT);
  assertEquals(restored.resource, ran.resource);
  assertEquals(first.resource, ran.resource);
  // The policy is there (memory at 1024, globals derived from it), and label_agent ran exactly once.
  assert(ran.resource.includes(hex(POLICY).slice(0, 128)));
  // Positive control: within a session the probe does see its own request data...
  assert(restored.response.includes(hex("secret-B-resource")));
  // ...and never another request's, in memory or globals (the globals are in the dump).
  for (const r of [restored, ran]) {
    assert(!r.resource.includes(hex("secret-A")) && !r.response.includes(hex("secret-A")));
  }
  assertEquals(
    restored.response.replace(hex("secret-B-resource"), ""),
    ran.response.replace(hex("secret-C-resource"), ""),
  );
  // The restored session ran nothing for label_agent: no fuel spent on it; its log line is replayed.
  assert(restored.usage.fuel < ran.usage.fuel);
  assertEquals(restored.logs, ["agent ran"]);
  assertEquals(ran.logs, ["agent ran"]);
});

Deno.test("snapshot: one snapshot per policy, each restored with its own state", async () => {
  const guard = await probe();
  const other = '{"allow-only":{"min-integrity":"merged","repos":["acme/x"]}}';
  const a1 = await request(guard, POLICY, "s1");
  const b1 = await request(guard, other, "s2");
  const a2 = await request(guard, POLICY, "s3");
  const b2 = await request(guard, other, "s4");
  assertEquals(a2.resource, a1.resource);
  assertEquals(b2.resource, b1.resource);
  assertNotEquals(a1.resource, b1.resource);
  assertEquals(guard.snapshotStatus().map((s) => s.state), ["ready", "ready"]);
  // The bound: with room for one policy, the second always runs label_agent.
  const one = await probe({ labelAgentSnapshots: 1 });
  await request(one, POLICY, "x");
  await request(one, other, "y");
  assertEquals(one.snapshotStatus().map((s) => s.input), [POLICY]);
  assertEquals((await request(one, other, "z")).resource, b1.resource);
});

Deno.test("snapshot: runs that call_backend, read WASI or change a table are never snapshotted", async () => {
  for (
    const [policy, reason] of [
      ["B-backend", "label_agent used call_backend or WASI"],
      ["R-random", "label_agent used call_backend or WASI"],
      ["T-table-set", "table 0 entry 0 changed"],
      ["G-table-grow", "table 0 changed size"],
    ]
  ) {
    const guard = await probe();
    const results = [];
    for (let i = 0; i < 3; i++) {
      const c = ctx();
      results.push(await request(guard, policy, `secret-${i}`, c));
      // label_agent ran in every session (its side effect happened each time).
      if (policy.startsWith("B")) assertEquals(c.backendCalls, 1);
    }
    assertEquals(guard.snapshotStatus(), [{ input: policy, state: "unusable", reason }]);
    for (const r of results) assertEquals(r.logs, ["agent ran"]);
    // Each session's own label_agent ran: $runs is 1 in every dump, never 2.
    const runs = (r: { resource: string }) => r.resource.slice(88 * 2, 92 * 2);
    for (const r of results) assertEquals(runs(r), "01000000");
  }
});

Deno.test("snapshot: a module with a passive data segment carries no snapshot mark", async () => {
  const text = (await Deno.readTextFile(new URL("snapshot_probe.wat", FIXTURES)))
    .replace('(data (i32.const 60200) "get_repo")', '(data (i32.const 60200) "get_repo") (data "passive")');
  const bytes = compile("passive.wat", text);
  const mark = readPreparedMark(await WebAssembly.compile(prepareGuard(bytes).bytes));
  assertEquals(mark?.snapshotGlobals, undefined);
  const guard = await loadGuardModule(bytes, { name: "passive", limits: ON });
  assertEquals(guard.snapshotShape, null);
  const r1 = await request(guard, POLICY, "a");
  const r2 = await request(guard, POLICY, "b");
  assertEquals(r1.resource, r2.resource);
  assertEquals(guard.snapshotStatus(), []);
});

Deno.test("snapshot: a failed or aborted capture leaves no snapshot; a later session captures", async () => {
  const guard = await probe();
  const ac = new AbortController();
  ac.abort(new Error("client gone"));
  const s = guard.open({ ...ctx(), signal: ac.signal });
  let failed = false;
  await s.labelAgent(POLICY).catch(() => failed = true);
  s.close();
  assert(failed);
  assertEquals(guard.snapshotStatus(), []);
  await request(guard, POLICY, "x");
  assertEquals(guard.snapshotStatus().map((x) => x.state), ["ready"]);
});

Deno.test("snapshot: concurrent sessions never see each other's data (restored and capturing alike)", async () => {
  const guard = await probe();
  // Secrets of one length: the probe's globals hold the input length.
  const reference = await request(await probe({ labelAgentSnapshots: 0 }), POLICY, "secret-ref");
  const bad: string[] = [];
  await Promise.all(Array.from({ length: 200 }, async (_, i) => {
    const secret = `secret-${String(i).padStart(3, "0")}`;
    const r = await request(guard, POLICY, secret);
    if (r.resource !== reference.resource || r.agent !== AGENT) bad.push(`resource ${i}`);
    const own = r.response.replace(hex(`${secret}-resource`), "");
    if (own !== reference.response.replace(hex("secret-ref-resource"), "")) bad.push(`response ${i}`);
  }));
  assertEquals(bad, []);
});

Deno.test("snapshot: the Rust guard (guards/rust-bench) restored answers exactly like one that ran label_agent", async () => {
  const bytes = await Deno.readFile(
    new URL("../../guards/rust-bench/rust-bench-guard.wasm", import.meta.url),
  );
  const on = await loadGuardModule(bytes, { name: "rust", limits: ON });
  const off = await loadGuardModule(bytes, { name: "rust", limits: { labelAgentSnapshots: 0 } });
  assert(on.snapshotShape !== null);
  const policy = '{"allow-only":{"min-integrity":"approved","repos":["acme/web"]}}';
  const backend: BackendCaller = (_tool, args) =>
    Promise.resolve({
      content: [{
        type: "text",
        text: JSON.stringify({ full_name: (args as { repo: string }).repo, visibility: "private" }),
      }],
    });
  const run = async (guard: WasmGuard, repo: string) => {
    const s = guard.open({ signal: new AbortController().signal, backend, log: () => {} });
    try {
      const agent = await s.labelAgent(policy);
      const resource = await s.labelResource(
        JSON.stringify({ capabilities: {}, tool_args: { repo }, tool_name: "list_issues" }),
      );
      const items = [{ number: 1, title: "t", body: "b", author: "alice", author_association: "MEMBER" }];
      const response = await s.labelResponse(JSON.stringify({
        capabilities: {},
        tool_args: { repo },
        tool_name: "list_issues",
        tool_result: { content: [{ type: "text", text: JSON.stringify({ repo, items }) }] },
      }));
      return { agent, resource, response, backendCalls: s.usage().backendCalls };
    } finally {
      s.close();
    }
  };
  const first = await run(on, "acme/web");
  const restored = await run(on, "acme/web");
  const ran = await run(off, "acme/web");
  assertEquals(on.snapshotStatus().map((x) => x.state), ["ready"]);
  assertEquals(restored, ran);
  assertEquals(first, ran);
  // The visibility cache is per instance: the restored session asked the backend itself.
  assertEquals(restored.backendCalls, 1);
  assert(ran.resource.includes('"operation":"read"') && ran.resource.includes("private:acme/web"));
});

Deno.test("snapshot + memory pool: a restored session closed at once leaves nothing for the next one", async () => {
  const guard = await probe();
  for (let i = 0; i < 4; i++) {
    const s = guard.open(ctx());
    await s.labelAgent(POLICY); // 1st captures, the others are restored onto the reused memory
    s.close();
  }
  // A fresh instance on that memory (verifyPoolReset compares it with a new one) answers as usual.
  const after = await request(guard, POLICY, "after");
  assertEquals(after.agent, AGENT);
  assertEquals(guard.memoryPoolStatus().reused, 4);
  assertEquals(guard.snapshotStatus()[0].state, "ready");
});
