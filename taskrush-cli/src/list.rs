//! `taskrush --list`.

use std::io::Write;

use taskrush_protocol::daemon::TaskList;
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;

use crate::args::RunArgs;
use crate::error::CliError;

pub fn list(args: &RunArgs) -> Result<i32, CliError> {
    let list = fetch(args)?;
    if let Some(w) = &list.warning {
        eprintln!("warning: {w}");
    }
    let width = list
        .tasks
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(0);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    for t in &list.tasks {
        let mut line = String::with_capacity(width + 64);
        line.push_str(&t.name);
        let desc = t.description.as_deref().unwrap_or("");
        let deps = if t.depends_on.is_empty() {
            String::new()
        } else {
            format!("[depends on: {}]", t.depends_on.join(", "))
        };
        if !desc.is_empty() || !deps.is_empty() {
            let pad = width - t.name.chars().count() + 2;
            line.extend(std::iter::repeat_n(' ', pad));
            line.push_str(desc);
            if !desc.is_empty() && !deps.is_empty() {
                line.push(' ');
            }
            line.push_str(&deps);
        }
        line.push('\n');
        if out.write_all(line.as_bytes()).is_err() {
            return Ok(0); // stdout closed (`| head`): nothing more to say
        }
    }
    let _ = out.flush();
    Ok(0)
}

/// Ask the daemon for the task list of the project around the cwd.
pub fn fetch(args: &RunArgs) -> Result<TaskList, CliError> {
    let mut client = crate::client::connect(&DaemonPaths::from_env(), false, args.no_daemon)?;
    let params = serde_json::json!({
        "cwd": crate::cwd()?,
        "file": args.file.as_ref().map(|f| f.display().to_string()),
    });
    client.call(method::LIST_TASKS, params)
}
