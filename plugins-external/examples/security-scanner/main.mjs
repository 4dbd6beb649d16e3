// security-scanner: vetoes tasks whose command matches a deny pattern.
//
// Config (global config merged with the task's plugins.security-scanner):
//   deny: ["curl .*\\| *sh", "rm -rf /"]   regular expressions (JavaScript
//                                           syntax), searched in the command
// Without `deny`, DEFAULT_DENY applies. A pattern that does not compile
// fails the plugin's start (global config) or the task (per-task config):
// a scanner that cannot scan must not let tasks through.
//
// Command: `taskrush scan "some command" ...` prints ok/denied for each
// argument against the global patterns and exits 1 when any is denied.

// The SDK: installed as a package when it is, else the repository's copy.
const sdk = await import('taskrush-plugin').catch((err) => {
  if (err.code !== 'ERR_MODULE_NOT_FOUND') throw err;
  return import('../../node/index.mjs');
});
const { Plugin, Veto, CommandResult, RpcError, ErrorCode } = sdk;

const DEFAULT_DENY = [
  'curl\\s.*\\|\\s*(sudo\\s+)?(ba|z|da)?sh\\b',
  'wget\\s.*\\|\\s*(sudo\\s+)?(ba|z|da)?sh\\b',
  'rm\\s+-[a-zA-Z]*r[a-zA-Z]*f?\\s+/(\\s|$|\\*)',
];

const compiled = new Map();

function compile(pattern) {
  let re = compiled.get(pattern);
  if (!re) {
    try {
      re = new RegExp(pattern);
    } catch (err) {
      throw new RpcError(`invalid deny pattern \`${pattern}\`: ${err.message}`, ErrorCode.INTERNAL_ERROR);
    }
    compiled.set(pattern, re);
  }
  return re;
}

function patterns(config) {
  const deny = config?.deny ?? DEFAULT_DENY;
  const list = Array.isArray(deny) ? deny : [deny];
  return list.map(String);
}

/** The first pattern that `command` matches, or null. */
function firstMatch(command, deny) {
  for (const pattern of deny) {
    if (compile(pattern).test(command)) return pattern;
  }
  return null;
}

const plugin = new Plugin('security-scanner', '1.0.0');

plugin.onInitialize((params) => {
  const deny = patterns(params.config);
  deny.forEach(compile);
  plugin.log('debug', `${deny.length} deny pattern(s)`);
});

plugin.beforeTask((ctx) => {
  const pattern = firstMatch(ctx.command, patterns(ctx.config));
  if (pattern !== null) {
    throw new Veto(`the command of task \`${ctx.task_name}\` matches the deny pattern \`${pattern}\``, { pattern });
  }
});

plugin.command('scan', 'Check commands against the deny patterns: taskrush scan "CMD" ...', (args) => {
  if (args.length === 0) return new CommandResult(2, '', 'usage: taskrush scan "COMMAND" ...\n');
  const deny = patterns(plugin.config);
  let denied = 0;
  const lines = args.map((command) => {
    const pattern = firstMatch(command, deny);
    if (pattern === null) return `ok: ${command}`;
    denied += 1;
    return `denied: ${command} (matches \`${pattern}\`)`;
  });
  return new CommandResult(denied > 0 ? 1 : 0, lines.join('\n') + '\n', '');
});

plugin.run();
