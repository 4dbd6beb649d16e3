// A WebAssembly plugin on stdio, for the SDK's three-kinds test: loads a
// module built with `export_plugin!` for wasm32-wasip1 under Node's own
// WebAssembly engine (the SDK links none) and relays one JSON-RPC message
// per stdin line to `taskrush_handle`, writing its answer on stdout — so
// the test drives it exactly as it drives the plugin's process build.
// The guest's notifications (log lines) go to stdout too; its requests
// are answered "method not found" (this host offers no host call).
//   node wasm-stdio.mjs PLUGIN.wasm
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = readFileSync(process.argv[2]);
let instance;
const memory = () => instance.exports.memory;
const ENOSYS = 52;
const wasi = new Proxy(
  {
    environ_sizes_get(count, size) {
      const v = new DataView(memory().buffer);
      v.setUint32(count, 0, true);
      v.setUint32(size, 0, true);
      return 0;
    },
    environ_get: () => 0,
    random_get(ptr, len) {
      crypto.getRandomValues(new Uint8Array(memory().buffer, ptr, len));
      return 0;
    },
    fd_write(fd, iovs, n, written) {
      const v = new DataView(memory().buffer);
      let total = 0;
      for (let i = 0; i < n; i++) {
        const p = v.getUint32(iovs + 8 * i, true);
        const l = v.getUint32(iovs + 8 * i + 4, true);
        process.stderr.write(new Uint8Array(memory().buffer, p, l));
        total += l;
      }
      v.setUint32(written, total, true);
      return 0;
    },
    proc_exit(code) {
      throw new Error(`guest exited with ${code}`);
    },
  },
  { get: (t, k) => t[k] ?? (() => ENOSYS) },
);
const packed = (ptr, len) => (BigInt(ptr) << 32n) | BigInt(len);
const put = (value) => {
  const out = enc.encode(JSON.stringify(value));
  const at = instance.exports.taskrush_alloc(out.length);
  new Uint8Array(memory().buffer, at, out.length).set(out);
  return [at, out.length];
};
const imports = {
  wasi_snapshot_preview1: wasi,
  taskrush: {
    host_call(ptr, len) {
      const message = JSON.parse(dec.decode(new Uint8Array(memory().buffer, ptr, len)));
      if (!('id' in message)) {
        process.stdout.write(JSON.stringify(message) + '\n');
        return 0n;
      }
      const error = { code: -32601, message: `method not found: \`${message.method}\`` };
      return packed(...put({ jsonrpc: '2.0', id: message.id, error })); // the guest frees it
    },
  },
};
instance = await WebAssembly.instantiate(await WebAssembly.compile(bytes), imports);
const x = instance.exports;
if (x._initialize) x._initialize();
if (x.taskrush_abi_version() !== 1) throw new Error(`guest ABI ${x.taskrush_abi_version()}, not 1`);
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const [at, len] = put(JSON.parse(line));
  const result = BigInt.asUintN(64, x.taskrush_handle(at, len));
  x.taskrush_free(at, len);
  if (result === 0n) continue; // a notification: no answer
  const ptr = Number(result >> 32n);
  const n = Number(result & 0xffffffffn);
  process.stdout.write(dec.decode(new Uint8Array(memory().buffer, ptr, n)) + '\n');
  x.taskrush_free(ptr, n);
}
