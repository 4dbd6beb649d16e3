"""Tests of the Python SDK through a real pipe (a subprocess) and in-memory streams.

Run: cd plugins-external/python && python3 -m unittest discover -s tests -v
"""

import contextlib
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
import unittest
import unittest.mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import taskrush_plugin as sdk  # noqa: E402

FIXTURE = os.path.join(HERE, "fixture_plugin.py")


def init_params(versions=(1,), config=None):
    return {
        "protocol_versions": list(versions),
        "taskrush_version": "0.3.0",
        "name": "fixture",
        "config": config or {},
        "project_root": "/project",
        "permissions": [{"kind": "environment", "vars": ["SLACK_WEBHOOK"]}],
    }


def context(task="build", config=None):
    return {
        "task_name": task,
        "command": "make",
        "working_dir": "/project",
        "env_vars": {},
        "config": config or {},
        "run_id": 7,
    }


class Host:
    """The host side of a plugin subprocess: JSON lines in, JSON lines out."""

    def __init__(self, script=FIXTURE):
        self.proc = subprocess.Popen(
            [sys.executable, "-I", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines = queue.Queue()
        self.raw = []
        self.stderr = b""
        self.readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.raw.append(line)
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def send(self, message):
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def request(self, id, method, params=None):
        message = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def next(self, timeout=5):
        return self.lines.get(timeout=timeout)

    def response(self, timeout=5):
        """The next response, collecting the notifications before it."""
        notes = []
        while True:
            message = self.next(timeout)
            if message is None:
                raise AssertionError("plugin closed stdout")
            if "id" in message:
                return message, notes
            notes.append(message)

    def call(self, id, method, params=None):
        self.request(id, method, params)
        return self.response()

    def initialize(self, **kw):
        response, _ = self.call(0, "initialize", init_params(**kw))
        return response

    def close(self, timeout=5):
        self.proc.stdin.close()
        code = self.proc.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


class SubprocessTests(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.addCleanup(self.host.kill)

    def test_handshake_chooses_protocol_1_and_lists_only_implemented_hooks(self):
        response = self.host.initialize(versions=(2, 1))
        self.assertEqual(response["jsonrpc"], "2.0")
        self.assertEqual(response["id"], 0)
        result = response["result"]
        self.assertEqual(result["name"], "fixture")
        self.assertEqual(result["version"], "0.1.0")
        self.assertEqual(result["protocol"], 1)
        self.assertEqual(result["hooks"], ["before_task", "after_task"])
        self.assertEqual(
            result["commands"],
            [
                {"name": "echo", "description": "Print the arguments"},
                {"name": "fail", "description": "Exit 3"},
                {"name": "noisy", "description": "Write to stdout by mistake."},
            ],
        )

    def test_handshake_refuses_unknown_protocol_majors(self):
        response = self.host.initialize(versions=(2, 3))
        self.assertEqual(response["error"]["code"], -32011)
        self.assertIn("[2, 3]", response["error"]["message"])

    def test_a_failing_on_initialize_is_an_internal_error(self):
        response, _ = self.host.call(0, "initialize", init_params(config={"fail_init": True}))
        self.assertEqual(response["error"]["code"], -32603)
        self.assertIn("fail_init", response["error"]["message"])

    def test_hooks_answer_null_and_logs_reach_the_host(self):
        self.host.initialize()
        response, notes = self.host.call(1, "before_task", {"context": context()})
        self.assertEqual(response, {"jsonrpc": "2.0", "id": 1, "result": None})
        self.assertEqual(
            notes,
            [{"jsonrpc": "2.0", "method": "log", "params": {"level": "info", "message": "before build in /project"}}],
        )
        result = {"status": "failed", "exit_code": 2, "duration_ms": 12}
        response, notes = self.host.call("a", "after_task", {"context": context(), "result": result})
        self.assertEqual(response["result"], None)
        self.assertEqual(response["id"], "a")
        self.assertEqual(notes[0]["method"], "progress")
        self.assertEqual(notes[0]["params"], {"message": "reporting", "task": "build", "percent": 50.0})
        self.assertEqual(notes[1]["params"], {"level": "debug", "message": "after build: failed 2 cached=False"})

    def test_before_task_veto_is_error_32010_with_the_reason(self):
        self.host.initialize()
        response, _ = self.host.call(1, "before_task", {"context": context("deploy", {"veto": True})})
        self.assertEqual(response["error"], {"code": -32010, "message": "task `deploy` is not allowed"})

    def test_an_exception_in_a_hook_is_an_internal_error(self):
        self.host.initialize()
        response, _ = self.host.call(1, "before_task", {"context": context("boom")})
        self.assertEqual(response["error"], {"code": -32603, "message": "boom"})
        # The plugin carries on.
        response, _ = self.host.call(2, "before_task", {"context": context()})
        self.assertIsNone(response["result"])

    def test_commands(self):
        self.host.initialize()
        response, _ = self.host.call(1, "command", {"name": "echo", "args": ["a", "b"], "cwd": "/tmp"})
        self.assertEqual(response["result"], {"exit_code": 0, "stdout": "a b\n", "stderr": ""})
        response, _ = self.host.call(2, "command", {"name": "fail", "args": [], "cwd": "/tmp"})
        self.assertEqual(response["result"], {"exit_code": 3, "stdout": "", "stderr": "failed in /tmp\n"})
        response, _ = self.host.call(3, "command", {"name": "nope", "args": [], "cwd": "/tmp"})
        self.assertEqual(response["error"]["code"], -32602)

    def test_print_and_child_processes_do_not_corrupt_stdout(self):
        self.host.initialize()
        response, _ = self.host.call(1, "command", {"name": "noisy", "args": [], "cwd": "/tmp"})
        self.assertEqual(response["result"]["exit_code"], 0)
        self.assertEqual(self.host.close(), 0)
        self.assertIn(b"stray print", self.host.stderr)
        self.assertIn(b"stray child", self.host.stderr)

    def test_unknown_methods_and_undeclared_hooks_are_32601(self):
        self.host.initialize()
        response, _ = self.host.call(1, "frobnicate", {})
        self.assertEqual(response["error"]["code"], -32601)
        response, _ = self.host.call(2, "on_task_failure", {"context": context(), "error": {"message": "x"}})
        self.assertEqual(response["error"]["code"], -32601)

    def test_junk_gets_a_parse_error_and_notifications_no_answer(self):
        self.host.initialize()
        self.host.send(b"this is not json")
        self.host.send({"jsonrpc": "2.0", "method": "whatever", "params": {}})
        self.host.send(b"[]")
        response, _ = self.host.response()
        self.assertEqual(response["id"], None)
        self.assertEqual(response["error"]["code"], -32700)
        response, _ = self.host.response()
        self.assertEqual(response["error"]["code"], -32600)
        response, _ = self.host.call(1, "before_task", {"context": context()})
        self.assertEqual(response["id"], 1)

    def test_concurrent_requests_are_answered_by_id_as_they_finish(self):
        self.host.initialize()
        started = time.monotonic()
        self.host.request(1, "before_task", {"context": context("slow", {"sleep": 0.6})})
        for i in range(2, 7):
            self.host.request(i, "before_task", {"context": context("fast")})
        ids = []
        while len(ids) < 6:
            response, _ = self.host.response()
            self.assertIsNone(response["result"])
            ids.append(response["id"])
        self.assertEqual(ids[-1], 1)
        self.assertEqual(sorted(ids), [1, 2, 3, 4, 5, 6])
        self.assertLess(time.monotonic() - started, 1.5)

    def test_shutdown_then_eof_exits_0(self):
        self.host.initialize()
        response, _ = self.host.call(9, "shutdown")
        self.assertEqual(response, {"jsonrpc": "2.0", "id": 9, "result": None})
        started = time.monotonic()
        self.assertEqual(self.host.close(), 0)
        self.assertLess(time.monotonic() - started, 1.0)

    def test_eof_without_shutdown_exits_0_after_answering_in_flight_requests(self):
        self.host.initialize()
        self.host.request(1, "after_task", {"context": context("x", {"sleep": 0.3}), "result": {"status": "success", "duration_ms": 1}})
        time.sleep(0.05)
        self.assertEqual(self.host.close(), 0)
        response, _ = self.host.response()
        self.assertEqual(response["id"], 1)
        self.assertIsNone(response["result"])
        self.assertTrue(all(json.loads(line) for line in self.host.raw))


class InMemoryTests(unittest.TestCase):
    def serve(self, plugin, messages):
        data = b"".join((m if isinstance(m, bytes) else json.dumps(m).encode()) + b"\n" for m in messages)
        out = io.BytesIO()
        with contextlib.redirect_stderr(io.StringIO()):  # tracebacks of failing handlers
            self.assertEqual(plugin.run(stdin=io.BytesIO(data), stdout=out), 0)
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def test_contexts_have_attribute_access_and_defaults(self):
        plugin = sdk.Plugin("mem", "1.0.0")
        seen = {}

        @plugin.on_task_failure
        def failed(ctx, error):
            seen["ctx"] = ctx
            seen["error"] = error

        out = self.serve(
            plugin,
            [
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init_params(config={"a": {"b": 1}})},
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "on_task_failure",
                    "params": {
                        "context": {"task_name": "t", "command": "false", "working_dir": "/p", "config": None, "run_id": 1, "future": 1},
                        "error": {"message": "exit 1", "exit_code": 1},
                    },
                },
            ],
        )
        self.assertEqual(out[0]["result"]["hooks"], ["on_task_failure"])
        self.assertEqual(out[1], {"jsonrpc": "2.0", "id": 2, "result": None})
        self.assertEqual(plugin.config.a.b, 1)
        self.assertEqual(plugin.project_root, "/project")
        ctx, error = seen["ctx"], seen["error"]
        self.assertEqual((ctx.task_name, ctx.command, ctx.run_id), ("t", "false", 1))
        self.assertEqual(ctx.config, {})
        self.assertEqual(ctx.env_vars, {})
        self.assertEqual(ctx.future, 1)
        self.assertEqual((error.message, error.exit_code), ("exit 1", 1))
        with self.assertRaises(AttributeError):
            ctx.nothing  # noqa: B018

    def test_lines_over_16_mib_are_dropped_with_a_parse_error(self):
        plugin = sdk.Plugin("mem", "1.0.0")
        huge = b'{"jsonrpc":"2.0","id":1,"method":"x","params":"' + b"a" * sdk.MAX_LINE_BYTES + b'"}'
        out = self.serve(plugin, [huge, {"jsonrpc": "2.0", "id": 2, "method": "x"}])
        self.assertEqual(out[0]["id"], None)
        self.assertEqual(out[0]["error"]["code"], -32700)
        self.assertEqual(out[1]["id"], 2)
        self.assertEqual(out[1]["error"]["code"], -32601)

    def test_results_that_are_not_json_become_internal_errors(self):
        plugin = sdk.Plugin("mem", "1.0.0")

        @plugin.command("bad", "returns junk")
        def bad(args, cwd):
            return object()

        out = self.serve(
            plugin,
            [
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init_params()},
                {"jsonrpc": "2.0", "id": 2, "method": "command", "params": {"name": "bad", "cwd": "/"}},
            ],
        )
        self.assertEqual(out[1]["error"]["code"], -32603)

    def test_command_without_commands_is_unknown_method(self):
        plugin = sdk.Plugin("mem", "1.0.0")
        out = self.serve(plugin, [{"jsonrpc": "2.0", "id": 1, "method": "command", "params": {"name": "x", "cwd": "/"}}])
        self.assertEqual(out[0]["error"]["code"], -32601)


class FakeProxy:
    """An HTTP server standing in for the daemon's proxy: it records the
    request line's target (absolute for a proxy) and answers ``status``."""

    def __init__(self, status=200):
        import http.server

        self.targets = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.targets.append((self.command, self.path, self.rfile.read(length)))
                body = b"taskrush proxy: denied\n" if status == 403 else b'{"ok": true}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = handle_one

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class HttpRequestTests(unittest.TestCase):
    def with_proxy(self, status):
        proxy = FakeProxy(status)
        self.addCleanup(proxy.stop)
        env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, "NO_PROXY": "*"}
        patcher = unittest.mock.patch.dict(os.environ, env)
        patcher.start()
        self.addCleanup(patcher.stop)
        return proxy

    def test_a_request_goes_through_the_proxy_even_for_a_made_up_host(self):
        proxy = self.with_proxy(200)
        r = sdk.http_request("POST", "http://receiver.test/hook", body={"text": "hi"})
        self.assertEqual((r.status, r.ok, r.json()), (200, True, {"ok": True}))
        self.assertEqual(proxy.targets, [("POST", "http://receiver.test/hook", b'{"text": "hi"}')])

    def test_a_refusal_of_the_proxy_is_returned_with_its_reason(self):
        self.with_proxy(403)
        r = sdk.http_request("GET", "http://other.test/")
        self.assertEqual(r.status, 403)
        self.assertIn("denied", r.text())


if __name__ == "__main__":
    unittest.main()


class HostCallTest(unittest.TestCase):
    """Host calls: the plugin plays against a host played by the test over pipes."""

    def start(self, plugin, host_methods):
        to_plugin_r, to_plugin_w = os.pipe()
        from_plugin_r, from_plugin_w = os.pipe()
        inp, out = os.fdopen(to_plugin_r, "rb"), os.fdopen(from_plugin_w, "wb")
        worker = threading.Thread(target=plugin.run, args=(inp, out), daemon=True)
        worker.start()
        self.send_to, self.recv_from = os.fdopen(to_plugin_w, "wb"), os.fdopen(from_plugin_r, "rb")
        self.addCleanup(self.recv_from.close)
        self.addCleanup(worker.join, 5)
        self.addCleanup(self.send_to.close)
        params = init_params()
        params["host_methods"] = host_methods
        self.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
        self.assertEqual(self.recv()["id"], 1)

    def send(self, message):
        self.send_to.write(json.dumps(message).encode() + b"\n")
        self.send_to.flush()

    def recv(self):
        line = self.recv_from.readline()
        self.assertTrue(line, "the plugin closed its stdout")
        return json.loads(line)

    def test_a_host_call_is_answered_while_other_requests_are_served_meanwhile(self):
        plugin = sdk.Plugin("p", "1.0.0")

        @plugin.command("count")
        def count(args, cwd):
            graph = plugin.host.task_graph()
            return f"{len(graph.tasks)} tasks, first edge {graph.edges[0]}"

        @plugin.before_task
        def check(ctx):
            pass

        self.start(plugin, ["task_graph"])
        self.send({"jsonrpc": "2.0", "id": 2, "method": "command", "params": {"name": "count", "cwd": "/"}})
        call = self.recv()
        self.assertEqual(call["method"], "task_graph")
        # Before the host answers, it asks something else: answered at once.
        self.send({"jsonrpc": "2.0", "id": 3, "method": "before_task", "params": {"context": context()}})
        self.assertEqual(self.recv(), {"jsonrpc": "2.0", "id": 3, "result": None})
        self.send(
            {
                "jsonrpc": "2.0",
                "id": call["id"],
                "result": {"root": "/p", "tasks": {"a": {}, "b": {"deps": ["a"]}}, "edges": [["b", "a"]]},
            }
        )
        answer = self.recv()
        self.assertEqual(answer["id"], 2)
        self.assertEqual(answer["result"]["stdout"], "2 tasks, first edge ['b', 'a']\n")

    def test_a_call_the_host_did_not_offer_fails_at_once_naming_it(self):
        plugin = sdk.Plugin("p", "1.0.0")

        @plugin.command("results")
        def results(args, cwd):
            try:
                plugin.host.task_results()
            except sdk.HostError as e:
                return str(e)
            return "sent"

        self.start(plugin, ["env_get"])
        self.send({"jsonrpc": "2.0", "id": 2, "method": "command", "params": {"name": "results", "cwd": "/"}})
        answer = self.recv()
        self.assertEqual(answer["id"], 2, "no request may reach the host")
        self.assertEqual(
            answer["result"]["stdout"], "the host does not offer `task_results`; it is older than this plugin\n"
        )

    def test_a_denied_call_raises_permission_denied_with_its_data(self):
        plugin = sdk.Plugin("p", "1.0.0")

        @plugin.command("token")
        def token(args, cwd):
            try:
                plugin.host.env_get("TOKEN")
            except sdk.PermissionDenied as e:
                return f"{e.code} {e.data['permission']} {e.data['item']}"
            return "allowed"

        self.start(plugin, ["env_get"])
        self.send({"jsonrpc": "2.0", "id": 2, "method": "command", "params": {"name": "token", "cwd": "/"}})
        call = self.recv()
        self.assertEqual((call["method"], call["params"]), ("env_get", {"name": "TOKEN"}))
        self.send(
            {
                "jsonrpc": "2.0",
                "id": call["id"],
                "error": {
                    "code": -32020,
                    "message": "permission denied",
                    "data": {"permission": "environment", "item": "TOKEN"},
                },
            }
        )
        self.assertEqual(self.recv()["result"]["stdout"], "-32020 environment TOKEN\n")
