/**
 * The subset of Deno std's `@std/assert` that the tests use, built on `node:assert/strict`.
 *
 * JSR is not reachable from every machine this project is built on, and `@std/assert` is not on npm,
 * so the import map sends `@std/assert` here. The names and semantics follow std: switching back to
 * `jsr:@std/assert` is a one-line change in `deno.json`.
 *
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Error thrown by every assertion here (the same name std uses). */
export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

function fail(err: unknown, msg?: string): never {
  const base = err instanceof Error ? err.message : String(err);
  throw new AssertionError(msg ? `${msg}: ${base}` : base);
}

/** Asserts that `expr` is truthy. */
export function assert(expr: unknown, msg = "Expected expression to be truthy"): asserts expr {
  if (!expr) throw new AssertionError(msg);
}

/** Throws unconditionally (std's `fail`). */
export function unreachable(msg = "unreachable"): never {
  throw new AssertionError(msg);
}

/** Deep structural equality (std semantics: same prototype chain shape, strict primitives). */
export function assertEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  try {
    nodeAssert.deepStrictEqual(actual, expected);
  } catch (e) {
    fail(e, msg);
  }
}

/** Asserts that `actual` and `expected` are not deeply equal. */
export function assertNotEquals(actual: unknown, expected: unknown, msg?: string): void {
  try {
    nodeAssert.notDeepStrictEqual(actual, expected);
  } catch (e) {
    fail(e, msg);
  }
}

/** `Object.is` equality. */
export function assertStrictEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  if (!Object.is(actual, expected)) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}Values are not strictly equal: ${String(actual)} !== ${String(expected)}`,
    );
  }
}

/** Asserts that `actual` includes `expected` (a substring). */
export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  if (!actual.includes(expected)) {
    throw new AssertionError(
      msg ?? `Expected ${JSON.stringify(actual)} to contain ${JSON.stringify(expected)}`,
    );
  }
}

/** Asserts that `actual` matches the regular expression. */
export function assertMatch(actual: string, expected: RegExp, msg?: string): void {
  if (!expected.test(actual)) {
    throw new AssertionError(msg ?? `Expected ${JSON.stringify(actual)} to match ${expected}`);
  }
}

/** Asserts `actual >= expected` / `actual > expected` / `<=` / `<`. */
export function assertGreaterOrEqual(actual: number, expected: number, msg?: string): void {
  if (!(actual >= expected)) throw new AssertionError(msg ?? `Expected ${actual} >= ${expected}`);
}
export function assertGreater(actual: number, expected: number, msg?: string): void {
  if (!(actual > expected)) throw new AssertionError(msg ?? `Expected ${actual} > ${expected}`);
}
export function assertLessOrEqual(actual: number, expected: number, msg?: string): void {
  if (!(actual <= expected)) throw new AssertionError(msg ?? `Expected ${actual} <= ${expected}`);
}
export function assertLess(actual: number, expected: number, msg?: string): void {
  if (!(actual < expected)) throw new AssertionError(msg ?? `Expected ${actual} < ${expected}`);
}

/** Asserts that `actual` is an instance of `type`. */
export function assertInstanceOf<T>(
  actual: unknown,
  // deno-lint-ignore no-explicit-any
  type: abstract new (...args: any[]) => T,
  msg?: string,
): asserts actual is T {
  if (!(actual instanceof type)) {
    throw new AssertionError(msg ?? `Expected instance of ${type.name}, got ${String(actual)}`);
  }
}

/** Asserts that `actual` is neither `null` nor `undefined`. */
export function assertExists<T>(actual: T, msg?: string): asserts actual is NonNullable<T> {
  if (actual === null || actual === undefined) {
    throw new AssertionError(msg ?? `Expected a value, got ${actual}`);
  }
}

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

function checkError<E extends Error>(
  err: unknown,
  ErrorClass?: ErrorClass<E>,
  msgIncludes?: string,
): E {
  if (ErrorClass && !(err instanceof ErrorClass)) {
    throw new AssertionError(
      `Expected error to be instance of "${ErrorClass.name}", but was "${
        err instanceof Error ? err.constructor.name + ": " + err.message : String(err)
      }"`,
    );
  }
  if (msgIncludes !== undefined) {
    const m = err instanceof Error ? err.message : String(err);
    if (!m.includes(msgIncludes)) {
      throw new AssertionError(
        `Expected error message to include ${JSON.stringify(msgIncludes)}, but got ${JSON.stringify(m)}`,
      );
    }
  }
  return err as E;
}

/** Calls `fn`, expects it to throw (optionally an `ErrorClass` whose message includes `msgIncludes`). */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  ErrorClass?: ErrorClass<E>,
  msgIncludes?: string,
): E {
  try {
    fn();
  } catch (e) {
    return checkError(e, ErrorClass, msgIncludes);
  }
  throw new AssertionError("Expected function to throw.");
}

/** Awaits `fn()`, expects it to reject (optionally an `ErrorClass` whose message includes `msgIncludes`). */
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  ErrorClass?: ErrorClass<E>,
  msgIncludes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    return checkError(e, ErrorClass, msgIncludes);
  }
  throw new AssertionError("Expected function to reject.");
}
