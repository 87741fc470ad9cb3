/**
 * `BENCH_QUICK=1 deno task bench`: quick runs write under `.tmp/bench-quick/`, never over the committed
 * full-run results in `bench/results/`, and the task runs with `--unstable-no-legacy-abort` (without it
 * Deno warns about the legacy request-signal behaviour when a benchmark's server answers).
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { DEFAULT_RESULTS_DIR, QUICK_RESULTS_DIR, resultsDirFor } from "../bench/lib.ts";

const ROOT = new URL("../", import.meta.url);

async function sha(url: URL): Promise<string | null> {
  try {
    const bytes = await Deno.readFile(url);
    return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

Deno.test("bench: quick mode writes to .tmp/bench-quick/, full runs to bench/results/", () => {
  assertEquals(resultsDirFor({ quick: true }).href, QUICK_RESULTS_DIR.href);
  assertEquals(resultsDirFor({ quick: false }).href, DEFAULT_RESULTS_DIR.href);
  const own = new URL("file:///elsewhere/");
  assertEquals(resultsDirFor({ quick: true, resultsDir: own }).href, own.href);
  assert(QUICK_RESULTS_DIR.href.endsWith("/.tmp/bench-quick/"));
});

Deno.test("bench task: BENCH_QUICK=1 deno task bench fuel leaves bench/results alone, no legacy-abort warning", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))).tasks;
  assertStringIncludes(tasks.bench, "--unstable-no-legacy-abort");
  const committed = new URL("bench/results/fuel.json", ROOT);
  const quick = new URL("fuel.json", QUICK_RESULTS_DIR);
  const before = await sha(committed);
  const started = Date.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "bench", "fuel"],
    cwd: ROOT.pathname,
    env: { BENCH_QUICK: "1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, stderr);
  assertEquals(await sha(committed), before, "bench/results/fuel.json is unchanged");
  assert(
    (await Deno.stat(quick)).mtime!.getTime() >= started - 1000,
    "the quick run wrote .tmp/bench-quick/",
  );
  assertEquals(JSON.parse(await Deno.readTextFile(quick)).quick, true);
  assert(!/legacy behavior/.test(stderr), stderr);
  const unknown = await new Deno.Command(Deno.execPath(), {
    args: ["task", "bench", "nope"],
    cwd: ROOT.pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(unknown.code, 2);
  assertStringIncludes(
    new TextDecoder().decode(unknown.stderr),
    "unknown benchmark nope; known: guard, gateway",
  );
});
