#!/usr/bin/env bash
# The whole test suite, as a new user or CI runs it: scripts/test.sh
#
# The tests start real programs (iproute2's ip and ss, util-linux's setpriv and mount) and make
# throwaway network namespaces, so this runs as root. Missing Debian packages are installed first.
set -euo pipefail
cd "$(dirname "$0")/.."

# command or file -> Debian package that provides it
declare -A wanted=(
  [ip]=iproute2 [ss]=iproute2 [setpriv]=util-linux [mount]=mount
  [cc]=gcc [nc]=netcat-openbsd [socat]=socat [curl]=curl [python3]=python3
  [java]=openjdk-17-jdk-headless [node]=nodejs [nft]=nftables [tshark]=tshark [nsenter]=util-linux
  [nginx]=nginx [h2o]=h2o [apache2]=apache2 [haproxy]=haproxy [openssl]=openssl [go]=golang-go [/bin/busybox]=busybox-static
  [/usr/lib/libkeepalive.so.0]=libkeepalive0 [/usr/lib/x86_64-linux-gnu/libdontdie.so.0]=libdontdie0
)
missing=()
for need in "${!wanted[@]}"; do
  if [[ $need == /* ]]; then [ -e "$need" ] && continue; else command -v "$need" >/dev/null 2>&1 && continue; fi
  missing+=("${wanted[$need]}")
done
# Static linking for the test that checks static programs are refused.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing ${missing[*]}; install them or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u)
  # Debian starts the nginx, h2o, apache2 and haproxy services it installs; the tests run their own.
  for service in nginx h2o apache2 haproxy; do
    if printf '%s\n' "${missing[@]}" | grep -qx $service; then service $service stop >/dev/null 2>&1 || true; fi
  done
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the namespace tests need root; they will fail with that reason" >&2
fi

# Namespaces are named ka-t<pid>-<n>; remove any whose test process was killed before cleanup.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^ka-t[0-9]+-[0-9]+$' || true); do
  pid=${ns#ka-t}
  pid=${pid%%-*}
  [ -d "/proc/$pid" ] || ip netns del "$ns" 2>/dev/null || true
done

# The LD_PRELOAD shim is a cdylib that no test target links; build it (and everything else)
# first, so the tests find it next to the keepalive binary.
cargo build --workspace --locked

# Test cgroups are named ka-t<pid>-<n> under the cgroup2 mount; empty and remove any whose test
# process was killed before its cleanup ran, with its keepalive policy (and pins).
cgroot=$(awk -F' - ' '{ split($2, t, " "); split($1, f, " "); if (t[1] == "cgroup2") { print f[5]; exit } }' /proc/self/mountinfo)
for cg in "${cgroot:-/nonexistent}"/ka-t*-* "${cgroot:-/nonexistent}"/ka-bench*; do
  [ -d "$cg" ] || continue
  name=${cg##*/}
  pid=${name#ka-t}
  pid=${pid#ka-bench}
  pid=${pid%%-*}
  [ -d "/proc/$pid" ] && continue
  find "$cg" -depth -type d | while read -r d; do
    [ -e "$d/cgroup.kill" ] && echo 1 > "$d/cgroup.kill" 2>/dev/null
    target/debug/keepalive unset --cgroup "$d" >/dev/null 2>&1 || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$d" 2>/dev/null && break; sleep 0.2; done
  done
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "keepalive tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
