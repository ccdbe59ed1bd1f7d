#!/usr/bin/env python3
"""Side-by-side cost of keepalive shims, in one run: no shim, ours, Debian's libkeepalive0 and
libdontdie0, and the floor (the program making the same setsockopt calls itself).

Usage: bench/inject.py [ROUNDS]   (writes the "inject" section of docs/benchmarks.md)

Each round runs every variant once, in a rotating order, each run in a fresh network namespace
and pinned to one CPU. Times are process CPU time per operation, and the table gives the best
of the rounds: on a shared machine interference only ever adds time, and it swings single
connect runs by 50%. Compare ratios within one table: absolute times move with the machine.
"""
import doc
import os, re, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 11
SOCKETS, CONNECTS = 200_000, 20_000
LIBKEEPALIVE = "/usr/lib/libkeepalive.so.0"
LIBDONTDIE = "/usr/lib/x86_64-linux-gnu/libdontdie.so.0"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def main():
    missing = [p for p, pkg in ((LIBKEEPALIVE, "libkeepalive0"), (LIBDONTDIE, "libdontdie0")) if not os.path.exists(p)]
    if missing:
        sh("apt-get", "install", "-y", "-qq", "libkeepalive0", "libdontdie0")
    sh("cargo", "build", "--release", "--locked", "-q", "-p", "keepalive-inject", cwd=ROOT)
    shim = os.path.join(ROOT, "target/release/libkeepalive_inject.so")
    tmp = tempfile.mkdtemp()
    loop = os.path.join(tmp, "sockloop")
    sh("cc", "-O2", "-o", loop, os.path.join(ROOT, "bench/c/sockloop.c"))

    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "KEEPALIVE_POLICY")}
    variants = [
        ("no shim", {}, []),
        ("keepalive-inject (ours)", {"LD_PRELOAD": shim, "KEEPALIVE_POLICY": "idle=30,interval=10,count=5"}, []),
        ("ours with KEEPALIVE=off: the hooks alone", {"LD_PRELOAD": shim, "KEEPALIVE": "off"}, []),
        ("libkeepalive0 0.3", {"LD_PRELOAD": LIBKEEPALIVE, "KEEPIDLE": "30", "KEEPINTVL": "10", "KEEPCNT": "5"}, []),
        ("libdontdie0 1.2", {"LD_PRELOAD": LIBDONTDIE, "DD_TCP_KEEPALIVE_TIME": "30",
                             "DD_TCP_KEEPALIVE_INTVL": "10", "DD_TCP_KEEPALIVE_PROBES": "5"}, []),
        ("floor: the program's own setsockopt", {}, ["floor"]),
    ]
    # Each run gets a fresh network namespace when we may make one: no TIME_WAIT or port state
    # left by an earlier run can slow a later one.
    isolate = []
    if os.geteuid() == 0:
        isolate = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec taskset -c 1 "$0" "$@"']
    results = {(mode, name): [] for mode in ("socket", "connect") for name, _, _ in variants}
    applied = {}
    for r in range(ROUNDS):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for mode, n in (("socket", SOCKETS), ("connect", CONNECTS)):
            for name, env, extra in order:
                out = sh(*isolate, loop, mode, str(n), *extra, env={**base, **env}).stdout
                m = re.search(r"ns_per_op=([\d.]+) keepalive=(\d+) idle=(\d+)", out)
                results[(mode, name)].append(float(m.group(1)))
                applied[name] = (m.group(2), m.group(3))

    med = {k: min(v) for k, v in results.items()}
    spread = {k: statistics.median(v) / min(v) for k, v in results.items()}
    lines = [
        "| variant | keepalive / idle seen | socket()+close() ns | vs floor | connect+accept+close ns | vs no shim | vs floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    floor = med[("socket", variants[-1][0])]
    none_c = med[("connect", "no shim")]
    floor_c = med[("connect", variants[-1][0])]
    for name, _, _ in variants:
        on, idle = applied[name]
        s, c = med[("socket", name)], med[("connect", name)]
        lines.append(f"| {name} | {'on' if on == '1' else 'off'} / {idle} s | {s:.0f} | {s / floor:.2f} | {c:.0f} "
                     f"| {c / none_c:.3f} | {c / floor_c:.3f} |")
    ours_s, ours_c = med[("socket", variants[1][0])], med[("connect", variants[1][0])]
    lk_s = med[("socket", variants[3][0])]
    hooks_s = med[("socket", variants[2][0])]
    none_s = med[("socket", "no shim")]
    hooks_c = med[("connect", variants[2][0])]
    noise = max(spread.values())
    verdict = [
        f"- Per-socket cost, ours against the floor: {ours_s / floor:.2f}x "
        f"({doc.judged(ours_s <= floor * 1.02, ours_s / floor, noise)}; goal: at or below the floor).",
        f"- Ours against libkeepalive0: {ours_s / lk_s:.2f}x ({doc.judged(ours_s < lk_s, ours_s / lk_s, noise)}; goal: below).",
        f"- The hooks alone (policy off) cost {hooks_s - none_s:+.0f} ns per socket and "
        f"{(hooks_c / none_c - 1) * 100:+.1f}% per connection against no shim; the rest of any shim's cost is "
        "the setsockopt system calls and the kernel's keepalive work.",
        f"- Connect/accept throughput under ours: {none_c / ours_c * 100:.1f}% of no shim "
        f"({doc.judged(none_c / ours_c >= 0.97, 0.97 * ours_c / none_c, noise)}; goal: at least 97%). The floor, the same "
        f"system calls with no hook at all, reaches {none_c / floor_c * 100:.1f}%, and the hooks alone "
        f"{none_c / hooks_c * 100:.1f}%: with keepalive on, a connection pays four setsockopt calls and a "
        "keepalive timer armed and cancelled on each end, whatever turns it on.",
    ]
    section = "\n".join([
        "## The LD_PRELOAD shim against libkeepalive0, libdontdie0 and the floor",
        "",
        f"Reproduce: `bench/inject.py` ({ROUNDS} rounds, best of them, process CPU time; {SOCKETS} sockets and {CONNECTS} loopback",
        "connections per run; every variant applies idle 30 s, interval 10 s, 5 probes). The loop is",
        "`bench/c/sockloop.c`, each run in a fresh network namespace, connections closed with RST.",
        "\"keepalive / idle seen\" is read back from a socket in each run. Median/best in this run:",
        f"{max(spread.values()):.2f} at worst, which is the noise any ratio here carries.",
        "",
        *lines,
        "",
        *verdict,
    ])
    doc.write_section("inject", section)


if __name__ == "__main__":
    main()
