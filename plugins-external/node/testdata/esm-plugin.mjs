// The same SDK through ESM, by package name and by path.
import { Plugin as ByName, Veto } from 'taskrush-plugin';
import sdk, { Plugin } from '../index.mjs';

if (ByName !== Plugin || sdk.Plugin !== Plugin) throw new Error('ESM and CommonJS exports differ');

const plugin = new Plugin('esm-fixture', '2.0.0');
plugin.beforeTask(async (ctx) => {
  throw new Veto(`vetoed ${ctx.task_name}`);
});
await plugin.run();
