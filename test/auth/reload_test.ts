/**
 * Revocation and rotation without a restart, on the real Deno entry (`src/main.ts` as a child
 * process): SIGHUP, and `--watch-config` file changes, swap the keys and OAuth settings; a broken file
 * leaves the running settings in force.
 */
import { assertEquals, assertStringIncludes } from "@std/assert";
import { freePort, startProcess } from "../helpers/processes.ts";
import { sha256Hex } from "./harness.ts";
import { startIssuer } from "./issuer.ts";

const DENO = new URL("../../node_modules/deno/deno", import.meta.url).pathname;

async function writeConfig(file: string, gateway: Record<string, unknown>) {
  await Deno.writeTextFile(
    file,
    JSON.stringify({
      mcpServers: { noop: { type: "http", url: "http://127.0.0.1:9/mcp", guard: "noop" } },
      guards: { noop: { type: "noop" } },
      gateway,
    }),
  );
}

async function status(base: string, authorization: string): Promise<number> {
  const res = await fetch(`${base}/reflect`, { headers: { authorization } });
  await res.body?.cancel();
  return res.status;
}

/** Polls until `check` holds (the reload is asynchronous to the signal). */
async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

for (const mode of ["SIGHUP", "--watch-config"] as const) {
  Deno.test({
    name:
      `reload (${mode}): a revoked key stops working, a new key and an issuer start, a broken file changes nothing`,
    ignore: Deno.build.os === "windows",
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "auth_reload_" });
      const file = `${dir}/gateway.json`;
      const port = freePort();
      const base = `http://127.0.0.1:${port}`;
      await using iss = await startIssuer(`${base}/mcp`);
      await writeConfig(file, { agents: { old: { apiKeySha256: await sha256Hex("old-key") } } });
      await using gw = await startProcess(DENO, {
        args: [
          "run",
          "-A",
          "--unstable-no-legacy-abort",
          "src/main.ts",
          "--config",
          file,
          "--port",
          String(port),
          ...(mode === "--watch-config" ? ["--watch-config"] : []),
        ],
        waitForPort: port,
      });
      // With --watch-config, writing the file is the reload.
      const reload = () => {
        if (mode === "SIGHUP") Deno.kill(gw.pid, "SIGHUP");
      };
      const token = await iss.sign({ sub: "from-token" });
      assertEquals(await status(base, "old-key"), 200);
      assertEquals(await status(base, `Bearer ${token}`), 401);

      await writeConfig(file, {
        agents: { new: { apiKeySha256: await sha256Hex("new-key") } },
        oauth: { issuer: iss.issuer, audience: `${base}/mcp`, jwksUrl: iss.jwksUrl },
      });
      reload();
      await eventually("the old key is revoked", async () => (await status(base, "old-key")) === 401);
      assertEquals(await status(base, "new-key"), 200);
      assertEquals(await status(base, `Bearer ${token}`), 200);

      // A file that does not parse: the running settings stay, the reason is logged.
      await Deno.writeTextFile(file, "{ not json");
      reload();
      await eventually(
        "the failed reload is logged",
        () => Promise.resolve(gw.output().includes("not valid JSON")),
      );
      assertEquals(await status(base, "new-key"), 200);
      assertStringIncludes(gw.output(), '"event":"auth_reload"');
      await gw.stop();
      await Deno.remove(dir, { recursive: true });
    },
  });
}
