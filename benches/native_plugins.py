#!/usr/bin/env python3
"""What a native plugin costs beside the other kinds (issue 14).

A. Hook round trip per task: N runs of `taskrush t` (one no-op task) in a
   project with (1) no plugin, then the same Rust plugin
   (plugins-external/examples/build-metrics-native: an `after_task` hook
   that records the duration) as (2) a native plugin loaded in the daemon
   (`[native] mode = "in-daemon"`), (3) a native plugin in its host
   process (the default), (4) a WebAssembly plugin (the crate built for
   wasm32-wasip1), (5) an external process (the crate's binary), and
   (6) shell `before:`/`after:` hooks running a Python script. Each run is
   timed from the client (CLI start and the socket are in every figure);
   median and p99 per variant, and the added median.

B. The native call alone: `taskrush_native_call` of the release cdylib
   with an `after_task` message, called through ctypes (what the daemon's
   dedicated thread does, without the thread hop), 20,000 times: median
   and p99 per call (ctypes' own cost included).

Usage: benches/native_plugins.py [--tasks 1000] [--parts AB]
Needs `cargo build --release -p taskrush-daemon -p taskrush-cli
-p build-metrics-native` and scripts/build-wasm-examples.
"""
import argparse
import ctypes
import os
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
LIB = os.path.join(BIN, "libbuild_metrics.so")
EXE = os.path.join(BIN, "build-metrics")
WASM = os.path.join(ROOT, "plugins-external", "examples", "build-metrics-native", "build-metrics.wasm")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Env:
    def __init__(self, tmp, user_config=""):
        self.tmp = tmp
        self.env = dict(os.environ)
        home = os.path.join(tmp, "home")
        os.makedirs(os.path.join(home, "config", "taskrush"), exist_ok=True)
        with open(os.path.join(home, "config", "taskrush", "config.toml"), "w") as f:
            f.write(user_config)
        self.env.update({
            "TASKRUSH_SOCKET": os.path.join(tmp, "run", "taskrushd.sock"),
            "XDG_STATE_HOME": os.path.join(home, "state"),
            "XDG_CACHE_HOME": os.path.join(home, "cache"),
            "XDG_CONFIG_HOME": os.path.join(home, "config"),
            "NO_COLOR": "1",
        })
        self.env.pop("TASKRUSH_LOG", None)

    def run(self, cwd, *args, check=True):
        return subprocess.run([T, *args], cwd=cwd, env=self.env, check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self, cwd):
        self.run(cwd, "daemon", "stop", check=False)


def plugin_dir(d, kind):
    os.makedirs(d, exist_ok=True)
    if kind == "native":
        shutil.copy(LIB, os.path.join(d, "libbuild_metrics.so"))
        extra, entry = 'type = "native"\n', '["libbuild_metrics.so"]'
    elif kind == "wasm":
        shutil.copy(WASM, os.path.join(d, "build-metrics.wasm"))
        extra, entry = 'type = "wasm"\n', '["build-metrics.wasm"]'
    else:
        extra, entry = "", f'["{EXE}"]'
    with open(os.path.join(d, "plugin.toml"), "w") as f:
        f.write(f'name = "build-metrics"\nversion = "1.0.0"\ntaskrush_version = ">=0.3"\n{extra}entry_point = {entry}\n')
    return d


def project(d, plugin=None, shell_hooks=False):
    os.makedirs(d, exist_ok=True)
    lines = []
    if plugin:
        kind, path = plugin
        lines += ["plugins:", f"  - {{name: build-metrics, type: {kind}, path: {path}, required: true}}"]
    lines += ["tasks:", "  t:", "    cmd: 'true'"]
    if shell_hooks:
        lines += ["    before: python3 hook.py", "    after: python3 hook.py"]
    with open(os.path.join(d, ".rush"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "hook.py"), "w") as f:
        f.write("import sys\n")


def part_a(tmp, n):
    in_daemon = "[native]\nallow = true\nmode = \"in-daemon\"\n"
    process = "[native]\nallow = true\n"
    variants = [
        ("no hooks", "", None, False),
        ("native, in the daemon (`after_task`)", in_daemon, "native", False),
        ("native, in its host process (`after_task`)", process, "native", False),
        ("WebAssembly (`after_task`)", "", "wasm", False),
        ("external process, the crate's binary (`after_task`)", "", "external", False),
        ("shell `before:`/`after:` running a Python script", "", None, True),
    ]
    rows = []
    base = None
    for i, (label, config, kind, shell) in enumerate(variants):
        e = Env(os.path.join(tmp, f"a{i}"), config)
        d = os.path.join(e.tmp, "p")
        plugin = (kind, plugin_dir(os.path.join(e.tmp, "plugin"), kind)) if kind else None
        project(d, plugin, shell)
        runs = n if not shell else max(100, n // 10)
        for _ in range(20):  # warm: daemon, project, plugin
            e.run(d, "t")
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            e.run(d, "t")
            times.append((time.perf_counter() - t0) * 1000)
        if kind:
            # The plugin saw the tasks: its summary counts them.
            out = e.run(d, "build-metrics").stdout
            assert out.startswith(f"build metrics: {runs + 20} tasks"), out
        e.stop(d)
        med, p99 = statistics.median(times), pct(times, 99)
        if base is None:
            base = med
        rows.append((label, runs, med, p99, med - base))
    print("| variant | runs | median per task | p99 per task | added (median) |")
    print("|---|---|---|---|---|")
    for label, runs, med, p99, added in rows:
        add = "" if added == 0 else f"{added:+.2f} ms"
        print(f"| {label} | {runs} | {med:.2f} ms | {p99:.2f} ms | {add} |")


def part_b(calls=20000):
    lib = ctypes.CDLL(LIB)
    assert lib.taskrush_native_abi_version() == 1
    host_fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                               ctypes.c_void_p, ctypes.c_void_p)
    call = lib.taskrush_native_call
    call.restype = ctypes.c_int32
    call.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                     ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
    free = lib.taskrush_native_free
    free.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    no_host = host_fn(lambda *a: 1)
    no_host_ptr = ctypes.cast(no_host, ctypes.c_void_p)
    out, out_len = ctypes.c_void_p(), ctypes.c_size_t()

    def one(msg):
        rc = call(msg, len(msg), None, no_host_ptr, ctypes.byref(out), ctypes.byref(out_len))
        assert rc == 0
        if out.value:
            free(out, out_len)

    one(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocol_versions":[1],'
        b'"taskrush_version":"0.3.0","name":"build-metrics","config":{},"project_root":"/p","permissions":[]}}')
    msg = (b'{"jsonrpc":"2.0","id":2,"method":"after_task","params":{"context":{"task_name":"t",'
           b'"command":"true","working_dir":"/p","env_vars":{},"config":{},"run_id":1},'
           b'"result":{"status":"success","exit_code":0,"duration_ms":3,"cached":false}}}')
    for _ in range(1000):
        one(msg)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        one(msg)
        times.append((time.perf_counter_ns() - t0) / 1000)
    print("| call | calls | median | p99 |")
    print("|---|---|---|---|")
    print(f"| `taskrush_native_call(after_task)` through ctypes | {calls} | "
          f"{statistics.median(times):.1f} µs | {pct(times, 99):.1f} µs |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--parts", default="AB")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="trnative-")
    try:
        print(f"date: {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; {os.cpu_count()} cores; "
              f"load average {os.getloadavg()[0]:.1f}; "
              f"taskrush: {subprocess.run([T, '--version'], capture_output=True, text=True).stdout.strip()}")
        if "A" in a.parts:
            print("\nA. hook round trip per task")
            part_a(tmp, a.tasks)
        if "B" in a.parts:
            print("\nB. the native call alone")
            part_b()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
