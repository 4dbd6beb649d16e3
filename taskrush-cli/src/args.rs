//! Command-line arguments. Flags carry their trade-off in their doc
//! comment, which becomes `--help`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// TaskRush: run the tasks of a project's `.rush` file, fast.
///
/// `taskrush build test` is short for `taskrush run build test`; a task
/// named like a built-in word runs as `taskrush run NAME`. The flags of
/// `run` work without it: `taskrush --list`, `taskrush --completions
/// bash|zsh|fish` (a completion script), `taskrush --man` (the man page).
#[derive(Parser, Debug)]
#[command(name = "taskrush", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run tasks and their dependencies (the default command).
    Run(RunArgs),
    /// Manage the background daemon `taskrushd`.
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
    /// Follow what the daemon does: config reloads, plugins, runs and
    /// tasks of every client, one line per event (for editors: `--json`).
    Events {
        /// One JSON object per line, as the daemon sends them.
        #[arg(long)]
        json: bool,
    },
    /// A language server for `.rush` files on stdin and stdout (LSP
    /// 3.17), for editors: see docs/editors.md.
    Lsp,
    /// See, grant, restart and test the project's plugins.
    Plugin {
        /// The `.rush` file whose plugins to use (default: found from the
        /// current directory upwards).
        #[arg(short = 'f', long, value_name = "FILE", global = true)]
        file: Option<PathBuf>,
        #[command(subcommand)]
        action: PluginAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginAction {
    /// List the project's plugins with their state (`--installed`: the
    /// plugins installed for this user, with registry, version, kind and
    /// signer).
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        /// List what is installed in the user's plugins directory instead.
        #[arg(long)]
        installed: bool,
    },
    /// Show one plugin: manifest, state, last stderr lines, last error.
    Info {
        name: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restart a plugin, also one marked failed (it grants nothing: see
    /// `plugin grant`).
    Restart { name: String },
    /// Grant a plugin the permissions its manifest asks for, for this
    /// project: shows them (or what an update asks beyond the current
    /// grant) and asks; without a terminal, `--yes` is required.
    Grant {
        name: String,
        /// Grant without asking (CI, scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Withdraw a plugin's grant for this project; it is stopped and not
    /// started again until granted.
    Revoke { name: String },
    /// Show what the project's plugins cost since the daemon started:
    /// calls and latency (p50/p95/p99/max) per hook and command, errors,
    /// timeouts, vetoes, crashes, CPU time, peak RSS, time added to tasks.
    Stats {
        /// Only this plugin.
        name: Option<String>,
        /// Print the figures as JSON (the `metrics` method's `plugins`).
        #[arg(long)]
        json: bool,
    },
    /// Disable a plugin for this project: it is stopped and not started,
    /// its hooks are skipped with a warning (tasks fail when it is
    /// `required`), its commands say it is disabled. Kept across daemon
    /// restarts.
    Disable { name: String },
    /// Enable a plugin disabled with `plugin disable`.
    Enable { name: String },
    /// Show the plugin audit trail (of every project): plugins spawned
    /// and exited, vetoes and failures of required plugins, plugin
    /// commands run. Secrets are shown as `***`.
    Audit {
        /// Only the records of this plugin.
        name: Option<String>,
        /// Only records newer than this (`90s`, `30m`, `3h`, `2d`).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// The records as they are stored: one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Install a plugin: `NAME[@REQ]` or `REGISTRY/NAME[@REQ]` from a
    /// registry (`^1.0`, `~1.2`, `>=1, <3`), or `./PATH` (a directory,
    /// `.tar.gz`, `.wasm` or `.so`; signed by `PATH.minisig`, else
    /// `--allow-unsigned`). Verified, read-only; never edits `.rush`.
    /// `--from-rush` installs everything the project's `.rush` file
    /// needs (the versions locked in `.rush.lock` when it is fresh) and
    /// writes the lock.
    Install {
        /// `NAME[@REQ]`, `REGISTRY/NAME[@REQ]`, or a local path.
        spec: Option<String>,
        /// Everything the project's `.rush` file needs.
        #[arg(long, conflicts_with = "spec")]
        from_rush: bool,
        /// Never re-resolve: fail when `.rush.lock` is stale.
        #[arg(long, requires = "from_rush")]
        locked: bool,
        /// Install a local plugin that is not signed (yours).
        #[arg(long)]
        allow_unsigned: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Update the project's plugins (or NAME) to the newest version
    /// their `.rush` requirement allows, and `.rush.lock`; shows what
    /// changes, permissions included.
    Update {
        name: Option<String>,
        /// Never re-resolve: fail when `.rush.lock` is stale.
        #[arg(long)]
        locked: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The project's lock file: `--check` exits 1 (and says what) when
    /// `.rush.lock` is missing or stale, for CI.
    Lock {
        /// Check only (the lock is written by `install --from-rush` and
        /// `update`).
        #[arg(long, required = true)]
        check: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drive the plugin in directory PATH through the whole protocol
    /// (the conformance kit), unsandboxed with its declared permissions;
    /// exits 1 if any check fails.
    ///
    /// The plugin runs WITHOUT the sandbox and with every permission its
    /// manifest declares, granted or not (it is meant for the author's own
    /// plugin directory): do not point it at a plugin you do not trust.
    Test {
        path: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a new plugin that works at once: `plugin.toml`, code using
    /// the TaskRush SDK (vendored into it), a test, a README.
    New {
        /// The plugin's name (lower-case letters, digits, `-`).
        name: String,
        /// Its language.
        #[arg(long, value_parser = ["python", "node", "go", "rust", "rust-wasm"])]
        lang: String,
        /// Where to write it (default: `./NAME`); must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Build a plugin where it needs building (Go: `go build`; Rust:
    /// `cargo build --release`; Rust to WebAssembly: `cargo build --target
    /// wasm32-wasip1`), and put the result where `plugin.toml` says.
    Build {
        /// The plugin's directory (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// The last lines a plugin logged (`log` and `progress` notifications,
    /// every level), kept in the daemon's memory.
    Logs {
        name: String,
        /// Keep following new lines until Ctrl-C (`-f` here, as `daemon
        /// logs -f`; the `.rush` file is `--file` in this command).
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Search the configured registries for TEXT in plugin names and
    /// descriptions.
    Search {
        text: String,
        /// Print the hits as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an installed plugin: `NAME` (every version) or `NAME@VERSION`.
    Remove { spec: String },
    /// Pack the plugin directory PATH (default `.`), sign it with KEY (an
    /// unencrypted minisign secret key) and add it to the registry
    /// directory DIR: artifact, index line, `search.jsonl`, signed
    /// snapshot. Serve DIR with any web server.
    Publish {
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The registry directory (created when missing).
        #[arg(long, value_name = "DIR")]
        registry: PathBuf,
        /// The minisign secret key (`minisign -G -W`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The platform of this artifact (`linux-x86_64`…); default `any`.
        /// Publish once per platform to add several.
        #[arg(long)]
        platform: Option<String>,
        /// Days until the snapshot expires (clients refuse it after).
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        expires_days: u64,
        /// Key ids to list as revoked in the snapshot.
        #[arg(long, value_name = "KEY_ID")]
        revoke: Vec<String>,
    },
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Tasks to run, in order; each task's dependencies run first.
    pub tasks: Vec<String>,
    /// Arguments for the last task named, after `--` (`taskrush test --
    /// --nocapture`): its command sees them as `"$@"` and as
    /// `$TASKRUSH_ARGS` (shell-quoted, for `eval set -- "$TASKRUSH_ARGS"`).
    /// They are part of its cache key.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
    /// The `.rush` file to use, instead of searching `.rush`, `.rush.yml`
    /// and `.rush.yaml` from the current directory upwards.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Run independent tasks in parallel, one job per CPU. Output lines of
    /// parallel tasks are prefixed with the task's name.
    #[arg(short = 'j', long = "parallel")]
    pub parallel: bool,
    /// Run up to N tasks at once (implies --parallel when N > 1).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Run tasks even when their `cache_files` say they are up to date.
    #[arg(long)]
    pub force: bool,
    /// Run only the named tasks, not what they depend on.
    #[arg(long)]
    pub no_deps: bool,
    /// Print less: no run summary (otherwise shown on a terminal after a
    /// run of several tasks) and no "is up to date" notes.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Say, per task of the plan, whether it would run and why (which
    /// input file changed, command or environment changed, outputs
    /// missing, no cache, forced); runs nothing.
    #[arg(long, conflicts_with_all = ["watch", "dry_run"])]
    pub explain: bool,
    /// Print the plan (order, what would run, what is up to date) and run
    /// nothing: no task, no hook, no plugin.
    #[arg(long, conflicts_with = "watch")]
    pub dry_run: bool,
    /// List the tasks with their descriptions and dependencies.
    #[arg(short = 'l', long)]
    pub list: bool,
    /// Show one task: its command, dependencies, directory, the file and
    /// line that define it, its cache globs.
    #[arg(long, value_name = "TASK", conflicts_with = "list")]
    pub summary: Option<String>,
    /// With --list or --summary: print JSON (the daemon's `list_tasks`
    /// answer, or one of its tasks; see docs/protocol.md for the schema).
    #[arg(long)]
    pub json: bool,
    /// After the run, run again whenever an input changes: the tasks'
    /// `cache_files` (with their dependencies'), or, when none has any,
    /// any file of the project that `.gitignore` does not ignore. Runs
    /// until Ctrl-C. Tasks that write into what they watch re-run forever:
    /// keep outputs in ignored directories.
    #[arg(long)]
    pub watch: bool,
    /// With --watch, what a change during a run does: `restart` cancels
    /// the run and starts again (fast feedback; the cancelled run's work
    /// is lost), `queue` lets it finish and then runs again (every run
    /// completes; results may be stale for a while).
    #[arg(long, value_name = "WHAT", value_parser = ["restart", "queue"], default_value = "restart", requires = "watch")]
    pub on_change: String,
    /// Run without the long-lived daemon: a private one serves this
    /// invocation and exits with it (also `TASKRUSH_DAEMON=0`). Same output
    /// and exit codes; loses the warm config and file hashes, so repeated
    /// runs are slower. For CI, containers and debugging.
    #[arg(long)]
    pub no_daemon: bool,
    /// Print the completion script for SHELL (bash, zsh or fish); task
    /// names and plugin commands are asked of the daemon as you type
    /// (starting it if needed, never a plugin). See the README to install.
    #[arg(long, value_name = "SHELL", value_parser = ["bash", "zsh", "fish"])]
    pub completions: Option<String>,
    /// Print the man page (roff), generated from these definitions:
    /// `taskrush --man | man -l -`.
    #[arg(long)]
    pub man: bool,
    /// For the completion scripts: the project's tasks and plugin
    /// commands, `NAME<TAB>DESCRIPTION` a line.
    #[arg(long, hide = true)]
    pub complete_names: bool,
}

#[derive(Subcommand, Debug)]
pub enum DaemonAction {
    /// Start the daemon unless one runs; return once it answers (exit 0
    /// either way, printing its pid and socket: for editors and scripts).
    Start {
        /// Print `{"pid", "socket", "started"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show whether the daemon runs, and what it holds.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon; its running tasks are cancelled.
    Stop,
    /// Stop the daemon and start a fresh one.
    Restart,
    /// Print the daemon's log.
    Logs {
        /// Keep printing new lines as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many lines from the end to start with.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Show the tasks' figures since the daemon started, per project:
    /// runs, cache hits, failures, durations (p50/p95/p99/max).
    Stats {
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print every figure of the daemon (plugins and tasks) as
    /// OpenMetrics text, for Prometheus-compatible scrapers (names in
    /// docs/metrics.md).
    Metrics,
    /// Open the plugin manager page in your browser (served by the daemon
    /// on 127.0.0.1; the link carries a one-time key).
    Ui {
        /// Print the link instead of opening a browser.
        #[arg(long, alias = "no-open")]
        print: bool,
    },
    /// The per-user store of task outputs (`outputs:` in `.rush`).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// Show the store's directory, size, limit, entries, and the hits and
    /// restores since the daemon started.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove least recently used entries: all of them, or until the store
    /// takes at most `--max-size` bytes.
    Prune {
        /// Keep this many bytes of the most recently used entries.
        #[arg(long, value_name = "BYTES")]
        max_size: Option<u64>,
    },
}

/// The built-in words (`help` included): a first word that is one of them
/// is not a task (see `taskrush_protocol::RESERVED_WORDS`).
pub const SUBCOMMANDS: &[&str] = taskrush_protocol::RESERVED_WORDS;
/// Options of `run` that take a value (their value is not a task name).
pub const TAKES_VALUE: &[&str] = &[
    "-f",
    "--file",
    "--jobs",
    "--on-change",
    "--summary",
    "--completions",
];

/// TaskRush 0.2 took tasks directly (`taskrush build`, `taskrush -j all`,
/// `taskrush --list`): insert `run` when no subcommand is named.
pub fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    let mut iter = args.iter().skip(1).peekable();
    let mut only_meta = true;
    let mut first_positional = None;
    while let Some(a) = iter.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            first_positional = Some("--".to_owned());
            break;
        }
        if s.starts_with('-') && s.len() > 1 {
            if !matches!(s.as_ref(), "-h" | "--help" | "-V" | "--version") {
                only_meta = false;
            }
            if TAKES_VALUE.contains(&s.as_ref()) {
                iter.next();
            }
            continue;
        }
        first_positional = Some(s.into_owned());
        break;
    }
    let insert = match first_positional {
        Some(p) => !SUBCOMMANDS.contains(&p.as_str()),
        None => !only_meta || args.len() == 1,
    };
    if !insert {
        return follow_flag(args);
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    out.extend(args.first().cloned());
    out.push(OsString::from("run"));
    out.extend(args.into_iter().skip(1));
    out
}

/// `taskrush plugin logs NAME -f`: `-f` is `--follow` there (as in
/// `daemon logs -f` and `tail -f`), not the `--file` every other `plugin`
/// command takes.
fn follow_flag(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_some_and(|a| a == "plugin") && args.get(2).is_some_and(|a| a == "logs") {
        for a in args.iter_mut().skip(3) {
            if a == "--" {
                break;
            }
            if a == "-f" {
                *a = OsString::from("--follow");
            }
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        let v = std::iter::once("taskrush")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        normalize(v)
            .into_iter()
            .skip(1)
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_02_forms_become_run() {
        assert_eq!(norm(&["build"]), ["run", "build"]);
        assert_eq!(norm(&["-j", "all"]), ["run", "-j", "all"]);
        assert_eq!(norm(&["--list"]), ["run", "--list"]);
        assert_eq!(norm(&["-f", "run", "x"]), ["run", "-f", "run", "x"]);
        assert_eq!(norm(&[]), ["run"]);
        assert_eq!(norm(&["t", "--", "-x"]), ["run", "t", "--", "-x"]);
        assert_eq!(norm(&["--", "a"]), ["run", "--", "a"]);
    }

    /// One rule for built-in words (docs/architecture.md, "Built-in
    /// words"): every top-level word of the CLI is in the daemon's
    /// reserved list, which warns about tasks it hides, and the reverse.
    #[test]
    fn the_top_level_words_are_the_daemons_reserved_list() {
        use clap::CommandFactory;
        let mut words: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .chain(std::iter::once("help".to_owned()))
            .collect();
        words.sort();
        let mut reserved: Vec<String> = taskrush_protocol::RESERVED_WORDS
            .iter()
            .map(|w| w.to_string())
            .collect();
        reserved.sort();
        assert_eq!(
            words, reserved,
            "a new top-level word must be rare as a task name and added to `RESERVED_WORDS`"
        );
    }

    #[test]
    fn subcommands_and_help_stay_as_they_are() {
        assert_eq!(norm(&["run", "build"]), ["run", "build"]);
        assert_eq!(norm(&["daemon", "status"]), ["daemon", "status"]);
        assert_eq!(norm(&["--help"]), ["--help"]);
        assert_eq!(norm(&["-V"]), ["-V"]);
    }
}
