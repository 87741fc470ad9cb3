/**
 * The `guard` CLI as a user meets it: `--help`, usage mistakes (exit 2), paths relative to the
 * directory the command was typed in (`INIT_CWD`), and the hints about `--backend` fixtures a guard
 * would read as failed lookups. Spawns the real entry point on the demo guard.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { fixtureProblems } from "../../src/cli/guard.ts";

const CLI = new URL("../../src/cli/guard.ts", import.meta.url);
const DEMO_GUARD = new URL("../../guards/demo/demo-guard.wasm", import.meta.url);
const POLICY = JSON.stringify({ "allow-only": { repos: ["acme/web"], "min-integrity": "approved" } });

async function run(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI.href, ...args],
    cwd: opts.cwd,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("guard --help prints the usage and exits 0; an unknown command or flag exits 2 with usage", async () => {
  for (const args of [["--help"], ["-h"], ["call", "--help"]]) {
    const r = await run(args);
    assertEquals(r.code, 0, args.join(" "));
    assertStringIncludes(r.stdout, "guard check FILE.wasm");
  }
  const unknown = await run(["bogus"]);
  assertEquals(unknown.code, 2);
  assertEquals(JSON.parse(unknown.stdout).error, { kind: "usage", message: "unknown command bogus" });
  assertStringIncludes(unknown.stderr, "usage:");
  const flag = await run(["check", DEMO_GUARD.pathname, "--bogus"]);
  assertEquals(flag.code, 2);
  assertStringIncludes(flag.stdout, "--bogus");
});

Deno.test("guard: FILE.wasm and --backend are relative to INIT_CWD (the caller's directory)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "guard_cli_cwd_" });
  try {
    await Deno.copyFile(DEMO_GUARD, `${dir}/g.wasm`);
    await Deno.copyFile(new URL("../../docs/demo-backend.json", import.meta.url), `${dir}/backend.json`);
    // Run from somewhere else, as `deno task guard` does (it runs from the project root).
    const r = await run(
      [
        "call",
        "g.wasm",
        "--policy",
        POLICY,
        "--tool",
        "create_issue",
        "--args",
        '{"repo":"acme/public-site","title":"hi"}',
        "--backend",
        "backend.json",
      ],
      { cwd: "/", env: { INIT_CWD: dir } },
    );
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const doc = JSON.parse(r.stdout);
    assertEquals(doc.usage.backendCalls > 0, true);
    assert(!r.stderr.includes("no --backend entry matches"), r.stderr);
    assert(!r.stderr.includes("not an MCP tool result"), r.stderr);
    const missing = await run(["check", "nope.wasm"], { cwd: "/", env: { INIT_CWD: dir } });
    assertEquals(missing.code, 2);
    assertStringIncludes(missing.stdout, `${dir}/nope.wasm`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("guard call: a fixture result the guard cannot read, and an unanswered call, are hinted on stderr", async () => {
  const dir = await Deno.makeTempDir({ prefix: "guard_cli_hint_" });
  try {
    // A natural mistake: the repository object itself instead of the MCP tool result around it.
    await Deno.writeTextFile(
      `${dir}/bare.json`,
      JSON.stringify([{ tool: "get_repo", args: { repo: "acme/web" }, result: { visibility: "public" } }]),
    );
    const r = await run([
      "call",
      DEMO_GUARD.pathname,
      "--policy",
      POLICY,
      "--tool",
      "list_issues",
      "--args",
      '{"repo":"acme/public-site"}',
      "--backend",
      `${dir}/bare.json`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    const warnings = r.stderr.split("\n").filter((l) => l.includes('"source":"guard-cli"'))
      .map((l) => JSON.parse(l).msg as string);
    assertEquals(warnings.length, 2, r.stderr);
    assertStringIncludes(warnings[0], "--backend[0] (get_repo): result is not an MCP tool result");
    assertStringIncludes(
      warnings[1],
      'call_backend get_repo {"repo":"acme/public-site"}: no --backend entry',
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fixtureProblems: names each malformed entry; MCP-shaped results pass", () => {
  assertEquals(fixtureProblems([{ tool: "t", result: { content: [{ type: "text", text: "{}" }] } }]), []);
  assertEquals(fixtureProblems([{ tool: "t", result: { content: [], isError: true } }]), []);
  const p = fixtureProblems([1, { result: { content: [] } }, { tool: "x" }, { tool: "y", result: "text" }]);
  assertEquals(p.length, 4);
  assertStringIncludes(p[0], "--backend[0]: must be an object");
  assertStringIncludes(p[1], '--backend[1]: "tool" must be a string');
  assertStringIncludes(p[2], '--backend[2] (x): has no "result"');
  assertStringIncludes(p[3], "--backend[3] (y): result is not an MCP tool result");
});
