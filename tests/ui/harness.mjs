// A real TaskRush setup for the page's browser tests and screenshots: a
// temp project with a `.rush` and Python plugins (the scenarios' fixture
// plugin, no SDK), a private daemon on a temp socket, Debian's Chromium
// driven by playwright-core (no browser download).
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, mkdirSync, rmSync, writeFileSync, existsSync, realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "..", "..");
export const binDir = resolve(process.env.TASKRUSH_BIN_DIR || join(repo, "target", "debug"));
export const chromiumPath = process.env.TASKRUSH_CHROMIUM || "/usr/bin/chromium";

// As the probe of this machine starts it: as root (CI) without the
// sandbox, and without the background networking a closed network refuses.
export const chromiumArgs = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/// Plugins of the project: `guard` is required and asks for `TOKEN` and
/// the project directory; the others are optional.
export const PLUGINS = [
  { name: "guard", version: "1.4.0", required: true, env: ["TOKEN"], description: "Refuses tasks on a dirty tree (a test fixture)" },
  { name: "notify", version: "0.9.2", required: false, env: ["SLACK_WEBHOOK"], description: "Posts task results (a test fixture)" },
  { name: "timer", version: "2.0.0", required: false, env: [], description: "Records task times (a test fixture)" },
  { name: "lint-cache", version: "0.3.1", required: false, env: ["LINT_HOME"], description: "Warms a linter cache (a test fixture)" },
];

export class Setup {
  constructor({ plugins = PLUGINS } = {}) {
    this.root = realpathSync(mkdtempSync(join(tmpdir(), "tr-ui-")));
    this.project = join(this.root, "project");
    this.home = join(this.root, "home");
    mkdirSync(this.project, { recursive: true });
    mkdirSync(this.home, { recursive: true });
    this.env = {
      PATH: process.env.PATH,
      HOME: this.home,
      TASKRUSH_SOCKET: join(this.root, "run", "taskrushd.sock"),
      XDG_RUNTIME_DIR: join(this.home, "runtime"),
      XDG_STATE_HOME: join(this.home, "state"),
      XDG_CACHE_HOME: join(this.home, "cache"),
      XDG_CONFIG_HOME: join(this.home, "config"),
      NO_COLOR: "1",
      TOKEN: "t0k3n",
      BROWSER: "",
    };
    const fixture = join(repo, "plugins-external", "fixtures", "fixture.py");
    const entries = [];
    for (const p of plugins) {
      const dir = join(this.project, ".rush-plugins", p.name);
      mkdirSync(dir, { recursive: true });
      cpSync(fixture, join(dir, "main.py"));
      const env = p.env.map((e) => `"${e}"`).join(", ");
      writeFileSync(join(dir, "plugin.toml"),
        `name = "${p.name}"\nversion = "${p.version}"\ndescription = "${p.description}"\n` +
        `entry_point = ["python3", "-I", "-u", "main.py", "good", "${p.version}"]\n` +
        `taskrush_version = ">=0.3"\n\n[permissions]\nfilesystem = ["."]\nenvironment = [${env}]\n`);
      entries.push(`  - {name: ${p.name}, required: ${p.required}}`);
    }
    writeFileSync(join(this.project, ".rush"),
      `plugins:\n${entries.join("\n")}\n` +
      "tasks:\n" +
      "  build:\n    description: Build it\n    cmd: echo built\n" +
      "  test:\n    cmd: echo tested\n    depends_on: [build]\n" +
      "  lint:\n    cmd: sleep 0.2 && echo linted\n");
  }

  /// `taskrush ARGS` in the project; `{status, stdout, stderr}`.
  taskrush(args) {
    const r = spawnSync(join(binDir, "taskrush"), args, {
      cwd: this.project, env: this.env, encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"],
    });
    return { status: r.status, stdout: r.stdout || "", stderr: r.stderr || "" };
  }

  /// Grant every plugin, run the tasks once, and give the page's link.
  prepare({ grant = true } = {}) {
    if (grant) {
      for (const p of PLUGINS) {
        const g = this.taskrush(["plugin", "grant", p.name, "--yes"]);
        if (g.status !== 0) throw new Error(`plugin grant ${p.name}: ${g.stderr}`);
      }
    }
    const run = this.taskrush(["test"]);
    if (run.status !== 0) throw new Error(`taskrush test: ${run.stdout}${run.stderr}`);
    return this.link();
  }

  /// A fresh one-time link (`taskrush daemon ui --print`).
  link() {
    const ui = this.taskrush(["daemon", "ui", "--print"]);
    if (ui.status !== 0) throw new Error(`daemon ui: ${ui.stderr}`);
    const url = ui.stdout.trim();
    const origin = url.slice(0, url.indexOf("/?token="));
    return { url, origin };
  }

  stop() {
    if (existsSync(this.env.TASKRUSH_SOCKET)) this.taskrush(["daemon", "stop"]);
    rmSync(this.root, { recursive: true, force: true });
  }
}

/// Whether the binaries and the browser are there (a reason when not).
export function missing() {
  if (!existsSync(join(binDir, "taskrush"))) return `no \`taskrush\` in ${binDir}: build first (cargo build --workspace --bins)`;
  if (!existsSync(chromiumPath)) return `no Chromium at ${chromiumPath} (apt-get install chromium)`;
  try {
    execFileSync("python3", ["--version"], { stdio: "ignore" });
  } catch {
    return "no python3 for the fixture plugins";
  }
  return null;
}
