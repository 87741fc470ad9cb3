import { assertEquals, assertThrows } from "@std/assert";
import fc from "fast-check";
import {
  parseSseStream,
  serializeSseBlock,
  serializeSseStream,
  type SseBlock,
  SseLineTooLongError,
  SseParser,
} from "../../src/mcp/sse.ts";

function streamOf(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return ReadableStream.from(chunks.map((c) => typeof c === "string" ? enc.encode(c) : c));
}

async function collect(chunks: (string | Uint8Array)[]): Promise<SseBlock[]> {
  return await Array.fromAsync(parseSseStream(streamOf(chunks)));
}

Deno.test("sse: events, comments, retry and id lines are all kept as blocks", async () => {
  const blocks = await collect([
    ': keepalive\n\nid: 7\nretry: 3000\ndata:\n\nevent: message\nid: 8\ndata: {"a":1}\n\n',
  ]);
  assertEquals(blocks, [
    { comments: [" keepalive"] },
    { id: "7", retry: 3000, data: "" },
    { event: "message", id: "8", data: '{"a":1}' },
  ]);
});

Deno.test("sse: any chunk boundary gives the same blocks, including inside a UTF-8 character", async () => {
  const text =
    "event: message\r\ndata: h\u00e9llo \u{1F600}\r\ndata: second\r\n\r\n: c\r\r\nid: x\ndata: y\n\n";
  const bytes = new TextEncoder().encode(text);
  const whole = await collect([bytes]);
  assertEquals(whole, [
    { event: "message", data: "h\u00e9llo \u{1F600}\nsecond" },
    { comments: [" c"] },
    { id: "x", data: "y" },
  ]);
  for (let cut = 1; cut < bytes.length; cut++) {
    assertEquals(await collect([bytes.slice(0, cut), bytes.slice(cut)]), whole, `cut at ${cut}`);
  }
  assertEquals(await collect(Array.from(bytes, (b) => new Uint8Array([b]))), whole);
});

Deno.test("sse: CR, LF and CRLF line ends; field without colon; one leading space stripped", () => {
  const p = new SseParser();
  const out = [
    ...p.push("data\rdata:  two spaces\r\n"),
    ...p.push("\r"),
    ...p.push("\ndata: z\n\n"),
  ];
  assertEquals(out, [{ data: "\n two spaces" }, { data: "z" }]);
});

Deno.test("sse: ids with NUL and non-numeric retry are ignored; unknown fields dropped", () => {
  const p = new SseParser();
  assertEquals(p.push("id: a\0b\nretry: 1x\nfoo: bar\ndata: d\n\n"), [{ data: "d" }]);
});

Deno.test("sse: an unterminated block at end of stream is discarded", async () => {
  assertEquals(await collect(["data: complete\n\ndata: partial"]), [{ data: "complete" }]);
});

Deno.test("sse: serializer splits multi-line data and comments, round-trips through the parser", async () => {
  const blocks: SseBlock[] = [
    { comments: [" keepalive"] },
    { event: "message", id: "1", retry: 500, data: "line1\nline2" },
    { id: "", data: "" },
  ];
  const text = blocks.map(serializeSseBlock).join("");
  assertEquals(
    text,
    ": keepalive\n\nevent: message\nid: 1\nretry: 500\ndata: line1\ndata: line2\n\nid: \ndata: \n\n",
  );
  const bytes = serializeSseStream(ReadableStream.from(blocks));
  assertEquals(await Array.fromAsync(parseSseStream(bytes)), blocks);
  assertEquals(serializeSseBlock({}), "");
});

Deno.test("sse: a line over the limit is rejected by name", () => {
  const p = new SseParser(10);
  assertThrows(() => p.push("data: 0123456789"), SseLineTooLongError, "SSE line exceeds 10");
});

Deno.test("sse: random CR/LF/CRLF text in random chunks parses as a line-by-line reading does", () => {
  // The reference: split into lines by hand (CRLF, CR or LF), then feed the parser one line at a time.
  const byLines = (text: string): SseBlock[] => {
    const p = new SseParser();
    const out: SseBlock[] = [];
    for (const m of text.matchAll(/([^\r\n]*)(\r\n|\r|\n)/g)) out.push(...p.push(m[1] + "\n"));
    return out;
  };
  fc.assert(fc.property(
    fc.array(fc.constantFrom("data: a", "data:", "event: e", ": c", "id: 1", "x", "\r", "\n", "\r\n", " "), {
      maxLength: 40,
    }),
    fc.array(fc.nat(), { maxLength: 5 }),
    (parts, cuts) => {
      const text = parts.join("");
      const at = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
      const p = new SseParser();
      const got: SseBlock[] = [];
      let from = 0;
      for (const c of [...at, text.length]) {
        got.push(...p.push(text.slice(from, c)));
        from = c;
      }
      assertEquals(got, byLines(text));
    },
  ));
});
