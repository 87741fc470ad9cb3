/**
 * Runs the MCP conformance suite (`@modelcontextprotocol/conformance` server mode: 0.1.16, or the
 * 0.2.0-alpha line installed as `conformance-next` for 2026-07-28) from `deno test` and turns its `checks.json` files into a map scenario → verdict that two runs can be
 * compared with (direct against an upstream vs. through the gateway).
 *
 * The CLI needs Node >= 22 (it imports `fs.globSync`), so it runs on the Node 22 that
 * scripts/node22.ts finds (tests using it pass `NEEDS_NODE22`). Each run writes into its own temporary directory, which is removed afterwards whatever happens;
 * the run is bounded by a timeout that kills the CLI.
 *
 * @module
 */
import { NODE22, REPO_ROOT } from "./processes.ts";

/** The conformance CLI entry point. */
export const CONFORMANCE_CLI: string =
  new URL("../../node_modules/@modelcontextprotocol/conformance/dist/index.js", import.meta.url).pathname;

/**
 * The 0.2.0-alpha conformance CLI (npm alias `conformance-next`), which knows the 2026-07-28
 * scenarios (`--spec-version 2026-07-28`).
 */
export const CONFORMANCE_NEXT_CLI: string =
  new URL("../../node_modules/conformance-next/dist/index.js", import.meta.url).pathname;

/** Server scenarios of conformance 0.1.16's default ("active") suite, in run order. */
export const ACTIVE_SERVER_SCENARIOS: readonly string[] = Object.freeze([
  "server-initialize",
  "logging-set-level",
  "ping",
  "completion-complete",
  "tools-list",
  "tools-call-simple-text",
  "tools-call-image",
  "tools-call-audio",
  "tools-call-embedded-resource",
  "tools-call-mixed-content",
  "tools-call-with-logging",
  "tools-call-error",
  "tools-call-with-progress",
  "tools-call-sampling",
  "tools-call-elicitation",
  "elicitation-sep1034-defaults",
  "server-sse-multiple-streams",
  "elicitation-sep1330-enums",
  "resources-list",
  "resources-read-text",
  "resources-read-binary",
  "resources-templates-read",
  "resources-subscribe",
  "resources-unsubscribe",
  "prompts-list",
  "prompts-get-simple",
  "prompts-get-with-args",
  "prompts-get-embedded-resource",
  "prompts-get-with-image",
  "dns-rebinding-protection",
]);

/**
 * Server scenarios of the "pending" suite. `server-sse-polling` can only warn against an SDK v1 server:
 * its raw request says `MCP-Protocol-Version: 2025-03-26`, for which the SDK sends no priming event.
 */
export const PENDING_SERVER_SCENARIOS: readonly string[] = Object.freeze([
  "json-schema-2020-12",
  "server-sse-polling",
]);

/**
 * Default bound on one whole run. A healthy target takes about 1.5 s for the full suite; a target that
 * buffers SSE turns sampling/elicitation into 60 s client timeouts, which this bound cuts short.
 */
export const DEFAULT_CONFORMANCE_TIMEOUT_MS = 120_000;

/**
 * A scenario's verdict: `fail` if any check failed; else `warning` if any check warned; else `pass` if
 * at least one check succeeded; else `inconclusive` (only informational checks).
 */
export type Verdict = "pass" | "warning" | "fail" | "inconclusive";

/** Status of one check as the suite reports it. */
export type CheckStatus = "SUCCESS" | "FAILURE" | "WARNING" | "INFO" | "SKIPPED";

/** One scenario's outcome. */
export interface ScenarioResult {
  verdict: Verdict;
  passed: number;
  failed: number;
  warnings: number;
  /** Status per check id, for checks that carry a verdict (INFO checks are left out). */
  checks: Record<string, CheckStatus>;
  /** `"<check id>: <error message>"` for each failed or warning check. */
  problems: string[];
}

/** Outcome of {@link runConformance}. */
export interface ConformanceReport {
  /** scenario → verdict, keys sorted: compare two runs with `assertEquals(a.verdicts, b.verdicts)`. */
  verdicts: Record<string, Verdict>;
  /** scenario → details, keys sorted. */
  scenarios: Record<string, ScenarioResult>;
  /** The CLI's exit code (0 when no check failed). */
  exitCode: number;
  durationMs: number;
  /** The CLI's stdout and stderr (last part), for failure messages. */
  output: string;
}

/** Options of {@link runConformance}. */
export interface RunConformanceOptions {
  /** Run one scenario instead of a suite. */
  scenario?: string;
  /** `active` (default), `all` or `pending`. */
  suite?: "active" | "all" | "pending";
  /** `--spec-version` filter, e.g. `2025-11-25`. */
  specVersion?: string;
  /** The CLI entry point: {@link CONFORMANCE_CLI} (default) or {@link CONFORMANCE_NEXT_CLI}. */
  cli?: string;
  /** Per-scenario bound the CLI applies itself (`--timeout`, 0.2.0-alpha only). */
  scenarioTimeoutMs?: number;
  /** Bound on the whole run; {@link DEFAULT_CONFORMANCE_TIMEOUT_MS} by default. */
  timeoutMs?: number;
  /** Parent directory for the temporary output directory (the system temp dir by default). */
  tempRoot?: string;
}

/** The conformance run did not finish in time; the CLI was killed. */
export class ConformanceTimeoutError extends Error {
  constructor(readonly url: string, readonly timeoutMs: number, readonly output: string) {
    super(`conformance run against ${url} did not finish within ${timeoutMs} ms:\n${output.slice(-3000)}`);
    this.name = "ConformanceTimeoutError";
  }
}

/** The CLI ran but produced no results (bad arguments, crash, unknown scenario). */
export class ConformanceRunError extends Error {
  constructor(readonly url: string, readonly exitCode: number, readonly output: string) {
    super(
      `conformance run against ${url} produced no results (exit code ${exitCode}):\n${output.slice(-3000)}`,
    );
    this.name = "ConformanceRunError";
  }
}

/** Matches the per-scenario result directory the CLI writes: `server-<scenario>-<ISO time, : and . as ->`. */
const RESULT_DIR_RE = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;

/** Most CLI output kept in a report. */
const MAX_OUTPUT_CHARS = 20_000;

function sortedRecord<T>(entries: Iterable<[string, T]>): Record<string, T> {
  return Object.fromEntries([...entries].sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * Summarises one scenario's `checks.json` content.
 *
 * @example
 * ```ts
 * summarizeChecks([{ id: "ping", status: "SUCCESS" }]).verdict; // "pass"
 * ```
 */
export function summarizeChecks(
  checks: ReadonlyArray<{ id: string; status: string; errorMessage?: string }>,
): ScenarioResult {
  const counted = checks.filter((c) => c.status !== "INFO");
  const count = (s: string) => counted.filter((c) => c.status === s).length;
  const passed = count("SUCCESS"), failed = count("FAILURE"), warnings = count("WARNING");
  const verdict: Verdict = failed > 0
    ? "fail"
    : warnings > 0
    ? "warning"
    : passed > 0
    ? "pass"
    : "inconclusive";
  return {
    verdict,
    passed,
    failed,
    warnings,
    checks: sortedRecord(counted.map((c) => [c.id, c.status as CheckStatus])),
    problems: counted.filter((c) => c.status === "FAILURE" || c.status === "WARNING")
      .map((c) => `${c.id}: ${c.errorMessage ?? c.status}`),
  };
}

/**
 * Reads every `server-<scenario>-<time>/checks.json` under `dir` into scenario → result.
 * A scenario directory without a readable `checks.json` counts as a failed scenario.
 */
export async function readResults(dir: string): Promise<Record<string, ScenarioResult>> {
  const results: Array<[string, ScenarioResult]> = [];
  for await (const entry of Deno.readDir(dir)) {
    const m = entry.isDirectory ? entry.name.match(RESULT_DIR_RE) : null;
    if (!m) continue;
    let result: ScenarioResult;
    try {
      const checks = JSON.parse(await Deno.readTextFile(`${dir}/${entry.name}/checks.json`));
      result = summarizeChecks(checks);
    } catch (err) {
      result = {
        verdict: "fail",
        passed: 0,
        failed: 1,
        warnings: 0,
        checks: {},
        problems: [`checks.json unreadable: ${err instanceof Error ? err.message : err}`],
      };
    }
    results.push([m[1], result]);
  }
  return sortedRecord(results);
}

/**
 * Runs `conformance server --url <url>` on Node 22 and returns the verdict per scenario.
 *
 * Contract: resolves with a {@link ConformanceReport} whenever the CLI produced results (failing
 * scenarios are data, not exceptions); rejects with {@link ConformanceTimeoutError} when `timeoutMs`
 * passes (the CLI is killed) and with {@link ConformanceRunError} when it wrote no results. The temporary
 * output directory is removed in every case. Use `localhost` or `127.0.0.1` in `url`: the
 * dns-rebinding scenario requires a loopback URL.
 *
 * @example
 * ```ts
 * const direct = await runConformance(upstreamUrl);
 * const viaGateway = await runConformance(gatewayUrl);
 * assertEquals(viaGateway.verdicts, direct.verdicts);
 * ```
 */
export async function runConformance(
  url: string,
  opts: RunConformanceOptions = {},
): Promise<ConformanceReport> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_CONFORMANCE_TIMEOUT_MS;
  const outDir = await Deno.makeTempDir({ prefix: "conformance-", dir: opts.tempRoot });
  const args = [opts.cli ?? CONFORMANCE_CLI, "server", "--url", url, "-o", outDir];
  if (opts.scenario) args.push("--scenario", opts.scenario);
  else args.push("--suite", opts.suite ?? "active");
  if (opts.specVersion) args.push("--spec-version", opts.specVersion);
  if (opts.scenarioTimeoutMs !== undefined) args.push("--timeout", String(opts.scenarioTimeoutMs));
  const started = performance.now();
  try {
    const timeout = AbortSignal.timeout(timeoutMs);
    let result: Deno.CommandOutput;
    try {
      result = await new Deno.Command(NODE22, {
        args,
        cwd: REPO_ROOT,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: timeout,
      }).output();
    } catch (err) {
      if (timeout.aborted) throw new ConformanceTimeoutError(url, timeoutMs, "");
      throw err;
    }
    const decoder = new TextDecoder();
    const output = (decoder.decode(result.stdout) + decoder.decode(result.stderr)).slice(-MAX_OUTPUT_CHARS);
    // A killed CLI exits by signal; Deno reports that as a status, not an exception.
    if (timeout.aborted || result.signal !== null) throw new ConformanceTimeoutError(url, timeoutMs, output);
    const scenarios = await readResults(outDir);
    if (Object.keys(scenarios).length === 0) throw new ConformanceRunError(url, result.code, output);
    return {
      verdicts: sortedRecord(Object.entries(scenarios).map(([name, r]) => [name, r.verdict])),
      scenarios,
      exitCode: result.code,
      durationMs: Math.round(performance.now() - started),
      output,
    };
  } finally {
    await Deno.remove(outDir, { recursive: true }).catch(() => {});
  }
}

/**
 * Lists the server scenarios the installed CLI knows (`conformance list --server`), optionally
 * for one spec version (`--spec-version`, 0.2.0-alpha only).
 *
 * @example
 * ```ts
 * (await listServerScenarios()).includes("ping"); // true
 * await listServerScenarios({ cli: CONFORMANCE_NEXT_CLI, specVersion: "2026-07-28" });
 * ```
 */
export async function listServerScenarios(
  opts: { cli?: string; specVersion?: string } = {},
): Promise<string[]> {
  const args = [opts.cli ?? CONFORMANCE_CLI, "list", "--server"];
  if (opts.specVersion) args.push("--spec-version", opts.specVersion);
  const { stdout, code } = await new Deno.Command(NODE22, {
    args,
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`conformance list --server exited with code ${code}`);
  return [...new TextDecoder().decode(stdout).matchAll(/^\s*-\s+(\S+)/gm)].map((m) => m[1]);
}
