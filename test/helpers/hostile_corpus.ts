/**
 * The hostile-guard corpus (`test/fixtures/wat/hostile/`): lists the fixtures and compiles each to
 * bytes. Text fixtures go through wabt with every feature the preparer decodes (and annotations, for
 * `(@custom ...)` sections); a fixture that is a single `(module binary "...")` is a malformed binary
 * wabt refuses to read, so its bytes are taken from the string literals as they are.
 */
import wabtInit from "wabt";

/** The corpus folder. */
export const HOSTILE_DIR = new URL("../fixtures/wat/hostile/", import.meta.url);

/** wabt features for WAT fixtures: everything the preparer decodes, plus `(@custom ...)`. */
export const WABT_FEATURES = {
  annotations: true,
  exceptions: true,
  simd: true,
  threads: true,
  tail_call: true,
  multi_value: true,
  bulk_memory: true,
  reference_types: true,
  sign_extension: true,
  sat_float_to_int: true,
  multi_memory: true,
  memory64: true,
  extended_const: true,
  mutable_globals: true,
};

let wabtPromise: ReturnType<typeof wabtInit> | undefined;

/**
 * Fixture names (without `.wat`), sorted; only those starting with one of `prefixes` when given.
 *
 * @example
 * ```ts
 * const names = await hostileNames(["mark_", "mem_"]);
 * ```
 */
export async function hostileNames(prefixes?: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(HOSTILE_DIR)) {
    if (!e.isFile || !e.name.endsWith(".wat")) continue;
    const name = e.name.slice(0, -4);
    if (!prefixes || prefixes.some((p) => name.startsWith(p))) out.push(name);
  }
  return out.sort();
}

/** The bytes of a `(module binary "..." ...)` text: every string literal, escapes decoded. */
function binaryModuleBytes(text: string): Uint8Array<ArrayBuffer> {
  const bytes: number[] = [];
  for (const m of text.matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
    const s = m[1];
    for (let i = 0; i < s.length; i++) {
      if (s[i] !== "\\") {
        bytes.push(s.charCodeAt(i));
      } else if (/^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
        bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        bytes.push(s.charCodeAt(++i));
      }
    }
  }
  return new Uint8Array(bytes);
}

/**
 * Compiles one fixture to module bytes (text through wabt; `(module binary ...)` as written).
 *
 * @example
 * ```ts
 * const bytes = await hostileBytes("mark_forged");
 * ```
 */
export async function hostileBytes(name: string): Promise<Uint8Array<ArrayBuffer>> {
  const text = await Deno.readTextFile(new URL(`${name}.wat`, HOSTILE_DIR));
  const code = text.replace(/;;[^\n]*/g, "").trim();
  if (/^\(module\s+binary\b/.test(code)) return binaryModuleBytes(code);
  const wabt = await (wabtPromise ??= wabtInit());
  const mod = wabt.parseWat(`${name}.wat`, text, WABT_FEATURES);
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/** What loading a fixture must do: refuse it with this kind, limit, message part and `guard check` line. */
export interface Refusal {
  kind: "abi" | "memory";
  limit?: string;
  /** Part of the message. */
  text: string;
  /** The `guard check` line that reports the failure. */
  check:
    | "validated"
    | "imports"
    | "ABI"
    | "memory cap"
    | "table cap"
    | "segment limits"
    | "prepared by us / fuel";
}

const invalid = (text: string): Refusal => ({
  kind: "abi",
  text,
  check: "validated",
});
const malformed = (text: string): Refusal => ({
  kind: "abi",
  text: `malformed WebAssembly module: ${text}`,
  check: "validated",
});
const refusedMark = (text: string): Refusal => ({
  kind: "abi",
  text: `refused: ${text}`,
  check: "prepared by us / fuel",
});

/**
 * Load-time refusals of the module-level corpus (prefixes `invalid_`, `mark_`, `mem_`, `table_`,
 * `segments_`). Fixtures of these prefixes missing here load and are capped (`mem_multi_grow`,
 * `table_grow_bomb`).
 */
export const REFUSALS: Readonly<Record<string, Refusal>> = {
  invalid_binary_bad_magic: malformed("not a WebAssembly module (bad magic)"),
  invalid_binary_body_count: malformed("1 functions declared but no code section"),
  invalid_binary_leb_overlong: malformed("integer representation too long"),
  invalid_binary_section_order: malformed("section 1 is out of order or duplicated"),
  invalid_binary_truncated: malformed("section 1 (5 bytes) runs past the end of the module"),
  invalid_br_depth: invalid("invalid branch depth: 3"),
  invalid_call_indirect_no_table: invalid("table index 0 exceeds number of tables (0)"),
  invalid_data_index: invalid("invalid data segment index: 5"),
  invalid_duplicate_export: invalid("Duplicate export name 'label_agent'"),
  invalid_elem_index: invalid("invalid element segment index: 3"),
  invalid_immutable_global: invalid("immutable global #0 cannot be assigned"),
  invalid_load_without_memory: invalid("memory index 0 exceeds number of declared memories (0)"),
  invalid_stack_height: invalid("expected 1 elements on the stack for fallthru, found 0"),
  invalid_start_signature: invalid("invalid start function"),
  invalid_type_mismatch: invalid("i32.add[0] expected type i32"),
  mark_fake_fuel: refusedMark("it imports mcp_edge_guard.fuel_check (our fuel check)"),
  mark_forged: refusedMark('it has a "mcp_edge_guard.prepared" custom section'),
  mark_lookalike_section: refusedMark('it has a "mcp_edge_guard.prepared.v3" custom section'),
  mark_reserved_export: refusedMark('it exports "__mcp_edge_guard_memory_0"'),
  mark_stale_v1: refusedMark('it has a "mcp_edge_guard.prepared" custom section'),
  mark_wide_caps: refusedMark('it has a "mcp_edge_guard.prepared" custom section'),
  mem_imported: {
    kind: "abi",
    text: "import env.memory: the host provides no memory imports",
    check: "imports",
  },
  mem_many_memories: {
    kind: "memory",
    limit: "maxMemoryPages",
    text: "the 17 memories declare minimums of 8193 pages together, above maxMemoryPages 512",
    check: "memory cap",
  },
  mem_memory64: { kind: "abi", text: "memory64 is not supported", check: "validated" },
  mem_min_above_cap: {
    kind: "memory",
    limit: "maxMemoryPages",
    text: "memory 0 declares a minimum of 1000 pages, above maxMemoryPages 512",
    check: "memory cap",
  },
  segments_data_count: {
    kind: "abi",
    limit: "maxDataSegments",
    text: "the module declares 10001 data segments, above maxDataSegments 10000",
    check: "segment limits",
  },
  segments_elem_entries: {
    kind: "abi",
    limit: "maxElementEntries",
    text: "the module declares 100001 element segment entries, above maxElementEntries 100000",
    check: "segment limits",
  },
  table_huge_min: {
    kind: "memory",
    limit: "maxTableEntries",
    text: "table 0 declares a minimum of 10000000 entries, above maxTableEntries 100000",
    check: "table cap",
  },
  table_imported: {
    kind: "abi",
    text: "import env.table: the host provides no table imports",
    check: "imports",
  },
  table_many: {
    kind: "memory",
    limit: "maxTableEntries",
    text: "the 4 tables declare minimums of 120000 entries together, above maxTableEntries 100000",
    check: "table cap",
  },
};

/** The prefixes of the module-level corpus (load-time checks). */
export const MODULE_LEVEL_PREFIXES = ["invalid_", "mark_", "mem_", "table_", "segments_"] as const;
