/**
 * Small helpers shared across the gateway's modules. Runtime-neutral (Deno and Workers).
 *
 * @module
 */

/** A plain JSON object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The message of an error, or the value as text. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Lower-case hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * `n` cryptographically random bytes as hex (2n characters).
 *
 * @example
 * ```ts
 * randomHex(32); // "9f2c…" (64 characters)
 * ```
 */
export function randomHex(n: number): string {
  return toHex(crypto.getRandomValues(new Uint8Array(n)));
}

const encoder = new TextEncoder();

/** SHA-256 of the UTF-8 text, as hex. */
export async function sha256Hex(text: string): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text))));
}

/**
 * Settles like `p`, or rejects with `signal`'s reason as soon as it aborts (at once when it already
 * has); `onAbort` runs first in that case. Listeners are removed when `p` settles.
 *
 * @example
 * ```ts
 * const value = await raceSignal(fetchSomething(), AbortSignal.timeout(1000));
 * ```
 */
export function raceSignal<T>(p: Promise<T>, signal: AbortSignal, onAbort?: () => void): Promise<T> {
  if (signal.aborted) {
    onAbort?.();
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => {
      onAbort?.();
      reject(signal.reason);
    };
    signal.addEventListener("abort", abort, { once: true });
    Promise.resolve(p).then(
      (v) => {
        signal.removeEventListener("abort", abort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", abort);
        reject(e);
      },
    );
  });
}
