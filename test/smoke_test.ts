import { assertEquals, assertThrows } from "@std/assert";
import { DEFAULT_LIMITS, resolveLimits } from "../src/guard/limits.ts";

Deno.test("resolveLimits merges over the reference defaults", () => {
  const l = resolveLimits({ fuel: 5 });
  assertEquals(l.fuel, 5);
  assertEquals(l.maxMemoryPages, 512);
  assertEquals(l.maxBackendCalls, DEFAULT_LIMITS.maxBackendCalls);
});

Deno.test("resolveLimits names the bad field", () => {
  assertThrows(() => resolveLimits({ maxBackendCalls: -1 }), RangeError, "limits.maxBackendCalls");
  assertThrows(
    () => resolveLimits({ initialOutputBytes: 32 << 20 }),
    RangeError,
    "limits.initialOutputBytes",
  );
});
