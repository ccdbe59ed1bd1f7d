#!/usr/bin/env python3
"""keepalive http against the tools people use on a keep-alive connection, side by side in one
run: 1000 requests one after another on one connection (ab -k -c 1, curl reusing its
connection, h2load -c 1 -m 1 for HTTP/2), against Python's ThreadingHTTPServer (headers and
body in two writes with Nagle on: a client whose delayed ACK holds the second write pays
40 ms a request) and nginx (plain and h2c). Also the peak memory of reading a 2 GiB body.
Writes the "http" section of docs/benchmarks.md.

Run from the repository as root: bench/http.py (needs nginx, apache2, h2o, haproxy, node,
openssl, ab from apache2-utils, h2load from nghttp2-client, curl; builds keepalive in release
mode first). Then a whole run against each server, its wall time beside the idle timeout. Everything listens on
loopback ports the kernel picks and is stopped at the end.
"""
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from doc import ROOT, write_section  # noqa: E402

KEEPALIVE = os.path.join(ROOT, "target/release/keepalive")
REQUESTS = 1000
ROUNDS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


PY_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers()
        self.wfile.write(b'ok')
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"""

BIG_SERVER = """
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', int(sys.argv[1]))); l.listen(8)
chunk = bytes(1 << 20)
while True:
    c, _ = l.accept()
    try:
        while True:
            head = b''
            while not head.endswith(b'\\r\\n\\r\\n'):
                b = c.recv(1)
                if not b:
                    raise EOFError
                head += b
            c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n' % (2048 << 20))
            for _ in range(2048):
                c.sendall(chunk)
    except (EOFError, OSError):
        c.close()
"""


def start(cmd):
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(cmd):
    """Wall seconds of a command that must succeed, and its output."""
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{cmd}: {out.stderr}")
    return took, out.stdout


def keepalive_count(url, http2):
    """The counting phase's own time, as keepalive reports it (the idle wait runs beside it)."""
    args = [KEEPALIVE, "http", url, "--requests", str(REQUESTS), "--max-wait", "20s", "--json"]
    args.append("--http2" if http2 else "--http1")
    _, out = timed(args)
    v = json.loads(out)
    r = v["http2"] if http2 else v["http1"]
    assert r["requests_served"] == REQUESTS, r
    return r["counting_s"]


def ab(url):
    _, out = timed(["ab", "-q", "-k", "-n", str(REQUESTS), "-c", "1", url])
    assert f"Complete requests:      {REQUESTS}" in out, out
    return float(re.search(r"Time taken for tests:\s+([\d.]+)", out).group(1))


def curl(url, tmp):
    config = os.path.join(tmp, "curl.cfg")
    with open(config, "w") as f:
        for _ in range(REQUESTS):
            f.write(f'url = "{url}"\noutput = "/dev/null"\n')
    took, _ = timed(["curl", "-s", "--config", config])
    return took


def h2load(url):
    _, out = timed(["h2load", "-n", str(REQUESTS), "-c", "1", "-m", "1", url])
    assert f"{REQUESTS} succeeded" in out, out
    return float(re.search(r"finished in ([\d.]+)(m?s)", out).group(1)) / (
        1000 if re.search(r"finished in [\d.]+ms", out) else 1
    )


def peak_rss_kb(cmd):
    """The peak RSS of `cmd`, run in a child of a fresh Python (so that RUSAGE_CHILDREN is its
    alone)."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"{cmd}: {out.stderr}")
    return int(out.stdout)


def apache_conf(d, port):
    m = "/usr/lib/apache2/modules"
    return (
        f"LoadModule mpm_event_module {m}/mod_mpm_event.so\nLoadModule authz_core_module {m}/mod_authz_core.so\n"
        f"ServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\n"
        f"DocumentRoot {d}\nUser nobody\nGroup nogroup\nKeepAlive On\nKeepAliveTimeout 2\n"
        f"<Directory {d}>\n  Require all granted\n</Directory>\n"
    )


def wall_against_timeout(tmp):
    """Each server started with a known idle timeout, measured once: keepalive's wall time
    against the longest idle timeout it measured (HTTP/1.1 and, where spoken, HTTP/2)."""
    rows = []
    servers = []
    d = os.path.join(tmp, "wall")
    os.makedirs(d, mode=0o755)
    os.chmod(tmp, 0o755)
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write("hi\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"], capture_output=True, check=True)
    p = {name: free_port() for name in ["nginx", "python", "node", "apache", "h2o", "haproxy"]}
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(
            f"daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr crit;\n"
            "events { worker_connections 64; }\n"
            f"http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n"
            f"uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; keepalive_timeout 2s;\n"
            f"server {{ listen 127.0.0.1:{p['nginx']} ssl http2; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n"
            f"location / {{ return 200 \"ok\"; }} }} }}\n"
        )
    with open(f"{d}/httpd.conf", "w") as f:
        f.write(apache_conf(d, p["apache"]))
    with open(f"{d}/h2o.conf", "w") as f:
        f.write(
            f"listen:\n  host: 127.0.0.1\n  port: {p['h2o']}\n  ssl:\n    certificate-file: {d}/cert.pem\n"
            f"    key-file: {d}/key.pem\n    ocsp-update-interval: 0\nuser: root\nhttp1-request-timeout: 5\n"
            f"http2-idle-timeout: 3\nerror-log: {d}/h2o.log\nhosts:\n  default:\n    paths:\n      /:\n"
            f"        file.dir: {d}\n"
        )
    with open(f"{d}/haproxy.cfg", "w") as f:
        f.write(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n"
            f"  timeout http-keep-alive 2s\nfrontend f\n  bind 127.0.0.1:{p['haproxy']}\n  default_backend b\n"
            f"backend b\n  server s1 127.0.0.1:{p['apache']}\n"
        )
    py = PY_SERVER.replace("protocol_version = 'HTTP/1.1'", "protocol_version = 'HTTP/1.1'\n    timeout = 2")
    node = (f"const s = require('http').createServer((q, r) => r.end('ok')); s.keepAliveTimeout = 3000;"
            f" s.listen({p['node']}, '127.0.0.1');")
    servers = [
        start(["nginx", "-p", d, "-c", f"{d}/nginx.conf"]),
        start([sys.executable, "-c", py, str(p["python"])]),
        start(["node", "-e", node]),
        start(["apache2", "-f", f"{d}/httpd.conf", "-DFOREGROUND"]),
        start(["h2o", "-c", f"{d}/h2o.conf"]),
        start(["haproxy", "-f", f"{d}/haproxy.cfg", "-db"]),
    ]
    try:
        for port in p.values():
            wait_listening(port)
        for name, url, extra in [
            ("nginx 1.22, keepalive_timeout 2s", f"https://127.0.0.1:{p['nginx']}/", ["--insecure"]),
            ("Python http.server, timeout = 2", f"http://127.0.0.1:{p['python']}/", []),
            ("Node 20, keepAliveTimeout 3000", f"http://127.0.0.1:{p['node']}/", []),
            ("Apache 2.4, KeepAliveTimeout 2", f"http://127.0.0.1:{p['apache']}/index.html", []),
            ("h2o 2.2, HTTP/1.1 5 s, HTTP/2 3 s", f"https://127.0.0.1:{p['h2o']}/", ["--insecure"]),
            ("haproxy in front of Apache, http-keep-alive 2s", f"http://127.0.0.1:{p['haproxy']}/index.html", []),
        ]:
            took, out = timed([KEEPALIVE, "http", url, "--max-wait", "30s", "--json", *extra])
            v = json.loads(out)
            idles = [v["http1"]["idle"].get("after_s")]
            if v.get("http2") and v["http2"].get("result") == "measured":
                idles.append(v["http2"]["idle"].get("after_s"))
            measured = [x for x in idles if x is not None]
            longest = max(measured)
            shown = " / ".join(f"{x:.3f}" for x in measured)
            rows.append(f"| {name} | {shown} | {took:.3f} | {took / longest:.3f} |")
    finally:
        for s_ in servers:
            s_.terminate()
            s_.wait()
    return rows


def main():
    for tool in ["nginx", "ab", "h2load", "curl", "apache2", "h2o", "haproxy", "node", "openssl"]:
        if not shutil.which(tool):
            raise SystemExit(f"bench/http.py needs {tool}")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="ka-bench-http-")
    procs = []
    try:
        py_port, ng_port, h2c_port, big_port = free_port(), free_port(), free_port(), free_port()
        procs.append(start([sys.executable, "-c", PY_SERVER, str(py_port)]))
        procs.append(start([sys.executable, "-c", BIG_SERVER, str(big_port)]))
        d = tmp
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(
                f"daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr crit;\n"
                "events { worker_connections 64; }\n"
                f"http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n"
                f"uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; keepalive_requests 100000; keepalive_timeout 2s;\n"
                f"server {{ listen 127.0.0.1:{ng_port}; location / {{ return 200 \"ok\"; }} }}\n"
                f"server {{ listen 127.0.0.1:{h2c_port} http2; location / {{ return 200 \"ok\"; }} }} }}\n"
            )
        procs.append(start(["nginx", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")]))
        for p in [py_port, ng_port, h2c_port, big_port]:
            wait_listening(p)
        py, ng, h2c = (f"http://127.0.0.1:{p}/" for p in (py_port, ng_port, h2c_port))
        cases = [
            ("Python ThreadingHTTPServer", "HTTP/1.1", "keepalive http", lambda: keepalive_count(py, False)),
            ("Python ThreadingHTTPServer", "HTTP/1.1", "curl, one connection", lambda: curl(py, tmp)),
            ("nginx", "HTTP/1.1", "keepalive http", lambda: keepalive_count(ng, False)),
            ("nginx", "HTTP/1.1", "ab -k -c 1", lambda: ab(ng)),
            ("nginx", "HTTP/1.1", "curl, one connection", lambda: curl(ng, tmp)),
            ("nginx", "HTTP/2 (h2c)", "keepalive http --http2", lambda: keepalive_count(h2c, True)),
            ("nginx", "HTTP/2 (h2c)", "h2load -c 1 -m 1", lambda: h2load(h2c)),
        ]
        results = {}
        for _ in range(ROUNDS):
            for server, version, tool, run in cases:
                results.setdefault((server, version, tool), []).append(run())
        big = f"http://127.0.0.1:{big_port}/"
        rss = [
            ("keepalive http", peak_rss_kb([KEEPALIVE, "http", big, "--http1", "--requests", "1", "--max-wait", "120s"])),
            ("curl -o /dev/null", peak_rss_kb(["curl", "-s", "-o", "/dev/null", big])),
        ]
        wall = wall_against_timeout(tmp)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        "## keepalive http: requests on one connection, and memory",
        "",
        f"Reproduce: `bench/http.py` ({ROUNDS} rounds, median wall time of {REQUESTS} requests sent one after",
        "another on one connection; keepalive's own count of its counting phase, which runs beside its",
        "idle wait). Compare the ratios within a server's rows; absolute times vary from run to run.",
        "Python's server writes headers and body in two writes with Nagle on: a client that delays",
        "its ACK holds the second write back 40 ms a request; keepalive acknowledges at once",
        "(TCP_QUICKACK before each read). `ab -k` is left out there: it asks in HTTP/1.0, and",
        "http.server's HTTP/1.1 answer carries no `Connection: keep-alive`, so ab waits 30 s for the",
        "end of a response that has ended.",
        "",
        "| server | version | tool | seconds | requests/s | relative |",
        "|---|---|---|---:|---:|---:|",
    ]
    for server in dict.fromkeys((s, v) for s, v, _ in results):
        rows = [(t, statistics.median(x)) for (s, v, t), x in results.items() if (s, v) == server]
        best = min(m for _, m in rows)
        for tool, m in rows:
            lines.append(f"| {server[0]} | {server[1]} | {tool} | {m:.3f} | {REQUESTS / m:.0f} | {m / best:.2f} |")
    lines += [
        "",
        "A 2 GiB body, read to the end and let go (peak resident memory, one run each):",
        "",
        "| tool | peak RSS |",
        "|---|---:|",
    ]
    for tool, kb in rss:
        lines.append(f"| {tool} | {kb / 1024:.1f} MiB |")
    lines += [
        "",
        "Wall time of a whole `keepalive http` run against the longest idle timeout it measured",
        "(every phase runs at once, so the run takes about that timeout):",
        "",
        "| server | idle timeout measured, s (HTTP/1.1 / HTTP/2) | wall time, s | wall / timeout |",
        "|---|---|---:|---:|",
        *wall,
    ]
    write_section("http", "\n".join(lines))


if __name__ == "__main__":
    main()
