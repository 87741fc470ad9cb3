/**
 * A bump allocator that serves both the AssemblyScript runtime (`rt/arena.ts`) and the host's
 * `alloc`/`dealloc`.
 *
 * Nothing is freed one object at a time. Instead, every export call records the arena top on entry
 * and restores it on exit, and when the host has freed all of its buffers the arena drops back to its
 * base. A guard instance therefore uses the same memory for its thousandth call as for its first,
 * whether the host makes a fresh instance per call (our gateway) or keeps one for the process
 * lifetime (gh-aw-mcpg), and no data from one call is reachable in the next. The only state that
 * survives a call is what `state.ts` keeps in static memory.
 *
 * Every block carries the runtime's 4-byte size header (`BLOCK.mmInfo`) and payloads are 16-byte
 * aligned, as the AssemblyScript runtime expects. Initialisation is lazy, so the module needs no
 * start function.
 *
 * @module
 */

import { AL_MASK, BLOCK, BLOCK_OVERHEAD } from "~lib/rt/common";
import { host_log } from "./env";

/** Bytes in a WebAssembly page. */
const PAGE_BYTES: usize = 65536;

/** Arena top: the header address of the next block. 0 until the first allocation. */
let top: usize = 0;
/** Host buffers handed out by `hostAlloc` and not yet returned through `hostFree`. */
let hostBlocks: i32 = 0;

/** The first block header address: just above static data and the shadow stack, payload aligned. */
function arenaBase(): usize {
  return ((__heap_base + BLOCK_OVERHEAD + AL_MASK) & ~AL_MASK) - BLOCK_OVERHEAD;
}

/** Payload size for a request of `size` bytes, keeping the next payload 16-byte aligned. */
function payloadSize(size: usize): usize {
  return ((size + BLOCK_OVERHEAD + AL_MASK) & ~AL_MASK) - BLOCK_OVERHEAD;
}

/** Grows memory so that `end` is addressable. Returns false if the memory cannot grow. */
function ensureMemory(end: usize): bool {
  const have = <usize> memory.size() * PAGE_BYTES;
  if (end <= have) return true;
  const pages = <i32> ((end - have + PAGE_BYTES - 1) / PAGE_BYTES);
  return memory.grow(pages) >= 0;
}

/**
 * Allocates `size` bytes and returns the payload address, or 0 if memory cannot grow (or `size` is
 * absurd). The payload is not zeroed.
 */
export function arenaTryAlloc(size: usize): usize {
  if (size > 0x7fff0000) return 0;
  if (top == 0) top = arenaBase();
  const payload = payloadSize(size);
  const block = top;
  const end = block + BLOCK_OVERHEAD + payload;
  if (end < block || !ensureMemory(end)) return 0;
  changetype<BLOCK>(block).mmInfo = payload;
  top = end;
  return block + BLOCK_OVERHEAD;
}

/** Like `arenaTryAlloc`, but logs and traps when memory is exhausted (the runtime cannot handle 0). */
export function arenaAlloc(size: usize): usize {
  const ptr = arenaTryAlloc(size);
  if (ptr == 0) {
    const msg = "guard out of memory";
    const bytes = String.UTF8.encode(msg);
    host_log(3, <i32> changetype<usize>(bytes), bytes.byteLength);
    unreachable();
  }
  return ptr;
}

/** The payload capacity of the block at `ptr`. */
export function arenaCapacity(ptr: usize): usize {
  return changetype<BLOCK>(ptr - BLOCK_OVERHEAD).mmInfo;
}

/** Resizes the block at `ptr`: grows in place if it is the last block, else copies. */
export function arenaRealloc(ptr: usize, size: usize): usize {
  const capacity = arenaCapacity(ptr);
  if (size <= capacity) return ptr;
  if (ptr + capacity == top) {
    const payload = payloadSize(size);
    const end = ptr + payload;
    if (!ensureMemory(end)) return arenaAlloc(size); // traps
    changetype<BLOCK>(ptr - BLOCK_OVERHEAD).mmInfo = payload;
    top = end;
    return ptr;
  }
  const fresh = arenaAlloc(size);
  memory.copy(fresh, ptr, capacity);
  return fresh;
}

/** The current arena top, to be handed back to `arenaRelease` when an export call ends. */
export function arenaMark(): usize {
  if (top == 0) top = arenaBase();
  return top;
}

/** Frees everything allocated since `mark`. */
export function arenaRelease(mark: usize): void {
  top = mark;
}

/** The host's `alloc`: a block that stays valid until the host returns it. 0 if out of memory. */
export function hostAlloc(size: i32): i32 {
  if (size < 0) return 0;
  const ptr = arenaTryAlloc(<usize> size);
  if (ptr == 0) return 0;
  hostBlocks++;
  return <i32> ptr;
}

/**
 * The host's `dealloc`. The last block is popped; once every host block is back, the arena returns to
 * its base.
 */
export function hostFree(ptr: i32): void {
  if (ptr == 0) return;
  const p = <usize> ptr;
  if (p + arenaCapacity(p) == top) top = p - BLOCK_OVERHEAD;
  if (hostBlocks > 0) hostBlocks--;
  if (hostBlocks == 0) top = arenaBase();
}
