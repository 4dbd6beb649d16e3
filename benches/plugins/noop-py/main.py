import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "plugins-external", "python"))
from taskrush_plugin import Plugin  # noqa: E402

plugin = Plugin("noop-py", "1.0.0")


@plugin.before_task
def before(ctx):
    pass


@plugin.after_task
def after(ctx, result):
    pass


plugin.run()
