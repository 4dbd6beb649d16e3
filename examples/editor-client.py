#!/usr/bin/env python3
"""A minimal editor integration of TaskRush, standard library only.

It does what an editor plugin does: lists the tasks of the project in the
current directory, subscribes to the daemon's global event stream, runs one
task and follows it until it finishes, printing one line per event.

    python3 examples/editor-client.py build

The daemon must be running (any `taskrush` command starts it). The socket
is $TASKRUSH_SOCKET, else $XDG_RUNTIME_DIR/taskrush/taskrushd.sock.
See docs/protocol.md for every method and event.
"""

import json
import os
import socket
import sys


class Client:
    """Newline-delimited JSON-RPC 2.0 over the daemon's socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1
        self.pending = []  # notifications read while waiting for an answer

    def send(self, method, params):
        mid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": mid, "method": method, "params": params}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return mid

    def read(self):
        if self.pending:
            return self.pending.pop(0)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("the daemon closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, method, params):
        mid = self.send(method, params)
        held = []
        while True:
            msg = self.read()
            if msg.get("id") == mid:
                self.pending = held + self.pending
                if "error" in msg:
                    raise SystemExit("error: %s" % msg["error"]["message"])
                return msg["result"]
            held.append(msg)


def main():
    task = sys.argv[1] if len(sys.argv) > 1 else "build"
    path = os.environ.get("TASKRUSH_SOCKET") or os.path.join(
        os.environ["XDG_RUNTIME_DIR"], "taskrush", "taskrushd.sock")
    c = Client(path)
    c.call("hello", {"version": "editor-client", "protocol": 1})
    cwd = os.getcwd()

    # 1. The task list, for a task picker.
    listing = c.call("list_tasks", {"cwd": cwd})
    if listing.get("warning"):
        print("warning: " + listing["warning"])
    for t in listing["tasks"]:
        print("%s  %s" % (t["name"], t.get("description", "")))

    # 2. The global stream: config reloads, plugins, every client's runs.
    #    It is live once the subscription id is answered.
    c.call("events", [])

    # 3. Run the task; its own events arrive as `run_event`.
    c.call("run", {"request": {"cwd": cwd, "tasks": [task], "env": dict(os.environ)}})
    run_id = None
    exit_code = None      # from the run's own `run_finished`
    seen_global_end = False
    # The run's events and the global stream are two streams: either may
    # report the end first. Stop when both have.
    while exit_code is None or not seen_global_end:
        msg = c.read()
        ev = msg.get("params", {}).get("result", {})
        if msg.get("method") == "run_event":
            if ev["event"] == "run_started":
                run_id = ev["run_id"]
            elif ev["event"] == "output":
                sys.stdout.write(ev.get("text", ""))
            elif ev["event"] == "run_finished":
                exit_code = ev["exit_code"]
        elif msg.get("method") == "event":
            kind = ev["event"]
            if kind.startswith("config_") or kind.startswith("plugin_"):
                print("%s %s" % (kind, ev.get("file") or ev.get("plugin")))
            elif ev.get("run_id") == run_id:
                if kind.startswith("task_"):
                    print("%s %s %s" % (kind, ev["task"], ev.get("status", "")))
                elif kind == "run_finished":
                    print("run_finished %s" % ev["status"])
                    seen_global_end = True
                else:
                    print(kind)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
