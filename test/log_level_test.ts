import { assert, assertEquals } from "@std/assert";
import { jsonLogSink, logWrites } from "../src/log.ts";

Deno.test("logWrites: a JSON sink says which levels it writes; other sinks get everything", () => {
  const lines: string[] = [];
  const info = jsonLogSink((l) => lines.push(l), "info");
  assert(!logWrites(info, "debug"));
  assert(logWrites(info, "info") && logWrites(info, "warn") && logWrites(info, "error"));
  const debug = jsonLogSink((l) => lines.push(l), "debug");
  assert(logWrites(debug, "debug"));
  const warn = jsonLogSink((l) => lines.push(l), "warn");
  assert(!logWrites(warn, "info") && logWrites(warn, "warn"));
  assert(logWrites(() => {}, "debug"));
  info({ level: "debug", msg: "dropped" });
  info({ level: "info", msg: "kept" });
  assertEquals(lines.length, 1);
});
