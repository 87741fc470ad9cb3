/**
 * Robustness: random byte corruptions of a real guard never crash the preparer with anything but a
 * GuardError, and whenever the corrupted input is still a valid module, the output is valid too.
 */
import { assert, assertInstanceOf } from "@std/assert";
import fc from "fast-check";
import wabtInit from "wabt";
import { GuardError } from "../../src/guard/limits.ts";
import { prepareGuard } from "../../src/guard/prepare.ts";

const wabt = await wabtInit();
const text = Deno.readTextFileSync(new URL("../fixtures/wat/prepare/guard_basic.wat", import.meta.url));
const mod = wabt.parseWat("guard_basic.wat", text, {});
mod.resolveNames();
const GUARD = new Uint8Array(mod.toBinary({ write_debug_names: true }).buffer);
mod.destroy();

/** Property runs: enough to hit every section of the ~700-byte fixture several times. */
const RUNS = 2000;

Deno.test("fuzz: corrupted guards give a GuardError or a valid prepared module", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(GUARD.length - 1), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 4,
      }),
      (edits) => {
        const bytes = GUARD.slice();
        for (const [at, value] of edits) bytes[at] = value;
        let out: Uint8Array<ArrayBuffer>;
        try {
          out = prepareGuard(bytes).bytes;
        } catch (e) {
          assertInstanceOf(e, GuardError);
          return;
        }
        if (WebAssembly.validate(bytes)) {
          assert(WebAssembly.validate(out), "valid input must give valid output");
        }
      },
    ),
    { numRuns: RUNS, seed: 20_240_601 },
  );
});
