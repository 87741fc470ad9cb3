// deno-fmt-ignore-file
// (deno fmt would drop the AssemblyScript function decorators below.)
/**
 * The AssemblyScript runtime of this guard (`--runtime assembly/rt/arena`): managed objects live in
 * the per-call arena of `../arena.ts`, and there is no garbage collector; memory is reclaimed when an
 * export call ends. Unlike the stock runtimes it needs no start function.
 *
 * @module
 */

import { OBJECT, OBJECT_OVERHEAD, BLOCK_OVERHEAD, OBJECT_MAXSIZE } from "~lib/rt/common";
import { arenaAlloc, arenaRealloc } from "../arena";

// @ts-ignore: decorator
@global @unsafe
function __alloc(size: usize): usize {
  return arenaAlloc(size);
}

// @ts-ignore: decorator
@global @unsafe
function __realloc(ptr: usize, size: usize): usize {
  return arenaRealloc(ptr, size);
}

// @ts-ignore: decorator
@global @unsafe
function __free(_ptr: usize): void {
  // Reclaimed when the export call ends.
}

// @ts-ignore: decorator
@global @unsafe
function __new(size: usize, id: u32): usize {
  if (size > OBJECT_MAXSIZE) unreachable();
  const ptr = arenaAlloc(OBJECT_OVERHEAD + size);
  const object = changetype<OBJECT>(ptr - BLOCK_OVERHEAD);
  object.gcInfo = 0;
  object.gcInfo2 = 0;
  object.rtId = id;
  object.rtSize = <u32>size;
  return ptr + OBJECT_OVERHEAD;
}

// @ts-ignore: decorator
@global @unsafe
function __renew(oldPtr: usize, size: usize): usize {
  if (size > OBJECT_MAXSIZE) unreachable();
  const ptr = arenaRealloc(oldPtr - OBJECT_OVERHEAD, OBJECT_OVERHEAD + size);
  changetype<OBJECT>(ptr - BLOCK_OVERHEAD).rtSize = <u32>size;
  return ptr + OBJECT_OVERHEAD;
}

// @ts-ignore: decorator
@global @unsafe
function __link(_parentPtr: usize, _childPtr: usize, _expectMultiple: bool): void {
  // No collector, no write barrier.
}

// @ts-ignore: decorator
@global @unsafe
function __pin(ptr: usize): usize {
  return ptr;
}

// @ts-ignore: decorator
@global @unsafe
function __unpin(_ptr: usize): void {
  // Nothing is ever moved or collected.
}

// @ts-ignore: decorator
@global @unsafe
function __visit(_ptr: usize, _cookie: u32): void {
  // No collector.
}

// @ts-ignore: decorator
@global @unsafe
function __collect(): void {
  // Memory is reclaimed per export call by the arena.
}
