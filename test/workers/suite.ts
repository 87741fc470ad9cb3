/**
 * One behaviour suite for every deployment target (workerd via Miniflare, Deno via startGateway).
 *
 * Each target is started from the same configuration: the demo upstream (served by Deno on
 * 127.0.0.1:0) behind the demo guard as `demo`, and the same upstream behind a guard whose
 * `label_agent` spins forever as `spin`. The official SDK client then checks, over real HTTP:
 * blocked / filtered / allowed tool calls, a spinning guard stopped by fuel while a concurrent call
 * is answered, and agent labels that persist across requests and a restart of the target.
 *
 * @module
 */
import { assertEquals, assertGreater, assertMatch, assertRejects, assertStringIncludes } from "@std/assert";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import wabtInit from "wabt";
import { createDemoUpstream } from "../../src/demo/upstream.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";

/** API key every target is configured with. */
export const API_KEY = "workers-suite-key";
/**
 * Fuel per guard call in the suite: ample for the demo guard, and small enough that the spinning
 * guard runs out quickly (the default budget is about a second of CPU).
 */
export const SUITE_FUEL = 50_000_000;
/** JSON-RPC code of a DIFC violation (guard-abi.md). */
const DIFC_VIOLATION = -32001;

/** A running gateway. */
export interface Target {
  /** Base URL, e.g. `http://127.0.0.1:PORT`. */
  url: string;
  /** Stops it and releases everything it holds (the state directory stays). */
  stop(): Promise<void>;
}

/** How a deployment target is built and started. */
export interface TargetFactory {
  name: string;
  /** Once per suite, before any start: e.g. the Workers build. `dir` is a scratch directory. */
  prepare(config: unknown, dir: string): Promise<void>;
  /** Starts the gateway; targets started with the same `stateDir` share persisted agent labels. */
  start(stateDir: string): Promise<Target>;
  /** Once per suite, after the last stop. */
  dispose?(): Promise<void>;
}

const SPIN_WAT = new URL("../fixtures/wat/host/spin.wat", import.meta.url);

/** Compiles the spinning guard fixture (unprepared: the target's own loading path prepares it). */
async function spinGuardBytes(): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const mod = wabt.parseWat("spin.wat", await Deno.readTextFile(SPIN_WAT));
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/** The demo guard in front of `upstreamUrl` as server `demo`, with the suite's API key. */
export function demoConfig(upstreamUrl: string): Record<string, unknown> {
  return {
    mcpServers: { demo: { type: "http", url: upstreamUrl, guard: "demo", "guard-policies": DEMO_POLICY } },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
    gateway: { apiKey: API_KEY },
  };
}

/** The suite's gateway configuration around an upstream URL. */
export function suiteConfig(upstreamUrl: string, spinGuardUrl: URL): Record<string, unknown> {
  return {
    mcpServers: {
      demo: { type: "http", url: upstreamUrl, guard: "demo", "guard-policies": DEMO_POLICY },
      spin: { type: "http", url: upstreamUrl, guard: "spin", "guard-policies": DEMO_POLICY },
    },
    guards: {
      demo: { type: "wasm", path: DEMO_GUARD_URL.href },
      spin: { type: "wasm", path: spinGuardUrl.href },
    },
    gateway: { apiKey: API_KEY, port: 8080, hostname: "127.0.0.1" },
    limits: { fuel: SUITE_FUEL },
  };
}

/** An SDK client connected to `<base>/mcp/<server>` as `agent`. */
export async function connect(base: string, server: string, agent: string): Promise<Client> {
  const transport = new StreamableHTTPClientTransport(new URL(`/mcp/${server}`, base), {
    requestInit: { headers: { Authorization: `Bearer ${API_KEY}`, "X-Agent-ID": agent } },
  });
  const client = new Client({ name: "workers-suite", version: "0.1.0" });
  await client.connect(transport);
  return client;
}

/** The agent's labels as `/reflect` reports them. */
export async function reflectLabels(base: string, agent: string): Promise<unknown> {
  const res = await fetch(new URL("/reflect", base), {
    headers: { Authorization: `Bearer ${API_KEY}`, "X-Agent-ID": agent },
  });
  const body = await res.json();
  assertEquals(res.status, 200, JSON.stringify(body));
  return body.agent.labels;
}

function textOf(result: unknown): string {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content.map((c) => c.text ?? "").join("\n");
}

/**
 * Registers the suite as one `Deno.test` with steps for `factory`.
 *
 * @example
 * ```ts
 * gatewaySuite({ name: "deno", prepare, start });
 * ```
 */
export function gatewaySuite(factory: TargetFactory): void {
  Deno.test({
    name: `gateway on ${factory.name}: guarded calls, fuel, persistent labels`,
    // Miniflare keeps internal timers and sockets briefly after dispose(), and the SDK client's
    // SSE reader can outlive close() by a tick; every server and process is stopped below.
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      const dir = await Deno.makeTempDir({ prefix: `workers_suite_${factory.name}_` });
      const upstream = createDemoUpstream();
      const upstreamServer = Deno.serve(
        { port: 0, hostname: "127.0.0.1", onListen() {} },
        upstream.fetch,
      );
      const spinUrl = new URL(`file://${dir}/spin.wasm`);
      await Deno.writeFile(spinUrl, await spinGuardBytes());
      const stateDir = `${dir}/state`;
      await Deno.mkdir(stateDir);
      let target: Target | undefined;
      const clients: Client[] = [];
      try {
        await factory.prepare(
          suiteConfig(`http://127.0.0.1:${upstreamServer.addr.port}/mcp`, spinUrl),
          dir,
        );
        target = await factory.start(stateDir);
        const base = target.url;

        await t.step("blocked, filtered and allowed tool calls", async () => {
          const client = await connect(base, "demo", "agent-calls");
          clients.push(client);
          const list = await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
          const text = textOf(list);
          assertStringIncludes(text, "[Filtered] 1 item(s)");
          assertMatch(text, /"number":\s*1/);
          assertMatch(text, /"number":\s*3/);
          assertEquals(/"number":\s*2\b/.test(text), false, "issue #2 is filtered out");

          const created = await client.callTool({
            name: "create_issue",
            arguments: { repo: "acme/web", title: "edge", body: "allowed" },
          });
          assertEquals(created.isError ?? false, false, textOf(created));

          const before = upstream.stats().create_issue ?? 0;
          const err = await assertRejects(
            () =>
              client.callTool({
                name: "create_issue",
                arguments: { repo: "acme/public-site", title: "leak", body: "secret" },
              }),
            McpError,
          );
          assertEquals(err.code, DIFC_VIOLATION);
          assertStringIncludes(err.message, "DIFC Violation");
          assertEquals(
            upstream.stats().create_issue ?? 0,
            before,
            "a blocked call never reaches the upstream",
          );
        });

        await t.step("a spinning guard is stopped by fuel while a concurrent call is answered", async () => {
          const spin = await connect(base, "spin", "agent-spin");
          const demo = await connect(base, "demo", "agent-concurrent");
          clients.push(spin, demo);
          const spinning = spin.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
          const answered = demo.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
          const [s, a] = await Promise.allSettled([spinning, answered]);
          assertEquals(s.status, "rejected");
          const e = (s as PromiseRejectedResult).reason as McpError;
          assertEquals((e.data as { kind?: string })?.kind, "fuel", e.message);
          assertEquals(a.status, "fulfilled");
          assertMatch(textOf((a as PromiseFulfilledResult<unknown>).value), /\[Filtered\] \d+ item\(s\)/);
        });

        await t.step("agent labels persist across requests and a restart", async () => {
          const agent = "agent-persist";
          assertEquals(await reflectLabels(base, agent), { secrecy: [], integrity: [] });
          const client = await connect(base, "demo", agent);
          clients.push(client);
          await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
          await client.close();
          const labels = await reflectLabels(base, agent) as { secrecy: string[]; integrity: string[] };
          assertGreater(labels.secrecy.length + labels.integrity.length, 0, "label_agent added labels");
          assertEquals(await reflectLabels(base, agent), labels, "same labels on a later request");

          await target!.stop();
          target = undefined;
          target = await factory.start(stateDir);
          assertEquals(await reflectLabels(target.url, agent), labels, "same labels after a restart");
          assertEquals(await reflectLabels(target.url, "agent-never-seen"), { secrecy: [], integrity: [] });
        });
      } finally {
        await Promise.allSettled(clients.map((c) => c.close()));
        await target?.stop();
        await factory.dispose?.();
        await upstream.close();
        await upstreamServer.shutdown();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
