// Tests of security-scanner as the daemon runs it (a subprocess, cwd = its directory).
// Run: cd plugins-external/examples/security-scanner && node --test
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import readline from 'node:readline';

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

function start(config = {}) {
  const proc = spawn(process.execPath, ['main.mjs'], { cwd: DIR, env: { PATH: process.env.PATH } });
  const pending = [];
  const waiting = [];
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  readline.createInterface({ input: proc.stdout }).on('line', (line) => {
    const m = JSON.parse(line);
    if (!('id' in m)) return;
    const w = waiting.shift();
    if (w) w(m);
    else pending.push(m);
  });
  let id = 0;
  const call = (method, params) => {
    id += 1;
    proc.stdin.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    const mine = id;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer; stderr: ${stderr}`)), 5000);
      waiting.push((m) => {
        clearTimeout(t);
        assert.equal(m.id, mine);
        resolve(m);
      });
      if (pending.length) waiting.shift()(pending.shift());
    });
  };
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const init = call('initialize', {
    protocol_versions: [1],
    taskrush_version: '0.3.0',
    name: 'security-scanner',
    config,
    project_root: '/project',
    permissions: [],
  });
  const stop = async () => {
    await call('shutdown');
    proc.stdin.end();
    return exited;
  };
  return { call, init, stop, kill: () => proc.kill('SIGKILL') };
}

const context = (command, config = {}) => ({
  task_name: 'install',
  command,
  working_dir: '/project',
  env_vars: {},
  config,
  run_id: 1,
});

const DENY = ['curl .*\\| *sh', 'rm -rf /'];

test('handshake declares before_task and the scan command', async () => {
  const p = start({ deny: DENY });
  try {
    const r = await p.init;
    assert.deepEqual(r.result.hooks, ['before_task']);
    assert.equal(r.result.commands[0].name, 'scan');
    assert.equal(await p.stop(), 0);
  } finally {
    p.kill();
  }
});

test('before_task vetoes a matching command and names the pattern', async () => {
  const p = start({ deny: DENY });
  try {
    await p.init;
    let r = await p.call('before_task', { context: context('curl -fsSL https://x.example/install | sh', { deny: DENY }) });
    assert.equal(r.error.code, -32010);
    assert.equal(r.error.message, 'the command of task `install` matches the deny pattern `curl .*\\| *sh`');
    assert.deepEqual(r.error.data, { pattern: 'curl .*\\| *sh' });
    r = await p.call('before_task', { context: context('rm -rf / --no-preserve-root', { deny: DENY }) });
    assert.match(r.error.message, /`rm -rf \/`/);
    r = await p.call('before_task', { context: context('cargo build --release', { deny: DENY }) });
    assert.deepEqual(r, { jsonrpc: '2.0', id: 4, result: null });
    r = await p.call('before_task', { context: context('', { deny: DENY }) });
    assert.equal(r.result, null);
  } finally {
    p.kill();
  }
});

test('per-task deny patterns replace the global ones; defaults apply without any', async () => {
  const p = start({});
  try {
    await p.init;
    let r = await p.call('before_task', { context: context('wget -qO- https://x.example | sudo bash') });
    assert.equal(r.error.code, -32010);
    r = await p.call('before_task', { context: context('rm -rf ./build') });
    assert.equal(r.result, null);
    r = await p.call('before_task', { context: context('make deploy', { deny: ['^make deploy$'] }) });
    assert.match(r.error.message, /`\^make deploy\$`/);
    r = await p.call('before_task', { context: context('make deploy', { deny: ['('] }) });
    assert.equal(r.error.code, -32603, 'a broken per-task pattern fails the task');
  } finally {
    p.kill();
  }
});

test('a broken global pattern fails initialize', async () => {
  const p = start({ deny: ['curl (unclosed'] });
  try {
    const r = await p.init;
    assert.equal(r.error.code, -32603);
    assert.match(r.error.message, /invalid deny pattern `curl \(unclosed`/);
  } finally {
    p.kill();
  }
});

test('scan prints ok or denied for each argument', async () => {
  const p = start({ deny: DENY });
  try {
    await p.init;
    let r = await p.call('command', { name: 'scan', args: ['make test', 'curl x | sh'], cwd: '/tmp' });
    assert.deepEqual(r.result, {
      exit_code: 1,
      stdout: 'ok: make test\ndenied: curl x | sh (matches `curl .*\\| *sh`)\n',
      stderr: '',
    });
    r = await p.call('command', { name: 'scan', args: ['make test'], cwd: '/tmp' });
    assert.deepEqual(r.result, { exit_code: 0, stdout: 'ok: make test\n', stderr: '' });
    r = await p.call('command', { name: 'scan', args: [], cwd: '/tmp' });
    assert.equal(r.result.exit_code, 2);
    assert.equal(await p.stop(), 0);
  } finally {
    p.kill();
  }
});
