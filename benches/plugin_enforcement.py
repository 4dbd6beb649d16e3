#!/usr/bin/env python3
"""What enforcement (the plugin sandbox) costs a plugin start and a warm
hook (issue 12). The claim checked: the sandbox is paid once, at spawn; a
warm hook is not slower.

A. Direct, no daemon: the Python and Node.js no-op plugins
   (benches/plugins/) started (1) plain and (2) through
   `taskrushd --sandbox-exec SPEC -- …` with the rules the daemon builds
   (Landlock, seccomp, capabilities dropped, RLIMIT_NOFILE 1024), then
   N `before_task` + `after_task` pairs to the warm process, each pair
   timed. Median and p99 per pair, both variants interleaved in blocks.

B. Through the daemon: a private `taskrushd` (1) as shipped and (2) with
   the benchmark switch `TASKRUSH_SANDBOX_OFF=1` (no sandbox helper at all).
   Plugin start = spawn to `initialize` answered, as the daemon logs it
   (`start_ms` of the plugin's `ready` line) over K `plugin restart`s.
   Warm hook = (`taskrush all` over T no-op tasks with the plugin hooking
   every task - the same without plugin) / T, over R runs.

Usage: benches/plugin_enforcement.py [--pairs 2000] [--starts 20] [--tasks 200] [--runs 7]
       [--bin target/release]   (needs taskrush and taskrushd there)
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from plugin_sandbox import RUNTIME, python_real  # noqa: E402  (the same rules)

INIT = {"protocol_versions": [1], "taskrush_version": "0.3.0", "name": "noop",
        "config": {}, "project_root": "/tmp", "permissions": []}
CTX = {"task_name": "t", "command": "true", "working_dir": "/tmp", "env_vars": {},
       "config": {}, "run_id": 1}
RESULT = {"status": "success", "exit_code": 0, "duration_ms": 1, "cached": False}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Plugin:
    def __init__(self, argv, cwd, env):
        self.p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.n = 0
        self.call("initialize", INIT)

    def call(self, method, params):
        self.n += 1
        msg = {"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()
        answer = json.loads(self.p.stdout.readline())
        assert answer.get("id") == self.n and "error" not in answer, answer
        return answer

    def pair(self):
        t0 = time.perf_counter_ns()
        self.call("before_task", {"context": CTX})
        self.call("after_task", {"context": CTX, "result": RESULT})
        return (time.perf_counter_ns() - t0) / 1000

    def close(self):
        self.call("shutdown", None)
        self.p.stdin.close()
        self.p.wait(timeout=10)


def part_a(a, daemon):
    py, prefix = python_real()
    node = os.path.realpath(shutil.which("node") or "node")
    loader = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
    tmp = tempfile.mkdtemp(prefix="enforcement-bench-")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, "TMPDIR": tmp}
    cases = [
        ("Python", [py, "-I", "main.py"], os.path.join(HERE, "plugins", "noop-py"), [py],
         [prefix, os.path.join(ROOT, "plugins-external", "python")]),
        ("Node.js", [node, "main.cjs"], os.path.join(HERE, "plugins", "noop-node"), [node],
         [os.path.join(ROOT, "plugins-external", "node")]),
    ]
    print(f"## A. Warm round trip (before_task + after_task), direct, {a.pairs} pairs each\n")
    print("| plugin | plain median | plain p99 | sandboxed median | sandboxed p99 |")
    print("|---|---|---|---|---|")
    for name, argv, cwd, exe, extra in cases:
        spec = {"read": RUNTIME + [cwd] + extra, "write": ["/dev/null", tmp], "exec": exe + [loader],
                "network": False, "landlock": True, "parent": os.getpid(), "fd_limit": None,
                "open_files": 1024}
        boxed = [daemon, "--sandbox-exec", json.dumps(spec), "--"] + argv
        plain, sandboxed = Plugin(argv, cwd, env), Plugin(boxed, cwd, env)
        times = {"plain": [], "sandboxed": []}
        for _ in range(200):  # warm-up
            plain.pair()
            sandboxed.pair()
        block = 100
        for _ in range(a.pairs // block):  # interleaved blocks: drift hits both alike
            times["plain"] += [plain.pair() for _ in range(block)]
            times["sandboxed"] += [sandboxed.pair() for _ in range(block)]
        plain.close()
        sandboxed.close()
        p, s = times["plain"], times["sandboxed"]
        print(f"| {name} | {statistics.median(p):.0f} us | {pct(p, 99):.0f} us | "
              f"{statistics.median(s):.0f} us | {pct(s, 99):.0f} us |")
    shutil.rmtree(tmp, ignore_errors=True)


def project(d, tasks, plugin):
    os.makedirs(d, exist_ok=True)
    lines = []
    if plugin:
        lines += ["plugins:", "  - name: noop-py", f"    path: {os.path.join(HERE, 'plugins', 'noop-py')}"]
    lines.append("tasks:")
    for i in range(tasks):
        lines += [f"  t{i}:", "    cmd: 'true'"]
    lines += ["  all:", "    deps: [" + ", ".join(f"t{i}" for i in range(tasks)) + "]"]
    with open(os.path.join(d, ".rush"), "w") as f:
        f.write("\n".join(lines) + "\n")


def part_b(a, taskrush):
    print(f"\n## B. Through the daemon: Python no-op plugin, {a.starts} starts, "
          f"`taskrush all` over {a.tasks} tasks x {a.runs} runs\n")
    print("| daemon | start median | start p99 | warm hooks per task, median | max of runs |")
    print("|---|---|---|---|---|")
    for label, extra in (("sandbox (as shipped)", {}), ("`TASKRUSH_SANDBOX_OFF=1`", {"TASKRUSH_SANDBOX_OFF": "1"})):
        tmp = tempfile.mkdtemp(prefix="enforcement-daemon-")
        env = dict(os.environ, TASKRUSH_SOCKET=os.path.join(tmp, "d.sock"), **extra)
        env.pop("TASKRUSH_LOG", None)
        run = lambda args, cwd: subprocess.run([taskrush] + args, cwd=cwd, env=env, check=True,  # noqa: E731
                                               stdout=subprocess.PIPE, text=True).stdout
        try:
            with_p, without = os.path.join(tmp, "with"), os.path.join(tmp, "without")
            project(with_p, a.tasks, True)
            project(without, a.tasks, False)
            run(["t0"], with_p)  # daemon and plugin up
            levels = json.loads(run(["plugin", "info", "noop-py", "--json"], with_p))["enforcement"]
            assert (levels["filesystem"] == "enforced") == (not extra), levels
            for _ in range(a.starts):
                run(["plugin", "restart", "noop-py"], with_p)
            log = json.loads(run(["daemon", "status", "--json"], with_p))["log"]
            with open(log) as f:
                starts = [float(m) for m in re.findall(r"start_ms=([0-9.]+)", f.read())]
            starts = starts[1:]  # the first start also resolved the interpreter
            per_task = []
            for _ in range(a.runs):  # interleaved
                t0 = time.perf_counter()
                run(["all"], without)
                t1 = time.perf_counter()
                run(["all"], with_p)
                t2 = time.perf_counter()
                per_task.append(((t2 - t1) - (t1 - t0)) / a.tasks * 1000)
            print(f"| {label} | {statistics.median(starts):.1f} ms | {pct(starts, 99):.1f} ms | "
                  f"{statistics.median(per_task):.2f} ms | {max(per_task):.2f} ms |")
        finally:
            subprocess.run([taskrush, "daemon", "stop"], env=env, stdout=subprocess.DEVNULL)
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--parts", default="AB")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    print(f"date: {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.1f}; binaries: {a.bin}\n")
    if "A" in a.parts:
        part_a(a, os.path.join(a.bin, "taskrushd"))
    if "B" in a.parts:
        part_b(a, os.path.join(a.bin, "taskrush"))


if __name__ == "__main__":
    main()
