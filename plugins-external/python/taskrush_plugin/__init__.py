"""TaskRush plugin SDK for Python (standard library only, Python 3.9+).

A TaskRush external plugin is a process the daemon starts; it speaks
JSON-RPC 2.0, one JSON object per line, on stdin (host to plugin) and stdout
(plugin to host). This module does the framing, the ``initialize``
handshake, the dispatch of the hooks and commands you register, concurrent
requests (a thread per request, whole lines written under a lock), logging
to the host, and a clean exit when the host closes stdin. ``docs/plugins.md``
in the TaskRush repository is the normative description of the protocol.

Example::

    from taskrush_plugin import Plugin, Veto

    plugin = Plugin("no-friday-deploys", "1.0.0")

    @plugin.before_task
    def check(ctx):
        if ctx.task_name == "deploy" and is_friday():
            raise Veto("no deploys on Fridays")

    @plugin.after_task
    def done(ctx, result):
        plugin.log("info", f"{ctx.task_name}: {result.status}")

    if __name__ == "__main__":
        plugin.run()

While :meth:`Plugin.run` serves the real stdin/stdout, ``print()`` and
child processes that inherit file descriptor 1 write to stderr (which the
daemon captures into its log): stdout carries protocol messages only.
"""

from __future__ import annotations

import io
import json
import os
import queue
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

__all__ = [
    "Plugin",
    "Host",
    "HostError",
    "PermissionDenied",
    "PERMISSION_DENIED",
    "HOST_CALL_FAILED",
    "Veto",
    "http_request",
    "HttpResponse",
    "RpcError",
    "CommandResult",
    "Record",
    "TaskContext",
    "TaskResult",
    "TaskError",
    "InitializeParams",
    "PROTOCOL_VERSIONS",
    "MAX_LINE_BYTES",
    "VETO",
    "UNSUPPORTED_PROTOCOL",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
]

__version__ = "1.0.0"

#: The protocol majors this SDK speaks.
PROTOCOL_VERSIONS: Tuple[int, ...] = (1,)
#: The longest line (without its newline) either side may send.
MAX_LINE_BYTES = 16 * 1024 * 1024

# JSON-RPC error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: A hook refused on purpose (``before_task`` vetoing a task).
VETO = -32010
#: None of the protocol majors the host offered is spoken here.
UNSUPPORTED_PROTOCOL = -32011
#: A host call the plugin's grants do not allow (``data``: permission, item).
PERMISSION_DENIED = -32020
#: A host call that was allowed but failed.
HOST_CALL_FAILED = -32021

_HOOKS = ("before_task", "after_task", "on_task_failure")
_LEVELS = ("error", "warn", "info", "debug")
_LEVEL_ALIASES = {"warning": "warn", "critical": "error", "fatal": "error", "trace": "debug"}

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------
# Errors


class RpcError(Exception):
    """An error answered to the host as a JSON-RPC error.

    Raise it from a handler to choose the code; any other exception is
    answered with ``-32603`` (internal error) and its message.
    """

    def __init__(self, message: str, code: int = INTERNAL_ERROR, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data


class HostError(RpcError):
    """A host call the host refused or that failed (``code``, ``message``, ``data``)."""


class PermissionDenied(HostError):
    """A host call the plugin's grants do not allow; ``data`` names the permission and item."""


class Veto(RpcError):
    """Raised in ``before_task``: the task does not run; ``reason`` is shown."""

    def __init__(self, reason: str, data: Any = None) -> None:
        super().__init__(reason, VETO, data)


# --------------------------------------------------------------------------
# Messages


def _wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, Record):
        return Record({k: _wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Record(dict):
    """A ``dict`` whose keys are also attributes, recursively.

    ``ctx.config.channel`` and ``ctx.config["channel"]`` are the same;
    ``ctx.config.get("channel", "#builds")`` works as for any dict.
    """

    __slots__ = ()
    _defaults: Dict[str, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, default in self._defaults.items():
            self[key] = _wrap(json.loads(json.dumps(default)))  # a fresh copy
        for key, value in dict(*args, **kwargs).items():
            if value is None and isinstance(self._defaults.get(key), dict):
                continue  # `"config": null` reads as `{}`
            self[key] = _wrap(value)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


class TaskContext(Record):
    """What a hook learns about a task."""

    __slots__ = ()
    _defaults = {"task_name": "", "command": "", "working_dir": "", "env_vars": {}, "config": {}, "run_id": 0}
    task_name: str
    #: The task's ``cmd`` (empty for an aggregate task).
    command: str
    #: Where the task runs: the project root.
    working_dir: str
    #: The task's environment, limited to the plugin's Environment permission.
    env_vars: Dict[str, str]
    #: The plugin's global config merged with the task's ``plugins.<name>``.
    config: Record
    run_id: int


class TaskResult(Record):
    """How a task ended (``after_task``)."""

    __slots__ = ()
    _defaults = {"status": "", "exit_code": None, "duration_ms": 0, "cached": False}
    #: ``"success"``, ``"failed"`` or ``"cancelled"``.
    status: str
    exit_code: Optional[int]
    duration_ms: int
    #: The task was up to date and did not run.
    cached: bool


class TaskError(Record):
    """Why a task failed (``on_task_failure``)."""

    __slots__ = ()
    _defaults = {"message": "", "exit_code": None}
    message: str
    exit_code: Optional[int]


class InitializeParams(Record):
    """The ``initialize`` request's params."""

    __slots__ = ()
    _defaults = {
        "protocol_versions": [],
        "taskrush_version": "",
        "name": "",
        "config": {},
        "project_root": "",
        "permissions": [],
        "host_methods": [],
    }
    protocol_versions: List[int]
    taskrush_version: str
    #: The plugin's name as the ``.rush`` file names it.
    name: str
    #: The global ``config`` of the plugin's ``.rush`` entry.
    config: Record
    project_root: str
    #: e.g. ``[{"kind": "environment", "vars": ["SLACK_WEBHOOK"]}]``
    permissions: List[Record]
    #: The host calls the host serves; :meth:`Plugin.host_call` sends no other.
    host_methods: List[str]


class CommandResult:
    """What ``taskrush <command>`` prints and exits with."""

    __slots__ = ("exit_code", "stdout", "stderr")

    def __init__(self, exit_code: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    def to_json(self) -> Dict[str, Any]:
        return {"exit_code": int(self.exit_code), "stdout": str(self.stdout), "stderr": str(self.stderr)}

    def __repr__(self) -> str:
        return f"CommandResult(exit_code={self.exit_code!r}, stdout={self.stdout!r}, stderr={self.stderr!r})"


CommandReturn = Union[None, int, str, CommandResult, Dict[str, Any]]


def _command_result(value: Any) -> Dict[str, Any]:
    if value is None:
        return CommandResult().to_json()
    if isinstance(value, CommandResult):
        return value.to_json()
    if isinstance(value, bool):
        return CommandResult(0 if value else 1).to_json()
    if isinstance(value, int):
        return CommandResult(value).to_json()
    if isinstance(value, str):
        return CommandResult(0, value if value.endswith("\n") or not value else value + "\n").to_json()
    if isinstance(value, dict):
        return CommandResult(
            int(value.get("exit_code", 0)), str(value.get("stdout", "")), str(value.get("stderr", ""))
        ).to_json()
    raise TypeError(f"a command returned {type(value).__name__}; expected int, str, CommandResult, dict or None")


def _json_default(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode(message: Dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False, default=_json_default).encode("utf-8")


def _read_line(stream: Any) -> Tuple[Optional[bytes], bool]:
    """One line (with its newline), ``(None, False)`` at EOF, or
    ``(b"", True)`` when the line was longer than :data:`MAX_LINE_BYTES`
    (it has then been read and dropped)."""
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return None, False
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while True:
            rest = stream.readline(1 << 16)
            if not rest or rest.endswith(b"\n"):
                return b"", True
    return line, False


def _binary(stream: Any) -> Any:
    if isinstance(stream, io.TextIOBase):
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            raise TypeError("Plugin.run needs binary streams")
        return buffer
    return stream


# --------------------------------------------------------------------------
# The plugin


class Plugin:
    """A TaskRush plugin: register handlers, then call :meth:`run`.

    ``grace`` is how long :meth:`run` lets requests still being handled
    finish after the host closed stdin (the host sends SIGTERM 2 s after
    closing it).
    """

    def __init__(self, name: str, version: str, *, grace: float = 1.0) -> None:
        self.name = name
        self.version = version
        self.grace = grace
        #: The ``initialize`` params, once the host sent them.
        self.init_params: Optional[InitializeParams] = None
        #: The global config from ``initialize`` (per-task config is in ``ctx.config``).
        self.config: Record = Record()
        self.project_root = ""
        #: The protocol major agreed on by ``initialize``.
        self.protocol: Optional[int] = None
        self._hooks: Dict[str, Callable[..., Any]] = {}
        self._commands: Dict[str, Tuple[str, Callable[..., Any]]] = {}
        self._on_initialize: Optional[Callable[[InitializeParams], Any]] = None
        self._on_shutdown: Optional[Callable[[], Any]] = None
        self._out: Any = None
        self._write_lock = threading.Lock()
        self._workers_lock = threading.Lock()
        self._workers: "set[threading.Thread]" = set()
        self._pending: Dict[int, "queue.Queue[Any]"] = {}
        self._pending_lock = threading.Lock()
        self._next_id = 1
        self._reader: Optional[int] = None
        #: Host calls, as methods: ``plugin.host.task_graph()``.
        self.host = Host(self)

    # -- registration ------------------------------------------------------

    def before_task(self, fn: F) -> F:
        """``fn(ctx)`` runs before a task; ``raise Veto("why")`` stops it."""
        self._hooks["before_task"] = fn
        return fn

    def after_task(self, fn: F) -> F:
        """``fn(ctx, result)`` runs after a task ended (success, failed, cancelled or cached)."""
        self._hooks["after_task"] = fn
        return fn

    def on_task_failure(self, fn: F) -> F:
        """``fn(ctx, error)`` runs after a task failed."""
        self._hooks["on_task_failure"] = fn
        return fn

    def on_initialize(self, fn: F) -> F:
        """``fn(params)`` runs on the handshake; raising fails the plugin's start."""
        self._on_initialize = fn
        return fn

    def on_shutdown(self, fn: F) -> F:
        """``fn()`` runs when the host asks the plugin to shut down."""
        self._on_shutdown = fn
        return fn

    def command(self, name: Any = None, description: Optional[str] = None) -> Any:
        """Add ``taskrush <name> args...``: ``fn(args, cwd)`` returns an exit
        code (int), text to print (str), a :class:`CommandResult`, or None.

        ``@plugin.command("scan", "Scan commands")``; bare ``@plugin.command``
        takes the name from the function (``_`` becomes ``-``) and the
        description from its docstring.
        """

        def register(fn: F) -> F:
            cmd = name if isinstance(name, str) else fn.__name__.replace("_", "-")
            desc = description if description is not None else (fn.__doc__ or "").strip().split("\n")[0]
            self._commands[cmd] = (desc, fn)
            return fn

        if callable(name):
            return register(name)
        return register

    # -- to the host -------------------------------------------------------

    def log(self, level: str, message: str) -> None:
        """Send a log line to the host (``error``, ``warn``, ``info`` or ``debug``)."""
        level = _LEVEL_ALIASES.get(level, level)
        if level not in _LEVELS:
            level = "info"
        if self._out is None:
            print(f"[{level}] {message}", file=sys.stderr, flush=True)
            return
        self._notify("log", {"level": level, "message": str(message)})

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warn(self, message: str) -> None:
        self.log("warn", message)

    def error(self, message: str) -> None:
        self.log("error", message)

    def progress(self, message: str, task: Optional[str] = None, percent: Optional[float] = None) -> None:
        """Report progress of long work (``percent`` from 0 to 100 when known)."""
        params: Dict[str, Any] = {"message": str(message)}
        if task is not None:
            params["task"] = task
        if percent is not None:
            params["percent"] = float(percent)
        if self._out is not None:
            self._notify("progress", params)

    # -- serving -----------------------------------------------------------

    def run(self, stdin: Any = None, stdout: Any = None) -> int:
        """Serve requests until stdin is closed; returns 0.

        Without arguments serves the process's stdin/stdout, after moving
        file descriptor 1 so that ``print()`` and child processes write to
        stderr. Tests may pass binary streams instead.
        """
        inp = _binary(stdin if stdin is not None else sys.stdin)
        self._out = _binary(stdout) if stdout is not None else self._claim_stdout()
        self._reader = threading.get_ident()
        try:
            while True:
                line, too_long = _read_line(inp)
                if line is None:
                    break
                if too_long:
                    self._reply_error(None, PARSE_ERROR, f"message longer than {MAX_LINE_BYTES} bytes")
                    continue
                line = line.strip()
                if line:
                    self._receive(line)
        finally:
            self._fail_host_calls("the host closed stdin")
            self._drain()
        return 0

    # -- host calls --------------------------------------------------------

    def host_call(self, method: str, params: Optional[Dict[str, Any]] = None) -> Any:
        """Call the host: ``method`` with ``params``; returns the result.

        Only methods the host offered in ``initialize`` (``host_methods``)
        are sent; any other raises :class:`HostError` at once. Raises
        :class:`PermissionDenied` when the grants do not allow the call.
        Blocks the calling handler's thread until the host answers (the host
        bounds it by the deadline of the call being handled).
        """
        if self.init_params is not None and method not in (self.init_params.get("host_methods") or []):
            raise HostError(f"the host does not offer `{method}`; it is older than this plugin", HOST_CALL_FAILED)
        if self._out is None:
            raise HostError(f"no host to call `{method}` on (the plugin is not running)", HOST_CALL_FAILED)
        if self._reader == threading.get_ident():
            raise HostError(
                f"`{method}` cannot be called from `on_initialize` or `on_shutdown` (the host answers "
                "on the thread that is reading)",
                HOST_CALL_FAILED,
            )
        answer: "queue.Queue[Any]" = queue.Queue(maxsize=1)
        with self._pending_lock:
            request_id = self._next_id
            self._next_id += 1
            self._pending[request_id] = answer
        message: Dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self._write(_encode(message))
        response = answer.get()
        error = response.get("error")
        if error is not None:
            if not isinstance(error, dict):
                error = {"message": str(error)}
            code = error.get("code", INTERNAL_ERROR)
            kind = PermissionDenied if code == PERMISSION_DENIED else HostError
            raise kind(str(error.get("message", "")), code, error.get("data"))
        return _wrap(response.get("result"))

    def _fail_host_calls(self, why: str) -> None:
        with self._pending_lock:
            waiting = list(self._pending.values())
            self._pending.clear()
        for waiter in waiting:
            waiter.put({"error": {"code": HOST_CALL_FAILED, "message": why}})

    def _claim_stdout(self) -> Any:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - a closed stdout is not our problem here
            pass
        try:
            fd = os.dup(1)
            os.dup2(2, 1)
            out = os.fdopen(fd, "wb")
        except OSError:
            out = sys.stdout.buffer
        sys.stdout = sys.stderr
        return out

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def _receive(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError as e:
            self._reply_error(None, PARSE_ERROR, f"invalid JSON: {e}")
            return
        if not isinstance(message, dict):
            what = "batches are not supported" if isinstance(message, list) else "a message must be a JSON object"
            self._reply_error(None, INVALID_REQUEST, what)
            return
        method = message.get("method")
        if "id" not in message:
            return  # a notification: the host sends none this SDK knows
        request_id = message["id"]
        if method is None:
            # The answer to a host call: to the thread waiting for it.
            with self._pending_lock:
                waiter = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
            if waiter is not None:
                waiter.put(message)
            return
        if not isinstance(method, str):
            self._reply_error(request_id, INVALID_REQUEST, "`method` must be a string")
            return
        params = message.get("params")
        if method in ("initialize", "shutdown"):
            # In order: the host waits for these, and later requests rely on them.
            self._handle(request_id, method, params)
            return
        worker = threading.Thread(
            target=self._handle, args=(request_id, method, params), name=f"taskrush-{method}", daemon=True
        )
        with self._workers_lock:
            self._workers.add(worker)
        worker.start()

    def _handle(self, request_id: Any, method: str, params: Any) -> None:
        try:
            result = self._dispatch(method, params)
        except RpcError as e:
            self._reply_error(request_id, e.code, e.message, e.data)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure becomes an answer
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self._reply_error(request_id, INTERNAL_ERROR, str(e) or type(e).__name__)
        else:
            self._reply(request_id, result)
        finally:
            with self._workers_lock:
                self._workers.discard(threading.current_thread())

    def _dispatch(self, method: str, params: Any) -> Any:
        if method == "initialize":
            return self._initialize(params)
        if method == "shutdown":
            if self._on_shutdown is not None:
                try:
                    self._on_shutdown()
                except Exception:  # noqa: BLE001 - shutting down anyway
                    traceback.print_exc(file=sys.stderr)
            return None
        if method in _HOOKS and method in self._hooks:
            if not isinstance(params, dict) or not isinstance(params.get("context"), dict):
                raise RpcError("params must be an object with a `context` object", INVALID_PARAMS)
            ctx = TaskContext(params["context"])
            fn = self._hooks[method]
            if method == "before_task":
                fn(ctx)
            elif method == "after_task":
                fn(ctx, TaskResult(params.get("result") or {}))
            else:
                fn(ctx, TaskError(params.get("error") or {}))
            return None
        if method == "command" and self._commands:
            if not isinstance(params, dict) or not isinstance(params.get("name"), str):
                raise RpcError("params must be an object with a `name` string", INVALID_PARAMS)
            entry = self._commands.get(params["name"])
            if entry is None:
                raise RpcError(f"unknown command `{params['name']}`", INVALID_PARAMS)
            args = params.get("args") or []
            return _command_result(entry[1]([str(a) for a in args], str(params.get("cwd") or "")))
        raise RpcError(f"method `{method}` not found", METHOD_NOT_FOUND)

    def _initialize(self, params: Any) -> Dict[str, Any]:
        if not isinstance(params, dict) or not isinstance(params.get("protocol_versions"), list):
            raise RpcError("params must be an object with a `protocol_versions` list", INVALID_PARAMS)
        offered = [v for v in params["protocol_versions"] if isinstance(v, int) and not isinstance(v, bool)]
        common = [v for v in PROTOCOL_VERSIONS if v in offered]
        if not common:
            raise RpcError(
                f"unsupported protocol versions {params['protocol_versions']}; "
                f"this plugin speaks {list(PROTOCOL_VERSIONS)}",
                UNSUPPORTED_PROTOCOL,
                {"supported": list(PROTOCOL_VERSIONS)},
            )
        init = InitializeParams(params)
        self.init_params = init
        self.config = init.config if isinstance(init.config, Record) else Record()
        self.project_root = init.project_root
        self.protocol = max(common)
        if self._on_initialize is not None:
            self._on_initialize(init)
        return {
            "name": self.name,
            "version": self.version,
            "protocol": self.protocol,
            "hooks": [h for h in _HOOKS if h in self._hooks],
            "commands": [{"name": n, "description": d} for n, (d, _) in self._commands.items()],
        }

    # -- writing -----------------------------------------------------------

    def _reply(self, request_id: Any, result: Any) -> None:
        try:
            line = _encode({"jsonrpc": "2.0", "id": request_id, "result": result})
        except (TypeError, ValueError) as e:
            self._reply_error(request_id, INTERNAL_ERROR, f"the result is not valid JSON: {e}")
            return
        if len(line) > MAX_LINE_BYTES:
            self._reply_error(request_id, INTERNAL_ERROR, f"the result is longer than {MAX_LINE_BYTES} bytes")
            return
        self._write(line)

    def _reply_error(self, request_id: Any, code: int, message: str, data: Any = None) -> None:
        error: Dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        try:
            line = _encode({"jsonrpc": "2.0", "id": request_id, "error": error})
        except (TypeError, ValueError):
            error.pop("data", None)
            line = _encode({"jsonrpc": "2.0", "id": request_id, "error": error})
        if len(line) > MAX_LINE_BYTES:
            line = _encode({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message[:65536]}})
        self._write(line)

    def _notify(self, method: str, params: Dict[str, Any]) -> None:
        line = _encode({"jsonrpc": "2.0", "method": method, "params": params})
        if len(line) <= MAX_LINE_BYTES:
            self._write(line)

    def _write(self, line: bytes) -> None:
        with self._write_lock:
            out = self._out
            if out is None:
                return
            try:
                out.write(line + b"\n")
                out.flush()
            except (OSError, ValueError):
                self._out = None  # the host is gone; EOF on stdin follows


class Host:
    """The host calls of a running plugin (``plugin.host``), checked by the
    host against the plugin's grants and audited. Call them from hooks and
    commands (not from ``on_initialize``)."""

    def __init__(self, plugin: "Plugin") -> None:
        self._plugin = plugin

    def offers(self, method: str) -> bool:
        """Whether the host offered ``method`` in ``initialize``."""
        init = self._plugin.init_params
        return init is not None and method in (init.get("host_methods") or [])

    def env_get(self, name: str) -> Optional[str]:
        """A variable the ``environment`` grant names (None when unset)."""
        return self._plugin.host_call("env_get", {"name": name}).get("value")

    def read_file(self, path: str) -> str:
        """A UTF-8 file within the granted paths (relative: to the project root)."""
        return self._plugin.host_call("read_file", {"path": path})["contents"]

    def write_file(self, path: str, contents: str, append: bool = False) -> int:
        """Write a file within the granted writable paths; returns the bytes written."""
        r = self._plugin.host_call("write_file", {"path": path, "contents": contents, "append": append})
        return int(r["bytes_written"])

    def http_request(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[Dict[str, str]] = None,
        body: str = "",
        timeout_ms: Optional[int] = None,
    ) -> Record:
        """An HTTP(S) request made by the host to a granted ``network`` host:
        ``status``, ``headers``, ``body``."""
        params: Dict[str, Any] = {"method": method, "url": url, "headers": headers or {}, "body": body}
        if timeout_ms is not None:
            params["timeout_ms"] = int(timeout_ms)
        return self._plugin.host_call("http_request", params)

    def run_command(
        self, program: str, args: Optional[List[str]] = None, cwd: Optional[str] = None, stdin: str = ""
    ) -> Record:
        """Run a granted ``process`` program (no shell): ``exit_code``, ``stdout``, ``stderr``."""
        params: Dict[str, Any] = {"program": program, "args": list(args or []), "stdin": stdin}
        if cwd is not None:
            params["cwd"] = cwd
        return self._plugin.host_call("run_command", params)

    def task_graph(self) -> Record:
        """The project's tasks as written (``tasks``, by name) and ``edges`` ``[task, dependency]``."""
        return self._plugin.host_call("task_graph", {})

    def task_results(self, run_id: Optional[int] = None) -> Record:
        """The tasks of the current run that ended so far: ``run_id``, ``tasks``."""
        return self._plugin.host_call("task_results", {} if run_id is None else {"run_id": run_id})

    def call_command(self, plugin: str, command: str, args: Optional[List[str]] = None) -> CommandResult:
        """Run ``command`` of another plugin through the host (declared in
        ``[permissions] plugins`` and granted)."""
        r = self._plugin.host_call("call_command", {"plugin": plugin, "command": command, "args": list(args or [])})
        return CommandResult(int(r.get("exit_code", 0)), r.get("stdout", ""), r.get("stderr", ""))


# --------------------------------------------------------------------------
# HTTP through the host's proxy


class HttpResponse:
    """An HTTP answer: ``status``, ``reason``, ``headers`` (names lower
    case) and ``body`` (bytes); ``text()`` and ``json()`` decode it."""

    def __init__(self, status: int, reason: str, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"HttpResponse({self.status} {self.reason}, {len(self.body)} bytes)"


def _proxies() -> Dict[str, str]:
    """The host's proxy from ``http_proxy``/``https_proxy`` (either case).
    ``NO_PROXY`` is not honoured: in the sandbox the proxy is the only way out."""
    proxies = {}
    for scheme in ("http", "https"):
        url = os.environ.get(scheme + "_proxy") or os.environ.get(scheme.upper() + "_PROXY")
        if url:
            proxies[scheme] = url
    return proxies


def http_request(
    method: str,
    url: str,
    body: Any = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """Send an HTTP(S) request through the daemon's network proxy.

    A plugin whose manifest grants ``network`` hosts gets ``HTTP_PROXY`` and
    ``HTTPS_PROXY`` pointing at a proxy of the daemon that allows only those
    hosts (https through ``CONNECT``); in the sandbox it cannot connect
    anywhere else. ``body`` may be bytes, a string, or a dict/list sent as
    JSON. Every HTTP status is returned (a host the grant does not allow is
    ``403`` from the proxy, with the reason in the body, or an ``OSError``
    naming ``403`` for https); errors before an answer raise ``OSError``.
    """
    data = None
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode("utf-8")
    elif body is not None:
        data = bytes(body)
    request = urllib.request.Request(url, data=data, headers=headers, method=method.upper())
    proxy = _proxies().get(request.type)
    if proxy:
        # Set by hand: urllib's ProxyHandler would honour NO_PROXY.
        request.set_proxy(urllib.parse.urlsplit(proxy).netloc, "http")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as r:
            return HttpResponse(r.status, r.reason, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        with e:
            found = {k.lower(): v for k, v in (e.headers or {}).items()}
            return HttpResponse(e.code, str(e.reason), found, e.read())
