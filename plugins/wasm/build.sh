#!/usr/bin/env bash
# Builds the example WASM plugins from source and copies each module to plugins/<name>.wasm.
# Needs the wasm32-unknown-unknown target: `rustup target add wasm32-unknown-unknown`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The link arguments of .cargo/config.toml, plus remapped paths that keep machine-specific
# directories out of the modules (this variable replaces the config's rustflags).
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=-zstack-size=65536 -C link-arg=--initial-memory=1048576 --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=${here}=/src"
cargo build --release --locked --target wasm32-unknown-unknown \
  --manifest-path "${here}/Cargo.toml" --target-dir "${here}/target"
for plugin in discount_wasm wordcount; do
  cp "${here}/target/wasm32-unknown-unknown/release/${plugin}.wasm" "${here}/../${plugin}.wasm"
  echo "built plugins/${plugin}.wasm ($(wc -c < "${here}/../${plugin}.wasm") bytes)"
done
