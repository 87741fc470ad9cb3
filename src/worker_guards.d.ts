/**
 * Types of `worker_guards.js`, the manifest `deno task build` (scripts/build.ts) generates next to the
 * bundled Worker in `dist/`: one `import source <x> from "./guards/<name>.wasm"` per configured WASM
 * guard (each a compiled, prepared `WebAssembly.Module`), the map from guard name to module, and the
 * record of what the build prepared for each (the mark text the module must carry, the SHA-256 of
 * the prepared bytes).
 */
import type { PreparedRecord } from "./guard/prepare.ts";

export declare const guards: Readonly<Record<string, WebAssembly.Module>>;
export declare const records: Readonly<Record<string, PreparedRecord>>;
