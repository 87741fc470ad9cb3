/**
 * The per-call price of a fresh guard instance under several host configurations (new memories per
 * instance, the memory pool, the pool plus label-agent snapshots), for several guards side by side:
 * used by `model_bench.ts` (§2) and `guard_bench.ts` (§5).
 *
 * For each guard, every round runs, in an order that rotates each round:
 * - each variant's fresh request: open + label_agent + label_resource + label_response on a new
 *   instance (label_agent restored when that variant has snapshots);
 * - each variant's reused instance: label_resource + label_response on one long-lived instance of
 *   that variant's module (the floor: no instancing).
 * Instancing cost = median(fresh) − median(reused of the same variant); share = cost / median(fresh).
 *
 * @module
 */
import type { BackendCaller, GuardContext } from "../src/difc/guard.ts";
import { loadGuardModule, WasmGuard } from "../src/guard/host.ts";
import type { GuardLimits } from "../src/guard/limits.ts";
import { prepareGuard, type PrepareOptions } from "../src/guard/prepare.ts";
import { median } from "./lib.ts";

/** One guard under test: its bytes and the three inputs of one request. */
export interface InstancingCase {
  name: string;
  bytes: Uint8Array;
  backend: BackendCaller;
  agent: string;
  /** A new input per call (e.g. a new repository, so no visibility cache can answer). */
  resource: () => string;
  response: () => string;
}

/** A host configuration a fresh request runs under. */
export interface InstancingVariant {
  label: string;
  limits: Partial<GuardLimits>;
  /** Preparation options (default: `prepareGuard`'s defaults, i.e. pooled memories). */
  prepare?: PrepareOptions;
}

/**
 * The variants every report shows, each adding one mechanism: as before the memory pool (memories of
 * the module's own, no write recording, a new instance per request), the memory pool, label-agent
 * snapshots, the instance pool (an instance reused after it is set back to a new one's state), and
 * the default limits, which add the call memo (`label_agent` is answered from the memo and replayed
 * when `label_resource` misses, as it does for every request here: a new repository each time).
 */
export const INSTANCING_VARIANTS: readonly InstancingVariant[] = [
  {
    label: "new memories",
    limits: { labelAgentSnapshots: 0, callMemoBytes: 0, idleInstances: 0 },
    prepare: { poolMemories: false },
  },
  { label: "pooled", limits: { labelAgentSnapshots: 0, callMemoBytes: 0, idleInstances: 0 } },
  { label: "+ snapshots", limits: { labelAgentSnapshots: 16, callMemoBytes: 0, idleInstances: 0 } },
  { label: "+ instance pool", limits: { labelAgentSnapshots: 16, callMemoBytes: 0 } },
  { label: "defaults (+ call memo)", limits: {} },
];

/** Fresh-request samples (ms) of one variant. */
export interface FreshSamples {
  open: number[];
  agent: number[];
  total: number[];
}

/** Samples (ms) of one guard. */
export interface InstancingSamples {
  name: string;
  moduleBytes: number;
  /** One per variant, in {@link INSTANCING_VARIANTS} order. */
  fresh: FreshSamples[];
  /** label_resource + label_response on one long-lived instance of each variant's module. */
  reused: number[][];
  /** The snapshot a variant with snapshots holds at the end (image bytes); null without one. */
  snapshotBytes: number | null;
}

/** Medians and shares of one variant of one guard (cost and share against its own reused instance). */
export interface VariantSummary {
  label: string;
  reused: number;
  total: number;
  open: number;
  agent: number;
  cost: number;
  share: number;
}

/** Medians and shares of one guard. */
export interface InstancingSummary {
  name: string;
  variants: VariantSummary[];
}

const ctx = (backend: BackendCaller): GuardContext => ({
  signal: new AbortController().signal,
  backend,
  log: () => {},
});

/** Runs the interleaved measurement; `warmup` rounds are discarded. */
export async function measureInstancing(
  cases: InstancingCase[],
  samples: number,
  warmup: number,
  variants: readonly InstancingVariant[] = INSTANCING_VARIANTS,
): Promise<InstancingSamples[]> {
  const guards: { c: InstancingCase; loaded: WasmGuard[]; s: InstancingSamples }[] = [];
  for (const c of cases) {
    const loaded = await Promise.all(
      variants.map(async (v) =>
        v.prepare === undefined
          ? await loadGuardModule(c.bytes, { name: c.name, limits: v.limits })
          : new WasmGuard(await WebAssembly.compile(prepareGuard(c.bytes, v.prepare).bytes), {
            name: c.name,
            limits: v.limits,
          })
      ),
    );
    variants.forEach((v, i) => {
      if ((v.limits.labelAgentSnapshots ?? 0) > 0 && loaded[i].snapshotShape === null) {
        throw new Error(`${c.name}: the module cannot be snapshotted`);
      }
    });
    guards.push({
      c,
      loaded,
      s: {
        name: c.name,
        moduleBytes: c.bytes.length,
        fresh: variants.map(() => ({ open: [], agent: [], total: [] })),
        reused: variants.map(() => []),
        snapshotBytes: null,
      },
    });
  }
  const reused = await Promise.all(guards.map((g) =>
    Promise.all(g.loaded.map(async (guard) => {
      const s = guard.open(ctx(g.c.backend));
      await s.labelAgent(g.c.agent);
      return s;
    }))
  ));
  for (let i = 0; i < warmup + samples; i++) {
    const keep = i >= warmup;
    for (let gi = 0; gi < guards.length; gi++) {
      const g = guards[gi];
      const steps: (() => Promise<void>)[] = [
        ...g.loaded.map((guard, vi) => () => fresh(guard, g.c, keep ? g.s.fresh[vi] : null)),
        ...reused[gi].map((s, vi) => async () => {
          const t0 = performance.now();
          await s.labelResource(g.c.resource());
          await s.labelResponse(g.c.response());
          if (keep) g.s.reused[vi].push(performance.now() - t0);
        }),
      ];
      for (let k = 0; k < steps.length; k++) await steps[(i + k) % steps.length]();
    }
  }
  for (const s of reused.flat()) s.close();
  for (const g of guards) {
    for (const [vi, v] of variants.entries()) {
      if ((v.limits.labelAgentSnapshots ?? 0) === 0) continue;
      const st = g.loaded[vi].snapshotStatus().find((x) => x.state === "ready");
      if (st === undefined) throw new Error(`${g.c.name}: no snapshot was taken`);
      g.s.snapshotBytes = st.imageBytes ?? null;
    }
  }
  return guards.map((g) => g.s);
}

async function fresh(guard: WasmGuard, c: InstancingCase, into: FreshSamples | null): Promise<void> {
  const t0 = performance.now();
  const s = guard.open(ctx(c.backend));
  const t1 = performance.now();
  await s.labelAgent(c.agent);
  const t2 = performance.now();
  await s.labelResource(c.resource());
  await s.labelResponse(c.response());
  s.close();
  const t3 = performance.now();
  if (!into) return;
  into.open.push(t1 - t0);
  into.agent.push(t2 - t1);
  into.total.push(t3 - t0);
}

/** Medians, costs and shares of one guard's samples. */
export function summarizeInstancing(
  s: InstancingSamples,
  variants: readonly InstancingVariant[] = INSTANCING_VARIANTS,
): InstancingSummary {
  return {
    name: s.name,
    variants: s.fresh.map((f, i) => {
      const total = median(f.total);
      const reused = median(s.reused[i]);
      const cost = total - reused;
      return {
        label: variants[i].label,
        reused,
        total,
        open: median(f.open),
        agent: median(f.agent),
        cost,
        share: cost / total * 100,
      };
    }),
  };
}
