/**
 * The imports a guard may declare: exactly what gh-aw-mcpg's host provides (wazero's full
 * `wasi_snapshot_preview1` plus `env.call_backend` and `env.host_log`), with their signatures in the
 * `(params)->(results)` form `inspectGuard` reports. The WASI shim is checked against this table.
 *
 * @module
 */

const I32 = "i32";
const I64 = "i64";

function sig(params: string[], results: string[]): string {
  return `(${params.join(",")})->(${results.join(",")})`;
}

/** `n` i32 parameters. */
function i32s(n: number): string[] {
  return Array.from({ length: n }, () => I32);
}

/** errno-returning WASI function. */
function wasi(...params: string[]): string {
  return sig(params, [I32]);
}

/**
 * Every `wasi_snapshot_preview1` function (46, including `sock_accept`) and its signature.
 *
 * @example
 * ```ts
 * WASI_PREVIEW1_SIGNATURES.fd_write; // "(i32,i32,i32,i32)->(i32)"
 * ```
 */
export const WASI_PREVIEW1_SIGNATURES: Readonly<Record<string, string>> = Object.freeze({
  args_get: wasi(...i32s(2)),
  args_sizes_get: wasi(...i32s(2)),
  environ_get: wasi(...i32s(2)),
  environ_sizes_get: wasi(...i32s(2)),
  clock_res_get: wasi(...i32s(2)),
  clock_time_get: wasi(I32, I64, I32),
  fd_advise: wasi(I32, I64, I64, I32),
  fd_allocate: wasi(I32, I64, I64),
  fd_close: wasi(I32),
  fd_datasync: wasi(I32),
  fd_fdstat_get: wasi(...i32s(2)),
  fd_fdstat_set_flags: wasi(...i32s(2)),
  fd_fdstat_set_rights: wasi(I32, I64, I64),
  fd_filestat_get: wasi(...i32s(2)),
  fd_filestat_set_size: wasi(I32, I64),
  fd_filestat_set_times: wasi(I32, I64, I64, I32),
  fd_pread: wasi(I32, I32, I32, I64, I32),
  fd_prestat_get: wasi(...i32s(2)),
  fd_prestat_dir_name: wasi(...i32s(3)),
  fd_pwrite: wasi(I32, I32, I32, I64, I32),
  fd_read: wasi(...i32s(4)),
  fd_readdir: wasi(I32, I32, I32, I64, I32),
  fd_renumber: wasi(...i32s(2)),
  fd_seek: wasi(I32, I64, I32, I32),
  fd_sync: wasi(I32),
  fd_tell: wasi(...i32s(2)),
  fd_write: wasi(...i32s(4)),
  path_create_directory: wasi(...i32s(3)),
  path_filestat_get: wasi(...i32s(5)),
  path_filestat_set_times: wasi(I32, I32, I32, I32, I64, I64, I32),
  path_link: wasi(...i32s(7)),
  path_open: wasi(I32, I32, I32, I32, I32, I64, I64, I32, I32),
  path_readlink: wasi(...i32s(6)),
  path_remove_directory: wasi(...i32s(3)),
  path_rename: wasi(...i32s(6)),
  path_symlink: wasi(...i32s(5)),
  path_unlink_file: wasi(...i32s(3)),
  poll_oneoff: wasi(...i32s(4)),
  proc_exit: sig([I32], []),
  proc_raise: wasi(I32),
  sched_yield: wasi(),
  random_get: wasi(...i32s(2)),
  sock_accept: wasi(...i32s(3)),
  sock_recv: wasi(...i32s(6)),
  sock_send: wasi(...i32s(5)),
  sock_shutdown: wasi(...i32s(2)),
});

/** Module name of the WASI imports. */
export const WASI_MODULE = "wasi_snapshot_preview1";

/** Module name of the gateway's own host functions. */
export const ENV_MODULE = "env";

/** `env` functions the host provides (gh-aw-mcpg `instantiateHostFunctions`). */
export const ENV_SIGNATURES: Readonly<Record<string, string>> = Object.freeze({
  /** (name_ptr, name_len, args_ptr, args_len, result_ptr, result_size) -> length | -1 | -2 */
  call_backend: sig(i32s(6), [I32]),
  /** (level, msg_ptr, msg_len) */
  host_log: sig(i32s(3), []),
});

/**
 * Export name of the injected i32 global E, "the fuel check may be called" (see `rewrite.ts`). The
 * host clears it while it calls an export outside JSPI and once it has stopped the instance; every
 * fuel point that runs out of fuel then traps without calling the check.
 */
export const FUEL_CHECK_ALLOWED_EXPORT = "__mcp_edge_guard_fuel_check_allowed";

/**
 * Export name under which the preparer exports a module's start function (and drops the start
 * section), so that the host runs it through JSPI under a call's budget instead of inside
 * `new WebAssembly.Instance`, where the fuel check cannot suspend.
 */
export const START_EXPORT = "__mcp_edge_guard_start";
