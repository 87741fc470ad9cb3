/**
 * `guard`: the developer CLI for WebAssembly guards (`deno task guard ...`).
 *
 * ```
 * guard check FILE.wasm [--memory-pages N]
 *     ABI report: exports, imports, memory, size, alloc path, then one line per load-time check
 *     (validated, imports, ABI, memory cap, table cap, segment limits, prepared by us / fuel) with
 *     pass or FAIL and the reason. Exit 1 with the first reason when the guard is unusable.
 * guard call FILE.wasm --policy JSON --tool NAME --args JSON [--result JSON] [--backend FIXTURE.json]
 *            [--fuel N] [--timeout-ms N] [--memory-pages N]
 *     One fresh instance: label_agent(policy), label_resource, and label_response when --result is
 *     given. Prints one JSON document; on failure {"error":{"kind","message"}} and exit 1.
 *     FIXTURE.json is an array of {"tool", "args"?, "result"} answering call_backend (first match;
 *     "args" absent matches any arguments); an unmatched call returns -1 to the guard.
 * ```
 * Logs (guard `host_log`, WASI stdout/stderr, host messages) go to stderr as JSON lines, and so do
 * hints about a fixture: an entry whose `result` is not an MCP tool result (guards read `call_backend`
 * answers as the upstream's `tools/call` result, `{"content":[{"type":"text","text":...}]}`, and most
 * treat anything else as a failed lookup, e.g. a repository of unknown visibility counts as private),
 * and every `call_backend` no entry answered.
 *
 * Relative paths are taken from the directory the command was typed in (`INIT_CWD` under
 * `deno task`, see paths.ts). Usage mistakes exit with code 2; `guard --help` prints the usage.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { BackendCaller, GuardLogger, GuardUsage } from "../difc/guard.ts";
import { loadGuardModule, type WasmGuardUsage } from "../guard/host.ts";
import { canonicalJson } from "../difc/payload.ts";
import { GuardError, type GuardLimits, resolveLimits } from "../guard/limits.ts";
import { type GuardInspection, inspectGuard, prepareGuard } from "../guard/prepare.ts";
import { pickCaps } from "../guard/wasm/caps.ts";
import { errorMessage } from "../util.ts";
import { callerDir, resolvePath } from "./paths.ts";

const USAGE = `usage:
  guard check FILE.wasm [--memory-pages N]
  guard call FILE.wasm --policy JSON --tool NAME --args JSON [--result JSON] [--backend FIXTURE.json]
             [--fuel N] [--timeout-ms N] [--memory-pages N]
  guard --help

FIXTURE.json: [{"tool": NAME, "args"?: JSON, "result": {"content":[{"type":"text","text":"..."}]}}, ...]
Relative paths are taken from the directory you run the command in.`;

/** Exit code of a command-line mistake (as the gateway's entry point). */
export const USAGE_EXIT = 2;

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
export function fixtureBackend(
  fixtures: BackendFixture[],
  onMiss?: (tool: string, argsJson: string) => void,
): BackendCaller {
  return (tool, args) => {
    const key = canonicalJson(args);
    const hit = fixtures.find((f) =>
      f.tool === tool && (f.args === undefined || canonicalJson(f.args) === key)
    );
    if (!hit) onMiss?.(tool, key);
    return hit ? Promise.resolve(hit.result) : Promise.reject(new Error(`no fixture for ${tool} ${key}`));
  };
}

/**
 * Problems with a `--backend` fixture list that a guard would not report: entries that are not
 * `{tool, args?, result}`, and results that are not an MCP tool result (`{content: [...]}` with typed
 * items), which guards read as a failed lookup. One message per problem, naming the entry.
 *
 * @example
 * ```ts
 * fixtureProblems([{ tool: "get_repo", result: { visibility: "public" } }]);
 * // ["--backend[0] (get_repo): result is not an MCP tool result ..."]
 * ```
 */
export function fixtureProblems(fixtures: unknown[]): string[] {
  const out: string[] = [];
  fixtures.forEach((f, i) => {
    const e = f as Partial<BackendFixture> | null;
    if (typeof e !== "object" || e === null || Array.isArray(e)) {
      out.push(`--backend[${i}]: must be an object {tool, args?, result}`);
      return;
    }
    const at = `--backend[${i}]${typeof e.tool === "string" ? ` (${e.tool})` : ""}`;
    if (typeof e.tool !== "string") out.push(`${at}: "tool" must be a string naming the backend tool`);
    if (!("result" in e)) {
      out.push(`${at}: has no "result"; the guard gets it as undefined`);
      return;
    }
    const r = e.result as { content?: unknown } | null;
    const content = typeof r === "object" && r !== null ? r.content : undefined;
    const mcp = Array.isArray(content) &&
      content.every((c) => typeof c === "object" && c !== null && typeof c.type === "string");
    if (!mcp) {
      out.push(
        `${at}: result is not an MCP tool result {"content":[{"type":"text","text":"<JSON>"}]}; ` +
          "guards read call_backend answers in that shape and typically treat any other as a failed " +
          'lookup (the demo guard then counts the repository as private). Wrap it: {"content":[{"type":' +
          '"text","text":JSON.stringify(result)}]}',
      );
    }
  });
  return out;
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
    return await Deno.readFile(resolvePath(callerDir(Deno.env.toObject()), file));
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** One load-time check: its label, and the problem (`null` = passed) or the detail of a pass. */
interface CheckLine {
  label: string;
  problem: string | null;
  detail?: string | null;
  /** Not run because an earlier check failed. */
  skipped?: boolean;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The cap lines of `guard check`, from the inspection's caps report (or the caps problem). */
function capsLines(info: GuardInspection, limits: GuardLimits): CheckLine[] {
  const c = info.caps;
  const err = info.capsError;
  const isMemory = err?.limit === "maxMemoryPages";
  const isTable = err?.limit === "maxTableEntries";
  const range = (xs: { min: number; max: number }[], unit: string) =>
    xs.length === 0 ? "" : ` (${xs.map((x) => `${x.min}..${x.max}`).join(", ")} ${unit})`;
  return [
    {
      label: "memory cap",
      problem: isMemory ? err!.message : null,
      detail: c &&
        `${plural(c.memories.length, "memory", "memories")}${range(c.memories, "pages")}, ` +
          `${c.memoryPages} of ${limits.maxMemoryPages} pages over all memories`,
    },
    {
      label: "table cap",
      problem: isTable ? err!.message : null,
      detail: c &&
        `${plural(c.tables.length, "table")}${range(c.tables, "entries")}, ` +
          `${c.tableEntries} of ${limits.maxTableEntries} entries over all tables`,
    },
    {
      label: "segment limits",
      problem: err && !isMemory && !isTable ? err.message : null,
      detail: c &&
        `${c.functions}/${limits.maxFunctions} functions, ${c.globals}/${limits.maxGlobals} globals, ` +
          `${c.dataSegments}/${limits.maxDataSegments} data segments (${c.dataBytes}/${limits.maxDataBytes} bytes), ` +
          `${c.elementSegments}/${limits.maxElementSegments} element segments ` +
          `(${c.elementEntries}/${limits.maxElementEntries} entries)`,
    },
  ];
}

/** `guard check`: prints the report and one line per check; returns the exit code. */
async function check(file: string | undefined, memoryPages: number | undefined): Promise<number> {
  const bytes = await readWasm(file);
  const limits = resolveLimits(memoryPages ? { maxMemoryPages: memoryPages } : {});
  const lines: string[] = [`file: ${file}`, `size: ${bytes.length} bytes`];
  let info: GuardInspection;
  try {
    info = inspectGuard(bytes, pickCaps(limits));
  } catch (e) {
    // Our structural decode refused it (malformed or unsupported): no other check can run.
    if (!(e instanceof GuardError)) throw e;
    lines.push("checks:", `  ${"validated".padEnd(22)} FAIL: ${e.message}`, `usable: no: ${e.message}`);
    console.log(lines.join("\n"));
    return 1;
  }
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
      }, effective max ${m.maxPages} pages (cap ${limits.maxMemoryPages} over all memories)`
      : "memory: none (every call would fail: WASM module has no memory)",
  );
  lines.push(`functions: ${info.functions}`);
  lines.push(
    `buffers: ${info.allocDealloc ? "guard alloc/dealloc" : "host-managed (direct, end of memory)"}`,
  );
  if (info.prepared) {
    lines.push(
      `prepared: carries a mark (fuel ${info.prepared.fuel}, cap ${info.prepared.maxMemoryPages} pages): ` +
        "never trusted, refused as a guard source",
    );
  }
  const checks: CheckLine[] = [
    { label: "validated", problem: info.invalid && `invalid WebAssembly module: ${info.invalid}` },
    { label: "imports", problem: info.importError },
    { label: "ABI", problem: info.importError ? null : info.abiError },
    ...capsLines(info, limits),
  ];
  let prepared: CheckLine = {
    label: "prepared by us / fuel",
    problem: info.reserved && `refused: ${info.reserved}`,
  };
  if (prepared.problem === null && checks.some((c) => c.problem !== null)) {
    prepared = { ...prepared, skipped: true, detail: "not prepared (an earlier check failed)" };
  } else if (prepared.problem === null) {
    try {
      const { report } = prepareGuard(bytes, { caps: pickCaps(limits) });
      prepared = {
        ...prepared,
        detail: "no mark, fuel import or reserved export in the input; prepares cleanly: yes " +
          `(${report.bytesIn} -> ${report.bytesOut} bytes, ${report.fuelPoints} fuel points, ` +
          `${
            report.pooledMemories > 0
              ? `${report.pooledMemories} ${
                report.pooledMemories === 1 ? "memory" : "memories"
              } pooled, writes recorded`
              : "memories not pooled: new ones per instance"
          }, ${report.ms.toFixed(1)} ms)`,
      };
    } catch (e) {
      prepared.problem = `prepares cleanly: no (${(e as Error).message})`;
    }
  }
  checks.push(prepared);
  lines.push("checks:");
  for (const c of checks) {
    const status = c.problem !== null
      ? `FAIL: ${c.problem}`
      : `${c.skipped ? "skipped" : "pass"}${c.detail ? `: ${c.detail}` : ""}`;
    lines.push(`  ${c.label.padEnd(22)} ${status}`);
  }
  const problem = checks.find((c) => c.problem !== null)?.problem ?? (m ? null : "WASM module has no memory");
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
    const path = resolvePath(callerDir(Deno.env.toObject()), values.backend);
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new UsageError(`cannot read --backend ${path}: ${(e as Error).message}`);
    }
    const parsed = parseJsonFlag("backend", text);
    if (!Array.isArray(parsed)) {
      throw new UsageError("--backend file must hold a JSON array of {tool, args?, result}");
    }
    for (const message of fixtureProblems(parsed)) stderrLog("warn", message, { source: "guard-cli" });
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
  const missed = new Set<string>();
  const session = guard.open({
    signal: new AbortController().signal,
    backend: fixtureBackend(fixtures, (t, a) => {
      if (missed.has(`${t} ${a}`)) return; // one hint per distinct call (guards retry)
      missed.add(`${t} ${a}`);
      stderrLog("warn", `call_backend ${t} ${a}: no --backend entry matches; the guard gets -1`, {
        source: "guard-cli",
      });
    }),
    log: stderrLog,
  });
  try {
    const out: {
      label_agent: unknown;
      label_resource: unknown;
      label_response: unknown;
      usage?: GuardUsage & Pick<WasmGuardUsage, "totalMemoryPages" | "tableEntries">;
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
    out.usage = {
      fuel: u.fuel,
      backendCalls: u.backendCalls,
      memoryPages: u.memoryPages,
      ms: u.ms,
      totalMemoryPages: u.totalMemoryPages,
      tableEntries: u.tableEntries,
    };
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
  if (["--help", "-h", "help"].includes(command) || rest.includes("--help") || rest.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
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
    return usage ? USAGE_EXIT : 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
