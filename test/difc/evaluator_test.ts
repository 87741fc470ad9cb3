import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import {
  coarseOutcome,
  evaluate,
  formatViolation,
  isAllowed,
  parseMode,
  shouldAccumulate,
  shouldLabelResponse,
} from "../../src/difc/evaluator.ts";
import {
  differenceTags,
  formatIntegrityLevel,
  formatSecrecyLevel,
  formatTagList,
  intersectTags,
  type LabeledResource,
  type Labels,
  sameTags,
  tagSet,
  unionTags,
} from "../../src/difc/labels.ts";

const res = (secrecy: string[], integrity: string[], description = "res"): LabeledResource => ({
  description,
  secrecy,
  integrity,
});
const agent = (secrecy: string[], integrity: string[]): Labels => ({ secrecy, integrity });

Deno.test("labels: set algebra is sorted and de-duplicated", () => {
  assertEquals(tagSet(["b", "a", "b"]), ["a", "b"]);
  assertEquals(unionTags(["c", "a"], ["b", "a"]), ["a", "b", "c"]);
  assertEquals(intersectTags(["c", "a", "b"], ["b", "c", "d"]), ["b", "c"]);
  assertEquals(differenceTags(["a", "b", "c"], ["b"]), ["a", "c"]);
  assert(sameTags(["a", "b", "a"], ["b", "a"]));
  assert(!sameTags(["a"], ["a", "b"]));
});

Deno.test("labels: Go-style list formatting", () => {
  assertEquals(formatTagList([]), "[]");
  assertEquals(formatTagList(["a", "b:c"]), "[a b:c]");
});

Deno.test("labels: integrity level <L> picks the highest known level, else the raw list", () => {
  assertEquals(formatIntegrityLevel([]), "none");
  assertEquals(formatIntegrityLevel(["unapproved:acme/x"]), '"unapproved"');
  assertEquals(formatIntegrityLevel(["unapproved:acme/x", "approved:acme/x"]), '"approved"');
  assertEquals(formatIntegrityLevel(["approved:a", "merged:a", "none:a"]), '"merged"');
  assertEquals(formatIntegrityLevel(["approved"]), '"approved"'); // no colon: whole tag is the level
  assertEquals(formatIntegrityLevel(["none:a"]), "[none:a]");
  assertEquals(
    formatIntegrityLevel(["integrity=approved;scopes=acme/web,acme/api-*"]),
    "[integrity=approved;scopes=acme/web,acme/api-*]",
  );
});

Deno.test("labels: secrecy level <S> uses the longest private scope", () => {
  assertEquals(formatSecrecyLevel([]), "public");
  assertEquals(formatSecrecyLevel(["private:acme", "private:acme/web-app"]), "private (acme/web-app)");
  assertEquals(formatSecrecyLevel(["private"]), "private");
  assertEquals(formatSecrecyLevel(["private:", "private"]), "private");
  assertEquals(formatSecrecyLevel(["secret", "x"]), "[secret x]");
});

Deno.test("evaluate read: allowed when agent integrity ⊆ resource and resource secrecy ⊆ agent", () => {
  const r = evaluate(
    agent(["private:acme"], ["none:acme"]),
    res(["private:acme"], ["none:acme", "approved:acme"]),
    "read",
    "filter",
  );
  assertEquals(r.decision, "allow");
  assertEquals(r.reason, "");
});

Deno.test("evaluate read: integrity is checked before secrecy; reason text", () => {
  const r = evaluate(
    agent([], ["approved:acme", "none:acme"]),
    res(["private:acme"], ["none:acme"], "issue #1"),
    "read",
    "filter",
  );
  assertEquals(r.decision, "deny");
  assertEquals(r.integrityToDrop, ["approved:acme"]);
  assertEquals(r.secrecyToAdd, []);
  assertEquals(
    r.reason,
    "Resource 'issue #1' has lower integrity than agent requires. The agent cannot read data with integrity below \"approved\".",
  );
});

Deno.test("evaluate read: secrecy failure reason", () => {
  const r = evaluate(agent([], []), res(["private:acme", "private:acme/web"], [], "repo"), "read", "strict");
  assertEquals(r.decision, "deny");
  assertEquals(r.secrecyToAdd, ["private:acme", "private:acme/web"]);
  assertEquals(
    r.reason,
    "Resource 'repo' has secrecy requirements that agent doesn't meet. The agent is not authorized to access private (acme/web)-scoped data.",
  );
});

Deno.test("evaluate read: wildcard in agent secrecy / resource integrity passes", () => {
  assert(isAllowed(evaluate(agent(["*"], []), res(["private:x"], []), "read", "filter")));
  assert(isAllowed(evaluate(agent([], ["approved:x"]), res([], ["*"]), "read", "filter")));
  // wildcard on the wrong side does not help
  assert(!isAllowed(evaluate(agent([], []), res(["*"], []), "read", "filter")));
  assert(!isAllowed(evaluate(agent([], ["*"]), res([], []), "read", "filter")));
});

Deno.test("evaluate read in propagate mode: allowed with propagation and its reason", () => {
  const r = evaluate(agent([], ["approved:a"]), res(["private:a"], []), "read", "propagate");
  assertEquals(r.decision, "allow-with-propagate");
  assert(isAllowed(r));
  assertEquals(r.secrecyToAdd, ["private:a"]);
  assertEquals(r.integrityToDrop, ["approved:a"]);
  assertEquals(
    r.reason,
    "Read allowed with label propagation: adding secrecy tags [private:a] and dropping integrity tags [approved:a]",
  );
  const only = evaluate(agent([], ["approved:a"]), res([], []), "read", "propagate");
  assertEquals(only.reason, "Read allowed with label propagation: dropping integrity tags [approved:a]");
  assertEquals(evaluate(agent([], []), res([], []), "read", "propagate").decision, "allow");
});

Deno.test("evaluate write: integrity first, then secrecy; reason texts", () => {
  const i = evaluate(agent([], ["none:a"]), res([], ["none:a", "merged:a"], "pr"), "write", "filter");
  assertEquals(i.decision, "deny");
  assertEquals(i.integrityToDrop, ["merged:a"]);
  assertEquals(
    i.reason,
    "Agent lacks required integrity to write to 'pr'. The agent's integrity level is insufficient; it needs \"merged\" integrity.",
  );
  const s = evaluate(agent(["private:acme/web"], []), res([], [], "gist"), "write", "filter");
  assertEquals(s.decision, "deny");
  assertEquals(s.secrecyToAdd, ["private:acme/web"]);
  assertEquals(
    s.reason,
    "Agent carries private (acme/web)-scoped data that cannot be written to 'gist' due to secrecy constraints. " +
      "The target resource is not authorized to receive this sensitive data.",
  );
  // propagate mode never relaxes writes
  assertEquals(evaluate(agent(["private:x"], []), res([], []), "write", "propagate").decision, "deny");
});

Deno.test("evaluate write: wildcard in resource secrecy / agent integrity passes", () => {
  assert(isAllowed(evaluate(agent(["private:a", "private:b"], []), res(["*"], []), "write", "strict")));
  assert(isAllowed(evaluate(agent([], ["*"]), res([], ["merged:a"]), "write", "strict")));
  assert(
    isAllowed(
      evaluate(
        agent(["private:a"], ["approved:a"]),
        res(["private:a", "private:b"], ["approved:a"]),
        "write",
        "strict",
      ),
    ),
  );
});

Deno.test("evaluate read-write: read part first, then write part", () => {
  // read part fails (agent integrity not in resource)
  const r = evaluate(agent([], ["approved:a"]), res([], []), "read-write", "filter");
  assertStringIncludes(r.reason, "has lower integrity than agent requires");
  // read ok, write fails on secrecy
  const w = evaluate(agent(["private:a"], []), res([], []), "read-write", "filter");
  assertStringIncludes(w.reason, "cannot be written to");
  // propagate: the read part propagates (secrecy), the write part passes → plain allow
  const p = evaluate(agent([], []), res(["private:a"], []), "read-write", "propagate");
  assertEquals(p.decision, "allow");
});

Deno.test("evaluate read-write in propagate mode: propagating read then passing write is allow", () => {
  // read: resource integrity [x] ⊇ agent integrity [x]; secrecy fine → allow; write: [x] ⊆ agent ok
  const ok = evaluate(agent([], ["x"]), res([], ["x"]), "read-write", "propagate");
  assertEquals(ok.decision, "allow");
  // read part needs propagation (agent lacks nothing for write) → allow, not allow-with-propagate
  const prop = evaluate(agent([], ["x", "y"]), res([], ["x"]), "read-write", "propagate");
  assertEquals(prop.decision, "allow");
  // a wildcard in agent secrecy is not a wildcard on the write side: the write part fails
  const w = evaluate(agent(["*"], []), res([], []), "read-write", "propagate");
  assertEquals(w.decision, "deny");
  assertEquals(w.secrecyToAdd, ["*"]);
});

Deno.test("coarse outcome: denied reads bypass, denied writes block", () => {
  const deny = evaluate(agent([], ["a"]), res([], []), "read", "strict");
  assertEquals(coarseOutcome(deny, "read"), "bypass-read");
  assertEquals(coarseOutcome(deny, "write"), "denied");
  assertEquals(coarseOutcome(deny, "read-write"), "denied");
  assertEquals(coarseOutcome(evaluate(agent([], []), res([], []), "write", "strict"), "write"), "allowed");
});

Deno.test("mode matrix: label_response and accumulation", () => {
  for (const m of ["strict", "filter", "propagate"] as const) {
    assert(shouldLabelResponse("read", m));
    assert(!shouldLabelResponse("write", m));
    assert(!shouldAccumulate("write", m));
  }
  assert(!shouldLabelResponse("read-write", "strict"));
  assert(shouldLabelResponse("read-write", "filter"));
  assert(shouldLabelResponse("read-write", "propagate"));
  assert(shouldAccumulate("read", "propagate"));
  assert(shouldAccumulate("read-write", "propagate"));
  assert(!shouldAccumulate("read", "filter"));
});

Deno.test("parseMode: case-insensitive, rejects unknown with the reference text", () => {
  assertEquals(parseMode("PROPAGATE"), "propagate");
  assertThrows(
    () => parseMode("lenient"),
    Error,
    "unknown enforcement mode: lenient (valid modes: strict, filter, propagate)",
  );
});

Deno.test("formatViolation: full message with both required actions", () => {
  const a = agent(["private:acme"], ["none:x"]);
  const r = res([], ["approved:x", "none:x"], "create_issue");
  const result = evaluate(a, r, "write", "filter");
  const msg = formatViolation({ ...result, secrecyToAdd: ["private:acme"] }, a, r);
  assertEquals(
    msg,
    "DIFC Violation: Agent lacks required integrity to write to 'create_issue'. The agent's integrity level is insufficient; it needs \"approved\" integrity.\n\n" +
      "Required Action: Add secrecy tags [private:acme]\n" +
      "\nImplications of adding secrecy tags:\n" +
      "  - Agent will be restricted from writing to resources that lack these tags\n" +
      "  - This includes public resources (e.g., public repositories, public internet)\n" +
      "  - Agent will be marked as handling sensitive information\n" +
      "  - Future writes must target resources with tags: [private:acme]\n" +
      "\nRequired Action: Drop integrity tags [approved:x]\n" +
      "\nImplications of dropping integrity tags:\n" +
      "  - Agent will no longer be able to write to high-integrity resources\n" +
      "  - Specifically, agent cannot write to resources requiring tags: [approved:x]\n" +
      "  - This action acknowledges that agent has been influenced by lower-integrity data\n" +
      "  - Agent's outputs will be considered less trustworthy\n" +
      "\nCurrent Agent Labels:\n  Secrecy: [private:acme]\n  Integrity: [none:x]\n" +
      "\nResource Requirements:\n  Secrecy: []\n  Integrity: [approved:x none:x]\n",
  );
});

Deno.test("formatViolation: secrecy-only denial has no integrity block", () => {
  const a = agent(["private:acme"], []);
  const r = res([], [], "gist");
  const msg = formatViolation(evaluate(a, r, "write", "strict"), a, r);
  assertStringIncludes(msg, "Required Action: Add secrecy tags [private:acme]");
  assert(!msg.includes("Drop integrity tags"));
  assert(msg.startsWith("DIFC Violation: Agent carries private (acme)-scoped data"));
});
