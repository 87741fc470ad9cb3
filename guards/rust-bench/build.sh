#!/bin/sh
# Builds rust-bench-guard.wasm offline (wasm32-wasip1, std rebuilt from the packaged sources).
# Needs Debian's rustc-web, cargo-web, rust-web-src, wasi-libc and an lld with wasm-ld:
#   apt-get install -y rustc-web rust-web-src wasi-libc lld-22
# Every toolchain location is found at run time and can be overridden:
#   RUSTC, CARGO         the compiler and cargo (default: the ones on PATH; with rustup first on PATH,
#                        point them at the Debian ones, e.g. RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo)
#   RUST_STD_VENDOR      vendored std dependencies (default: <rustc sysroot>/lib/rustlib/src/rust/library/vendor)
#   WASM_LD              the wasm linker (default: wasm-ld on PATH, else <sysroot>/lib/llvm-*/bin/wasm-ld)
#   WASI_LIBC_DIR        wasi-libc for wasm32-wasi (default: <sysroot>/lib/wasm32-wasi, Debian's place)
#   CARGO_TARGET_DIR     build directory (default: a temporary directory, removed afterwards)
set -eu
cd "$(dirname "$0")"
RUSTC=${RUSTC:-rustc}
CARGO=${CARGO:-cargo}
sysroot=$("$RUSTC" --print sysroot)
RUST_STD_VENDOR=${RUST_STD_VENDOR:-$sysroot/lib/rustlib/src/rust/library/vendor}
if [ -z "${WASM_LD:-}" ]; then
  WASM_LD=$(command -v wasm-ld || true)
  for d in "$sysroot"/lib/llvm-*/bin; do [ -n "$WASM_LD" ] || [ ! -x "$d/wasm-ld" ] || WASM_LD="$d/wasm-ld"; done
fi
WASI_LIBC_DIR=${WASI_LIBC_DIR:-$sysroot/lib/wasm32-wasi}
[ -n "${WASM_LD:-}" ] || { echo "build.sh: no wasm-ld found; set WASM_LD" >&2; exit 1; }
[ -d "$RUST_STD_VENDOR" ] || { echo "build.sh: no vendored std sources at $RUST_STD_VENDOR; set RUST_STD_VENDOR" >&2; exit 1; }
[ -d "$WASI_LIBC_DIR" ] || { echo "build.sh: no wasi-libc at $WASI_LIBC_DIR; set WASI_LIBC_DIR" >&2; exit 1; }
cleanup=""
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  CARGO_TARGET_DIR=$(mktemp -d)
  cleanup=$CARGO_TARGET_DIR
fi
trap '[ -z "$cleanup" ] || rm -rf "$cleanup"' EXIT
RUSTC_BOOTSTRAP=1 RUSTC="$RUSTC" "$CARGO" build --offline --release \
  --config "source.crates-io.replace-with=\"rust-std-vendor\"" \
  --config "source.rust-std-vendor.directory=\"$RUST_STD_VENDOR\"" \
  --config "target.wasm32-wasip1.linker=\"$WASM_LD\"" \
  --config "target.wasm32-wasip1.rustflags=[\"-L\", \"$WASI_LIBC_DIR\"]" \
  --target wasm32-wasip1 -Zbuild-std=std,panic_abort \
  --target-dir "$CARGO_TARGET_DIR"
cp "$CARGO_TARGET_DIR/wasm32-wasip1/release/rust_bench_guard.wasm" rust-bench-guard.wasm
ls -l rust-bench-guard.wasm
