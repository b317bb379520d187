#!/usr/bin/env bash
# Prepares a machine to build ordo. Sourced by the other scripts; safe to run repeatedly.
#
# - installs the system packages the RocksDB bindings need (clang and libclang for bindgen)
#   and, as root, those the nemesis test uses (iproute2, iptables, faketime) when they are
#   missing, with apt-get (Debian/Ubuntu);
# - points Cargo at one persistent target directory (default ~/.cache/ordo/target) so every
#   checkout reuses the ~20-minute RocksDB build. Set CARGO_TARGET_DIR to override.

ordo_need_packages() {
    local missing=()
    command -v clang >/dev/null 2>&1 || missing+=(clang)
    if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
        missing+=(libclang-dev)
    fi
    if [ "$(id -u)" -eq 0 ]; then
        command -v ip >/dev/null 2>&1 || missing+=(iproute2)
        command -v iptables >/dev/null 2>&1 || missing+=(iptables)
        command -v faketime >/dev/null 2>&1 || missing+=(faketime)
    fi
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "ordo setup: installing ${missing[*]} (RocksDB's bindings; the nemesis test)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ordo setup: please install ${missing[*]} with your package manager" >&2
        return 1
    fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

ordo_need_packages || exit 1
if ! command -v cargo >/dev/null 2>&1; then
    echo "ordo setup: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ordo/target}"
mkdir -p "$CARGO_TARGET_DIR"
