"""slack-notify: post task results to a Slack incoming webhook.

Config (global ``config`` merged with the task's ``plugins.slack-notify``):
  webhook_url   the webhook (default: $SLACK_WEBHOOK)
  message       template; {task} {status} {exit_code} {duration_ms} {command}
  on_success    post when a task succeeded (default true)
  on_failure    post when a task failed or was cancelled (default true)
  on_cached     post for up-to-date tasks that did not run (default false)
  channel       optional channel override sent with the message
  timeout       seconds to wait for the webhook (default 3)
Network errors are logged (without the URL, which is a secret), never raised:
a notification must not fail a task.
"""

import os
import re
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
# The SDK: a copy next to this file when installed, else the repository's.
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "python")]

from taskrush_plugin import CommandResult, Plugin, http_request  # noqa: E402

plugin = Plugin("slack-notify", "1.0.0")

DEFAULT_SUCCESS = "\u2705 Task '{task}' succeeded in {duration_ms} ms"
DEFAULT_FAILURE = "\u274c Task '{task}' {status} (exit code {exit_code})"
PLACEHOLDER = re.compile(r"\{(task|status|exit_code|duration_ms|command)\}")


def render(template, values):
    """Replaces the known placeholders only: other braces stay as written."""
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def webhook_url(config):
    return config.get("webhook_url") or os.environ.get("SLACK_WEBHOOK") or ""


@plugin.on_initialize
def check_config(params):
    if not webhook_url(params.config):
        plugin.log("warn", "no `webhook_url` in the config and SLACK_WEBHOOK is not set: nothing will be posted")


@plugin.after_task
def notify(ctx, result):
    config = ctx.config
    succeeded = result.status == "success"
    if result.cached and not config.get("on_cached", False):
        return
    if not config.get("on_success" if succeeded else "on_failure", True):
        return
    url = webhook_url(config)
    if not url:
        return
    template = config.get("message") or (DEFAULT_SUCCESS if succeeded else DEFAULT_FAILURE)
    text = render(
        str(template),
        {
            "task": ctx.task_name,
            "status": result.status,
            "exit_code": "none" if result.exit_code is None else result.exit_code,
            "duration_ms": result.duration_ms,
            "command": ctx.command,
        },
    )
    payload = {"text": text}
    if config.get("channel"):
        payload["channel"] = config["channel"]
    post(url, payload, float(config.get("timeout", 3)))


@plugin.command("notify", "Post TEXT to the webhook (other plugins call it through the host)")
def notify_command(args, cwd):
    text = " ".join(args).strip()
    if not text:
        return CommandResult(2, "", "usage: taskrush notify TEXT\n")
    url = webhook_url(plugin.config)
    if not url:
        return CommandResult(1, "", "no `webhook_url` in the config and SLACK_WEBHOOK is not set\n")
    payload = {"text": text}
    if plugin.config.get("channel"):
        payload["channel"] = plugin.config["channel"]
    if not post(url, payload, float(plugin.config.get("timeout", 3))):
        return CommandResult(1, "", "the message was not posted (see `taskrush daemon logs`)\n")
    return "posted"


def post(url, payload, timeout):
    """Post `payload`; True when the webhook took it."""
    parts = urllib.parse.urlsplit(url)
    where = parts.hostname or "the webhook"
    if parts.scheme not in ("http", "https"):
        plugin.log("error", "`webhook_url` must be an http(s) URL; nothing posted")
        return False
    # Through the daemon's proxy (the only way out of the sandbox), which
    # lets through the hosts of this plugin's `network` permission.
    try:
        response = http_request("POST", url, body=payload, timeout=timeout)
    except OSError as e:
        plugin.log("warn", f"could not reach {where}: {getattr(e, 'reason', e)}")
        return False
    except ValueError as e:
        plugin.log("warn", f"could not post to {where}: {e}")
        return False
    if response.ok:
        plugin.log("debug", f"posted to {where}")
        return True
    if response.headers.get("x-taskrush-proxy") == "denied":
        plugin.log("warn", f"the message was not posted: {response.text().strip()}")
    else:
        plugin.log("warn", f"{where} answered HTTP {response.status} {response.reason}; the message was not posted")
    return False


if __name__ == "__main__":
    sys.exit(plugin.run())
