// Tests of the Node.js SDK through a real pipe (a subprocess) and in-memory streams.
// Run: cd plugins-external/node && node --test
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { PassThrough } = require('node:stream');
const { Plugin, Veto, MAX_LINE_BYTES } = require('../index.cjs');

const FIXTURE = path.join(__dirname, '..', 'testdata', 'fixture-plugin.cjs');
const ESM_FIXTURE = path.join(__dirname, '..', 'testdata', 'esm-plugin.mjs');

function initParams({ versions = [1], config = {} } = {}) {
  return {
    protocol_versions: versions,
    taskrush_version: '0.3.0',
    name: 'fixture',
    config,
    project_root: '/project',
    permissions: [{ kind: 'environment', vars: ['SLACK_WEBHOOK'] }],
  };
}

function context(task = 'build', config = {}) {
  return { task_name: task, command: 'make', working_dir: '/project', env_vars: {}, config, run_id: 7 };
}

/** The host side of a plugin subprocess. */
class Host {
  constructor(script = FIXTURE) {
    this.proc = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.messages = [];
    this.waiters = [];
    this.stderr = '';
    this.closed = false;
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
    let pending = '';
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (data) => {
      pending += data;
      let nl;
      while ((nl = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        this.messages.push(JSON.parse(line)); // every stdout line must be JSON
        this.wake();
      }
    });
    this.proc.stdout.on('end', () => {
      this.closed = true;
      this.wake();
    });
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', (data) => {
      this.stderr += data;
    });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  async next(timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length === 0) {
      if (this.closed) throw new Error('plugin closed stdout');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for the plugin');
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.messages.shift();
  }

  async response() {
    const notes = [];
    for (;;) {
      const m = await this.next();
      if ('id' in m) return { response: m, notes };
      notes.push(m);
    }
  }

  send(message) {
    this.proc.stdin.write((typeof message === 'string' ? message : JSON.stringify(message)) + '\n');
  }

  request(id, method, params) {
    const m = { jsonrpc: '2.0', id, method };
    if (params !== undefined) m.params = params;
    this.send(m);
  }

  call(id, method, params) {
    this.request(id, method, params);
    return this.response();
  }

  async initialize(opts) {
    return (await this.call(0, 'initialize', initParams(opts))).response;
  }

  async close() {
    this.proc.stdin.end();
    return this.exited;
  }

  kill() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

function withHost(name, fn, script) {
  test(name, async () => {
    const host = new Host(script);
    try {
      await fn(host);
    } finally {
      host.kill();
    }
  });
}

withHost('handshake chooses protocol 1 and lists only implemented hooks', async (host) => {
  const r = await host.initialize({ versions: [2, 1] });
  assert.equal(r.jsonrpc, '2.0');
  assert.equal(r.id, 0);
  assert.deepEqual(r.result, {
    name: 'fixture',
    version: '0.1.0',
    protocol: 1,
    hooks: ['before_task', 'after_task'],
    commands: [
      { name: 'echo', description: 'Print the arguments' },
      { name: 'fail', description: 'Exit 3' },
      { name: 'noisy', description: 'Write to stdout by mistake' },
    ],
  });
});

withHost('handshake refuses unknown protocol majors with -32011', async (host) => {
  const r = await host.initialize({ versions: [2, 3] });
  assert.equal(r.error.code, -32011);
  assert.match(r.error.message, /\[2,3\]/);
});

withHost('a failing onInitialize is an internal error', async (host) => {
  const r = await host.initialize({ config: { fail_init: true } });
  assert.equal(r.error.code, -32603);
  assert.match(r.error.message, /fail_init/);
});

withHost('hooks answer null and logs and progress reach the host', async (host) => {
  await host.initialize();
  let { response, notes } = await host.call(1, 'before_task', { context: context() });
  assert.deepEqual(response, { jsonrpc: '2.0', id: 1, result: null });
  assert.deepEqual(notes, [
    { jsonrpc: '2.0', method: 'log', params: { level: 'info', message: 'before build in /project' } },
  ]);
  ({ response, notes } = await host.call('a', 'after_task', {
    context: context(),
    result: { status: 'failed', exit_code: 2, duration_ms: 12 },
  }));
  assert.deepEqual(response, { jsonrpc: '2.0', id: 'a', result: null });
  assert.deepEqual(notes[0].params, { message: 'reporting', task: 'build', percent: 50 });
  assert.deepEqual(notes[1].params, { level: 'debug', message: 'after build: failed 2 cached=false' });
});

withHost('a Veto in beforeTask is error -32010 with the reason', async (host) => {
  await host.initialize();
  const { response } = await host.call(1, 'before_task', { context: context('deploy', { veto: true }) });
  assert.deepEqual(response.error, { code: -32010, message: 'task `deploy` is not allowed' });
});

withHost('other errors are internal errors and the plugin carries on', async (host) => {
  await host.initialize();
  let { response } = await host.call(1, 'before_task', { context: context('boom') });
  assert.deepEqual(response.error, { code: -32603, message: 'boom' });
  ({ response } = await host.call(2, 'before_task', { context: context('string') }));
  assert.deepEqual(response.error, { code: -32603, message: 'thrown string' });
  ({ response } = await host.call(3, 'before_task', { context: context() }));
  assert.equal(response.result, null);
});

withHost('commands', async (host) => {
  await host.initialize();
  let { response } = await host.call(1, 'command', { name: 'echo', args: ['a', 'b'], cwd: '/tmp' });
  assert.deepEqual(response.result, { exit_code: 0, stdout: 'a b\n', stderr: '' });
  ({ response } = await host.call(2, 'command', { name: 'fail', args: [], cwd: '/tmp' }));
  assert.deepEqual(response.result, { exit_code: 3, stdout: '', stderr: 'failed in /tmp\n' });
  ({ response } = await host.call(3, 'command', { name: 'nope', args: [], cwd: '/tmp' }));
  assert.equal(response.error.code, -32602);
});

withHost('console output goes to stderr, not into the protocol', async (host) => {
  await host.initialize();
  const { response } = await host.call(1, 'command', { name: 'noisy', args: [], cwd: '/tmp' });
  assert.equal(response.result.exit_code, 0);
  assert.equal(await host.close(), 0);
  assert.match(host.stderr, /stray console\.log/);
  assert.match(host.stderr, /stray console\.info/);
});

withHost('unknown methods and undeclared hooks are -32601', async (host) => {
  await host.initialize();
  let { response } = await host.call(1, 'frobnicate', {});
  assert.equal(response.error.code, -32601);
  ({ response } = await host.call(2, 'on_task_failure', { context: context(), error: { message: 'x' } }));
  assert.equal(response.error.code, -32601);
});

withHost('junk gets a parse error, notifications get no answer', async (host) => {
  await host.initialize();
  host.send('this is not json');
  host.send({ jsonrpc: '2.0', method: 'whatever', params: {} });
  host.send('[]');
  let { response } = await host.response();
  assert.equal(response.id, null);
  assert.equal(response.error.code, -32700);
  ({ response } = await host.response());
  assert.equal(response.error.code, -32600);
  ({ response } = await host.call(1, 'before_task', { context: context() }));
  assert.equal(response.id, 1);
});

withHost('concurrent requests are answered by id as they finish', async (host) => {
  await host.initialize();
  const started = Date.now();
  host.request(1, 'before_task', { context: context('slow', { sleep: 0.6 }) });
  for (let i = 2; i <= 6; i++) host.request(i, 'before_task', { context: context('fast') });
  const ids = [];
  while (ids.length < 6) {
    const { response } = await host.response();
    assert.equal(response.result, null);
    ids.push(response.id);
  }
  assert.equal(ids.at(-1), 1);
  assert.deepEqual([...ids].sort(), [1, 2, 3, 4, 5, 6]);
  assert.ok(Date.now() - started < 1500);
});

withHost('shutdown then EOF exits 0 promptly', async (host) => {
  await host.initialize();
  const { response } = await host.call(9, 'shutdown');
  assert.deepEqual(response, { jsonrpc: '2.0', id: 9, result: null });
  const started = Date.now();
  assert.equal(await host.close(), 0);
  assert.ok(Date.now() - started < 1000);
});

withHost('EOF without shutdown exits 0 after answering in-flight requests', async (host) => {
  await host.initialize();
  host.request(1, 'after_task', { context: context('x', { sleep: 0.3 }), result: { status: 'success', duration_ms: 1 } });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(await host.close(), 0);
  const { response } = await host.response();
  assert.deepEqual(response, { jsonrpc: '2.0', id: 1, result: null });
});

withHost(
  'the ESM entry exports the same SDK',
  async (host) => {
    const r = await host.initialize();
    assert.equal(r.result.name, 'esm-fixture');
    assert.deepEqual(r.result.hooks, ['before_task']);
    const { response } = await host.call(1, 'before_task', { context: context('x') });
    assert.deepEqual(response.error, { code: -32010, message: 'vetoed x' });
    assert.equal(await host.close(), 0);
  },
  ESM_FIXTURE,
);

// In-memory streams.

async function serve(plugin, messages) {
  const input = new PassThrough();
  const output = new PassThrough();
  const chunks = [];
  output.on('data', (c) => chunks.push(c));
  const write = process.stderr.write;
  process.stderr.write = () => true; // stack traces of failing handlers
  const done = plugin.run({ input, output }).finally(() => {
    process.stderr.write = write;
  });
  for (const m of messages) input.write((typeof m === 'string' ? m : JSON.stringify(m)) + '\n');
  input.end();
  assert.equal(await done, 0);
  return Buffer.concat(chunks)
    .toString('utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

test('contexts have defaults and keep unknown fields', async () => {
  const plugin = new Plugin('mem', '1.0.0');
  const seen = {};
  plugin.onTaskFailure((ctx, error) => {
    seen.ctx = ctx;
    seen.error = error;
  });
  const out = await serve(plugin, [
    { jsonrpc: '2.0', id: 1, method: 'initialize', params: initParams({ config: { a: { b: 1 } } }) },
    {
      jsonrpc: '2.0',
      id: 2,
      method: 'on_task_failure',
      params: {
        context: { task_name: 't', command: 'false', working_dir: '/p', config: null, run_id: 1, future: 1 },
        error: { message: 'exit 1', exit_code: 1 },
      },
    },
  ]);
  assert.deepEqual(out[0].result.hooks, ['on_task_failure']);
  assert.deepEqual(out[1], { jsonrpc: '2.0', id: 2, result: null });
  assert.equal(plugin.config.a.b, 1);
  assert.equal(plugin.projectRoot, '/project');
  assert.deepEqual(seen.ctx.config, {});
  assert.deepEqual(seen.ctx.env_vars, {});
  assert.equal(seen.ctx.future, 1);
  assert.deepEqual(seen.error, { message: 'exit 1', exit_code: 1 });
});

test('lines over 16 MiB are dropped with a parse error', async () => {
  const plugin = new Plugin('mem', '1.0.0');
  const huge = '{"jsonrpc":"2.0","id":1,"method":"x","params":"' + 'a'.repeat(MAX_LINE_BYTES) + '"}';
  const out = await serve(plugin, [huge, { jsonrpc: '2.0', id: 2, method: 'x' }]);
  assert.equal(out[0].id, null);
  assert.equal(out[0].error.code, -32700);
  assert.equal(out[1].id, 2);
  assert.equal(out[1].error.code, -32601);
});

test('lines split across chunks and CRLF are handled', async () => {
  const plugin = new Plugin('mem', '1.0.0');
  plugin.beforeTask(() => {
    throw new Veto('no');
  });
  const input = new PassThrough();
  const output = new PassThrough();
  const chunks = [];
  output.on('data', (c) => chunks.push(c));
  const done = plugin.run({ input, output });
  const line = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 'é', method: 'before_task', params: { context: context() } }) + '\r\n');
  for (let i = 0; i < line.length; i += 7) input.write(line.subarray(i, i + 7));
  input.end();
  await done;
  const out = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  assert.deepEqual(out, { jsonrpc: '2.0', id: 'é', error: { code: -32010, message: 'no' } });
});

test('command results of the wrong type become internal errors', async () => {
  const plugin = new Plugin('mem', '1.0.0');
  plugin.command('symbol', 'returns junk', () => Symbol('x'));
  plugin.command('object', async () => ({ exitCode: 4, stdout: 'out' }));
  const out = await serve(plugin, [
    { jsonrpc: '2.0', id: 1, method: 'command', params: { name: 'symbol', cwd: '/' } },
    { jsonrpc: '2.0', id: 2, method: 'command', params: { name: 'object', cwd: '/' } },
  ]);
  assert.equal(out.find((m) => m.id === 1).error.code, -32603);
  assert.deepEqual(out.find((m) => m.id === 2).result, { exit_code: 4, stdout: 'out', stderr: '' });
});

test('command without commands is an unknown method', async () => {
  const plugin = new Plugin('mem', '1.0.0');
  const out = await serve(plugin, [{ jsonrpc: '2.0', id: 1, method: 'command', params: { name: 'x', cwd: '/' } }]);
  assert.equal(out[0].error.code, -32601);
});

// httpRequest: through a stand-in for the daemon's proxy, even for a made-up host.
test('httpRequest goes through HTTP_PROXY and HTTPS_PROXY, NO_PROXY ignored', async (t) => {
  const http = require('node:http');
  const { httpRequest } = require('../index.cjs');
  const seen = [];
  const proxy = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      seen.push([req.method, req.url, req.headers.host, Buffer.concat(chunks).toString()]);
      res.end('{"ok":true}');
    });
  });
  proxy.on('connect', (req, socket) => {
    seen.push(['CONNECT', req.url]);
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 23\r\nConnection: close\r\n\r\ntaskrush proxy: denied\n');
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  t.after(() => proxy.close());
  const url = `http://127.0.0.1:${proxy.address().port}`;
  const saved = { ...process.env };
  t.after(() => {
    process.env = saved;
  });
  Object.assign(process.env, { HTTP_PROXY: url, HTTPS_PROXY: url, NO_PROXY: '*' });
  const r = await httpRequest('POST', 'http://receiver.test/hook?x=1', { body: { text: 'hi' } });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json(), { ok: true });
  assert.deepEqual(seen[0], ['POST', 'http://receiver.test/hook?x=1', 'receiver.test', '{"text":"hi"}']);
  const refused = await httpRequest('GET', 'https://other.test/x');
  assert.deepEqual(seen[1], ['CONNECT', 'other.test:443']);
  assert.equal(refused.status, 403);
  assert.match(refused.text(), /denied/);
});

/** A plugin over in-memory streams; the test plays the host. */
function hostCallHarness(plugin, hostMethods) {
  const input = new PassThrough();
  const output = new PassThrough();
  const lines = [];
  const waiters = [];
  let pending = '';
  output.setEncoding('utf8');
  output.on('data', (data) => {
    pending += data;
    let nl;
    while ((nl = pending.indexOf('\n')) !== -1) {
      lines.push(JSON.parse(pending.slice(0, nl)));
      pending = pending.slice(nl + 1);
      while (waiters.length && lines.length) waiters.shift()(lines.shift());
    }
  });
  const done = plugin.run({ input, output });
  const send = (m) => input.write(`${JSON.stringify(m)}\n`);
  const recv = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiters.push(r)));
  send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { ...initParams(), host_methods: hostMethods } });
  return { send, recv, end: () => input.end(), done };
}

test('a host call is answered while other requests are served meanwhile', async () => {
  const plugin = new Plugin('p', '1.0.0');
  plugin.command('count', async () => {
    const graph = await plugin.host.taskGraph();
    return `${Object.keys(graph.tasks).length} tasks, edge ${graph.edges[0].join('->')}`;
  });
  plugin.beforeTask(() => {});
  const h = hostCallHarness(plugin, ['task_graph']);
  assert.equal((await h.recv()).id, 1);
  h.send({ jsonrpc: '2.0', id: 2, method: 'command', params: { name: 'count', cwd: '/' } });
  const call = await h.recv();
  assert.equal(call.method, 'task_graph');
  h.send({ jsonrpc: '2.0', id: 3, method: 'before_task', params: { context: context() } });
  assert.deepEqual(await h.recv(), { jsonrpc: '2.0', id: 3, result: null });
  h.send({ jsonrpc: '2.0', id: call.id, result: { root: '/p', tasks: { a: {}, b: {} }, edges: [['b', 'a']] } });
  const answer = await h.recv();
  assert.equal(answer.id, 2);
  assert.equal(answer.result.stdout, '2 tasks, edge b->a\n');
  h.end();
  await h.done;
});

test('a call the host did not offer fails at once naming it', async () => {
  const plugin = new Plugin('p', '1.0.0');
  plugin.command('results', async () => {
    try {
      await plugin.host.taskResults();
      return 'sent';
    } catch (e) {
      return e.message;
    }
  });
  const h = hostCallHarness(plugin, ['env_get']);
  await h.recv();
  h.send({ jsonrpc: '2.0', id: 2, method: 'command', params: { name: 'results', cwd: '/' } });
  const answer = await h.recv();
  assert.equal(answer.id, 2, 'no request may reach the host');
  assert.equal(answer.result.stdout, 'the host does not offer `task_results`; it is older than this plugin\n');
  h.end();
  await h.done;
});

test('a denied host call rejects with permissionDenied and its data', async () => {
  const plugin = new Plugin('p', '1.0.0');
  plugin.command('token', async () => {
    try {
      await plugin.host.envGet('TOKEN');
      return 'allowed';
    } catch (e) {
      return `${e.permissionDenied} ${e.data.permission} ${e.data.item}`;
    }
  });
  const h = hostCallHarness(plugin, ['env_get']);
  await h.recv();
  h.send({ jsonrpc: '2.0', id: 2, method: 'command', params: { name: 'token', cwd: '/' } });
  const call = await h.recv();
  assert.deepEqual([call.method, call.params], ['env_get', { name: 'TOKEN' }]);
  h.send({
    jsonrpc: '2.0',
    id: call.id,
    error: { code: -32020, message: 'permission denied', data: { permission: 'environment', item: 'TOKEN' } },
  });
  assert.equal((await h.recv()).result.stdout, 'true environment TOKEN\n');
  h.end();
  await h.done;
});
