/**
 * The same gateway suite against the Deno entry (`startGateway`, agent labels in Deno KV on disk), so
 * that Deno and Workers are held to one behaviour.
 */
import { gatewaySuite } from "./suite.ts";
import { denoTarget } from "./targets.ts";

gatewaySuite(denoTarget());
