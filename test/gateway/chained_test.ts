/**
 * A gateway in front of another: the front gateway's guard labels the back gateway's filtered result
 * (the JSON block plus a `[Filtered]` notice block) and releases it, instead of failing closed on
 * `path "/items" not found`. Also the unwrapping rule itself.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { unwrapMcpResult } from "../../src/difc/parse.ts";
import { DEMO_GUARD_URL, DEMO_POLICY } from "../../src/main.ts";
import { API_KEY, connectAgent, startDemo, startTestGateway, texts } from "./harness.ts";

Deno.test("chained gateways: the front gateway filters reads of the back gateway's filtered results", async () => {
  await using demo = await startDemo();
  const guarded = (url: string, headers?: Record<string, string>) => ({
    mcpServers: { demo: { type: "http", url, headers, guard: "demo", "guard-policies": DEMO_POLICY } },
    guards: { demo: { type: "wasm", path: DEMO_GUARD_URL.href } },
  });
  await using back = await startTestGateway(guarded(demo.url));
  await using front = await startTestGateway(
    guarded(back.url("demo"), { authorization: `Bearer ${API_KEY}`, "x-agent-id": "front-gateway" }),
  );
  const client = await connectAgent(front.url("demo"), { agentId: "chained-agent" });
  try {
    const res = await client.callTool({ name: "list_issues", arguments: { repo: "acme/web" } });
    assert(!res.isError, JSON.stringify(res));
    const [json, notice] = texts(res);
    const numbers = JSON.parse(json).items.map((i: { number: number }) => i.number);
    assertEquals(numbers, [1, 3], "issue #2 was filtered by the back gateway and stays out");
    assertStringIncludes(notice, "[Filtered] 1 item(s) in this response were removed");
    assert(!JSON.stringify(res).includes("not found in response"));
  } finally {
    await client.close();
  }
});

Deno.test("unwrapMcpResult: trailing [Filtered] notice blocks are ignored only when the whole text is not JSON", () => {
  const json = JSON.stringify({ items: [1] });
  assertEquals(
    unwrapMcpResult({
      content: [{ type: "text", text: json }, { type: "text", text: "[Filtered] 1 item(s) ..." }],
    }),
    { value: { items: [1] }, unwrapped: true },
  );
  // Concatenation first (the reference's rule): split JSON still parses as one value.
  assertEquals(
    unwrapMcpResult({ content: [{ type: "text", text: "[1," }, { type: "text", text: "2]" }] }).value,
    [
      1,
      2,
    ],
  );
  // Only notices at the end are dropped; other trailing text still makes the result raw.
  const other = { content: [{ type: "text", text: json }, { type: "text", text: "trailing prose" }] };
  assertEquals(unwrapMcpResult(other), { value: other, unwrapped: false });
  const noticeOnly = { content: [{ type: "text", text: "[Filtered] x" }] };
  assertEquals(unwrapMcpResult(noticeOnly), { value: noticeOnly, unwrapped: false });
});
