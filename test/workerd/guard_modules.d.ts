/**
 * Types of `guard_modules.js`, which guard_workerd_test.ts writes next to the bundled worker: it
 * imports the prepared guards with `import source x from "./x.wasm"` (a `WebAssembly.Module` each).
 */
export declare const backend: WebAssembly.Module;
export declare const spin: WebAssembly.Module;
export declare const grow: WebAssembly.Module;
