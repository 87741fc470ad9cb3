/**
 * Operators see and reset agents' labels: the `/admin/labels` routes (guarded by `gateway.adminKey`,
 * off without it) on the real gateway in front of the demo upstream, and `deno task labels` spawned
 * against that gateway (its in-memory store) and directly against a Deno KV file.
 */
import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { ConfigError, parseConfig } from "../src/config.ts";
import { DenoKvAgentLabelStore, type KvLike, MemoryAgentLabelStore } from "../src/difc/store.ts";
import { createAdminHandler } from "../src/http/admin.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../src/main.ts";
import { API_KEY, connectAgent, startDemo, startTestGateway } from "./gateway/harness.ts";

const ADMIN_KEY = "operator-key-5b7c0e21d9";
const LABELS_CLI = new URL("../src/cli/labels.ts", import.meta.url).pathname;

function demoConfig(url: string, adminKey?: string) {
  return {
    mcpServers: { demo: { type: "http", url, guard: "demo", "guard-policies": DEMO_POLICY } },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
    gateway: adminKey ? { adminKey } : {},
  };
}

async function cli(args: string[], env: Record<string, string> = {}, cwd?: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", "--unstable-no-legacy-abort", LABELS_CLI, ...args],
    env: { MCP_EDGE_GUARD_ADMIN_KEY: "", MCP_EDGE_GUARD_URL: "", ...env },
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("config: gateway.adminKey must be long and differ from every agent key", () => {
  const base = (gateway: Record<string, unknown>) => ({
    mcpServers: { s: { type: "http", url: "http://x/mcp" } },
    gateway,
  });
  assertEquals(parseConfig(base({ adminKey: ADMIN_KEY })).gateway.adminKey, ADMIN_KEY);
  assertEquals(parseConfig(base({})).gateway.adminKey, null);
  assertThrows(
    () => parseConfig(base({ adminKey: "short" })),
    ConfigError,
    "gateway.adminKey: must be at least 16",
  );
  assertThrows(
    () => parseConfig(base({ apiKey: ADMIN_KEY, adminKey: ADMIN_KEY })),
    ConfigError,
    "must differ from gateway.apiKey",
  );
  assertThrows(
    () => parseConfig(base({ agents: { bot: { apiKey: ADMIN_KEY } }, adminKey: ADMIN_KEY })),
    ConfigError,
    "every agent's key",
  );
});

Deno.test("admin routes: off without gateway.adminKey; agent keys refused; list, show and reset an agent's labels", async () => {
  await using demo = await startDemo();
  await using off = await startTestGateway(demoConfig(demo.url));
  const offRes = await fetch(`${off.base}/admin/labels`, { headers: { authorization: `Bearer ${API_KEY}` } });
  assertEquals(offRes.status, 404);
  assertStringIncludes((await offRes.json()).message, "gateway.adminKey is not set");

  await using gw = await startTestGateway(demoConfig(demo.url, ADMIN_KEY));
  const admin = (method: string, path: string, key = ADMIN_KEY) =>
    fetch(`${gw.base}/admin/labels${path}`, { method, headers: { authorization: `Bearer ${key}` } });
  for (const key of [API_KEY, "wrong-operator-key-000"]) {
    const r = await admin("GET", "", key);
    assertEquals(r.status, 401, "the agents' key is not the operator's");
    await r.body?.cancel();
  }
  const none = await fetch(`${gw.base}/admin/labels`);
  assertEquals(none.status, 401);
  await none.body?.cancel();

  // An agent reads private acme/web data: its labels now carry the repository's secrecy.
  const client = await connectAgent(gw.url("demo"), { agentId: "reader" });
  await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
  await client.close();
  const held = await gw.store.get("reader");
  assert(held.secrecy.length + held.integrity.length > 0, JSON.stringify(held));

  assertEquals(await (await admin("GET", "")).json(), { agents: { reader: held } });
  assertEquals(await (await admin("GET", "/reader")).json(), { agent: "reader", labels: held });
  assertEquals(await (await admin("GET", "/nobody")).json(), {
    agent: "nobody",
    labels: { secrecy: [], integrity: [] },
  });
  const put = await admin("PUT", "/reader");
  assertEquals(put.status, 405);
  await put.body?.cancel();
  assertEquals(await (await admin("DELETE", "/reader")).json(), {
    agent: "reader",
    reset: true,
    previous: held,
  });
  assertEquals(await gw.store.get("reader"), { secrecy: [], integrity: [] });
  assertEquals(await (await admin("GET", "")).json(), { agents: {} });
  assert(gw.logs.some((r) => r.event === "admin_labels_reset" && r.agent === "reader"));
});

Deno.test("deno task labels: list, show and reset through a running gateway (its memory store)", async () => {
  await using demo = await startDemo();
  await using gw = await startTestGateway(demoConfig(demo.url, ADMIN_KEY));
  const client = await connectAgent(gw.url("demo"), { agentId: "cli-agent" });
  await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
  await client.close();
  const env = { MCP_EDGE_GUARD_URL: gw.base, MCP_EDGE_GUARD_ADMIN_KEY: ADMIN_KEY };
  const list = await cli(["list"], env);
  assertEquals(list.code, 0, list.stderr);
  assertStringIncludes(list.stdout, "cli-agent  secrecy [");
  const show = await cli(["--json", "show", "cli-agent"], env);
  assertEquals(JSON.parse(show.stdout), { agent: "cli-agent", labels: await gw.store.get("cli-agent") });
  const reset = await cli(["reset", "cli-agent"], env);
  assertEquals(reset.code, 0, reset.stderr);
  assertStringIncludes(reset.stdout, "reset cli-agent; it held secrecy [");
  assertEquals(await gw.store.get("cli-agent"), { secrecy: [], integrity: [] });
  assertEquals((await cli(["list"], env)).stdout.trim(), "no agents have labels");

  // Errors are one line: a wrong key, a gateway without the routes, no gateway, no key, bad usage.
  const wrong = await cli(["list"], { ...env, MCP_EDGE_GUARD_ADMIN_KEY: API_KEY });
  assertEquals([wrong.code, wrong.stderr.trim().split("\n").length], [1, 1]);
  assertStringIncludes(wrong.stderr, "refused the admin key");
  await using off = await startTestGateway(demoConfig(demo.url));
  const disabled = await cli(["list", "--url", off.base], env);
  assertEquals(disabled.code, 1);
  assertStringIncludes(disabled.stderr, "set gateway.adminKey");
  const dead = await cli(["list", "--url", "http://127.0.0.1:9"], env);
  assertEquals(dead.code, 1);
  assertStringIncludes(dead.stderr, "cannot reach the gateway at http://127.0.0.1:9");
  const noKey = await cli(["list"]);
  assertEquals(noKey.code, 2);
  assertStringIncludes(noKey.stderr, "no admin key");
  for (const args of [["show"], ["bogus"], ["list", "--nope"], []]) {
    const r = await cli(args, env);
    assertEquals(r.code, 2, args.join(" "));
    assertStringIncludes(r.stderr, "usage:");
  }
  const help = await cli(["--help"]);
  assertEquals(help.code, 0);
  assertStringIncludes(help.stdout, "deno task labels");
});

Deno.test("deno task labels --kv: list, show and reset in a Deno KV file, relative to INIT_CWD", async () => {
  const dir = await Deno.makeTempDir({ prefix: "labels_kv_" });
  try {
    const openKv =
      (Deno as unknown as { openKv: (p?: string) => Promise<KvLike & { close(): void }> }).openKv;
    const kv = await openKv(`${dir}/labels.db`);
    const store = new DenoKvAgentLabelStore(kv);
    await store.addLabels("kv-agent", { secrecy: ["private:acme/web"], integrity: ["none:acme/web"] });
    await store.addLabels("other", { secrecy: ["s"], integrity: [] });
    kv.close();
    const run = (args: string[]) => cli(["--kv", "labels.db", ...args], { INIT_CWD: dir }, "/");
    const list = await run(["--json", "list"]);
    assertEquals(list.code, 0, list.stderr);
    assertEquals(Object.keys(JSON.parse(list.stdout).agents).sort(), ["kv-agent", "other"]);
    assertEquals(
      (await run(["show", "kv-agent"])).stdout.trim(),
      "kv-agent  secrecy [private:acme/web]  integrity [none:acme/web]",
    );
    assertEquals((await run(["reset", "kv-agent"])).code, 0);
    assertEquals(Object.keys(JSON.parse((await run(["--json", "list"])).stdout).agents), ["other"]);
    const mixed = await cli(["--kv", "x.db", "--url", "http://127.0.0.1:1", "list"]);
    assertEquals(mixed.code, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("admin routes: no unadmitted request reads or resets another agent's labels, nor sees a credential echoed", async () => {
  const MARK = `LEAK-admin-${crypto.randomUUID()}`;
  const store = new MemoryAgentLabelStore();
  await store.addLabels("victim", { secrecy: [MARK], integrity: [] });
  const logs: Record<string, unknown>[] = [];
  const admin = createAdminHandler({ store, adminKey: ADMIN_KEY, log: (r) => logs.push(r) });
  const AGENT_KEY = `agent-key-${MARK}`;
  const attempts: [string, string, Record<string, string>][] = [
    ["GET", "/admin/labels", {}],
    ["GET", "/admin/labels/victim", { authorization: `Bearer ${AGENT_KEY}` }],
    ["GET", "/admin/labels/victim", { authorization: ADMIN_KEY }], // the raw form agents may use is not accepted
    ["GET", "/admin/labels/victim", { authorization: `Bearer ${ADMIN_KEY}x` }],
    ["GET", "/admin/labels/victim", { authorization: `Bearer ${ADMIN_KEY.slice(0, -1)}` }],
    ["GET", `/admin/labels/victim?key=${ADMIN_KEY}`, { "x-agent-id": ADMIN_KEY }],
    ["DELETE", "/admin/labels/victim", { authorization: `Bearer ${AGENT_KEY}` }],
    ["DELETE", "/admin/labels/victim", { authorization: `Basic ${btoa(`admin:${ADMIN_KEY}`)}` }],
  ];
  for (const [method, path, headers] of attempts) {
    const res = await admin(new Request(`http://gw.test${path}`, { method, headers }));
    const body = await res.text();
    assertEquals(res.status, 401, `${method} ${path} ${JSON.stringify(headers)}`);
    assert(!body.includes(MARK), `another agent's labels or the presented key in: ${body}`);
    assert(!body.includes(ADMIN_KEY.slice(0, -1)), `the admin key echoed in: ${body}`);
  }
  assertEquals(await store.get("victim"), { secrecy: [MARK], integrity: [] }, "nothing was reset");
  assertEquals(logs, [], "no reset was logged");
  // With the key, the same agent's labels are there to see: the refusals above hid them.
  const ok = await admin(
    new Request("http://gw.test/admin/labels/victim", { headers: { authorization: `Bearer ${ADMIN_KEY}` } }),
  );
  assertStringIncludes(await ok.text(), MARK);
});
