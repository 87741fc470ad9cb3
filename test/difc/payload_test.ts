import { assertEquals, assertThrows } from "@std/assert";
import {
  buildLabelAgentPayload,
  canonicalJson,
  isValidRepoScope,
  parseWriteSinkPolicy,
  PolicyError,
  resolveGuardPolicy,
} from "../../src/difc/payload.ts";

const ok = (allowOnly: Record<string, unknown>) => ({
  "allow-only": { repos: "public", "min-integrity": "none", ...allowOnly },
});
const fails = (policy: unknown, msg: string, bots: string[] = []) =>
  assertThrows(() => buildLabelAgentPayload(policy, bots), PolicyError, msg);

Deno.test("canonicalJson sorts keys at every level and drops undefined", () => {
  assertEquals(canonicalJson({ b: 1, a: [{ d: 1, c: 2 }], u: undefined }), '{"a":[{"c":2,"d":1}],"b":1}');
  assertEquals(canonicalJson(null), "null");
});

Deno.test("payload: minimal allow-only, sorted JSON, trusted-bots injected", () => {
  const p = buildLabelAgentPayload({
    "allow-only": { repos: ["acme/web-app", "acme/api-*"], "min-integrity": "approved" },
  }, [
    "my-org-bot[bot]",
  ]);
  assertEquals(
    p.json,
    '{"allow-only":{"min-integrity":"approved","repos":["acme/web-app","acme/api-*"]},"trusted-bots":["my-org-bot[bot]"]}',
  );
  assertEquals(p.toolCallLimits, {});
});

Deno.test("payload: policy as a JSON string; string must be a non-empty object", () => {
  assertEquals(
    buildLabelAgentPayload('  {"allow-only":{"repos":"all","min-integrity":"merged"}} ').json,
    '{"allow-only":{"min-integrity":"merged","repos":"all"}}',
  );
  fails("   ", "policy string is empty");
  fails("{nope", "policy string is not valid JSON object:");
  fails("[1]", "policy JSON must decode to an object");
  fails(null, "policy is required");
  fails(42, "failed to decode label_agent policy payload");
});

Deno.test("payload: legacy envelope and shape errors", () => {
  fails(
    { policy: { "allow-only": {} } },
    "gateway policy adapter is outdated: remove legacy envelope key policy before calling label_agent",
  );
  fails(
    { repos: "all" },
    "label_agent policy must use top-level allow-only object (received policy.allow-only)",
  );
  fails({ ...ok({}), extra: 1 }, 'invalid guard policy transport shape: unexpected key "extra"');
  fails(
    { "allow-only": "x" },
    'invalid guard policy transport shape: expected {"allow-only":{"repos":...,"min-integrity":...}}',
  );
  fails(
    { "allow-only": { repos: "all" } },
    "missing required fields repos and/or min-integrity in allow-only object",
  );
  fails({ "allow-only": { "min-integrity": "none" } }, "missing required fields repos and/or min-integrity");
  fails(
    ok({ "promotion-label": "x" }),
    'invalid guard policy transport shape: unexpected allow-only key "promotion-label"',
  );
});

Deno.test("payload: legacy allowonly and integrity spellings are accepted", () => {
  const p = buildLabelAgentPayload({ allowonly: { repos: "public", integrity: "Approved " } });
  assertEquals(p.json, '{"allowonly":{"integrity":"Approved ","repos":"public"}}'); // passed through unchanged
});

Deno.test("payload: repos values", () => {
  buildLabelAgentPayload({ "allow-only": { repos: " ALL ", "min-integrity": "none" } });
  buildLabelAgentPayload({
    "allow-only": { repos: ["acme/*", "acme/web", "acme/api-*", "o_1/r-2"], "min-integrity": "none" },
  });
  const msg = "invalid repos value: expected all, public, or non-empty array of scoped strings";
  for (
    const repos of [
      "private",
      [],
      ["Acme/web"],
      ["acme/web", "acme/web"],
      ["acme"],
      ["acme/a*b"],
      ["acme/*x"],
      [1],
      7,
    ]
  ) {
    fails({ "allow-only": { repos, "min-integrity": "none" } }, msg);
  }
});

Deno.test("repo scope syntax", () => {
  for (const s of ["a/*", "a/b", "a/b*", "a-b_c/d-e_f", "x".repeat(39) + "/" + "y".repeat(100)]) {
    assertEquals(isValidRepoScope(s), true, s);
  }
  for (
    const s of [
      "a",
      "a/",
      "/b",
      "a/b/c",
      "a/*b",
      "a/b**",
      "a/**",
      "a/b.c",
      "A/b",
      "x".repeat(40) + "/b",
      "a/" + "y".repeat(101),
    ]
  ) {
    assertEquals(isValidRepoScope(s), false, s);
  }
});

Deno.test("payload: integrity fields", () => {
  fails(
    { "allow-only": { repos: "all", "min-integrity": "high" } },
    "min-integrity must be one of: none, unapproved, approved, merged",
  );
  fails(
    { "allow-only": { repos: "all", integrity: 3 } },
    "integrity must be one of: none, unapproved, approved, merged",
  );
  fails(ok({ "disapproval-integrity": "x" }), "disapproval-integrity must be one of");
  fails(ok({ "endorser-min-integrity": "" }), "endorser-min-integrity must be one of");
  buildLabelAgentPayload(ok({ "disapproval-integrity": " NONE", "endorser-min-integrity": "merged" }));
});

Deno.test("payload: string-array fields", () => {
  for (
    const k of [
      "blocked-users",
      "approval-labels",
      "trusted-users",
      "endorsement-reactions",
      "disapproval-reactions",
    ]
  ) {
    buildLabelAgentPayload(ok({ [k]: [] }));
    buildLabelAgentPayload(ok({ [k]: ["a"] }));
    fails(ok({ [k]: "a" }), `invalid ${k} value: expected array of strings`);
    fails(ok({ [k]: ["a", " "] }), `invalid ${k} value: each entry must be a non-empty string`);
  }
});

Deno.test("payload: trusted-bots must be a non-empty array of non-empty strings", () => {
  fails(
    { ...ok({}), "trusted-bots": [] },
    "invalid trusted-bots value: must be a non-empty array when present",
  );
  fails(
    { ...ok({}), "trusted-bots": "bot" },
    "invalid trusted-bots value: expected non-empty array of strings",
  );
  fails(ok({}), "invalid trusted-bots value: each entry must be a non-empty string", [""]);
  // gateway trusted bots replace a policy-level list
  assertEquals(
    buildLabelAgentPayload({ ...ok({}), "trusted-bots": ["a"] }, ["b"]).payload["trusted-bots"],
    ["b"],
  );
});

Deno.test("payload: refusal-labels accepts arrays (trimmed) and comma/newline strings", () => {
  const get = (v: unknown) =>
    (buildLabelAgentPayload(ok({ "refusal-labels": v })).payload["allow-only"] as Record<string, unknown>)[
      "refusal-labels"
    ];
  assertEquals(get([" wontfix ", "spam"]), ["wontfix", "spam"]);
  assertEquals(get("wontfix, spam\n invalid ,"), ["wontfix", "spam", "invalid"]);
  fails(
    ok({ "refusal-labels": " , \n" }),
    "invalid refusal-labels value: must include at least one non-empty label",
  );
  fails(
    ok({ "refusal-labels": 5 }),
    "invalid refusal-labels value: expected array of strings or comma/newline-delimited string",
  );
  fails(
    ok({ "refusal-labels": [""] }),
    "invalid refusal-labels value: each entry must be a non-empty string",
  );
});

Deno.test("payload: tool-call-limits is validated, stripped and returned", () => {
  const p = buildLabelAgentPayload(ok({ "tool-call-limits": { " get_me ": 3, list_issues: 0 } }));
  assertEquals(p.toolCallLimits, { get_me: 3, list_issues: 0 });
  assertEquals(p.json.includes("tool-call-limits"), false);
  fails(ok({ "tool-call-limits": { x: -1 } }), 'allow-only.tool-call-limits["x"] must be >= 0');
  fails(ok({ "tool-call-limits": { x: 1.5 } }), 'allow-only.tool-call-limits["x"] must be an integer');
  fails(ok({ "tool-call-limits": [] }), "allow-only.tool-call-limits must be an object");
});

Deno.test("payload: the caller's policy object is not mutated", () => {
  const policy = ok({ "tool-call-limits": { a: 1 }, "refusal-labels": "x,y" });
  const before = JSON.stringify(policy);
  buildLabelAgentPayload(policy, ["bot"]);
  assertEquals(JSON.stringify(policy), before);
});

Deno.test("write-sink policy validation", () => {
  assertEquals(parseWriteSinkPolicy({ accept: ["*"] }), { accept: ["*"], sinkVisibility: "" });
  assertEquals(
    parseWriteSinkPolicy({
      accept: ["private:acme/web*", "acme", "public:acme/*"],
      "sink-visibility": " Private ",
    }).sinkVisibility,
    "private",
  );
  const bad: [unknown, string][] = [
    [{ accept: [] }, "write-sink.accept must contain at least one entry"],
    [{ accept: ["*", "private:a"] }, 'write-sink.accept wildcard "*" must be the only entry'],
    [{ accept: ["a", "a"] }, "write-sink.accept must not contain duplicates"],
    [{ accept: ["secret:a"] }, "visibility prefix must be private, public, or internal"],
    [{ accept: ["private:A/b"] }, "is invalid; expected owner, owner/*, owner/repo, or owner/re*"],
    [
      { accept: ["*"], "sink-visibility": "world" },
      'write-sink.sink-visibility must be one of: public, private, internal; got "world"',
    ],
    ["x", "write-sink policy must be an object"],
  ];
  for (const [p, msg] of bad) assertThrows(() => parseWriteSinkPolicy(p), PolicyError, msg);
});

Deno.test("policy resolution: precedence override > server > guard config > none", () => {
  const server = { "allow-only": { repos: "all", "min-integrity": "none" } };
  const guard = { "allow-only": { repos: "public", "min-integrity": "merged" } };
  const override = '{"allow-only":{"repos":["acme/*"],"min-integrity":"approved"}}';
  assertEquals(
    resolveGuardPolicy({ serverId: "gh", override, serverPolicies: server, guardPolicy: guard })?.source,
    "override",
  );
  assertEquals(
    resolveGuardPolicy({ serverId: "gh", serverPolicies: server, guardPolicy: guard })?.source,
    "server",
  );
  assertEquals(resolveGuardPolicy({ serverId: "gh", guardPolicy: guard })?.source, "config");
  assertEquals(resolveGuardPolicy({ serverId: "gh" }), null);
});

Deno.test("policy resolution: server policy forms", () => {
  const flat = resolveGuardPolicy({
    serverId: "gh",
    serverPolicies: { repos: "all", "min-integrity": "approved" },
  });
  assertEquals(flat?.policy, { "allow-only": { repos: "all", "min-integrity": "approved" } });
  const keyed = resolveGuardPolicy({
    serverId: "gh",
    serverPolicies: { gh: { "allow-only": { repos: "public", "min-integrity": "none" } }, other: {} },
  });
  assertEquals(keyed?.kind, "allow-only");
  const single = resolveGuardPolicy({
    serverId: "gh",
    serverPolicies: { anything: { "Allow-Only": { repos: "all", "min-integrity": "none" } } },
  });
  assertEquals(single?.policy, { "allow-only": { repos: "all", "min-integrity": "none" } });
  const ws = resolveGuardPolicy({
    serverId: "out",
    serverPolicies: { "write-sink": { accept: ["*"], "sink-visibility": "public" } },
  });
  assertEquals(ws?.kind === "write-sink" ? ws.writeSink : null, { accept: ["*"], sinkVisibility: "public" });
  assertEquals(resolveGuardPolicy({ serverId: "gh", serverPolicies: {} }), null);
  assertThrows(
    () => resolveGuardPolicy({ serverId: "gh", serverPolicies: { repos: "all" } }),
    PolicyError,
    "invalid server guard policy: repos specified without min-integrity",
  );
  assertThrows(
    () => resolveGuardPolicy({ serverId: "gh", serverPolicies: { gh: 5, x: 1 } }),
    PolicyError,
    "invalid guard policy for server 'gh': expected object",
  );
  assertThrows(
    () =>
      resolveGuardPolicy({
        serverId: "gh",
        serverPolicies: { "allow-only": { repos: "nope", "min-integrity": "none" } },
      }),
    PolicyError,
    "invalid repos value",
  );
});
