#!/usr/bin/env bash
# Long nemesis runs: builds ordo and ordo-nemesis (release) and runs the nemesis against
# real validators in network namespaces. Needs root. Arguments go to ordo-nemesis, e.g.
#   scripts/nemesis.sh --runs 20 --seconds 120 [--seed X] [--faults kill-leader,partition-halves]
# Prints each run's report and a summary; exits non-zero if any check of any run fails.
# With --plan, prints the runs' fault schedules and runs nothing (no root needed).
# A failed run's directory (logs, data, history.jsonl, report.json) is kept; its path is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
if [ "$(id -u)" -ne 0 ] && [[ " $* " != *" --plan "* ]]; then
    echo "scripts/nemesis.sh: the nemesis needs root (network namespaces, iptables)" >&2
    exit 2
fi
cargo build --release --quiet -p ordo-cli -p ordo-nemesis -p ordo-lazyfs
# The slow disk of the slow-disk faults (an LD_PRELOAD library).
cargo build --release --quiet -p ordo-slowdisk
# The validators of the test-only faults (`--faults invalid-blocks-leader`).
cargo build --release --quiet -p ordo-cli --features fault-injection --bin ordo-faulty
export ORDO_BIN="$CARGO_TARGET_DIR/release/ordo"
export ORDO_FAULTY_BIN="$CARGO_TARGET_DIR/release/ordo-faulty"
export ORDO_LAZYFS_BIN="$CARGO_TARGET_DIR/release/ordo-lazyfs"
export ORDO_SLOWDISK_LIB="$CARGO_TARGET_DIR/release/libordo_slowdisk.so"
exec "$CARGO_TARGET_DIR/release/ordo-nemesis" "$@"
