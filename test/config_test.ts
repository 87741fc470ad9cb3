import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { ConfigError, parseConfig, parseConfigText } from "../src/config.ts";

const minimal = {
  mcpServers: { gh: { type: "http", url: "http://127.0.0.1:3000/mcp" } },
  gateway: { apiKey: "k" },
};

Deno.test("config: a gh-aw-mcpg http-only config loads unchanged, edge-irrelevant keys become warnings", () => {
  const cfg = parseConfig({
    mcpServers: {
      github: {
        type: "http",
        url: "https://api.example.com/mcp",
        headers: { Authorization: "Bearer ${API_TOKEN}" },
        tools: ["get_issue", "list_issues"],
        env: { X: "y" },
        guard: "gh",
        "guard-policies": { "allow-only": { repos: ["acme/*"], "min-integrity": "approved" } },
      },
    },
    gateway: {
      port: 8080,
      domain: "localhost",
      apiKey: "secret",
      toolTimeout: 120,
      trustedBots: ["bot[bot]"],
    },
    guards: { gh: { type: "wasm", path: "guards/github.wasm" } },
  }, { API_TOKEN: "t0k" });
  assertEquals(cfg.servers[0].headers.Authorization, "Bearer t0k");
  assertEquals(cfg.servers[0].tools, ["get_issue", "list_issues"]);
  assertEquals(cfg.gateway.toolTimeoutMs, 120_000);
  assertEquals(cfg.gateway.apiKey, "secret");
  assertEquals(cfg.gateway.trustedBots, ["bot[bot]"]);
  assertEquals(cfg.guards.get("gh")?.type, "wasm");
  assert(cfg.warnings.some((w) => w.startsWith("gateway.domain")));
  assert(cfg.warnings.some((w) => w.startsWith("mcpServers.github.env")));
});

Deno.test("config: stdio servers get a clear not-available-at-the-edge error", () => {
  const e = assertThrows(
    () => parseConfig({ mcpServers: { x: { type: "stdio", container: "ghcr.io/a/b" } } }),
    ConfigError,
    "not available at the edge",
  );
  assertEquals(e.path, "mcpServers.x.type");
  assertThrows(
    () => parseConfig({ mcpServers: { x: { container: "img" } } }),
    ConfigError,
    "not available at the edge",
  );
});

Deno.test("config: every error names the field path", () => {
  const cases: [unknown, string][] = [
    [{ mcpServers: { a: { type: "http" } } }, "mcpServers.a.url"],
    [{ mcpServers: { a: { type: "http", url: "ftp://x" } } }, "mcpServers.a.url"],
    [{ mcpServers: { a: { type: "http", url: "not a url" } } }, "mcpServers.a.url"],
    [{ mcpServers: { a: { type: "grpc", url: "http://x" } } }, "mcpServers.a.type"],
    [{ mcpServers: { a: { type: "http", url: "http://x", tools: "all" } } }, "mcpServers.a.tools"],
    [{ mcpServers: { a: { type: "http", url: "http://x", tools: [1] } } }, "mcpServers.a.tools[0]"],
    [{ mcpServers: { a: { type: "http", url: "http://x", guard: "nope" } } }, "mcpServers.a.guard"],
    [
      { mcpServers: { a: { type: "http", url: "http://x", headers: { "X-A": 1 } } } },
      "mcpServers.a.headers.X-A",
    ],
    [{ mcpServers: { "a/b": { type: "http", url: "http://x" } } }, "mcpServers.a/b"],
    [{ mcpServers: { a___b: { type: "http", url: "http://x" } } }, "mcpServers.a___b"],
    [{ ...minimal, gateway: { port: 70000 } }, "gateway.port"],
    [{ ...minimal, gateway: { toolTimeout: 0 } }, "gateway.toolTimeout"],
    [{ ...minimal, gateway: { trustedBots: [] } }, "gateway.trustedBots"],
    [{ ...minimal, guards: { g: { type: "lua", path: "x" } } }, "guards.g.type"],
    [{ ...minimal, guards: { g: { type: "wasm", path: "x.txt" } } }, "guards.g.path"],
    [{ ...minimal, limits: { fuel: -1 } }, "limits.fuel"],
    [{ ...minimal, limits: { fuell: 5 } }, "limits.fuell"],
    [{ ...minimal, guardsMode: "lenient" }, "guardsMode"],
    [{ mcpServers: {} }, "mcpServers"],
    [{ mcpServers: { a: { type: "http", url: "http://x/${NOPE}" } } }, "mcpServers.a.url"],
  ];
  for (const [input, path] of cases) {
    const e = assertThrows(() => parseConfig(input, {}), ConfigError);
    assertEquals(e.path, path, `for ${JSON.stringify(input)}: ${e.message}`);
    assert(e.message.startsWith(`config ${path}:`));
  }
});

Deno.test("config: defaults, generated key, env mode, limits override", () => {
  const cfg = parseConfig({ mcpServers: minimal.mcpServers, limits: { fuel: 1234 } }, {
    MCP_GATEWAY_GUARDS_MODE: "Filter",
  });
  assertEquals(cfg.gateway.port, 8080);
  assertEquals(cfg.gateway.hostname, "127.0.0.1");
  assertEquals(cfg.gateway.mode, "filter");
  assert(cfg.gateway.apiKeyGenerated);
  assertMatch(cfg.gateway.apiKey ?? "", /^[0-9a-f]{64}$/);
  assertEquals(cfg.limits.fuel, 1234);
  assertEquals(cfg.limits.maxMemoryPages, 512);
  assertEquals(cfg.servers[0].tools, ["*"]);
});

Deno.test("config: JSON syntax errors are ConfigErrors", () => {
  assertThrows(() => parseConfigText("{", {}, "config.json"), ConfigError, "config.json is not valid JSON");
});

Deno.test("config: server ids that would make unified names <server>___<tool> ambiguous are refused", () => {
  const server = { type: "http", url: "http://127.0.0.1:3000/mcp" };
  for (
    const [id, why] of [
      ["gh_", "must not end in '_'"],
      ["gh__", "must not end in '_'"],
      ["a___b", "must not contain '___'"],
      ["x____", "must not contain '___'"],
    ]
  ) {
    const e = assertThrows(
      () => parseConfig({ mcpServers: { gh: server, [id]: server }, gateway: { apiKey: "k" } }),
      ConfigError,
    );
    assertEquals(e.path, `mcpServers.${id}`);
    assert(e.message.startsWith(`config mcpServers.${id}: server id ${why}`), e.message);
  }
  // Underscores inside an id are fine: the first "___" of "<id>___<tool>" is then always the separator.
  const cfg = parseConfig({
    mcpServers: { gh: server, g_h: server, "g__h": server },
    gateway: { apiKey: "k" },
  });
  assertEquals(cfg.servers.map((s) => s.id), ["gh", "g_h", "g__h"]);
  for (const id of ["gh", "g_h", "g__h"]) {
    for (const tool of ["x", "_x", "__x", "a___b"]) {
      const full = `${id}___${tool}`;
      const cut = full.indexOf("___");
      assertEquals([full.slice(0, cut), full.slice(cut + 3)], [id, tool], full);
    }
  }
});

Deno.test("config: gateway.agents (per-agent keys by value or SHA-256) and no generated shared key", () => {
  const server = { type: "http", url: "http://127.0.0.1:3000/mcp" };
  const hash = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"; // SHA-256("test")
  const cfg = parseConfig(
    {
      mcpServers: { gh: server },
      gateway: { agents: { ci: { apiKey: "${CI_KEY}" }, bot: { apiKeySha256: hash } } },
    },
    { CI_KEY: "test2" },
  );
  assertEquals(cfg.gateway.apiKey, null, "no shared key is generated next to per-agent keys");
  assertEquals(cfg.gateway.apiKeyGenerated, false);
  assertEquals(cfg.gateway.agents, [
    { id: "ci", keySha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752" },
    { id: "bot", keySha256: hash.toLowerCase() },
  ]);
  const bad: [unknown, string, string][] = [
    [{ "../x": { apiKey: "k" } }, "gateway.agents.../x", "agent id must be"],
    [{ a: {} }, "gateway.agents.a", "exactly one of apiKey"],
    [{ a: { apiKey: "k", apiKeySha256: hash } }, "gateway.agents.a", "exactly one of apiKey"],
    [{ a: { apiKeySha256: "abc" } }, "gateway.agents.a.apiKeySha256", "64 hex digits"],
    [{ a: { apikey: "k" } }, "gateway.agents.a.apikey", "unknown key"],
    [{ a: { apiKey: "test" }, b: { apiKeySha256: hash } }, "gateway.agents.b", 'same key as agent "a"'],
    [{ a: { apiKey: "k\n" } }, "gateway.agents.a.apiKey", "control characters"],
  ];
  for (const [agents, path, msg] of bad) {
    const e = assertThrows(
      () => parseConfig({ mcpServers: { gh: server }, gateway: { agents } }),
      ConfigError,
    );
    assertEquals(e.path, path);
    assert(e.message.includes(msg), e.message);
  }
  const shared = assertThrows(
    () =>
      parseConfig({
        mcpServers: { gh: server },
        gateway: { apiKey: "test", agents: { a: { apiKeySha256: hash } } },
      }),
    ConfigError,
  );
  assertEquals(shared.path, "gateway.apiKey");
  const both = parseConfig({
    mcpServers: { gh: server },
    gateway: { apiKey: "s", agents: { a: { apiKey: "t" } } },
  });
  assert(both.warnings.some((w) => w.includes("X-Agent-ID")), both.warnings.join("\n"));
});

Deno.test("config: gateway.oauth defaults, and refusals naming the field", () => {
  const server = { type: "http", url: "http://127.0.0.1:3000/mcp" };
  const ok = parseConfig({
    mcpServers: { gh: server },
    gateway: { oauth: { issuer: "https://id.example.com", audience: "https://gw.example.com/mcp" } },
  });
  assertEquals(ok.gateway.apiKey, null);
  assertEquals(ok.gateway.oauth?.agentClaim, "sub");
  assertEquals(ok.gateway.oauth?.jwksUrl, null);
  assertEquals(ok.gateway.oauth?.requiredScopes, []);
  assertEquals(ok.gateway.oauth?.clockToleranceSeconds, 30);
  assert(!ok.gateway.oauth!.algorithms.some((a) => a === "none" || a.startsWith("HS")));
  const base = { issuer: "https://id.example.com", audience: "https://gw.example.com/mcp" };
  const bad: [Record<string, unknown>, string, string][] = [
    [{ ...base, algorithms: ["none"] }, "gateway.oauth.algorithms[0]", "never accepted"],
    [{ ...base, algorithms: ["RS256", "HS256"] }, "gateway.oauth.algorithms[1]", "public keys"],
    [{ ...base, algorithms: ["XX1"] }, "gateway.oauth.algorithms[0]", "unknown algorithm"],
    [{ ...base, issuer: "http://id.example.com" }, "gateway.oauth.issuer", "https"],
    [{ ...base, audience: "https://gw.example.com/mcp#x" }, "gateway.oauth.audience", "fragment"],
    [{ ...base, jwksUrl: "ftp://x" }, "gateway.oauth.jwksUrl", "https"],
    [{ ...base, requiredScopes: ["a b"] }, "gateway.oauth.requiredScopes[0]", "scope token"],
    [{ ...base, clockToleranceSeconds: 3600 }, "gateway.oauth.clockToleranceSeconds", "0 to 300"],
    [{ ...base, audiense: "x" }, "gateway.oauth.audiense", "unknown key"],
    [{ audience: base.audience }, "gateway.oauth.issuer", "non-empty string"],
  ];
  for (const [oauth, path, msg] of bad) {
    const e = assertThrows(
      () => parseConfig({ mcpServers: { gh: server }, gateway: { oauth } }),
      ConfigError,
    );
    assertEquals(e.path, path, JSON.stringify(oauth));
    assert(e.message.includes(msg), e.message);
  }
  // http is accepted on loopback only (local issuers, tests).
  const local = parseConfig({
    mcpServers: { gh: server },
    gateway: { oauth: { issuer: "http://127.0.0.1:9000", audience: "http://localhost:8080/mcp" } },
  });
  assertEquals(local.gateway.oauth?.issuer, "http://127.0.0.1:9000");
});
