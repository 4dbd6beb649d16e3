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

C. W2 with four warm plugins: the chain of 100 no-op tasks (`taskrush t99`),
   without plugins and with four no-op plugins hooking every task (two
   Python, one Node.js, one Go), declared in that order.

Usage: benches/plugin_overhead.py [--pairs 2000] [--tasks 300] [--runs 5] [--parts ABC]
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


def chain_project(dirpath, tasks, plugins):
    """W2's chain t0 <- t1 <- ... with `plugins` [(name, dir)] hooking every task."""
    os.makedirs(dirpath, exist_ok=True)
    lines = []
    if plugins:
        lines.append("plugins:")
        for name, path in plugins:
            lines += [f"  - name: {name}", f"    path: {path}"]
    lines.append("tasks:")
    for i in range(tasks):
        lines += [f"  t{i}:", "    cmd: 'true'"]
        if i:
            lines.append(f"    deps: [t{i - 1}]")
    with open(os.path.join(dirpath, ".rush"), "w") as f:
        f.write("\n".join(lines) + "\n")


def second_python_plugin(tmp):
    """A copy of the Python no-op plugin under another name."""
    d = os.path.join(tmp, "noop-py2")
    shutil.copytree(PLUGINS["python"], d)
    toml = os.path.join(d, "plugin.toml")
    with open(toml) as f:
        text = f.read().replace('name = "noop-py"', 'name = "noop-py2"')
    with open(toml, "w") as f:
        f.write(text)
    main = os.path.join(d, "main.py")
    with open(main) as f:
        text = f.read().replace('"..", "..", "..", "plugins-external"', repr(ROOT) + ', "plugins-external"')
        text = text.replace('Plugin("noop-py"', 'Plugin("noop-py2"')
    with open(main, "w") as f:
        f.write(text)
    return d


def timed_runs(taskrush, cwd, env, runs, target="all"):
    subprocess.run([taskrush, target], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)  # warm
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([taskrush, target], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--taskrush", default=os.path.join(ROOT, "target", "release", "taskrush"))
    ap.add_argument("--parts", default="ABC")
    a = ap.parse_args()
    if "A" in a.parts:
        part_a(a)
    if "B" in a.parts:
        part_b(a)
    if "C" in a.parts:
        part_c(a)


def part_c(a):
    print(f"\n## C. W2 (a chain of 100 no-op tasks) with four warm plugins (median of {max(a.runs, 10)})\n")
    tmp = tempfile.mkdtemp(prefix="tr-plugin-bench-")
    env = dict(os.environ, TASKRUSH_SOCKET=os.path.join(tmp, "d.sock"))
    try:
        four = [("noop-py", PLUGINS["python"]), ("noop-py2", second_python_plugin(tmp)),
                ("noop-node", PLUGINS["node"]), ("noop-go", PLUGINS["go"])]
        print("| variant | `taskrush t99` | per task | added per task |")
        print("|---|---|---|---|")
        base = None
        for i, (name, plugins) in enumerate([("no plugins", []), ("4 plugins (Python x2, Node.js, Go)", four)]):
            d = os.path.join(tmp, f"c{i}")
            chain_project(d, 100, plugins)
            t = timed_runs(a.taskrush, d, env, max(a.runs, 10), target="t99")
            base = t if base is None else base
            added = "" if not plugins else f"{(t - base) / 100 * 1000:.2f} ms"
            print(f"| {name} | {t * 1000:.1f} ms | {t / 100 * 1000:.2f} ms | {added} |")
    finally:
        subprocess.run([a.taskrush, "daemon", "stop"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


def part_a(a):
    print(f"## A. before_task + after_task round trip to a warm plugin ({a.pairs} pairs)\n")
    print("| plugin SDK | median per pair | p99 per pair | max |")
    print("|---|---|---|---|")
    for lang in ("python", "node", "go"):
        med, p99, mx = round_trips(lang, a.pairs)
        print(f"| {lang} | {med:.0f} us | {p99:.0f} us | {mx:.0f} us |")


def part_b(a):
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
