#!/usr/bin/env python3
"""Hostile clients against a private taskrushd, with the daemon's memory
and other clients' latency measured while they attack.

Attacks, one after another, each while a well-behaved client keeps calling
`daemon_status` and running a task:
  1. a Content-Length header declaring 10 GB;
  2. a 1 GB line with no newline, written as fast as the socket takes it;
  3. 50 clients each sending one byte a second (slowloris) for 15 s;
  4. 200 connections opened and left idle, then closed;
  5. 4 connections each sending an 8 MiB batch of `daemon_status` calls and
     never reading the answers;
  6. 4 connections each starting 8 runs of a task that prints NUL bytes
     without end, never reading the output;
  7. 2,000 connections that make one `daemon_status` call, then stay idle;
  8. 1,000 slowloris connections (one byte a second, 8 s);
  9. 4 connections each sending 50 batches of 1,000 `daemon_status` calls
     (within the batch limit) and never reading the answers.
Reports the daemon's RSS before and after each attack (after: once the
attackers are gone), the peak during it (VmHWM, reset before each attack),
and the good client's `daemon_status` round trip (median, p99) during it.

Usage: benches/hostile.py [ATTACK_NUMBER ...]   (needs target/release/taskrush{,d};
TASKRUSH=path/to/taskrush to measure other binaries)
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


def reset_peak(pid):
    """Reset VmHWM so the peak is this attack's (Linux: clear_refs 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def daemon_pid(path):
    return call(path, "daemon_status")["result"]["pid"]


def wait_settled(pid, limit=60):
    """Wait until the daemon's RSS stops growing (or `limit` seconds)."""
    last, stable, t0 = -1, 0, time.time()
    while time.time() - t0 < limit and stable < 4:
        time.sleep(0.5)
        now = rss_kib(pid)
        stable = stable + 1 if abs(now - last) < 256 else 0
        last = now
    return time.time() - t0


def attack_unread_batches(path, n=4):
    one = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daemon_status"}).encode()
    count = (8 << 20) // (len(one) + 1) - 1
    batch = b"[" + b",".join([one] * count) + b"]\n"
    socks = []
    for _ in range(n):
        s = connect(path)
        s.sendall(batch)
        socks.append(s)
    wait_settled(daemon_pid(path))
    # What the first connection got back, without reading it all.
    s = socks[0]
    s.settimeout(2)
    head = b""
    try:
        head = s.recv(300)
    except OSError:
        pass
    for s in socks:
        s.close()
    text = head.decode(errors="replace")
    what = "an error: " + json.loads(text.split("\n")[0])["error"]["message"] if text.startswith("{") else \
        f"a batch answer ({text[:12]}...)" if text.startswith("[") else "nothing"
    return f"{n} x {count} requests: answered with {what}"


def attack_unread_small_batches(path, n=4, batches=50):
    one = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daemon_status"}).encode()
    batch = b"[" + b",".join([one] * 1000) + b"]\n"
    socks = []
    for _ in range(n):
        s = connect(path)
        s.setblocking(False)
        sent = 0
        for _ in range(batches):
            try:
                s.sendall(batch)
                sent += 1
            except BlockingIOError:
                break  # the daemon stopped reading this client
        socks.append((s, sent))
    wait_settled(daemon_pid(path))
    for s, _ in socks:
        s.close()
    sent = sum(n for _, n in socks)
    return f"{n} connections x {batches} batches of 1,000 calls: the daemon took {sent} batches before it stopped reading"


def attack_unread_output(path, project, env, conns=4, runs=8):
    socks = []
    for c in range(conns):
        s = connect(path)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        msgs = []
        for r in range(runs):
            msgs.append(json.dumps({"jsonrpc": "2.0", "id": r + 1, "method": "run", "params": {"request": {
                "cwd": project, "tasks": ["zeros"], "env": env, "jobs": 1}}}))
        s.sendall(("\n".join(msgs) + "\n").encode())
        socks.append(s)
    wait_settled(daemon_pid(path))
    for s in socks:
        s.close()
    return f"{conns} connections x {runs} runs of `head -c 10G /dev/zero`, output never read"


def attack_idle_after_call(path, n=2000):
    socks = []
    req = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daemon_status"}) + "\n").encode()
    refused = 0
    for _ in range(n):
        s = connect(path)
        s.sendall(req)
        s.settimeout(10)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        if b'"error"' in buf:
            refused += 1
        socks.append(s)
    pid = daemon_pid(path)
    wait_settled(pid, 10)
    during = rss_kib(pid)
    for s in socks:
        s.close()
    return f"{n} connections, each idle after one call ({refused} refused); RSS while open {during / 1024:.1f} MiB"


def attack_slowloris_many(path, n=1000, seconds=8):
    pid = daemon_pid(path)
    socks = [connect(path) for _ in range(n)]
    during = 0
    for i in range(seconds):
        for s in socks:
            try:
                s.send(b"{" if i == 0 else b" ")
            except OSError:
                pass
        time.sleep(1)
        during = max(during, rss_kib(pid))
    for s in socks:
        s.close()
    return f"{n} slow clients for {seconds} s; RSS while open {during / 1024:.1f} MiB"


def attack_idle_connections(path, n=200):
    socks = [connect(path) for _ in range(n)]
    time.sleep(2)
    for s in socks:
        s.close()
    return f"{n} idle connections opened and closed"


def main():
    tmp = tempfile.mkdtemp(prefix="tr-hostile-")
    sock = os.path.join(tmp, "d.sock")
    # 2,000 connections are above the default cap of 1,024 per user.
    env = dict(os.environ, TASKRUSH_SOCKET=sock, TASKRUSH_MAX_CONNECTIONS="4096")
    project = os.path.join(tmp, "p")
    os.makedirs(project)
    with open(os.path.join(project, ".rush"), "w") as f:
        f.write("tasks:\n  hi:\n    cmd: echo hi\n  zeros:\n    cmd: head -c 10000000000 /dev/zero\n")
    print("| attack | outcome | daemon RSS before -> after (peak during) | other clients: status round trip median / p99 | their runs ok / failed |")
    print("|---|---|---|---|---|")
    attacks = [("10 GB Content-Length", lambda: attack_huge_header(sock)),
               ("1 GB line, no newline", lambda: attack_endless_line(sock)),
               ("50 slow clients, 1 byte/s, 15 s", lambda: attack_slowloris(sock)),
               ("200 idle connections", lambda: attack_idle_connections(sock)),
               ("4 unread 8 MiB batches", lambda: attack_unread_batches(sock)),
               ("unread NUL-heavy run output", lambda: attack_unread_output(sock, project, env)),
               ("2,000 idle connections", lambda: attack_idle_after_call(sock)),
               ("1,000 slowloris connections", lambda: attack_slowloris_many(sock)),
               ("unread batches within the limit", lambda: attack_unread_small_batches(sock))]
    chosen = [int(a) for a in sys.argv[1:]] or range(1, len(attacks) + 1)
    try:
        for i in chosen:
            name, attack = attacks[i - 1]
            # A fresh daemon for each attack: freed memory that a previous
            # attack left in the allocator would hide this one's growth.
            subprocess.run([TASKRUSH, "daemon", "stop"], env=env, capture_output=True)
            subprocess.run([TASKRUSH, "hi"], cwd=project, env=env, check=True, capture_output=True)
            pid = call(sock, "daemon_status")["result"]["pid"]
            before = rss_kib(pid)
            reset_peak(pid)
            good = GoodClient(sock, project, env)
            good.start()
            outcome = attack()
            good.stop = True
            good.join(timeout=30)
            peak = rss_kib(pid, "VmHWM:")
            wait_settled(pid, 10)
            after = rss_kib(pid)
            med = statistics.median(good.lat) if good.lat else float("nan")
            p99 = sorted(good.lat)[int(0.99 * (len(good.lat) - 1))] if good.lat else float("nan")
            print(f"| {name} | {outcome} | {before / 1024:.1f} -> {after / 1024:.1f} MiB ({peak / 1024:.1f}) | "
                  f"{med:.0f} us / {p99:.0f} us | {good.runs_ok} / {good.runs_bad} |")
    finally:
        subprocess.run([TASKRUSH, "daemon", "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
