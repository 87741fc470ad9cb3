/**
 * The gateway as an OAuth resource server, against a loopback issuer whose keys the tests control:
 * valid tokens, every forged or broken token refused with its status, RFC 9728 metadata and the
 * `WWW-Authenticate` challenges, per-server audiences, key rotation, an issuer outage (fail closed,
 * cached keys keep working), and no token ever reaching an upstream.
 */
import { assert, assertEquals, assertMatch, assertRejects, assertStringIncludes } from "@std/assert";
import { authGateway, BASE, CREATE, LIST, sha256Hex } from "./harness.ts";
import { hs256WithPublicKey, issuerKey, startIssuer, type TestIssuer, unsignedToken } from "./issuer.ts";
import { AuthError, createAuthenticator } from "../../src/http/auth.ts";
import {
  JWKS_COOLDOWN_MS,
  JWKS_MAX_AGE_MS,
  JWKS_STALE_MS,
  type OAuthSettings,
} from "../../src/http/oauth.ts";
import { ASYMMETRIC_ALGORITHMS } from "../../src/http/oauth.ts";

const AUDIENCE = `${BASE}/mcp`;
const now = () => Math.floor(Date.now() / 1000);

function oauthBlock(iss: TestIssuer, extra: Record<string, unknown> = {}) {
  return { oauth: { issuer: iss.issuer, audience: AUDIENCE, jwksUrl: iss.jwksUrl, ...extra } };
}

Deno.test("oauth: a valid token admits its subject; /reflect shows how; the token never goes upstream", async () => {
  await using iss = await startIssuer(AUDIENCE);
  await using t = await authGateway(oauthBlock(iss));
  const token = await iss.sign({ sub: "ci-runner", scope: "mcp:tools", client_id: "ci" });
  const r = await t.request("/reflect", { authorization: `Bearer ${token}` });
  assertEquals(r.status, 200, r.text);
  const agent = r.body.agent as Record<string, unknown>;
  assertEquals(agent.id, "ci-runner");
  const a = agent.authentication as Record<string, unknown>;
  assertEquals([a.method, a.agentIdFrom, a.issuer, a.subject, a.clientId, a.claim], [
    "oauth",
    "token-claim",
    iss.issuer,
    "ci-runner",
    "ci",
    "sub",
  ]);
  assertEquals(a.scopes, ["mcp:tools"]);

  const client = await t.connect({ authorization: `Bearer ${token}` });
  await client.callTool(LIST);
  await client.callTool(CREATE);
  const limit = await assertRejects(() => client.callTool(CREATE));
  assertStringIncludes(limit.message, "-32004");
  assert(t.upstreamHeaders.length >= 3);
  for (const h of t.upstreamHeaders) {
    assertEquals(h.get("authorization"), null, "the agent's token is never forwarded");
    for (const [, v] of h) assert(!v.includes(token.slice(0, 40)), "no header carries the token");
  }
  const calls = t.logs.filter((l) => l.event === "tool_call");
  assertEquals(calls.length, 3);
  for (const c of calls) {
    assertEquals(c.agent, "ci-runner");
    assertEquals((c.auth as Record<string, unknown>).method, "oauth");
    assertEquals((c.auth as Record<string, unknown>).issuer, iss.issuer);
  }
  // X-Agent-ID may repeat the token's agent, never change it.
  const same = await t.request("/reflect", { authorization: `Bearer ${token}`, "x-agent-id": "ci-runner" });
  assertEquals(same.status, 200);
  const other = await t.request("/reflect", { authorization: `Bearer ${token}`, "x-agent-id": "fresh-1" });
  assertEquals([other.status, other.body.error], [403, "agent_id_mismatch"]);
  assertEquals(iss.jwksHits, 1, "one JWKS fetch served every request");
});

Deno.test("oauth: forged and broken tokens are refused, each with its status and reason", async () => {
  await using iss = await startIssuer(AUDIENCE);
  await using t = await authGateway(oauthBlock(iss, { requiredScopes: ["mcp:tools"] }));
  const key = iss.published[0];
  const stranger = await issuerKey("k1"); // same kid, other key
  const base = { iss: iss.issuer, aud: AUDIENCE, sub: "mallory", scope: "mcp:tools", exp: now() + 300 };
  const cases: [string, string, number, string, string | null][] = [
    [
      "wrong signature",
      await iss.sign(base, { key: stranger }),
      401,
      "signature verification failed",
      "invalid_token",
    ],
    ["alg none", unsignedToken(base), 401, "algorithm not allowed", "invalid_token"],
    [
      "HS256 with the public key as secret",
      await hs256WithPublicKey(base, key),
      401,
      "algorithm not allowed",
      "invalid_token",
    ],
    ["expired", await iss.sign({ ...base, exp: now() - 120 }), 401, "token expired", "invalid_token"],
    ["not yet valid", await iss.sign({ ...base, nbf: now() + 120 }), 401, "not yet valid", "invalid_token"],
    [
      "wrong issuer",
      await iss.sign({ ...base, iss: "https://evil.example" }),
      401,
      "issuer (iss)",
      "invalid_token",
    ],
    [
      "wrong audience",
      await iss.sign({ ...base, aud: "https://other.example/mcp" }),
      401,
      "audience (aud)",
      "invalid_token",
    ],
    ["no exp", await iss.sign({ ...base, exp: undefined }), 401, "", "invalid_token"],
    [
      "missing agent claim",
      await iss.sign({ ...base, sub: undefined }),
      401,
      'no "sub" claim',
      "invalid_token",
    ],
    [
      "agent claim not an agent id",
      await iss.sign({ ...base, sub: "../etc" }),
      401,
      "not a valid agent id",
      "invalid_token",
    ],
    ["unknown kid", await iss.sign(base, { kid: "nope" }), 401, "no key of the issuer", "invalid_token"],
    ["not a JWT", "definitely-not-a-jwt", 401, "malformed token", "invalid_token"],
    [
      "oversized (16 KiB limit)",
      await iss.sign({ ...base, pad: "x".repeat(17 * 1024) }),
      401,
      "longer than 16384 bytes",
      "invalid_token",
    ],
    [
      "missing scope",
      await iss.sign({ ...base, scope: "other" }),
      403,
      "lacks scope mcp:tools",
      "insufficient_scope",
    ],
  ];
  const prm = `${BASE}/.well-known/oauth-protected-resource/mcp/demo`;
  for (const [name, token, status, why, error] of cases) {
    const r = await t.request("/mcp/demo", {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    }, { method: "POST", body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }) });
    assertEquals(r.status, status, `${name}: ${r.text}`);
    assertStringIncludes(String(r.body.message), why, name);
    const challenge = r.headers.get("www-authenticate") ?? "";
    assertStringIncludes(challenge, `error="${error}"`, name);
    assertStringIncludes(challenge, `resource_metadata="${prm}"`, name);
    if (status === 403) assertStringIncludes(challenge, 'scope="mcp:tools"');
  }
  // The skew: a token expired 10 s ago is still accepted (30 s tolerance).
  const skew = await t.request("/reflect", {
    authorization: `Bearer ${await iss.sign({ ...base, exp: now() - 10 })}`,
  });
  assertEquals(skew.status, 200, skew.text);
  assertEquals(t.demo.stats().tools_list ?? 0, 0, "no refused request reached the upstream");
});

Deno.test("oauth: 401 challenges point at RFC 9728 metadata, served for the gateway and each server", async () => {
  await using iss = await startIssuer(AUDIENCE);
  await using t = await authGateway(oauthBlock(iss, { requiredScopes: ["mcp:tools"] }));
  const none = await t.request("/mcp/demo", {}, { method: "POST", body: "{}" });
  assertEquals(none.status, 401);
  assertEquals(
    none.headers.get("www-authenticate"),
    `Bearer scope="mcp:tools", resource_metadata="${BASE}/.well-known/oauth-protected-resource/mcp/demo"`,
  );
  const unified = await t.request("/mcp", {}, { method: "POST", body: "{}" });
  assertStringIncludes(
    unified.headers.get("www-authenticate")!,
    `resource_metadata="${BASE}/.well-known/oauth-protected-resource/mcp"`,
  );

  const root = await t.request("/.well-known/oauth-protected-resource", {});
  assertEquals(root.status, 200);
  assertEquals(root.body.resource, AUDIENCE);
  assertEquals(root.body.authorization_servers, [iss.issuer]);
  assertEquals(root.body.scopes_supported, ["mcp:tools"]);
  assertEquals(root.body.bearer_methods_supported, ["header"]);
  const mcp = await t.request("/.well-known/oauth-protected-resource/mcp", {});
  assertEquals(mcp.body.resource, AUDIENCE);
  const server = await t.request("/.well-known/oauth-protected-resource/mcp/demo", {});
  assertEquals(server.body.resource, `${AUDIENCE}/demo`);
  const unknown = await t.request("/.well-known/oauth-protected-resource/mcp/nope", {});
  assertEquals(unknown.status, 404);
  // The Host/Origin check covers the metadata too.
  const rebound = await t.request("/.well-known/oauth-protected-resource", { host: "evil.example" });
  assertEquals(rebound.status, 403);

  // Without gateway.oauth there is no metadata, and key refusals carry no Bearer challenge.
  await using keyed = await authGateway({ agents: { a: { apiKeySha256: await sha256Hex("k") } } });
  assertEquals((await keyed.request("/.well-known/oauth-protected-resource", {})).status, 404);
  const r = await keyed.request("/reflect", {});
  assertEquals([r.status, r.headers.get("www-authenticate")], [401, null]);
});

Deno.test("oauth: a token for one server (RFC 8707) works there only; a keyed agent's name is not a token's", async () => {
  await using iss = await startIssuer(AUDIENCE);
  await using t = await authGateway({
    ...oauthBlock(iss),
    agents: { alice: { apiKeySha256: await sha256Hex("alice-key") } },
  });
  const demoOnly = await iss.sign({ aud: `${AUDIENCE}/demo` });
  const client = await t.connect({ authorization: `Bearer ${demoOnly}` });
  await client.callTool(LIST);
  const unified = await t.request("/mcp", {
    authorization: `Bearer ${demoOnly}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  }, { method: "POST", body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }) });
  assertEquals(unified.status, 401);
  assertStringIncludes(String(unified.body.message), "audience");
  assertEquals((await t.request("/reflect", { authorization: `Bearer ${demoOnly}` })).status, 200);

  const impostor = await iss.sign({ sub: "alice" });
  const r = await t.request("/reflect", { authorization: `Bearer ${impostor}` });
  assertEquals([r.status, r.body.error], [403, "agent_id_reserved"]);
  // Keys and tokens side by side.
  const k = await t.request("/reflect", { authorization: "alice-key" });
  assertEquals((k.body.agent as Record<string, unknown>).id, "alice");
});

Deno.test("oauth: jwksUrl discovered from the issuer's OpenID metadata, once", async () => {
  await using iss = await startIssuer(AUDIENCE);
  await using t = await authGateway({ oauth: { issuer: iss.issuer, audience: AUDIENCE } });
  for (let i = 0; i < 3; i++) {
    const r = await t.request("/reflect", { authorization: `Bearer ${await iss.sign({ sub: `a${i}` })}` });
    assertEquals(r.status, 200, r.text);
  }
  assertEquals(iss.metadataHits, ["/.well-known/openid-configuration"]);
  assertEquals(iss.jwksHits, 1);
});

function settings(iss: TestIssuer): OAuthSettings {
  return {
    issuer: iss.issuer,
    audience: AUDIENCE,
    jwksUrl: iss.jwksUrl,
    agentClaim: "sub",
    requiredScopes: [],
    algorithms: [...ASYMMETRIC_ALGORITHMS],
    clockToleranceSeconds: 30,
  };
}

Deno.test("oauth: rotation (unknown kid refetches, rate-limited) and an issuer outage (503 without keys, cached keys keep working)", async () => {
  await using iss = await startIssuer(AUDIENCE);
  let clock = Date.now();
  const auth = createAuthenticator(
    { apiKey: null, agents: [], oauth: settings(iss) },
    { servers: ["demo"], now: () => clock },
  );
  const who = (token: string) =>
    auth.authenticate(new Headers({ authorization: `Bearer ${token}` }), { kind: "reflect" });
  const status = async (token: string) => {
    try {
      await who(token);
      return 200;
    } catch (e) {
      if (e instanceof AuthError) return e.status;
      throw e;
    }
  };
  const k1Token = await iss.sign({});
  assertEquals((await who(k1Token)).id, "agent-oauth");
  assertEquals(iss.jwksHits, 1);

  // The issuer rotates to k2. Right after a fetch, an unknown kid does not fetch again (cooldown).
  const k2 = await issuerKey("k2");
  iss.published = [iss.published[0], k2];
  const k2Token = await iss.sign({ sub: "rotated" }, { key: k2 });
  assertEquals(await status(k2Token), 401);
  assertEquals(iss.jwksHits, 1, "rate-limited");
  clock += JWKS_COOLDOWN_MS + 1;
  assertEquals((await who(k2Token)).id, "rotated");
  assertEquals(iss.jwksHits, 2, "one refetch for the new kid");
  for (let i = 0; i < 5; i++) assertEquals(await status(await iss.sign({}, { kid: `junk-${i}` })), 401);
  assertEquals(iss.jwksHits, 2, "unknown kids do not hammer the issuer");

  // Outage: cached keys keep working past their refresh time, within the stale window.
  iss.down = true;
  clock += JWKS_MAX_AGE_MS + 1;
  assertEquals((await who(k1Token)).id, "agent-oauth");
  assertEquals(iss.jwksHits, 2, "the failed attempt is not a hit");
  // A kid we never saw cannot be decided while the issuer is down: 503, not 401.
  clock += JWKS_COOLDOWN_MS + 1;
  const k3 = await issuerKey("k3");
  const k3Token = await iss.sign({}, { key: k3 });
  const e = await assertRejects(() => who(k3Token), AuthError);
  assertEquals(e.status, 503);
  assertEquals(e.headers["retry-after"], "30");
  // Past the stale window the cached keys stop working: fail closed.
  clock += JWKS_STALE_MS;
  assertEquals(await status(k1Token), 503);

  // The issuer comes back: the next attempt after the cooldown fetches again.
  iss.down = false;
  clock += JWKS_COOLDOWN_MS + 1;
  assertEquals((await who(k1Token)).id, "agent-oauth");
});

Deno.test("oauth: JWKS endpoint down from the start: 503 with a clear body, through the gateway", async () => {
  await using iss = await startIssuer(AUDIENCE);
  const token = await iss.sign({});
  iss.down = true;
  await using t = await authGateway(oauthBlock(iss));
  const r = await t.request("/reflect", { authorization: `Bearer ${token}` });
  assertEquals([r.status, r.body.error], [503, "auth_unavailable"]);
  assertMatch(String(r.body.message), /issuer's keys are unavailable \(JWKS .* answered HTTP 503\)/);
  assertEquals(r.headers.get("retry-after"), "30");
  // A closed port: the same.
  await using t2 = await authGateway({
    oauth: { issuer: iss.issuer, audience: AUDIENCE, jwksUrl: "http://127.0.0.1:9/jwks" },
  });
  const r2 = await t2.request("/reflect", { authorization: `Bearer ${token}` });
  assertEquals([r2.status, r2.body.error], [503, "auth_unavailable"]);
});

Deno.test("oauth: reloadAuth swaps keys and issuers atomically (revocation without restart)", async () => {
  await using iss = await startIssuer(AUDIENCE);
  await using t = await authGateway({ agents: { old: { apiKeySha256: await sha256Hex("old-key") } } });
  assertEquals((await t.request("/reflect", { authorization: "old-key" })).status, 200);
  const token = await iss.sign({});
  assertEquals((await t.request("/reflect", { authorization: `Bearer ${token}` })).status, 401);
  t.gw.reloadAuth({
    apiKey: null,
    agents: [{ id: "new", keySha256: await sha256Hex("new-key") }],
    oauth: settings(iss),
  });
  assertEquals((await t.request("/reflect", { authorization: "old-key" })).status, 401, "revoked");
  assertEquals((await t.request("/reflect", { authorization: "new-key" })).status, 200);
  assertEquals((await t.request("/reflect", { authorization: `Bearer ${token}` })).status, 200);
});

Deno.test("oauth: remembered verifications end with the token, and with a withdrawn key at the next refresh", async () => {
  await using iss = await startIssuer(AUDIENCE);
  let clock = Date.now();
  const auth = createAuthenticator(
    { apiKey: null, agents: [], oauth: { ...settings(iss), clockToleranceSeconds: 0 } },
    { servers: ["demo"], now: () => clock },
  );
  const status = async (token: string) => {
    try {
      await auth.authenticate(new Headers({ authorization: `Bearer ${token}` }), { kind: "reflect" });
      return 200;
    } catch (e) {
      if (e instanceof AuthError) return e.status;
      throw e;
    }
  };
  // Expiry is checked on every use, not only when the signature was verified.
  const short = await iss.sign({ exp: now() + 1 });
  assertEquals(await status(short), 200);
  await new Promise((r) => setTimeout(r, 1100 + (1000 - Date.now() % 1000)));
  assertEquals(await status(short), 401);

  // The issuer withdraws k1: a token verified before keeps working until the next refresh, then not.
  const token = await iss.sign({});
  assertEquals(await status(token), 200);
  iss.published = [await issuerKey("k2")];
  assertEquals(await status(token), 200);
  clock += JWKS_MAX_AGE_MS + 1;
  assertEquals(await status(token), 401);
});
