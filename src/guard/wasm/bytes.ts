/**
 * Byte-level reading and writing of the WebAssembly binary format: LEB128 integers, names, vectors.
 *
 * The reader is bounds-checked: running past the end (or past a section/body end the caller sets)
 * throws `GuardError("abi")` naming the byte offset, so truncated or malformed input never yields a
 * broken output module.
 *
 * @module
 */

import { GuardError } from "../limits.ts";

/** An unsigned 32-bit LEB128 takes at most ceil(32 / 7) bytes. */
const MAX_U32_LEB_BYTES = 5;
/** Any LEB128 the format uses (u64 / s64 / s33) takes at most ceil(64 / 7) bytes. */
const MAX_LEB_BYTES = 10;

/** Throws the preparer's malformed-input error, naming the byte offset. */
export function malformed(what: string, offset: number): never {
  throw new GuardError("abi", `malformed WebAssembly module: ${what} at byte offset ${offset}`);
}

/** Sequential, bounds-checked reader over a module's bytes. */
export class Reader {
  readonly buf: Uint8Array;
  pos: number;
  /** Reads must stay below this offset (a section or body end). */
  end: number;

  constructor(buf: Uint8Array, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** True when the reader has reached `end`. */
  get done(): boolean {
    return this.pos >= this.end;
  }

  /** One byte. */
  u8(): number {
    if (this.pos >= this.end) malformed("unexpected end of data", this.pos);
    return this.buf[this.pos++];
  }

  /** Unsigned LEB128, at most 32 bits. */
  u32(): number {
    const start = this.pos;
    let result = 0;
    let shift = 0;
    for (let i = 0; i < MAX_U32_LEB_BYTES; i++) {
      if (this.pos >= this.end) malformed("truncated integer", start);
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) {
        if (result > 0xffffffff) malformed("integer too large", start);
        return result;
      }
      shift += 7;
    }
    return malformed("integer representation too long", start);
  }

  /** Skips any LEB128 (signed or unsigned, up to 64 bits) without decoding it. */
  skipLeb(): void {
    const start = this.pos;
    for (let i = 0; i < MAX_LEB_BYTES; i++) {
      if (this.pos >= this.end) malformed("truncated integer", start);
      if ((this.buf[this.pos++] & 0x80) === 0) return;
    }
    malformed("integer representation too long", start);
  }

  /** Skips `n` raw bytes. */
  skip(n: number): void {
    if (this.pos + n > this.end) malformed(`expected ${n} more bytes`, this.pos);
    this.pos += n;
  }

  /** `n` raw bytes (a view, not a copy). */
  bytes(n: number): Uint8Array {
    const start = this.pos;
    this.skip(n);
    return this.buf.subarray(start, start + n);
  }

  /** A length-prefixed UTF-8 name. */
  name(): string {
    const at = this.pos;
    const len = this.u32();
    try {
      return UTF8_STRICT.decode(this.bytes(len));
    } catch (e) {
      if (e instanceof GuardError) throw e;
      return malformed("invalid UTF-8 in name", at);
    }
  }
}

const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true });
const UTF8_ENCODER = new TextEncoder();

/** Initial capacity of a growable writer; it doubles as needed. */
const INITIAL_WRITER_BYTES = 1024;

/** Growable byte buffer with LEB128 helpers. */
export class Writer {
  buf: Uint8Array<ArrayBuffer>;
  len = 0;

  constructor(capacity = INITIAL_WRITER_BYTES) {
    this.buf = new Uint8Array(Math.max(16, capacity));
  }

  /** Makes room for `n` more bytes. */
  reserve(n: number): void {
    const need = this.len + n;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** One byte. */
  u8(b: number): void {
    if (this.len >= this.buf.length) this.reserve(1);
    this.buf[this.len++] = b;
  }

  /** Unsigned LEB128 (values up to 2^53). */
  u32(v: number): void {
    this.reserve(MAX_LEB_BYTES);
    do {
      let b = v % 128;
      v = Math.floor(v / 128);
      if (v !== 0) b |= 0x80;
      this.buf[this.len++] = b;
    } while (v !== 0);
  }

  /** Signed LEB128 of a 32-bit integer. */
  s32(v: number): void {
    this.reserve(MAX_U32_LEB_BYTES);
    v |= 0;
    for (;;) {
      const b = v & 0x7f;
      v >>= 7;
      if ((v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0)) {
        this.buf[this.len++] = b;
        return;
      }
      this.buf[this.len++] = b | 0x80;
    }
  }

  /** Raw bytes. */
  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** A length-prefixed UTF-8 name. */
  name(s: string): void {
    const b = UTF8_ENCODER.encode(s);
    this.u32(b.length);
    this.bytes(b);
  }

  /** The bytes written so far (a copy with an exact-size buffer). */
  finish(): Uint8Array<ArrayBuffer> {
    return this.buf.slice(0, this.len);
  }

  /** The bytes written so far (a view; valid until the next write). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}
