#!/usr/bin/env python3
"""Time to recover from faults of the daemon's socket file and directory.

Faults, each against a fresh private daemon (`TASKRUSH_SOCKET` in a temp
directory), each repeated N times (median and max reported):
  1. the socket file is deleted: time until the socket answers again, and
     the wall time of a `taskrush hi` started right after the deletion;
  2. the socket's directory is removed (a logout removing /run/user/UID):
     wall time of the next `taskrush hi`, time until the old daemon is
     gone, and whether the new daemon's socket survived the old daemon.

Usage: benches/socket_faults.py [N]   (needs target/release/taskrush{,d};
TASKRUSH=path/to/taskrush to measure other binaries)
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKRUSH = os.environ.get("TASKRUSH") or os.path.join(ROOT, "target", "release", "taskrush")
GIVE_UP = 10.0


def status(path):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        s.connect(path)
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon_status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
        s.close()
        return json.loads(buf)["result"]
    except (OSError, ValueError, KeyError):
        return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def hi(project, env):
    t0 = time.perf_counter()
    r = subprocess.run([TASKRUSH, "hi"], cwd=project, env=env, capture_output=True, timeout=60)
    return time.perf_counter() - t0, r.returncode == 0 and r.stdout == b"hi\n", r.stderr.decode()


def setup():
    tmp = tempfile.mkdtemp(prefix="tr-faults-")
    sock = os.path.join(tmp, "run", "d.sock")
    env = dict(os.environ, TASKRUSH_SOCKET=sock)
    project = os.path.join(tmp, "p")
    os.makedirs(project)
    with open(os.path.join(project, ".rush"), "w") as f:
        f.write("tasks:\n  hi:\n    cmd: echo hi\n")
    subprocess.run([TASKRUSH, "hi"], cwd=project, env=env, check=True, capture_output=True)
    return tmp, sock, env, project


def teardown(tmp, env, pids):
    subprocess.run([TASKRUSH, "daemon", "stop"], env=env, capture_output=True, timeout=30)
    for pid in pids:
        if alive(pid):
            os.kill(pid, 15)
    shutil.rmtree(tmp, ignore_errors=True)


def socket_deleted():
    tmp, sock, env, project = setup()
    pid = status(sock)["pid"]
    os.unlink(sock)
    t0 = time.perf_counter()
    back = None
    while time.perf_counter() - t0 < GIVE_UP:
        if status(sock):
            back = time.perf_counter() - t0
            break
        time.sleep(0.001)
    teardown(tmp, env, [pid])
    tmp, sock, env, project = setup()
    pid = status(sock)["pid"]
    os.unlink(sock)
    took, ok, err = hi(project, env)
    teardown(tmp, env, [pid])
    return back, took, ok, err


def directory_removed():
    tmp, sock, env, project = setup()
    old = status(sock)["pid"]
    shutil.rmtree(os.path.dirname(sock))
    took, ok, err = hi(project, env)
    new = (status(sock) or {}).get("pid")
    t0 = time.perf_counter()
    gone = None
    while time.perf_counter() - t0 < GIVE_UP:
        if not alive(old):
            gone = time.perf_counter() - t0 + took
            break
        time.sleep(0.005)
    if gone is None:
        # Make it exit, as a logout's SIGTERM would: does it take the new socket along?
        os.kill(old, 15)
        t1 = time.perf_counter()
        while alive(old) and time.perf_counter() - t1 < GIVE_UP:
            time.sleep(0.005)
    survived = os.path.exists(sock) and (status(sock) or {}).get("pid") == new
    teardown(tmp, env, [old] + ([new] if new else []))
    return took, ok, gone, survived, err


def fmt(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "never"
    return f"{statistics.median(xs) * 1000:.1f} ms (max {max(xs) * 1000:.1f})"


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    backs, tooks, oks = [], [], 0
    for _ in range(n):
        back, took, ok, err = socket_deleted()
        backs.append(back)
        tooks.append(took)
        oks += ok
        if not ok:
            last_err = err.strip().splitlines()[0] if err.strip() else ""
    print("| fault | socket answers again after | next `taskrush hi` | old daemon gone after | new daemon's socket kept |")
    print("|---|---|---|---|---|")
    note = "" if oks == n else f", {n - oks} of {n} failed: {last_err}"
    print(f"| socket file deleted | {fmt(backs)} | {fmt(tooks)}{note} | (same daemon) | - |")
    tooks, oks, gones, kept = [], 0, [], 0
    for _ in range(n):
        took, ok, gone, survived, err = directory_removed()
        tooks.append(took)
        oks += ok
        gones.append(gone)
        kept += survived
    note = "" if oks == n else f", {n - oks} of {n} failed"
    print(f"| socket directory removed | (a new daemon) | {fmt(tooks)}{note} | {fmt(gones)} | {kept} of {n} |")


if __name__ == "__main__":
    sys.exit(main())
