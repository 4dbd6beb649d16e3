"""Tests of task-auditor's findings (the host calls are covered by the
`host_calls` scenarios: the example runs against a real daemon there)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import main  # noqa: E402
from taskrush_plugin import Record  # noqa: E402


class FindingsTest(unittest.TestCase):
    def test_tasks_without_a_description_are_found_sorted(self):
        graph = Record({"tasks": {"lint": {}, "build": {"description": "Build"}, "deploy": {"description": ""}}})
        self.assertEqual(main.findings(graph), ["deploy", "lint"])

    def test_the_plugin_adds_audit_tasks_and_declares_slack_notify(self):
        self.assertIn("audit-tasks", main.plugin._commands)
        with open(os.path.join(os.path.dirname(main.__file__), "plugin.toml")) as f:
            self.assertIn('plugins = ["slack-notify"]', f.read())


if __name__ == "__main__":
    unittest.main()
