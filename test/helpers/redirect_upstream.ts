/**
 * Two loopback servers for redirect tests: `url` answers every request with a redirect to `target`,
 * which records the `Authorization` header of each request it receives (it should receive none).
 */
export function redirectingUpstream(status: 301 | 302 | 303 | 307 | 308) {
  const seen: (string | null)[] = [];
  const ac = new AbortController();
  const target = Deno.serve({ port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} }, (req) => {
    seen.push(req.headers.get("authorization"));
    return new Response("ok");
  });
  const redirector = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} },
    () => Response.redirect(`http://127.0.0.1:${target.addr.port}/collect`, status),
  );
  return {
    url: `http://127.0.0.1:${redirector.addr.port}/mcp`,
    /** Authorization headers the redirect target received. */
    seen,
    async [Symbol.asyncDispose]() {
      ac.abort();
      await Promise.all([target.finished, redirector.finished]);
    },
  };
}
