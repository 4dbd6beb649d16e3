#!/usr/bin/env python3
"""Restoring outputs: the numbers of docs/performance.md, "Restoring outputs".

A task writes 1,000 files of 100 KiB (100 MB in all, incompressible:
seeded pseudo-random bytes) under `dist/`. Timed, median of --runs each:

  taskrush restore   `rm -rf dist` then `taskrush build`: a hit, every
                     output copied back from the per-user store
  taskrush hit       `taskrush build` with the outputs in place (each
                     compared with the manifest: size, mode, SHA-256)
  taskrush re-run    `taskrush --force build`: the task writes them again
  turbo restore      `rm -rf dist` then `turbo run build` (local cache)
  nx restore         `rm -rf dist` then `nx run bench:build` (local cache)

turbo and nx are timed when --peers points at a directory where
`npm i turbo nx` was done (skipped with a note otherwise). turbo is timed
through its native binary, nx through its CLI (node).

Usage: benches/outputs_restore.py [--runs 5] [--bin target/release]
       [--peers /tmp/peers]
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

GEN = """import os, random
os.makedirs("dist", exist_ok=True)
for i in range(1000):
    d = "dist/%02d" % (i % 20)
    os.makedirs(d, exist_ok=True)
    with open("%s/f%04d.bin" % (d, i), "wb") as f:
        f.write(random.Random(i).randbytes(100 * 1024))
print("wrote 1000 files")
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def count_files(d):
    return sum(len(files) for _, _, files in os.walk(os.path.join(d, "dist")))


def timed(cmd, cwd, env, before=None, runs=5):
    times = []
    for _ in range(runs):
        if before:
            before()
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            sys.exit(f"{cmd} failed: {r.stderr.decode()[-2000:]}")
        if count_files(cwd) != 1000:
            sys.exit(f"{cmd}: {count_files(cwd)} files in dist, not 1000")
    return statistics.median(times), min(times), max(times)


def git_init(d):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@l",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@l")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "w", "--no-gpg-sign"]):
        subprocess.run(["git", "-C", d, *args], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--peers", default=None)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tr-outputs-")
    rows = []
    try:
        # TaskRush
        proj = os.path.join(tmp, "rush")
        write(os.path.join(proj, "gen.py"), GEN)
        write(os.path.join(proj, ".rush"),
              "tasks:\n  build:\n    cmd: python3 gen.py\n    cache_files: [gen.py]\n"
              "    outputs: [\"dist/**\"]\n")
        env = dict(os.environ, TASKRUSH_SOCKET=os.path.join(tmp, "run", "d.sock"),
                   XDG_CACHE_HOME=os.path.join(tmp, "cache"))
        tr = os.path.join(os.path.abspath(a.bin), "taskrush")
        rm = lambda: shutil.rmtree(os.path.join(proj, "dist"), ignore_errors=True)
        subprocess.run([tr, "build"], cwd=proj, env=env, check=True, stdout=subprocess.DEVNULL)
        rows.append(("taskrush: restore 1,000 files (outputs deleted)",
                     timed([tr, "build"], proj, env, rm, a.runs)))
        rows.append(("taskrush: hit, outputs in place (verified)",
                     timed([tr, "build"], proj, env, None, a.runs)))
        rows.append(("taskrush: re-run the task (--force)",
                     timed([tr, "--force", "build"], proj, env, rm, a.runs)))
        rows.append(("the task alone (python3 gen.py)",
                     timed(["python3", "gen.py"], proj, env, rm, a.runs)))
        subprocess.run([tr, "daemon", "stop"], env=env, stdout=subprocess.DEVNULL)

        peers = a.peers
        if peers and os.path.isdir(os.path.join(peers, "node_modules")):
            nm = os.path.join(peers, "node_modules")
            penv = dict(os.environ, TURBO_TELEMETRY_DISABLED="1", DO_NOT_TRACK="1",
                        NX_NO_CLOUD="true", NX_TUI="false", CI="1")
            npm = subprocess.run(["npm", "--version"], capture_output=True, text=True
                                 ).stdout.strip() or "10.0.0"
            # turbo
            turbo_bin = None
            for root, _, files in os.walk(os.path.join(nm, "@turbo")):
                if "turbo" in files:
                    turbo_bin = os.path.join(root, "turbo")
            if turbo_bin:
                d = os.path.join(tmp, "turbo")
                write(os.path.join(d, "gen.py"), GEN)
                write(os.path.join(d, "package.json"), json.dumps(
                    {"name": "bench", "version": "0.0.0", "private": True,
                     "packageManager": "npm@" + npm,
                     "scripts": {"build": "python3 gen.py"}}))
                write(os.path.join(d, "turbo.json"), json.dumps(
                    {"tasks": {"build": {"inputs": ["gen.py"], "outputs": ["dist/**"]}}}))
                write(os.path.join(d, ".gitignore"), "dist/\n.turbo/\nnode_modules/\n")
                git_init(d)
                cmd = [turbo_bin, "run", "build"]
                subprocess.run(cmd, cwd=d, env=penv, check=True, stdout=subprocess.DEVNULL)
                rmt = lambda: shutil.rmtree(os.path.join(d, "dist"), ignore_errors=True)
                rows.append((f"turbo {subprocess.run([turbo_bin, '--version'], capture_output=True, text=True).stdout.strip()}: restore (outputs deleted)",
                             timed(cmd, d, penv, rmt, a.runs)))
                rows.append(("turbo: re-run the task (--force)",
                             timed(cmd + ["--force"], d, penv, rmt, a.runs)))
            nx = os.path.join(nm, ".bin", "nx")
            if os.path.exists(nx):
                d = os.path.join(tmp, "nx")
                write(os.path.join(d, "gen.py"), GEN)
                write(os.path.join(d, "package.json"), json.dumps(
                    {"name": "bench", "version": "0.0.0", "private": True,
                     "scripts": {"build": "python3 gen.py"},
                     "nx": {"targets": {"build": {"cache": True,
                                                  "inputs": ["{projectRoot}/gen.py"],
                                                  "outputs": ["{projectRoot}/dist"]}}}}))
                write(os.path.join(d, "nx.json"), json.dumps({}))
                write(os.path.join(d, ".gitignore"), "dist/\n.nx/\nnode_modules/\n")
                os.symlink(nm, os.path.join(d, "node_modules"))
                git_init(d)
                cmd = [nx, "run", "bench:build"]
                subprocess.run(cmd, cwd=d, env=penv, check=True, stdout=subprocess.DEVNULL)
                rmn = lambda: shutil.rmtree(os.path.join(d, "dist"), ignore_errors=True)
                rows.append(("nx: restore (outputs deleted)", timed(cmd, d, penv, rmn, a.runs)))
                rows.append(("nx: re-run the task (--skip-nx-cache)",
                             timed(cmd + ["--skip-nx-cache"], d, penv, rmn, a.runs)))
                subprocess.run([nx, "daemon", "--stop"], cwd=d, env=penv,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            print("turbo and nx: not timed (no --peers directory with `npm i turbo nx`)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"| what (1,000 files, 100 MB) | median | min | max |  ({a.runs} runs)")
    print("| --- | --- | --- | --- |")
    for name, (med, lo, hi) in rows:
        print(f"| {name} | {med * 1000:.0f} ms | {lo * 1000:.0f} ms | {hi * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
