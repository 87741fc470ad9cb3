import { assertEquals, assertRejects } from "@std/assert";
import { BodyTooLargeError, chunkReader, readAgentBody, readBounded } from "../../src/mcp/http.ts";
import type { ParsedBody } from "../../src/mcp/jsonrpc.ts";

const enc = new TextEncoder();

/** A byte stream that hands out `parts` one per pull, as a runtime's body does. */
function byteStream(parts: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    type: "bytes",
    pull(c) {
      if (i < parts.length) c.enqueue(parts[i++].slice());
      else c.close();
    },
  });
}

Deno.test("chunkReader: byte streams, fetch bodies and other streams give the body's bytes in order", async () => {
  const body = new Uint8Array(200_000).map((_, i) => (i * 7) % 251);
  const parts = [body.subarray(0, 5), body.subarray(5, 70_000), body.subarray(70_000)];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, () => new Response(body));
  try {
    const sources = [
      () => byteStream(parts),
      () => ReadableStream.from(parts.map((p) => p.slice())),
      async () => (await fetch(`http://127.0.0.1:${server.addr.port}/`)).body!,
      () => new Response(body).body!,
    ];
    for (const source of sources) {
      const r = chunkReader(await source());
      const got = new Uint8Array(body.byteLength);
      let n = 0;
      // Each chunk is copied before the next read: its memory may be reused.
      for (let c = await r.read(); c !== null; c = await r.read()) {
        got.set(c, n);
        n += c.byteLength;
      }
      assertEquals(n, body.byteLength);
      assertEquals(got, body);
      assertEquals(await r.read(), null);
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("readBounded: UTF-8 split across chunks, the limit counted in bytes, empty and absent bodies", async () => {
  const text = "é€😀".repeat(3000);
  const bytes = enc.encode(text);
  const split = [bytes.subarray(0, 1), bytes.subarray(1, 9_001), bytes.subarray(9_001)];
  assertEquals(await readBounded(byteStream(split), bytes.byteLength), text);
  assertEquals(await readBounded(ReadableStream.from(split), bytes.byteLength), text);
  await assertRejects(() => readBounded(byteStream(split), bytes.byteLength - 1), BodyTooLargeError);
  await assertRejects(() => readBounded(ReadableStream.from(split), bytes.byteLength - 1), BodyTooLargeError);
  assertEquals(await readBounded(byteStream([]), 10), "");
  assertEquals(await readBounded(null, 10), "");
});

Deno.test("readBounded: a body over the limit is cancelled", async () => {
  let cancelled = false;
  let pulls = 0;
  const endless = new ReadableStream<Uint8Array>({
    type: "bytes",
    pull(c) {
      pulls++;
      c.enqueue(new Uint8Array(1024));
    },
    cancel() {
      cancelled = true;
    },
  });
  await assertRejects(() => readBounded(endless, 10_000), BodyTooLargeError);
  assertEquals(cancelled, true);
  assertEquals(pulls < 20, true, `read ${pulls} chunks past a 10,000 byte limit`);
});

Deno.test("readAgentBody: the limit holds with a Content-Length, a false one, and none (chunked)", async () => {
  const msg = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping", pad: "x".repeat(500) });
  const size = enc.encode(msg).byteLength;
  const post = (body: BodyInit, headers: Record<string, string> = {}) =>
    new Request("http://127.0.0.1/mcp", { method: "POST", body, headers });
  const status = (r: ParsedBody | Response) => r instanceof Response ? r.status : 200;
  // Framed by Content-Length, at and over the limit.
  assertEquals(status(await readAgentBody(post(msg, { "content-length": String(size) }), size)), 200);
  assertEquals(
    status(await readAgentBody(post(msg, { "content-length": String(size) }), size - 1)),
    413,
  );
  // A Content-Length that understates the body (only code in the same process can build one): still 413.
  assertEquals(status(await readAgentBody(post(msg, { "content-length": "10" }), size - 1)), 413);
  // No length (a stream): counted while read.
  const stream = () => ReadableStream.from([enc.encode(msg.slice(0, 100)), enc.encode(msg.slice(100))]);
  assertEquals(status(await readAgentBody(post(stream()), size)), 200);
  assertEquals(status(await readAgentBody(post(stream()), size - 1)), 413);
  // Through a real server: fetch sends the length, the body arrives whole and parses.
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const r = await readAgentBody(req, size);
    return r instanceof Response ? r : Response.json(r.messages[0]);
  });
  try {
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/`, { method: "POST", body: msg });
    assertEquals((await res.json()).pad, "x".repeat(500));
    const big = await fetch(`http://127.0.0.1:${server.addr.port}/`, { method: "POST", body: msg + " " });
    assertEquals(big.status, 413);
    await big.body?.cancel();
  } finally {
    await server.shutdown();
  }
});
