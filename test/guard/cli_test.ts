/** The `guard` CLI, spawned as a subprocess on WAT guards compiled into a temporary folder. */
import { assertEquals, assertStringIncludes } from "@std/assert";
import wabtInit from "wabt";
import { hostileBytes, hostileNames, MODULE_LEVEL_PREFIXES, REFUSALS } from "../helpers/hostile_corpus.ts";

const wabt = await wabtInit();
const FIXTURES = new URL("../fixtures/wat/host/", import.meta.url);
const CLI = new URL("../../src/cli/guard.ts", import.meta.url);

async function withGuards(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "guard_cli_" });
  try {
    for (const name of ["echo_alloc", "backend", "spin", "missing_label_agent", "misc_returns"]) {
      const text = await Deno.readTextFile(new URL(`${name}.wat`, FIXTURES));
      const mod = wabt.parseWat(`${name}.wat`, text, { bulk_memory: true });
      await Deno.writeFile(`${dir}/${name}.wasm`, new Uint8Array(mod.toBinary({}).buffer));
      mod.destroy();
    }
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI.href, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("guard check: report for a usable guard, exit 1 with the reason for an unusable one", async () => {
  await withGuards(async (dir) => {
    const ok = await run("check", `${dir}/echo_alloc.wasm`);
    assertEquals(ok.code, 0, ok.stderr);
    assertStringIncludes(ok.stdout, "function label_agent (i32,i32,i32,i32)->(i32)");
    assertStringIncludes(ok.stdout, "buffers: guard alloc/dealloc");
    assertStringIncludes(ok.stdout, "prepares cleanly: yes");
    assertStringIncludes(ok.stdout, "memory pooled, writes recorded");
    assertStringIncludes(ok.stdout, "usable: yes");
    for (
      const label of ["validated", "imports", "ABI", "memory cap", "table cap", "segment limits"]
    ) {
      assertStringIncludes(ok.stdout, `  ${label.padEnd(22)} pass`);
    }
    assertStringIncludes(ok.stdout, "prepared by us / fuel  pass: no mark, fuel import or reserved export");
    const bad = await run("check", `${dir}/missing_label_agent.wasm`);
    assertEquals(bad.code, 1);
    assertStringIncludes(bad.stdout, "usable: no: WASM module must export label_agent");
  });
});

Deno.test("guard call: one JSON document with the three outputs (sorted-key inputs) and usage", async () => {
  await withGuards(async (dir) => {
    const r = await run(
      "call",
      `${dir}/echo_alloc.wasm`,
      "--policy",
      '{"trusted-bots":["x[bot]"],"allow-only":{"repos":"all","min-integrity":"none"}}',
      "--tool",
      "get_file",
      "--args",
      '{"repo":"web","owner":"acme"}',
      "--result",
      '{"content":[]}',
    );
    assertEquals(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assertEquals(Object.keys(doc.label_agent), ["allow-only", "trusted-bots"]);
    assertEquals(
      JSON.stringify(doc.label_resource),
      '{"capabilities":{},"tool_args":{"owner":"acme","repo":"web"},"tool_name":"get_file"}',
    );
    assertEquals(doc.label_response, "long");
    assertEquals(Object.keys(doc.usage), [
      "fuel",
      "backendCalls",
      "memoryPages",
      "ms",
      "totalMemoryPages",
      "tableEntries",
    ]);
    // logs are JSON lines on stderr
    const first = JSON.parse(r.stderr.split("\n")[0]);
    assertEquals([first.level, first.msg, first.guard], ["debug", "alloc", "echo_alloc"]);
  });
});

Deno.test("guard call: --backend fixtures answer call_backend; empty output is null, non-JSON is raw", async () => {
  await withGuards(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/fixture.json`,
      JSON.stringify([{
        tool: "echo",
        // the fixture guard passes its whole label_resource input as the args
        args: { tool_name: "t", tool_args: { q: 1 }, capabilities: {} },
        result: { content: [{ type: "text", text: "hi" }] },
      }]),
    );
    const r = await run(
      "call",
      `${dir}/backend.wasm`,
      "--policy",
      "{}",
      "--tool",
      "t",
      "--args",
      '{"q":1}',
      "--backend",
      `${dir}/fixture.json`,
    );
    assertEquals(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assertEquals(doc.label_agent, "e".repeat(51), "tool 't' has no fixture: -1 each time");
    assertEquals(doc.label_resource, { content: [{ type: "text", text: "hi" }] });
    assertEquals(doc.label_response, null);
    assertEquals(doc.usage.backendCalls, 52);
    const misc = JSON.parse(
      (await run("call", `${dir}/misc_returns.wasm`, "--policy", "{}", "--tool", "t", "--args", "{}")).stdout,
    );
    assertEquals([misc.label_agent, misc.label_resource], [null, "\0\0"]);
  });
});

Deno.test("guard call: limit errors (exit 1) and usage errors (exit 2) are {error:{kind,message}}", async () => {
  await withGuards(async (dir) => {
    const r = await run(
      "call",
      `${dir}/spin.wasm`,
      "--policy",
      "{}",
      "--tool",
      "t",
      "--args",
      "{}",
      "--fuel",
      "200000",
    );
    assertEquals(r.code, 1);
    const err = JSON.parse(r.stdout).error;
    assertEquals(err.kind, "fuel");
    assertStringIncludes(err.message, "limits.fuel=200000");
    const u = await run("call", `${dir}/spin.wasm`, "--policy", "{}", "--args", "{}");
    assertEquals(u.code, 2, "a usage mistake exits with 2");
    assertEquals(JSON.parse(u.stdout).error, { kind: "usage", message: "--tool is required" });
    const j = await run("call", `${dir}/spin.wasm`, "--policy", "{", "--tool", "t", "--args", "{}");
    assertEquals(JSON.parse(j.stdout).error.kind, "usage");
  });
});

Deno.test("guard check: every module-level hostile fixture fails the check that names its reason", async () => {
  const dir = await Deno.makeTempDir({ prefix: "guard_cli_hostile_" });
  try {
    const names = await hostileNames(MODULE_LEVEL_PREFIXES);
    for (const name of names) await Deno.writeFile(`${dir}/${name}.wasm`, await hostileBytes(name));
    for (const name of names) {
      const r = await run("check", `${dir}/${name}.wasm`);
      const want = REFUSALS[name];
      if (want === undefined) {
        assertEquals(r.code, 0, `${name}: ${r.stdout}`);
        assertStringIncludes(r.stdout, "usable: yes");
        continue;
      }
      assertEquals(r.code, 1, `${name}: ${r.stdout}`);
      assertStringIncludes(r.stdout, `  ${want.check.padEnd(22)} FAIL: `, name);
      const failLine = r.stdout.split("\n").find((l) => l.includes("FAIL: "))!;
      assertStringIncludes(failLine, want.text, name);
      assertStringIncludes(r.stdout, `usable: no: `, name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** `guard call` budget for the runtime corpus: a spinning guard ends at the deadline or the fuel. */
const CORPUS_LIMITS = ["--fuel", "200000000", "--timeout-ms", "1000"];
/** One corpus run, process start included, ends within this. */
const CORPUS_RUN_WITHIN_MS = 15_000;

Deno.test("guard call: every runtime hostile fixture answers or fails with a typed error, within its budget", async () => {
  const dir = await Deno.makeTempDir({ prefix: "guard_cli_runtime_" });
  try {
    const all = await hostileNames();
    const names = all.filter((n) => !MODULE_LEVEL_PREFIXES.some((p) => n.startsWith(p)));
    assertEquals(names.length > 20, true, `runtime fixtures: ${names.length}`);
    const outcomes: string[] = [];
    for (const name of names) {
      await Deno.writeFile(`${dir}/${name}.wasm`, await hostileBytes(name));
      const t0 = performance.now();
      const r = await run(
        "call",
        `${dir}/${name}.wasm`,
        "--policy",
        '{"allow-only":{"repos":"all","min-integrity":"none"}}',
        "--tool",
        "list_issues",
        "--args",
        '{"repo":"acme/web"}',
        ...CORPUS_LIMITS,
      );
      const ms = performance.now() - t0;
      assertEquals(ms < CORPUS_RUN_WITHIN_MS, true, `${name}: ${ms.toFixed(0)} ms`);
      const out = JSON.parse(r.stdout);
      if (r.code === 0) {
        assertEquals(out.error, undefined, name);
        outcomes.push(`${name}: answered`);
      } else {
        assertEquals(r.code, 1, `${name}: ${r.stderr.slice(0, 300)}`);
        assertEquals(typeof out.error?.kind, "string", `${name}: ${r.stdout.slice(0, 300)}`);
        assertEquals(
          ["internal", "usage"].includes(out.error.kind),
          false,
          `${name}: ${r.stdout.slice(0, 300)}`,
        );
        outcomes.push(`${name}: ${out.error.kind}`);
      }
    }
    console.log(outcomes.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
