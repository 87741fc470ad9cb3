import { assertEquals, assertRejects } from "@std/assert";
import {
  AgentLabelLimitError,
  type AgentLabelStore,
  DenoKvAgentLabelStore,
  type KvLike,
  MAX_AGENT_TAGS,
  MAX_AGENTS,
  MemoryAgentLabelStore,
  mergeAgentLabels,
  propagateLabels,
} from "../../src/difc/store.ts";
import {
  AgentLabelsObject,
  DurableObjectAgentLabelStore,
  type DurableObjectNamespaceLike,
} from "../../src/difc/store_do.ts";

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

/** An in-process Durable Object namespace: one {@link AgentLabelsObject} per name, storage in a Map. */
function fakeNamespace(): DurableObjectNamespaceLike {
  const objects = new Map<string, AgentLabelsObject>();
  return {
    idFromName: (name: string) => name,
    get(id: never) {
      const name = id as string;
      let o = objects.get(name);
      if (!o) {
        const data = new Map<string, unknown>();
        o = new AgentLabelsObject({
          storage: {
            get: <T>(k: string) => Promise.resolve(structuredClone(data.get(k)) as T | undefined),
            put: (k: string, v: unknown) => Promise.resolve(void data.set(k, v)), // objects write fresh values
          },
          blockConcurrencyWhile: (fn) => fn(),
        });
        objects.set(name, o);
      }
      const obj = o;
      return { fetch: (input: string, init?: RequestInit) => obj.fetch(new Request(input, init)) };
    },
  };
}

Deno.test("DurableObjectAgentLabelStore satisfies the store contract (in-process objects)", async () => {
  await storeContract(new DurableObjectAgentLabelStore(fakeNamespace()));
});

const tags = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

/** Every store refuses to pass MAX_AGENT_TAGS per set, changes nothing, and keeps serving the agent. */
async function tagLimitContract(store: AgentLabelStore): Promise<void> {
  await store.addLabels("a", { secrecy: tags("s", MAX_AGENT_TAGS), integrity: tags("i", MAX_AGENT_TAGS) });
  const before = await store.get("a");
  for (
    const update of [
      () => store.propagate("a", { secrecy: ["one-more"], integrity: [] }),
      () => store.addLabels("a", { secrecy: [], integrity: ["one-more"] }, "k"),
    ]
  ) {
    const e = await assertRejects(update, AgentLabelLimitError, `over MAX_AGENT_TAGS (${MAX_AGENT_TAGS})`);
    assertEquals([e.limit, e.value], ["MAX_AGENT_TAGS", MAX_AGENT_TAGS]);
  }
  assertEquals(await store.get("a"), before, "nothing dropped, nothing added");
  // Updates that stay within the limit still apply (a known tag, an integrity drop).
  await store.propagate("a", { secrecy: ["s0"], integrity: tags("i", 10) });
  assertEquals((await store.get("a")).integrity.length, 10);
  // The refused once-key was not recorded: the same union applies once there is room.
  assertEquals(
    (await store.addLabels("a", { secrecy: [], integrity: ["one-more"] }, "k")).integrity.length,
    11,
  );
}

Deno.test("store limits: MAX_AGENT_TAGS per set is refused (never truncated) by every store", async () => {
  await tagLimitContract(new MemoryAgentLabelStore());
  await tagLimitContract(new DurableObjectAgentLabelStore(fakeNamespace()));
  if (!KV_MISSING) {
    const kv = await openKv!(":memory:");
    try {
      await tagLimitContract(new DenoKvAgentLabelStore(kv));
    } finally {
      kv.close();
    }
  }
});

Deno.test("store limits: a full in-memory store refuses new agents and never evicts known ones", async () => {
  const store = new MemoryAgentLabelStore({ maxAgents: 2 });
  await store.propagate("a", { secrecy: ["private:a"], integrity: [] });
  await store.addLabels("b", { secrecy: ["private:b"], integrity: [] });
  const e = await assertRejects(
    () => store.addLabels("c", { secrecy: [], integrity: [] }),
    AgentLabelLimitError,
    'the label store holds 2 agents (MAX_AGENTS); agent "c" cannot be recorded',
  );
  assertEquals([e.limit, e.value], ["MAX_AGENTS", 2]);
  await assertRejects(() => store.propagate("c", { secrecy: ["x"], integrity: [] }), AgentLabelLimitError);
  assertEquals(await store.get("a"), { secrecy: ["private:a"], integrity: [] });
  assertEquals(Object.keys(await store.snapshot()), ["a", "b"]);
  await store.propagate("a", { secrecy: ["private:a2"], integrity: [] });
  assertEquals((await store.get("a")).secrecy, ["private:a", "private:a2"], "known agents keep working");
});

Deno.test("store limits: the Durable Object index refuses agents beyond MAX_AGENTS", async () => {
  const ns = fakeNamespace();
  const index = ns.get(ns.idFromName("index") as never);
  const register = (agentId: string) =>
    index.fetch("https://agent-labels.internal/register", {
      method: "POST",
      body: JSON.stringify({ op: "register", agentId }),
    });
  for (let i = 0; i < MAX_AGENTS; i++) await (await register(`agent-${i}`)).body?.cancel();
  const store = new DurableObjectAgentLabelStore(ns);
  await store.propagate("agent-0", { secrecy: ["private:x"], integrity: [] }); // known: fine
  const e = await assertRejects(
    () => store.propagate("one-too-many", { secrecy: ["private:x"], integrity: [] }),
    AgentLabelLimitError,
    `the agent index holds ${MAX_AGENTS} agents (MAX_AGENTS)`,
  );
  assertEquals([e.limit, e.value], ["MAX_AGENTS", MAX_AGENTS]);
  assertEquals(await store.get("one-too-many"), { secrecy: [], integrity: [] }, "nothing recorded");
});

/**
 * The operator's reset, in every store: the agent's labels and once-keys are forgotten (the same
 * `label_agent` union applies again), other agents are untouched, the previous labels are returned.
 * A Durable Object store keeps a reset agent in its index (listed with empty labels).
 */
async function resetContract(store: AgentLabelStore, resetAgentsStayListed: boolean): Promise<void> {
  await store.addLabels("r1", { secrecy: ["private:acme"], integrity: ["approved:acme"] }, "policy-once");
  await store.propagate("r1", { secrecy: ["private:other"], integrity: [] });
  await store.addLabels("r2", { secrecy: ["s2"], integrity: [] });
  assertEquals(await store.reset("r1"), { secrecy: ["private:acme", "private:other"], integrity: [] });
  assertEquals(await store.get("r1"), { secrecy: [], integrity: [] });
  assertEquals(await store.get("r2"), { secrecy: ["s2"], integrity: [] });
  const snap = await store.snapshot();
  assertEquals(snap.r2, { secrecy: ["s2"], integrity: [] });
  if (resetAgentsStayListed) assertEquals(snap.r1, { secrecy: [], integrity: [] });
  else assertEquals("r1" in snap, false);
  // The once-key went with the record: the policy's union applies again on the next call.
  assertEquals(
    await store.addLabels("r1", { secrecy: ["private:acme"], integrity: ["approved:acme"] }, "policy-once"),
    {
      secrecy: ["private:acme"],
      integrity: ["approved:acme"],
    },
  );
  assertEquals((await store.snapshot()).r1, { secrecy: ["private:acme"], integrity: ["approved:acme"] });
  assertEquals(await store.reset("never-seen"), { secrecy: [], integrity: [] });
}

Deno.test("reset: memory, Deno KV and Durable Object stores forget one agent and nothing else", async () => {
  await resetContract(new MemoryAgentLabelStore(), false);
  await resetContract(new DurableObjectAgentLabelStore(fakeNamespace()), true);
  if (!KV_MISSING) {
    const kv = await openKv!(":memory:");
    try {
      await resetContract(new DenoKvAgentLabelStore(kv), false);
    } finally {
      kv.close();
    }
  }
});

Deno.test("reset: a full in-memory store makes room again for a new agent", async () => {
  const store = new MemoryAgentLabelStore({ maxAgents: 1 });
  await store.addLabels("a", { secrecy: ["x"], integrity: [] });
  await assertRejects(() => store.addLabels("b", { secrecy: [], integrity: [] }), AgentLabelLimitError);
  await store.reset("a");
  assertEquals(await store.addLabels("b", { secrecy: ["y"], integrity: [] }), {
    secrecy: ["y"],
    integrity: [],
  });
});
