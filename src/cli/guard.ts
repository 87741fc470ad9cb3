/**
 * `guard`: the developer CLI for WebAssembly guards (`deno task guard ...`).
 *
 * ```
 * guard check FILE.wasm [--memory-pages N]
 *     ABI report: exports, imports, memory, size, alloc path, whether it prepares cleanly.
 *     Exit 1 with the reason when the guard is unusable.
 * guard call FILE.wasm --policy JSON --tool NAME --args JSON [--result JSON] [--backend FIXTURE.json]
 *            [--fuel N] [--timeout-ms N] [--memory-pages N]
 *     One fresh instance: label_agent(policy), label_resource, and label_response when --result is
 *     given. Prints one JSON document; on failure {"error":{"kind","message"}} and exit 1.
 *     FIXTURE.json is an array of {"tool", "args"?, "result"} answering call_backend (first match;
 *     "args" absent matches any arguments); an unmatched call returns -1 to the guard.
 * ```
 * Logs (guard `host_log`, WASI stdout/stderr, host messages) go to stderr as JSON lines.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { BackendCaller, GuardLogger, GuardUsage } from "../difc/guard.ts";
import { loadGuardModule } from "../guard/host.ts";
import { canonicalJson } from "../difc/payload.ts";
import { GuardError, type GuardLimits, resolveLimits } from "../guard/limits.ts";
import { inspectGuard, prepareGuard } from "../guard/prepare.ts";
import { errorMessage } from "../util.ts";

const USAGE = `usage:
  guard check FILE.wasm [--memory-pages N]
  guard call FILE.wasm --policy JSON --tool NAME --args JSON [--result JSON] [--backend FIXTURE.json]
             [--fuel N] [--timeout-ms N] [--memory-pages N]`;

/** A command-line mistake; reported as `{"error":{"kind":"usage"}}`. */
class UsageError extends Error {}

/** One `call_backend` answer of a `--backend` fixture. */
export interface BackendFixture {
  tool: string;
  args?: unknown;
  result: unknown;
}

/**
 * A `BackendCaller` answering from fixtures: the first entry with the same tool name and, when the
 * entry has `args`, the same arguments (compared as sorted-key JSON). Unmatched calls reject.
 *
 * @example
 * ```ts
 * const backend = fixtureBackend([{ tool: "search_repositories", result: { content: [] } }]);
 * ```
 */
export function fixtureBackend(fixtures: BackendFixture[]): BackendCaller {
  return (tool, args) => {
    const key = canonicalJson(args);
    const hit = fixtures.find((f) =>
      f.tool === tool && (f.args === undefined || canonicalJson(f.args) === key)
    );
    return hit ? Promise.resolve(hit.result) : Promise.reject(new Error(`no fixture for ${tool} ${key}`));
  };
}

/** Guard output: parsed JSON, or the raw text when it is not JSON, or null when empty. */
function outputValue(text: string): unknown {
  if (text === "") return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function parseJsonFlag(name: string, text: string | undefined): unknown {
  if (text === undefined) throw new UsageError(`--${name} is required`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--${name} is not valid JSON: ${(e as Error).message}`);
  }
}

function intFlag(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new UsageError(`--${name} must be a positive integer, got ${text}`);
  }
  return n;
}

const stderrLog: GuardLogger = (level, msg, fields) => {
  console.error(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }));
};

async function readWasm(file: string | undefined): Promise<Uint8Array> {
  if (!file) throw new UsageError("FILE.wasm is required");
  try {
    return await Deno.readFile(file);
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** `guard check`: prints the report; returns the exit code. */
async function check(file: string | undefined, memoryPages: number | undefined): Promise<number> {
  const bytes = await readWasm(file);
  const limits = resolveLimits(memoryPages ? { maxMemoryPages: memoryPages } : {});
  const info = inspectGuard(bytes);
  const lines: string[] = [`file: ${file}`, `size: ${bytes.length} bytes`];
  lines.push("exports:", ...info.exports.map((e) => `  ${e.kind} ${e.name}${e.type ? " " + e.type : ""}`));
  lines.push(
    "imports:",
    ...info.imports.map((i) => `  ${i.kind} ${i.module}.${i.name}${i.type ? " " + i.type : ""}`),
  );
  const m = info.memory;
  lines.push(
    m
      ? `memory: ${m.imported ? "imported, " : ""}min ${m.minPages} pages, declared max ${
        m.declaredMaxPages ?? "none"
      }, effective max ${Math.min(m.maxPages, limits.maxMemoryPages)} pages (cap ${limits.maxMemoryPages})`
      : "memory: none (every call would fail: WASM module has no memory)",
  );
  lines.push(`functions: ${info.functions}`);
  lines.push(
    `buffers: ${info.allocDealloc ? "guard alloc/dealloc" : "host-managed (direct, end of memory)"}`,
  );
  let problem: string | null = info.abiError ?? (m ? null : "WASM module has no memory");
  if (info.prepared) {
    lines.push(`prepared: yes (fuel ${info.prepared.fuel}, cap ${info.prepared.maxMemoryPages} pages)`);
    if (info.prepared.maxMemoryPages > limits.maxMemoryPages) {
      problem ??=
        `prepared with a memory cap of ${info.prepared.maxMemoryPages} pages, above ${limits.maxMemoryPages}`;
    }
  } else if (!info.abiError) {
    try {
      const { report } = prepareGuard(bytes, { maxMemoryPages: limits.maxMemoryPages });
      lines.push(
        `prepares cleanly: yes (${report.bytesIn} -> ${report.bytesOut} bytes, ${report.fuelPoints} fuel points, ` +
          `${report.ms.toFixed(1)} ms)`,
      );
    } catch (e) {
      problem ??= (e as Error).message;
      lines.push(`prepares cleanly: no (${(e as Error).message})`);
    }
  }
  lines.push(problem ? `usable: no: ${problem}` : "usable: yes");
  console.log(lines.join("\n"));
  return problem ? 1 : 0;
}

/** `guard call`: runs the three exports on one fresh instance; returns the JSON document. */
async function call(file: string | undefined, values: Record<string, string | undefined>): Promise<unknown> {
  const policy = parseJsonFlag("policy", values.policy);
  const tool = values.tool;
  if (!tool) throw new UsageError("--tool is required");
  const args = parseJsonFlag("args", values.args);
  const result = values.result === undefined ? undefined : parseJsonFlag("result", values.result);
  let fixtures: BackendFixture[] = [];
  if (values.backend) {
    const parsed = parseJsonFlag("backend", await Deno.readTextFile(values.backend));
    if (!Array.isArray(parsed)) {
      throw new UsageError("--backend file must hold a JSON array of {tool, args?, result}");
    }
    fixtures = parsed as BackendFixture[];
  }
  const limits: Partial<GuardLimits> = {};
  const fuel = intFlag("fuel", values.fuel);
  const timeoutMs = intFlag("timeout-ms", values["timeout-ms"]);
  const pages = intFlag("memory-pages", values["memory-pages"]);
  if (fuel) limits.fuel = fuel;
  if (fuel && fuel < resolveLimits().fuelSlice) limits.fuelSlice = fuel;
  if (timeoutMs) limits.timeoutMs = timeoutMs;
  if (pages) limits.maxMemoryPages = pages;
  const bytes = await readWasm(file);
  const name = file!.replace(/^.*[\\/]/, "").replace(/\.wasm$/i, "");
  const guard = await loadGuardModule(bytes, { name, limits });
  const session = guard.open({
    signal: new AbortController().signal,
    backend: fixtureBackend(fixtures),
    log: stderrLog,
  });
  try {
    const out: {
      label_agent: unknown;
      label_resource: unknown;
      label_response: unknown;
      usage?: GuardUsage;
    } = {
      label_agent: outputValue(await session.labelAgent(canonicalJson(policy))),
      label_resource: outputValue(
        await session.labelResource(canonicalJson({ capabilities: {}, tool_args: args, tool_name: tool })),
      ),
      label_response: null,
    };
    if (result !== undefined) {
      out.label_response = outputValue(
        await session.labelResponse(
          canonicalJson({ capabilities: {}, tool_args: args, tool_name: tool, tool_result: result }),
        ),
      );
    }
    const u = session.usage();
    out.usage = { fuel: u.fuel, backendCalls: u.backendCalls, memoryPages: u.memoryPages, ms: u.ms };
    return out;
  } finally {
    session.close();
  }
}

/**
 * Runs the CLI with `argv` (without the program name); returns the exit code.
 *
 * @example
 * ```ts
 * Deno.exit(await main(["check", "guard.wasm"]));
 * ```
 */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        policy: { type: "string" },
        tool: { type: "string" },
        args: { type: "string" },
        result: { type: "string" },
        backend: { type: "string" },
        fuel: { type: "string" },
        "timeout-ms": { type: "string" },
        "memory-pages": { type: "string" },
      },
    });
    if (positionals.length > 1) throw new UsageError(`unexpected argument ${positionals[1]}`);
    if (command === "check") {
      return await check(positionals[0], intFlag("memory-pages", values["memory-pages"]));
    }
    if (command === "call") {
      console.log(JSON.stringify(await call(positionals[0], values)));
      return 0;
    }
    throw new UsageError(command ? `unknown command ${command}` : "missing command");
  } catch (e) {
    const usage = e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    const kind = e instanceof GuardError ? e.kind : usage ? "usage" : "internal";
    const message = errorMessage(e);
    if (command !== "check") {
      console.log(JSON.stringify({ error: { kind, message } }));
    } else {
      console.log(`usable: no: ${message}`);
    }
    if (usage) console.error(USAGE);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
