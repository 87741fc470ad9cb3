#!/bin/sh
# Builds rust-bench-guard.wasm offline (wasm32-wasip1, std rebuilt from source).
# Needs Debian's rustc-web, cargo-web, rust-web-src, wasi-libc and lld-22:
#   apt-get install -y rustc-web rust-web-src wasi-libc lld-22
# (.cargo/config.toml points cargo at the vendored std dependencies, wasm-ld and wasi-libc.)
set -eu
cd "$(dirname "$0")"
PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --offline --release \
  --target wasm32-wasip1 -Zbuild-std=std,panic_abort \
  --target-dir "${CARGO_TARGET_DIR:-/tmp/rust-bench-guard-target}"
cp "${CARGO_TARGET_DIR:-/tmp/rust-bench-guard-target}/wasm32-wasip1/release/rust_bench_guard.wasm" rust-bench-guard.wasm
ls -l rust-bench-guard.wasm
