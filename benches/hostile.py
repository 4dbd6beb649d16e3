#!/usr/bin/env python3
"""Hostile clients against a private taskrushd, with the daemon's memory
and other clients' latency measured while they attack.

Attacks, one after another, each while a well-behaved client keeps calling
`daemon_status` and running a task:
  1. a Content-Length header declaring 10 GB;
  2. a 1 GB line with no newline, written as fast as the socket takes it;
  3. 50 clients each sending one byte a second (slowloris) for 15 s;
  4. 200 connections opened and left idle, then closed.
Reports the daemon's RSS before and after each attack, and the good
client's `daemon_status` round trip (median, p99) during it.

Usage: benches/hostile.py   (needs target/release/taskrush{,d})
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKRUSH = os.environ.get("TASKRUSH") or os.path.join(ROOT, "target", "release", "taskrush")


def rss_kib(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s


def call(path, method, params=None):
    s = connect(path)
    s.settimeout(10)
    s.sendall((json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf)


class GoodClient(threading.Thread):
    """Keeps asking for the status and running a task; records latencies."""

    def __init__(self, path, project, env):
        super().__init__(daemon=True)
        self.path, self.project, self.env = path, project, env
        self.lat, self.runs_ok, self.runs_bad, self.stop = [], 0, 0, False

    def run(self):
        while not self.stop:
            t0 = time.perf_counter()
            call(self.path, "daemon_status")
            self.lat.append((time.perf_counter() - t0) * 1e6)
            r = subprocess.run([TASKRUSH, "hi"], cwd=self.project, env=self.env, capture_output=True)
            if r.returncode == 0 and r.stdout == b"hi\n":
                self.runs_ok += 1
            else:
                self.runs_bad += 1
            time.sleep(0.02)


def attack_huge_header(path):
    s = connect(path)
    s.sendall(b"Content-Length: 10000000000\r\n\r\n")
    s.settimeout(10)
    answer = s.recv(4096)
    s.close()
    body = answer.decode(errors="replace").split("\r\n\r\n", 1)[-1]
    return "refused: " + json.loads(body)["error"]["message"]


def attack_endless_line(path):
    s = connect(path)
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        while sent < (1 << 30):
            s.sendall(chunk)
            sent += len(chunk)
    except OSError as e:
        return f"daemon closed the connection after {sent >> 20} MiB ({e.__class__.__name__})"
    finally:
        s.close()
    return f"sent {sent >> 20} MiB without being stopped"


def attack_slowloris(path, n=50, seconds=15):
    socks = [connect(path) for _ in range(n)]
    cut = 0
    for i in range(seconds):
        for s in socks:
            try:
                s.send(b"{"[:1] if i == 0 else b" ")
            except OSError:
                pass
        time.sleep(1)
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                cut += 1
        except BlockingIOError:
            pass
        except OSError:
            cut += 1
        s.close()
    return f"{cut} of {n} slow clients were cut off"


def attack_idle_connections(path, n=200):
    socks = [connect(path) for _ in range(n)]
    time.sleep(2)
    for s in socks:
        s.close()
    return f"{n} idle connections opened and closed"


def main():
    tmp = tempfile.mkdtemp(prefix="tr-hostile-")
    sock = os.path.join(tmp, "d.sock")
    env = dict(os.environ, TASKRUSH_SOCKET=sock)
    project = os.path.join(tmp, "p")
    os.makedirs(project)
    with open(os.path.join(project, ".rush"), "w") as f:
        f.write("tasks:\n  hi:\n    cmd: echo hi\n")
    subprocess.run([TASKRUSH, "hi"], cwd=project, env=env, check=True, capture_output=True)
    pid = call(sock, "daemon_status")["result"]["pid"]
    print("| attack | outcome | daemon RSS before -> after (peak so far) | other clients: status round trip median / p99 | their runs ok / failed |")
    print("|---|---|---|---|---|")
    try:
        for name, attack in [("10 GB Content-Length", attack_huge_header),
                             ("1 GB line, no newline", attack_endless_line),
                             ("50 slow clients, 1 byte/s, 15 s", attack_slowloris),
                             ("200 idle connections", attack_idle_connections)]:
            before = rss_kib(pid)
            good = GoodClient(sock, project, env)
            good.start()
            outcome = attack(sock)
            good.stop = True
            good.join(timeout=30)
            after = rss_kib(pid)
            peak = rss_kib(pid, "VmHWM:")
            med = statistics.median(good.lat) if good.lat else float("nan")
            p99 = sorted(good.lat)[int(0.99 * (len(good.lat) - 1))] if good.lat else float("nan")
            print(f"| {name} | {outcome} | {before / 1024:.1f} -> {after / 1024:.1f} MiB ({peak / 1024:.1f}) | "
                  f"{med:.0f} us / {p99:.0f} us | {good.runs_ok} / {good.runs_bad} |")
    finally:
        subprocess.run([TASKRUSH, "daemon", "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
