/**
 * JavaScript Promise Integration (JSPI): the ambient types TypeScript's lib lacks, and a runtime check.
 *
 * Deno 2.9.6 and workerd ship `WebAssembly.Suspending`, `WebAssembly.promising` and
 * `WebAssembly.SuspendError` unflagged, but TypeScript 6 has no declarations for them. A `class`
 * declaration is not assignable to `ImportValue`, so `Suspending` is declared as a constructor that
 * returns a plain function (which is what the import object needs).
 *
 * @module
 */
import { GuardError } from "./limits.ts";

declare global {
  namespace WebAssembly {
    /** Wraps an async host function so that wasm can call it synchronously and suspend until it settles. */
    // deno-lint-ignore no-explicit-any
    const Suspending: new (f: (...a: any[]) => unknown) => (...a: any[]) => unknown;
    /** Wraps a wasm export so that calling it returns a promise and lets `Suspending` imports suspend. */
    // deno-lint-ignore no-explicit-any
    function promising<F extends (...a: any[]) => any>(
      f: F,
    ): (...a: Parameters<F>) => Promise<Awaited<ReturnType<F>>>;
    /** Thrown when a `Suspending` import is reached outside `promising` (e.g. from a start function). */
    const SuspendError: ErrorConstructor;
  }
}

/**
 * Throws unless JSPI is available. Call it once at startup so that a runtime without JSPI fails
 * loudly instead of failing on the first guarded request.
 *
 * @example
 * ```ts
 * assertJspi(); // throws GuardError("runtime") on runtimes without WebAssembly.Suspending/promising
 * ```
 * @throws {GuardError} kind `"runtime"`, naming the missing API.
 */
export function assertJspi(): void {
  const wa = WebAssembly as unknown as Record<string, unknown>;
  const missing = ["Suspending", "promising"].filter((k) => typeof wa[k] !== "function");
  if (missing.length > 0) {
    throw new GuardError(
      "runtime",
      `this runtime lacks JSPI (WebAssembly.${missing.join(", WebAssembly.")}): ` +
        "wasm guards need JavaScript Promise Integration (Deno >= 2.4 / V8 >= 13.7, workerd, Chrome >= 137)",
    );
  }
}
