/**
 * The shared `call_backend` cache on the BUILT Worker in real workerd (Miniflare): each start below is
 * a new workerd process, so a new isolate with an empty isolate cache; the Cache API persists in the
 * state directory as a data center's cache outlives an isolate. With `MCP_EDGE_GUARD_CACHE_SECRET`
 * the second isolate's first guarded call is labeled without asking the upstream `get_repo`; an
 * isolate with another secret or none asks the upstream itself; a short secret stops the Worker
 * with a configuration error.
 */
import { assertEquals, assertStringIncludes } from "@std/assert";
import { Miniflare } from "miniflare";
import { buildWorker } from "../../scripts/build.ts";
import { createDemoUpstream } from "../../src/demo/upstream.ts";
import { connect, demoConfig } from "./suite.ts";
import { miniflareOptions } from "./targets.ts";

const SECRET = "0123456789abcdef0123456789abcdef-shared";

function textOf(result: unknown): string {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content.map((c) => c.text ?? "").join("\n");
}

Deno.test({
  name: "workerd: isolates with the same secret share call_backend answers through the Cache API",
  // Miniflare keeps internal timers and sockets briefly after dispose(); every process is stopped below.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "workers_shared_cache_" });
    const upstream = createDemoUpstream();
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, upstream.fetch);
    const config = demoConfig(`http://127.0.0.1:${server.addr.port}/mcp`);
    const stateDir = `${dir}/state`;
    await Deno.mkdir(stateDir);
    try {
      const built = await buildWorker({ config, outDir: new URL(`file://${dir}/dist/`) });
      const files = built.guards.map((g) => g.file);
      /** One isolate: a guarded list_issues on acme/web; its text and the upstream's get_repo count. */
      const isolate = async (vars: Record<string, string>) => {
        const mf = new Miniflare(miniflareOptions(`${dir}/dist`, files, config, stateDir, vars));
        try {
          const client = await connect((await mf.ready).href, "demo", "agent-shared");
          try {
            const text = textOf(
              await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } }),
            );
            return { text, getRepo: upstream.stats().get_repo ?? 0 };
          } finally {
            await client.close();
          }
        } finally {
          await mf.dispose();
        }
      };
      const first = await isolate({ MCP_EDGE_GUARD_CACHE_SECRET: SECRET });
      assertStringIncludes(first.text, "[Filtered] 1 item(s)");
      assertEquals(first.getRepo, 1);
      // A new isolate, same secret: labeled from the shared entry, identically.
      const second = await isolate({ MCP_EDGE_GUARD_CACHE_SECRET: SECRET });
      assertEquals(second, { text: first.text, getRepo: 1 });
      // Another secret, or none: the upstream is asked.
      assertEquals(await isolate({ MCP_EDGE_GUARD_CACHE_SECRET: SECRET.replace("0", "x") }), {
        text: first.text,
        getRepo: 2,
      });
      assertEquals(await isolate({}), { text: first.text, getRepo: 3 });
      assertEquals(upstream.stats().list_issues, 4);

      const mf = new Miniflare(
        miniflareOptions(`${dir}/dist`, files, config, stateDir, { MCP_EDGE_GUARD_CACHE_SECRET: "short" }),
      );
      try {
        const res = await mf.dispatchFetch("http://localhost/health");
        const body = await res.json() as { error: string; message: string };
        assertEquals([res.status, body.error], [500, "config"]);
        assertStringIncludes(body.message, "MCP_EDGE_GUARD_CACHE_SECRET has 5 characters");
      } finally {
        await mf.dispose();
      }
    } finally {
      await upstream.close();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
