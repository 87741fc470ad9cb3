import { assert, assertEquals, assertMatch } from "@std/assert";
import { DISCARD_MAX_BLOCKS, DISCARD_MAX_MS, relaySseReply, SSE_REPLY_WAIT_MS } from "../../src/mcp/relay.ts";
import { Exchange } from "../../src/mcp/exchange.ts";
import type { Upstream } from "../../src/mcp/proxy.ts";

const enc = new TextEncoder();
const UP: Upstream = { id: "u", url: "http://127.0.0.1:9/mcp", headers: {}, tools: ["*"], guarded: false };

/** An upstream SSE body: each step is text to send or a pause in ms; `closed` resolves at its end. */
function upstreamBody(steps: (string | number)[]) {
  let sent = 0;
  let endIt!: () => void;
  const ended = new Promise<void>((r) => endIt = r);
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    type: "bytes",
    async pull(c) {
      while (typeof steps[i] === "number") await new Promise((r) => setTimeout(r, steps[i++] as number));
      if (i < steps.length) {
        c.enqueue(enc.encode(steps[i++] as string));
        sent++;
      } else {
        c.close();
        endIt();
      }
    },
  });
  return { body, ended, sent: () => sent };
}

const event = (m: unknown) => `event: message\ndata: ${JSON.stringify(m)}\n\n`;

function exchangeFor(ids: string[]) {
  const ex = new Exchange(UP);
  ids.forEach((id, i) => ex.expect(id, { agentId: i + 1, method: "ping" }));
  let done = 0;
  const ctx = { exchange: ex, log: () => {}, answerUpstream: () => {} };
  const opts = {
    prefix: [],
    failure: () => undefined,
    done: () => void done++,
    closed: new AbortController().signal,
  };
  return { ex, ctx, opts, doneCount: () => done };
}

Deno.test("relaySseReply: a reply whose first event answers everything is returned whole; the rest is read and dropped", async () => {
  const { ctx, opts, doneCount } = exchangeFor(["g-1"]);
  const up = upstreamBody([
    event({ jsonrpc: "2.0", id: "g-1", result: {} }),
    event({ jsonrpc: "2.0", method: "notifications/message", params: { data: "after the answer" } }),
  ]);
  const body = await relaySseReply(up.body, ctx, opts);
  assert(typeof body === "string");
  assertEquals(body, event({ jsonrpc: "2.0", id: 1, result: {} }));
  await up.ended;
  await new Promise((r) => setTimeout(r, 0));
  assertEquals(doneCount(), 1);
});

Deno.test("relaySseReply: an upstream that keeps sending after the answer is cancelled, not read for ever", async () => {
  const { ctx, opts, doneCount } = exchangeFor(["g-1"]);
  let pulls = 0;
  let cancelled = false;
  const note = event({ jsonrpc: "2.0", method: "notifications/message", params: { data: "more" } });
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(enc.encode(event({ jsonrpc: "2.0", id: "g-1", result: {} })));
    },
    pull(c) {
      pulls++;
      c.enqueue(enc.encode(note));
    },
    cancel() {
      cancelled = true;
    },
  });
  const out = await relaySseReply(body, ctx, opts);
  assertEquals(out, event({ jsonrpc: "2.0", id: 1, result: {} }));
  for (let i = 0; i < 100 && !cancelled; i++) await new Promise((r) => setTimeout(r, 20));
  assert(cancelled, "the endless rest is cancelled");
  assert(pulls <= DISCARD_MAX_BLOCKS + 2, `${pulls} reads after the answer`);
  const after = pulls;
  await new Promise((r) => setTimeout(r, 50));
  assertEquals(pulls, after, "nothing is read once cancelled");
  assertEquals(doneCount(), 1);
});

Deno.test("relaySseReply: an upstream that keeps its stream open after the answer is cancelled after a while", async () => {
  const { ctx, opts, doneCount } = exchangeFor(["g-1"]);
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(enc.encode(event({ jsonrpc: "2.0", id: "g-1", result: {} })));
    },
    pull: () => new Promise(() => {}), // never sends again, never ends
    cancel() {
      cancelled = true;
    },
  });
  const out = await relaySseReply(body, ctx, opts);
  assertEquals(out, event({ jsonrpc: "2.0", id: 1, result: {} }));
  for (let i = 0; i < 100 && !cancelled; i++) await new Promise((r) => setTimeout(r, DISCARD_MAX_MS / 40));
  assert(cancelled, "cancelled after DISCARD_MAX_MS");
  assertEquals(doneCount(), 1);
});

Deno.test("relaySseReply: progress first streams each block as it comes and ends once every request is answered", async () => {
  const { ctx, opts, doneCount } = exchangeFor(["g-1", "g-2"]);
  const up = upstreamBody([
    event({ jsonrpc: "2.0", method: "notifications/progress", params: { progressToken: "t", progress: 1 } }),
    20,
    event({ jsonrpc: "2.0", id: "g-2", result: { n: 2 } }),
    event({ jsonrpc: "2.0", id: "g-1", result: { n: 1 } }),
    event({ jsonrpc: "2.0", method: "notifications/message", params: { data: "after the answers" } }),
  ]);
  const body = await relaySseReply(up.body, ctx, opts);
  assert(body instanceof ReadableStream);
  const text = await new Response(body).text();
  assertMatch(text, /notifications\/progress/);
  assertMatch(text, /"id":2,"result":\{"n":2\}/);
  assertMatch(text, /"id":1,"result":\{"n":1\}/);
  assertEquals(text.includes("after the answers"), false);
  await up.ended;
  await new Promise((r) => setTimeout(r, 0));
  assertEquals(doneCount(), 1);
});

Deno.test("relaySseReply: an upstream that ends without answering gives each request an error", async () => {
  const { ctx, opts, doneCount } = exchangeFor(["g-1"]);
  const up = upstreamBody([": just a comment\n\n"]);
  const body = await relaySseReply(up.body, ctx, opts);
  const text = typeof body === "string" ? body : await new Response(body).text();
  assertMatch(text, /"id":1,"error":\{"code":-32000,"message":"upstream \\"u\\" closed the stream/);
  assertEquals(doneCount(), 1);
});

Deno.test("relaySseReply: a slow call is streamed after the wait (headers do not wait for the answer)", async () => {
  const { ctx, opts } = exchangeFor(["g-1"]);
  const up = upstreamBody([SSE_REPLY_WAIT_MS + 300, event({ jsonrpc: "2.0", id: "g-1", result: {} })]);
  const body = await relaySseReply(up.body, ctx, opts);
  assert(body instanceof ReadableStream);
  assertEquals(up.sent(), 0, "the reply began before the upstream sent anything");
  assertEquals(await new Response(body).text(), event({ jsonrpc: "2.0", id: 1, result: {} }));
});
