#!/usr/bin/env bash
# ordo's main job on an embedded default: builds ordo and runs a local devnet of three
# validators, each its own process on free loopback ports, in ./ordo-devnet (override with
# ORDO_DEVNET_DIR). Shows each validator's role and tip live; Ctrl-C stops them cleanly.
# Re-running resumes the same chain. Extra arguments go to `ordo devnet` (e.g. --load 200).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# Built the way the test suite builds it, so RocksDB is compiled once for both commands.
cargo test --release --workspace --no-run --quiet
exec "$CARGO_TARGET_DIR/release/ordo" devnet --dir "${ORDO_DEVNET_DIR:-ordo-devnet}" "$@"
