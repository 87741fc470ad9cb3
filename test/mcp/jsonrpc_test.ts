import { assertEquals, assertThrows } from "@std/assert";
import {
  ErrorCode,
  errorResponse,
  isNotification,
  isRequest,
  isResponse,
  JsonRpcParseError,
  MAX_BATCH_LENGTH,
  parseBody,
  toErrorObject,
} from "../../src/mcp/jsonrpc.ts";

function parseError(text: string): JsonRpcParseError {
  try {
    parseBody(text);
  } catch (e) {
    if (e instanceof JsonRpcParseError) return e;
    throw e;
  }
  throw new Error(`no error for ${text}`);
}

Deno.test("jsonrpc: classifies requests, notifications and responses", () => {
  const { batch, messages } = parseBody(
    '[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},' +
      '{"jsonrpc":"2.0","id":"a","result":{}},{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}}]',
  );
  assertEquals(batch, true);
  assertEquals(messages.map((m) => [isRequest(m), isNotification(m), isResponse(m)]), [
    [true, false, false],
    [false, true, false],
    [false, false, true],
    [false, false, true],
  ]);
  assertEquals(parseBody('{"jsonrpc":"2.0","id":2,"method":"tools/list"}').batch, false);
});

Deno.test("jsonrpc: invalid JSON is -32700 naming the JSON problem", () => {
  const e = parseError("{not json");
  assertEquals(e.code, ErrorCode.ParseError);
  assertEquals(e.message.startsWith("Parse error: body is not valid JSON"), true);
});

Deno.test("jsonrpc: invalid messages are -32600 naming the field, keeping the id", () => {
  const cases: [string, string][] = [
    ["42", "message is not a JSON object"],
    ['{"id":1,"method":"ping"}', '"jsonrpc" must be "2.0"'],
    ['{"jsonrpc":"2.0","id":{},"method":"ping"}', '"id" must be a string or a number'],
    ['{"jsonrpc":"2.0","id":1,"method":""}', '"method" must be a non-empty string'],
    ['{"jsonrpc":"2.0","id":1,"method":"x","params":3}', '"params" must be an object'],
    ['{"jsonrpc":"2.0"}', 'has neither "method" nor "id"'],
    ['{"jsonrpc":"2.0","id":1}', 'exactly one of "result" and "error"'],
    ['{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}', '"error" must be an object'],
    ["[]", "empty batch"],
    ['[{"jsonrpc":"2.0","id":1,"method":"ping"},7]', "batch element 1 is not a JSON object"],
  ];
  for (const [text, want] of cases) {
    const e = parseError(text);
    assertEquals(e.code, ErrorCode.InvalidRequest, text);
    assertEquals(e.message.includes(want), true, `${text}: ${e.message}`);
  }
  assertEquals(parseError('{"jsonrpc":"1.0","id":9,"method":"ping"}').id, 9);
});

Deno.test("jsonrpc: batches above the limit are rejected", () => {
  const big = JSON.stringify(
    Array.from({ length: MAX_BATCH_LENGTH + 1 }, (_, i) => ({ jsonrpc: "2.0", id: i, method: "ping" })),
  );
  assertThrows(() => parseBody(big), JsonRpcParseError, `exceeds the limit of ${MAX_BATCH_LENGTH}`);
});

Deno.test("jsonrpc: error helpers keep code, message and data", () => {
  assertEquals(errorResponse(1, -32602, "bad", { f: 1 }), {
    jsonrpc: "2.0",
    id: 1,
    error: { code: -32602, message: "bad", data: { f: 1 } },
  });
  const e = Object.assign(new Error("denied"), { code: -32005, data: "why" });
  assertEquals(toErrorObject(e), { code: -32005, message: "denied", data: "why" });
  assertEquals(toErrorObject(new Error("boom")), { code: ErrorCode.InternalError, message: "boom" });
  assertEquals(toErrorObject("str"), { code: ErrorCode.InternalError, message: "str" });
});
