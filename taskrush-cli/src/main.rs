//! `taskrush`: the thin TaskRush command line.
//!
//! It parses arguments, connects to the daemon's socket (starting the
//! daemon if none answers), sends one request, renders the answer and
//! exits. It never spawns a task and never reads a `.rush` file.
//!
//! Exit codes: 0 success; the failing task's exit status (128 + N when a
//! signal N killed it); 1 for TaskRush's own errors (bad `.rush`, unknown
//! task, daemon unreachable); 2 for command-line usage errors; 130 when
//! the run was cancelled with Ctrl-C; 3 for `daemon status` when no daemon
//! runs.

mod args;
mod audit_cmd;
mod client;
mod completions;
mod consent;
mod daemon_cmd;
mod error;
mod events_cmd;
mod list;
mod lock_cmd;
mod lsp;
mod plugin_cmd;
mod progress;
mod registry_cmd;
mod render;
mod run;
mod scaffold;
mod stats_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::args::{Cli, Command, PluginAction};

fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv = args::normalize(raw.clone());
    let mut command = Cli::command();
    if top_level_help(&raw)
        && let Some(section) = plugin_cmd::help_section()
    {
        command = command.after_help(section);
    }
    let cli = match command
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            // `taskrush greet --loud`: not `run`'s arguments, but perhaps
            // a plugin's command: one `dispatch` asks and runs it.
            let plugin_command = (e.kind() != clap::error::ErrorKind::DisplayHelp
                && e.kind() != clap::error::ErrorKind::DisplayVersion)
                .then(|| plugin_cmd::split(&raw))
                .flatten();
            let Some(cmd) = plugin_command else { e.exit() };
            return match plugin_cmd::dispatch(cmd) {
                Err(error::CliError::Remote(r))
                    if r.code != taskrush_protocol::error::PLUGIN_ERROR =>
                {
                    e.exit()
                }
                other => exit(other),
            };
        }
    };
    let result = match cli.command {
        Command::Run(args) if args.completions.is_some() => {
            completions::print(args.completions.as_deref().unwrap_or_default())
        }
        Command::Run(args) if args.man => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(completions::MAN_PAGE.as_bytes());
            Ok(0)
        }
        Command::Run(args) if args.complete_names => completions::names(&args),
        Command::Run(args) if args.list && args.json => list::list_json(&args),
        Command::Run(args) if args.list => list::list(&args),
        Command::Run(args) if args.summary.is_some() => list::summary(&args),
        Command::Run(args) => {
            // The words after the first name, as typed: a plugin command's
            // arguments, should the daemon find that it is one.
            let tail = plugin_cmd::split(&raw)
                .filter(|c| args.tasks.first() == Some(&c.name))
                .map(|c| c.args)
                .unwrap_or_default();
            run_or_command(args, tail, &raw)
        }
        Command::Daemon { action } => daemon_cmd::daemon(action),
        Command::Events { json } => events_cmd::events(json),
        Command::Lsp => lsp::serve(),
        Command::Plugin {
            action: PluginAction::Audit { name, since, json },
            ..
        } => audit_cmd::audit(name.as_deref(), since.as_deref(), json),
        Command::Plugin {
            action: PluginAction::New { name, lang, dir },
            ..
        } => scaffold::new(&name, &lang, dir.as_deref()),
        Command::Plugin {
            action: PluginAction::Build { dir },
            ..
        } => scaffold::build(dir.as_deref()),
        Command::Plugin { file, action } => plugin_cmd::plugin(file, action),
    };
    exit(result)
}

/// A run, or a plugin command (one `dispatch`). A daemon from before
/// `dispatch` answers a plugin command's run with `PLUGIN_COMMAND`, and
/// the command is then sent as `plugin_command`.
fn run_or_command(
    args: args::RunArgs,
    tail: Vec<String>,
    raw: &[std::ffi::OsString],
) -> Result<i32, error::CliError> {
    let tail = run::Tail {
        args: tail,
        command_only: false,
    };
    match run::run(args, tail) {
        Err(error::CliError::Remote(e)) if e.code == taskrush_protocol::error::PLUGIN_COMMAND => {
            match plugin_cmd::split(raw) {
                Some(cmd) => plugin_cmd::command(cmd),
                None => Err(error::CliError::Remote(e)),
            }
        }
        other => other,
    }
}

/// `taskrush -h` / `taskrush --help` (not the help of a subcommand).
fn top_level_help(raw: &[std::ffi::OsString]) -> bool {
    raw.len() == 2 && matches!(raw[1].to_str(), Some("-h" | "--help"))
}

fn exit(result: Result<i32, error::CliError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The client's environment as the daemon must see it (`${VAR}` and the
/// tasks' and plugins' environments come from here). Variables that are
/// not UTF-8 are left out.
pub fn client_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The client's working directory, as the daemon must see it.
pub fn cwd() -> Result<String, error::CliError> {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .map_err(|e| error::CliError::io("cannot read the current directory", e))
}
