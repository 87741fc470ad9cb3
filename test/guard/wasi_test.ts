/** The WASI preview1 shim, called directly on a real `WebAssembly.Memory`. */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { WASI_PREVIEW1_SIGNATURES } from "../../src/guard/prepare.ts";
import {
  createWasi,
  Errno,
  FAKE_CLOCK_RESOLUTION_NS,
  FAKE_EPOCH_NS,
  ProcExit,
} from "../../src/guard/wasi.ts";

// deno-lint-ignore no-explicit-any
type Fn = (...a: any[]) => number;

function setup() {
  const memory = new WebAssembly.Memory({ initial: 2 });
  const logs: Array<[string, string, unknown]> = [];
  const raw = createWasi({ log: (l, m, f) => logs.push([l, m, f?.stream]), memory: () => memory });
  const wasi = raw as unknown as Record<string, Fn>;
  const dv = () => new DataView(memory.buffer);
  return { memory, wasi, dv, logs };
}

Deno.test("the shim provides every wasi_snapshot_preview1 function", () => {
  const names = Object.keys(createWasi({ log: () => {}, memory: () => undefined }));
  assertEquals(names.sort(), Object.keys(WASI_PREVIEW1_SIGNATURES).sort());
});

Deno.test("fake clocks: realtime from 2022-01-01, monotonic from 0, +1 ms per read; CPU clocks EINVAL", () => {
  const { wasi, dv } = setup();
  assertEquals(wasi.clock_time_get(0, 0n, 8), Errno.SUCCESS);
  assertEquals(dv().getBigUint64(8, true), FAKE_EPOCH_NS);
  wasi.clock_time_get(0, 0n, 8);
  assertEquals(dv().getBigUint64(8, true), FAKE_EPOCH_NS + 1_000_000n);
  wasi.clock_time_get(1, 0n, 16);
  assertEquals(dv().getBigUint64(16, true), 0n);
  wasi.clock_time_get(1, 0n, 16);
  assertEquals(dv().getBigUint64(16, true), 1_000_000n);
  assertEquals(wasi.clock_time_get(2, 0n, 16), Errno.INVAL);
  assertEquals(wasi.clock_res_get(1, 24), Errno.SUCCESS);
  assertEquals(dv().getBigUint64(24, true), FAKE_CLOCK_RESOLUTION_NS);
  assertEquals(wasi.clock_time_get(0, 0n, 2 * 65536 - 4), Errno.FAULT);
  assertEquals(new Date(Number(FAKE_EPOCH_NS / 1_000_000n)).toISOString(), "2022-01-01T00:00:00.000Z");
});

Deno.test("random_get fills from crypto, also beyond 64 KiB", () => {
  const { wasi, memory } = setup();
  assertEquals(wasi.random_get(0, 100_000), Errno.SUCCESS);
  const bytes = new Uint8Array(memory.buffer, 0, 100_000);
  assert(bytes.subarray(0, 64).some((b) => b !== 0));
  assert(bytes.subarray(99_936).some((b) => b !== 0));
  assertEquals(wasi.random_get(131_000, 1000), Errno.FAULT);
});

Deno.test("stdout/stderr are logged; stdin is empty; other fds are EBADF", () => {
  const { wasi, dv, memory, logs } = setup();
  new Uint8Array(memory.buffer).set(new TextEncoder().encode("héllo\n"), 100);
  dv().setUint32(0, 100, true);
  dv().setUint32(4, 3, true);
  dv().setUint32(8, 103, true);
  dv().setUint32(12, 4, true); // "llo\n"
  assertEquals(wasi.fd_write(1, 0, 2, 32), Errno.SUCCESS);
  assertEquals(dv().getUint32(32, true), 7);
  assertEquals(wasi.fd_write(2, 0, 1, 32), Errno.SUCCESS);
  assertEquals(logs, [["info", "héllo", "stdout"], ["warn", "hé", "stderr"]]);
  assertEquals(wasi.fd_write(5, 0, 1, 32), Errno.BADF);
  dv().setUint32(40, 9, true);
  assertEquals(wasi.fd_read(0, 0, 1, 40), Errno.SUCCESS);
  assertEquals(dv().getUint32(40, true), 0);
  assertEquals(wasi.fd_read(3, 0, 1, 40), Errno.BADF);
});

Deno.test("no args, no environment, no preopens, no files, no sockets", () => {
  const { wasi, dv } = setup();
  dv().setUint32(0, 7, true);
  dv().setUint32(4, 7, true);
  assertEquals(wasi.args_sizes_get(0, 4), Errno.SUCCESS);
  assertEquals([dv().getUint32(0, true), dv().getUint32(4, true)], [0, 0]);
  dv().setUint32(0, 7, true);
  assertEquals(wasi.environ_sizes_get(0, 4), Errno.SUCCESS);
  assertEquals([dv().getUint32(0, true), dv().getUint32(4, true)], [0, 0]);
  assertEquals(wasi.fd_prestat_get(3, 0), Errno.BADF);
  assertEquals(wasi.path_open(3, 0, 0, 0, 0, 0n, 0n, 0, 0), Errno.BADF);
  assertEquals(wasi.sock_accept(3, 0, 0), Errno.BADF);
  assertEquals(wasi.fd_seek(1, 0n, 0, 0), Errno.SPIPE);
  assertEquals(wasi.fd_seek(9, 0n, 0, 0), Errno.BADF);
  assertEquals(wasi.fd_fdstat_get(1, 64), Errno.SUCCESS);
  assertEquals(dv().getUint8(64), 2, "character device");
  assertEquals(wasi.fd_fdstat_get(4, 64), Errno.BADF);
  assertEquals(wasi.fd_filestat_get(2, 128), Errno.SUCCESS);
  assertEquals(wasi.fd_sync(1), Errno.NOTSUP);
  assertEquals(wasi.proc_raise(9), Errno.NOSYS);
  assertEquals(wasi.sched_yield(), Errno.SUCCESS);
});

Deno.test("poll_oneoff returns at once: clocks fire, stdin hangs up, stdout is writable", () => {
  const { wasi, dv } = setup();
  const d = dv();
  // subscription 0: clock, 10 s relative timeout
  d.setBigUint64(0, 11n, true);
  d.setUint8(8, 0);
  d.setUint32(16, 1, true);
  d.setBigUint64(24, 10_000_000_000n, true);
  // subscription 1: fd_read on stdin
  d.setBigUint64(48, 22n, true);
  d.setUint8(56, 1);
  d.setUint32(64, 0, true);
  // subscription 2: fd_write on fd 7
  d.setBigUint64(96, 33n, true);
  d.setUint8(104, 2);
  d.setUint32(112, 7, true);
  assertEquals(wasi.poll_oneoff(0, 1024, 3, 2048), Errno.SUCCESS);
  assertEquals(d.getUint32(2048, true), 3);
  assertEquals([d.getBigUint64(1024, true), d.getUint16(1032, true), d.getUint8(1034)], [11n, 0, 0]);
  assertEquals([d.getBigUint64(1056, true), d.getUint8(1066), d.getUint16(1080, true)], [22n, 1, 1]);
  assertEquals([d.getBigUint64(1088, true), d.getUint16(1096, true)], [33n, Errno.BADF]);
  assertEquals(wasi.poll_oneoff(0, 1024, 0, 2048), Errno.INVAL);
});

Deno.test("proc_exit throws ProcExit with the code", () => {
  const { wasi } = setup();
  const e = assertThrows(() => wasi.proc_exit(7), ProcExit);
  assertEquals((e as ProcExit).code, 7);
});

Deno.test("pointers outside memory are EFAULT, not exceptions", () => {
  const { wasi } = setup();
  assertEquals(wasi.args_sizes_get(-4, 0), Errno.FAULT);
  assertEquals(wasi.fd_write(1, 2 * 65536 - 4, 1, 0), Errno.FAULT);
  const none = createWasi({ log: () => {}, memory: () => undefined }) as unknown as Record<string, Fn>;
  assertEquals(none.environ_sizes_get(0, 4), Errno.FAULT);
});
