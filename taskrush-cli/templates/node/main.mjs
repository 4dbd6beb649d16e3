// @NAME@: a TaskRush plugin (see README.md).
import { pathToFileURL } from 'node:url';
import { Plugin, Veto } from 'taskrush-plugin';

export const plugin = new Plugin('@NAME@', '0.1.0');

// Refuse the tasks the config's `block` list names; log the others.
plugin.beforeTask((ctx) => {
  if ((ctx.config.block || []).includes(ctx.task_name)) {
    throw new Veto(`\`${ctx.task_name}\` is blocked by @NAME@ (its \`block\` config)`);
  }
  plugin.info(`starting ${ctx.task_name}`);
});

plugin.afterTask((ctx, result) => {
  plugin.info(`${ctx.task_name} finished: ${result.status} in ${result.duration_ms} ms`);
  if (result.status === 'failed' && result.exit_code != null) {
    plugin.warn(`${ctx.task_name} failed with exit code ${result.exit_code}`);
  }
});

plugin.command('@NAME@', 'Say hello (an example command of @NAME@)', (args) =>
  `hello from @NAME@${args.map((a) => ' ' + a).join('')}\n`,
);

// Served when run as the entry point (not when a test imports it).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  plugin.run();
}
