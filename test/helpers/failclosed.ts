/**
 * Agent-side helpers of the fail-closed tests: a raw Streamable HTTP agent that keeps every byte it
 * receives (status, headers, bodies, GET streams), JSON-RPC message extraction from JSON and SSE
 * replies, an exactly-once answer check, a recording `fetch` for SDK clients, and the gateway
 * configurations (guarded by the marker WAT guard or the demo guard, and a noop control).
 *
 * @module
 */
import { API_KEY } from "../gateway/harness.ts";

/** The four protocol versions the gateway serves. */
export const VERSIONS = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"] as const;
export type Version = typeof VERSIONS[number];

export type Msg = Record<string, unknown>;

/** Methods refused on guarded servers (JSON-RPC -32601 naming "guarded", nothing sent upstream). */
export const REFUSED = [
  "resources/list",
  "resources/read",
  "resources/templates/list",
  "resources/subscribe",
  "resources/unsubscribe",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
  "tasks/get",
  "tasks/result",
  "tasks/list",
  "tasks/cancel",
  "subscriptions/listen",
  "x-unknown/method",
] as const;

/** Bound on every agent HTTP exchange, so a gateway that stalls fails the test instead of hanging it. */
export const EXCHANGE_TIMEOUT_MS = 15_000;

/** JSON-RPC messages in a reply body (JSON object/array, or SSE `data:` lines); non-JSON data is skipped. */
export function messagesOf(contentType: string | null, text: string): Msg[] {
  const out: Msg[] = [];
  const push = (v: unknown) => {
    for (const m of Array.isArray(v) ? v : [v]) if (typeof m === "object" && m !== null) out.push(m as Msg);
  };
  if ((contentType ?? "").includes("text/event-stream")) {
    for (const block of text.split(/\r?\n\r?\n/)) {
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) =>
        l.slice(5).replace(/^ /, "")
      )
        .join("\n");
      if (data.trim() === "") continue;
      try {
        push(JSON.parse(data));
      } catch {
        // not JSON: kept in the byte record, not a message
      }
    }
  } else if (text.trim() !== "") {
    try {
      push(JSON.parse(text));
    } catch {
      // not JSON
    }
  }
  return out;
}

/** Responses (result or error, no method) among `msgs`. */
export function responsesOf(msgs: Msg[]): Msg[] {
  return msgs.filter((m) => !("method" in m) && ("result" in m || "error" in m));
}

/**
 * Asserts that the agent requests `sent` (objects with an `id` and a `method`) got exactly one answer
 * each among `responses`, matched by id with its JSON type (1 and "1" differ), and nothing else
 * answered. Returns the responses by the JSON text of their id.
 */
export function assertExactlyOnce(sent: Msg[], responses: Msg[], where: string): Map<string, Msg[]> {
  const want = new Map<string, number>();
  for (const m of sent) {
    if (typeof m.method !== "string" || !("id" in m)) continue;
    const k = JSON.stringify(m.id);
    want.set(k, (want.get(k) ?? 0) + 1);
  }
  const got = new Map<string, Msg[]>();
  for (const r of responses) {
    const k = JSON.stringify(r.id);
    got.set(k, [...(got.get(k) ?? []), r]);
  }
  const problems: string[] = [];
  for (const [k, n] of want) {
    const g = got.get(k)?.length ?? 0;
    if (g !== n) problems.push(`id ${k}: ${n} request(s), ${g} answer(s)`);
  }
  for (const [k, rs] of got) {
    if (!want.has(k)) problems.push(`id ${k}: ${rs.length} answer(s) to no request`);
  }
  if (problems.length > 0) {
    throw new Error(
      `${where}: not exactly one answer per request: ${problems.join("; ")}\n` +
        `responses: ${JSON.stringify(responses).slice(0, 1500)}`,
    );
  }
  return got;
}

/** The error code of a response, or undefined for a result. */
export function codeOf(r: Msg | undefined): number | undefined {
  return (r?.error as { code?: number } | undefined)?.code;
}

/** One reply as the agent saw it. */
export interface Reply {
  status: number;
  contentType: string | null;
  text: string;
  messages: Msg[];
}

/** A raw MCP agent over `fetch` that records every byte it receives in `received`. */
export class RawAgent {
  /** Everything received: status lines, header lines, bodies, GET stream bytes. */
  received = "";
  sessionId: string | undefined;
  readonly version: Version;
  readonly url: string;
  readonly agentId: string;

  constructor(url: string, version: Version, agentId = "raw-agent") {
    this.url = url;
    this.version = version;
    this.agentId = agentId;
  }

  get modern(): boolean {
    return this.version === "2026-07-28";
  }

  /** A request object for this agent's version (2026-07-28 adds the `_meta` envelope). */
  request(id: unknown, method: string, params: Msg = {}): Msg {
    if (!this.modern) return { jsonrpc: "2.0", id, method, params };
    const meta = {
      ...(params._meta as Msg | undefined),
      "io.modelcontextprotocol/protocolVersion": "2026-07-28",
      "io.modelcontextprotocol/clientInfo": { name: "raw-agent", version: "0" },
      "io.modelcontextprotocol/clientCapabilities": { sampling: {}, elicitation: {}, roots: {} },
    };
    return { jsonrpc: "2.0", id, method, params: { ...params, _meta: meta } };
  }

  headers(body?: unknown): Record<string, string> {
    const h: Record<string, string> = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      authorization: `Bearer ${API_KEY}`,
      "x-agent-id": this.agentId,
    };
    if (this.sessionId) h["mcp-session-id"] = this.sessionId;
    if (this.version !== "2025-03-26" && (this.sessionId || this.modern)) {
      h["mcp-protocol-version"] = this.version;
    }
    if (this.modern && body && !Array.isArray(body) && typeof body === "object") {
      const m = body as Msg;
      if (typeof m.method === "string") h["mcp-method"] = m.method;
      const p = m.params as Msg | undefined;
      const name = p?.name ?? p?.uri;
      if (typeof name === "string" && /^[\x20-\x7e]*$/.test(name)) h["mcp-name"] = name;
    }
    return h;
  }

  private record(res: Response, text: string): void {
    this.received += `HTTP ${res.status}\n`;
    for (const [k, v] of res.headers) this.received += `${k}: ${v}\n`;
    this.received += `\n${text}\n`;
  }

  /** POSTs `body` (an object/array, serialized, or a string sent as is). */
  async post(body: unknown, extraHeaders: Record<string, string> = {}): Promise<Reply> {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    const res = await fetch(this.url, {
      method: "POST",
      headers: { ...this.headers(typeof body === "string" ? undefined : body), ...extraHeaders },
      body: text,
      signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS),
    });
    const out = await res.text();
    this.record(res, out);
    const sid = res.headers.get("mcp-session-id");
    if (sid && !this.sessionId) this.sessionId = sid;
    return {
      status: res.status,
      contentType: res.headers.get("content-type"),
      text: out,
      messages: messagesOf(res.headers.get("content-type"), out),
    };
  }

  /** `initialize` + `notifications/initialized` (2025 versions); nothing for 2026-07-28. */
  async init(): Promise<Reply | undefined> {
    if (this.modern) return undefined;
    const r = await this.post({
      jsonrpc: "2.0",
      id: "init-0",
      method: "initialize",
      params: {
        protocolVersion: this.version,
        capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } },
        clientInfo: { name: "raw-agent", version: "0" },
      },
    });
    await this.post({ jsonrpc: "2.0", method: "notifications/initialized" });
    return r;
  }

  /** Opens the GET stream for `ms` and records what arrives. */
  async get(ms: number): Promise<number> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), ms);
    try {
      const h = this.headers();
      delete h["content-type"];
      h.accept = "text/event-stream";
      const res = await fetch(this.url, { method: "GET", headers: h, signal: ctl.signal });
      let text = "";
      try {
        const reader = res.body?.getReader();
        const dec = new TextDecoder();
        while (reader) {
          const { done, value } = await reader.read();
          if (done) break;
          text += dec.decode(value, { stream: true });
        }
      } catch {
        // aborted after `ms`: what arrived so far counts
      }
      this.record(res, text);
      return res.status;
    } catch {
      return 0;
    } finally {
      clearTimeout(timer);
    }
  }

  async delete(): Promise<void> {
    if (!this.sessionId) return;
    const res = await fetch(this.url, {
      method: "DELETE",
      headers: this.headers(),
      signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS),
    });
    this.record(res, await res.text());
  }
}

/**
 * A `fetch` for SDK client transports that tees every response body into `sink.text` (plus status
 * and headers), so a test can check every byte an SDK client received.
 */
export function recordingFetch(sink: { text: string; pending: Promise<void>[] }): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, init);
    let head = `HTTP ${res.status}\n`;
    for (const [k, v] of res.headers) head += `${k}: ${v}\n`;
    sink.text += head;
    if (!res.body) return res;
    const [a, b] = res.body.tee();
    sink.pending.push((async () => {
      const reader = b.getReader();
      const dec = new TextDecoder();
      try {
        while (true) {
          const { done, value } = await reader.read();
          if (done) break;
          sink.text += dec.decode(value, { stream: true });
        }
      } catch {
        // aborted: what arrived counts
      }
    })());
    return new Response(a, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** Gateway config: `guarded` (marker WAT guard), `demo` (demo guard) and `open` (noop) servers on `url`. */
export function gatewayConfig(
  url: string,
  opts: { demoGuardHref?: string; demoPolicy?: unknown; allowed: readonly string[] },
): Record<string, unknown> {
  const servers: Record<string, unknown> = {
    guarded: {
      type: "http",
      url,
      guard: "marker",
      tools: [...opts.allowed],
      "guard-policies": { "allow-only": { repos: "all", "min-integrity": "none" } },
    },
    open: { type: "http", url },
  };
  const guards: Record<string, unknown> = { marker: { type: "wasm", path: "marker.wasm" } };
  if (opts.demoGuardHref) {
    servers.demo = {
      type: "http",
      url,
      guard: "demo",
      tools: [...opts.allowed],
      "guard-policies": opts.demoPolicy,
    };
    guards.demo = { type: "wasm", path: opts.demoGuardHref };
  }
  return { mcpServers: servers, guards };
}
