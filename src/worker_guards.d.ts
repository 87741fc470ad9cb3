/**
 * Types of `worker_guards.js`, which `deno task build` (scripts/build.ts) generates next to the
 * bundled Worker in `dist/`: one `import source <x> from "./guards/<name>.wasm"` per configured WASM
 * guard (each a compiled, prepared `WebAssembly.Module`) and this map from guard name to module.
 */
export declare const guards: Readonly<Record<string, WebAssembly.Module>>;
