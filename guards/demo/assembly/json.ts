/**
 * A small JSON reader and writer (RFC 8259) for the guard: UTF-8 bytes in, a `JsonValue` tree, UTF-8
 * bytes out. Errors never trap: `parseJson` returns null and leaves the reason in `jsonError`.
 *
 * Objects keep their keys in order; `get` returns the LAST value of a duplicated key, as Go's
 * encoding/json does. Numbers are f64 (the host's JSON went through float64 too).
 *
 * @module
 */

/** JSON `null`. */
export const JSON_NULL: i32 = 0;
/** JSON `true` / `false`. */
export const JSON_BOOL: i32 = 1;
/** JSON number. */
export const JSON_NUMBER: i32 = 2;
/** JSON string. */
export const JSON_STRING: i32 = 3;
/** JSON array. */
export const JSON_ARRAY: i32 = 4;
/** JSON object. */
export const JSON_OBJECT: i32 = 5;

/** Deepest nesting accepted; deeper documents are rejected instead of exhausting the stack. */
export const JSON_MAX_DEPTH: i32 = 128;

/** Largest integer that f64 holds exactly (2^53); integral numbers below it print without a fraction. */
const MAX_SAFE_INTEGER: f64 = 9007199254740992.0;

/** One JSON value. Only the fields of its `kind` are meaningful. */
export class JsonValue {
  kind: i32;
  boolValue: bool = false;
  numberValue: f64 = 0;
  stringValue: string = "";
  /** Array elements, or object values (parallel to `keys`). */
  items: JsonValue[] = [];
  /** Object keys. */
  keys: string[] = [];

  constructor(kind: i32) {
    this.kind = kind;
  }

  /** True for a string value. */
  isString(): bool {
    return this.kind == JSON_STRING;
  }

  /** True for an array value. */
  isArray(): bool {
    return this.kind == JSON_ARRAY;
  }

  /** True for an object value. */
  isObject(): bool {
    return this.kind == JSON_OBJECT;
  }

  /** True for a number that is an integer. */
  isInteger(): bool {
    return this.kind == JSON_NUMBER && Math.floor(this.numberValue) == this.numberValue &&
      Math.abs(this.numberValue) < MAX_SAFE_INTEGER;
  }

  /** The member `key` of an object (last one wins), or null if absent or not an object. */
  get(key: string): JsonValue | null {
    if (this.kind != JSON_OBJECT) return null;
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  /** The string member `key`, or null if absent or not a string. */
  getString(key: string): string | null {
    const v = this.get(key);
    if (v === null || v.kind != JSON_STRING) return null;
    return v.stringValue;
  }

  /** Appends `key: value` to an object and returns it. */
  set(key: string, value: JsonValue): JsonValue {
    this.keys.push(key);
    this.items.push(value);
    return this;
  }

  /** Appends `value` to an array and returns it. */
  push(value: JsonValue): JsonValue {
    this.items.push(value);
    return this;
  }
}

/** A new `null`. */
export function jsonNull(): JsonValue {
  return new JsonValue(JSON_NULL);
}

/** A new boolean. */
export function jsonBool(b: bool): JsonValue {
  const v = new JsonValue(JSON_BOOL);
  v.boolValue = b;
  return v;
}

/** A new number. */
export function jsonNumber(n: f64): JsonValue {
  const v = new JsonValue(JSON_NUMBER);
  v.numberValue = n;
  return v;
}

/** A new string. */
export function jsonString(s: string): JsonValue {
  const v = new JsonValue(JSON_STRING);
  v.stringValue = s;
  return v;
}

/** A new empty array. */
export function jsonArray(): JsonValue {
  return new JsonValue(JSON_ARRAY);
}

/** A new array of strings. */
export function jsonStringArray(values: string[]): JsonValue {
  const a = jsonArray();
  for (let i = 0; i < values.length; i++) a.push(jsonString(values[i]));
  return a;
}

/** A new empty object. */
export function jsonObject(): JsonValue {
  return new JsonValue(JSON_OBJECT);
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Why the last `parseJson` failed ("" after a success). */
export let jsonError: string = "";

/** Reader state over `[pos, end)` of linear memory. */
class Reader {
  pos: usize;
  end: usize;
  start: usize;
  depth: i32 = 0;
  failed: bool = false;

  constructor(ptr: usize, len: usize) {
    this.pos = ptr;
    this.start = ptr;
    this.end = ptr + len;
  }

  fail(why: string): JsonValue | null {
    if (!this.failed) {
      this.failed = true;
      jsonError = why + " at byte " + (this.pos - this.start).toString();
    }
    return null;
  }

  peek(): i32 {
    return this.pos < this.end ? <i32> load<u8>(this.pos) : -1;
  }

  skipSpace(): void {
    while (this.pos < this.end) {
      const c = load<u8>(this.pos);
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.pos++;
    }
  }

  literal(word: string, value: JsonValue): JsonValue | null {
    for (let i = 0; i < word.length; i++) {
      if (this.peek() != word.charCodeAt(i)) return this.fail("invalid literal");
      this.pos++;
    }
    return value;
  }

  value(): JsonValue | null {
    this.skipSpace();
    const c = this.peek();
    if (c == 0x7b) return this.object();
    if (c == 0x5b) return this.array();
    if (c == 0x22) {
      const s = this.string();
      return s === null ? null : jsonString(s);
    }
    if (c == 0x74) return this.literal("true", jsonBool(true));
    if (c == 0x66) return this.literal("false", jsonBool(false));
    if (c == 0x6e) return this.literal("null", jsonNull());
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (c < 0) return this.fail("unexpected end of input");
    return this.fail("unexpected character");
  }

  enter(): bool {
    if (++this.depth > JSON_MAX_DEPTH) {
      this.fail("nesting deeper than " + JSON_MAX_DEPTH.toString());
      return false;
    }
    return true;
  }

  object(): JsonValue | null {
    if (!this.enter()) return null;
    this.pos++; // {
    const obj = jsonObject();
    this.skipSpace();
    if (this.peek() == 0x7d) {
      this.pos++;
      this.depth--;
      return obj;
    }
    while (true) {
      this.skipSpace();
      if (this.peek() != 0x22) return this.fail("expected object key");
      const key = this.string();
      if (key === null) return null;
      this.skipSpace();
      if (this.peek() != 0x3a) return this.fail("expected ':'");
      this.pos++;
      const v = this.value();
      if (v === null) return null;
      obj.set(key, v);
      this.skipSpace();
      const c = this.peek();
      this.pos++;
      if (c == 0x2c) continue;
      if (c == 0x7d) break;
      this.pos--;
      return this.fail("expected ',' or '}'");
    }
    this.depth--;
    return obj;
  }

  array(): JsonValue | null {
    if (!this.enter()) return null;
    this.pos++; // [
    const arr = jsonArray();
    this.skipSpace();
    if (this.peek() == 0x5d) {
      this.pos++;
      this.depth--;
      return arr;
    }
    while (true) {
      const v = this.value();
      if (v === null) return null;
      arr.push(v);
      this.skipSpace();
      const c = this.peek();
      this.pos++;
      if (c == 0x2c) continue;
      if (c == 0x5d) break;
      this.pos--;
      return this.fail("expected ',' or ']'");
    }
    this.depth--;
    return arr;
  }

  hexDigit(): i32 {
    const c = this.peek();
    this.pos++;
    if (c >= 0x30 && c <= 0x39) return c - 0x30;
    if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
    if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
    return -1;
  }

  /** Reads a string starting at its opening quote; null on error. */
  string(): string | null {
    this.pos++; // "
    let out = "";
    let run = this.pos;
    while (true) {
      if (this.pos >= this.end) {
        this.fail("unterminated string");
        return null;
      }
      const c = load<u8>(this.pos);
      if (c == 0x22) {
        out += String.UTF8.decodeUnsafe(run, this.pos - run);
        this.pos++;
        return out;
      }
      if (c < 0x20) {
        this.fail("control character in string");
        return null;
      }
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      out += String.UTF8.decodeUnsafe(run, this.pos - run);
      this.pos++; // backslash
      const e = this.peek();
      this.pos++;
      if (e == 0x22) out += '"';
      else if (e == 0x5c) out += "\\";
      else if (e == 0x2f) out += "/";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75) {
        let code = 0;
        for (let i = 0; i < 4; i++) {
          const d = this.hexDigit();
          if (d < 0) {
            this.fail("invalid \\u escape");
            return null;
          }
          code = (code << 4) | d;
        }
        out += String.fromCharCode(code);
      } else {
        this.pos--;
        this.fail("invalid escape");
        return null;
      }
      run = this.pos;
    }
  }

  digits(): i32 {
    let n = 0;
    while (true) {
      const c = this.peek();
      if (c < 0x30 || c > 0x39) return n;
      this.pos++;
      n++;
    }
  }

  number(): JsonValue | null {
    const begin = this.pos;
    if (this.peek() == 0x2d) this.pos++;
    if (this.peek() == 0x30) {
      this.pos++;
    } else if (this.digits() == 0) {
      return this.fail("invalid number");
    }
    if (this.peek() == 0x2e) {
      this.pos++;
      if (this.digits() == 0) return this.fail("invalid number fraction");
    }
    const e = this.peek();
    if (e == 0x65 || e == 0x45) {
      this.pos++;
      const sign = this.peek();
      if (sign == 0x2b || sign == 0x2d) this.pos++;
      if (this.digits() == 0) return this.fail("invalid number exponent");
    }
    return jsonNumber(parseFloat(String.UTF8.decodeUnsafe(begin, this.pos - begin)));
  }
}

/**
 * Parses the UTF-8 JSON text at `[ptr, ptr+len)`. Returns null on any syntax error (reason in
 * `jsonError`). Trailing content other than whitespace is an error.
 */
export function parseJson(ptr: usize, len: usize): JsonValue | null {
  jsonError = "";
  const r = new Reader(ptr, len);
  const v = r.value();
  if (v === null) return null;
  r.skipSpace();
  if (r.pos != r.end) return r.fail("trailing characters after the JSON value");
  return v;
}

/** Parses JSON held in an AssemblyScript string. */
export function parseJsonString(text: string): JsonValue | null {
  const bytes = String.UTF8.encode(text);
  return parseJson(changetype<usize>(bytes), <usize> bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** A growable UTF-8 byte buffer. */
export class JsonWriter {
  buffer: ArrayBuffer = new ArrayBuffer(256);
  length: i32 = 0;

  /** Address of the first byte. */
  get ptr(): usize {
    return changetype<usize>(this.buffer);
  }

  reserve(extra: i32): void {
    const need = this.length + extra;
    if (need <= this.buffer.byteLength) return;
    let cap = this.buffer.byteLength * 2;
    while (cap < need) cap *= 2;
    const grown = new ArrayBuffer(cap);
    memory.copy(changetype<usize>(grown), changetype<usize>(this.buffer), <usize> this.length);
    this.buffer = grown;
  }

  byte(b: i32): void {
    this.reserve(1);
    store<u8>(this.ptr + <usize> this.length, <u8> b);
    this.length++;
  }

  /** Appends `s`, which must be ASCII (no escaping). */
  ascii(s: string): void {
    this.reserve(s.length);
    for (let i = 0; i < s.length; i++) {
      store<u8>(this.ptr + <usize> this.length, <u8> s.charCodeAt(i));
      this.length++;
    }
  }

  hex4(code: i32): void {
    this.ascii("\\u");
    for (let shift = 12; shift >= 0; shift -= 4) {
      const d = (code >> shift) & 0xf;
      this.byte(d < 10 ? 0x30 + d : 0x61 + d - 10);
    }
  }

  /** Appends `s` as a quoted JSON string, encoding UTF-16 to UTF-8 (lone surrogates become U+FFFD). */
  string(s: string): void {
    this.byte(0x22);
    const n = s.length;
    for (let i = 0; i < n; i++) {
      let c = s.charCodeAt(i);
      if (c == 0x22) this.ascii('\\"');
      else if (c == 0x5c) this.ascii("\\\\");
      else if (c == 0x0a) this.ascii("\\n");
      else if (c == 0x0d) this.ascii("\\r");
      else if (c == 0x09) this.ascii("\\t");
      else if (c < 0x20) this.hex4(c);
      else if (c < 0x80) this.byte(c);
      else if (c < 0x800) {
        this.byte(0xc0 | (c >> 6));
        this.byte(0x80 | (c & 0x3f));
      } else {
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
          const lo = s.charCodeAt(i + 1);
          if (lo >= 0xdc00 && lo <= 0xdfff) {
            const cp = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            this.byte(0xf0 | (cp >> 18));
            this.byte(0x80 | ((cp >> 12) & 0x3f));
            this.byte(0x80 | ((cp >> 6) & 0x3f));
            this.byte(0x80 | (cp & 0x3f));
            i++;
            continue;
          }
        }
        if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
        this.byte(0xe0 | (c >> 12));
        this.byte(0x80 | ((c >> 6) & 0x3f));
        this.byte(0x80 | (c & 0x3f));
      }
    }
    this.byte(0x22);
  }

  number(n: f64): void {
    if (!isFinite(n)) this.ascii("null");
    else if (Math.floor(n) == n && Math.abs(n) < MAX_SAFE_INTEGER) this.ascii((<i64> n).toString());
    else this.ascii(n.toString());
  }

  /** Appends `v` in compact form. */
  value(v: JsonValue): void {
    if (v.kind == JSON_NULL) this.ascii("null");
    else if (v.kind == JSON_BOOL) this.ascii(v.boolValue ? "true" : "false");
    else if (v.kind == JSON_NUMBER) this.number(v.numberValue);
    else if (v.kind == JSON_STRING) this.string(v.stringValue);
    else if (v.kind == JSON_ARRAY) {
      this.byte(0x5b);
      for (let i = 0; i < v.items.length; i++) {
        if (i > 0) this.byte(0x2c);
        this.value(v.items[i]);
      }
      this.byte(0x5d);
    } else {
      this.byte(0x7b);
      for (let i = 0; i < v.keys.length; i++) {
        if (i > 0) this.byte(0x2c);
        this.string(v.keys[i]);
        this.byte(0x3a);
        this.value(v.items[i]);
      }
      this.byte(0x7d);
    }
  }
}

/** Serializes `v` to compact UTF-8 JSON. */
export function writeJson(v: JsonValue): JsonWriter {
  const w = new JsonWriter();
  w.value(v);
  return w;
}
