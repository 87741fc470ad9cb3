/**
 * A stand-alone upstream for the "killed mid-stream" fault: a stateless MCP server that answers every
 * `tools/call` with an SSE stream carrying one progress notification (for the request's progress token)
 * and then nothing, forever. The
 * test kills this process (SIGKILL) while the stream is open. Prints `PORT <n>` when listening.
 *
 * Run: `deno run --allow-net test/stress/sse_upstream_proc.ts`
 *
 * @module
 */
const enc = new TextEncoder();

Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(`PORT ${port}`),
}, async (req) => {
  if (req.method !== "POST") return new Response(null, { status: 405 });
  const msg = await req.json() as {
    id?: unknown;
    method?: string;
    params?: { _meta?: { progressToken?: unknown } };
  };
  if (msg.id === undefined) return new Response(null, { status: 202 });
  if (msg.method !== "tools/call") {
    return Response.json({ jsonrpc: "2.0", id: msg.id, result: {} });
  }
  const event = JSON.stringify({
    jsonrpc: "2.0",
    method: "notifications/progress",
    params: { progressToken: msg.params?._meta?.progressToken ?? "p", progress: 1 },
  });
  const body = new ReadableStream<Uint8Array>({
    start(ctl) {
      ctl.enqueue(enc.encode(`event: message\ndata: ${event}\n\n`));
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
});
