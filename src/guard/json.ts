/**
 * JSON text for guard inputs, built the way gh-aw-mcpg builds it: Go's `json.Marshal` of maps emits
 * object keys in sorted (byte) order and escapes `<`, `>`, `&`, U+2028 and U+2029. Guards must not
 * depend on either, but producing the same bytes keeps a guard's view identical to the reference.
 *
 * @module
 */

const GO_ESCAPES: Record<string, string> = {
  "<": "\\u003c",
  ">": "\\u003e",
  "&": "\\u0026",
  "\u2028": "\\u2028",
  "\u2029": "\\u2029",
};

function compareKeys(a: string, b: string): number {
  // Go sorts map keys by their UTF-8 bytes; for strings without surrogates UTF-16 order equals it.
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  const n = Math.min(ea.length, eb.length);
  for (let i = 0; i < n; i++) if (ea[i] !== eb[i]) return ea[i] - eb[i];
  return ea.length - eb.length;
}

function sortDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortDeep);
  if (v !== null && typeof v === "object") {
    const src = v as Record<string, unknown>;
    if (typeof (src as { toJSON?: unknown }).toJSON === "function") {
      return sortDeep(JSON.parse(JSON.stringify(v)));
    }
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(src).sort(compareKeys)) {
      if (src[k] !== undefined) out[k] = sortDeep(src[k]);
    }
    return out;
  }
  return v;
}

/**
 * Serializes `value` with object keys sorted at every depth and Go's HTML-safe escapes, matching the
 * bytes gh-aw-mcpg writes into a guard. `undefined` becomes `null` at the top level.
 *
 * @example
 * ```ts
 * sortedJson({ tool_name: "x", capabilities: {}, tool_args: { b: 1, a: "<" } });
 * // '{"capabilities":{},"tool_args":{"a":"\u003c","b":1},"tool_name":"x"}'
 * ```
 */
export function sortedJson(value: unknown): string {
  const text = JSON.stringify(sortDeep(value)) ?? "null";
  return text.replace(/[<>&\u2028\u2029]/g, (c) => GO_ESCAPES[c]);
}
