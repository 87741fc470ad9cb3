/**
 * The one piece of state that survives an export call: the policy from the last successful
 * `label_agent`, kept as JSON text in static memory (the arena is reset after every call).
 *
 * @module
 */

import { JsonWriter, parseJson } from "./json";
import { parsePolicy, Policy, policyToJson } from "./policy";

/** Room for the stored policy JSON. Policies larger than this are rejected by `label_agent`. */
export const POLICY_CAPACITY: i32 = 65536;

/** Static, zero-initialised storage for the policy text. */
const policyText: usize = memory.data(POLICY_CAPACITY);
/** Bytes of policy text stored; 0 = no policy yet (fresh instance). */
let policyLength: i32 = 0;

/** Stores `p` for later calls. False if it does not fit in `POLICY_CAPACITY`. */
export function storePolicy(p: Policy): bool {
  const w = new JsonWriter();
  w.value(policyToJson(p));
  if (w.length > POLICY_CAPACITY) return false;
  memory.copy(policyText, w.ptr, <usize> w.length);
  policyLength = w.length;
  return true;
}

/** The stored policy, or null if `label_agent` has not succeeded on this instance. */
export function loadPolicy(): Policy | null {
  if (policyLength == 0) return null;
  const v = parseJson(policyText, <usize> policyLength);
  return v === null ? null : parsePolicy(v);
}

/** Forgets the stored policy (after a rejected `label_agent`, so later calls fail closed). */
export function clearPolicy(): void {
  policyLength = 0;
}
