import { assertEquals } from "@std/assert";
import {
  type AgentLabelStore,
  DenoKvAgentLabelStore,
  type KvLike,
  MemoryAgentLabelStore,
  mergeAgentLabels,
  propagateLabels,
} from "../../src/difc/store.ts";

/** Deno.openKv needs `--unstable-kv` (or deno.json `"unstable": ["kv"]`). */
const openKv =
  (Deno as unknown as { openKv?: (path?: string) => Promise<KvLike & { close(): void }> }).openKv;
const KV_MISSING = typeof openKv !== "function";

Deno.test("merge and propagate rules", () => {
  assertEquals(
    mergeAgentLabels({ secrecy: ["b"], integrity: ["x"] }, { secrecy: ["a", "b"], integrity: ["y"] }),
    {
      secrecy: ["a", "b"],
      integrity: ["x", "y"],
    },
  );
  assertEquals(
    propagateLabels({ secrecy: ["b"], integrity: ["x", "y"] }, { secrecy: ["a"], integrity: ["y", "z"] }),
    {
      secrecy: ["a", "b"],
      integrity: ["y"],
    },
  );
});

/** The behaviour every store must have. */
async function storeContract(store: AgentLabelStore): Promise<void> {
  assertEquals(await store.get("nobody"), { secrecy: [], integrity: [] });

  // label_agent union, idempotent
  await store.addLabels("a1", { secrecy: ["private:acme"], integrity: ["none:acme", "approved:acme"] });
  assertEquals(await store.addLabels("a1", { secrecy: ["private:acme"], integrity: ["none:acme"] }), {
    secrecy: ["private:acme"],
    integrity: ["approved:acme", "none:acme"],
  });

  // propagate: secrecy grows, integrity shrinks
  await store.propagate("a1", { secrecy: ["private:other"], integrity: ["none:acme", "unrelated"] });
  assertEquals(await store.get("a1"), {
    secrecy: ["private:acme", "private:other"],
    integrity: ["none:acme"],
  });
  // secrecy never shrinks, integrity never grows back through propagate
  await store.propagate("a1", { secrecy: [], integrity: ["none:acme", "approved:acme"] });
  assertEquals(await store.get("a1"), {
    secrecy: ["private:acme", "private:other"],
    integrity: ["none:acme"],
  });
  // an empty overall clears integrity (reference semantics)
  await store.propagate("a1", { secrecy: [], integrity: [] });
  assertEquals((await store.get("a1")).integrity, []);

  // agents are independent; returned values are copies
  const got = await store.get("a1");
  got.secrecy.push("mutated");
  assertEquals((await store.get("a1")).secrecy, ["private:acme", "private:other"]);
  assertEquals(await store.get("a2"), { secrecy: [], integrity: [] });

  // concurrent updates: none is lost
  const N = 40;
  await Promise.all(
    Array.from(
      { length: N },
      (_, i) => store.propagate("c", { secrecy: [`s${String(i).padStart(2, "0")}`], integrity: [] }),
    ),
  );
  assertEquals((await store.get("c")).secrecy.length, N);
  await store.addLabels("d", { secrecy: [], integrity: Array.from({ length: N }, (_, i) => `i${i}`) });
  await Promise.all(
    Array.from(
      { length: N },
      (_, i) => store.propagate("d", { secrecy: [`t${i}`], integrity: [`i${i}`, `i${(i + 1) % N}`] }),
    ),
  );
  const d = await store.get("d");
  assertEquals(d.secrecy.length, N);
  assertEquals(d.integrity, []); // every intersection applied: nothing survives all of them

  // onceKey: a label_agent union is applied at most once per (agent, key), even concurrently
  await store.addLabels("o", { secrecy: [], integrity: ["i"] }, "k1");
  await store.propagate("o", { secrecy: [], integrity: [] });
  assertEquals(await store.addLabels("o", { secrecy: ["s"], integrity: ["i"] }, "k1"), {
    secrecy: [],
    integrity: [],
  });
  assertEquals(await store.addLabels("o", { secrecy: [], integrity: ["i"] }, "k2"), {
    secrecy: [],
    integrity: ["i"],
  });
  await Promise.all(
    Array.from({ length: 10 }, (_, i) => store.addLabels("p", { secrecy: [`s${i}`], integrity: [] }, "same")),
  );
  assertEquals((await store.get("p")).secrecy.length, 1);

  const snap = await store.snapshot();
  assertEquals(Object.keys(snap).sort(), ["a1", "c", "d", "o", "p"]);
  assertEquals(snap.o, { secrecy: [], integrity: ["i"] }); // bookkeeping keys are not exposed
}

Deno.test("MemoryAgentLabelStore satisfies the store contract", async () => {
  await storeContract(new MemoryAgentLabelStore());
});

Deno.test({
  name: "DenoKvAgentLabelStore satisfies the store contract (in-memory KV)",
  ignore: KV_MISSING,
  async fn() {
    const kv = await openKv!(":memory:");
    try {
      await storeContract(new DenoKvAgentLabelStore(kv));
    } finally {
      kv.close();
    }
  },
});

Deno.test({
  name: "DenoKvAgentLabelStore persists across handles and isolates by prefix",
  ignore: KV_MISSING,
  async fn() {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/labels.kv`;
    try {
      const kv1 = await openKv!(path);
      try {
        await new DenoKvAgentLabelStore(kv1).addLabels("a", { secrecy: ["private:x"], integrity: ["i"] });
        await new DenoKvAgentLabelStore(kv1, ["other"]).addLabels("a", { secrecy: ["zzz"], integrity: [] });
      } finally {
        kv1.close();
      }
      const kv2 = await openKv!(path);
      try {
        const store = new DenoKvAgentLabelStore(kv2);
        assertEquals(await store.get("a"), { secrecy: ["private:x"], integrity: ["i"] });
        assertEquals(await store.snapshot(), { a: { secrecy: ["private:x"], integrity: ["i"] } });
      } finally {
        kv2.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "DenoKvAgentLabelStore: two stores on two handles of one file race without losing updates",
  ignore: KV_MISSING,
  async fn() {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/race.kv`;
    const kvA = await openKv!(path);
    const kvB = await openKv!(path);
    try {
      const a = new DenoKvAgentLabelStore(kvA);
      const b = new DenoKvAgentLabelStore(kvB);
      await Promise.all(
        Array.from(
          { length: 30 },
          (_, i) => (i % 2 ? a : b).propagate("agent", { secrecy: [`s${i}`], integrity: [] }),
        ),
      );
      assertEquals((await a.get("agent")).secrecy.length, 30);
    } finally {
      kvA.close();
      kvB.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
