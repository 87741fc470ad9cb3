/**
 * `labels`: see and reset agents' labels (`deno task labels ...`).
 *
 * ```
 * deno task labels [--url URL] [--admin-key KEY] [--json] list
 * deno task labels [--url URL] [--admin-key KEY] [--json] show AGENT
 * deno task labels [--url URL] [--admin-key KEY] [--json] reset AGENT
 * deno task labels --kv PATH|default [--json] list|show AGENT|reset AGENT
 * ```
 * Through a gateway (the default): calls its operator routes (`/admin/labels`, src/http/admin.ts),
 * so it works for every label store the gateway runs with — its memory, Deno KV or, on Workers,
 * Durable Objects. `--url` defaults to `MCP_EDGE_GUARD_URL`, else `http://127.0.0.1:8080`; the key to
 * `MCP_EDGE_GUARD_ADMIN_KEY` (the gateway's `gateway.adminKey`; the flag is visible in process
 * lists, the variable is not).
 *
 * Directly in Deno KV (`--kv`): opens the database the gateway uses with `MCP_EDGE_GUARD_KV` (a local
 * path, relative to the directory the command is run in, or `default`), also while the gateway runs.
 *
 * Exit codes: 0 done, 1 the gateway or store refused or could not be reached (one line saying why),
 * 2 usage.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Labels } from "../difc/labels.ts";
import { type AgentLabelStore, DenoKvAgentLabelStore, type KvLike } from "../difc/store.ts";
import { callerDir, resolvePath } from "./paths.ts";

export const USAGE = `usage:
  deno task labels [--url URL] [--admin-key KEY] [--json] list
  deno task labels [--url URL] [--admin-key KEY] [--json] show AGENT
  deno task labels [--url URL] [--admin-key KEY] [--json] reset AGENT
  deno task labels --kv PATH|default [--json] list|show AGENT|reset AGENT

Through a running gateway (any label store): --url (default $MCP_EDGE_GUARD_URL or http://127.0.0.1:8080)
and its gateway.adminKey in $MCP_EDGE_GUARD_ADMIN_KEY (or --admin-key).
Directly in Deno KV: --kv with the gateway's MCP_EDGE_GUARD_KV value.`;

/** The gateway's address when neither `--url` nor `MCP_EDGE_GUARD_URL` is given. */
export const DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080";

/** A mistake on the command line (exit 2, with the usage). */
class UsageError extends Error {}
/** The gateway or store said no or could not be reached (exit 1). */
class LabelsError extends Error {}

/** The three operations, over a gateway or a store. */
interface LabelsBackend {
  list(): Promise<Record<string, Labels>>;
  show(agent: string): Promise<Labels>;
  reset(agent: string): Promise<Labels>;
}

function storeBackend(store: AgentLabelStore): LabelsBackend {
  return { list: () => store.snapshot(), show: (a) => store.get(a), reset: (a) => store.reset(a) };
}

/** Operations through the gateway's `/admin/labels` routes. */
export function gatewayBackend(base: string, adminKey: string, fetchFn: typeof fetch = fetch): LabelsBackend {
  const root = base.replace(/\/+$/, "");
  const call = async (method: string, path: string): Promise<Record<string, unknown>> => {
    let res: Response;
    try {
      res = await fetchFn(`${root}/admin/labels${path}`, {
        method,
        headers: { authorization: `Bearer ${adminKey}` },
        redirect: "manual",
        signal: AbortSignal.timeout(10_000),
      });
    } catch (e) {
      throw new LabelsError(
        `cannot reach the gateway at ${root} (${
          (e as Error).message
        }); is it running? set --url or MCP_EDGE_GUARD_URL`,
      );
    }
    const text = await res.text();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text);
    } catch { /* reported below */ }
    if (res.status === 401) {
      throw new LabelsError(
        `the gateway at ${root} refused the admin key: MCP_EDGE_GUARD_ADMIN_KEY (or --admin-key) must be its gateway.adminKey`,
      );
    }
    if (res.status === 404 && /gateway\.adminKey is not set/.test(String(body.message))) {
      throw new LabelsError(
        `operator routes are off on ${root}: set gateway.adminKey in its config and restart it`,
      );
    }
    if (!res.ok) {
      throw new LabelsError(
        `the gateway at ${root} answered HTTP ${res.status}: ${String(body.message ?? text.slice(0, 200))}`,
      );
    }
    return body;
  };
  const agentPath = (a: string) => `/${encodeURIComponent(a)}`;
  return {
    list: async () => (await call("GET", "")).agents as Record<string, Labels>,
    show: async (a) => (await call("GET", agentPath(a))).labels as Labels,
    reset: async (a) => (await call("DELETE", agentPath(a))).previous as Labels,
  };
}

const fmtLabels = (l: Labels) => `secrecy [${l.secrecy.join(", ")}]  integrity [${l.integrity.join(", ")}]`;

/**
 * Runs the CLI with `argv` (without the program name); returns the exit code. Output goes to `out`,
 * errors to `err` (one line each).
 *
 * @example
 * ```ts
 * Deno.exit(await main(["--kv", "labels.db", "list"]));
 * ```
 */
export async function main(
  argv: string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
  out: (line: string) => void = console.log,
  err: (line: string) => void = console.error,
): Promise<number> {
  let kv: (KvLike & { close(): void }) | undefined;
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          url: { type: "string" },
          "admin-key": { type: "string" },
          kv: { type: "string" },
          json: { type: "boolean" },
          help: { type: "boolean", short: "h" },
        },
      });
    } catch (e) {
      throw new UsageError((e as Error).message.split(/\. To specify|\n/)[0]);
    }
    const { values, positionals } = parsed;
    if (values.help || positionals[0] === "help") {
      out(USAGE);
      return 0;
    }
    const [command, agent, ...extra] = positionals;
    if (!command) throw new UsageError("missing command: list, show AGENT or reset AGENT");
    if (!["list", "show", "reset"].includes(command)) throw new UsageError(`unknown command ${command}`);
    if (command !== "list" && !agent) throw new UsageError(`${command} needs an AGENT`);
    if ((command === "list" && agent) || extra.length > 0) {
      throw new UsageError(`unexpected argument ${command === "list" ? agent : extra[0]}`);
    }
    if (values.kv !== undefined && (values.url !== undefined || values["admin-key"] !== undefined)) {
      throw new UsageError("--kv reads the store directly; --url and --admin-key are for a gateway");
    }

    let backend: LabelsBackend;
    if (values.kv !== undefined) {
      const path = values.kv === "default" ? undefined : resolvePath(callerDir(env), values.kv);
      const openKv = (Deno as unknown as { openKv?: (p?: string) => Promise<KvLike & { close(): void }> })
        .openKv;
      if (!openKv) throw new LabelsError("Deno KV is not available (run with --unstable-kv)");
      kv = await openKv(path).catch((e: Error) => {
        throw new LabelsError(`cannot open Deno KV ${path ?? "(default)"}: ${e.message}`);
      });
      backend = storeBackend(new DenoKvAgentLabelStore(kv));
    } else {
      const key = values["admin-key"] ?? env.MCP_EDGE_GUARD_ADMIN_KEY;
      if (!key) {
        throw new UsageError(
          "no admin key: set MCP_EDGE_GUARD_ADMIN_KEY (or --admin-key) to the gateway's gateway.adminKey, or use --kv",
        );
      }
      backend = gatewayBackend(values.url ?? env.MCP_EDGE_GUARD_URL ?? DEFAULT_GATEWAY_URL, key);
    }

    if (command === "list") {
      const agents = await backend.list();
      if (values.json) out(JSON.stringify({ agents }));
      else if (Object.keys(agents).length === 0) out("no agents have labels");
      else {for (const [id, l] of Object.entries(agents).sort(([a], [b]) => a < b ? -1 : 1)) {
          out(`${id}  ${fmtLabels(l)}`);
        }}
    } else if (command === "show") {
      const labels = await backend.show(agent);
      out(values.json ? JSON.stringify({ agent, labels }) : `${agent}  ${fmtLabels(labels)}`);
    } else {
      const previous = await backend.reset(agent);
      out(
        values.json
          ? JSON.stringify({ agent, reset: true, previous })
          : `reset ${agent}; it held ${fmtLabels(previous)}`,
      );
    }
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`labels: ${e.message}`);
      err(USAGE);
      return 2;
    }
    if (e instanceof LabelsError) {
      err(`labels: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    kv?.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
