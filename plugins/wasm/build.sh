#!/usr/bin/env bash
# Builds the example WASM plugins from source into plugins/<name>.wasm: the Rust guests
# (discount_wasm, wordcount; hello_wasi for wasm32-wasip1; compare_ops, the benchmark's, into
# benches/compare/), the C guest (discount_c) and the
# AssemblyScript guest (discount_as). Installs what is missing: the Rust wasm targets, Debian's
# clang and lld (as root), and the pinned AssemblyScript compiler from the npm registry.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${here}/.."

# Rust.
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# The link arguments of .cargo/config.toml, plus remapped paths that keep machine-specific
# directories out of the modules (this variable replaces the config's rustflags).
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=-zstack-size=65536 -C link-arg=--initial-memory=1048576 --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=${here}=/src"
cargo build --release --locked --target wasm32-unknown-unknown \
  --manifest-path "${here}/Cargo.toml" --target-dir "${here}/target"
for plugin in discount_wasm wordcount; do
  cp "${here}/target/wasm32-unknown-unknown/release/${plugin}.wasm" "${out}/${plugin}.wasm"
done
# Not an example: the WASM side of the performance comparison (benches/compare.rs).
cp "${here}/target/wasm32-unknown-unknown/release/compare_ops.wasm" "${here}/../../benches/compare/compare_ops.wasm"
# hello_wasi: Rust's std on WASI preview 1.
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS}"
cargo build --release --locked --target wasm32-wasip1 -p hello_wasi \
  --manifest-path "${here}/Cargo.toml" --target-dir "${here}/target"
cp "${here}/target/wasm32-wasip1/release/hello_wasi.wasm" "${out}/hello_wasi.wasm"

# C: freestanding, no libc, so nothing but clang and wasm-ld is needed.
if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing clang and lld (Debian) for the C guest"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld >/dev/null
  else
    echo "the C guest needs clang and wasm-ld: apt install clang lld" >&2
    exit 1
  fi
fi
clang --target=wasm32 -O2 -nostdlib -Wall -Wextra -Werror \
  -Wl,--no-entry -Wl,--export=mofa_alloc -Wl,--export=mofa_handle \
  -Wl,-zstack-size=65536 -Wl,--initial-memory=1048576 -Wl,--strip-all \
  -o "${out}/discount_c.wasm" "${here}/c/discount_c.c"

# AssemblyScript: the compiler pinned in package-lock.json.
(cd "${here}/assemblyscript" && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)

for plugin in discount_wasm wordcount hello_wasi discount_c discount_as; do
  echo "built plugins/${plugin}.wasm ($(wc -c < "${out}/${plugin}.wasm") bytes)"
done
