#!/usr/bin/env bash
# Reading the keepalive defaults: `keepalive sysctl show` and `keepalive explain` against procps'
# `sysctl` reading the same three keys, in one hyperfine run. Writes the table into
# docs/benchmarks.md (section "sysctl"). Usage: bench/sysctl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
command -v sysctl >/dev/null || { apt-get update -qq && apt-get install -y -qq procps; }
cargo build --release --locked -q
bin=target/release/keepalive
out=$(mktemp)
trap 'rm -f "$out"' EXIT
hyperfine -N --warmup 20 --runs 300 --export-markdown "$out" \
  -n 'sysctl (procps), 3 keys' 'sysctl net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes' \
  -n 'keepalive sysctl show' "$bin sysctl show" \
  -n 'keepalive explain' "$bin explain" >/dev/null
{
  echo "## Reading the kernel defaults"
  echo
  echo "Reproduce: \`bench/sysctl.sh\` (hyperfine, 300 runs each, one run for all rows). Compare the ratios"
  echo "within this table; absolute times vary from machine to machine and run to run."
  echo "\`keepalive sysctl show\` reads five sysctls and scans the sysctl.d directories to say where each"
  echo "value comes from; \`sysctl\` reads three."
  echo
  cat "$out"
} | python3 bench/doc.py sysctl >/dev/null
echo "wrote docs/benchmarks.md"
