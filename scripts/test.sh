#!/usr/bin/env bash
# Runs ordo's whole test suite (unit, integration, crash and CLI tests), in release mode:
# the RocksDB build is shared with `scripts/run.sh`, and the large-chain tests need the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The test-only validator with injected faults (never the shipped `ordo`), for the tests of
# a misbehaving validator: built first, as only the node crate's feature differs.
cargo build --release -p ordo-cli --features fault-injection --bin ordo-faulty
# The slow disk the slow-leader tests preload into validators (test code, an LD_PRELOAD
# library beside `ordo`).
cargo build --release -p ordo-slowdisk
cargo test --release --workspace "$@"
