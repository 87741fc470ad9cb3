/**
 * Snapshots of a guard instance after `label_agent`: what a fresh instance needs to continue exactly
 * where an instance that ran only the module's start function and `label_agent(input)` stopped,
 * without running them again.
 *
 * Why it is safe (the isolation argument, enforced by `WasmGuardSession` in `host.ts`):
 *
 * - A snapshot is keyed by the exact `label_agent` input text and taken from a fresh instance whose
 *   FIRST export call is that `label_agent` (the start function included), before the session sees
 *   anything else. Only a session whose own first call is `label_agent` with the identical input is
 *   started from it, so the state it receives is the state it would have computed itself: the
 *   snapshot holds nothing that instance's own input did not determine.
 * - That holds only for a deterministic run. A capture is discarded (and the input marked as never
 *   snapshotted) when the run called any host import whose answer could differ between runs or that
 *   carries data from elsewhere: `call_backend` (upstream data, refusals), every WASI function
 *   (random numbers, clocks that advance per instance, stdio). `host_log` only sends data out; its
 *   lines are recorded and replayed by each restored session. The fuel check is the host's own
 *   metering and gives the guard nothing.
 * - Everything an instance holds is copied or proven unchanged: every memory (bytes and size), every
 *   defined mutable global (the preparer exports each, `wasm/caps.ts` `snapshotPlan`; modules with
 *   reference or v128 mutable globals, or with passive segments whose dropped state JS cannot see,
 *   carry no snapshot mark and are never snapshotted), and every table (compared entry by entry
 *   before and after the run; a run that changed one is not snapshotted). The preparer's fuel
 *   counter and "check allowed" globals are not part of the image: the host sets both at every call.
 * - Only modules with pooled memories are snapshotted: the image is read from the pool's write
 *   record (`host.ts`, "Memory pool"), i.e. every block the start function, `label_agent` or the
 *   host wrote since the instance was created, and its size is checked before anything is copied.
 * - Memories are restored over a FRESH instance (never a reused one; a pooled memory has every
 *   written block zeroed before the instance gets it): the new instance starts with the module's
 *   data segments, is grown to the snapshot's size and receives the image's blocks, which are
 *   recorded as written again. Bytes outside those blocks are equal in both. A pooled memory's page
 *   global (the size the guard sees) is part of the image.
 *
 * No Deno APIs here: this module also runs in workerd.
 *
 * @module
 */
import { SNAPSHOT_MAX_IMAGE_BYTES, SNAPSHOT_MAX_TABLE_ENTRIES } from "./limits.ts";
import { globalExportName, memoryExportName, pagesExportName, tableExportName } from "./wasm/caps.ts";

/** One log line written during the snapshot run, replayed by every session started from it. */
export interface SnapshotLog {
  level: "debug" | "info" | "warn" | "error";
  msg: string;
  fields: Record<string, unknown>;
}

/** The memory image of one memory: its size and the runs of bytes that differ from a fresh instance. */
export interface MemoryImage {
  bytes: number;
  /** A pooled memory's size as the guard saw it, in pages (its page global); absent otherwise. */
  pages?: number;
  runs: { offset: number; data: Uint8Array }[];
}

/** A finished snapshot. */
export interface InstanceSnapshot {
  /** One image per memory, in memory index order. */
  memories: MemoryImage[];
  /** Values of the defined mutable globals, in the order of {@link SnapshotShape.globals}. */
  globals: (number | bigint)[];
  /** What `label_agent` answered. */
  output: string;
  logs: SnapshotLog[];
  /** Bytes held in the image (what each restore copies). */
  imageBytes: number;
}

/** The reserved exports a snapshot reads and writes, found once per module. */
export interface SnapshotShape {
  memories: string[];
  /** Page globals of pooled memories, one per memory; empty when the module defines its memories. */
  pages: string[];
  tables: string[];
  globals: string[];
}

/**
 * The reserved export names of a prepared module's memories, tables and mutable globals, or null
 * when the module cannot be snapshotted: no snapshot mark (`markedGlobals` undefined), or the
 * exports do not match the mark.
 */
export function snapshotShape(
  module: WebAssembly.Module,
  markedGlobals: number | undefined,
): SnapshotShape | null {
  if (markedGlobals === undefined) return null;
  const exports = WebAssembly.Module.exports(module);
  // The reserved exports of one kind, in index order (`<prefix><index>`).
  const reserved = (kind: string, prefix: string) =>
    exports
      .filter((e) =>
        e.kind === kind && e.name.startsWith(prefix) && /^\d+$/.test(e.name.slice(prefix.length))
      )
      .map((e) => ({ name: e.name, index: Number(e.name.slice(prefix.length)) }))
      .sort((a, b) => a.index - b.index);
  const memories = reserved("memory", memoryExportName(0).slice(0, -1));
  const tables = reserved("table", tableExportName(0).slice(0, -1));
  const globals = reserved("global", globalExportName(0).slice(0, -1));
  const pages = reserved("global", pagesExportName(0).slice(0, -1));
  // Memories and tables are exported for every index from 0; globals for the mutable ones only.
  const dense = (xs: { index: number }[]) => xs.every((x, i) => x.index === i);
  if (memories.length === 0 || !dense(memories) || !dense(tables) || globals.length !== markedGlobals) {
    return null;
  }
  if (pages.length > 0 && (pages.length !== memories.length || !dense(pages))) return null;
  const names = (xs: { name: string }[]) => xs.map((x) => x.name);
  return { memories: names(memories), pages: names(pages), tables: names(tables), globals: names(globals) };
}

/** What a capture keeps from the fresh instance before its first call: its table entries. */
export interface PristineState {
  tables: unknown[][];
}

/**
 * Reads the pristine state of a fresh instance (before its start function and first call), or the
 * reason it is not snapshotted: more than `SNAPSHOT_MAX_TABLE_ENTRIES` table entries to compare.
 */
export function pristineState(exports: WebAssembly.Exports, shape: SnapshotShape): PristineState | string {
  const tables = shape.tables.map((n) => exports[n] as WebAssembly.Table);
  const entries = tables.reduce((a, t) => a + t.length, 0);
  if (entries > SNAPSHOT_MAX_TABLE_ENTRIES) return `more than ${SNAPSHOT_MAX_TABLE_ENTRIES} table entries`;
  return { tables: tables.map(tableEntries) };
}

/** Byte ranges `[from, to)` of one memory that the instance (or the host for it) wrote. */
export type WrittenRanges = (memory: number) => [number, number][];

function tableEntries(t: WebAssembly.Table): unknown[] {
  const out = new Array(t.length);
  for (let i = 0; i < t.length; i++) out[i] = t.get(i);
  return out;
}

/** How an instance's tables differ from `before` (a size or an entry), or null when they do not. */
export function tableChange(
  exports: WebAssembly.Exports,
  shape: SnapshotShape,
  before: unknown[][],
): string | null {
  for (let t = 0; t < shape.tables.length; t++) {
    const now = exports[shape.tables[t]] as WebAssembly.Table;
    if (now.length !== before[t].length) return `table ${t} changed size`;
    for (let i = 0; i < before[t].length; i++) {
      if (now.get(i) !== before[t][i]) return `table ${t} entry ${i} changed`;
    }
  }
  return null;
}

/**
 * Builds the snapshot of an instance that ran its start function and `label_agent` (and nothing
 * else) since `pristine` was read, from the memory pool's write record (`written`): every byte
 * outside those ranges still holds what a fresh instance holds. Returns the reason instead when the
 * instance cannot be snapshotted: a table changed, or the image is above `SNAPSHOT_MAX_IMAGE_BYTES`
 * (checked before anything is copied, so a capture costs at most that much).
 */
export function captureSnapshot(
  exports: WebAssembly.Exports,
  shape: SnapshotShape,
  pristine: PristineState,
  written: WrittenRanges,
  output: string,
  logs: SnapshotLog[],
): InstanceSnapshot | string {
  const changed = tableChange(exports, shape, pristine.tables);
  if (changed !== null) return changed;
  const ranges = shape.memories.map((_, m) => written(m));
  const imageBytes = ranges.flat().reduce((a, [from, to]) => a + to - from, 0);
  if (imageBytes > SNAPSHOT_MAX_IMAGE_BYTES) return `image above ${SNAPSHOT_MAX_IMAGE_BYTES} bytes`;
  const memories: MemoryImage[] = [];
  for (let m = 0; m < shape.memories.length; m++) {
    const now = new Uint8Array((exports[shape.memories[m]] as WebAssembly.Memory).buffer);
    const runs = ranges[m].map(([from, to]) => ({ offset: from, data: now.slice(from, to) }));
    const entry: MemoryImage = { bytes: now.length, runs };
    if (shape.pages.length > 0) entry.pages = (exports[shape.pages[m]] as WebAssembly.Global).value as number;
    memories.push(entry);
  }
  const globals = shape.globals.map((n) => (exports[n] as WebAssembly.Global).value as number | bigint);
  return { memories, globals, output, logs, imageBytes };
}

/**
 * Puts `snap` into a fresh instance: grows every memory to the snapshot's size, writes the image
 * and sets every mutable global. False (nothing usable done; the caller runs `label_agent`
 * itself) when a memory of the instance is already larger than in the snapshot, which a fresh
 * instance never is.
 */
export function restoreSnapshot(
  exports: WebAssembly.Exports,
  shape: SnapshotShape,
  snap: InstanceSnapshot,
): boolean {
  const mems = shape.memories.map((n) => exports[n] as WebAssembly.Memory);
  const pages = shape.pages.map((n) => exports[n] as WebAssembly.Global);
  for (let m = 0; m < mems.length; m++) {
    // A pooled memory may be larger than the guard sees (zeros beyond): compare what it sees.
    const image = snap.memories[m];
    if (
      pages.length > 0 ? (pages[m].value as number) > image.pages! : mems[m].buffer.byteLength > image.bytes
    ) {
      return false;
    }
  }
  for (let m = 0; m < mems.length; m++) {
    const mem = mems[m], image = snap.memories[m];
    const missing = (image.bytes - mem.buffer.byteLength) / 65_536;
    if (missing > 0) mem.grow(missing);
    const view = new Uint8Array(mem.buffer);
    for (const r of image.runs) view.set(r.data, r.offset);
    if (pages.length > 0) pages[m].value = image.pages!;
  }
  for (let g = 0; g < shape.globals.length; g++) {
    (exports[shape.globals[g]] as WebAssembly.Global).value = snap.globals[g];
  }
  return true;
}
