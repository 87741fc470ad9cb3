/**
 * The demo upstream as its own process, so a test can kill it mid-stream:
 * `deno run -A test/gateway/demo_upstream_main.ts --port N` (binds 127.0.0.1, prints `listening N`).
 *
 * @module
 */
import { createDemoUpstream } from "../../src/demo/upstream.ts";

if (import.meta.main) {
  const i = Deno.args.indexOf("--port");
  const port = Number(Deno.args[i + 1]);
  if (i < 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(
      `--port must be an integer from 1 to 65535, got ${JSON.stringify(Deno.args[i + 1])}`,
    );
  }
  const upstream = createDemoUpstream();
  Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => console.log(`listening ${port}`) },
    upstream.fetch,
  );
}
