#!/usr/bin/env bash
# Runs ordo's whole test suite (unit, integration, crash and CLI tests), in release mode:
# the RocksDB build is shared with `scripts/run.sh`, and the large-chain tests need the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --release --workspace "$@"
