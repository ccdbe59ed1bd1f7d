#!/usr/bin/env bash
# Builds and installs keepalive with its LD_PRELOAD shim:
#   PREFIX/bin/keepalive
#   PREFIX/lib/keepalive/libkeepalive_inject.so   (where `keepalive run` looks for it)
# Usage: scripts/install.sh [PREFIX]   (default /usr/local; ~/.local works without root)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-${PREFIX:-/usr/local}}
cargo build --release --locked
install -Dm755 target/release/keepalive "$prefix/bin/keepalive"
install -Dm755 target/release/libkeepalive_inject.so "$prefix/lib/keepalive/libkeepalive_inject.so"
echo "installed $prefix/bin/keepalive and $prefix/lib/keepalive/libkeepalive_inject.so"
