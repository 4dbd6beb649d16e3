// Tests of @NAME@, driven the way the daemon drives it: JSON-RPC lines.
// Run: node --test
import test from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { plugin } from '../main.mjs';

async function serve(...calls) {
  const input = new PassThrough();
  const output = new PassThrough();
  let text = '';
  output.on('data', (d) => (text += d));
  const done = plugin.run({ input, output, exit: false });
  calls.forEach(([method, params], i) =>
    input.write(JSON.stringify({ jsonrpc: '2.0', id: i + 1, method, params }) + '\n'),
  );
  input.end();
  await done;
  const answers = {};
  for (const line of text.split('\n').filter(Boolean)) {
    const m = JSON.parse(line);
    if ('id' in m) answers[m.id] = m;
  }
  return answers;
}

const context = (task, config = {}) => ({ task_name: task, command: 'true', working_dir: '.', env_vars: {}, config, run_id: 1 });
const INIT = ['initialize', { protocol_versions: [1], taskrush_version: '0.3.0', name: '@NAME@', config: {}, project_root: '.', permissions: [] }];

test('a blocked task is vetoed', async () => {
  const got = await serve(INIT, ['before_task', { context: context('deploy', { block: ['deploy'] }) }]);
  assert.ok(got[1].result.hooks.includes('before_task'));
  assert.match(got[2].error.message, /blocked by @NAME@/);
});

test('the command says hello', async () => {
  const got = await serve(INIT, ['command', { name: '@NAME@', args: ['there'], cwd: '.' }]);
  assert.equal(got[2].result.stdout, 'hello from @NAME@ there\n');
});
