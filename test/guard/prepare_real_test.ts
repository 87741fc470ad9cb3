/**
 * Real toolchain output: an AssemblyScript guard compiled at test time by the npm `assemblyscript`
 * package, and every `.wasm` shipped inside node_modules (Rust/wasm-bindgen builds). Each is
 * prepared, validated and instantiated; the guard also runs and must answer as before.
 */
import { assert, assertEquals, assertGreater, assertLess } from "@std/assert";
import {
  FUEL_GLOBAL_EXPORT,
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  prepareGuard,
} from "../../src/guard/prepare.ts";
import { FUEL_CHECK_ALLOWED_EXPORT, START_EXPORT } from "../../src/guard/wasm/host_signatures.ts";
import { parseModule, SectionId } from "../../src/guard/wasm/module.ts";
import { rewriteModule } from "../../src/guard/wasm/rewrite.ts";
import { instantiate } from "../helpers/instantiate.ts";

const ROOT = new URL("../../", import.meta.url);
const ASC = new URL("node_modules/assemblyscript/bin/asc.js", ROOT);
/** Fuel-rewritten modules may grow by at most this fraction (fuel points, import, global, export, mark). */
const MAX_SIZE_OVERHEAD = 0.3;
/**
 * Prepared guards (pooled memories) may grow by at most this fraction: fuel, plus a short sequence
 * in front of every memory write that records its block (store-heavy AssemblyScript code grows most:
 * the demo guard +71 %, the Rust benchmark guard +27 %).
 */
const MAX_PREPARED_SIZE_OVERHEAD = 0.9;
/**
 * Bytes allowed on top of that fraction: the chunking helpers of the bulk operations a module uses
 * and their charge functions (~100-200 bytes per operation kind), and a pooled memory's import, page
 * global, grow function and export (~150 bytes): fixed costs per module, not proportional to its code.
 */
const BULK_HELPER_BYTES = 512 + 192;

const AS_GUARD = `
@external("env", "host_log")
declare function host_log(level: i32, ptr: i32, len: i32): void;

let calls = 0;

function checksum(ptr: i32, len: i32): i32 {
  let h: u32 = 2166136261;
  for (let i = 0; i < len; i++) h = (h ^ load<u8>(ptr + i)) * 16777619;
  return <i32>(h & 0x7fffffff);
}

export function alloc(size: i32): i32 { return <i32>heap.alloc(<usize>size); }
export function dealloc(ptr: i32, size: i32): void { heap.free(<usize>ptr); }

export function label_agent(inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  calls++;
  const msg = String.UTF8.encode("agent");
  host_log(1, <i32>changetype<usize>(msg), msg.byteLength);
  store<i32>(outPtr, checksum(inPtr, inLen));
  return 4;
}
export function label_resource(inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  calls++;
  const s = '{"calls":' + calls.toString() + ',"sum":' + checksum(inPtr, inLen).toString() + "}";
  const n = String.UTF8.byteLength(s);
  if (n > outSize) return -2;
  String.UTF8.encodeUnsafe(changetype<usize>(s), s.length, <usize>outPtr);
  return n;
}
export function label_response(inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  return label_resource(inPtr, inLen, outPtr, outSize);
}
`;

async function compileAssemblyScript(): Promise<Uint8Array<ArrayBuffer>> {
  const dir = await Deno.makeTempDir({ prefix: "prepare_as_" });
  try {
    const src = `${dir}/guard.ts`;
    const out = `${dir}/guard.wasm`;
    await Deno.writeTextFile(src, AS_GUARD);
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ASC.pathname,
        src,
        "--outFile",
        out,
        "-O3",
        "--runtime",
        "incremental",
        "--use",
        "abort=",
      ],
      cwd: ROOT.pathname,
      stdout: "null",
      stderr: "piped",
    }).output();
    assertEquals(code, 0, new TextDecoder().decode(stderr));
    return await Deno.readFile(out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Calls label_resource through alloc/dealloc the way the host does and returns the output text. */
function callLabel(exports: WebAssembly.Exports, fn: string, input: string): string {
  const alloc = exports.alloc as (n: number) => number;
  const memory = exports.memory as WebAssembly.Memory;
  const data = new TextEncoder().encode(input);
  const inPtr = alloc(data.length);
  const outPtr = alloc(256);
  new Uint8Array(memory.buffer).set(data, inPtr);
  const n = (exports[fn] as (...a: number[]) => number)(inPtr, data.length, outPtr, 256);
  assertGreater(n, 0);
  return new TextDecoder().decode(new Uint8Array(memory.buffer, outPtr, n));
}

Deno.test("AssemblyScript guard: prepared output validates and answers like the original", async () => {
  const original = await compileAssemblyScript();
  const { bytes, report } = prepareGuard(original);
  assert(WebAssembly.validate(bytes));
  assertEquals(report.allocDealloc, true);
  assertEquals(report.imports, [{
    module: "env",
    name: "host_log",
    kind: "function",
    type: "(i32,i32,i32)->()",
  }]);
  assertLess((report.bytesOut - BULK_HELPER_BYTES) / report.bytesIn - 1, MAX_PREPARED_SIZE_OVERHEAD);

  const logs: number[] = [];
  const env = { env: { host_log: (level: number) => logs.push(level) } };
  const plain = instantiate(original, env).exports;
  let checks = 0;
  const box: { fuel?: WebAssembly.Global } = {};
  const prepared = instantiate(bytes, {
    ...env,
    [FUEL_IMPORT_MODULE]: {
      [FUEL_IMPORT_NAME]: () => {
        checks++;
        box.fuel!.value = 1;
      },
    },
  }).exports;
  const fuel = box.fuel = prepared[FUEL_GLOBAL_EXPORT] as WebAssembly.Global;
  fuel.value = 0;
  // AssemblyScript's runtime initialises itself in the start function, which the preparer exports
  // for the host to run (the host runs it before the first call).
  (prepared[START_EXPORT] as () => void)();
  const input = JSON.stringify({ tool_name: "get_issue", tool_args: { n: 1 }, pad: "x".repeat(500) });
  for (const fn of ["label_agent", "label_resource", "label_response"]) {
    assertEquals(callLabel(prepared, fn, input), callLabel(plain, fn, input), fn);
  }
  assertEquals(logs, [1, 1]);
  assertGreater(checks, 500, "the checksum loop runs through the fuel check");
});

async function findWasm(dir: URL, found: URL[] = []): Promise<URL[]> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isSymlink) continue;
    const url = new URL(e.isDirectory ? `${e.name}/` : e.name, dir);
    if (e.isDirectory) await findWasm(url, found);
    else if (e.name.endsWith(".wasm")) found.push(url);
  }
  return found;
}

Deno.test("every .wasm in node_modules is rewritten into a valid, instantiable module", async () => {
  const files = await findWasm(new URL("node_modules/", ROOT));
  assertGreater(files.length, 0, "node_modules ships at least one .wasm");
  for (const file of files) {
    const input = await Deno.readFile(file);
    const name = file.pathname.slice(ROOT.pathname.length);
    const out = rewriteModule(parseModule(input), {
      maxMemoryPages: 512,
      fuel: {
        importModule: FUEL_IMPORT_MODULE,
        importName: FUEL_IMPORT_NAME,
        globalExport: FUEL_GLOBAL_EXPORT,
        initial: 1,
      },
    });
    assert(WebAssembly.validate(out.bytes), `${name}: output must validate`);
    assertLess(out.bytes.length / input.length - 1, MAX_SIZE_OVERHEAD, name);
    assertGreater(out.fuelPoints, 0, name);
    const mod = new WebAssembly.Module(out.bytes);
    const before = WebAssembly.Module.exports(new WebAssembly.Module(input));
    const start = parseModule(input).sections.some((s) => s.id === SectionId.start);
    assertEquals(
      WebAssembly.Module.exports(mod),
      [
        ...before,
        { name: FUEL_GLOBAL_EXPORT, kind: "global" },
        { name: FUEL_CHECK_ALLOWED_EXPORT, kind: "global" },
        ...(start ? [{ name: START_EXPORT, kind: "function" }] : []),
      ],
      name,
    );
    // Instantiate with stub imports (none of these modules has a start function that calls them).
    const imports: Record<string, Record<string, () => never>> = {};
    for (const imp of WebAssembly.Module.imports(mod)) {
      if (imp.kind === "memory" && imp.module === FUEL_IMPORT_MODULE) continue; // pooled: instantiate() adds it
      assertEquals(imp.kind, "function", `${name}: ${imp.module}.${imp.name}`);
      (imports[imp.module] ??= {})[imp.name] = () => {
        throw new Error(`${imp.module}.${imp.name} not stubbed`);
      };
    }
    instantiate(mod, imports);
  }
});
