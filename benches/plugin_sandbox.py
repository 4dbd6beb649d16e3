#!/usr/bin/env python3
"""What the plugin sandbox costs a plugin start (issue 12).

For the Python and Node.js no-op plugins (benches/plugins/), time from
spawn to the `initialize` answer, N starts each, (1) plain, as the daemon
started plugins before (the real interpreter, empty environment), and (2)
through `taskrushd --sandbox-exec SPEC -- …` with the rules the daemon
builds for such a plugin (runtime read-only, plugin dir, interpreter
prefix, execute only the interpreter and the ELF loader, no network).
Median and p99 in ms. Hooks of a warm plugin are not affected: the sandbox
is applied once, before exec.

Usage: benches/plugin_sandbox.py [--runs 20] [--daemon target/debug/taskrushd]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# As plugin/enforce.rs grants them.
RUNTIME = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/opt", "/etc/ld.so.cache",
           "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/passwd", "/etc/group",
           "/etc/nsswitch.conf", "/etc/hosts", "/etc/resolv.conf", "/etc/host.conf", "/etc/gai.conf",
           "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/gitconfig", "/etc/mime.types",
           "/dev/urandom", "/dev/random", "/dev/zero", "/proc/self",
           "/sys/kernel/mm/transparent_hugepage"]


def python_real():
    out = subprocess.run(["python3", "-c", "import sys,os;print(os.path.realpath(sys.executable));print(sys.prefix)"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return out[0], out[1]


def start_once(argv, cwd, env):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocol_versions": [1], "taskrush_version": "0.3.0", "name": "noop",
        "config": {}, "project_root": cwd}}
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write(json.dumps(init) + "\n")
    p.stdin.flush()
    line = p.stdout.readline()
    dt = (time.perf_counter() - t0) * 1000
    p.stdin.close()
    p.kill()
    p.wait()
    if '"result"' not in line:
        sys.exit("no handshake from %s: %r %s" % (argv, line, p.stderr.read()))
    p.stderr.close()
    p.stdout.close()
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--daemon", default=os.path.join(ROOT, "target", "debug", "taskrushd"))
    args = ap.parse_args()
    py, prefix = python_real()
    node = os.path.realpath(subprocess.run(["sh", "-c", "command -v node"], capture_output=True,
                                           text=True).stdout.strip())
    loader = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
    tmp = tempfile.mkdtemp(prefix="sandbox-bench-")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, "TMPDIR": tmp}
    cases = [
        ("Python", [py, "-I", "main.py"], os.path.join(HERE, "plugins", "noop-py"), [py],
         [prefix, os.path.join(ROOT, "plugins-external", "python")]),
        ("Node.js", [node, "main.cjs"], os.path.join(HERE, "plugins", "noop-node"), [node],
         [os.path.join(ROOT, "plugins-external", "node")]),
    ]
    # Before the sandbox the daemon ran `python3` from PATH: a pyenv shim here.
    shim = [start_once(["python3", "-I", "main.py"], os.path.join(HERE, "plugins", "noop-py"), env)
            for _ in range(args.runs)]
    print("Python through the `python3` on PATH (%s): median %.1f ms" % (
        subprocess.run(["sh", "-c", "command -v python3"], capture_output=True, text=True).stdout.strip(),
        statistics.median(shim)))
    print("| plugin | plain median | plain p99 | sandboxed median | sandboxed p99 | added (median) |")
    print("|---|---|---|---|---|---|")
    for name, argv, cwd, exe, extra in cases:
        spec = {"read": RUNTIME + [cwd] + extra, "write": ["/dev/null", tmp], "exec": exe + [loader],
                "network": False, "landlock": True, "parent": os.getpid(), "fd_limit": None}
        boxed = [args.daemon, "--sandbox-exec", json.dumps(spec), "--"] + argv
        plain, sandboxed = [], []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            plain.append(start_once(argv, cwd, env))
            sandboxed.append(start_once(boxed, cwd, env))

        def p99(xs):
            return sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.99))]
        pm, sm = statistics.median(plain), statistics.median(sandboxed)
        print("| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %+.1f ms |" % (
            name, pm, p99(plain), sm, p99(sandboxed), sm - pm))


if __name__ == "__main__":
    main()
