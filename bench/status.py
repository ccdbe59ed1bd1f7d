#!/usr/bin/env python3
"""`keepalive status` against iproute2's `ss`, `set --all` on a busy process, and peak memory
as the socket count grows, in one run.

Usage: bench/status.py [ROUNDS]   (writes the "status" section of docs/benchmarks.md)

The sockets are loopback connections held by bench/c/holdconns.c, built and torn down here,
in a network namespace of their own so that nothing else on the machine is counted. Times are
wall time per command, best of ROUNDS (interference only ever adds time); memory is the
command's peak RSS from GNU time.
"""
import doc
import os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
KA = os.path.join(ROOT, "target/release/keepalive")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Holder:
    """N connections (2N sockets) held by one process inside namespace `ns`."""

    def __init__(self, prog, ns, n):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, prog, str(n)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"ready (\d+)", line)
        if not m:
            raise SystemExit(f"holdconns failed: {line!r}")
        self.pid = int(m.group(1))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run_in(ns, *cmd):
    """Wall time of one command run inside the namespace (`ip netns exec` included: the same
    for every command compared)."""
    start = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def peak(ns, *cmd):
    """Peak RSS in KiB of `cmd`, from GNU time (a small C parent, so the figure is the
    command's own and not a forked copy of this Python process)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "/usr/bin/time", "-f", "%M", *cmd], check=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return int(out.stderr.strip().splitlines()[-1])


def best(ns, cmd):
    return min(run_in(ns, *cmd) for _ in range(ROUNDS))


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench/status.py needs root: it makes a network namespace")
    if not os.path.exists("/usr/bin/time"):
        sh("apt-get", "install", "-y", "-qq", "time")
    sh("cargo", "build", "--release", "--locked", "-q", cwd=ROOT)
    tmp = tempfile.mkdtemp()
    prog = os.path.join(tmp, "holdconns")
    sh("cc", "-O2", "-o", prog, os.path.join(ROOT, "bench/c/holdconns.c"))
    ns = f"ka-bench-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        rows, verdict = measure(ns, prog)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    write(rows, verdict)


def measure(ns, prog):
    rows = []
    holder = Holder(prog, ns, 20_000)
    try:
        pairs = [
            ("with owners", [KA, "status", "-p"], ["ss", "-tnop"]),
            ("without owners", [KA, "status"], ["ss", "-tno"]),
        ]
        times = {}
        for label, ours, theirs in pairs:
            t_ours, t_ss = best(ns, ours), best(ns, theirs)
            times[label] = (t_ours, t_ss)
            rows.append(f"| 40,000 sockets, {label} | `{' '.join(['keepalive'] + ours[1:])}` {t_ours * 1000:.0f} ms "
                        f"| `{' '.join(theirs)}` {t_ss * 1000:.0f} ms | {t_ours / t_ss:.2f} |")
    finally:
        holder.close()

    holder = Holder(prog, ns, 5_000)
    try:
        t_set = min(run_in(ns, KA, "set", "--pid", str(holder.pid), "--all", "--idle", "60") for _ in range(ROUNDS))
    finally:
        holder.close()

    memory = []
    for conns in (5_000, 25_000, 50_000):
        holder = Holder(prog, ns, conns)
        try:
            memory.append((2 * conns, peak(ns, KA, "status"), peak(ns, KA, "status", "-p"),
                           peak(ns, "ss", "-tno"), peak(ns, "ss", "-tnop")))
        finally:
            holder.close()

    with_owners, without = times["with owners"], times["without owners"]
    verdict = [
        f"- With owners: {with_owners[0] / with_owners[1]:.2f}x the time of `ss -tnop` "
        f"({'met' if with_owners[0] <= 0.5 * with_owners[1] else 'missed'}; goal: at most 0.5x).",
        f"- Without owners: {without[0] / without[1]:.2f}x the time of `ss -tno` "
        f"({'met' if without[0] <= without[1] else 'missed'}; goal: no slower).",
        f"- `keepalive set --pid P --all` on a process with 10,000 TCP sockets: {t_set * 1000:.0f} ms, "
        f"including process start ({'met' if t_set < 0.1 else 'missed'}; goal: under 100 ms).",
    ]
    first, last = memory[0], memory[-1]
    verdict.append(
        f"- Peak memory from {first[0]:,} to {last[0]:,} sockets: `keepalive status` {first[1] / 1024:.1f} → "
        f"{last[1] / 1024:.1f} MiB, with owners {first[2] / 1024:.1f} → {last[2] / 1024:.1f} MiB "
        "(the inode → owner map is the only thing that grows with the socket count).")
    mem_rows = [f"| {s:,} | {a / 1024:.1f} | {b / 1024:.1f} | {c / 1024:.1f} | {d / 1024:.1f} |" for s, a, b, c, d in memory]
    return (rows, mem_rows), verdict


def write(rows, verdict):
    timing, mem = rows
    section = "\n".join([
        "## Listing connections: `keepalive status` against `ss`",
        "",
        f"Reproduce: `bench/status.py` (as root; best of {ROUNDS}; the sockets are loopback connections",
        "held by `bench/c/holdconns.c` in a network namespace made for the run).",
        "",
        "| sockets | keepalive | ss | ratio |",
        "|---|---|---|---:|",
        *timing,
        "",
        "Peak RSS (MiB) as the socket count grows:",
        "",
        "| sockets | keepalive status | keepalive status -p | ss -tno | ss -tnop |",
        "|---:|---:|---:|---:|---:|",
        *mem,
        "",
        *verdict,
    ])
    doc.write_section("status", section)


if __name__ == "__main__":
    main()
