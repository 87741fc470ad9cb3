/**
 * The gateway's entry point (`src/main.ts`, what `deno task start` runs) as a user meets it: `--help`,
 * unknown flags, a busy port, a relative `--config` typed in another directory, and a banner that
 * never shows a key the operator supplied. Every case spawns the real entry point.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { freePort, startProcess } from "../helpers/processes.ts";

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;
const DENO_ARGS = ["run", "-A", "--unstable-no-legacy-abort", MAIN];
const SECRET = "key-from-config-0123456789abcdef";

async function run(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...DENO_ARGS, ...args],
    cwd: opts.cwd,
    env: { MCP_EDGE_GUARD_CONFIG: "", ...opts.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A config with one (unreachable) upstream; nothing is called at startup. */
function config(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    mcpServers: { up: { type: "http", url: "http://127.0.0.1:9/mcp" } },
    gateway: { ...extra },
  });
}

Deno.test("start --help: usage on stdout, exit 0", async () => {
  const r = await run(["--help"]);
  assertEquals(r.code, 0, r.stderr);
  assertStringIncludes(r.stdout, "usage: deno task start");
  assertStringIncludes(r.stdout, "--port N");
});

Deno.test("start: an unknown flag or a stray argument is one line plus the usage, exit 2", async () => {
  for (const [args, want] of [[["--bogus"], "Unknown option '--bogus'"], [["stray"], "stray"]] as const) {
    const r = await run([...args]);
    assertEquals(r.code, 2, r.stderr);
    const [first, second] = r.stderr.split("\n");
    assertStringIncludes(first, `mcp-edge-guard: `);
    assertStringIncludes(first, want);
    assertStringIncludes(second, "usage: deno task start");
    assert(!r.stderr.includes("Uncaught"), r.stderr);
  }
  const badPort = await run(["--port", "80x"]);
  assertEquals(badPort.code, 2);
  assertEquals(
    badPort.stderr.trim(),
    'mcp-edge-guard: config --port: must be an integer from 0 to 65535, got "80x"',
  );
});

Deno.test("start: a port in use is one line naming the port and --port, exit 2", async () => {
  const port = freePort();
  using _busy = Deno.listen({ hostname: "127.0.0.1", port });
  const r = await run(["--port", String(port)]); // the embedded demo
  assertEquals(r.code, 2, r.stderr);
  assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
  assertStringIncludes(r.stderr, `port ${port} on 127.0.0.1 is already in use`);
  assertStringIncludes(r.stderr, "--port");
  assert(!r.stderr.includes("Uncaught"), r.stderr);
});

Deno.test("start: a relative --config is read from INIT_CWD (the caller's directory), not the project root", async () => {
  const dir = await Deno.makeTempDir({ prefix: "main_cli_cwd_" });
  try {
    await Deno.writeTextFile(`${dir}/gw.json`, config({ apiKey: SECRET }));
    await using proc = await startProcess(Deno.execPath(), {
      args: [...DENO_ARGS, "--config", "gw.json", "--port", "0"],
      cwd: "/",
      env: { INIT_CWD: dir, MCP_EDGE_GUARD_CONFIG: "" },
      waitForStdout: /listening on (http:\/\/\S+)/,
    });
    const base = proc.readyMatch![1];
    assertEquals((await (await fetch(`${base}/health`)).json()).status !== undefined, true);
    const missing = await run(["--config", "absent.json"], { cwd: "/", env: { INIT_CWD: dir } });
    assertEquals(missing.code, 2);
    assertStringIncludes(missing.stderr, `cannot read ${dir}/absent.json`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("start: the banner never prints a key from the config or the environment; a generated one it does", async () => {
  const dir = await Deno.makeTempDir({ prefix: "main_cli_key_" });
  try {
    await Deno.writeTextFile(`${dir}/from-file.json`, config({ apiKey: SECRET }));
    await Deno.writeTextFile(`${dir}/from-env.json`, config({ apiKey: "${GW_KEY}" }));
    for (const [file, env] of [["from-file.json", {}], ["from-env.json", { GW_KEY: SECRET }]] as const) {
      await using proc = await startProcess(Deno.execPath(), {
        args: [...DENO_ARGS, "--config", `${dir}/${file}`, "--port", "0"],
        env: { MCP_EDGE_GUARD_CONFIG: "", ...env },
        waitForStdout: /API key: .*/,
      });
      assertEquals(proc.readyMatch![0], "API key: (from the configuration; not shown)");
      assert(!proc.output().includes(SECRET), `${file}: the key is not printed`);
    }
    await using demo = await startProcess(Deno.execPath(), {
      args: [...DENO_ARGS, "--port", "0"],
      env: { MCP_EDGE_GUARD_CONFIG: "" },
      waitForStdout: /examples\/demo-client\.ts \S+ (\S+)/,
    });
    assertMatch(demo.output(), /API key: [0-9a-f]{64} {2}\(generated/);
    assertMatch(demo.readyMatch![1], /^[0-9a-f]{64}$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
