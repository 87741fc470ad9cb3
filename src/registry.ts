/**
 * Guard registration: which guard and which policy protect each configured server (guard-abi.md §4.6).
 *
 * Per server, first match wins: a `write-sink` policy → the built-in write-sink guard; a configured
 * `guard` → that guard (`wasm` or `noop`); otherwise noop. As in the reference, a non-noop guard whose
 * server resolves no policy is replaced by noop (with a warning), and an invalid policy stops startup.
 *
 * One deliberate difference: the reference falls back to noop when a WASM guard fails to load. We
 * refuse to start instead: a typo in a guard path must not silently turn enforcement off.
 *
 * Runtime-neutral: how a WASM guard is obtained (file + prepare on Deno, bundled module on Workers)
 * is the caller's `loadWasm`.
 *
 * @module
 */
import type { GatewayConfig, GuardConfig, ServerConfig } from "./config.ts";
import { ConfigError } from "./config.ts";
import { NoopGuard, WriteSinkGuard } from "./difc/builtin.ts";
import type { Guard } from "./difc/guard.ts";
import { PolicyError, type ResolvedPolicy, resolveGuardPolicy } from "./difc/payload.ts";

/** What protects one server. */
export interface ServerPlan {
  server: ServerConfig;
  guard: Guard;
  /** The resolved policy, or null when none applies (`label_agent` is then not called). */
  policy: ResolvedPolicy | null;
}

/** Loads one WASM guard definition; called once per guard name, whatever the number of servers. */
export type WasmGuardLoader = (guard: Extract<GuardConfig, { type: "wasm" }>) => Promise<Guard>;

/**
 * Builds the per-server plan. `override` is the global policy override (the reference's
 * `MCP_GATEWAY_GUARD_POLICY_JSON`), applied to every server.
 *
 * @example
 * ```ts
 * const plans = await planServers(cfg, (g) => loadGuardModule(Deno.readFileSync(g.path), { name: g.name }));
 * ```
 * @throws {ConfigError} for an invalid policy or a guard that fails to load, naming the field.
 */
export async function planServers(
  cfg: GatewayConfig,
  loadWasm: WasmGuardLoader,
  override?: unknown,
): Promise<{ plans: Map<string, ServerPlan>; warnings: string[] }> {
  const warnings: string[] = [];
  const loaded = new Map<string, Promise<Guard>>();
  const plans = new Map<string, ServerPlan>();
  for (const server of cfg.servers) {
    const path = `mcpServers.${server.id}`;
    const guardCfg = server.guard === null ? undefined : cfg.guards.get(server.guard);
    let policy: ResolvedPolicy | null;
    try {
      policy = resolveGuardPolicy({
        serverId: server.id,
        override,
        serverPolicies: server.guardPolicies ?? undefined,
        guardPolicy: guardCfg?.policy ?? undefined,
      });
    } catch (e) {
      if (e instanceof PolicyError) {
        throw new ConfigError(
          server.guardPolicies !== null ? `${path}.guard-policies` : `guards.${server.guard}.policy`,
          `failed to register guard for server "${server.id}": ${e.message}`,
        );
      }
      throw e;
    }
    let guard: Guard;
    if (policy?.kind === "write-sink") {
      guard = new WriteSinkGuard(policy.writeSink, `${server.id}:write-sink`);
    } else if (guardCfg?.type === "wasm") {
      let p = loaded.get(guardCfg.name);
      if (!p) loaded.set(guardCfg.name, p = loadWasm(guardCfg));
      try {
        guard = await p;
      } catch (e) {
        throw new ConfigError(
          `guards.${guardCfg.name}.path`,
          `guard failed to load: ${(e as Error).message}`,
        );
      }
      if (policy === null) {
        warnings.push(
          `${path}: guard "${guardCfg.name}" has no policy (no guard-policies, no guards.${guardCfg.name}.policy); using noop`,
        );
        guard = new NoopGuard();
      }
    } else {
      guard = new NoopGuard();
    }
    plans.set(server.id, { server, guard, policy });
  }
  return { plans, warnings };
}
