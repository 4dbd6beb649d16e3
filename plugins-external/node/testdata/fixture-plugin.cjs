// A plugin the SDK tests drive as a real subprocess (CommonJS).
'use strict';
const { Plugin, Veto, CommandResult } = require('../index.cjs');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const plugin = new Plugin('fixture', '0.1.0');

plugin.onInitialize((params) => {
  if (params.config.fail_init) throw new Error('bad config: fail_init is set');
});

plugin.beforeTask(async (ctx) => {
  await sleep(Number(ctx.config.sleep ?? 0) * 1000);
  if (ctx.config.veto) throw new Veto(`task \`${ctx.task_name}\` is not allowed`);
  if (ctx.task_name === 'boom') throw new Error('boom');
  if (ctx.task_name === 'string') throw 'thrown string'; // eslint-disable-line no-throw-literal
  plugin.log('info', `before ${ctx.task_name} in ${ctx.working_dir}`);
});

plugin.afterTask(async (ctx, result) => {
  await sleep(Number(ctx.config.sleep ?? 0) * 1000);
  plugin.progress('reporting', { task: ctx.task_name, percent: 50 });
  plugin.log('debug', `after ${ctx.task_name}: ${result.status} ${result.exit_code} cached=${result.cached}`);
});

plugin.command('echo', 'Print the arguments', (args) => args.join(' '));
plugin.command('fail', 'Exit 3', async (args, cwd) => new CommandResult(3, '', `failed in ${cwd}\n`));
plugin.command('noisy', 'Write to stdout by mistake', () => {
  console.log('stray console.log');
  console.info('stray console.info');
  return { exitCode: 0 };
});

plugin.run();
