#!/usr/bin/env python3
"""`taskrush --list --json` of a large project beside its peers: the
numbers of docs/performance.md, "Listing for scripts and editors".

Generates one project of N tasks (default 10,000; each with a command, a
description, and one dependency on the previous task) written three ways:
a `.rush`, a `Taskfile.yml` and a `justfile`. Then times, with hyperfine:

- `taskrush --list --json` against a warm daemon (the project loaded once
  before timing; each run is a client asking `list_tasks` and printing the
  answer), and `taskrush --list` (text, streamed) for comparison;
- `taskrush --list --json --no-daemon` (a private daemon that reads and
  parses the file, for CI);
- `task --list-all --json` (Task reads and parses the Taskfile each time;
  `--list` only shows tasks with a description, all of ours have one);
- `just --dump --dump-format json` (just parses the justfile each time);
- `taskrush --list --json` of the same tasks split into K included files
  (`--includes K`, default 100: a root with `includes:` and K packages of
  N/K tasks), warm: a project with includes reads every included file on
  each request.

Also prints each output's size. Peers are optional: a missing one is
reported and skipped (`pip install go-task-bin rust-just` installs both).

Usage: benches/list_json.py [--tasks 10000] [--runs 10]
       [--bin target/release]   (taskrush and taskrushd from there)
       [--task PATH] [--just PATH]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write_project(proj, n):
    with open(os.path.join(proj, ".rush"), "w") as f:
        f.write("tasks:\n")
        for i in range(n):
            f.write(f"  t{i}:\n    cmd: echo {i}\n    description: task number {i}\n")
            if i:
                f.write(f"    depends_on: [t{i - 1}]\n")
    with open(os.path.join(proj, "Taskfile.yml"), "w") as f:
        f.write("version: '3'\ntasks:\n")
        for i in range(n):
            f.write(f"  t{i}:\n    desc: task number {i}\n    cmds: [echo {i}]\n")
            if i:
                f.write(f"    deps: [t{i - 1}]\n")
    with open(os.path.join(proj, "justfile"), "w") as f:
        for i in range(n):
            f.write(f"# task number {i}\nt{i}:{' t' + str(i - 1) if i else ''}\n    echo {i}\n\n")


def write_includes(proj, n, k):
    per = max(1, n // k)
    with open(os.path.join(proj, ".rush"), "w") as f:
        f.write("includes:\n")
        for p in range(k):
            f.write(f"  p{p}: pkgs/p{p}\n")
        f.write("tasks: {}\n")
    for p in range(k):
        d = os.path.join(proj, "pkgs", f"p{p}")
        os.makedirs(d)
        with open(os.path.join(d, ".rush"), "w") as f:
            f.write("tasks:\n")
            for i in range(per):
                f.write(f"  t{i}:\n    cmd: echo {i}\n    description: task number {i}\n")
                if i:
                    f.write(f"    depends_on: [t{i - 1}]\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--includes", type=int, default=100)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--task", default=shutil.which("task"))
    ap.add_argument("--just", default=shutil.which("just"))
    a = ap.parse_args()
    if not shutil.which("hyperfine"):
        sys.exit("hyperfine is needed (apt-get install hyperfine)")
    tmp = tempfile.mkdtemp(prefix="tr-list-")
    proj = os.path.join(tmp, "proj")
    os.makedirs(proj)
    write_project(proj, a.tasks)
    inc = os.path.join(tmp, "inc")
    os.makedirs(inc)
    write_includes(inc, a.tasks, a.includes)
    env = dict(os.environ, TASKRUSH_SOCKET=os.path.join(tmp, "run", "d.sock"))
    a.bin = os.path.abspath(a.bin)
    tr = os.path.join(a.bin, "taskrush")
    env["PATH"] = a.bin + ":" + env["PATH"]

    def out_size(cmd):
        r = subprocess.run(cmd, shell=True, cwd=proj, env=env, capture_output=True)
        if r.returncode != 0:
            print(f"`{cmd}` failed: {r.stderr.decode()[:300]}", file=sys.stderr)
            return None
        return len(r.stdout)

    cmds = [
        ("taskrush --list --json (warm daemon)", f"{tr} --list --json"),
        ("taskrush --list (warm daemon)", f"{tr} --list"),
        ("taskrush --list --json --no-daemon", f"{tr} --list --json --no-daemon"),
    ]
    if a.task:
        cmds.append(("task --list-all --json", f"{a.task} --list-all --json"))
    else:
        print("Task not found: skipped (pip install go-task-bin)")
    if a.just:
        cmds.append(("just --dump --dump-format json", f"{a.just} --dump --dump-format json"))
    else:
        print("just not found: skipped (pip install rust-just)")
    cmds.append((f"taskrush --list --json, {a.includes} included files (warm daemon)",
                 f"{tr} -f {inc}/.rush --list --json"))
    # Warm the daemon: start it and load the projects.
    subprocess.run(f"{tr} --list >/dev/null", shell=True, cwd=proj, env=env, check=True)
    subprocess.run(f"{tr} --list >/dev/null", shell=True, cwd=inc, env=env, check=True)
    for name, cmd in cmds:
        print(f"{name}: output {out_size(cmd)} bytes")
    args = ["hyperfine", "-N", "--warmup", "2", "--runs", str(a.runs),
            "--export-markdown", os.path.join(tmp, "list.md")]
    for name, cmd in cmds:
        args += ["-n", name, cmd]
    subprocess.run(args, cwd=proj, env=env, check=True)
    print(open(os.path.join(tmp, "list.md")).read())
    subprocess.run(f"{tr} daemon stop", shell=True, cwd=proj, env=env)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
