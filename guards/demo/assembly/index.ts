/**
 * The demo guard: exports of the gh-aw-mcpg guard ABI (guard-abi.md §1-2).
 *
 * Every label export is `f(input_ptr, input_len, output_ptr, output_size) -> i32`: it parses the
 * UTF-8 JSON input, writes UTF-8 JSON output and returns its length, 0 for "no labels", -1 on
 * error, or -2 with the needed size as a little-endian u32 in the first 4 output bytes when the
 * output does not fit. Memory allocated during a call is released when it returns.
 *
 * @module
 */

import "./abort";
import { arenaMark, arenaRelease, hostAlloc, hostFree } from "./arena";
import { labelAgent, labelResource, labelResponse, Outcome } from "./handlers";
import { jsonError, JsonValue, parseJson, writeJson } from "./json";
import { log, LOG_ERROR } from "./log";
import { clearPolicy } from "./state";

/** Which export is running, for `run`. */
const OP_AGENT: i32 = 0;
const OP_RESOURCE: i32 = 1;
const OP_RESPONSE: i32 = 2;

/** Return code: error. */
const RC_ERROR: i32 = -1;
/** Return code: output buffer too small (needed size stored at `output_ptr` when it has 4 bytes). */
const RC_TOO_SMALL: i32 = -2;

function dispatch(op: i32, input: JsonValue): Outcome {
  if (op == OP_AGENT) return labelAgent(input);
  if (op == OP_RESOURCE) return labelResource(input);
  return labelResponse(input);
}

/** Parses the input, runs `op`, writes the answer with the -2 protocol. */
function handle(op: i32, inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  if (inLen < 0 || outSize < 0) return RC_ERROR;
  const input = parseJson(<usize> inPtr, <usize> inLen);
  if (input === null) {
    log(LOG_ERROR, "input is not valid JSON: " + jsonError);
    return RC_ERROR;
  }
  const outcome = dispatch(op, input);
  if (outcome.failed) return RC_ERROR;
  const value = outcome.value;
  if (value === null) return 0;
  const out = writeJson(value);
  if (out.length > outSize) {
    if (outSize >= 4) store<u32>(<usize> outPtr, <u32> out.length);
    return RC_TOO_SMALL;
  }
  memory.copy(<usize> outPtr, out.ptr, <usize> out.length);
  return out.length;
}

/** Runs one export call inside its own arena scope. */
function run(op: i32, inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  const mark = arenaMark();
  const rc = handle(op, inPtr, inLen, outPtr, outSize);
  // A rejected label_agent leaves no policy behind, so later calls fail closed.
  if (op == OP_AGENT && rc == RC_ERROR) clearPolicy();
  arenaRelease(mark);
  return rc;
}

/** Validates and stores the policy; answers the agent labels, `difc_mode` and `normalized_policy`. */
export function label_agent(inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  return run(OP_AGENT, inPtr, inLen, outPtr, outSize);
}

/** Labels a tool call: `{"resource":{description,secrecy,integrity},"operation"}`. */
export function label_resource(inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  return run(OP_RESOURCE, inPtr, inLen, outPtr, outSize);
}

/** Labels a tool result per item (`labeled_paths`), or returns 0 for "no labels". */
export function label_response(inPtr: i32, inLen: i32, outPtr: i32, outSize: i32): i32 {
  return run(OP_RESPONSE, inPtr, inLen, outPtr, outSize);
}

/** Allocates `size` bytes for the host (input and output buffers). 0 if out of memory. */
export function alloc(size: i32): i32 {
  return hostAlloc(size);
}

/** Returns a buffer from `alloc`. */
export function dealloc(ptr: i32, _size: i32): void {
  hostFree(ptr);
}
