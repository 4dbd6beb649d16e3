#!/usr/bin/env python3
"""What a plugin costs a task.

A. Round trips straight to a warm plugin: N pairs of `before_task` +
   `after_task` requests, each pair timed, over the same newline-delimited
   JSON-RPC the daemon's host uses; median and p99 per pair, for the
   Python, Node.js and Go SDKs (no-op plugins in benches/plugins/). The
   driver is Python, so its own cost (~10-20 us a round trip) is included.

B. End to end through taskrushd: `taskrush all` over N no-op tasks run one
   after another, (1) with no hooks, (2) with each no-op plugin hooking
   every task, (3) with the RFC's alternative: shell `before:`/`after:`
   hooks running a Python script. Per-task overhead = (variant - plain)/N.

Usage: benches/plugin_overhead.py [--pairs 2000] [--tasks 300] [--runs 5]
Needs target/release/taskrush{,d} (benches/run.sh builds them) and the Go
no-op plugin built (benches/run.sh does: go build in benches/plugins/noop-go).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PLUGINS = {
    "python": os.path.join(HERE, "plugins", "noop-py"),
    "node": os.path.join(HERE, "plugins", "noop-node"),
    "go": os.path.join(HERE, "plugins", "noop-go"),
}
ENTRY = {"python": ["python3", "-I", "main.py"], "node": ["node", "main.cjs"], "go": ["./noop-go"]}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def round_trips(lang, pairs):
    p = subprocess.Popen(ENTRY[lang], cwd=PLUGINS[lang], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    n = [0]

    def call(method, params):
        n[0] += 1
        msg = {"jsonrpc": "2.0", "id": n[0], "method": method, "params": params}
        p.stdin.write((json.dumps(msg) + "\n").encode())
        p.stdin.flush()
        line = p.stdout.readline()
        answer = json.loads(line)
        assert answer.get("id") == n[0] and "error" not in answer, answer
        return answer

    call("initialize", {"protocol_versions": [1], "taskrush_version": "0.3.0",
                        "name": "noop", "config": {}, "project_root": "/tmp", "permissions": []})
    ctx = {"task_name": "t", "command": "true", "working_dir": "/tmp", "env_vars": {},
           "config": {}, "run_id": 1}
    result = {"status": "success", "exit_code": 0, "duration_ms": 1, "cached": False}
    times = []
    for i in range(pairs + 200):
        t0 = time.perf_counter_ns()
        call("before_task", {"context": ctx})
        call("after_task", {"context": ctx, "result": result})
        if i >= 200:  # warm-up
            times.append((time.perf_counter_ns() - t0) / 1000)
    call("shutdown", None)
    p.stdin.close()
    p.wait(timeout=10)
    return statistics.median(times), pct(times, 99), max(times)


def project(dirpath, tasks, plugin=None, shell_hooks=False):
    os.makedirs(dirpath, exist_ok=True)
    lines = []
    if plugin:
        lines += ["plugins:", f"  - name: {os.path.basename(PLUGINS[plugin])}", f"    path: {PLUGINS[plugin]}"]
    lines.append("tasks:")
    for i in range(tasks):
        lines.append(f"  t{i}:")
        lines.append("    cmd: 'true'")
        if shell_hooks:
            lines.append("    before: python3 hook.py")
            lines.append("    after: python3 hook.py")
    lines.append("  all:")
    lines.append("    deps: [" + ", ".join(f"t{i}" for i in range(tasks)) + "]")
    with open(os.path.join(dirpath, ".rush"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(dirpath, "hook.py"), "w") as f:
        f.write("import sys\n")


def timed_runs(taskrush, cwd, env, runs):
    subprocess.run([taskrush, "all"], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)  # warm
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([taskrush, "all"], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--taskrush", default=os.path.join(ROOT, "target", "release", "taskrush"))
    a = ap.parse_args()

    print(f"## A. before_task + after_task round trip to a warm plugin ({a.pairs} pairs)\n")
    print("| plugin SDK | median per pair | p99 per pair | max |")
    print("|---|---|---|---|")
    for lang in ("python", "node", "go"):
        med, p99, mx = round_trips(lang, a.pairs)
        print(f"| {lang} | {med:.0f} us | {p99:.0f} us | {mx:.0f} us |")

    print(f"\n## B. End to end: `taskrush all` over {a.tasks} no-op tasks, one at a time (median of {a.runs})\n")
    tmp = tempfile.mkdtemp(prefix="tr-plugin-bench-")
    env = dict(os.environ, TASKRUSH_SOCKET=os.path.join(tmp, "d.sock"))
    try:
        variants = [("no hooks", None, False)] + [(f"{l} plugin", l, False) for l in ("python", "node", "go")] \
            + [("shell before:/after: hooks (python3 script)", None, True)]
        base = None
        print("| variant | run | per task | added per task |")
        print("|---|---|---|---|")
        for i, (name, plugin, shell) in enumerate(variants):
            d = os.path.join(tmp, f"p{i}")
            project(d, a.tasks, plugin, shell)
            t = timed_runs(a.taskrush, d, env, a.runs)
            base = t if base is None else base
            added = "" if plugin is None and not shell else f"{(t - base) / a.tasks * 1000:.2f} ms"
            print(f"| {name} | {t * 1000:.0f} ms | {t / a.tasks * 1000:.2f} ms | {added} |")
    finally:
        subprocess.run([a.taskrush, "daemon", "stop"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
