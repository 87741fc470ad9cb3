/**
 * A tiny Worker that runs prepared guards through the real host in workerd (test/workerd/
 * guard_workerd_test.ts bundles it with esbuild and runs it under Miniflare).
 *
 * Routes: `/backend` (JSPI call_backend), `/spin` (fuel budget), `/grow` (memory cap and build
 * records), `/corpus/<name>` (a hostile corpus module: load with its record, `label_agent` then
 * `label_resource` under a 50M fuel budget). Each answers JSON: the guard output or
 * `{kind, limit, value, message}` of the GuardError.
 */
// @deno-types="./guard_modules.d.ts"
import { modules, records } from "./guard_modules.js";
import { loadGuardModule, type WasmGuardOptions } from "../../src/guard/host.ts";
import { GuardError } from "../../src/guard/limits.ts";

const noLog = () => {};
/** Fuel for a corpus guard: workerd freezes the clock while wasm runs, so fuel is what stops it. */
const CORPUS_FUEL = 50_000_000;

/** Loads a bundled module with the record the test wrote for it. */
function load(name: string, opts: WasmGuardOptions = {}) {
  return loadGuardModule(modules[name], { name, prepared: records[name], ...opts });
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
    return null;
  } catch (e) {
    return e;
  }
}

async function route(path: string): Promise<unknown> {
  const signal = new AbortController().signal;
  if (path === "/backend") {
    const guard = await load("backend");
    const session = guard.open({
      signal,
      log: noLog,
      backend: async (tool, args) => {
        await new Promise((r) => setTimeout(r, 5)); // a real suspension
        return { tool, args };
      },
    });
    return { output: JSON.parse(await session.labelResource('{"q":1}')), usage: session.usage() };
  }
  if (path === "/spin") {
    const guard = await load("spin", { limits: { fuel: 20_000_000 } });
    const session = guard.open({ signal, log: noLog, backend: () => Promise.reject(new Error("none")) });
    const other = guard.open({ signal, log: noLog, backend: () => Promise.reject(new Error("none")) });
    const [spun, ok] = await Promise.allSettled([session.labelAgent("{}"), other.labelResponse("{}")]);
    return { spun: spun.status === "rejected" ? spun.reason : spun.value, other: ok };
  }
  if (path === "/grow") {
    const guard = await load("grow", { limits: { maxMemoryPages: 80 } });
    const session = guard.open({ signal, log: noLog, backend: () => Promise.reject(new Error("none")) });
    await session.labelAgent("{}");
    return {
      memoryPages: session.usage().memoryPages,
      smallerCap: await rejection(load("grow", { limits: { maxMemoryPages: 64 } })),
      foreignRecord: await rejection(loadGuardModule(modules.grow, { name: "grow", prepared: records.spin })),
      noRecord: await rejection(loadGuardModule(modules.grow, { name: "grow" })),
    };
  }
  if (path.startsWith("/corpus/")) {
    const name = path.slice("/corpus/".length);
    let guard;
    try {
      guard = await load(name, { limits: { fuel: CORPUS_FUEL } });
    } catch (e) {
      return { loadError: e };
    }
    const session = guard.open({ signal, log: noLog, backend: () => Promise.reject(new Error("none")) });
    try {
      await session.labelAgent("{}");
      return { output: await session.labelResource('{"q":1}'), usage: session.usage() };
    } catch (e) {
      return { error: e, usage: session.usage() };
    } finally {
      session.close();
    }
  }
  return { error: `no route ${path}` };
}

function toJson(v: unknown): unknown {
  if (v instanceof GuardError) return { kind: v.kind, limit: v.limit, value: v.value, message: v.message };
  if (v && typeof v === "object" && "status" in v) {
    const s = v as PromiseSettledResult<unknown>;
    return s.status === "fulfilled" ? { value: s.value } : { error: toJson(s.reason) };
  }
  return v;
}

export default {
  async fetch(request: Request): Promise<Response> {
    try {
      const body = await route(new URL(request.url).pathname);
      const out = Object.fromEntries(
        Object.entries(body as Record<string, unknown>).map(([k, v]) => [k, toJson(v)]),
      );
      return Response.json(out);
    } catch (e) {
      return Response.json({ thrown: toJson(e) ?? String(e) }, { status: 500 });
    }
  },
};
