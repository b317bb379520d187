#!/usr/bin/env bash
# ordo's main job on an embedded default: builds ordo, writes a chain signed by three local
# validators and four clients into ./ordo-demo, audits it offline, and shows its tip block
# and one transaction with its inclusion proof. Re-running audits the existing chain again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release -p ordo-cli
ordo="$CARGO_TARGET_DIR/release/ordo"
dir="${ORDO_DEMO_DIR:-ordo-demo}"

if [ ! -f "$dir/genesis.toml" ]; then
    "$ordo" testchain --dir "$dir" --blocks "${ORDO_DEMO_BLOCKS:-1000}" --txs-per-block 100 --validators 3 --clients 4
fi
echo
"$ordo" genesis show --genesis "$dir/genesis.toml"
echo
"$ordo" audit --data-dir "$dir/data" --genesis "$dir/genesis.toml"
echo
"$ordo" block show --data-dir "$dir/data" --genesis "$dir/genesis.toml"
echo
first_tx=$("$ordo" block show --data-dir "$dir/data" --genesis "$dir/genesis.toml" --height 1 --txs \
    | awk '$1 == "0" { print $2 }')
"$ordo" tx show --data-dir "$dir/data" --genesis "$dir/genesis.toml" --id "$first_tx"
