/**
 * The whole hostile-guard corpus (`test/fixtures/wat/hostile/`, every prefix, whatever exists) as
 * the guard of a server in a real gateway (`startGateway`, guards read from paths and prepared by
 * the gateway itself), next to a well-behaved server (the demo guard in front of the demo upstream):
 *
 * - a fixture the load-time checks refuse stops the gateway from starting, with a config error
 *   naming the guard and the reason;
 * - any other fixture runs: while its call is in flight, `/health` and the second server answer
 *   within a second; the hostile call ends (a typed guard failure, or an answer) within its budget;
 *   then the next requests, to the second server and to the hostile one, are answered too.
 */
import { assert, assertEquals, assertLess, assertStringIncludes } from "@std/assert";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";
import { API_KEY, connectAgent, startDemo, startTestGateway, texts, within } from "../gateway/harness.ts";
import { hostileBytes, hostileNames, REFUSALS } from "../helpers/hostile_corpus.ts";

/**
 * The default fuel budget with a 1 s deadline: a spinning guard runs until one of the two stops it
 * (up to a second), long enough for many probes while it runs.
 */
const LIMITS = { fuel: 1_000_000_000, timeoutMs: 1_000 };
/** What "keeps answering" means: every health check and second-server call within this. */
const ANSWER_WITHIN_MS = 1_000;
/** Bound on one hostile attempt (connect + call): the deadline plus generous slack for this VM. */
const HOSTILE_WITHIN_MS = LIMITS.timeoutMs + 4_000;
/** Gap between two health probes while a hostile call is in flight. */
const PROBE_EVERY_MS = 25;
/** The JSON-RPC code of every guard failure (the reference's fail-closed code). */
const GUARD_FAILURE = -32002;

type RpcError = Error & { code?: number; data?: { kind?: string } };

function config(name: string, demoUrl: string): Record<string, unknown> {
  return {
    mcpServers: {
      hostile: { type: "http", url: demoUrl, guard: name, "guard-policies": DEMO_POLICY },
      good: { type: "http", url: demoUrl, guard: "demo", "guard-policies": DEMO_POLICY },
    },
    guards: {
      [name]: { type: "wasm", path: `${name}.wasm` },
      demo: { type: "wasm", path: "demo-guard.wasm" },
    },
    limits: LIMITS,
  };
}

/** One hostile attempt: connect (label_agent runs there) and call; the outcome as text. */
async function hostileAttempt(url: string, agent: string): Promise<string> {
  try {
    const client = await connectAgent(url, { agentId: agent });
    try {
      const r = await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
      return `answered: ${texts(r).join("").slice(0, 80)}`;
    } finally {
      await client.close();
    }
  } catch (e) {
    const err = e as RpcError;
    assertEquals(err.code, GUARD_FAILURE, `a guard failure, not anything else: ${err.message}`);
    return `failed closed (${err.data?.kind}): ${err.message.slice(0, 120)}`;
  }
}

Deno.test({
  name:
    "hostile corpus in a real gateway: refused at load, or bounded while /health and a second server answer",
  sanitizeOps: false, // the SDK client and upstream transports settle timers after close
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "hostile_corpus_" });
    await using demo = await startDemo();
    const base = new URL(`file://${dir}/`);
    const names = await hostileNames();
    await Deno.copyFile(DEMO_GUARD_URL, `${dir}/demo-guard.wasm`);
    for (const name of names) await Deno.writeFile(`${dir}/${name}.wasm`, await hostileBytes(name));
    const summary: string[] = [];
    let refused = 0, ran = 0, worstAnswerMs = 0;
    try {
      for (const name of names) {
        let gw: Awaited<ReturnType<typeof startTestGateway>>;
        try {
          gw = await startTestGateway(config(name, demo.url), { configBase: base });
        } catch (e) {
          const msg = (e as Error).message;
          assertStringIncludes(msg, `guards.${name}.path`, name);
          if (REFUSALS[name]) assertStringIncludes(msg, REFUSALS[name].text, name);
          summary.push(`${name}: refused at load: ${msg.slice(0, 140)}`);
          refused++;
          continue;
        }
        assertEquals(REFUSALS[name], undefined, `${name} must be refused at load`);
        try {
          const good = await connectAgent(gw.url("good"), { agentId: "good-agent" });
          try {
            let settled = false;
            const t0 = performance.now();
            const hostile = within(HOSTILE_WITHIN_MS, `${name} call`, hostileAttempt(gw.url("hostile"), "h1"))
              .finally(() => settled = true);
            const answers: number[] = [];
            const probe = async () => {
              do {
                const t = performance.now();
                const [health, listed] = await Promise.all([
                  fetch(`${gw.base}/health`),
                  good.callTool({ name: "list_issues", arguments: { repo: "acme/web" } }),
                ]);
                answers.push(performance.now() - t);
                assertEquals(health.status, 200, `${name}: /health`);
                await health.body?.cancel();
                assertStringIncludes(texts(listed).join(""), '"number":1', `${name}: the second server`);
                await new Promise((r) => setTimeout(r, PROBE_EVERY_MS));
              } while (!settled);
            };
            const [outcome] = await Promise.all([hostile, probe()]);
            const hostileMs = performance.now() - t0;
            const worst = Math.max(...answers);
            worstAnswerMs = Math.max(worstAnswerMs, worst);
            assertLess(worst, ANSWER_WITHIN_MS, `${name}: /health and the second server answered within 1 s`);
            // The next requests succeed: the second server, /health, and the hostile server answers again.
            const next = await good.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
            assertStringIncludes(texts(next).join(""), '"number":1');
            assertEquals(
              (await fetch(`${gw.base}/health`, { headers: { authorization: API_KEY } })).status,
              200,
            );
            const again = await within(
              HOSTILE_WITHIN_MS,
              `${name} again`,
              hostileAttempt(gw.url("hostile"), "h2"),
            );
            summary.push(
              `${name}: ${outcome} in ${Math.round(hostileMs)} ms; ${answers.length} probes, worst ` +
                `${worst.toFixed(0)} ms; next: ${again.slice(0, 40)}`,
            );
            ran++;
          } finally {
            await good.close();
          }
        } finally {
          await gw.close();
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    console.log(summary.join("\n"));
    console.log(
      `corpus: ${names.length} fixtures, ${refused} refused at load, ${ran} ran; ` +
        `worst /health + second-server answer while a hostile guard ran: ${worstAnswerMs.toFixed(0)} ms`,
    );
    assertEquals(refused + ran, names.length);
    assert(refused >= Object.keys(REFUSALS).length, "every expected refusal happened");
  },
});
