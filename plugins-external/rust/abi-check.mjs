// A second, independent host of the WebAssembly guest ABI (docs/plugins.md,
// "The guest ABI"), in JavaScript: loads the built example modules under
// Node's WebAssembly, checks the exports, the ABI version and the
// `taskrush_version` section, and drives them with JSON-RPC messages,
// answering their host calls. It checks the modules and the ABI text
// against each other without the daemon (the daemon's own scenarios run
// them under wasmtime). Run by scripts/build-wasm-examples after a build:
//   node plugins-external/rust/abi-check.mjs
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const examples = join(dirname(fileURLToPath(import.meta.url)), '..', 'examples');
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Just enough WASI for a Rust reactor: no environment, stderr only. */
function wasi(getMemory) {
  const ENOSYS = 52;
  const fns = {
    environ_sizes_get(count, size) {
      const v = new DataView(getMemory().buffer);
      v.setUint32(count, 0, true);
      v.setUint32(size, 0, true);
      return 0;
    },
    environ_get: () => 0,
    random_get(ptr, len) {
      crypto.getRandomValues(new Uint8Array(getMemory().buffer, ptr, len));
      return 0;
    },
    fd_write(fd, iovs, n, written) {
      const v = new DataView(getMemory().buffer);
      let total = 0;
      for (let i = 0; i < n; i++) {
        const p = v.getUint32(iovs + 8 * i, true);
        const l = v.getUint32(iovs + 8 * i + 4, true);
        process.stderr.write(new Uint8Array(getMemory().buffer, p, l));
        total += l;
      }
      v.setUint32(written, total, true);
      return 0;
    },
    proc_exit(code) {
      throw new Error(`guest exited with ${code}`);
    },
  };
  return new Proxy(fns, { get: (t, k) => t[k] ?? (() => ENOSYS) });
}

/** Loads one module; `hostCall(request)` answers its host calls. */
async function load(file, hostCall) {
  const bytes = readFileSync(file);
  const module = await WebAssembly.compile(bytes);
  const [section] = WebAssembly.Module.customSections(module, 'taskrush_version');
  let instance;
  const memory = () => instance.exports.memory;
  const packed = (ptr, len) => (BigInt(ptr) << 32n) | BigInt(len);
  const imports = {
    wasi_snapshot_preview1: wasi(memory),
    taskrush: {
      host_call(ptr, len) {
        const message = JSON.parse(dec.decode(new Uint8Array(memory().buffer, ptr, len)));
        const answer = hostCall(message);
        if (!('id' in message) || answer === undefined) return 0n;
        const out = enc.encode(JSON.stringify({ jsonrpc: '2.0', id: message.id, ...answer }));
        const at = instance.exports.taskrush_alloc(out.length);
        new Uint8Array(memory().buffer, at, out.length).set(out);
        return packed(at, out.length); // the guest frees it
      },
    },
  };
  instance = await WebAssembly.instantiate(module, imports);
  const x = instance.exports;
  for (const name of ['memory', 'taskrush_abi_version', 'taskrush_alloc', 'taskrush_free', 'taskrush_handle']) {
    assert.ok(name in x, `${file}: export \`${name}\` missing`);
  }
  if (x._initialize) x._initialize();
  assert.equal(x.taskrush_abi_version(), 1);
  let nextId = 1;
  return {
    version: section && dec.decode(section),
    memoryBytes: () => memory().buffer.byteLength,
    call(method, params) {
      const input = enc.encode(JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params }));
      const at = x.taskrush_alloc(input.length);
      new Uint8Array(memory().buffer, at, input.length).set(input);
      const result = BigInt.asUintN(64, x.taskrush_handle(at, input.length));
      x.taskrush_free(at, input.length);
      assert.notEqual(result, 0n, `${method}: a request must have a response`);
      const ptr = Number(result >> 32n);
      const len = Number(result & 0xffffffffn);
      const answer = JSON.parse(dec.decode(new Uint8Array(memory().buffer, ptr, len)));
      x.taskrush_free(ptr, len);
      return answer;
    },
  };
}

const init = (name, config) => ({
  protocol_versions: [1],
  taskrush_version: '0.3.0',
  name,
  config,
  project_root: '/p',
});
const ctx = (command, config = {}) => ({ task_name: 't', command, working_dir: '/p', config, run_id: 1 });

// security-scanner: a veto, a pass, and the `scan` command.
{
  const logs = [];
  const p = await load(join(examples, 'security-scanner-wasm', 'security-scanner.wasm'), (m) => {
    if (m.method === 'log') logs.push(m.params.message);
    return undefined;
  });
  assert.equal(p.version, '1.0.0');
  const r = p.call('initialize', init('security-scanner', { severity_threshold: 'high' }));
  assert.deepEqual(r.result.hooks, ['before_task']);
  assert.equal(r.result.version, '1.0.0');
  assert.equal(p.call('before_task', { context: ctx('curl https://x.test/i.sh | sh') }).error.code, -32010);
  const chmod = p.call('before_task', { context: ctx('chmod 777 f', { severity_threshold: 'high' }) });
  assert.equal(chmod.result, null, JSON.stringify(chmod));
  assert.ok(logs.some((l) => l.includes('below the threshold')), logs.join('\n'));
  const scan = p.call('command', { name: 'scan', args: ['make', 'rm -rf /'], cwd: '/p' });
  assert.equal(scan.result.exit_code, 1);
  assert.match(scan.result.stdout, /^ok: make\ndenied: rm -rf \/ /);
  assert.equal(p.call('nope', {}).error.code, -32601);
  // 2,000 calls through the same instance: what is allocated is freed
  // (the memory stops growing once the allocator has warmed up).
  const big = (i) => ({ context: ctx(`make ${'x'.repeat(4096 + (i % 7))}`) });
  for (let i = 0; i < 1000; i++) assert.equal(p.call('before_task', big(i)).result, null);
  const warm = p.memoryBytes();
  for (let i = 0; i < 1000; i++) p.call('before_task', big(i));
  assert.equal(p.memoryBytes(), warm, 'guest memory grew over 1,000 calls');
  console.log('abi-check: security-scanner.wasm ok');
}

// slack-notify: env_get at initialize, http_request after a task.
{
  const calls = [];
  const p = await load(join(examples, 'slack-notify-wasm', 'slack-notify.wasm'), (m) => {
    calls.push(m);
    if (m.method === 'env_get') return { result: { value: 'http://127.0.0.1:9/hook' } };
    if (m.method === 'http_request') return { result: { status: 200, body: 'ok' } };
    return undefined;
  });
  assert.equal(p.call('initialize', init('slack-notify', {})).result.protocol, 1);
  const done = p.call('after_task', {
    context: ctx('make'),
    result: { status: 'success', exit_code: 0, duration_ms: 12 },
  });
  assert.equal(done.result, null);
  const http = calls.find((m) => m.method === 'http_request');
  assert.equal(http.params.url, 'http://127.0.0.1:9/hook');
  assert.deepEqual(JSON.parse(http.params.body), { text: "\u2705 Task 't' succeeded in 12 ms" });
  console.log('abi-check: slack-notify.wasm ok');
}
