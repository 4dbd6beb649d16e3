#!/usr/bin/env python3
"""What the plugins' network proxy adds to a request (issue 12).

A real daemon, a real plugin (Python, standalone, `http.client`), a local
HTTP server (this script, a thread per connection, `HTTP/1.0`: one request
per connection). The plugin's command `bench N` makes N small GET requests
one after the other, each on a new connection, in three ways interleaved:

  direct   to 127.0.0.1:PORT (the baseline),
  forward  through the proxy as `GET http://receiver.test:PORT/ …`,
  tunnel   through the proxy as `CONNECT receiver.test:PORT`, then the GET
           (plain http inside: the tunnel's cost without TLS's),

and prints the median and p99 of each, in ms, and what the proxy adds.
`receiver.test` is resolved by the proxy only (`TASKRUSH_PROXY_RESOLVE`).
The daemon runs with `TASKRUSH_SANDBOX_NO_LANDLOCK=1` so that the direct
baseline can connect from the same process (with Landlock the plugin can
reach only its proxy's port); the proxy path is the same either way.

Usage: benches/proxy_latency.py [--requests 1000] [--bin target/debug]
"""
import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PLUGIN = r'''
import http.client, json, os, statistics, sys, time
from urllib.parse import urlsplit

def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def bench(n, port):
    proxy = urlsplit(os.environ["HTTP_PROXY"])
    def direct():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/x"); r = c.getresponse(); r.read(); c.close(); return r.status
    def forward():
        c = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
        c.request("GET", f"http://receiver.test:{port}/x"); r = c.getresponse(); r.read(); c.close(); return r.status
    def tunnel():
        c = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
        c.set_tunnel("receiver.test", port)
        c.request("GET", "/x"); r = c.getresponse(); r.read(); c.close(); return r.status
    ways = {"direct": direct, "forward": forward, "tunnel": tunnel}
    for f in ways.values():
        for _ in range(20):
            assert f() == 200
    times = {k: [] for k in ways}
    for _ in range(n):
        for k, f in ways.items():
            t = time.perf_counter(); s = f(); times[k].append((time.perf_counter() - t) * 1000)
            assert s == 200, (k, s)
    return {k: {"median": statistics.median(v), "p99": pct(v, 99)} for k, v in times.items()}

for line in sys.stdin:
    m = json.loads(line); mid = m.get("id"); p = m.get("params") or {}
    if m["method"] == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {"name": "bench", "version": "1.0.0", "protocol": 1,
              "hooks": [], "commands": [{"name": "proxy-bench", "description": "bench"}]}})
    elif m["method"] == "command":
        n, port = int(p["args"][0]), int(p["args"][1])
        out = json.dumps(bench(n, port))
        send({"jsonrpc": "2.0", "id": mid, "result": {"exit_code": 0, "stdout": out + "\n", "stderr": ""}})
    elif m["method"] == "shutdown":
        send({"jsonrpc": "2.0", "id": mid, "result": None}); break
    elif mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "result": None})
'''


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug"))
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    tmp = tempfile.mkdtemp(prefix="proxy-bench-")
    try:
        proj = os.path.join(tmp, "project")
        pdir = os.path.join(proj, ".rush-plugins", "bench")
        os.makedirs(pdir)
        with open(os.path.join(pdir, "plugin.toml"), "w") as f:
            f.write('name = "bench"\nversion = "1.0.0"\nentry_point = ["python3", "-I", "-u", "main.py"]\n'
                    'taskrush_version = ">=0.3"\n[permissions]\nnetwork = ["receiver.test", "127.0.0.1"]\n')
        with open(os.path.join(pdir, "main.py"), "w") as f:
            f.write(PLUGIN)
        with open(os.path.join(proj, ".rush"), "w") as f:
            f.write("plugins:\n  - {name: bench, timeout: 600s}\ntasks:\n  t:\n    cmd: 'true'\n")
        env = dict(os.environ,
                   TASKRUSH_SOCKET=os.path.join(tmp, "run", "d.sock"),
                   XDG_STATE_HOME=os.path.join(tmp, "state"),
                   TASKRUSH_PROXY_RESOLVE=f"receiver.test=127.0.0.1:{port}",
                   TASKRUSH_SANDBOX_NO_LANDLOCK="1")
        daemon = subprocess.Popen([os.path.join(a.bin, "taskrushd"), "--notify-ready"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        assert daemon.stdout.read(5) == b"ready", "the daemon did not start"
        try:
            out = subprocess.run([os.path.join(a.bin, "taskrush"), "proxy-bench", str(a.requests), str(port)],
                                 cwd=proj, env=env, capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                sys.exit(f"bench failed: {out.stderr}")
            r = json.loads(out.stdout)
        finally:
            subprocess.run([os.path.join(a.bin, "taskrush"), "daemon", "stop"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            daemon.wait(timeout=30)
    finally:
        server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{a.requests} sequential GETs each way, a new connection per request (ms):")
    print(f"{'way':8} {'median':>8} {'p99':>8} {'added median':>13} {'added p99':>10}")
    for k in ("direct", "forward", "tunnel"):
        v = r[k]
        add_m = v["median"] - r["direct"]["median"]
        add_p = v["p99"] - r["direct"]["p99"]
        print(f"{k:8} {v['median']:8.3f} {v['p99']:8.3f} {add_m:+13.3f} {add_p:+10.3f}")


if __name__ == "__main__":
    main()
