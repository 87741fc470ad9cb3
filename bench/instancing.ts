/**
 * The per-call price of a fresh guard instance, with and without label-agent snapshots
 * (`limits.labelAgentSnapshots`), for several guards side by side: used by `model_bench.ts` (§2)
 * and `guard_bench.ts` (§5).
 *
 * For each guard, every round runs, in an order that rotates each round:
 * - fresh, snapshots off ("before"): open + label_agent + label_resource + label_response;
 * - fresh, snapshots on ("after"): the same calls; label_agent is restored from the snapshot;
 * - reused: label_resource + label_response on one long-lived instance (the floor: no instancing).
 * Instancing cost = median(fresh) − median(reused); share = cost / median(fresh).
 *
 * @module
 */
import type { BackendCaller, GuardContext } from "../src/difc/guard.ts";
import { loadGuardModule, type WasmGuard } from "../src/guard/host.ts";
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

/** Samples (ms) of one guard. */
export interface InstancingSamples {
  name: string;
  moduleBytes: number;
  /** Snapshots off / on: open, label_agent, whole fresh call. */
  off: { open: number[]; agent: number[]; total: number[] };
  on: { open: number[]; agent: number[]; total: number[] };
  reused: number[];
  /** The snapshot the "on" guard holds at the end (image bytes). */
  snapshotBytes: number | null;
}

/** Medians and shares of one guard. */
export interface InstancingSummary {
  name: string;
  offTotal: number;
  onTotal: number;
  reused: number;
  offCost: number;
  onCost: number;
  offShare: number;
  onShare: number;
  offAgent: number;
  onAgent: number;
  offOpen: number;
  onOpen: number;
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
): Promise<InstancingSamples[]> {
  const guards: { c: InstancingCase; on: WasmGuard; off: WasmGuard; s: InstancingSamples }[] = [];
  for (const c of cases) {
    const on = await loadGuardModule(c.bytes, { name: c.name, limits: { labelAgentSnapshots: 16 } });
    const off = await loadGuardModule(c.bytes, { name: c.name, limits: { labelAgentSnapshots: 0 } });
    if (on.snapshotShape === null) throw new Error(`${c.name}: the module cannot be snapshotted`);
    guards.push({
      c,
      on,
      off,
      s: {
        name: c.name,
        moduleBytes: c.bytes.length,
        off: { open: [], agent: [], total: [] },
        on: { open: [], agent: [], total: [] },
        reused: [],
        snapshotBytes: null,
      },
    });
  }
  const reused = await Promise.all(guards.map(async (g) => {
    const s = g.on.open(ctx(g.c.backend));
    await s.labelAgent(g.c.agent);
    return s;
  }));
  for (let i = 0; i < warmup + samples; i++) {
    const keep = i >= warmup;
    for (let gi = 0; gi < guards.length; gi++) {
      const g = guards[gi];
      const steps: (() => Promise<void>)[] = [
        () => fresh(g.off, g.c, keep ? g.s.off : null),
        () => fresh(g.on, g.c, keep ? g.s.on : null),
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
    const st = g.on.snapshotStatus().find((x) => x.state === "ready");
    g.s.snapshotBytes = st?.imageBytes ?? null;
    if (st === undefined) throw new Error(`${g.c.name}: no snapshot was taken`);
  }
  return guards.map((g) => g.s);
}

async function fresh(
  guard: WasmGuard,
  c: InstancingCase,
  into: { open: number[]; agent: number[]; total: number[] } | null,
): Promise<void> {
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
export function summarizeInstancing(s: InstancingSamples): InstancingSummary {
  const reused = median(s.reused);
  const offTotal = median(s.off.total), onTotal = median(s.on.total);
  const offCost = offTotal - reused, onCost = onTotal - reused;
  return {
    name: s.name,
    offTotal,
    onTotal,
    reused,
    offCost,
    onCost,
    offShare: offCost / offTotal * 100,
    onShare: onCost / onTotal * 100,
    offAgent: median(s.off.agent),
    onAgent: median(s.on.agent),
    offOpen: median(s.off.open),
    onOpen: median(s.on.open),
  };
}
