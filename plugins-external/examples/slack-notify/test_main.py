"""Tests of slack-notify against a local webhook on 127.0.0.1.

Run: cd plugins-external/examples/slack-notify && python3 -m unittest -v
"""

import http.server
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "T000/B000/secret-token"


class Webhook(http.server.ThreadingHTTPServer):
    """Records the JSON bodies posted to it; answers `status`."""

    def __init__(self, status=200):
        self.posts = queue.Queue()
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.put((self.path, self.headers["Content-Type"], json.loads(body)))
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/services/{SECRET}"

    def stop(self):
        self.shutdown()
        self.server_close()


class Plugin:
    """slack-notify as the daemon runs it: cwd = its directory, filtered environment."""

    def __init__(self, env=None):
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "main.py"],
            cwd=HERE,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.next_id = 0

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def call(self, method, params=None):
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        notes = []
        while True:
            m = self.lines.get(timeout=10)
            if m is None:
                raise AssertionError("plugin exited: " + self.proc.stderr.read().decode())
            if "id" in m:
                self.assert_id(m)
                return m, notes
            notes.append(m)

    def assert_id(self, m):
        assert m["id"] == self.next_id, m

    def initialize(self, config):
        return self.call(
            "initialize",
            {
                "protocol_versions": [1],
                "taskrush_version": "0.3.0",
                "name": "slack-notify",
                "config": config,
                "project_root": "/project",
                "permissions": [{"kind": "environment", "vars": ["SLACK_WEBHOOK"]}],
            },
        )

    def after_task(self, task, config, status="success", exit_code=0, duration_ms=1234, cached=False):
        result = {"status": status, "duration_ms": duration_ms, "cached": cached}
        if exit_code is not None:
            result["exit_code"] = exit_code
        context = {
            "task_name": task,
            "command": "kubectl apply -f deployment.yaml",
            "working_dir": "/project",
            "env_vars": {},
            "config": config,
            "run_id": 1,
        }
        return self.call("after_task", {"context": context, "result": result})

    def stop(self):
        """Shuts the plugin down as the daemon does; returns its exit code."""
        self.call("shutdown")
        self.proc.stdin.close()
        code = self.proc.wait(5)
        self.close()
        return code

    def close(self):
        if self.proc.stderr.closed:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        self.stderr = self.proc.stderr.read().decode()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


class SlackNotifyTests(unittest.TestCase):
    def setUp(self):
        self.webhook = Webhook()
        self.addCleanup(self.webhook.stop)

    def start(self, config, env=None):
        plugin = Plugin(env)
        self.addCleanup(plugin.close)
        response, notes = plugin.initialize(config)
        self.assertEqual(response["result"]["hooks"], ["after_task"])
        return plugin, notes

    def assert_no_post(self):
        self.assertTrue(self.webhook.posts.empty(), "something was posted")

    def test_posts_the_default_message_on_success_and_failure(self):
        plugin, notes = self.start({"webhook_url": self.webhook.url})
        self.assertEqual(notes, [])
        config = {"webhook_url": self.webhook.url}
        response, _ = plugin.after_task("build", config)
        self.assertIsNone(response["result"])
        path, content_type, body = self.webhook.posts.get(timeout=5)
        self.assertEqual(path, f"/services/{SECRET}")
        self.assertEqual(content_type, "application/json")
        self.assertEqual(body, {"text": "\u2705 Task 'build' succeeded in 1234 ms"})
        plugin.after_task("test", config, status="failed", exit_code=2)
        self.assertEqual(self.webhook.posts.get(timeout=5)[2], {"text": "\u274c Task 'test' failed (exit code 2)"})
        plugin.after_task("test", config, status="cancelled", exit_code=None)
        self.assertEqual(self.webhook.posts.get(timeout=5)[2], {"text": "\u274c Task 'test' cancelled (exit code none)"})
        self.assertEqual(plugin.stop(), 0)

    def test_per_task_template_and_switches(self):
        plugin, _ = self.start({"webhook_url": self.webhook.url})
        config = {
            "webhook_url": self.webhook.url,
            "message": "{task}: {status} ({exit_code}, {duration_ms} ms) {unknown} {}",
            "channel": "#deployments",
        }
        plugin.after_task("deploy", config, status="failed", exit_code=1, duration_ms=5)
        self.assertEqual(
            self.webhook.posts.get(timeout=5)[2],
            {"text": "deploy: failed (1, 5 ms) {unknown} {}", "channel": "#deployments"},
        )
        response, _ = plugin.after_task("deploy", {**config, "on_success": False})
        self.assertIsNone(response["result"])
        response, _ = plugin.after_task("deploy", {**config, "on_failure": False}, status="failed", exit_code=1)
        self.assertIsNone(response["result"])
        response, _ = plugin.after_task("deploy", config, cached=True)
        self.assertIsNone(response["result"])
        self.assert_no_post()
        plugin.after_task("deploy", {**config, "on_cached": True, "message": "cached {task}"}, cached=True)
        self.assertEqual(self.webhook.posts.get(timeout=5)[2]["text"], "cached deploy")
        self.assertEqual(plugin.stop(), 0)

    def test_the_webhook_can_come_from_slack_webhook(self):
        plugin, _ = self.start({}, env={"SLACK_WEBHOOK": self.webhook.url})
        plugin.after_task("build", {})
        self.assertEqual(self.webhook.posts.get(timeout=5)[2]["text"], "\u2705 Task 'build' succeeded in 1234 ms")

    def test_without_a_webhook_it_warns_once_and_posts_nothing(self):
        plugin, notes = self.start({})
        self.assertEqual(notes[0]["params"]["level"], "warn")
        self.assertIn("SLACK_WEBHOOK", notes[0]["params"]["message"])
        response, notes = plugin.after_task("build", {})
        self.assertEqual((response["result"], notes), (None, []))

    def test_network_errors_are_logged_without_the_url_not_raised(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}/services/{SECRET}"
        plugin, _ = self.start({"webhook_url": dead})
        response, notes = plugin.after_task("build", {"webhook_url": dead})
        self.assertIsNone(response["result"])
        self.assertEqual(notes[0]["method"], "log")
        self.assertEqual(notes[0]["params"]["level"], "warn")
        self.assertIn("could not reach 127.0.0.1", notes[0]["params"]["message"])
        self.webhook.status = 500
        response, notes = plugin.after_task("build", {"webhook_url": self.webhook.url})
        self.assertIsNone(response["result"])
        self.assertIn("HTTP 500", notes[0]["params"]["message"])
        response, notes = plugin.after_task("build", {"webhook_url": "file:///etc/passwd"})
        self.assertEqual(notes[0]["params"]["level"], "error")
        self.assertEqual(plugin.stop(), 0)
        self.assertNotIn("secret-token", plugin.stderr)


if __name__ == "__main__":
    unittest.main()
