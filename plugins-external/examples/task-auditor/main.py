"""task-auditor: plugin composition, host-mediated.

`taskrush audit-tasks` reads the project's task graph (the `task_graph` host
call), finds the tasks that have no description, prints them, and announces
the findings through slack-notify's `notify` command (the `call_command`
host call): the two plugins never talk to each other directly. The host
checks that this plugin's manifest declares `plugins = ["slack-notify"]`
and that the user granted it, applies slack-notify's deadline and grants,
and records the call in the audit trail.

Config: `announce` (default true) - set false to only print.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# The SDK: a copy next to this file when installed, else the repository's.
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "python")]

from taskrush_plugin import CommandResult, HostError, Plugin  # noqa: E402

plugin = Plugin("task-auditor", "1.0.0")


def findings(graph):
    """The names of the tasks without a description, sorted."""
    return sorted(name for name, task in graph.tasks.items() if not task.get("description"))


@plugin.command("audit-tasks", "List the tasks without a description and announce them on Slack")
def audit_tasks(args, cwd):
    missing = findings(plugin.host.task_graph())
    if not missing:
        return "every task has a description"
    text = f"task-auditor: {len(missing)} task(s) without a description: {', '.join(missing)}"
    if not plugin.config.get("announce", True):
        return text
    try:
        result = plugin.host.call_command("slack-notify", "notify", [text])
    except HostError as e:
        return CommandResult(1, text + "\n", f"could not announce the findings: {e}\n")
    if result.exit_code != 0:
        return CommandResult(1, text + "\n", f"slack-notify failed: {result.stderr}")
    return f"{text}\nannounced through slack-notify"


if __name__ == "__main__":
    sys.exit(plugin.run())
