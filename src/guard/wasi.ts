/**
 * A sandboxed `wasi_snapshot_preview1` for guards: every preview1 function exists, none reaches the
 * outside world except stdout/stderr, which go to the logger.
 *
 * Behaviour (the reference host, wazero with gh-aw-mcpg's module config, behaves the same way where
 * a guard could notice):
 * - stdin is empty (`fd_read(0)` reads 0 bytes); stdout (1) and stderr (2) are logged, one log line
 *   per `fd_write` (stdout at `info`, stderr at `warn`).
 * - No files, directories or sockets: there are no preopens (`fd_prestat_get(3)` → `EBADF`), every
 *   fd above 2 is `EBADF`, every `path_*` call is `EBADF` (no directory fd exists), `sock_*` is
 *   `EBADF`. Seeking stdio is `ESPIPE`; other file operations on stdio are `ENOTSUP`.
 * - No arguments, no environment: `args_sizes_get`/`environ_sizes_get` report 0 and 0.
 * - `proc_exit(code)` throws {@link ProcExit}; the host ends the export call with
 *   `GuardError("proc_exit")`. `proc_raise` is `ENOSYS`; `sched_yield` succeeds at once.
 * - `poll_oneoff` never blocks: every clock subscription fires at once, stdin reports end of file
 *   (hang-up), stdout/stderr are writable. A guard's `sleep` therefore returns immediately, as
 *   under the reference (wazero's default nanosleep is a no-op).
 * - Time is fake and deterministic, per instance, like wazero's defaults: the realtime clock starts
 *   at 2022-01-01T00:00:00Z and the monotonic clock at 0, and each read advances the clock read by
 *   1 ms. Real time would leak nothing useful to a guard but would make guard runs non-reproducible;
 *   the CPU-time clocks are `EINVAL` (as in wazero). Both resolutions are 1 µs.
 * - `random_get` fills from `crypto.getRandomValues` (the reference uses a deterministic source;
 *   guards only use it to seed hash maps, and real randomness keeps that seeding unpredictable).
 * - A pointer outside linear memory makes the call return `EFAULT`.
 *
 * @module
 */
import type { GuardLogger } from "../difc/guard.ts";

/** WASI preview1 errno values used here. */
export const Errno = {
  SUCCESS: 0,
  BADF: 8,
  FAULT: 21,
  INVAL: 28,
  SPIPE: 70,
  NOSYS: 52,
  NOTSUP: 58,
} as const;

/** Realtime clock start: 2022-01-01T00:00:00Z in ns (wazero's fake walltime epoch). */
export const FAKE_EPOCH_NS = 1_640_995_200_000_000_000n;
/** Each clock read advances the clock by this much (1 ms, as wazero's fake clocks). */
export const FAKE_CLOCK_STEP_NS = 1_000_000n;
/** Reported clock resolution (1 µs). */
export const FAKE_CLOCK_RESOLUTION_NS = 1_000n;
/** `crypto.getRandomValues` fills at most this many bytes per call (Web Crypto's quota). */
const RANDOM_CHUNK_BYTES = 65_536;

const FILETYPE_CHARACTER_DEVICE = 2;
const EVENTTYPE_CLOCK = 0;
const EVENTTYPE_FD_READ = 1;
const EVENTTYPE_FD_WRITE = 2;
const EVENT_FD_READWRITE_HANGUP = 1;
const SUBSCRIPTION_BYTES = 48;
const EVENT_BYTES = 32;
const CLOCK_REALTIME = 0;
const CLOCK_MONOTONIC = 1;

/** Thrown by `proc_exit`; unwinds the guard. The host turns it into `GuardError("proc_exit")`. */
export class ProcExit extends Error {
  readonly code: number;
  constructor(code: number) {
    super(`guard called proc_exit(${code})`);
    this.name = "ProcExit";
    this.code = code;
  }
}

/** Options for {@link createWasi}. */
export interface WasiOptions {
  /** Receives stdout/stderr writes. */
  log: GuardLogger;
  /** Returns the guard's linear memory once the instance exists (undefined before). */
  memory: () => WebAssembly.Memory | undefined;
  /** Told of every region a call writes, before it writes it (the memory pool's write record). */
  wrote?: (ptr: number, len: number) => void;
}

/** Raised internally when a guard pointer is outside memory; mapped to `EFAULT`. */
class Fault extends Error {}

type WasiFn = (...args: never[]) => number | void;

/**
 * Creates the `wasi_snapshot_preview1` import object for one instance (fake clocks are per instance).
 *
 * @example
 * ```ts
 * let mem: WebAssembly.Memory | undefined;
 * const wasi = createWasi({ log: console.log, memory: () => mem });
 * const inst = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi });
 * mem = inst.exports.memory as WebAssembly.Memory;
 * ```
 */
export function createWasi(opts: WasiOptions): Record<string, WasiFn> {
  let realtime = FAKE_EPOCH_NS - FAKE_CLOCK_STEP_NS;
  let monotonic = -FAKE_CLOCK_STEP_NS;
  const decoder = new TextDecoder();

  const view = (): DataView => {
    const mem = opts.memory();
    if (!mem) throw new Fault("no memory");
    return new DataView(mem.buffer);
  };
  const bytes = (ptr: number, len: number): Uint8Array => {
    const mem = opts.memory();
    if (!mem) throw new Fault("no memory");
    const p = ptr >>> 0, l = len >>> 0;
    if (p + l > mem.buffer.byteLength) throw new Fault("out of bounds");
    return new Uint8Array(mem.buffer, p, l);
  };
  /** Runs `f`, mapping out-of-bounds access to EFAULT. */
  const guarded = (f: () => number): number => {
    try {
      return f();
    } catch (e) {
      if (e instanceof Fault || e instanceof RangeError) return Errno.FAULT;
      throw e;
    }
  };
  /** A region the call writes: bounds-checked, and reported through `opts.wrote` first. */
  const writable = (ptr: number, len: number): Uint8Array => {
    const region = bytes(ptr, len);
    opts.wrote?.(ptr >>> 0, len >>> 0);
    return region;
  };
  const u32 = (ptr: number, v: number) => {
    writable(ptr, 4);
    view().setUint32(ptr >>> 0, v >>> 0, true);
  };
  const u64 = (ptr: number, v: bigint) => {
    writable(ptr, 8);
    view().setBigUint64(ptr >>> 0, v, true);
  };
  const isStdio = (fd: number) => fd >>> 0 <= 2;
  /** Non-stdio fds do not exist; stdio fds do not support the operation. */
  const unsupported = (fd: number) => isStdio(fd) ? Errno.NOTSUP : Errno.BADF;
  const noFd = () => Errno.BADF;

  const readClock = (id: number): bigint | null => {
    if (id === CLOCK_REALTIME) return (realtime += FAKE_CLOCK_STEP_NS);
    if (id === CLOCK_MONOTONIC) return (monotonic += FAKE_CLOCK_STEP_NS);
    return null;
  };

  const iovecs = (iovs: number, n: number): Array<[number, number]> => {
    const dv = view();
    const out: Array<[number, number]> = [];
    for (let i = 0; i < n >>> 0; i++) {
      out.push([dv.getUint32(iovs + i * 8, true), dv.getUint32(iovs + i * 8 + 4, true)]);
    }
    return out;
  };

  return {
    args_get: () => Errno.SUCCESS,
    args_sizes_get: (argc: number, bufSize: number) =>
      guarded(() => {
        u32(argc, 0);
        u32(bufSize, 0);
        return Errno.SUCCESS;
      }),
    environ_get: () => Errno.SUCCESS,
    environ_sizes_get: (count: number, bufSize: number) =>
      guarded(() => {
        u32(count, 0);
        u32(bufSize, 0);
        return Errno.SUCCESS;
      }),
    clock_res_get: (id: number, out: number) =>
      guarded(() => {
        if (id !== CLOCK_REALTIME && id !== CLOCK_MONOTONIC) return Errno.INVAL;
        u64(out, FAKE_CLOCK_RESOLUTION_NS);
        return Errno.SUCCESS;
      }),
    clock_time_get: (id: number, _precision: bigint, out: number) =>
      guarded(() => {
        view().getBigUint64(out >>> 0, true); // bounds check before the clock advances
        const t = readClock(id);
        if (t === null) return Errno.INVAL;
        u64(out, t);
        return Errno.SUCCESS;
      }),
    fd_advise: unsupported,
    fd_allocate: unsupported,
    fd_close: (fd: number) => isStdio(fd) ? Errno.SUCCESS : Errno.BADF,
    fd_datasync: unsupported,
    fd_fdstat_get: (fd: number, out: number) =>
      guarded(() => {
        if (!isStdio(fd)) return Errno.BADF;
        const region = writable(out, 24);
        region.fill(0);
        region[0] = FILETYPE_CHARACTER_DEVICE;
        return Errno.SUCCESS;
      }),
    fd_fdstat_set_flags: unsupported,
    fd_fdstat_set_rights: unsupported,
    fd_filestat_get: (fd: number, out: number) =>
      guarded(() => {
        if (!isStdio(fd)) return Errno.BADF;
        const region = writable(out, 64);
        region.fill(0);
        region[16] = FILETYPE_CHARACTER_DEVICE;
        return Errno.SUCCESS;
      }),
    fd_filestat_set_size: unsupported,
    fd_filestat_set_times: unsupported,
    fd_pread: (fd: number) => isStdio(fd) ? Errno.SPIPE : Errno.BADF,
    fd_prestat_get: noFd,
    fd_prestat_dir_name: noFd,
    fd_pwrite: (fd: number) => isStdio(fd) ? Errno.SPIPE : Errno.BADF,
    fd_read: (fd: number, iovs: number, n: number, nread: number) =>
      guarded(() => {
        if (fd !== 0) return Errno.BADF;
        iovecs(iovs, n);
        u32(nread, 0); // stdin is empty: end of file
        return Errno.SUCCESS;
      }),
    fd_readdir: unsupported,
    fd_renumber: (fd: number, to: number) => isStdio(fd) && isStdio(to) ? Errno.NOTSUP : Errno.BADF,
    fd_seek: (fd: number) => isStdio(fd) ? Errno.SPIPE : Errno.BADF,
    fd_sync: unsupported,
    fd_tell: (fd: number) => isStdio(fd) ? Errno.SPIPE : Errno.BADF,
    fd_write: (fd: number, iovs: number, n: number, nwritten: number) =>
      guarded(() => {
        if (fd !== 1 && fd !== 2) return Errno.BADF;
        let total = 0;
        let text = "";
        for (const [p, l] of iovecs(iovs, n)) {
          text += decoder.decode(bytes(p, l), { stream: true });
          total += l;
        }
        text += decoder.decode();
        u32(nwritten, total);
        const msg = text.endsWith("\n") ? text.slice(0, -1) : text;
        if (msg.length > 0) {
          opts.log(fd === 1 ? "info" : "warn", msg, { stream: fd === 1 ? "stdout" : "stderr" });
        }
        return Errno.SUCCESS;
      }),
    path_create_directory: noFd,
    path_filestat_get: noFd,
    path_filestat_set_times: noFd,
    path_link: noFd,
    path_open: noFd,
    path_readlink: noFd,
    path_remove_directory: noFd,
    path_rename: noFd,
    path_symlink: noFd,
    path_unlink_file: noFd,
    poll_oneoff: (inPtr: number, outPtr: number, nsubs: number, nevents: number) =>
      guarded(() => {
        const count = nsubs >>> 0;
        if (count === 0) return Errno.INVAL;
        const dv = view();
        bytes(inPtr, count * SUBSCRIPTION_BYTES);
        const events = writable(outPtr, count * EVENT_BYTES);
        events.fill(0);
        for (let i = 0; i < count; i++) {
          const s = (inPtr >>> 0) + i * SUBSCRIPTION_BYTES;
          const e = (outPtr >>> 0) + i * EVENT_BYTES;
          const tag = dv.getUint8(s + 8);
          dv.setBigUint64(e, dv.getBigUint64(s, true), true);
          dv.setUint8(e + 10, tag);
          if (tag === EVENTTYPE_CLOCK) continue; // fires at once
          const fd = dv.getUint32(s + 16, true);
          if (tag === EVENTTYPE_FD_READ && fd === 0) {
            dv.setUint16(e + 24, EVENT_FD_READWRITE_HANGUP, true);
          } else if (!(tag === EVENTTYPE_FD_WRITE && (fd === 1 || fd === 2))) {
            dv.setUint16(e + 8, tag > EVENTTYPE_FD_WRITE ? Errno.INVAL : Errno.BADF, true);
          }
        }
        u32(nevents, count);
        return Errno.SUCCESS;
      }),
    proc_exit: (code: number) => {
      throw new ProcExit(code >>> 0);
    },
    proc_raise: () => Errno.NOSYS,
    sched_yield: () => Errno.SUCCESS,
    random_get: (buf: number, len: number) =>
      guarded(() => {
        const region = writable(buf, len);
        for (let off = 0; off < region.length; off += RANDOM_CHUNK_BYTES) {
          crypto.getRandomValues(region.subarray(off, Math.min(off + RANDOM_CHUNK_BYTES, region.length)));
        }
        return Errno.SUCCESS;
      }),
    sock_accept: noFd,
    sock_recv: noFd,
    sock_send: noFd,
    sock_shutdown: noFd,
  };
}
