/**
 * Merged data segments (`src/guard/wasm/data.ts`): a prepared guard's memory right after
 * instantiation equals the original's byte for byte, and instantiation fails exactly when the
 * original's does, for random segment layouts (neighbours, gaps, overlaps, empty segments, passive
 * segments, segments named by code); segments of different memories never merge.
 */
import { assert, assertEquals } from "@std/assert";
import fc from "fast-check";
import wabtInit from "wabt";
import {
  FUEL_IMPORT_MODULE,
  FUEL_IMPORT_NAME,
  prepareGuard,
  readPreparedMark,
} from "../../src/guard/prepare.ts";
import { dataBlockCount, mergeDataSegments } from "../../src/guard/wasm/data.ts";
import { SectionId } from "../../src/guard/wasm/module.ts";
import { parseModule } from "../../src/guard/wasm/module.ts";
import { Reader, Writer } from "../../src/guard/wasm/bytes.ts";
import { instantiate } from "../helpers/instantiate.ts";

const wabt = await wabtInit();
/** wabt features (`multi_memory` is missing from wabt's typings). */
const FEATURES = { bulk_memory: true, multi_memory: true };
const LABELS = ["label_agent", "label_resource", "label_response"]
  .map((n) => `(func (export "${n}") (param i32 i32 i32 i32) (result i32) (i32.const 0))`).join("\n");

interface Seg {
  mem: 0 | 1;
  offset: number;
  len: number;
  passive: boolean;
}

function guardWith(segs: Seg[], namesSegment: boolean): Uint8Array<ArrayBuffer> {
  const data = segs.map((s, i) => {
    const bytes = Array.from(
      { length: s.len },
      (_, k) => `\\${((i * 31 + k) % 250 + 1).toString(16).padStart(2, "0")}`,
    )
      .join("");
    return s.passive
      ? `(data $d${i} "${bytes}")`
      : `(data $d${i} (memory ${s.mem === 0 ? "$a" : "$b"}) (i32.const ${s.offset}) "${bytes}")`;
  });
  const drop = namesSegment && segs.length > 0 ? `(func (export "drop") (data.drop $d0))` : "";
  const text = `(module (memory $a (export "memory") 1 2) (memory $b (export "mem_b") 1 1) ${
    data.join("\n")
  } ${drop} ${LABELS})`;
  const mod = wabt.parseWat("segs.wat", text, FEATURES);
  try {
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/** Both memories of an instance of `bytes` right after instantiation, or "failed". */
function memories(bytes: Uint8Array<ArrayBuffer>): Uint8Array[] | "failed" {
  let e: WebAssembly.Exports;
  try {
    e = instantiate(bytes, { [FUEL_IMPORT_MODULE]: { [FUEL_IMPORT_NAME]: () => {} } }).exports;
  } catch {
    return "failed";
  }
  return ["memory", "mem_b"].map((k) => new Uint8Array((e[k] as WebAssembly.Memory).buffer).slice());
}

/** The data section of `bytes` and its segment count. */
function dataSection(bytes: Uint8Array): { content: Uint8Array; count: number } {
  const s = parseModule(bytes).sections.find((x) => x.id === SectionId.data);
  if (s === undefined) return { content: new Uint8Array(), count: 0 };
  const content = bytes.subarray(s.start, s.end);
  return { content, count: new Reader(content).u32() };
}

/**
 * Random segments of memory 0 (wabt 1.0.39 writes segments for another memory without their memory
 * index, an invalid binary; the second memory is covered below with hand-written sections): offsets
 * up to `nearMax` or just around the end of the first page (out of bounds for some), up to `maxLen`
 * bytes.
 */
function segments(nearMax: number, maxLen: number, maxLength: number): fc.Arbitrary<Seg[]> {
  const seg = fc.record({
    mem: fc.constant(0 as const),
    offset: fc.oneof(fc.integer({ min: 0, max: nearMax }), fc.integer({ min: 65_400, max: 66_000 })),
    len: fc.integer({ min: 0, max: maxLen }),
    passive: fc.boolean(),
  });
  return fc.array(seg, { maxLength });
}

Deno.test("property: merged data segments leave memory exactly as the original's, or fail instantiation alike", () => {
  fc.assert(
    fc.property(segments(300, 40, 12), fc.boolean(), (segs, namesSegment) => {
      const original = guardWith(segs, namesSegment);
      const prepared = prepareGuard(original).bytes;
      assertEquals(memories(prepared), memories(original));
      // Code that names a segment keeps every segment (indices must not move).
      if (namesSegment && segs.length > 0) assertEquals(dataSection(prepared).count, segs.length);
    }),
    { numRuns: 200 },
  );
});

Deno.test("property: the mark's dataBlocks counts every 4 KiB block instantiation writes, each once", () => {
  fc.assert(
    fc.property(segments(9000, 5000, 8), (segs) => {
      const original = guardWith(segs, false);
      const mems = memories(original);
      fc.pre(mems !== "failed");
      // Every segment byte is non-zero: the blocks holding a non-zero byte are the blocks written.
      const written = new Set<number>();
      (mems as Uint8Array[]).forEach((m, i) =>
        m.forEach((b, at) => b !== 0 && written.add(i * 1000 + (at >> 12)))
      );
      assertEquals(
        readPreparedMark(new WebAssembly.Module(prepareGuard(original).bytes))?.dataBlocks,
        written.size,
      );
    }),
    { numRuns: 150 },
  );
});

Deno.test("data segments: a segment placed by an expression other than i32.const counts every block it could span", () => {
  const w = new Writer(64);
  w.u32(3);
  w.u32(0); // active, memory 0, offset global.get 0: 5000 bytes span at most 3 blocks
  w.bytes(Uint8Array.of(0x23, 0, 0x0b));
  w.u32(5000);
  w.bytes(new Uint8Array(5000));
  w.u32(1); // passive: written only by memory.init, which the written record sees
  w.u32(9000);
  w.bytes(new Uint8Array(9000));
  w.u32(0); // active at 4095, 2 bytes: blocks 0 and 1
  w.bytes(Uint8Array.of(0x41, 0xff, 0x1f, 0x0b, 2, 1, 1));
  assertEquals(dataBlockCount(w.finish(), 4096), 3 + 2);
});

Deno.test("data segments: neighbours merge, overlaps do not, empty ones stay; the demo guard keeps few", async () => {
  // Three neighbours (gaps 0 and 10) and an empty segment: two segments remain.
  const neighbours = guardWith([
    { mem: 0, offset: 100, len: 8, passive: false },
    { mem: 0, offset: 108, len: 4, passive: false },
    { mem: 0, offset: 122, len: 4, passive: false },
    { mem: 0, offset: 500, len: 0, passive: false },
  ], false);
  assertEquals(mergeDataSegments(dataSection(neighbours).content)?.count, 2);
  // Overlapping segments: left as they are (their order decides the bytes).
  const overlap = guardWith([
    { mem: 0, offset: 100, len: 8, passive: false },
    { mem: 0, offset: 104, len: 8, passive: false },
  ], false);
  assertEquals(mergeDataSegments(dataSection(overlap).content), null);
  // The demo guard (AssemblyScript: one segment per static string): 488 segments become a handful.
  const demo = await Deno.readFile(new URL("../../guards/demo/demo-guard.wasm", import.meta.url));
  assertEquals(dataSection(demo).count, 488);
  const merged = dataSection(prepareGuard(demo).bytes).count;
  assert(merged <= 16, `${merged} segments`);
});

Deno.test("data segments: neighbours in different memories stay apart, each at its own offset", () => {
  // [mem 0 @ 10: aa] [mem 1 @ 12: bb] [mem 0 @ 12: cc] [mem 1 @ 10: dd], hand-written (flags 0 / 2).
  const w = new Writer(64);
  w.u32(4);
  const seg = (mem: number, offset: number, byte: number) => {
    w.u32(mem === 0 ? 0 : 2);
    if (mem !== 0) w.u32(mem);
    w.bytes(Uint8Array.of(0x41, offset, 0x0b, 2, byte, byte));
  };
  seg(0, 10, 0xaa);
  seg(1, 12, 0xbb);
  seg(0, 12, 0xcc);
  seg(1, 10, 0xdd);
  const out = mergeDataSegments(w.finish())!;
  assertEquals(out.count, 2);
  const r = new Reader(out.content);
  assertEquals(r.u32(), 2);
  const read = () => {
    const flags = r.u32();
    const mem = flags === 2 ? r.u32() : 0;
    r.u8(); // i32.const
    const offset = r.u32();
    r.u8(); // end
    return { mem, offset, bytes: [...r.bytes(r.u32())] };
  };
  assertEquals(read(), { mem: 0, offset: 10, bytes: [0xaa, 0xaa, 0xcc, 0xcc] });
  assertEquals(read(), { mem: 1, offset: 10, bytes: [0xdd, 0xdd, 0xbb, 0xbb] });
});
