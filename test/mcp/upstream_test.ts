/**
 * The gateway's own upstream requests (`src/mcp/upstream.ts`): an SSE reply is read up to its answer,
 * and the rest of the stream is read within a bound and dropped, so the HTTP connection of an
 * upstream that ends its stream stays reusable (every `call_backend` used to open a new one), and an
 * upstream that keeps the stream open never holds the caller.
 */
import { assert, assertEquals } from "@std/assert";
import { createUpstreamClient } from "../../src/mcp/upstream.ts";
import type { Upstream } from "../../src/mcp/proxy.ts";

const MARKER = "MARKER-after-the-answer";

/** One `get_repo` call through the gateway's upstream client. */
function call(client: ReturnType<typeof createUpstreamClient>, up: Upstream, id: number) {
  return client.rpc(
    up,
    {},
    { jsonrpc: "2.0", id, method: "tools/call", params: { name: "get_repo" } },
    new AbortController().signal,
  );
}

/** A loopback upstream answering every POST over SSE; `endless` keeps each stream open after it. */
function sseUpstream(endless: boolean) {
  const ports: number[] = [];
  let cancelled = 0;
  const open = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req, info) => {
    ports.push((info.remoteAddr as Deno.NetAddr).port);
    const msg = await req.json();
    const answer = `event: message\ndata: ${
      JSON.stringify({ jsonrpc: "2.0", id: msg.id, result: { ok: 1 } })
    }\n\n`;
    const before = cancelled;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode(answer));
        if (endless) {
          // What follows the answer is never the answer: the marker must not come out.
          c.enqueue(
            new TextEncoder().encode(`event: message\ndata: ${JSON.stringify({ id: msg.id, MARKER })}\n\n`),
          );
          open.add(c);
        } // As an SDK server does: the end comes just after the answer (unless the reader cancelled).
        else setTimeout(() => cancelled === before && c.close(), 5);
      },
      cancel() {
        cancelled++;
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  const up: Upstream = {
    id: "u",
    url: `http://127.0.0.1:${server.addr.port}/mcp`,
    headers: {},
    tools: ["*"],
  };
  return {
    up,
    ports,
    cancelled: () => cancelled,
    async close() {
      for (const c of open) {
        try {
          c.close();
        } catch {
          // already cancelled by the client
        }
      }
      await server.shutdown();
    },
  };
}

Deno.test("upstream rpc: an SSE answer leaves the connection reusable; the next calls use the same one", async () => {
  const s = sseUpstream(false);
  const client = createUpstreamClient(fetch);
  try {
    for (let i = 1; i <= 4; i++) {
      const { response } = await call(client, s.up, i);
      assertEquals(response, { jsonrpc: "2.0", id: i, result: { ok: 1 } });
      await new Promise((r) => setTimeout(r, 20)); // the rest of the stream is read in the background
    }
    assertEquals(s.ports.length, 4);
    assertEquals(new Set(s.ports).size, 1, `one connection for four calls: ports ${s.ports}`);
    assertEquals(s.cancelled(), 0, "every stream was read to its end");
  } finally {
    await s.close();
  }
});

Deno.test("upstream rpc: an upstream that keeps its stream open after the answer does not hold the call", async () => {
  const s = sseUpstream(true);
  const client = createUpstreamClient(fetch);
  try {
    const t0 = performance.now();
    const { response } = await call(client, s.up, 7);
    assertEquals(response, { jsonrpc: "2.0", id: 7, result: { ok: 1 } });
    assert(!JSON.stringify(response).includes(MARKER));
    // A hang check (seconds), not a timing target: the answer does not wait for the stream's end.
    assert(performance.now() - t0 < 1500, "answered before the discard bound");
  } finally {
    await s.close();
  }
});
