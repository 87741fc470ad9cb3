/**
 * DIFC labels: sets of opaque string tags, the set algebra the flow rules need, and the message
 * formatting of guard-abi.md §3.1/§3.2.
 *
 * The gateway never interprets tag syntax except the wildcard `*` and the human-readable level names
 * used in reason strings. Tag lists are kept sorted and de-duplicated so that messages, logs and store
 * contents are deterministic (the reference prints Go map order, which is random).
 *
 * @module
 */

/** On the superset side of a flow check, this tag accepts everything (write-sink `accept: ["*"]`). */
export const WILDCARD_TAG = "*";

/** A pair of labels: what an agent holds, or what a resource/item requires. */
export interface Labels {
  secrecy: string[];
  integrity: string[];
}

/** Labels plus the human-readable description a guard gave the resource or item. */
export interface LabeledResource extends Labels {
  description: string;
}

/**
 * Normalises tags into a set: de-duplicated, sorted by code unit.
 *
 * @example
 * ```ts
 * tagSet(["b", "a", "b"]); // ["a", "b"]
 * ```
 */
export function tagSet(tags: Iterable<string>): string[] {
  return [...new Set(tags)].sort();
}

/** `a ∪ b` as a sorted set. */
export function unionTags(a: readonly string[], b: readonly string[]): string[] {
  return tagSet([...a, ...b]);
}

/** `a ∩ b` as a sorted set. */
export function intersectTags(a: readonly string[], b: readonly string[]): string[] {
  const keep = new Set(b);
  return tagSet(a.filter((t) => keep.has(t)));
}

/** Tags of `a` that are not in `b`, as a sorted set. */
export function differenceTags(a: readonly string[], b: readonly string[]): string[] {
  const drop = new Set(b);
  return tagSet(a.filter((t) => !drop.has(t)));
}

/** True when both lists hold the same set of tags. */
export function sameTags(a: readonly string[], b: readonly string[]): boolean {
  const x = tagSet(a);
  const y = tagSet(b);
  return x.length === y.length && x.every((t, i) => t === y[i]);
}

/**
 * Formats a tag list the way Go's `%v` prints a string slice: `[a b c]`, `[]` when empty.
 * Clients and workflows see this form in reason strings and violation messages.
 *
 * @example
 * ```ts
 * formatTagList(["private:acme", "x"]); // "[private:acme x]"
 * ```
 */
export function formatTagList(tags: readonly string[]): string {
  return `[${tags.join(" ")}]`;
}

/** The level part of an integrity tag: the text before its first `:` (the whole tag without one). */
function levelOf(tag: string): string {
  const i = tag.indexOf(":");
  return i > 0 ? tag.slice(0, i) : tag;
}

/**
 * The `<L>` of the integrity reason strings: `"merged"`, `"approved"` or `"unapproved"` (with the
 * double quotes, as the reference prints them) when any missing tag has that level, the highest
 * winning; `none` for an empty list; otherwise the raw `[a b]` list (e.g. composite
 * `integrity=...;scopes=...` tags).
 *
 * @example
 * ```ts
 * formatIntegrityLevel(["unapproved:acme/x", "approved:acme/x"]); // "\"approved\""
 * ```
 */
export function formatIntegrityLevel(tags: readonly string[]): string {
  if (tags.length === 0) return "none";
  const levels = new Set(tags.map(levelOf));
  if (levels.has("merged")) return '"merged"';
  if (levels.has("approved")) return '"approved"';
  if (levels.has("unapproved")) return '"unapproved"';
  return formatTagList(tags);
}

/**
 * The `<S>` of the secrecy reason strings: `private (<longest scope after "private:">)`, else
 * `private` when the bare tag `private` is present, `public` for an empty list, otherwise the raw list.
 *
 * @example
 * ```ts
 * formatSecrecyLevel(["private:acme", "private:acme/web"]); // "private (acme/web)"
 * ```
 */
export function formatSecrecyLevel(tags: readonly string[]): string {
  if (tags.length === 0) return "public";
  let best = "";
  let bare = false;
  for (const t of tags) {
    if (t.startsWith("private:")) {
      const scope = t.slice("private:".length);
      if (scope.length > best.length) best = scope;
    } else if (t === "private") {
      bare = true;
    }
  }
  if (best !== "") return `private (${best})`;
  if (bare) return "private";
  return formatTagList(tags);
}
