import { assertEquals, assertThrows } from "@std/assert";
import { jsonLogSink } from "../src/log.ts";

Deno.test("log: records below the minimum level are dropped; decision records (no level) always kept", () => {
  const lines: string[] = [];
  const log = jsonLogSink((l) => lines.push(l), "warn");
  log({ level: "debug", msg: "a" });
  log({ level: "info", msg: "b" });
  log({ level: "warn", msg: "c" });
  log({ level: "error", msg: "d" });
  log({ event: "tool_call", decision: "allow" });
  const parsed = lines.map((l) => JSON.parse(l));
  assertEquals(parsed.map((r) => r.msg ?? r.event), ["c", "d", "tool_call"]);
  assertEquals(typeof parsed[0].time, "string");
  assertThrows(() => jsonLogSink(() => {}, "verbose"), RangeError, "log level must be one of");
});

Deno.test("log: each line has one time field; a record's own timestamp becomes it", () => {
  const lines: string[] = [];
  const log = jsonLogSink((l) => lines.push(l));
  log({ timestamp: "2026-01-02T03:04:05.000Z", event: "tool_call", decision: "allow" });
  log({ level: "info", event: "config" });
  const [decision, plain] = lines.map((l) => JSON.parse(l));
  assertEquals(decision, { time: "2026-01-02T03:04:05.000Z", event: "tool_call", decision: "allow" });
  assertEquals(Object.keys(plain), ["time", "level", "event"]);
  assertEquals(lines.filter((l) => l.includes('"timestamp"')), []);
});

Deno.test("log: empty records, records with their own time field, a timestamp that is not a string", () => {
  const lines: string[] = [];
  const log = jsonLogSink((l) => lines.push(l));
  log({});
  log({ time: "own", event: "x" });
  log({ timestamp: 5, event: "y" });
  const [empty, own, odd] = lines.map((l) => JSON.parse(l));
  assertEquals(Object.keys(empty), ["time"]);
  assertEquals(own, { time: "own", event: "x" });
  assertEquals(lines[1].indexOf('"time"'), lines[1].lastIndexOf('"time"'), "one time field");
  assertEquals(Object.keys(odd), ["time", "event"]);
  assertEquals(typeof odd.time, "string");
});
