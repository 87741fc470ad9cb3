/**
 * The gateway's own CPU per `tools/call`, side by side with another source tree (before/after a
 * change) and with a bare Hono pass-through proxy: the path every call takes whatever the guard
 * (auth, body read, JSON-RPC parse and checks, headers, outbound fetch, reply parse, SSE relay,
 * decision log line, routing), without wasm.
 *
 * Targets of each tree: the built-in `noop` guard (transparent relay) and the built-in `write-sink`
 * guard (the guarded path: channel table, guard calls, decision record); with `--upstream sdk` also
 * the no-backend WAT guard. `bare` is the minimal proxy of the after tree's child. Each tree runs in
 * its own server child; the client (one HTTP/1.1 connection and MCP session per worker) runs here.
 * Rounds are interleaved, the order reversed every round; each child reports its CPU time (`/cpu`)
 * before and after each round, so a round gives the server CPU per call of one target (upstream
 * included, the same upstream for every target).
 *
 * Upstreams: `canned` (default) answers every request with one SSE event built from a constant
 * (`tools/call`: two issues as text), so the gateway's own work dominates; `sdk` runs the children of
 * `bench/gateway_bench.ts --serve` (the embedded MCP SDK demo upstream).
 *
 * ```sh
 * git worktree add .tmp/before <rev> && ln -s ../../node_modules .tmp/before/node_modules
 * deno run -A --unstable-no-legacy-abort bench/proxy_bench.ts --before .tmp/before [--upstream sdk] [--c 16,64]
 * deno run -A --unstable-no-legacy-abort bench/proxy_bench.ts          # this tree only
 * ```
 * Prints a table; raw rounds go to bench/results/proxy_<upstream>.json.
 *
 * @module
 */
import { Hono } from "hono";
import { cpuUsage } from "node:process";
import { fmt, median, renderTable } from "./lib.ts";

const API_KEY = "bench-key";
const PROTOCOL_VERSION = "2025-06-18";
const CALL = { name: "list_issues", arguments: { repo: "acme/web" } };
/** The text every answer must contain (the canned and the SDK upstream both have this issue). */
const EXPECTED = "Rotate the staging keys";
const THIS_TREE = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

function arg(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Deno.args[i + 1];
}

// ---------------------------------------------------------------------------------------------
// Server child (canned upstream): the gateway of the tree at --root, a canned upstream, a bare proxy.

async function serve(root: string): Promise<void> {
  const ac = new AbortController();
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, () => ac.abort());
  const { parseConfig } = await import(`${root}/src/config.ts`);
  const { startGateway, stderrLines } = await import(`${root}/src/main.ts`);
  const { jsonLogSink } = await import(`${root}/src/log.ts`);
  const issues = JSON.stringify([
    { number: 1, title: EXPECTED, body: "x".repeat(200) },
    { number: 2, title: "Leaked token in logs", body: "y".repeat(200) },
  ]);
  const enc = new TextEncoder();
  let sessions = 0;
  const upstream = async (req: Request): Promise<Response> => {
    if (req.url.endsWith("/cpu")) return Response.json(cpuUsage());
    if (req.method !== "POST") return new Response(null, { status: 405 });
    const m = await req.json();
    if (!("id" in m)) return new Response(null, { status: 202 });
    let sid = req.headers.get("mcp-session-id") ?? "";
    let result: unknown = {};
    if (m.method === "initialize") {
      sid = `s-${++sessions}`;
      result = {
        protocolVersion: m.params.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: "canned", version: "0" },
      };
    } else if (m.method === "tools/call") {
      result = { content: [{ type: "text", text: issues }] };
    }
    const body = `event: message\ndata: ${JSON.stringify({ jsonrpc: "2.0", id: m.id, result })}\n\n`;
    return new Response(enc.encode(body), {
      headers: { "content-type": "text/event-stream", "mcp-session-id": sid },
    });
  };
  const listen = { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} };
  const up = Deno.serve(listen, upstream);
  const upstreamUrl = `http://127.0.0.1:${up.addr.port}/mcp`;
  const bareApp = new Hono();
  bareApp.all("/mcp", (c) => {
    const req = c.req.raw;
    return fetch(upstreamUrl, { method: req.method, headers: req.headers, body: req.body });
  });
  const bare = Deno.serve(listen, bareApp.fetch);
  const config = parseConfig({
    mcpServers: {
      noop: { type: "http", url: upstreamUrl },
      sink: { type: "http", url: upstreamUrl, "guard-policies": { "write-sink": { accept: ["*"] } } },
    },
    gateway: { port: 8080, hostname: "127.0.0.1", apiKey: API_KEY },
  }, {});
  config.gateway.port = 0;
  const { server } = await startGateway(config, {
    configBase: new URL(`file://${root}/`),
    env: {},
    signal: ac.signal,
    log: jsonLogSink(stderrLines(), "info"),
  });
  const base = `http://127.0.0.1:${server.addr.port}/mcp`;
  console.log(JSON.stringify({
    bare: `http://127.0.0.1:${bare.addr.port}/mcp`,
    cpu: `http://127.0.0.1:${up.addr.port}/cpu`,
    noop: `${base}/noop`,
    sink: `${base}/sink`,
  }));
  await Promise.all([up.finished, bare.finished, server.finished]);
}

// ---------------------------------------------------------------------------------------------
// Client.

interface Child {
  urls: Record<string, string>;
  stop(): Promise<void>;
}

async function startChild(root: string, sdk: boolean): Promise<Child> {
  const args = sdk
    ? ["run", "-A", "--unstable-no-legacy-abort", `${root}/bench/gateway_bench.ts`, "--serve"]
    : ["run", "-A", "--unstable-no-legacy-abort", new URL(import.meta.url).pathname, "--serve", root];
  const proc = new Deno.Command(Deno.execPath(), { args, cwd: root, stdout: "piped", stderr: "null" })
    .spawn();
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const r = await reader.read();
    if (r.done) throw new Error(`server child for ${root} exited: ${text}`);
    text += r.value;
  }
  const drain = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  return {
    urls: JSON.parse(text.slice(0, text.indexOf("\n"))),
    async stop() {
      proc.kill("SIGTERM");
      await proc.status;
      await drain.catch(() => {});
    },
  };
}

class Conn {
  readonly #client = Deno.createHttpClient({ poolMaxIdlePerHost: 1, http2: false, http1: true });
  #session: string | undefined;
  #id = 0;
  constructor(readonly url: string, readonly headers: Record<string, string>) {}

  async #post(body: unknown): Promise<string> {
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": PROTOCOL_VERSION,
      ...this.headers,
    };
    if (this.#session) headers["mcp-session-id"] = this.#session;
    const res = await fetch(this.url, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      client: this.#client,
      signal: AbortSignal.timeout(10_000),
    });
    this.#session = res.headers.get("mcp-session-id") ?? this.#session;
    const text = await res.text();
    if (!res.ok) throw new Error(`HTTP ${res.status} from ${this.url}: ${text.slice(0, 200)}`);
    return text;
  }

  async open(): Promise<void> {
    await this.#post({
      jsonrpc: "2.0",
      id: ++this.#id,
      method: "initialize",
      params: {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: "bench", version: "0" },
      },
    });
    await this.#post({ jsonrpc: "2.0", method: "notifications/initialized" });
  }

  async call(): Promise<void> {
    const text = await this.#post({ jsonrpc: "2.0", id: ++this.#id, method: "tools/call", params: CALL });
    if (!text.includes(EXPECTED)) {
      throw new Error(`unexpected answer from ${this.url}: ${text.slice(0, 200)}`);
    }
  }

  close(): void {
    this.#client.close();
  }
}

interface Target {
  name: string;
  tree: string;
  child: Child;
  conns: Conn[];
  cpuUs: number[];
  rps: number[];
}

async function cpuMs(child: Child): Promise<number> {
  const u = await (await fetch(child.urls.cpu)).json() as { user: number; system: number };
  return (u.user + u.system) / 1000;
}

async function round(t: Target, c: number, ms: number): Promise<{ ops: number; elapsed: number }> {
  const t0 = performance.now();
  const end = t0 + ms;
  let ops = 0;
  await Promise.all(
    t.conns.slice(0, c).map(async (conn) => {
      while (performance.now() < end) {
        await conn.call();
        ops++;
      }
    }),
  );
  return { ops, elapsed: performance.now() - t0 };
}

/** The commit a source tree is checked out at (plus "+changes" when it differs), or "unknown". */
async function treeCommit(root: string): Promise<string> {
  const git = (...args: string[]) =>
    new Deno.Command("git", { args: ["-C", root, ...args], stdout: "piped", stderr: "null" }).output();
  try {
    const head = await git("rev-parse", "--short", "HEAD");
    if (!head.success) return "unknown";
    const dirty = await git("status", "--porcelain", "--", "src");
    const id = new TextDecoder().decode(head.stdout).trim();
    return new TextDecoder().decode(dirty.stdout).trim() === "" ? id : `${id}+changes`;
  } catch {
    return "unknown";
  }
}

async function main(): Promise<void> {
  const before = Deno.args.includes("--before") ? arg("before", "") : undefined;
  const sdk = arg("upstream", "canned") === "sdk";
  const levels = arg("c", "16,64").split(",").map(Number);
  const rounds = Number(arg("rounds", "6"));
  const roundMs = Number(arg("round-ms", "2000"));
  const trees: [string, string][] = before
    ? [["before", new URL(before, `file://${Deno.cwd()}/`).pathname.replace(/\/$/, "")], ["after", THIS_TREE]]
    : [["this", THIS_TREE]];
  const children = new Map<string, Child>();
  for (const [label, root] of trees) children.set(label, await startChild(root, sdk));
  const gw = { authorization: `Bearer ${API_KEY}`, "x-agent-id": "bench-agent" };
  const kinds = sdk ? ["noop", "sink", "noBackend"] : ["noop", "sink"];
  const last = trees[trees.length - 1][0];
  const results: Record<string, unknown> = {};
  const rows: string[][] = [];
  const load0 = Deno.loadavg();
  try {
    for (const c of levels) {
      const target = (name: string, tree: string): Target => ({
        name,
        tree,
        child: children.get(tree)!,
        conns: [],
        cpuUs: [],
        rps: [],
      });
      const targets = [target("bare", last)];
      for (const kind of kinds) for (const [label] of trees) targets.push(target(kind, label));
      for (const t of targets) {
        // The noop and write-sink guards get an agent of their own (the demo policy would deny them).
        const headers = t.name === "bare"
          ? {}
          : t.name === "noBackend"
          ? gw
          : { ...gw, "x-agent-id": "plain" };
        for (let i = 0; i < c; i++) {
          const conn = new Conn(t.child.urls[t.name], headers);
          await conn.open();
          t.conns.push(conn);
        }
        await round(t, c, roundMs / 2);
      }
      for (let r = 0; r < rounds; r++) {
        for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
          const cpu0 = await cpuMs(t.child);
          const { ops, elapsed } = await round(t, c, roundMs);
          t.cpuUs.push((await cpuMs(t.child) - cpu0) * 1000 / ops);
          t.rps.push(ops / (elapsed / 1000));
        }
      }
      const bareCpu = median(targets[0].cpuUs), bareRps = median(targets[0].rps);
      for (const t of targets) {
        const cpu = median(t.cpuUs), rps = median(t.rps);
        rows.push([
          String(c),
          t.name,
          t.name === "bare" ? "" : t.tree,
          fmt(cpu, 0),
          fmt(Math.min(...t.cpuUs), 0),
          fmt(cpu - bareCpu, 0),
          fmt(rps, 0),
          `${fmt(rps / bareRps)}x`,
        ]);
      }
      results[`c${c}`] = targets.map((t) => ({ name: t.name, tree: t.tree, cpuUs: t.cpuUs, rps: t.rps }));
      for (const t of targets) for (const conn of t.conns) conn.close();
    }
  } finally {
    for (const child of children.values()) await child.stop();
  }
  const load1 = Deno.loadavg();
  console.log(renderTable({
    title: `tools/call through each tree's gateway (${sdk ? "MCP SDK" : "canned"} upstream), ${rounds} ` +
      `interleaved rounds of ${roundMs} ms; server CPU µs per call (median round, min), its excess over ` +
      `the bare proxy, calls/s; load average ${load0[0].toFixed(2)} → ${load1[0].toFixed(2)}`,
    header: ["c", "target", "tree", "CPU µs", "min", "over bare", "calls/s", "vs bare"],
    rows,
  }));
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    new URL(`./results/proxy_${sdk ? "sdk" : "canned"}.json`, import.meta.url),
    JSON.stringify(
      {
        // Which trees were compared, by commit (never a machine path).
        trees: await Promise.all(trees.map(async ([label, root]) => [label, await treeCommit(root)])),
        upstream: sdk ? "sdk" : "canned",
        rounds,
        roundMs,
        load: [load0, load1],
        results,
      },
      null,
      1,
    ) +
      "\n",
  );
}

if (import.meta.main) {
  if (Deno.args[0] === "--serve") await serve(Deno.args[1]);
  else await main();
}
