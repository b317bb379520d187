#!/usr/bin/env bash
# The etcd baseline (bench/README.md): the same closed-loop write workload against a 3-member
# etcd cluster and a 3-validator ordo devnet, one after the other, on this machine's
# loopback; prints both figures and ordo's steady tx/s ÷ etcd's best steady puts/s.
#
#   bench/etcd-baseline.sh [--txs N] [--payload-bytes B] [--batch N] [--concurrency N]
#                          [--plain-concurrency N] [--ordo-api json|binary] [--out DIR]
#
# The same settings can come from the environment: TXS, PAYLOAD, BATCH, CONCURRENCY,
# PLAIN_CONCURRENCY, ORDO_API, OUT. Installs etcd-server and etcd-client with apt-get when
# missing, builds ordo (release, in the shared target directory), and writes each run's
# JSON result and a summary to OUT (default ./bench-results/etcd-baseline-<time>).
#
# Runs, each on a fresh cluster, etcd's through its native gRPC API and again through its
# JSON gateway (which translates every request inside etcd, costing it CPU):
#   1. etcd, BATCH puts per transaction, CONCURRENCY requests in flight (ordo's workload);
#   2. etcd, one plain put per request, PLAIN_CONCURRENCY requests in flight (how etcd is
#      normally used and benchmarked: many small requests from many clients);
#   3. ordo-bench --devnet, BATCH transactions per request, CONCURRENCY requests in flight,
#      submitted as JSON like etcd's gateway takes them (ORDO_API=binary: ordo's binary
#      submission instead).
# The ratios compare ordo with etcd's best over gRPC (the fair figure) and over the gateway.
set -euo pipefail

TXS=${TXS:-100000}
PAYLOAD=${PAYLOAD:-100}
BATCH=${BATCH:-500}
CONCURRENCY=${CONCURRENCY:-8}
PLAIN_CONCURRENCY=${PLAIN_CONCURRENCY:-512}
ORDO_API=${ORDO_API:-json}
OUT=${OUT:-bench-results/etcd-baseline-$(date +%Y%m%d-%H%M%S)}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "$1"
}
while [ $# -gt 0 ]; do
    case "$1" in
        --txs) TXS=$2; shift 2 ;;
        --payload-bytes) PAYLOAD=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --plain-concurrency) PLAIN_CONCURRENCY=$2; shift 2 ;;
        --ordo-api) ORDO_API=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "etcd-baseline: unknown argument '$1'" >&2; usage 2 >&2 ;;
    esac
done
case "$ORDO_API" in
    json|binary) ;;
    *) echo "etcd-baseline: ORDO_API must be json or binary, got '$ORDO_API'" >&2; exit 2 ;;
esac
for v in TXS PAYLOAD BATCH CONCURRENCY PLAIN_CONCURRENCY; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then
        echo "etcd-baseline: $v must be a positive integer, got '${!v}'" >&2
        exit 2
    fi
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."

# Shared target directory and the RocksDB build prerequisites.
source scripts/setup.sh

etcd_need_packages() {
    local missing=()
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "etcd-baseline: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "etcd-baseline: please install ${missing[*]} with your package manager" >&2
        return 1
    fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}
etcd_need_packages || exit 1

cargo build --release -p ordo-cli -p ordo-bench
ORDO="$CARGO_TARGET_DIR/release/ordo"
BENCH="$CARGO_TARGET_DIR/release/ordo-bench"

WORK=$(mktemp -d -t ordo-etcd-baseline.XXXXXX)
ETCD_PIDS=()

stop_etcd() {
    local pid
    for pid in "${ETCD_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${ETCD_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ETCD_PIDS=()
}
cleanup() {
    stop_etcd
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Sets PORT to a free loopback port not handed out before in this run, below Linux's
# default range of ephemeral ports (32768-60999), so that no outgoing connection holds it.
# (Debian's etcd-server package runs its own member on 2379/2380; these stay clear of it.)
USED_PORTS=" "
free_port() {
    while :; do
        PORT=$((20000 + RANDOM % 12000))
        case "$USED_PORTS" in *" $PORT "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            USED_PORTS+="$PORT "
            return
        fi
    done
}

# Starts a fresh 3-member cluster in $WORK/$1; sets ETCD_PIDS and ETCD_URLS. etcd's
# durability is left as shipped (every commit fsynced).
start_etcd() {
    local dir="$WORK/$1" names=(e0 e1 e2) client=() peer=() cluster="" i
    for i in 0 1 2; do
        free_port
        client+=("$PORT")
        free_port
        peer+=("$PORT")
        cluster+="${cluster:+,}${names[$i]}=http://127.0.0.1:${peer[$i]}"
    done
    # A transaction of BATCH puts must fit etcd's limits on operations and request bytes.
    local max_ops=$((BATCH > 128 ? BATCH : 128))
    local max_bytes=$((BATCH * (PAYLOAD + 64) + 1048576))
    [ "$max_bytes" -gt 1572864 ] || max_bytes=1572864
    ETCD_URLS=()
    for i in 0 1 2; do
        mkdir -p "$dir/${names[$i]}"
        etcd --name "${names[$i]}" --data-dir "$dir/${names[$i]}/data" \
            --listen-client-urls "http://127.0.0.1:${client[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${client[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${peer[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${peer[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "ordo-baseline-$1-$$" \
            --max-txn-ops "$max_ops" --max-request-bytes "$max_bytes" \
            --logger zap --log-level warn \
            >"$dir/${names[$i]}/log" 2>&1 &
        ETCD_PIDS+=($!)
        ETCD_URLS+=("http://127.0.0.1:${client[$i]}")
    done
    local endpoints
    endpoints=$(IFS=,; echo "${ETCD_URLS[*]}")
    local deadline=$((SECONDS + 30))
    until ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --dial-timeout=1s \
        endpoint health >/dev/null 2>&1; do
        if [ $SECONDS -gt $deadline ]; then
            echo "etcd-baseline: the etcd cluster did not become healthy; logs:" >&2
            tail -n 20 "$dir"/*/log >&2
            exit 1
        fi
        sleep 0.2
    done
}

# Runs ordo-bench against a fresh etcd cluster: $1 name, $2 batch, $3 concurrency, $4 the
# API (grpc or json).
bench_etcd() {
    local name=$1 batch=$2 concurrency=$3 api=$4 args=() url pid
    start_etcd "$name"
    for url in "${ETCD_URLS[@]}"; do args+=(--etcd "$url"); done
    for pid in "${ETCD_PIDS[@]}"; do args+=(--etcd-pid "$pid"); done
    echo
    echo "== etcd ($api): $TXS puts of $PAYLOAD B, $batch per request, concurrency $concurrency"
    "$BENCH" "${args[@]}" --etcd-api "$api" --txs "$TXS" --payload-bytes "$PAYLOAD" \
        --batch "$batch" --concurrency "$concurrency" --json "$OUT/$name.json"
    stop_etcd
}

# The first number after "key": in a JSON result (the top-level field; ordo bench's
# results are pretty-printed, one field per line).
json_num() {
    sed -n "s/^ *\"$2\": *\([0-9.eE+-]*\).*/\1/p" "$1" | head -n 1
}

echo "etcd-baseline: $(etcd --version | head -n 1), $(nproc) cores; results in $OUT"
bench_etcd grpc-batch "$BATCH" "$CONCURRENCY" grpc
bench_etcd grpc-plain 1 "$PLAIN_CONCURRENCY" grpc
bench_etcd json-batch "$BATCH" "$CONCURRENCY" json
bench_etcd json-plain 1 "$PLAIN_CONCURRENCY" json
echo
echo "== ordo: $TXS transactions of $PAYLOAD B, $BATCH per $ORDO_API request," \
    "concurrency $CONCURRENCY"
ORDO_BIN="$ORDO" "$BENCH" --devnet --txs "$TXS" --payload-bytes "$PAYLOAD" --batch "$BATCH" \
    --concurrency "$CONCURRENCY" --api "$ORDO_API" --json "$OUT/ordo.json"

line() {
    printf '%-44s %8.0f /s steady   p50 %7.1f ms   p99 %7.1f ms\n' "$1" \
        "$(json_num "$2" steady_tps)" "$(json_num "$2" p50)" "$(json_num "$2" p99)"
}
# The better of etcd's two request shapes over API $1 (grpc or json).
best_of() {
    if awk -v a="$(json_num "$OUT/$1-plain.json" steady_tps)" \
        -v b="$(json_num "$OUT/$1-batch.json" steady_tps)" 'BEGIN { exit !(a > b) }'; then
        echo "$1-plain"
    else
        echo "$1-batch"
    fi
}
ratio() {
    awk -v o="$(json_num "$OUT/ordo.json" steady_tps)" -v e="$(json_num "$OUT/$2.json" steady_tps)" \
        -v what="$1" -v which="$2" 'BEGIN { printf "ratio: ordo steady tx/s ÷ etcd %s (%s) = %.2f×\n", what, which, o / e }'
}
{
    echo
    echo "== etcd baseline: $TXS × $PAYLOAD B, 3 members / 3 validators," \
        "$(nproc) cores, one machine"
    line "etcd gRPC, $BATCH puts per request, conc. $CONCURRENCY" "$OUT/grpc-batch.json"
    line "etcd gRPC, 1 put per request, conc. $PLAIN_CONCURRENCY" "$OUT/grpc-plain.json"
    line "etcd JSON, $BATCH puts per request, conc. $CONCURRENCY" "$OUT/json-batch.json"
    line "etcd JSON, 1 put per request, conc. $PLAIN_CONCURRENCY" "$OUT/json-plain.json"
    line "ordo, $BATCH tx per $ORDO_API request, conc. $CONCURRENCY" "$OUT/ordo.json"
    ratio "best over gRPC" "$(best_of grpc)"
    ratio "plain puts over gRPC" grpc-plain
    ratio "best over the JSON gateway" "$(best_of json)"
    ratio "plain puts over the JSON gateway" json-plain
} | tee "$OUT/summary.txt"
