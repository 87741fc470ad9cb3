/**
 * The demo repositories' labels: which tools read and write, and the label object of a repository,
 * an issue, or a tool call.
 *
 * @module
 */

import { jsonObject, jsonString, jsonStringArray, JsonValue } from "./json";
import { integrityTags, LEVEL_APPROVED, LEVEL_NONE, LEVEL_UNAPPROVED, Policy, privateTag } from "./policy";

/** Tools that only read. */
export const READ_TOOLS: string[] = ["get_repo", "list_issues", "get_issue"];
/** Tools that write; every other tool is treated as a write too, labelled `tool:<name>`. */
export const WRITE_TOOLS: string[] = ["create_issue"];
/** Author associations whose issues count as approved. Everything else is unapproved. */
export const APPROVED_ASSOCIATIONS: string[] = ["OWNER", "MEMBER", "COLLABORATOR"];

/** `{"description":..,"secrecy":[..],"integrity":[..]}`. */
export function labelsJson(description: string, secrecy: string[], integrity: string[]): JsonValue {
  return jsonObject()
    .set("description", jsonString(description))
    .set("secrecy", jsonStringArray(secrecy))
    .set("integrity", jsonStringArray(integrity));
}

/** Secrecy of data from a repository with scope token `scope`: private ones carry `private:<scope>`. */
export function repoSecrecy(scope: string, isPublic: bool): string[] {
  return isPublic ? [] : [privateTag(scope)];
}

/**
 * The integrity level of an issue: approved if its author's association is OWNER, MEMBER or
 * COLLABORATOR or the author is a trusted bot, else unapproved.
 */
export function issueLevel(p: Policy, association: string, author: string): i32 {
  if (APPROVED_ASSOCIATIONS.includes(association) || p.trustedBots.includes(author)) return LEVEL_APPROVED;
  return LEVEL_UNAPPROVED;
}

/** The issue number as text, from an integer (or all-digit string) value; null otherwise. */
export function issueNumber(v: JsonValue | null): string | null {
  if (v === null) return null;
  if (v.isInteger() && v.numberValue >= 0) return (<i64> v.numberValue).toString();
  if (!v.isString() || v.stringValue.length == 0 || v.stringValue.length > 15) return null;
  for (let i = 0; i < v.stringValue.length; i++) {
    const c = v.stringValue.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return null;
  }
  return v.stringValue;
}

/**
 * Labels of one issue object (`number`, `author`, `author_association`) of repository `repo`.
 * Null if the issue has no usable number.
 */
export function issueLabels(
  p: Policy,
  issue: JsonValue,
  repo: string,
  scope: string,
  isPublic: bool,
): JsonValue | null {
  if (!issue.isObject()) return null;
  const number = issueNumber(issue.get("number"));
  if (number === null) return null;
  const association = issue.getString("author_association");
  const author = issue.getString("author");
  const level = issueLevel(p, association === null ? "NONE" : association, author === null ? "" : author);
  return labelsJson(
    "issue:" + repo + "#" + number,
    repoSecrecy(scope, isPublic),
    integrityTags(scope, level),
  );
}

/** Resource integrity of a read: anyone may read it as far as integrity goes (`none`). */
export function readIntegrity(scope: string): string[] {
  return integrityTags(scope, LEVEL_NONE);
}

/** Resource integrity of a write: the writer must hold `approved`. */
export function writeIntegrity(scope: string): string[] {
  return integrityTags(scope, LEVEL_APPROVED);
}
