import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  GuardOutputError,
  parseJsonPointer,
  parseLabelAgentOutput,
  parseLabelResourceOutput,
  parseLabelResponseOutput,
  unwrapMcpResult,
} from "../../src/difc/parse.ts";

const J = JSON.stringify;
const agentFails = (text: string, msg: string) =>
  assertThrows(() => parseLabelAgentOutput(text), GuardOutputError, msg);

Deno.test("label_agent: full answer; tags trimmed, empty dropped, de-duplicated; mode lower-cased", () => {
  const out = parseLabelAgentOutput(J({
    agent: { secrecy: [" private:acme ", "", "private:acme"], integrity: ["none:acme", "  "] },
    difc_mode: "Propagate",
    normalized_policy: { scope_kind: "Composite", "min-integrity": "approved" },
  }));
  assertEquals(out.secrecy, ["private:acme"]);
  assertEquals(out.integrity, ["none:acme"]);
  assertEquals(out.mode, "propagate");
  assertEquals(out.normalizedPolicy, { scope_kind: "composite", "min-integrity": "approved" });
});

Deno.test("label_agent: missing agent means empty labels", () => {
  const out = parseLabelAgentOutput('{"difc_mode":"strict"}');
  assertEquals([out.secrecy, out.integrity, out.normalizedPolicy], [[], [], null]);
});

Deno.test("label_agent: every error rule in order", () => {
  agentFails("", "label_agent returned empty response");
  agentFails("{", "failed to unmarshal label_agent response");
  agentFails("[]", "failed to unmarshal label_agent response: expected a JSON object, got array");
  agentFails('{"success":false,"error":"bad scope"}', "label_agent rejected policy: bad scope");
  agentFails('{"ok":false,"difc_mode":"filter"}', "label_agent returned non-success status");
  agentFails('{"success":false,"error":"  "}', "label_agent returned non-success status");
  agentFails('{"error":"boom","difc_mode":"filter"}', "label_agent returned error: boom");
  agentFails(
    '{"agent":{"secrecy":[1]},"difc_mode":"filter"}',
    "failed to decode label_agent response: agent.secrecy",
  );
  agentFails(
    '{"agent":[],"difc_mode":"filter"}',
    "failed to decode label_agent response: agent must be an object",
  );
  agentFails('{"difc_mode":3}', "failed to decode label_agent response: difc_mode must be a string");
  agentFails('{"agent":{}}', "label_agent response missing difc_mode");
  agentFails('{"difc_mode":"  "}', "label_agent response missing difc_mode");
  agentFails(
    '{"difc_mode":"lenient"}',
    "invalid difc_mode from label_agent: unknown enforcement mode: lenient (valid modes: strict, filter, propagate)",
  );
  agentFails('{"difc_mode":"filter","normalized_policy":"x"}', "normalized_policy must be an object");
  // success:true and a blank error are fine
  assertEquals(parseLabelAgentOutput('{"success":true,"error":"","difc_mode":"filter"}').mode, "filter");
});

Deno.test("label_resource: operation default write; exact values only", () => {
  const op = (o: unknown) => parseLabelResourceOutput(J({ resource: {}, operation: o })).operation;
  assertEquals(op("read"), "read");
  assertEquals(op("read-write"), "read-write");
  assertEquals(op("write"), "write");
  assertEquals(op("READ"), "write");
  assertEquals(op(undefined), "write");
  assertEquals(op(1), "write");
});

Deno.test("label_resource: lenient tags (non-strings skipped, not trimmed), description optional", () => {
  const r = parseLabelResourceOutput(
    J({ resource: { secrecy: ["b", 1, " a "], integrity: null }, operation: "read" }),
  );
  assertEquals(r.resource, { description: "", secrecy: [" a ", "b"], integrity: [] });
});

Deno.test("label_resource: errors", () => {
  assertThrows(
    () => parseLabelResourceOutput(""),
    GuardOutputError,
    "failed to unmarshal label_resource WASM response",
  );
  assertThrows(
    () => parseLabelResourceOutput("7"),
    GuardOutputError,
    "failed to unmarshal label_resource WASM response",
  );
  assertThrows(
    () => parseLabelResourceOutput('{"operation":"read"}'),
    GuardOutputError,
    "invalid resource format in guard response",
  );
  assertThrows(
    () => parseLabelResourceOutput('{"resource":[]}'),
    GuardOutputError,
    "invalid resource format in guard response",
  );
});

Deno.test("JSON pointer: escapes and errors", () => {
  assertEquals(parseJsonPointer(""), []);
  assertEquals(parseJsonPointer("/"), []);
  assertEquals(parseJsonPointer("/a~1b/m~0n/0"), ["a/b", "m~n", "0"]);
  assertEquals(parseJsonPointer("/~01"), ["~1"]); // ~0 then 1, not ~1
  assertEquals(parseJsonPointer("items/0"), ["items", "0"]);
  assertThrows(() => parseJsonPointer("/a~2"), GuardOutputError, "invalid JSON pointer");
  assertThrows(() => parseJsonPointer("/a~"), GuardOutputError, "invalid JSON pointer");
});

Deno.test("unwrap: concatenates text blocks, skips image/audio/resource, falls back to raw", () => {
  const r = {
    content: [{ type: "text", text: '{"a":' }, { type: "image", text: "junk" }, { text: "1" }, {
      type: "x",
      text: "}",
    }],
  };
  assertEquals(unwrapMcpResult(r), { value: { a: 1 }, unwrapped: true });
  const notJson = { content: [{ type: "text", text: "hello" }] };
  assertEquals(unwrapMcpResult(notJson), { value: notJson, unwrapped: false });
  assertEquals(unwrapMcpResult([1]), { value: [1], unwrapped: false });
  assertEquals(unwrapMcpResult({ content: "x" }).unwrapped, false);
});

const mcp = (v: unknown) => ({ content: [{ type: "text", text: J(v) }] });
const L = (d: string, s: string[] = [], i: string[] = []) => ({ description: d, secrecy: s, integrity: i });

Deno.test("label_response: empty output and {} mean no labels; empty items too", () => {
  assertEquals(parseLabelResponseOutput("", {}), null);
  assertEquals(parseLabelResponseOutput("{}", {}), null);
  assertEquals(parseLabelResponseOutput('{"items":[]}', {}), null);
  assertEquals(parseLabelResponseOutput('{"items":"x"}', {}), null);
});

Deno.test("label_response: non-object output is an error", () => {
  assertThrows(
    () => parseLabelResponseOutput("null", {}),
    GuardOutputError,
    "failed to unmarshal label_response WASM response",
  );
  assertThrows(
    () => parseLabelResponseOutput("{x", {}),
    GuardOutputError,
    "failed to unmarshal label_response WASM response",
  );
});

Deno.test("label_response: path labels on a root array, defaults for unmatched, later duplicates win", () => {
  const out = parseLabelResponseOutput(
    J({
      labeled_paths: [
        { path: "/0", labels: L("first", ["s0"]) },
        { path: "2", labels: L("old") }, // missing leading slash is tolerated
        { path: "/2", labels: L("third", [], ["i2"]) },
        { path: "/x", labels: L("skipped") }, // not an index: skipped
        { path: "/9", labels: L("out of range") }, // no such item: ignored
      ],
      default_labels: L("default", [], ["none"]),
    }),
    mcp([{ n: 0 }, { n: 1 }, { n: 2 }]),
  );
  assert(out?.format === "path");
  assertEquals(out.items.map((i) => i.labels.description), ["first", "default", "third"]);
  assertEquals(out.items[2].labels.integrity, ["i2"]);
  assertEquals(out.items[1].data, { n: 1 });
  assertEquals(out.location, {
    kind: "array",
    unwrapped: true,
    root: [{ n: 0 }, { n: 1 }, { n: 2 }],
    pointer: [],
  });
});

Deno.test("label_response: items_path into the unwrapped object, with escapes", () => {
  const body = { total_count: 2, "a/b": { items: [{ id: 1 }, { id: 2 }] } };
  const out = parseLabelResponseOutput(
    J({
      labeled_paths: [{ path: "/a~1b/items/1", labels: L("two", ["s"]) }, {
        path: "/other/0",
        labels: L("x"),
      }],
      default_labels: L("d"),
      items_path: "/a~1b/items",
    }),
    mcp(body),
  );
  assert(out?.format === "path" && out.location.kind === "array");
  assertEquals(out.location.pointer, ["a/b", "items"]);
  assertEquals(out.items.map((i) => [i.data, i.labels.description]), [[{ id: 1 }, "d"], [{ id: 2 }, "two"]]);
});

Deno.test("label_response: items_path navigates arrays by index", () => {
  const out = parseLabelResponseOutput(
    J({ labeled_paths: [], default_labels: L("d"), items_path: "/pages/1" }),
    mcp({ pages: [[1], [2, 3]] }),
  );
  assertEquals(out?.items.map((i) => i.data), [2, 3]);
});

Deno.test("label_response: items_path errors fail the call", () => {
  const resp = (ip: string) => J({ labeled_paths: [], default_labels: L("d"), items_path: ip });
  const fails = (ip: string, data: unknown, msg: string) =>
    assertThrows(() => parseLabelResponseOutput(resp(ip), mcp(data)), GuardOutputError, msg);
  fails(
    "/x",
    { items: [] },
    'failed to apply path labels: failed to resolve path labels: path "/x" not found in response',
  );
  fails("/items", { items: { a: 1 } }, 'items_path "/items" does not point to an array');
  fails("/items/a", { items: [[1]] }, 'expected array index at "/items/a", got "a"');
  fails("/items/5", { items: [[1]] }, "array index 5 out of bounds");
  fails("/items/x", { items: 3 }, 'cannot navigate path "/items/x": unexpected type at "x"');
  fails("/a~2", { items: [] }, "invalid JSON pointer");
});

Deno.test("label_response: no items_path and non-array → whole original result is one item", () => {
  const result = mcp({ id: 1 });
  const out = parseLabelResponseOutput(J({ labeled_paths: [], default_labels: L("repo", ["s"]) }), result);
  assert(out?.format === "path");
  assertEquals(out.location, { kind: "whole-result" });
  assertEquals(out.items.length, 1);
  assertEquals(out.items[0].data, result);
  assertEquals(out.items[0].labels.secrecy, ["s"]);
});

Deno.test("label_response: path labels applied to the raw result when its text is not JSON", () => {
  const result = { content: [{ type: "text", text: "plain" }], structuredContent: { rows: [1, 2] } };
  const out = parseLabelResponseOutput(
    J({
      labeled_paths: [{ path: "/structuredContent/rows/0", labels: L("r0") }],
      default_labels: L("d"),
      items_path: "/structuredContent/rows",
    }),
    result,
  );
  assert(out?.format === "path" && out.location.kind === "array");
  assertEquals(out.location.unwrapped, false);
  assertEquals(out.items.map((i) => i.labels.description), ["r0", "d"]);
});

Deno.test("label_response: labeled_paths takes precedence over items", () => {
  const out = parseLabelResponseOutput(
    J({ labeled_paths: null, default_labels: L("d"), items: [{ data: 1, labels: L("legacy") }] }),
    mcp([5]),
  );
  assertEquals(out?.format, "path");
  assertEquals(out?.items[0].data, 5);
});

Deno.test("label_response: legacy items; non-object entries skipped; lenient tags", () => {
  const out = parseLabelResponseOutput(
    J({
      items: [
        { data: { a: 1 }, labels: { description: "one", secrecy: ["s", 2], integrity: ["i"] } },
        "junk",
        { data: null, labels: {} },
      ],
    }),
    {},
  );
  assert(out?.format === "legacy");
  assertEquals(out.items, [
    { data: { a: 1 }, labels: { description: "one", secrecy: ["s"], integrity: ["i"] } },
    { data: null, labels: { description: "", secrecy: [], integrity: [] } },
  ]);
});

Deno.test("label_response: missing labels are errors, not crashes", () => {
  const fails = (out: unknown, result: unknown, msg: string) =>
    assertThrows(() => parseLabelResponseOutput(J(out), result), GuardOutputError, msg);
  fails({ items: [{ data: 1 }] }, {}, "label_response items[0] has no labels");
  fails(
    { labeled_paths: [{ path: "/0" }] },
    mcp([1]),
    'label_response labeled_paths[0] ("/0") has no labels',
  );
  fails(
    { labeled_paths: [{ path: "/0", labels: L("a") }] },
    mcp([1, 2]),
    "label_response item 1 has no labels",
  );
  fails({ labeled_paths: [] }, mcp({ a: 1 }), "labeled the whole result but gave no default_labels");
});

Deno.test("label_response: undecodable path labels", () => {
  const fails = (out: unknown, msg: string) =>
    assertThrows(() => parseLabelResponseOutput(J(out), mcp([1])), GuardOutputError, msg);
  fails({ labeled_paths: {} }, "failed to parse path labels: labeled_paths must be an array");
  fails({ labeled_paths: [], items_path: 1 }, "items_path must be a string");
  fails({ labeled_paths: [{ path: 0, labels: L("a") }] }, "labeled_paths[0].path must be a string");
  fails(
    { labeled_paths: [{ path: "/0", labels: { secrecy: [1] } }] },
    "labeled_paths[0].labels.secrecy must be an array of strings",
  );
  fails(
    { labeled_paths: [], default_labels: { description: 3 } },
    "default_labels.description must be a string",
  );
});

Deno.test("label_resource / legacy items: a tag list that is not an array fails closed (never read as public)", () => {
  assertThrows(
    () =>
      parseLabelResourceOutput('{"resource":{"secrecy":"private:acme","integrity":[]},"operation":"read"}'),
    GuardOutputError,
    "secrecy must be an array of strings, got string",
  );
  assertThrows(
    () => parseLabelResponseOutput('{"items":[{"data":1,"labels":{"secrecy":{"a":1},"integrity":[]}}]}', {}),
    GuardOutputError,
    "secrecy must be an array",
  );
  // Missing or null lists are empty, and non-string elements are skipped, as in the reference.
  const r = parseLabelResourceOutput('{"resource":{"secrecy":null,"integrity":["a",1]},"operation":"read"}');
  assertEquals([r.resource.secrecy, r.resource.integrity], [[], ["a"]]);
});
