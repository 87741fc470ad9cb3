/**
 * Property-based fuzzing of guard outputs: `label_agent` / `label_resource` / `label_response` JSON
 * with wrong types, huge arrays, deep nesting and bad JSON Pointers, straight into `src/difc/parse.ts`
 * and through the pipeline with an in-test guard answering the fuzzed output.
 *
 * Properties: parsing throws nothing but `GuardOutputError`; the pipeline throws nothing but
 * `DifcError`; and no item the guard labeled unreadable is ever released (every such item carries a
 * marker string in its data; the marker never appears in a result).
 */
import fc from "fast-check";
import { assert } from "@std/assert";
import type { Guard, GuardContext, GuardSession } from "../../src/difc/guard.ts";
import {
  GuardOutputError,
  parseJsonPointer,
  parseLabelAgentOutput,
  parseLabelResourceOutput,
  parseLabelResponseOutput,
} from "../../src/difc/parse.ts";
import { beginToolCall, DifcError } from "../../src/difc/pipeline.ts";
import { MemoryAgentLabelStore } from "../../src/difc/store.ts";

/** Runs per property in the CI run (STRESS=full multiplies by 10). */
const SCALE = Deno.env.get("STRESS") === "full" ? 10 : 1;
const MARKER = "UNREADABLE-MARKER-91c2";
const UNREADABLE = { description: "secret item", secrecy: ["secret:vault"], integrity: [] };
const READABLE = { description: "public item", secrecy: [], integrity: [] };

/** Only typed errors: anything else (TypeError, RangeError, ...) is a crash. */
function typedOnly(fn: () => unknown, allowed: new (...a: never[]) => Error): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof allowed)) throw new Error(`crash: ${e instanceof Error ? e.stack : String(e)}`);
  }
}

/** Values of every JSON type, including the wrong ones for each field. */
const anyJson = fc.jsonValue({ maxDepth: 3 });
const wrongish = fc.oneof(
  anyJson,
  fc.constantFrom(null, 0, -1, 1e308, "", "secret", true, [], {}, [null], [1, 2], ["a", 5], { secrecy: 1 }),
);
/** Deeply nested JSON text (arrays or objects), up to 5,000 levels (one fixed case goes deeper). */
const deepText = fc.tuple(fc.integer({ min: 1, max: 5_000 }), fc.boolean()).map(([n, arr]) =>
  arr ? "[".repeat(n) + "]".repeat(n) : '{"a":'.repeat(n) + "1" + "}".repeat(n)
);
/** JSON Pointers, valid and not. */
const pointer = fc.oneof(
  fc.constantFrom(
    "",
    "/",
    "/items",
    "items",
    "/items/0",
    "/a~1b",
    "/m~0n",
    "/~",
    "/~2",
    "/items/-1",
    "//",
    "/0/",
  ),
  fc.array(fc.oneof(fc.string({ maxLength: 6 }), fc.nat(20).map(String)), { maxLength: 5 }).map((s) =>
    "/" + s.join("/")
  ),
  fc.string({ maxLength: 20 }),
);
const labelsObj = fc.record({
  description: fc.oneof(fc.string({ maxLength: 10 }), wrongish),
  secrecy: fc.oneof(fc.array(fc.string({ maxLength: 8 }), { maxLength: 4 }), wrongish),
  integrity: fc.oneof(fc.array(fc.string({ maxLength: 8 }), { maxLength: 4 }), wrongish),
}, { requiredKeys: [] });

const agentOutput = fc.oneof(
  fc.record({
    agent: fc.oneof(fc.record({ secrecy: wrongish, integrity: wrongish }, { requiredKeys: [] }), wrongish),
    difc_mode: fc.oneof(fc.constantFrom("strict", "filter", "propagate", " FILTER ", "bogus"), wrongish),
    normalized_policy: wrongish,
    success: wrongish,
    ok: wrongish,
    error: wrongish,
  }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
  anyJson.map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 40 }),
  deepText,
);
const resourceOutput = fc.oneof(
  fc.record({
    resource: fc.oneof(labelsObj, wrongish),
    operation: fc.oneof(fc.constantFrom("read", "write", "read-write", "READ", ""), wrongish),
  }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
  anyJson.map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 40 }),
  deepText,
);
const responseOutput = fc.oneof(
  fc.record({
    labeled_paths: fc.oneof(
      fc.array(
        fc.record({ path: fc.oneof(pointer, wrongish), labels: fc.oneof(labelsObj, wrongish) }, {
          requiredKeys: [],
        }),
        { maxLength: 8 },
      ),
      wrongish,
    ),
    items_path: fc.oneof(pointer, wrongish),
    default_labels: fc.oneof(labelsObj, wrongish),
    items: fc.oneof(
      fc.array(fc.record({ data: anyJson, labels: fc.oneof(labelsObj, wrongish) }), { maxLength: 5 }),
      wrongish,
    ),
  }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
  // huge arrays of label entries (one fixed case goes larger)
  fc.nat(3_000).map((n) =>
    JSON.stringify({
      items_path: "/items",
      labeled_paths: Array.from({ length: n }, (_, i) => ({ path: `/items/${i}`, labels: READABLE })),
    })
  ),
  anyJson.map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 40 }),
  deepText,
);
/** Tool results the response labels are applied to. */
const toolResult = fc.oneof(
  anyJson,
  fc.array(anyJson, { maxLength: 5 }).map((items) => ({
    content: [{ type: "text", text: JSON.stringify({ items, total_count: items.length }) }],
  })),
  fc.array(anyJson, { maxLength: 5 }).map((items) => ({
    content: [{ type: "text", text: JSON.stringify(items) }],
  })),
  fc.array(anyJson, { maxLength: 5 }).map((items) => ({ items })),
);

Deno.test("fuzz parse.ts: label_agent / label_resource outputs and JSON Pointers throw only GuardOutputError", () => {
  fc.assert(
    fc.property(agentOutput, (text) => typedOnly(() => parseLabelAgentOutput(text), GuardOutputError)),
    { numRuns: 8_000 * SCALE },
  );
  fc.assert(
    fc.property(resourceOutput, (text) => typedOnly(() => parseLabelResourceOutput(text), GuardOutputError)),
    { numRuns: 8_000 * SCALE },
  );
  fc.assert(
    fc.property(fc.oneof(pointer, fc.string({ maxLength: 50 })), (p) => {
      typedOnly(() => parseJsonPointer(p), GuardOutputError);
    }),
    { numRuns: 4_000 * SCALE },
  );
});

Deno.test("fuzz parse.ts: label_response outputs against tool results throw only GuardOutputError", () => {
  // Fixed extremes: 100,000 label entries, 100,000 levels of nesting.
  const big = JSON.stringify({
    items_path: "/items",
    labeled_paths: Array.from({ length: 100_000 }, (_, i) => ({ path: `/items/${i}`, labels: READABLE })),
  });
  typedOnly(() => parseLabelResponseOutput(big, { items: [1, 2, 3] }), GuardOutputError);
  for (
    const deep of [
      "[".repeat(100_000) + "]".repeat(100_000),
      '{"a":'.repeat(100_000) + "1" + "}".repeat(100_000),
    ]
  ) {
    typedOnly(() => parseLabelResponseOutput(deep, {}), GuardOutputError);
    typedOnly(() => parseLabelAgentOutput(deep), GuardOutputError);
    typedOnly(() => parseLabelResourceOutput(deep), GuardOutputError);
  }
  fc.assert(
    fc.property(
      responseOutput,
      toolResult,
      (text, result) => typedOnly(() => parseLabelResponseOutput(text, result), GuardOutputError),
    ),
    { numRuns: 10_000 * SCALE },
  );
});

// ---------------------------------------------------------------------------------------------
// Through the pipeline, with the marker oracle.

/** An in-test guard: fixed agent and resource answers, the fuzzed label_response output. */
function guardAnswering(response: string, resource: string, agent: string): Guard {
  return {
    name: "fuzz",
    type: "wasm",
    open(_ctx: GuardContext): GuardSession {
      return {
        labelAgent: () => Promise.resolve(agent),
        labelResource: () => Promise.resolve(resource),
        labelResponse: () => Promise.resolve(response),
        usage: () => ({ fuel: 0, backendCalls: 0, memoryPages: 0, ms: 0 }),
        close: () => {},
      };
    },
  };
}

/** Items of an upstream answer: unreadable ones carry the marker in their data. */
const itemsArb = fc.array(fc.record({ unreadable: fc.boolean(), n: fc.nat(1000), extra: anyJson }), {
  minLength: 1,
  maxLength: 8,
}).map((xs) =>
  xs.map((x, i) => ({ number: i, note: x.unreadable ? `${MARKER} ${x.n}` : `open ${x.n}`, extra: x.extra }))
);

/**
 * A label_response output whose intent is known: every unreadable item is labeled unreadable by
 * path (in one of several equivalent spellings) or via unreadable `default_labels`, plus noise that
 * may not change that intent: unrelated paths, duplicates with the same labels, type corruption of
 * fields (which must make the output an error, never a release), extra keys.
 */
function intendedOutput(
  items: { note: string }[],
  wrapper: "object" | "array" | "raw",
  noise: { style: number; useDefault: boolean; corrupt: number; junk: unknown; extraPaths: string[] },
): string {
  const base = wrapper === "array" ? "" : "/items";
  const spell = (i: number) => {
    const p = [`${base}/${i}`, `${base}/${i}/note`, `${base.slice(1)}/${i}`][noise.style % 3];
    return wrapper === "array" && noise.style % 3 === 2 ? `${i}` : p;
  };
  const labeled: { path: unknown; labels: unknown }[] = [];
  items.forEach((it, i) => {
    const secret = it.note.startsWith(MARKER);
    if (secret && noise.useDefault) return; // covered by the unreadable default_labels
    labeled.push({ path: spell(i), labels: secret ? UNREADABLE : READABLE });
    if (noise.style % 2 === 1) labeled.push({ path: spell(i), labels: secret ? UNREADABLE : READABLE });
  });
  for (const p of noise.extraPaths) labeled.push({ path: `/zzz${p}`, labels: READABLE });
  const out: Record<string, unknown> = {
    labeled_paths: labeled,
    items_path: base,
    ...(noise.useDefault ? { default_labels: UNREADABLE } : {}),
  };
  // Corrupt one field with a wrong-typed value: the output must then be rejected or keep its intent.
  if (noise.corrupt > 0 && labeled.length > 0) {
    const e = labeled[noise.corrupt % labeled.length];
    const which = noise.corrupt % 4;
    if (which === 0) e.path = noise.junk;
    else if (which === 1) e.labels = noise.junk;
    else if (which === 2) {
      (e.labels as Record<string, unknown>) = { ...(e.labels as object), secrecy: noise.junk };
    } else out.items_path = noise.junk;
  }
  return JSON.stringify(out);
}

function upstreamResult(items: unknown[], wrapper: "object" | "array" | "raw"): unknown {
  if (wrapper === "raw") return { items };
  const value = wrapper === "array" ? items : { items, total_count: items.length };
  const r: Record<string, unknown> = { content: [{ type: "text", text: JSON.stringify(value) }] };
  if (wrapper === "object") r.structuredContent = value;
  return r;
}

/**
 * Wrong-typed values that are invalid for every corrupted field (a path must be a string, labels an
 * object with string-array tags, items_path a string): each one must turn the output into an error.
 */
const corruption = fc.oneof(
  fc.integer(),
  fc.boolean(),
  fc.double({ noNaN: true, noDefaultInfinity: true }), // NaN and ±Infinity serialize as null
  fc.array(fc.integer(), { minLength: 1, maxLength: 3 }),
  fc.constant([null]),
  fc.constant({ secrecy: 1 }),
);

const AGENT = JSON.stringify({ agent: { secrecy: [], integrity: [] }, difc_mode: "filter" });
const READ = JSON.stringify({ operation: "read", resource: READABLE });
const POLICY = { "allow-only": { repos: ["acme/*"], "min-integrity": "none" } };

async function runPipeline(
  guard: Guard,
  result: unknown,
  store: MemoryAgentLabelStore,
): Promise<unknown> {
  const ctx: GuardContext = {
    signal: new AbortController().signal,
    backend: () => Promise.resolve({}),
    log: () => {},
  };
  try {
    const g = await beginToolCall(
      {
        serverId: "s",
        agentId: "fuzz-agent",
        toolName: "list_things",
        args: {},
        policy: POLICY,
        defaultMode: "filter",
      },
      { guard, store, log: () => {} },
      ctx,
    );
    return await g.finish(result);
  } catch (e) {
    if (e instanceof DifcError) return { error: e.message };
    throw new Error(`crash: ${e instanceof Error ? e.stack : String(e)}`);
  }
}

Deno.test("fuzz pipeline: labeled-unreadable items are never released, whatever else the output holds", async () => {
  const store = new MemoryAgentLabelStore();
  let released = 0, errors = 0;
  await fc.assert(
    fc.asyncProperty(
      itemsArb,
      fc.constantFrom("object", "array", "raw") as fc.Arbitrary<"object" | "array" | "raw">,
      fc.record({
        style: fc.nat(5),
        useDefault: fc.boolean(),
        corrupt: fc.oneof(fc.constant(0), fc.nat(40)),
        junk: corruption,
        extraPaths: fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
      }),
      async (items, wrapper, noise) => {
        const out = intendedOutput(items, wrapper, noise);
        const r = await runPipeline(guardAnswering(out, READ, AGENT), upstreamResult(items, wrapper), store);
        const text = JSON.stringify(r);
        if ((r as { error?: string }).error) errors++;
        else released++;
        assert(!text.includes(MARKER), `released an unreadable item: output ${out}\n→ ${text.slice(0, 400)}`);
      },
    ),
    { numRuns: 12_000 * SCALE },
  );
  console.log(`pipeline oracle: ${released} results released (markers filtered), ${errors} failed closed`);
  assert(released > 0 && errors > 0, "both outcomes were exercised");
});

Deno.test("fuzz pipeline: arbitrary guard outputs for all three phases give results or DifcError only", async () => {
  const store = new MemoryAgentLabelStore();
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(fc.constant(AGENT), agentOutput),
      fc.oneof(fc.constant(READ), resourceOutput),
      responseOutput,
      toolResult,
      async (agent, resource, response, result) => {
        await runPipeline(guardAnswering(response, resource, agent), result, store);
      },
    ),
    { numRuns: 8_000 * SCALE },
  );
});
