/**
 * Fewer active data segments: V8 spends ~0.1 µs per segment on every instantiation, and toolchains
 * such as AssemblyScript emit one per static string (the demo guard has 488), so a module that
 * instantiates once per request pays ~50 µs for them. Adjacent segments become one, with zeros in
 * the small gaps between them.
 *
 * This is exact only under conditions the caller and {@link mergeDataSegments} check:
 * - no code names a segment (`memory.init`, `data.drop`), so indices may change (the caller);
 * - every active segment has a constant `i32.const` offset, and no two of them overlap in the same
 *   memory, so the order in which instantiation writes them cannot matter and no gap byte is written
 *   by any segment (a new memory holds zeros there, and so does the merged segment);
 * - an empty active segment is kept as it is (its bounds check is all it does).
 * A merged segment is out of bounds exactly when one of its parts is, so instantiation fails as
 * before. Passive segments are kept unchanged after the active ones.
 *
 * @module
 */
import { Reader, Writer } from "./bytes.ts";
import { skipConstExpr } from "./module.ts";

/** Largest gap (zero bytes) filled to join two segments. */
export const MAX_SEGMENT_GAP_BYTES = 64;

interface Segment {
  /** The segment's encoding, for those kept as they are. */
  raw: Uint8Array;
  /** Active with a constant offset: memory, offset, bytes. */
  active?: { mem: number; offset: number; data: Uint8Array };
}

/**
 * The data section content with adjacent active segments merged, and its segment count; null when
 * the conditions above do not hold or nothing would be merged.
 */
export function mergeDataSegments(content: Uint8Array): { content: Uint8Array; count: number } | null {
  const r = new Reader(content, 0, content.length);
  const segments: Segment[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const start = r.pos;
    const flags = r.u32();
    if (flags > 2) return null;
    let seg: Segment["active"];
    if (flags !== 1) {
      const mem = flags === 2 ? r.u32() : 0;
      if (r.u8() !== 0x41) return null; // not i32.const
      const offset = readS32(r) >>> 0;
      if (r.u8() !== 0x0b) return null; // more than one instruction
      const len = r.u32();
      seg = { mem, offset, data: r.bytes(len) };
    } else {
      r.skip(r.u32());
    }
    segments.push({ raw: content.subarray(start, r.pos), active: seg });
  }
  const active = segments.filter((s) => s.active !== undefined && s.active.data.length > 0)
    .map((s) => s.active!)
    .sort((a, b) => a.mem - b.mem || a.offset - b.offset);
  for (let i = 1; i < active.length; i++) {
    const a = active[i - 1], b = active[i];
    if (a.mem === b.mem && b.offset < a.offset + a.data.length) return null; // overlap
  }
  // Runs of neighbours in one memory with small gaps.
  const runs: { mem: number; offset: number; end: number; parts: typeof active }[] = [];
  for (const s of active) {
    const last = runs.at(-1);
    if (last && last.mem === s.mem && s.offset - last.end <= MAX_SEGMENT_GAP_BYTES) {
      last.parts.push(s);
      last.end = s.offset + s.data.length;
    } else {
      runs.push({ mem: s.mem, offset: s.offset, end: s.offset + s.data.length, parts: [s] });
    }
  }
  const kept = segments.filter((s) => s.active === undefined || s.active.data.length === 0);
  const count = runs.length + kept.length;
  if (count >= segments.length) return null;
  const w = new Writer(content.length);
  w.u32(count);
  for (const run of runs) {
    w.u32(run.mem === 0 ? 0 : 2);
    if (run.mem !== 0) w.u32(run.mem);
    w.u8(0x41);
    w.s32(run.offset | 0);
    w.u8(0x0b);
    const bytes = new Uint8Array(run.end - run.offset); // gaps stay zero
    for (const p of run.parts) bytes.set(p.data, p.offset - run.offset);
    w.u32(bytes.length);
    w.bytes(bytes);
  }
  for (const s of kept) w.bytes(s.raw);
  return { content: w.finish(), count };
}

/**
 * How many distinct blocks of `blockBytes` the module's active data segments write when it is
 * instantiated: the memory a new instance makes resident before it runs (the host's memory pool
 * counts idle memories by the blocks they made resident). A segment whose offset is not a single
 * `i32.const` counts every block its bytes could span wherever they land. Never less than the truth.
 */
export function dataBlockCount(content: Uint8Array, blockBytes: number): number {
  const r = new Reader(content, 0, content.length);
  const blocks = new Set<number>();
  let unplaced = 0;
  for (let n = r.u32(); n > 0; n--) {
    const flags = r.u32();
    if (flags === 1) {
      r.skip(r.u32()); // passive: written by memory.init, which the memory's own record sees
      continue;
    }
    const mem = flags === 2 ? r.u32() : 0;
    const start = r.pos;
    let offset: number | null = null;
    if (r.u8() === 0x41) {
      offset = readS32(r) >>> 0;
      if (r.u8() !== 0x0b) offset = null;
    }
    if (offset === null) {
      r.pos = start;
      skipConstExpr(r);
    }
    const len = r.u32();
    r.skip(len);
    if (len === 0) continue;
    if (offset === null) {
      unplaced += Math.ceil(len / blockBytes) + 1;
      continue;
    }
    // A 32-bit memory has fewer than 2^32 blocks, so memory × 2^32 + block names each one once.
    const base = mem * 2 ** 32;
    for (
      let b = Math.floor(offset / blockBytes), last = Math.floor((offset + len - 1) / blockBytes);
      b <= last;
      b++
    ) {
      blocks.add(base + b);
    }
  }
  return blocks.size + unplaced;
}

/** A signed LEB128 of at most 32 bits (the module was validated: well formed). */
function readS32(r: Reader): number {
  let result = 0, shift = 0, b: number;
  do {
    b = r.u8();
    result |= (b & 0x7f) << shift;
    shift += 7;
  } while (b & 0x80 && shift < 35);
  if (shift < 32 && b & 0x40) result |= -1 << shift;
  return result | 0;
}
