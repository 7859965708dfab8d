#!/usr/bin/env bash
# Builds the example WASM plugins from source and copies each module to plugins/<name>.wasm.
# Needs the wasm32-unknown-unknown target: `rustup target add wasm32-unknown-unknown`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Remapped paths keep machine-specific directories out of the modules.
export RUSTFLAGS="--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=${here}=/src"
cargo build --release --locked --target wasm32-unknown-unknown \
  --manifest-path "${here}/Cargo.toml" --target-dir "${here}/target"
for plugin in discount_wasm wordcount; do
  cp "${here}/target/wasm32-unknown-unknown/release/${plugin}.wasm" "${here}/../${plugin}.wasm"
  echo "built plugins/${plugin}.wasm ($(wc -c < "${here}/../${plugin}.wasm") bytes)"
done
