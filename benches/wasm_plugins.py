#!/usr/bin/env python3
"""What a WebAssembly plugin costs (issue 13).

A. Hook round trip per task: N runs of `taskrush t` (one no-op task) in a
   project with (1) no plugin, (2) the no-op WASM plugin (a WAT guest from
   tests/src/wasm_guest.rs), (3) the same plugin as an external Python
   process (benches/plugins/noop-py), (4) as a Go process (noop-go, when
   built), (5) shell `before:`/`after:` hooks running a Python script.
   Each run is timed from the client (so CLI start and the socket are in
   every figure); median and p99 per variant, and the added median.

B. Cold load of a module: a fresh daemon with an empty cache directory
   (compile) versus a restarted daemon whose cache directory holds the
   compiled module (load from disk), as the daemon logs it ("WebAssembly
   instance ready ... ms=").

C. Daemon RSS (VmRSS) after a run with no plugin, and with 4 WASM plugins
   loaded (4 distinct modules).

Usage: benches/wasm_plugins.py [--tasks 1000] [--module PATH.wasm] [--parts ABC]
Needs target/release/taskrush{,d} and target/release/wasm-guest
(`cargo build --release --bins`).
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
BIN = os.environ.get("TASKRUSH_BIN_DIR", os.path.join(ROOT, "target", "release"))
T = os.path.join(BIN, "taskrush")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        self.env = dict(os.environ)
        home = os.path.join(tmp, "home")
        os.makedirs(home, exist_ok=True)
        self.env.update({
            "TASKRUSH_SOCKET": os.path.join(tmp, "run", "taskrushd.sock"),
            "XDG_STATE_HOME": os.path.join(home, "state"),
            "XDG_CACHE_HOME": os.path.join(home, "cache"),
            "NO_COLOR": "1",
        })
        self.env.pop("TASKRUSH_LOG", None)

    def run(self, cwd, *args, check=True):
        return subprocess.run([T, *args], cwd=cwd, env=self.env, check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self, cwd):
        self.run(cwd, "daemon", "stop", check=False)

    def log(self):
        p = os.path.join(self.tmp, "run", "taskrushd.log")
        return open(p).read() if os.path.exists(p) else ""

    def pid(self, cwd):
        out = self.run(cwd, "daemon", "status", "--json").stdout
        return json.loads(out).get("pid")


def wasm_module(out, name, version):
    exe = os.path.join(BIN, "wasm-guest")
    if not os.path.exists(exe):
        exe = os.path.join(ROOT, "target", "debug", "wasm-guest")
    subprocess.run([exe, name, version, out], check=True)


def project(d, plugins=(), shell_hooks=False):
    os.makedirs(d, exist_ok=True)
    lines = []
    if plugins:
        lines.append("plugins:")
        for p in plugins:
            lines.append("  - " + p)
    lines += ["tasks:", "  t:", "    cmd: 'true'"]
    if shell_hooks:
        lines += ["    before: python3 hook.py", "    after: python3 hook.py"]
    with open(os.path.join(d, ".rush"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "hook.py"), "w") as f:
        f.write("import sys\n")


def part_a(tmp, n):
    e = Env(os.path.join(tmp, "a"))
    mod = os.path.join(tmp, "noop.wasm")
    wasm_module(mod, "noop-wasm", "1.0.0")
    variants = [("no hooks", [], False),
                ("WASM plugin (both hooks)", [f"{{name: noop-wasm, type: wasm, path: {mod}}}"], False),
                ("Python plugin (both hooks)", [f"{{name: noop-py, path: {HERE}/plugins/noop-py}}"], False)]
    if os.path.exists(os.path.join(HERE, "plugins", "noop-go", "noop-go")):
        variants.append(("Go plugin (both hooks)", [f"{{name: noop-go, path: {HERE}/plugins/noop-go}}"], False))
    variants.append(("shell `before:`/`after:` running a Python script", [], True))
    rows = []
    base = None
    for i, (label, plugins, shell) in enumerate(variants):
        d = os.path.join(tmp, "a", f"p{i}")
        project(d, plugins, shell)
        runs = n if not shell else max(100, n // 10)
        for _ in range(20):  # warm: daemon, project, plugin
            e.run(d, "t")
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            e.run(d, "t")
            times.append((time.perf_counter() - t0) * 1000)
        med, p99 = statistics.median(times), pct(times, 99)
        if base is None:
            base = med
        rows.append((label, runs, med, p99, med - base))
    e.stop(tmp)
    print("| variant | runs | median per task | p99 per task | added (median) |")
    print("|---|---|---|---|---|")
    for label, runs, med, p99, added in rows:
        add = "" if added == 0 else f"{added:.2f} ms"
        print(f"| {label} | {runs} | {med:.2f} ms | {p99:.2f} ms | {add} |")


def ready_ms(log, plugin):
    ms = [(m.group(1), int(m.group(2))) for m in re.finditer(
        r"WebAssembly instance ready plugin=" + re.escape(plugin) + r" sha256=\S+ module=(\w+) ms=(\d+)", log)]
    return ms


def part_b(tmp, module, reps=5):
    cold, warm = [], []
    for r in range(reps):
        e = Env(os.path.join(tmp, f"b{r}"))
        d = os.path.join(tmp, f"b{r}", "p")
        project(d, [f"{{name: m, type: wasm, path: {module}}}"])
        e.run(d, "t", check=False)
        e.stop(d)
        e.run(d, "t", check=False)
        e.stop(d)
        got = ready_ms(e.log(), "m")
        for src, ms in got:
            (cold if src == "Compiled" else warm).append(ms)
    size = os.path.getsize(module)
    print(f"module: `{os.path.basename(module)}`, {size / 1024:.0f} KiB; {reps} fresh daemons each")
    print("| load | median | max |")
    print("|---|---|---|")
    if cold:
        print(f"| compile (empty cache) | {statistics.median(cold)} ms | {max(cold)} ms |")
    if warm:
        print(f"| from the disk cache (daemon restarted) | {statistics.median(warm)} ms | {max(warm)} ms |")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def part_c(tmp, modules):
    out = []
    for label, plugins in [("no plugins", []), ("4 WASM plugins loaded", [
            f"{{name: w{i}, type: wasm, path: {m}}}" for i, m in enumerate(modules)])]:
        e = Env(os.path.join(tmp, "c-" + str(len(plugins))))
        d = os.path.join(e.tmp, "p")
        project(d, plugins)
        for _ in range(5):
            e.run(d, "t")
        pid = e.pid(d)
        out.append((label, rss_kib(pid)))
        e.stop(d)
    print("| daemon | VmRSS |")
    print("|---|---|")
    for label, kib in out:
        print(f"| {label} | {kib / 1024:.1f} MiB |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--module", help="a real module for B and C (default: the no-op guest)")
    ap.add_argument("--parts", default="ABC")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="trwasm-")
    try:
        print(f"date: {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; {os.cpu_count()} cores; "
              f"taskrush: {subprocess.run([T, '--version'], capture_output=True, text=True).stdout.strip()}")
        if "A" in a.parts:
            print("\nA. hook round trip per task")
            part_a(tmp, a.tasks)
        modules = []
        for i in range(4):
            m = os.path.join(tmp, f"m{i}.wasm")
            if a.module:
                # Distinct bytes (a custom section), so 4 distinct compiled modules.
                data = open(a.module, "rb").read()
                name = b"bench"
                body = bytes([len(name)]) + name + str(i).encode()
                data += bytes([0, len(body)]) + body
                open(m, "wb").write(data)
            else:
                wasm_module(m, f"w{i}", f"1.0.{i}")
            modules.append(m)
        if "B" in a.parts:
            print("\nB. cold load of a module")
            part_b(tmp, modules[0])
        if "C" in a.parts:
            print("\nC. daemon memory")
            part_c(tmp, modules)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
