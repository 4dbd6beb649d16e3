"""Tests of @NAME@, driven the way the daemon drives it: JSON-RPC lines.

Run: python3 -m unittest -v
"""

import io
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import main  # noqa: E402


def serve(*calls):
    """Send `calls` (method, params) to the plugin; its answers by id."""
    lines = [
        json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p})
        for i, (m, p) in enumerate(calls, 1)
    ]
    stdin = io.BytesIO(("\n".join(lines) + "\n").encode())
    stdout = io.BytesIO()
    main.plugin.run(stdin=stdin, stdout=stdout)
    answers = {}
    for line in stdout.getvalue().decode().splitlines():
        msg = json.loads(line)
        if "id" in msg:
            answers[msg["id"]] = msg
    return answers


def context(task, config=None):
    return {"task_name": task, "command": "true", "working_dir": ".", "env_vars": {}, "config": config or {}, "run_id": 1}


INIT = ("initialize", {"protocol_versions": [1], "taskrush_version": "0.3.0", "name": "@NAME@", "config": {}, "project_root": ".", "permissions": []})


class PluginTest(unittest.TestCase):
    def test_a_blocked_task_is_vetoed(self):
        got = serve(INIT, ("before_task", {"context": context("deploy", {"block": ["deploy"]})}))
        self.assertIn("before_task", got[1]["result"]["hooks"])
        self.assertIn("blocked by @NAME@", got[2]["error"]["message"])

    def test_other_tasks_run(self):
        got = serve(INIT, ("before_task", {"context": context("build", {"block": ["deploy"]})}))
        self.assertIsNone(got[2]["result"])

    def test_the_command_says_hello(self):
        got = serve(INIT, ("command", {"name": "@NAME@", "args": ["there"], "cwd": "."}))
        self.assertEqual(got[2]["result"]["stdout"], "hello from @NAME@ there\n")


if __name__ == "__main__":
    unittest.main()
