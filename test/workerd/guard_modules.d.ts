/**
 * Types of `guard_modules.js`, which guard_workerd_test.ts writes next to the bundled worker: it
 * imports the prepared guards with `import source x from "./x.wasm"` (a `WebAssembly.Module` each)
 * and holds the record of each as the build's manifest would.
 */
import type { PreparedRecord } from "../../src/guard/prepare.ts";

export declare const modules: Readonly<Record<string, WebAssembly.Module>>;
export declare const records: Readonly<Record<string, PreparedRecord>>;
