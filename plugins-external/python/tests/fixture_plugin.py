"""A plugin the SDK tests drive as a real subprocess."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from taskrush_plugin import CommandResult, Plugin, Veto  # noqa: E402

plugin = Plugin("fixture", "0.1.0")


@plugin.on_initialize
def init(params):
    if params.config.get("fail_init"):
        raise RuntimeError("bad config: fail_init is set")


@plugin.before_task
def before(ctx):
    time.sleep(float(ctx.config.get("sleep", 0)))
    if ctx.config.get("veto"):
        raise Veto(f"task `{ctx.task_name}` is not allowed")
    if ctx.task_name == "boom":
        raise ValueError("boom")
    plugin.log("info", f"before {ctx.task_name} in {ctx.working_dir}")


@plugin.after_task
def after(ctx, result):
    time.sleep(float(ctx.config.get("sleep", 0)))
    plugin.progress("reporting", task=ctx.task_name, percent=50)
    plugin.log("debug", f"after {ctx.task_name}: {result.status} {result.exit_code} cached={result.cached}")


@plugin.command("echo", "Print the arguments")
def echo(args, cwd):
    return " ".join(args)


@plugin.command("fail", "Exit 3")
def fail(args, cwd):
    return CommandResult(3, stderr=f"failed in {cwd}\n")


@plugin.command
def noisy(args, cwd):
    """Write to stdout by mistake."""
    print("stray print")
    subprocess.run(["echo", "stray child"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(plugin.run())
