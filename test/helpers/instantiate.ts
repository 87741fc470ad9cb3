/**
 * Instantiating a module the way tests need it: a prepared module's pooled memories
 * (`mcp_edge_guard.memory_<i>`) are supplied as new memories, as the host supplies them to a
 * session that finds no idle memory. Unprepared modules get `imports` unchanged.
 *
 * @module
 */
import { FUEL_IMPORT_MODULE, pooledMemoryImports } from "../../src/guard/prepare.ts";

/** Instantiates `source` with `imports` plus new memories for its pooled-memory imports. */
export function instantiate(
  source: Uint8Array | WebAssembly.Module,
  imports: WebAssembly.Imports = {},
): WebAssembly.Instance {
  const mod = source instanceof WebAssembly.Module
    ? source
    : new WebAssembly.Module(source as Uint8Array<ArrayBuffer>);
  const memories = pooledMemoryImports(mod);
  if (Object.keys(memories).length === 0) return new WebAssembly.Instance(mod, imports);
  return new WebAssembly.Instance(mod, {
    ...imports,
    [FUEL_IMPORT_MODULE]: { ...imports[FUEL_IMPORT_MODULE], ...memories },
  });
}
