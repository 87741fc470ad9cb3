/**
 * Start and stop helpers for third-party processes in tests (server-everything, the conformance CLI,
 * fixtures run as their own process).
 *
 * Every process is spawned with piped output that is drained in the background (so a chatty child never
 * blocks on a full pipe and no stream resource leaks), is stopped by its pid with SIGTERM then SIGKILL,
 * and is awaited until it has exited. Network is loopback only: {@link freePort} picks a port on
 * 127.0.0.1 and {@link waitForPort} polls 127.0.0.1.
 *
 * @module
 */
import { node22, node22Missing } from "../../scripts/node22.ts";

/** Address every helper here binds and connects to. */
export const LOOPBACK = "127.0.0.1";

/** Default time a process gets to open its port. Node cold starts take about a second here. */
export const DEFAULT_START_TIMEOUT_MS = 15_000;

/** Pause between connection attempts while waiting for a port. */
export const PORT_POLL_INTERVAL_MS = 50;

/** Grace period between SIGTERM and SIGKILL when stopping a process. */
export const DEFAULT_STOP_GRACE_MS = 3_000;

/** Most output kept per stream; older output is dropped (a runaway child must not eat memory). */
export const MAX_CAPTURED_CHARS = 1 << 20;

/** Absolute path of the repository root (resolved from this file, not from the working directory). */
export const REPO_ROOT: string = new URL("../../", import.meta.url).pathname;

/**
 * Why Node >= 22.12 is not available on this machine, or null (scripts/node22.ts). Tests that run
 * Node 22 programs (the conformance CLI, server-everything) pass `{ ignore: NODE22_MISSING !== null }`
 * so that `npm test` works where only an older Node is installed, and say so.
 */
export const NODE22_MISSING: string | null = node22Missing();
if (NODE22_MISSING) console.error(`tests that need Node 22 are skipped: ${NODE22_MISSING}`);
/** Node >= 22.12 (the conformance CLI needs it): see scripts/node22.ts. Empty when missing. */
export const NODE22: string = NODE22_MISSING ? "" : node22();
/** `Deno.test` options of a test that runs a Node 22 program. */
export const NEEDS_NODE22: { ignore: boolean } = { ignore: NODE22_MISSING !== null };

/** `Deno.test(name, fn)` for a test that runs a Node 22 program: ignored, saying why, without one. */
export function testWithNode22(name: string, fn: (t: Deno.TestContext) => Promise<void>): void {
  Deno.test(name, NEEDS_NODE22, fn);
}

/** The process exited before it became ready. */
export class ProcessExitedError extends Error {
  constructor(readonly command: string, readonly status: Deno.CommandStatus, readonly output: string) {
    super(
      `process "${command}" exited with code ${status.code} before it was ready:\n${output.slice(-2000)}`,
    );
    this.name = "ProcessExitedError";
  }
}

/** The process did not become ready in time. */
export class ProcessStartTimeoutError extends Error {
  constructor(
    readonly command: string,
    readonly what: string,
    readonly timeoutMs: number,
    readonly output: string,
  ) {
    super(`process "${command}" did not ${what} within ${timeoutMs} ms:\n${output.slice(-2000)}`);
    this.name = "ProcessStartTimeoutError";
  }
}

/** Options of {@link startProcess}. */
export interface StartProcessOptions {
  /** Arguments after the program. */
  args?: string[];
  /** Environment. With `clearEnv` it is the whole environment of the child. */
  env?: Record<string, string>;
  /** Start from an empty environment (keeps secrets away from tools that echo their env). */
  clearEnv?: boolean;
  /** Working directory; the repository root by default. */
  cwd?: string;
  /** Resolve only once 127.0.0.1:`waitForPort` accepts connections. */
  waitForPort?: number;
  /** Resolve only once a line of stdout matches; the match is returned in `readyMatch`. */
  waitForStdout?: RegExp;
  /** Bound on the wait for readiness; {@link DEFAULT_START_TIMEOUT_MS} by default. */
  startTimeoutMs?: number;
}

/** A running child process. `stop()` (or `await using`) ends it and waits for it. */
export interface ManagedProcess extends AsyncDisposable {
  readonly pid: number;
  /** The `waitForStdout` match, if one was asked for. */
  readonly readyMatch?: RegExpMatchArray;
  /** Resolves with the exit status once the child has exited. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Output captured so far (stdout then stderr). */
  output(): string;
  /** SIGTERM by pid, SIGKILL after `graceMs`, then waits for exit and for the output pipes to drain. */
  stop(graceMs?: number): Promise<Deno.CommandStatus>;
}

/**
 * Picks a TCP port that is free on 127.0.0.1 right now (bind to port 0, read it, release it).
 *
 * @example
 * ```ts
 * const port = freePort();
 * ```
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * Resolves once 127.0.0.1:`port` accepts a TCP connection; rejects when `signal` aborts first.
 *
 * @example
 * ```ts
 * await waitForPort(3101, AbortSignal.timeout(5000));
 * ```
 */
export async function waitForPort(port: number, signal: AbortSignal): Promise<void> {
  while (true) {
    signal.throwIfAborted();
    try {
      const conn = await Deno.connect({ hostname: LOOPBACK, port });
      conn.close();
      return;
    } catch (err) {
      if (!(err instanceof Deno.errors.ConnectionRefused)) throw err;
    }
    await new Promise((r) => setTimeout(r, PORT_POLL_INTERVAL_MS));
  }
}

class Capture {
  text = "";
  #waiters: Array<() => void> = [];
  append(chunk: string) {
    this.text += chunk;
    if (this.text.length > MAX_CAPTURED_CHARS) this.text = this.text.slice(-MAX_CAPTURED_CHARS);
    for (const w of this.#waiters.splice(0)) w();
  }
  changed(): Promise<void> {
    return new Promise((r) => this.#waiters.push(r));
  }
}

/** Sends `signal` to `pid`; a process that is already gone is not an error. */
function signalPid(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

async function drain(stream: ReadableStream<Uint8Array>, into: Capture): Promise<void> {
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) into.append(chunk);
}

/**
 * Spawns `program` and resolves once it is ready (its port answers and/or a stdout line matched).
 * If it exits or times out first, it is killed and the promise rejects with
 * {@link ProcessExitedError} / {@link ProcessStartTimeoutError} carrying its output.
 *
 * @example
 * ```ts
 * const port = freePort();
 * await using proc = await startProcess(NODE22, {
 *   args: ["node_modules/@modelcontextprotocol/server-everything/dist/index.js", "streamableHttp"],
 *   env: { PORT: String(port) }, clearEnv: true, waitForPort: port,
 * });
 * ```
 */
export async function startProcess(program: string, opts: StartProcessOptions = {}): Promise<ManagedProcess> {
  const commandText = [program, ...(opts.args ?? [])].join(" ");
  const child = new Deno.Command(program, {
    args: opts.args ?? [],
    cwd: opts.cwd ?? REPO_ROOT,
    env: opts.env,
    clearEnv: opts.clearEnv ?? false,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new Capture();
  const err = new Capture();
  const drained = Promise.all([drain(child.stdout, out), drain(child.stderr, err)]).catch(() => {});
  const status = child.status;
  const output = () => out.text + err.text;
  let exited = false;
  status.then(() => exited = true);
  let stopped: Promise<Deno.CommandStatus> | undefined;

  const stop = (graceMs = DEFAULT_STOP_GRACE_MS): Promise<Deno.CommandStatus> => {
    stopped ??= (async () => {
      if (!exited) {
        signalPid(child.pid, "SIGTERM");
        let timer: ReturnType<typeof setTimeout> | undefined;
        const stillRunning = await Promise.race([
          status.then(() => false),
          new Promise<boolean>((r) => timer = setTimeout(() => r(true), graceMs)),
        ]);
        clearTimeout(timer);
        if (stillRunning) signalPid(child.pid, "SIGKILL");
      }
      const s = await status;
      await drained;
      return s;
    })();
    return stopped;
  };

  const handle: ManagedProcess = {
    pid: child.pid,
    status,
    output,
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };

  const timeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const ready = new AbortController();
  let failure: "exited" | "timeout" | undefined;
  const timer = setTimeout(() => {
    failure ??= "timeout";
    ready.abort();
  }, timeoutMs);
  status.then(() => {
    failure ??= "exited";
    ready.abort();
  });
  const aborted = new Promise<void>((r) => ready.signal.addEventListener("abort", () => r(), { once: true }));
  try {
    let readyMatch: RegExpMatchArray | undefined;
    if (opts.waitForStdout) {
      while (!(readyMatch = out.text.match(opts.waitForStdout) ?? undefined)) {
        if (ready.signal.aborted) throw new Error("not ready");
        await Promise.race([out.changed(), aborted]);
      }
    }
    if (opts.waitForPort !== undefined) await waitForPort(opts.waitForPort, ready.signal);
    failure = undefined;
    return readyMatch ? { ...handle, readyMatch } : handle;
  } catch (e) {
    const why = failure;
    const exitStatus = await stop();
    if (why === "exited") throw new ProcessExitedError(commandText, exitStatus, output());
    if (why === "timeout") {
      const what = opts.waitForStdout ? `print ${opts.waitForStdout}` : `open port ${opts.waitForPort}`;
      throw new ProcessStartTimeoutError(commandText, what, timeoutMs, output());
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** A web-standard handler served by {@link serveOnLoopback}; `close` ends its own work first. */
export interface LoopbackHandler {
  fetch(req: Request): Response | Promise<Response>;
  close(): Promise<void>;
}

/** A handler listening on 127.0.0.1. `close()` (or `await using`) closes the handler, then the server. */
export interface LoopbackServer extends AsyncDisposable {
  /** `http://127.0.0.1:<port><path>` */
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `handler` in-process on 127.0.0.1 (`port: 0`, the default, picks a free port).
 *
 * @example
 * ```ts
 * await using server = await serveOnLoopback(createV2Handler(), { path: "/mcp" });
 * ```
 */
export function serveOnLoopback(
  handler: LoopbackHandler,
  opts: { port?: number; path?: string } = {},
): Promise<LoopbackServer> {
  return new Promise((resolve) => {
    const httpServer = Deno.serve({
      hostname: LOOPBACK,
      port: opts.port ?? 0,
      onListen: ({ port }) => {
        let closed: Promise<void> | undefined;
        const close = () =>
          closed ??= (async () => {
            await handler.close();
            await httpServer.shutdown();
          })();
        resolve({
          url: `http://${LOOPBACK}:${port}${opts.path ?? ""}`,
          port,
          close,
          [Symbol.asyncDispose]: close,
        });
      },
    }, (req) => handler.fetch(req));
  });
}

/**
 * Entry point for a fixture run as its own process: reads `--port N` (0 when absent), starts the
 * server, prints `listening <url>` and closes it on SIGTERM / SIGINT.
 *
 * @example
 * ```ts
 * if (import.meta.main) await runFixtureMain((port) => startV2Upstream({ port }));
 * ```
 */
export async function runFixtureMain(start: (port: number) => Promise<LoopbackServer>): Promise<void> {
  const i = Deno.args.indexOf("--port");
  const port = i < 0 ? 0 : Number(Deno.args[i + 1]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`--port must be an integer in 0..65535, got ${JSON.stringify(Deno.args[i + 1])}`);
  }
  const server = await start(port);
  console.log(`listening ${server.url}`);
  const stop = async () => {
    await server.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
