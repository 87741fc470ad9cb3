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

/**
 * Repository visibility learned through `get_repo`, kept for the life of the instance so that
 * `label_response` does not ask again what `label_resource` just asked. In mcp-edge-guard an instance
 * lives for one request; in a host with long-lived instances (gh-aw-mcpg) this caches for the
 * process lifetime, as the GitHub guard's own visibility cache does. Entries are
 * `[u16 name length][u8 public][name bytes]` in static memory; when it is full, nothing more is cached.
 */
export const VISIBILITY_CAPACITY: i32 = 4096;
const visibilityData: usize = memory.data(VISIBILITY_CAPACITY);
let visibilityLength: i32 = 0;

/** 1 public, 0 private, -1 not known yet. */
export function cachedVisibility(repo: string): i32 {
  const key = String.UTF8.encode(repo);
  const keyLength = key.byteLength;
  let p: i32 = 0;
  while (p < visibilityLength) {
    const entry = visibilityData + <usize> p;
    const length = <i32> load<u16>(entry);
    if (length == keyLength && memory.compare(entry + 3, changetype<usize>(key), <usize> length) == 0) {
      return <i32> load<u8>(entry, 2);
    }
    p += 3 + length;
  }
  return -1;
}

/** Remembers a visibility answer (only answers the upstream actually gave, never a failure). */
export function rememberVisibility(repo: string, isPublic: bool): void {
  const key = String.UTF8.encode(repo);
  const keyLength = key.byteLength;
  if (keyLength > 0xffff || visibilityLength + 3 + keyLength > VISIBILITY_CAPACITY) return;
  const entry = visibilityData + <usize> visibilityLength;
  store<u16>(entry, <u16> keyLength);
  store<u8>(entry, isPublic ? 1 : 0, 2);
  memory.copy(entry + 3, changetype<usize>(key), <usize> keyLength);
  visibilityLength += 3 + keyLength;
}
