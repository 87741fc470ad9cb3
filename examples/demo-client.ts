/**
 * A tour of the embedded demo with the official MCP SDK client:
 *
 * ```sh
 * node_modules/deno/deno run -A examples/demo-client.ts http://127.0.0.1:8080/mcp/demo <API key>
 * ```
 * It lists acme/web issues (one is filtered by the guard), creates an issue in acme/web (allowed) and
 * tries to create one in the public acme/public-site (blocked before it reaches the upstream).
 *
 * @module
 */
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key] = Deno.args;
if (!url || !key) {
  console.error("usage: demo-client.ts <gateway MCP URL> <API key>");
  Deno.exit(2);
}
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}`, "X-Agent-ID": "demo-agent" } },
});
const client = new Client({ name: "mcp-edge-guard-demo-client", version: "0.1.0" });
await client.connect(transport);

const show = (title: string, value: unknown) =>
  console.log(`\n== ${title}\n${JSON.stringify(value, null, 2)}`);
const call = async (name: string, args: Record<string, unknown>) => {
  try {
    return await client.callTool({ name, arguments: args });
  } catch (e) {
    return { error: (e as Error).message };
  }
};

show("tools", (await client.listTools()).tools.map((t) => t.name));
show("read: list_issues acme/web (issue #2 is filtered)", await call("list_issues", { repo: "acme/web" }));
show(
  "write: create_issue in acme/web (allowed)",
  await call("create_issue", { repo: "acme/web", title: "From the demo", body: "hello" }),
);
show(
  "write: create_issue in acme/public-site (blocked: outside the agent's policy scope, and a public sink for private data)",
  await call("create_issue", { repo: "acme/public-site", title: "Leak", body: "secrets" }),
);
await client.close();
