'use strict';
/**
 * TaskRush plugin SDK for Node.js (no dependencies; Node 18+).
 *
 * A TaskRush external plugin is a process the daemon starts; it speaks
 * JSON-RPC 2.0, one JSON object per line, on stdin (host to plugin) and
 * stdout (plugin to host). This module does the framing (with the 16 MiB
 * line cap), the `initialize` handshake, the dispatch of the hooks and
 * commands you register, concurrent requests (async handlers, each answer
 * written as one whole line), logging to the host, and a clean exit when the
 * host closes stdin. `docs/plugins.md` in the TaskRush repository is the
 * normative description of the protocol.
 *
 *   const { Plugin, Veto } = require('taskrush-plugin');
 *   const plugin = new Plugin('no-friday-deploys', '1.0.0');
 *   plugin.beforeTask(async (ctx) => {
 *     if (ctx.task_name === 'deploy' && new Date().getDay() === 5) throw new Veto('no deploys on Fridays');
 *   });
 *   plugin.run();
 *
 * Contexts are the protocol's objects as they arrive (snake_case fields:
 * `ctx.task_name`, `result.exit_code`), with defaults filled in.
 *
 * While `run()` serves the real stdin/stdout, the global `console` writes
 * to stderr (which the daemon captures into its log): stdout carries
 * protocol messages only. Do not write to `process.stdout` yourself, and
 * give child processes `stdio: ['ignore', 'pipe', 'inherit']` or similar.
 */

const { Console } = require('node:console');

/** The protocol majors this SDK speaks. */
const PROTOCOL_VERSIONS = Object.freeze([1]);
/** The longest line (without its newline) either side may send. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/** JSON-RPC error codes of the plugin protocol. */
const ErrorCode = Object.freeze({
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  /** A hook refused on purpose (`before_task` vetoing a task). */
  VETO: -32010,
  /** None of the protocol majors the host offered is spoken here. */
  UNSUPPORTED_PROTOCOL: -32011,
  /** A host call the plugin's grants do not allow (`data`: permission, item). */
  PERMISSION_DENIED: -32020,
  /** A host call that was allowed but failed. */
  HOST_CALL_FAILED: -32021,
});

const HOOKS = ['before_task', 'after_task', 'on_task_failure'];
const LEVELS = ['error', 'warn', 'info', 'debug'];
const LEVEL_ALIASES = { warning: 'warn', critical: 'error', fatal: 'error', trace: 'debug' };

/** An error answered to the host with a chosen JSON-RPC code. */
class RpcError extends Error {
  constructor(message, code = ErrorCode.INTERNAL_ERROR, data = undefined) {
    super(message);
    this.name = 'RpcError';
    this.code = code;
    this.data = data;
  }
}

/** Thrown in `beforeTask`: the task does not run; `reason` is shown. */
/** A host call the host refused or that failed (`code`, `message`, `data`). */
class HostError extends RpcError {
  constructor(message, code = ErrorCode.HOST_CALL_FAILED, data = undefined) {
    super(message, code, data);
    this.name = 'HostError';
  }

  /** The grants do not allow the call; `data` names the permission and item. */
  get permissionDenied() {
    return this.code === ErrorCode.PERMISSION_DENIED;
  }
}

class Veto extends RpcError {
  constructor(reason, data = undefined) {
    super(reason, ErrorCode.VETO, data);
    this.name = 'Veto';
  }
}

/** What `taskrush <command>` prints and exits with. */
class CommandResult {
  constructor(exitCode = 0, stdout = '', stderr = '') {
    this.exitCode = exitCode;
    this.stdout = stdout;
    this.stderr = stderr;
  }

  toJSON() {
    return { exit_code: Math.trunc(Number(this.exitCode)) || 0, stdout: String(this.stdout), stderr: String(this.stderr) };
  }
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function toCommandResult(value) {
  if (value === undefined || value === null) return new CommandResult().toJSON();
  if (value instanceof CommandResult) return value.toJSON();
  if (typeof value === 'boolean') return new CommandResult(value ? 0 : 1).toJSON();
  if (typeof value === 'number') return new CommandResult(value).toJSON();
  if (typeof value === 'string') {
    return new CommandResult(0, value === '' || value.endsWith('\n') ? value : value + '\n').toJSON();
  }
  if (isObject(value)) {
    return new CommandResult(value.exit_code ?? value.exitCode ?? 0, value.stdout ?? '', value.stderr ?? '').toJSON();
  }
  throw new TypeError(`a command returned ${typeof value}; expected a number, string, CommandResult, object or nothing`);
}

function context(raw) {
  return { task_name: '', command: '', working_dir: '', run_id: 0, ...raw, env_vars: raw.env_vars ?? {}, config: raw.config ?? {} };
}

/** Splits a byte stream into lines of at most `max` bytes. */
class LineSplitter {
  constructor(max, onLine, onTooLong) {
    this.max = max;
    this.onLine = onLine;
    this.onTooLong = onTooLong;
    this.parts = [];
    this.size = 0;
    this.discarding = false;
  }

  push(chunk) {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      const end = nl === -1 ? chunk.length : nl;
      if (!this.discarding) {
        if (this.size + (end - start) > this.max) {
          this.discarding = true;
          this.parts = [];
          this.size = 0;
        } else if (end > start) {
          this.parts.push(chunk.subarray(start, end));
          this.size += end - start;
        }
      }
      if (nl === -1) return;
      this.flush();
      start = nl + 1;
    }
  }

  flush() {
    if (this.discarding) {
      this.discarding = false;
      this.onTooLong();
    } else if (this.size > 0) {
      const line = Buffer.concat(this.parts, this.size);
      this.parts = [];
      this.size = 0;
      this.onLine(line);
    }
  }
}

class Plugin {
  /**
   * @param {string} name
   * @param {string} version
   * @param {{grace?: number}} [options] grace: milliseconds `run()` lets
   *   requests still being handled finish after the host closed stdin.
   */
  constructor(name, version, { grace = 1000 } = {}) {
    this.name = name;
    this.version = version;
    this.grace = grace;
    /** The `initialize` params, once the host sent them. */
    this.initParams = null;
    /** The global config from `initialize` (per-task config is in `ctx.config`). */
    this.config = {};
    this.projectRoot = '';
    /** The protocol major agreed on by `initialize`. */
    this.protocol = null;
    this._hooks = new Map();
    this._commands = new Map();
    this._onInitialize = null;
    this._onShutdown = null;
    this._output = null;
    this._initializing = Promise.resolve();
    this._inFlight = new Set();
    this._pending = new Map();
    this._nextId = 1;
    /** Host calls, as methods: `await plugin.host.taskGraph()`. */
    this.host = new Host(this);
  }

  /**
   * Calls the host: `method` with `params`; resolves to the result. Only
   * methods the host offered in `initialize` (`host_methods`) are sent; any
   * other rejects at once. Rejects with a HostError (`permissionDenied` when
   * the grants do not allow it).
   */
  hostCall(method, params = undefined) {
    const offered = this.initParams ? this.initParams.host_methods || [] : null;
    if (offered && !offered.includes(method)) {
      return Promise.reject(new HostError(`the host does not offer \`${method}\`; it is older than this plugin`));
    }
    if (!this._output) {
      return Promise.reject(new HostError(`no host to call \`${method}\` on (the plugin is not running)`));
    }
    const id = this._nextId++;
    const message = { jsonrpc: '2.0', id, method };
    if (params !== undefined) message.params = params;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      this._send(message);
    });
  }

  _failHostCalls(why) {
    for (const { reject } of this._pending.values()) reject(new HostError(why));
    this._pending.clear();
  }

  /** `fn(ctx)` runs before a task; `throw new Veto('why')` stops it. */
  beforeTask(fn) {
    this._hooks.set('before_task', fn);
    return this;
  }

  /** `fn(ctx, result)` runs after a task ended (success, failed, cancelled or cached). */
  afterTask(fn) {
    this._hooks.set('after_task', fn);
    return this;
  }

  /** `fn(ctx, error)` runs after a task failed. */
  onTaskFailure(fn) {
    this._hooks.set('on_task_failure', fn);
    return this;
  }

  /** `fn(params)` runs on the handshake; throwing fails the plugin's start. */
  onInitialize(fn) {
    this._onInitialize = fn;
    return this;
  }

  /** `fn()` runs when the host asks the plugin to shut down. */
  onShutdown(fn) {
    this._onShutdown = fn;
    return this;
  }

  /**
   * Adds `taskrush <name> args...`: `fn(args, cwd)` returns (or resolves to)
   * an exit code, text to print, a CommandResult, `{exitCode, stdout, stderr}`
   * or nothing.
   */
  command(name, description, fn) {
    if (typeof description === 'function') {
      fn = description;
      description = '';
    }
    if (typeof fn !== 'function') throw new TypeError('command(name, description, fn) needs a function');
    this._commands.set(String(name), { description: String(description ?? ''), fn });
    return this;
  }

  /** Sends a log line to the host (`error`, `warn`, `info` or `debug`). */
  log(level, message) {
    level = LEVEL_ALIASES[level] ?? level;
    if (!LEVELS.includes(level)) level = 'info';
    if (!this._output) {
      process.stderr.write(`[${level}] ${message}\n`);
      return;
    }
    this._send({ jsonrpc: '2.0', method: 'log', params: { level, message: String(message) } });
  }

  debug(message) { this.log('debug', message); }
  info(message) { this.log('info', message); }
  warn(message) { this.log('warn', message); }
  error(message) { this.log('error', message); }

  /** Reports progress of long work (`percent` from 0 to 100 when known). */
  progress(message, { task, percent } = {}) {
    if (!this._output) return;
    const params = { message: String(message) };
    if (task !== undefined && task !== null) params.task = String(task);
    if (percent !== undefined && percent !== null) params.percent = Number(percent);
    this._send({ jsonrpc: '2.0', method: 'progress', params });
  }

  /**
   * Serves requests until the input ends. With the default streams the
   * process then exits with code 0; with streams given (tests) the promise
   * resolves to 0 instead unless `exit: true`.
   */
  run({ input = process.stdin, output = process.stdout, exit = input === process.stdin } = {}) {
    if (output === process.stdout) {
      // eslint-disable-next-line no-global-assign
      globalThis.console = new Console({ stdout: process.stderr, stderr: process.stderr });
    }
    this._output = output;
    output.on('error', () => {
      this._output = null; // the host is gone; the end of stdin follows
    });
    return new Promise((resolve) => {
      let finished = false;
      const splitter = new LineSplitter(
        MAX_LINE_BYTES,
        (line) => this._receive(line),
        () => this._replyError(null, ErrorCode.PARSE_ERROR, `message longer than ${MAX_LINE_BYTES} bytes`),
      );
      const finish = async () => {
        if (finished) return;
        finished = true;
        splitter.flush();
        this._failHostCalls('the host closed stdin');
        await this._drain();
        if (exit) {
          const done = () => process.exit(0);
          if (this._output && this._output.writable) this._output.write('', done);
          else done();
        } else {
          resolve(0);
        }
      };
      input.on('data', (chunk) => splitter.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
      input.on('end', finish);
      input.on('close', finish);
      input.on('error', finish);
      if (typeof input.resume === 'function') input.resume();
    });
  }

  async _drain() {
    if (this._inFlight.size === 0) return;
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, this.grace);
    });
    await Promise.race([Promise.allSettled([...this._inFlight]), timeout]);
    clearTimeout(timer);
  }

  _receive(line) {
    const text = line.toString('utf8').trim();
    if (!text) return;
    let message;
    try {
      message = JSON.parse(text);
    } catch (e) {
      this._replyError(null, ErrorCode.PARSE_ERROR, `invalid JSON: ${e.message}`);
      return;
    }
    if (!isObject(message)) {
      const what = Array.isArray(message) ? 'batches are not supported' : 'a message must be a JSON object';
      this._replyError(null, ErrorCode.INVALID_REQUEST, what);
      return;
    }
    if (!('id' in message)) return; // a notification: the host sends none this SDK knows
    const { id, method, params } = message;
    if (method === undefined) {
      // The answer to a host call.
      const waiter = this._pending.get(id);
      if (!waiter) return;
      this._pending.delete(id);
      if (isObject(message.error)) {
        const { code = ErrorCode.INTERNAL_ERROR, message: text = '', data } = message.error;
        waiter.reject(new HostError(String(text), code, data));
      } else {
        waiter.resolve(message.result === undefined ? null : message.result);
      }
      return;
    }
    if (typeof method !== 'string') {
      this._replyError(id, ErrorCode.INVALID_REQUEST, '`method` must be a string');
      return;
    }
    const work = this._handle(id, method, params);
    if (method === 'initialize') this._initializing = work;
    this._inFlight.add(work);
    work.finally(() => this._inFlight.delete(work));
  }

  async _handle(id, method, params) {
    let result;
    try {
      if (method !== 'initialize') await this._initializing;
      result = await this._dispatch(method, params);
    } catch (err) {
      if (err instanceof RpcError) {
        this._replyError(id, err.code, err.message, err.data);
      } else {
        process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
        const message = err instanceof Error ? err.message || err.name : String(err);
        this._replyError(id, ErrorCode.INTERNAL_ERROR, message);
      }
      return;
    }
    this._reply(id, result);
  }

  async _dispatch(method, params) {
    if (method === 'initialize') return this._initialize(params);
    if (method === 'shutdown') {
      if (this._onShutdown) {
        try {
          await this._onShutdown();
        } catch (err) {
          process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
        }
      }
      return null;
    }
    if (HOOKS.includes(method) && this._hooks.has(method)) {
      if (!isObject(params) || !isObject(params.context)) {
        throw new RpcError('params must be an object with a `context` object', ErrorCode.INVALID_PARAMS);
      }
      const ctx = context(params.context);
      const fn = this._hooks.get(method);
      if (method === 'before_task') await fn(ctx);
      else if (method === 'after_task') {
        await fn(ctx, { status: '', exit_code: null, duration_ms: 0, cached: false, ...(params.result ?? {}) });
      } else {
        await fn(ctx, { message: '', exit_code: null, ...(params.error ?? {}) });
      }
      return null;
    }
    if (method === 'command' && this._commands.size > 0) {
      if (!isObject(params) || typeof params.name !== 'string') {
        throw new RpcError('params must be an object with a `name` string', ErrorCode.INVALID_PARAMS);
      }
      const entry = this._commands.get(params.name);
      if (!entry) throw new RpcError(`unknown command \`${params.name}\``, ErrorCode.INVALID_PARAMS);
      const args = Array.isArray(params.args) ? params.args.map(String) : [];
      return toCommandResult(await entry.fn(args, String(params.cwd ?? '')));
    }
    throw new RpcError(`method \`${method}\` not found`, ErrorCode.METHOD_NOT_FOUND);
  }

  async _initialize(params) {
    if (!isObject(params) || !Array.isArray(params.protocol_versions)) {
      throw new RpcError('params must be an object with a `protocol_versions` list', ErrorCode.INVALID_PARAMS);
    }
    const common = PROTOCOL_VERSIONS.filter((v) => params.protocol_versions.includes(v));
    if (common.length === 0) {
      throw new RpcError(
        `unsupported protocol versions ${JSON.stringify(params.protocol_versions)}; ` +
          `this plugin speaks ${JSON.stringify(PROTOCOL_VERSIONS)}`,
        ErrorCode.UNSUPPORTED_PROTOCOL,
        { supported: [...PROTOCOL_VERSIONS] },
      );
    }
    const init = {
      taskrush_version: '',
      name: '',
      project_root: '',
      permissions: [],
      host_methods: [],
      ...params,
      config: params.config ?? {},
    };
    this.initParams = init;
    this.config = init.config;
    this.projectRoot = init.project_root;
    this.protocol = Math.max(...common);
    if (this._onInitialize) await this._onInitialize(init);
    return {
      name: this.name,
      version: this.version,
      protocol: this.protocol,
      hooks: HOOKS.filter((h) => this._hooks.has(h)),
      commands: [...this._commands].map(([name, { description }]) => ({ name, description })),
    };
  }

  _reply(id, result) {
    let line;
    try {
      line = JSON.stringify({ jsonrpc: '2.0', id, result: result === undefined ? null : result });
    } catch (err) {
      this._replyError(id, ErrorCode.INTERNAL_ERROR, `the result is not valid JSON: ${err.message}`);
      return;
    }
    if (Buffer.byteLength(line) > MAX_LINE_BYTES) {
      this._replyError(id, ErrorCode.INTERNAL_ERROR, `the result is longer than ${MAX_LINE_BYTES} bytes`);
      return;
    }
    this._write(line);
  }

  _replyError(id, code, message, data) {
    const error = { code, message: String(message) };
    if (data !== undefined) error.data = data;
    let line;
    try {
      line = JSON.stringify({ jsonrpc: '2.0', id, error });
    } catch {
      line = JSON.stringify({ jsonrpc: '2.0', id, error: { code, message: error.message } });
    }
    if (Buffer.byteLength(line) > MAX_LINE_BYTES) {
      line = JSON.stringify({ jsonrpc: '2.0', id, error: { code, message: error.message.slice(0, 65536) } });
    }
    this._write(line);
  }

  _send(message) {
    const line = JSON.stringify(message);
    if (Buffer.byteLength(line) <= MAX_LINE_BYTES) this._write(line);
  }

  _write(line) {
    // One call per whole line: Node is single-threaded, so lines never interleave.
    if (this._output) this._output.write(line + '\n');
  }
}

// --------------------------------------------------------------------------
// HTTP through the host's proxy

/** An HTTP answer: `status`, `reason`, `headers` (lower-case names), `body` (a Buffer). */
class HttpResponse {
  constructor(status, reason, headers, body) {
    this.status = status;
    this.reason = reason;
    this.headers = headers;
    this.body = body;
  }
  get ok() {
    return this.status >= 200 && this.status < 300;
  }
  text() {
    return this.body.toString('utf8');
  }
  json() {
    return JSON.parse(this.text());
  }
}

/** The host's proxy for `protocol` (`http:`/`https:`) from the environment, or null. */
function proxyFor(protocol) {
  const scheme = protocol.replace(':', '');
  const value = process.env[`${scheme}_proxy`] || process.env[`${scheme.toUpperCase()}_PROXY`];
  return value ? new URL(value) : null;
}

function collect(stream) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/**
 * Send an HTTP(S) request through the daemon's network proxy.
 *
 * A plugin whose manifest grants `network` hosts gets `HTTP_PROXY` and
 * `HTTPS_PROXY` pointing at a proxy of the daemon that allows only those
 * hosts; in the sandbox it cannot connect anywhere else. Node's built-in
 * `fetch` ignores these variables: use this. Plain http goes to the proxy as
 * an absolute-URI request, https through a `CONNECT` tunnel (TLS end to end).
 * `NO_PROXY` is not honoured. `body` may be a Buffer, a string, or an object
 * sent as JSON. Resolves with every HTTP status (a host the grant does not
 * allow is the proxy's `403`, its reason in the body, for http and https);
 * rejects on network errors and after `timeout` ms.
 */
function httpRequest(method, url, { body, headers = {}, timeout = 10000 } = {}) {
  const http = require('node:http');
  const https = require('node:https');
  const tls = require('node:tls');
  return new Promise((resolve, reject) => {
    let target;
    try {
      target = new URL(url);
    } catch (e) {
      reject(e);
      return;
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      reject(new Error(`not an http(s) URL: ${url}`));
      return;
    }
    const hdrs = { ...headers };
    let data = null;
    if (Buffer.isBuffer(body)) data = body;
    else if (typeof body === 'string') data = Buffer.from(body);
    else if (body !== undefined && body !== null) {
      data = Buffer.from(JSON.stringify(body));
      if (!Object.keys(hdrs).some((k) => k.toLowerCase() === 'content-type')) hdrs['Content-Type'] = 'application/json';
    }
    if (data) hdrs['Content-Length'] = String(data.length);
    const secure = target.protocol === 'https:';
    const port = Number(target.port) || (secure ? 443 : 80);
    const proxy = proxyFor(target.protocol);
    const requests = [];
    const timer = setTimeout(() => {
      for (const r of requests) r.destroy(new Error(`no answer from ${target.host} within ${timeout} ms`));
    }, timeout);
    const done = (fn) => (v) => {
      clearTimeout(timer);
      fn(v);
    };
    const ok = done(resolve);
    const fail = done(reject);
    const answer = (res) => {
      collect(res).then(
        (buf) => ok(new HttpResponse(res.statusCode, res.statusMessage || '', res.headers, buf)),
        fail,
      );
    };
    const send = (options, mod) => {
      const req = mod.request({ method: method.toUpperCase(), headers: hdrs, agent: false, ...options }, answer);
      requests.push(req);
      req.on('error', fail);
      req.end(data || undefined);
    };
    const path = target.pathname + target.search;
    if (!proxy) {
      send({ host: target.hostname, port, path, servername: target.hostname }, secure ? https : http);
    } else if (!secure) {
      send({ host: proxy.hostname, port: Number(proxy.port) || 80, path: target.href, setHost: false, headers: { Host: target.host, ...hdrs } }, http);
    } else {
      const authority = `${target.hostname.includes(':') ? `[${target.hostname}]` : target.hostname}:${port}`;
      const connect = http.request({
        host: proxy.hostname,
        port: Number(proxy.port) || 80,
        method: 'CONNECT',
        path: authority,
        headers: { Host: authority },
        agent: false,
      });
      requests.push(connect);
      connect.on('error', fail);
      connect.on('connect', (res, socket, head) => {
        if (res.statusCode !== 200) {
          // The proxy's refusal, with its reason, as the answer.
          collect(socket).then(
            (rest) => ok(new HttpResponse(res.statusCode, res.statusMessage || '', res.headers, Buffer.concat([head, rest]))),
            fail,
          );
          return;
        }
        const tlsSocket = tls.connect({ socket, servername: target.hostname.replace(/^\[|\]$/g, '') });
        send({ host: target.hostname, port, path, createConnection: () => tlsSocket }, https);
      });
      connect.end();
    }
  });
}

/**
 * The host calls of a running plugin (`plugin.host`), each checked by the
 * host against the plugin's grants and audited; every method returns a
 * promise.
 */
class Host {
  constructor(plugin) {
    this._plugin = plugin;
  }

  /** Whether the host offered `method` in `initialize`. */
  offers(method) {
    const init = this._plugin.initParams;
    return Boolean(init && (init.host_methods || []).includes(method));
  }

  /** A variable the `environment` grant names (`null` when unset). */
  async envGet(name) {
    const r = await this._plugin.hostCall('env_get', { name });
    return r && r.value !== undefined ? r.value : null;
  }

  /** A UTF-8 file within the granted paths (relative: to the project root). */
  async readFile(path) {
    return (await this._plugin.hostCall('read_file', { path })).contents;
  }

  /** Writes a file within the granted writable paths; resolves to the bytes written. */
  async writeFile(path, contents, { append = false } = {}) {
    return (await this._plugin.hostCall('write_file', { path, contents, append })).bytes_written;
  }

  /** An HTTP(S) request made by the host to a granted `network` host: `{status, headers, body}`. */
  httpRequest(url, { method = 'GET', headers = {}, body = '', timeoutMs } = {}) {
    const params = { method, url, headers, body };
    if (timeoutMs !== undefined) params.timeout_ms = timeoutMs;
    return this._plugin.hostCall('http_request', params);
  }

  /** Runs a granted `process` program (no shell): `{exit_code, stdout, stderr}`. */
  runCommand(program, args = [], { cwd, stdin = '' } = {}) {
    const params = { program, args, stdin };
    if (cwd !== undefined) params.cwd = cwd;
    return this._plugin.hostCall('run_command', params);
  }

  /** The project's tasks as written (`tasks`, by name) and `edges` `[task, dependency]`. */
  taskGraph() {
    return this._plugin.hostCall('task_graph', {});
  }

  /** The tasks of the current run that ended so far: `{run_id, tasks}`. */
  taskResults(runId = undefined) {
    return this._plugin.hostCall('task_results', runId === undefined ? {} : { run_id: runId });
  }

  /** Runs `command` of another plugin through the host (declared in `[permissions] plugins`, granted). */
  async callCommand(plugin, command, args = []) {
    const r = await this._plugin.hostCall('call_command', { plugin, command, args });
    return new CommandResult(r.exit_code ?? 0, r.stdout ?? '', r.stderr ?? '');
  }
}

module.exports = {
  Plugin,
  Host,
  HostError,
  httpRequest,
  HttpResponse,
  Veto,
  RpcError,
  CommandResult,
  ErrorCode,
  PROTOCOL_VERSIONS,
  MAX_LINE_BYTES,
};
