/**
 * The two deployment targets as {@link TargetFactory}s: the built Worker in real workerd (Miniflare,
 * persistent Durable Object storage) and the Deno entry (`startGateway`, Deno KV on disk). Used by the
 * suite's tests and by bench/workers_bench.ts.
 *
 * @module
 */
import { convertV4MiniflareOptions, Miniflare } from "miniflare";
import { type GatewayConfig, parseConfig } from "../../src/config.ts";
import { DenoKvAgentLabelStore, type KvLike } from "../../src/difc/store.ts";
import { startGateway } from "../../src/main.ts";
import { buildWorker } from "../../scripts/build.ts";
import type { Target, TargetFactory } from "./suite.ts";

/** The compatibility date of wrangler.toml. */
export const COMPATIBILITY_DATE = "2026-11-01";

/**
 * Miniflare options for a built `dist` directory (explicit module list: Miniflare 5 has no rules).
 * `config` becomes the `MCP_EDGE_GUARD_CONFIG` binding (none when undefined); `vars` are further
 * string bindings (secrets).
 */
export function miniflareOptions(
  distDir: string,
  guardFiles: readonly string[],
  config: unknown,
  stateDir?: string,
  vars: Record<string, string> = {},
): ConstructorParameters<typeof Miniflare>[0] {
  const v4 = {
    cf: false,
    modulesRoot: distDir,
    modules: [
      { type: "ESModule", path: `${distDir}/worker.js` },
      { type: "ESModule", path: `${distDir}/worker_guards.js` },
      ...guardFiles.map((f) => ({ type: "CompiledWasm", path: `${distDir}/${f}` })),
    ],
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: config === undefined ? vars : { ...vars, MCP_EDGE_GUARD_CONFIG: JSON.stringify(config) },
    durableObjects: { AGENT_LABELS: "AgentLabels" },
    // Miniflare 5: one persistence root for every storage kind (v4's durableObjectsPersist is gone).
    ...(stateDir ? { resourcePersistencePath: stateDir } : {}),
  };
  // deno-lint-ignore no-explicit-any
  return convertV4MiniflareOptions(v4 as any);
}

/** The built Worker in workerd via Miniflare; `prepare` runs `deno task build`'s code into `dir/dist`. */
export function workerdTarget(): TargetFactory {
  let distDir = "";
  let guardFiles: string[] = [];
  let config: unknown;
  return {
    name: "workerd",
    async prepare(cfg, dir) {
      config = cfg;
      distDir = `${dir}/dist`;
      const r = await buildWorker({ config: cfg, outDir: new URL(`file://${distDir}/`) });
      guardFiles = r.guards.map((g) => g.file);
    },
    async start(stateDir): Promise<Target> {
      const mf = new Miniflare(miniflareOptions(distDir, guardFiles, config, stateDir));
      const url = (await mf.ready).href;
      return { url, stop: () => mf.dispose() };
    },
  };
}

/** The Deno entry (`startGateway`) on 127.0.0.1:0 with agent labels in Deno KV under the state dir. */
export function denoTarget(): TargetFactory {
  let config: GatewayConfig;
  return {
    name: "deno",
    prepare(cfg) {
      config = parseConfig(cfg, {});
      config.gateway.port = 0;
      return Promise.resolve();
    },
    async start(stateDir): Promise<Target> {
      const kv = await Deno.openKv(`${stateDir}/labels.sqlite3`);
      const controller = new AbortController();
      const { server } = await startGateway(config, {
        configBase: new URL(`file://${stateDir}/`),
        env: {},
        store: new DenoKvAgentLabelStore(kv as unknown as KvLike),
        signal: controller.signal,
        log: () => {},
      });
      return {
        url: `http://127.0.0.1:${server.addr.port}/`,
        async stop() {
          controller.abort();
          await server.finished;
          kv.close();
        },
      };
    },
  };
}
