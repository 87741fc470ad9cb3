/**
 * The gateway suite against the BUILT Worker (scripts/build.ts output) in real workerd via Miniflare:
 * guards as compiled `import source` modules, agent labels in a persistent Durable Object.
 */
import { gatewaySuite } from "./suite.ts";
import { workerdTarget } from "./targets.ts";

gatewaySuite(workerdTarget());
