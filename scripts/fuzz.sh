#!/usr/bin/env bash
# Fuzzes ordo's decoders of outside bytes (fuzz/, cargo fuzz with libFuzzer).
#
#   scripts/fuzz.sh [--seconds N] [--parallel P] [TARGET ...]
#
# Builds the targets (cargo fuzz on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it use
# the coverage instrumentation flags), writes each target's seed corpus from
# docs/format.md's vectors, then runs every target (or those named) for N seconds (default
# 60), P at a time (default 1). Inputs that add coverage are kept in
# $CARGO_TARGET_DIR/fuzz/corpus/<target> and reused by the next run (past 20,000 files, cut
# to those that keep its coverage). A crash, a panic or an
# allocation over 256 MiB stops the script with the input saved under
# fuzz/artifacts/<target>/; `cargo fuzz run <target> <file>` (in fuzz/'s parent, with
# RUSTC_BOOTSTRAP=1) replays it. Prints each target's executions per second and coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

seconds=60
parallel=1
corpus_files_max=20000
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --parallel) parallel="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "scripts/fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "ordo fuzz: installing cargo-fuzz" >&2
    cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

# No sanitizer: every ordo crate forbids unsafe code, and what these targets look for —
# panics, overflows (checked, as in release), oversized allocations, encodings that do not
# round-trip — needs none; without AddressSanitizer each target runs several times faster.
build=(--release --sanitizer none --debug-assertions --target-dir "$CARGO_TARGET_DIR/fuzz")
cargo fuzz build "${build[@]}"
bin="$CARGO_TARGET_DIR/fuzz/x86_64-unknown-linux-gnu/release"
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

work="$CARGO_TARGET_DIR/fuzz"
rm -rf "$work/seeds"
cargo run --quiet --release --manifest-path fuzz/Cargo.toml --example seeds -- \
    docs/format.md "$work/seeds" >/dev/null

# Runs one target; its log goes to $work/logs/<target>.log, a summary line to stdout.
run_one() {
    local t="$1" log="$work/logs/$1.log"
    mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t" "$work/logs"
    if "$bin/$t" "$work/corpus/$t" "$work/seeds/$t" \
        -max_total_time="$seconds" -malloc_limit_mb=256 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        local runs cov
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
        # A corpus grows with every run; past a bound it is cut to the inputs that keep
        # its coverage.
        if [ "$(ls "$work/corpus/$t" | wc -l)" -gt "$corpus_files_max" ]; then
            rm -rf "$work/corpus/$t.min" && mkdir "$work/corpus/$t.min"
            "$bin/$t" -merge=1 "$work/corpus/$t.min" "$work/corpus/$t" >>"$log" 2>&1 &&
                rm -rf "$work/corpus/$t" && mv "$work/corpus/$t.min" "$work/corpus/$t"
        fi
        echo "$t: ok, $runs runs in ${seconds}s ($((runs / seconds))/s), $cov, corpus $(ls "$work/corpus/$t" | wc -l)"
    else
        echo "$t: FAILED — see $log; the input is under fuzz/artifacts/$t/" >&2
        grep -m1 -A20 'panicked\|ERROR: libFuzzer' "$log" >&2 || tail -20 "$log" >&2
        return 1
    fi
}

failed=0
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$parallel" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
if [ "$failed" -ne 0 ]; then
    echo "ordo fuzz: a target failed" >&2
    exit 1
fi
echo "ordo fuzz: ${#targets[@]} targets, ${seconds}s each, no failure"
