/**
 * The README stays true: every shell command in it is run, and every config example is parsed.
 *
 * - Every fenced block whose language is `sh`, `bash` or `shell` is a list of commands (a `\` at a line end
 *   continues it, ` # ...` is a comment). Each command must match one of {@link RUNNERS} and is run for real
 *   from the repository root through `bash`, with `deno` on `PATH` being the Deno that runs this test.
 *   A block that cannot run here (it installs packages, needs a Rust toolchain or a Cloudflare account)
 *   says so in its info string, `sh not-run-in-tests: <reason>`, so nothing is skipped silently.
 * - Gateway starts (`npm start`, `deno task start ...`) run on a free loopback port, answer `GET /health`
 *   and are stopped by their process group id. The demo client and the `/reflect` call run against the
 *   demo gateway of the first start without a config, with its printed API key.
 * - `--config gateway.json` (and `$(cat gateway.json)`) use the first README config example whose guard
 *   files exist, written next to a link to `guards/`; `${VAR}` references get test values.
 * - Every `json` block is a whole gateway config and must load through {@link parseConfigText} without
 *   warnings; a `json fragment` block (a piece of a config or payload) must parse as JSON.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { parseConfigText } from "../src/config.ts";
import { startTaskV8Flags } from "../bench/lib.ts";

const ROOT = new URL("../", import.meta.url);
const ROOT_PATH = decodeURIComponent(ROOT.pathname).replace(/\/$/, "");
const README = await Deno.readTextFile(new URL("README.md", ROOT));
const NOT_RUN = "not-run-in-tests:";
/** How long a gateway may take to print its banner, and a command to finish. */
const START_TIMEOUT_MS = 60_000;
const COMMAND_TIMEOUT_MS = 120_000;

interface Block {
  lang: string;
  info: string;
  body: string;
  line: number;
}

/** Fenced code blocks with their info string and first line number. */
function blocks(md: string): Block[] {
  const out: Block[] = [];
  const re = /^```([^\n`]*)\n([\s\S]*?)^```[ \t]*$/gm;
  for (let m; (m = re.exec(md));) {
    const info = m[1].trim();
    out.push({
      lang: info.split(/\s+/)[0] ?? "",
      info,
      body: m[2],
      line: md.slice(0, m.index).split("\n").length,
    });
  }
  return out;
}

const SHELL = new Set(["sh", "bash", "shell"]);
const shellBlocks = () => blocks(README).filter((b) => SHELL.has(b.lang));

/** The commands of a shell block: continuation lines joined, comments and blank lines dropped. */
function commands(body: string): string[] {
  return body.replace(/\\\n\s*/g, " ").split("\n")
    .map((l) => l.replace(/(^|\s)#\s.*$/, "").trim())
    .filter((l) => l !== "");
}

type Kind = "start" | "suite" | "demo-client" | "reflect" | "guard";
/**
 * `npm install && …`: the install is what CI runs first in a fresh clone (it needs the registry, and
 * running it here would rewrite node_modules under the other tests); the test checks it was done and
 * runs the rest.
 */
const INSTALL = "npm install && ";
/** What the test knows how to run; a README command matching none of these fails the test. */
const RUNNERS: { kind: Kind; re: RegExp }[] = [
  { kind: "start", re: /^(npm install && )?npm start$/ },
  { kind: "suite", re: /^npm install && npm test$/ },
  {
    kind: "start",
    re: /^(MCP_EDGE_GUARD_CONFIG="\$\(cat gateway\.json\)" )?deno task start( --[a-z]+ \S+)*$/,
  },
  { kind: "demo-client", re: /^node_modules\/deno\/deno run -A examples\/demo-client\.ts \S+ <API key>$/ },
  {
    kind: "reflect",
    re: /^curl -s -H "Authorization: Bearer <API key>" -H "X-Agent-ID: [\w-]+" \S+\/reflect$/,
  },
  { kind: "guard", re: /^deno task guard (check|call|--help)\b/ },
];

function kindOf(cmd: string): Kind | null {
  return RUNNERS.find((r) => r.re.test(cmd))?.kind ?? null;
}

/** A free loopback port (closed again before use; the gateway binds it right after). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  return port;
}

/** Test values for every `${VAR}` a text refers to. */
function envFor(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) {
    env[m[1]] = `readme-test-${m[1].toLowerCase()}`;
  }
  return env;
}

const configBlocks = () => blocks(README).filter((b) => b.lang === "json" && !/\bfragment\b/.test(b.info));

/** A temporary directory with `deno` (this test's Deno) for `PATH` and `gateway.json` beside `guards/`. */
async function workdir(): Promise<{ dir: string; env: Record<string, string> }> {
  const dir = await Deno.makeTempDir({ prefix: "readme_test_" });
  await Deno.mkdir(`${dir}/bin`);
  await Deno.symlink(Deno.execPath(), `${dir}/bin/deno`);
  await Deno.symlink(`${ROOT_PATH}/guards`, `${dir}/guards`);
  const runnable = configBlocks().find((b) => {
    const cfg = parseConfigText(b.body, envFor(b.body));
    return [...cfg.guards.values()].every((g) => {
      if (g.type !== "wasm") return true;
      try {
        return Deno.statSync(`${ROOT_PATH}/${g.path}`).isFile;
      } catch {
        return false;
      }
    });
  });
  assert(runnable, "the README has a config example whose guard files exist (for --config gateway.json)");
  await Deno.writeTextFile(`${dir}/gateway.json`, runnable.body);
  return {
    dir,
    env: { ...envFor(runnable.body), PATH: `${dir}/bin:${Deno.env.get("PATH") ?? ""}`, NO_COLOR: "1" },
  };
}

/** Runs `cmd` through bash from the repository root; resolves to exit code and output. */
async function run(cmd: string, env: Record<string, string>) {
  const out = await new Deno.Command("bash", {
    args: ["-c", cmd],
    cwd: ROOT_PATH,
    env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(COMMAND_TIMEOUT_MS),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

interface Running {
  port: number;
  key: string;
  stop(): Promise<void>;
}

/**
 * Starts a gateway command on a free port in its own process group, waits for the banner and checks
 * `/health`. `stop` ends the group by its id and checks the port is closed.
 */
async function start(cmd: string, w: { dir: string; env: Record<string, string> }): Promise<Running> {
  const port = freePort();
  let line = cmd.replaceAll("gateway.json", `${w.dir}/gateway.json`).replace(/ --port \S+/, "");
  line = line.endsWith("npm start") ? `npm start -- --port ${port}` : `${line} --port ${port}`;
  const child = new Deno.Command("setsid", {
    args: ["bash", "-c", line],
    cwd: ROOT_PATH,
    env: w.env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      Deno.kill(-child.pid, "SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
    await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => {
        r.body?.cancel();
        throw new Error(`${cmd}: port ${port} still answers after stop`);
      },
      () => {},
    );
  };
  const errText = new Response(child.stderr).text();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let banner = "";
    const deadline = Date.now() + START_TIMEOUT_MS;
    // The banner is one write; the agent-facing lines end with a newline.
    while (!(banner.includes("listening on") && banner.endsWith("\n"))) {
      const next = await Promise.race([
        reader.read(),
        new Promise<never>((_, rej) =>
          setTimeout(() => rej(new Error("no banner in time")), Math.max(0, deadline - Date.now()))
        ),
      ]);
      if (next.done) break;
      banner += next.value;
    }
    // Keep draining stdout so the gateway never blocks on a full pipe.
    (async () => {
      while (!(await reader.read()).done);
    })().catch(() => {});
    assert(banner.includes(`listening on http://127.0.0.1:${port}`), `${cmd}: banner\n${banner}`);
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    assertEquals(res.status, 200, `${cmd}: /health`);
    const health = await res.json();
    assert(typeof health.servers === "object", `${cmd}: /health names the servers`);
    const key = /API key: ([0-9a-f]{16,})/.exec(banner)?.[1] ?? w.env.GATEWAY_KEY;
    assert(key, `${cmd}: an API key`);
    return { port, key, stop };
  } catch (e) {
    await stop().catch(() => {});
    throw new Error(`${cmd}: ${(e as Error).message}\n${await errText}`);
  } finally {
    errText.catch(() => {});
  }
}

Deno.test("README: every shell command is run by this test or its block says why not", () => {
  const unknown: string[] = [];
  let notRun = 0;
  for (const b of shellBlocks()) {
    const rest = b.info.slice(b.lang.length).trim();
    if (rest.startsWith(NOT_RUN)) {
      assert(rest.slice(NOT_RUN.length).trim().length >= 10, `README line ${b.line}: give the reason`);
      notRun++;
      continue;
    }
    assertEquals(rest, "", `README line ${b.line}: unknown info string "${b.info}"`);
    for (const cmd of commands(b.body)) if (!kindOf(cmd)) unknown.push(`line ${b.line}: ${cmd}`);
  }
  assertEquals(unknown, [], "commands with no runner: add one here or mark the block not-run-in-tests");
  assert(notRun > 0 && shellBlocks().length > notRun);
});

Deno.test("deno.json: the start, test and bench tasks run V8 with the same flags, which the README names", async () => {
  const deno = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const flags = (task: string) =>
    (deno.tasks[task] as string).split(" ").filter((a) => a.startsWith("--v8-flags="));
  const start = flags("start");
  assertEquals(start, ["--v8-flags=--heap-growing-percent=30"]);
  assertEquals(
    flags("test"),
    [...start, ...start],
    "the suite and the load test after it run as the gateway does",
  );
  assertEquals(flags("bench"), start);
  assertEquals(await startTaskV8Flags(), start[0], "the benchmarks' server children get them too");
  assert(README.includes("`" + start[0] + "`"), "the README names the flag");
});

Deno.test("README: every JSON config example loads with the real config parser", () => {
  const configs = configBlocks();
  assert(configs.length >= 2, "the README shows config examples");
  for (const b of configs) {
    const cfg = parseConfigText(b.body, envFor(b.body), `README line ${b.line}`);
    assertEquals(cfg.warnings, [], `README line ${b.line}: warnings`);
    assert(cfg.servers.length > 0);
  }
  for (const b of blocks(README).filter((b) => b.lang === "json" && /\bfragment\b/.test(b.info))) {
    JSON.parse(b.body);
  }
});

Deno.test("docs/guard-abi.md: every JSON example parses", async () => {
  const md = await Deno.readTextFile(new URL("docs/guard-abi.md", ROOT));
  const json = blocks(md).filter((b) => b.lang === "json");
  assert(json.length > 0);
  for (const b of json) JSON.parse(b.body);
});

Deno.test({
  name: "README: the commands run (gateway starts answer /health, the demo shows its three outcomes)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const w = await workdir();
    let demo: Running | null = null;
    const ran: string[] = [];
    try {
      const cmds = shellBlocks()
        .filter((b) => b.info === b.lang)
        .flatMap((b) => commands(b.body));
      for (const cmd of cmds) {
        const kind = kindOf(cmd)!;
        if (cmd.startsWith(INSTALL)) {
          assert(
            (await Deno.stat(new URL("node_modules/.package-lock.json", ROOT))).isFile,
            "npm install ran",
          );
        }
        if (kind === "suite") {
          // `npm test` is this suite: its wiring is checked, not run recursively.
          const pkg = JSON.parse(await Deno.readTextFile(new URL("package.json", ROOT)));
          assertEquals(pkg.scripts.test, "node node_modules/deno/bin.cjs task test");
          const deno = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
          // The whole suite in parallel, then the load test alone (its RSS report is its own process's),
          // type-checked in a process of its own so that the checker's memory is not in that report.
          assertMatch(
            deno.tasks.test,
            /^deno test .* --parallel --ignore=test\/stress\/load_test\.ts test\/ && deno check test\/stress\/load_test\.ts && deno test .* --no-check test\/stress\/load_test\.ts$/,
          );
        } else if (kind === "start") {
          const isDemo = !cmd.includes("gateway.json");
          const g = await start(cmd, w);
          if (isDemo && !demo) demo = g;
          else await g.stop();
        } else if (kind === "demo-client" || kind === "reflect") {
          assert(demo, `${cmd}: needs a demo gateway started earlier in the README`);
          const line = cmd.replaceAll("<API key>", demo.key).replace(
            /127\.0\.0\.1:\d+/,
            `127.0.0.1:${demo.port}`,
          );
          const r = await run(line, w.env);
          assertEquals(r.code, 0, `${cmd}\n${r.stderr}`);
          if (kind === "demo-client") {
            assert(
              r.stdout.includes("[Filtered] 1 item(s) in this response were removed by integrity policy"),
            );
            assert(r.stdout.includes('"created": true'), "the allowed write");
            assert(
              r.stdout.includes(
                "MCP error -32001: DIFC Violation: Agent lacks required integrity to write to 'repo:acme/public-site'",
              ),
              "the blocked write is an integrity refusal",
            );
          } else {
            const body = JSON.parse(r.stdout);
            assertEquals(body.agent.labels.secrecy, ["private:acme/web"]);
            assert(body.agent.labels.integrity.includes("approved:acme/web"));
          }
        } else {
          const r = await run(cmd, w.env);
          assertEquals(r.code, 0, `${cmd}\n${r.stdout}\n${r.stderr}`);
          if (cmd.startsWith("deno task guard check")) assert(r.stdout.includes("usable: yes"), r.stdout);
          if (cmd.startsWith("deno task guard call")) {
            const out = JSON.parse(r.stdout);
            assertEquals(out.label_agent.difc_mode, "filter");
            assertEquals(out.label_resource.operation, "write");
            assertEquals(out.label_resource.resource.secrecy, [], "the backend fixture says public");
          }
        }
        ran.push(cmd);
      }
    } finally {
      await demo?.stop();
      await Deno.remove(w.dir, { recursive: true });
    }
    console.log(`ran ${ran.length} README commands:\n  ${ran.join("\n  ")}`);
    assert(ran.some((c) => c.endsWith("npm start")), "npm start ran");
    assert(ran.filter((c) => kindOf(c) === "start").length >= 4, ran.join("\n"));
  },
});

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function anchors(md: string): Set<string> {
  const out = new Set<string>();
  const noCode = md.replace(/^```[\s\S]*?^```/gm, "");
  for (const m of noCode.matchAll(/^#{1,6} (.+)$/gm)) {
    out.add(m[1].trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replace(/ /g, "-"));
  }
  return out;
}

Deno.test("README, docs and the demo guard's README: relative links and anchors resolve", async () => {
  const files = ["README.md", "docs/guard-abi.md", "guards/demo/README.md"];
  const bad: string[] = [];
  for (const file of files) {
    const url = new URL(file, ROOT);
    const md = (await Deno.readTextFile(url)).replace(/^```[\s\S]*?^```/gm, "");
    for (const m of md.matchAll(/\]\(([^)\s]+)\)/g)) {
      const link = m[1];
      if (/^[a-z]+:/.test(link)) continue; // https:, mailto:
      const [path, anchor] = link.split("#");
      const target = path === "" ? url : new URL(path, url);
      let text: string;
      try {
        text = await Deno.readTextFile(target);
      } catch {
        bad.push(`${file}: ${link} (no such file)`);
        continue;
      }
      if (anchor !== undefined && !anchors(text).has(anchor)) bad.push(`${file}: ${link} (no such heading)`);
    }
  }
  assertEquals(bad, []);
});
