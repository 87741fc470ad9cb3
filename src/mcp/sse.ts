/**
 * Incremental Server-Sent Events parsing and serialization over `ReadableStream<Uint8Array>`.
 *
 * A proxy must forward everything a server sends, not only dispatched events, so the unit here is
 * the *block*: the lines up to a blank line, including comments (`: keepalive`), `retry:` and `id:`
 * lines, whether or not the block carries `data:`. Parsing follows the WHATWG `text/event-stream`
 * rules (LF, CR or CRLF line ends, a single optional space after the colon, multi-line data joined
 * with `\n`, ids containing NUL ignored, retry only when all digits). Text after the last blank
 * line at end of stream is an incomplete block and is discarded, as the standard says.
 *
 * @module
 */
import { chunkReader } from "./http.ts";

/** One SSE block. `data === undefined` means the block had no `data:` line (not dispatched). */
export interface SseBlock {
  /** Comment texts, without the leading colon (a leading space is kept as sent). */
  comments?: string[];
  event?: string;
  /** Event id; `""` resets the last event id. */
  id?: string;
  retry?: number;
  /** Data lines joined with `\n`. */
  data?: string;
}

/** Largest line the parser will hold while waiting for its end: bounds memory on a hostile stream. */
export const MAX_SSE_LINE_BYTES = 16 * 1024 * 1024;

/** A line longer than {@link MAX_SSE_LINE_BYTES}. */
export class SseLineTooLongError extends Error {
  constructor(limit: number) {
    super(`SSE line exceeds ${limit} characters`);
    this.name = "SseLineTooLongError";
  }
}

/**
 * Push parser: feed text, collect completed blocks.
 *
 * @example
 * ```ts
 * const p = new SseParser();
 * const blocks = p.push("data: a\n\n: ping\n\n"); // [{data:"a"}, {comments:[" ping"]}]
 * ```
 */
export class SseParser {
  #buf = "";
  #pendingCr = false;
  #block: SseBlock = {};
  #has = false;
  #dataLines: string[] | undefined;
  readonly #maxLine: number;

  constructor(maxLineBytes = MAX_SSE_LINE_BYTES) {
    this.#maxLine = maxLineBytes;
  }

  /** Feeds a chunk of decoded text; returns the blocks completed by it. */
  push(text: string): SseBlock[] {
    const out: SseBlock[] = [];
    let s = text;
    if (this.#pendingCr) {
      // A CR ended the previous chunk; a LF starting this one belongs to the same line end.
      this.#pendingCr = false;
      if (s.startsWith("\n")) s = s.slice(1);
    }
    // Line ends are found with indexOf (native scans), not a loop over every character: a
    // tools/call result can be megabytes on one `data:` line.
    let start = 0;
    let lf = s.indexOf("\n");
    let cr = s.indexOf("\r");
    while (lf >= 0 || cr >= 0) {
      let i = cr < 0 || (lf >= 0 && lf < cr) ? lf : cr;
      const line = this.#buf + s.slice(start, i);
      this.#buf = "";
      if (i === cr) {
        if (i + 1 < s.length) {
          if (s.charCodeAt(i + 1) === 10) i++;
        } else {
          this.#pendingCr = true;
        }
      }
      start = i + 1;
      const done = this.#line(line);
      if (done) out.push(done);
      if (lf >= 0 && lf < start) lf = s.indexOf("\n", start);
      if (cr >= 0 && cr < start) cr = s.indexOf("\r", start);
    }
    this.#buf += s.slice(start);
    if (this.#buf.length > this.#maxLine) throw new SseLineTooLongError(this.#maxLine);
    return out;
  }

  /** Ends the stream: an incomplete trailing block is discarded (WHATWG behaviour). */
  end(): void {
    this.#buf = "";
    this.#block = {};
    this.#has = false;
    this.#dataLines = undefined;
  }

  #line(line: string): SseBlock | undefined {
    if (line === "") {
      if (!this.#has) return undefined;
      const b = this.#block;
      if (this.#dataLines) b.data = this.#dataLines.join("\n");
      this.#block = {};
      this.#has = false;
      this.#dataLines = undefined;
      return b;
    }
    this.#has = true;
    if (line.startsWith(":")) {
      (this.#block.comments ??= []).push(line.slice(1));
      return undefined;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        (this.#dataLines ??= []).push(value);
        break;
      case "event":
        this.#block.event = value;
        break;
      case "id":
        if (!value.includes("\0")) this.#block.id = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.#block.retry = Number(value);
        break;
      default:
        // Unknown fields are ignored by the standard; nothing to forward.
        break;
    }
    return undefined;
  }
}

/**
 * Serializes a block to `text/event-stream` text, ending with the blank line. Multi-line data and
 * comments are split into one line each.
 *
 * @example
 * ```ts
 * serializeSseBlock({ event: "message", id: "1", data: '{"a":1}' });
 * // "event: message\nid: 1\ndata: {\"a\":1}\n\n"
 * ```
 */
export function serializeSseBlock(b: SseBlock): string {
  let s = "";
  for (const c of b.comments ?? []) for (const l of c.split(/\r\n|\r|\n/)) s += `:${l}\n`;
  if (b.event !== undefined) s += `event: ${oneLine(b.event)}\n`;
  if (b.id !== undefined) s += `id: ${oneLine(b.id)}\n`;
  if (b.retry !== undefined) s += `retry: ${Math.max(0, Math.trunc(b.retry))}\n`;
  if (b.data !== undefined) { for (const l of b.data.split(/\r\n|\r|\n/)) s += `data: ${l}\n`; }
  return s === "" ? "" : s + "\n";
}

function oneLine(v: string): string {
  return v.replace(/[\r\n]/g, " ");
}

/**
 * Turns a byte stream into a stream of blocks, decoding UTF-8 incrementally. Cancelling the result
 * cancels the source.
 *
 * @example
 * ```ts
 * for await (const block of parseSseStream(response.body!)) console.log(block.data);
 * ```
 */
export function parseSseStream(body: ReadableStream<Uint8Array>): ReadableStream<SseBlock> {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  return body.pipeThrough(
    new TransformStream<Uint8Array, SseBlock>({
      transform(chunk, ctl) {
        for (const b of parser.push(decoder.decode(chunk, { stream: true }))) ctl.enqueue(b);
      },
      flush(ctl) {
        for (const b of parser.push(decoder.decode())) ctl.enqueue(b);
        parser.end();
      },
    }),
  );
}

/** A pull reader of SSE blocks: {@link readSseBlocks}. */
export interface SseBlockReader {
  /** The next block, or `done` at the end of the body; rejects when the body fails. */
  read(): Promise<ReadableStreamReadResult<SseBlock>>;
  /** Cancels the body. */
  cancel(reason?: unknown): Promise<void>;
}

/**
 * The blocks of an SSE body, parsed as they are read: {@link parseSseStream} without its extra
 * stream stage (no pipe, no transform, no per-block queueing), for a single consumer that pulls.
 * Same blocks, same errors (a line over the limit rejects `read`).
 *
 * @example
 * ```ts
 * const blocks = readSseBlocks(response.body!);
 * for (let r = await blocks.read(); !r.done; r = await blocks.read()) console.log(r.value.data);
 * ```
 */
export function readSseBlocks(body: ReadableStream<Uint8Array>): SseBlockReader {
  const reader = chunkReader(body);
  const parser = new SseParser();
  const decoder = new TextDecoder();
  let queue: SseBlock[] = [];
  let next = 0;
  let ended = false;
  return {
    async read() {
      for (;;) {
        if (next < queue.length) return { done: false, value: queue[next++] };
        if (ended) return { done: true, value: undefined };
        const chunk = await reader.read();
        next = 0;
        if (chunk === null) {
          ended = true;
          queue = parser.push(decoder.decode());
          parser.end();
        } else {
          queue = parser.push(decoder.decode(chunk, { stream: true }));
        }
      }
    },
    cancel: (reason) => reader.cancel(reason),
  };
}

/**
 * Turns a stream of blocks into `text/event-stream` bytes.
 *
 * @example
 * ```ts
 * new Response(serializeSseStream(blocks), { headers: { "content-type": "text/event-stream" } });
 * ```
 */
export function serializeSseStream(blocks: ReadableStream<SseBlock>): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return blocks.pipeThrough(
    new TransformStream<SseBlock, Uint8Array>({
      transform(b, ctl) {
        const s = serializeSseBlock(b);
        if (s !== "") ctl.enqueue(enc.encode(s));
      },
    }),
  );
}
