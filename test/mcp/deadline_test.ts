import { assert, assertEquals } from "@std/assert";
import { after } from "../../src/mcp/deadline.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("deadline: fires once, not before its duration; a cancelled one never fires", async () => {
  const t0 = performance.now();
  let fired = 0;
  let at = 0;
  const d = after(30, () => {
    fired++;
    at = performance.now();
  });
  let never = 0;
  after(30, () => never++).cancel();
  await sleep(80);
  assertEquals(fired, 1);
  assertEquals(never, 0);
  assert(at - t0 >= 30, `fired after ${at - t0} ms`);
  d.cancel(); // after firing: nothing happens
  assertEquals(fired, 1);
});

Deno.test("deadline: durations mixed, none early; one set while firing fires too", async () => {
  const t0 = performance.now();
  const fired: Record<string, number> = {};
  const at = (name: string) => () => fired[name] = performance.now() - t0;
  after(60, at("60"));
  after(20, () => {
    at("20")();
    const t1 = performance.now();
    after(10, () => fired["20+10"] = performance.now() - t1);
  });
  after(40, at("40"));
  await sleep(150);
  assertEquals(Object.keys(fired).sort(), ["20", "20+10", "40", "60"]);
  for (const [name, ms] of Object.entries(fired)) {
    assert(ms >= Number(name.split("+").at(-1)), `${name} fired after ${ms} ms`);
  }
});

Deno.test("deadline: thousands cancelled around a few pending: exactly the pending fire, none early", async () => {
  const t0 = performance.now();
  const fired: number[] = [];
  const early: number[] = [];
  const all = [];
  for (let i = 0; i < 5000; i++) {
    const due = performance.now() + 40;
    all.push(after(40, () => {
      fired.push(i);
      if (performance.now() < due) early.push(i);
    }));
    // Cancelled as calls finish, most long before their deadline.
    if (i % 500 !== 0) all[i].cancel();
  }
  await sleep(Math.max(0, 120 - (performance.now() - t0)));
  assertEquals(fired, [0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500]);
  assertEquals(early, []);
});
