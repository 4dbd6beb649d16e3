const { Plugin } = require('../../../plugins-external/node/index.cjs');
const plugin = new Plugin('noop-node', '1.0.0');
plugin.beforeTask(async () => {});
plugin.afterTask(async () => {});
plugin.run();
