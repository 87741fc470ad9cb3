/**
 * `deno task dev:workers [--config FILE] [--port N]`: the built Worker in local workerd via
 * `wrangler dev` (wrangler 4.164 needs Node >= 22.12: the one scripts/node22.ts finds, from the
 * platform's optional npm package or a Node 22 installed on the machine).
 *
 * Without `--config` this is the embedded demo on workerd: the demo upstream runs in this Deno
 * process on 127.0.0.1 (the SDK server it uses cannot run inside a Worker), the demo guard is built
 * into the Worker, and the configuration is passed as the `MCP_EDGE_GUARD_CONFIG` var. With
 * `--config FILE`, that file is built and passed instead (its `${VAR}`s expand from `.dev.vars`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createDemoUpstream } from "../src/demo/upstream.ts";
import { demoConfig } from "../src/main.ts";
import { buildWorker } from "./build.ts";
import { node22, Node22MissingError } from "./node22.ts";

const REPO_ROOT = new URL("../", import.meta.url);
const WRANGLER = new URL("node_modules/wrangler/bin/wrangler.js", REPO_ROOT).pathname;
/** wrangler dev's default port. */
const DEFAULT_PORT = 8787;
/** Fixed key for the local demo, so the printed client command works as is. */
const DEMO_API_KEY = "dev-workers-demo-key";

const { values } = parseArgs({
  args: Deno.args,
  options: { config: { type: "string" }, port: { type: "string" } },
  strict: true,
});
const port = Number(values.port ?? DEFAULT_PORT);
const controller = new AbortController();

let config: Record<string, unknown>;
let configBase: URL | undefined;
if (values.config !== undefined) {
  configBase = new URL(values.config, `file://${Deno.cwd()}/`);
  config = JSON.parse(await Deno.readTextFile(configBase));
} else {
  const upstream = createDemoUpstream();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: controller.signal, onListen() {} },
    upstream.fetch,
  );
  config = demoConfig(`http://127.0.0.1:${server.addr.port}/mcp`, port, "127.0.0.1") as Record<
    string,
    unknown
  >;
  config.gateway = { ...(config.gateway as object), apiKey: DEMO_API_KEY };
  console.log(
    `demo upstream on 127.0.0.1:${server.addr.port}; try:\n  node_modules/deno/deno run -A ` +
      `examples/demo-client.ts http://127.0.0.1:${port}/mcp/demo ${DEMO_API_KEY}\n`,
  );
}

const built = await buildWorker({ config, configBase });
console.log(`built dist/ (worker.js ${(built.bundleGzipBytes / 1024).toFixed(1)} KiB gzipped)`);

let nodePath: string;
try {
  nodePath = node22();
} catch (e) {
  if (!(e instanceof Node22MissingError)) throw e;
  console.error(`dev:workers: ${e.message}`);
  Deno.exit(2);
}
const child = new Deno.Command(nodePath, {
  args: [
    WRANGLER,
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    "--var",
    `MCP_EDGE_GUARD_CONFIG:${JSON.stringify(config)}`,
  ],
  cwd: REPO_ROOT.pathname,
  env: { WRANGLER_SEND_METRICS: "false" },
  stdin: "inherit",
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
  });
}
const status = await child.status;
controller.abort();
Deno.exit(status.code);
