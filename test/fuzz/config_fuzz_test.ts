/**
 * Property-based fuzzing of configuration files: arbitrary JSON, valid configs with one field set to a
 * wrong value, `${VAR}` expansion with hostile environments, and raw text through `parseConfigText`.
 * Property: `parseConfig` returns a config or throws `ConfigError`, nothing else.
 */
import fc from "fast-check";
import { assert } from "@std/assert";
import { ConfigError, parseConfig, parseConfigText } from "../../src/config.ts";

const SCALE = Deno.env.get("STRESS") === "full" ? 10 : 1;

function typedOnly(fn: () => unknown): "ok" | "error" {
  try {
    fn();
    return "ok";
  } catch (e) {
    if (e instanceof ConfigError) return "error";
    throw new Error(`crash: ${e instanceof Error ? e.stack : String(e)}`);
  }
}

const BASE = {
  mcpServers: {
    github: {
      type: "http",
      url: "http://127.0.0.1:3000/mcp",
      headers: { Authorization: "Bearer ${GH_TOKEN}" },
      tools: ["*"],
      guard: "gh",
      "guard-policies": { "allow-only": { repos: ["acme/*"], "min-integrity": "approved" } },
      toolTimeout: 30,
    },
    sink: {
      type: "http",
      url: "https://example.com/mcp",
      "guard-policies": { "write-sink": { accept: ["*"] } },
    },
  },
  guards: {
    gh: {
      type: "wasm",
      path: "guards/gh.wasm",
      policy: { "allow-only": { repos: "all", "min-integrity": "none" } },
    },
  },
  gateway: {
    port: 8080,
    hostname: "127.0.0.1",
    apiKey: "k",
    toolTimeout: 60,
    trustedBots: ["bot"],
    maxBodyBytes: 1024,
  },
  limits: { fuel: 1000000, maxMemoryPages: 256 },
  guardsMode: "filter",
};

/** Every path into BASE (objects and arrays), as key lists. */
function paths(v: unknown, prefix: string[] = []): string[][] {
  if (typeof v !== "object" || v === null) return [prefix];
  const out: string[][] = [prefix];
  for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}
const BASE_PATHS = paths(BASE).filter((p) => p.length > 0);

function withValue(path: string[], value: unknown, remove: boolean): unknown {
  const copy = structuredClone(BASE) as Record<string, unknown>;
  let cur = copy as Record<string, unknown>;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<string, unknown>;
  if (remove) delete cur[path.at(-1)!];
  else cur[path.at(-1)!] = value;
  return copy;
}

const wrong = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(null, -1, 0, 1.5, 1e300, 65_536, "", " ", "${", "${X}", "${UNSET}", "\u0000", [], {}, true),
  fc.string({ maxLength: 30 }),
);
const env = fc.dictionary(fc.constantFrom("GH_TOKEN", "X", "PORT", "A"), fc.string({ maxLength: 20 }), {
  maxKeys: 4,
});

Deno.test("fuzz parseConfig: arbitrary JSON values throw only ConfigError", () => {
  const outcomes = { ok: 0, error: 0 };
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue({ maxDepth: 5 }), fc.anything({ maxDepth: 3 })), env, (v, e) => {
      outcomes[typedOnly(() => parseConfig(v, e))]++;
    }),
    { numRuns: 8_000 * SCALE },
  );
  assert(outcomes.error > 0);
});

Deno.test("fuzz parseConfig: a valid config with one field wrong or missing: config or ConfigError", () => {
  const outcomes = { ok: 0, error: 0 };
  assert(typedOnly(() => parseConfig(BASE, { GH_TOKEN: "t" })) === "ok", "the base config is valid");
  fc.assert(
    fc.property(fc.constantFrom(...BASE_PATHS), wrong, fc.boolean(), env, (path, value, remove, e) => {
      outcomes[typedOnly(() => parseConfig(withValue(path, value, remove), e))]++;
    }),
    { numRuns: 12_000 * SCALE },
  );
  console.log(`config mutations: ${outcomes.ok} accepted, ${outcomes.error} rejected with ConfigError`);
  assert(outcomes.ok > 0 && outcomes.error > 0, "both outcomes were exercised");
});

Deno.test("fuzz parseConfigText: raw text (truncated, garbage, deep nesting) throws only ConfigError", () => {
  const text = JSON.stringify(BASE);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.nat(text.length).map((n) => text.slice(0, n)),
        fc.string({ maxLength: 80 }),
        fc.nat(20_000).map((n) => '{"mcpServers":'.repeat(n) + "{}" + "}".repeat(n)),
      ),
      (t) => {
        typedOnly(() => parseConfigText(t, {}));
      },
    ),
    { numRuns: 4_000 * SCALE },
  );
});
