"""@NAME@: a TaskRush plugin (see README.md)."""

import os
import sys

# `python3 -I` (the entry point) looks neither in site-packages nor in this
# directory: the SDK vendored beside this file is found through this line.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from taskrush_plugin import Plugin, Veto  # noqa: E402

plugin = Plugin("@NAME@", "0.1.0")


@plugin.before_task
def before_task(ctx):
    """Refuse the tasks the config's `block` list names; log the others."""
    if ctx.task_name in (ctx.config.get("block") or []):
        raise Veto(f"`{ctx.task_name}` is blocked by @NAME@ (its `block` config)")
    plugin.info(f"starting {ctx.task_name}")


@plugin.after_task
def after_task(ctx, result):
    plugin.info(f"{ctx.task_name} finished: {result.status} in {result.duration_ms} ms")
    if result.status == "failed" and result.exit_code is not None:
        plugin.warn(f"{ctx.task_name} failed with exit code {result.exit_code}")


@plugin.command("@NAME@", "Say hello (an example command of @NAME@)")
def hello(args, cwd):
    return "hello from @NAME@" + ("".join(" " + a for a in args)) + "\n"


if __name__ == "__main__":
    sys.exit(plugin.run())
