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

C. Hook round trip measured in the daemon (issue 14): the same plugin as
   (2)-(5) above, each kind in a daemon of its own, all warm; batches of
   one `taskrush` run of a chain of 100 no-op tasks (`t100` depends on
   `t099` ... on `t001`: one `after_task` at a time), the kinds interleaved
   batch by batch; after each batch the hook's latency histogram from
   `taskrush plugin stats --json` (timed around the call in the daemon:
   from handing the message to the plugin to its answer). Beside them,
   shell hooks: one task whose `after:` runs the equivalent check in `sh`
   (`sh -c 'echo t >> durations.log'`), against the same task without it,
   both from the daemon's task-duration histogram (`daemon stats --json`),
   100 runs per batch, interleaved with the rest.

Usage: benches/native_plugins.py [--tasks 1000] [--parts ABC]  (default: BC)
Needs `cargo build --release --workspace --bins` (C uses the release
cdylib, `target/release/libbuild_metrics.so`, and binary) and
scripts/build-wasm-examples.
"""
import argparse
import ctypes
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


CHAIN = 100


def chain_project(d, plugin):
    os.makedirs(d, exist_ok=True)
    kind, path = plugin
    lines = ["plugins:", f"  - {{name: build-metrics, type: {kind}, path: {path}, required: true}}", "tasks:"]
    for i in range(1, CHAIN + 1):
        lines += [f"  t{i:03}:", "    cmd: 'true'"]
        if i > 1:
            lines += [f"    depends_on: [t{i - 1:03}]"]
    with open(os.path.join(d, ".rush"), "w") as f:
        f.write("\n".join(lines) + "\n")


def shell_project(d, hook):
    os.makedirs(d, exist_ok=True)
    lines = ["tasks:", "  t:", "    cmd: 'true'"]
    if hook:
        lines += ["    after: sh -c 'echo t >> durations.log'"]
    with open(os.path.join(d, ".rush"), "w") as f:
        f.write("\n".join(lines) + "\n")


def lat_us(lat):
    n = lat["count"]
    return {"count": n, "mean": lat["sum_ms"] * 1000 / max(n, 1), "p50": lat["p50_ms"] * 1000,
            "p95": lat["p95_ms"] * 1000, "p99": lat["p99_ms"] * 1000, "max": lat["max_ms"] * 1000}


def hook_latency(e, d):
    stats = json.loads(e.run(d, "plugin", "stats", "--json").stdout)
    plugins = stats["plugins"] if isinstance(stats, dict) else stats
    p = next(p for p in plugins if p["name"] == "build-metrics")
    h = next(h for h in p["hooks"] if h["name"] == "after_task")
    return lat_us(h["latency"])


def task_latency(e, d):
    stats = json.loads(e.run(d, "daemon", "stats", "--json").stdout)
    tasks = stats["tasks"] if isinstance(stats, dict) else stats
    t = next(t for t in tasks if t["task"] == "t" and t["root"] == d)
    return lat_us(t["duration"])


def part_c(tmp, n):
    in_daemon = "[native]\nallow = true\nmode = \"in-daemon\"\n"
    process = "[native]\nallow = true\n"
    kinds = [
        ("native, in the daemon", in_daemon, "native"),
        ("native, in its host process", process, "native"),
        ("WebAssembly", "", "wasm"),
        ("external process (the crate's binary)", "", "external"),
    ]
    batches = max(1, n // CHAIN)
    envs = []
    for i, (label, config, kind) in enumerate(kinds):
        e = Env(os.path.join(tmp, f"c{i}"), config)
        d = os.path.realpath(os.path.join(e.tmp, "p"))
        chain_project(d, (kind, plugin_dir(os.path.join(e.tmp, "plugin"), kind)))
        for _ in range(3):  # warm: daemon, project, plugin (3 hook calls)
            e.run(d, "t001")
        envs.append(("plugin", label, e, d, hook_latency(e, d)["count"]))
    for i, hook in enumerate([False, True]):
        e = Env(os.path.join(tmp, f"s{i}"))
        d = os.path.realpath(os.path.join(e.tmp, "p"))
        shell_project(d, hook)
        for _ in range(20):
            e.run(d, "t")
        label = "shell `after:` running `sh -c` (task duration)" if hook else "no hook (task duration)"
        envs.append(("task", label, e, d, task_latency(e, d)["count"]))
    reads = {label: [] for _, label, _, _, _ in envs}
    loads = []
    for b in range(batches):
        for what, label, e, d, _ in envs:
            if what == "plugin":
                e.run(d, f"t{CHAIN:03}")
                reads[label].append(hook_latency(e, d))
            else:
                for _ in range(CHAIN):
                    e.run(d, "t")
                reads[label].append(task_latency(e, d))
        loads.append(os.getloadavg()[0])
    # The warm-up's calls are in the histogram too: state how many.
    print(f"load average during C: {min(loads):.1f} to {max(loads):.1f}")
    print("| kind | calls (warm-up incl.) | p50 | p95 | p99 | max | mean | p50 after each batch |")
    print("|---|---|---|---|---|---|---|---|")
    for what, label, e, d, warm in envs:
        r = reads[label][-1]
        series = " ".join(f"{x['p50']:.0f}" for x in reads[label])
        print(f"| {label} | {r['count']} ({warm}) | {r['p50']:.0f} µs | {r['p95']:.0f} µs | {r['p99']:.0f} µs "
              f"| {r['max']:.0f} µs | {r['mean']:.1f} µs | {series} |")
        if what == "plugin":
            out = e.run(d, "build-metrics").stdout
            assert out.startswith(f"build metrics: {CHAIN} tasks"), out
        e.stop(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--parts", default="BC")
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
        if "C" in a.parts:
            print("\nC. hook round trip measured in the daemon")
            part_c(tmp, a.tasks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
