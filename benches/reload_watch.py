#!/usr/bin/env python3
"""Reload and watching: the numbers of docs/performance.md, "Reload and watching".

A. Save → applied: a private taskrushd loads a project, a client subscribes
   to its event stream (`events`), then the `.rush` file is saved N times
   (alternating in place and write-temp-then-rename); each save is timed
   from the moment the save is complete (after close / rename) to the
   `config_reloaded` event for it. Median, p95, max. The daemon's debounce
   (50 ms after the last write) is most of it.

B. Idle CPU: a project of F files in D directories is watched by a
   `taskrush run --watch` session (every file, no `cache_files`); after it
   settles, the daemon's utime+stime (/proc/PID/stat) is read twice, S
   seconds apart. No polling means ~0 ticks.

Usage: benches/reload_watch.py [--saves 100] [--files 10000] [--idle 30]
       [--bin target/debug]   (taskrush and taskrushd from there)
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Events:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")
        self.sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"events","params":[]}\n')
        assert "result" in json.loads(self.f.readline()), "events refused"

    def next(self):
        while True:
            msg = json.loads(self.f.readline())
            if msg.get("method") == "event":
                return msg["params"]["result"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=100)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tr-bench-")
    proj = os.path.join(tmp, "proj")
    os.makedirs(proj)
    env = dict(os.environ, TASKRUSH_SOCKET=os.path.join(tmp, "run", "d.sock"))
    env["PATH"] = a.bin + ":" + env["PATH"]
    rush = os.path.join(proj, ".rush")

    def save(i, rename):
        text = "tasks:\n  t:\n    cmd: echo %d\n" % i
        if rename:
            with open(rush + ".tmp", "w") as f:
                f.write(text)
            os.rename(rush + ".tmp", rush)
        else:
            with open(rush, "w") as f:
                f.write(text)

    save(-1, False)
    subprocess.run(["taskrush", "--list"], cwd=proj, env=env, check=True, capture_output=True)
    try:
        ev = Events(env["TASKRUSH_SOCKET"])
        times = []
        for i in range(a.saves):
            save(i, i % 2 == 1)
            t0 = time.perf_counter()
            while ev.next()["event"] != "config_reloaded":
                pass
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[max(0, int(len(times) * 0.95) - 1)]
        print("A. save -> config_reloaded over %d saves: median %.1f ms, p95 %.1f ms, max %.1f ms"
              % (len(times), statistics.median(times), p95, times[-1]))

        # B. idle CPU with a watched tree of --files files.
        with open(os.path.join(proj, ".gitignore"), "w") as f:
            f.write("out/\n")
        for i in range(a.files):
            d = os.path.join(proj, "src", "d%03d" % (i % a.dirs))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
                f.write("x")
        with open(rush, "w") as f:
            f.write("tasks:\n  t:\n    cmd: 'true'\n")
        watch = subprocess.Popen(["taskrush", "run", "--watch", "t"], cwd=proj, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while b"watching" not in watch.stderr.readline():
            pass
        status = json.loads(subprocess.run(["taskrush", "daemon", "status", "--json"], env=env,
                                           capture_output=True, check=True).stdout)
        pid = status["pid"]

        def ticks():
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime

        time.sleep(1)
        t0 = ticks()
        time.sleep(a.idle)
        used = ticks() - t0
        hz = os.sysconf("SC_CLK_TCK")
        print("B. idle with %d files in %d directories watched (%d watch roots): %d ticks "
              "(%.3f s CPU, %.4f%% of one core) over %.0f s"
              % (a.files, a.dirs, status.get("watched_dirs", 0), used, used / hz,
                 100.0 * used / hz / a.idle, a.idle))
        watch.send_signal(2)
        watch.wait(timeout=10)
    finally:
        subprocess.run(["taskrush", "daemon", "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
