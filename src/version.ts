/** The gateway's version, reported by `/health` and in `initialize` results (`serverInfo`). */
export const GATEWAY_VERSION = "0.1.0";
