/**
 * The per-call price of a fresh guard instance under several host configurations (new memories per
 * instance, the memory pool, the pool plus label-agent snapshots), for several guards side by side:
 * used by `model_bench.ts` (§2) and `guard_bench.ts` (§5).
 *
 * For each guard, every round runs, in an order that rotates each round:
 * - each variant's fresh request: open + label_agent + label_resource + label_response on a new
 *   instance (label_agent restored when that variant has snapshots);
 * - reused: label_resource + label_response on one long-lived instance (the floor: no instancing).
 * Instancing cost = median(fresh) − median(reused); share = cost / median(fresh).
 *
 * @module
 */
import type { BackendCaller, GuardContext } from "../src/difc/guard.ts";
import { loadGuardModule, type WasmGuard } from "../src/guard/host.ts";
import type { GuardLimits } from "../src/guard/limits.ts";
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
}

/** The variants every report shows: before the pool, the pool (the default), pool + snapshots. */
export const INSTANCING_VARIANTS: readonly InstancingVariant[] = [
  { label: "new memories", limits: { memoryPoolBytes: 0, labelAgentSnapshots: 0 } },
  { label: "pooled", limits: { labelAgentSnapshots: 0 } },
  { label: "pooled + snapshots", limits: { labelAgentSnapshots: 16 } },
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
  reused: number[];
  /** The snapshot a variant with snapshots holds at the end (image bytes); null without one. */
  snapshotBytes: number | null;
}

/** Medians and shares of one variant of one guard. */
export interface VariantSummary {
  label: string;
  total: number;
  open: number;
  agent: number;
  cost: number;
  share: number;
}

/** Medians and shares of one guard. */
export interface InstancingSummary {
  name: string;
  reused: number;
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
      variants.map((v) => loadGuardModule(c.bytes, { name: c.name, limits: v.limits })),
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
        reused: [],
        snapshotBytes: null,
      },
    });
  }
  const reused = await Promise.all(guards.map(async (g) => {
    const s = g.loaded[0].open(ctx(g.c.backend));
    await s.labelAgent(g.c.agent);
    return s;
  }));
  for (let i = 0; i < warmup + samples; i++) {
    const keep = i >= warmup;
    for (let gi = 0; gi < guards.length; gi++) {
      const g = guards[gi];
      const steps: (() => Promise<void>)[] = [
        ...g.loaded.map((guard, vi) => () => fresh(guard, g.c, keep ? g.s.fresh[vi] : null)),
        async () => {
          const t0 = performance.now();
          await reused[gi].labelResource(g.c.resource());
          await reused[gi].labelResponse(g.c.response());
          if (keep) g.s.reused.push(performance.now() - t0);
        },
      ];
      for (let k = 0; k < steps.length; k++) await steps[(i + k) % steps.length]();
    }
  }
  for (const s of reused) s.close();
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
  const reused = median(s.reused);
  return {
    name: s.name,
    reused,
    variants: s.fresh.map((f, i) => {
      const total = median(f.total);
      const cost = total - reused;
      return {
        label: variants[i].label,
        total,
        open: median(f.open),
        agent: median(f.agent),
        cost,
        share: cost / total * 100,
      };
    }),
  };
}
