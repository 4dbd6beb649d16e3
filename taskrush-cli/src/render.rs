//! Turning run events into what the user sees.
//!
//! One task at a time: its output bytes go to our stdout/stderr exactly as
//! they came. Several tasks at once: each line is prefixed with `[task] `,
//! whole lines only, so lines of different tasks never interleave.

use std::collections::HashMap;
use std::io::{self, Write};

use taskrush_protocol::run::{RunEvent, Stream, TaskStatus};

/// Where a write failed: on our stdout (e.g. `| head -1` closed it).
pub struct StdoutClosed;

pub struct Renderer {
    prefix: bool,
    color: bool,
    /// The run summary: shown when stderr is a terminal, unless `--quiet`.
    summary: Option<Summary>,
    quiet: bool,
    /// Partial last lines per (task, stream), in prefix mode.
    partial: HashMap<(String, Stream), Vec<u8>>,
    colors: HashMap<String, usize>,
    stdout: io::Stdout,
    stderr: io::Stderr,
}

const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

impl Renderer {
    /// `quiet`: no run summary and no "is up to date" notes.
    pub fn new(quiet: bool) -> Renderer {
        use std::io::IsTerminal;
        let color = use_color(io::stdout().is_terminal());
        let summary = (!quiet && io::stderr().is_terminal())
            .then(|| Summary::new(use_color(io::stderr().is_terminal())));
        Renderer {
            prefix: false,
            color,
            summary,
            quiet,
            partial: HashMap::new(),
            colors: HashMap::new(),
            stdout: io::stdout(),
            stderr: io::stderr(),
        }
    }

    /// Handle one event. Errors only for a closed stdout.
    pub fn event(&mut self, ev: RunEvent) -> Result<(), StdoutClosed> {
        if let Some(summary) = &mut self.summary {
            summary.event(&ev);
        }
        match ev {
            RunEvent::RunStarted {
                tasks,
                jobs,
                inherit_stdio,
                warning,
                ..
            } => {
                self.prefix = !inherit_stdio && jobs > 1 && tasks.len() > 1;
                if let Some(w) = warning {
                    let _ = writeln!(self.stderr, "warning: {w}");
                }
            }
            RunEvent::WatchWaiting { watching, .. } => {
                let _ = self.stdout.flush();
                let _ = writeln!(
                    self.stderr,
                    "taskrush: watching {watching} for changes (Ctrl-C to stop)"
                );
            }
            RunEvent::WatchTriggered { paths, action, .. } => {
                let what = match paths.as_slice() {
                    [] => "files".to_owned(),
                    [one] if one.is_empty() => "files".to_owned(),
                    [one] => format!("`{one}`"),
                    [first, rest @ ..] => format!("`{first}` and {} more", rest.len()),
                };
                let doing = match action.as_str() {
                    "restart" => "restarting",
                    "queue" => "running again after the current run",
                    _ => "running again",
                };
                let _ = writeln!(self.stderr, "taskrush: {what} changed: {doing}");
            }
            RunEvent::WatchEnded { .. } => {}
            // `run.rs` prints a plugin command's result itself.
            RunEvent::CommandFinished { .. } => {}
            RunEvent::TaskStarted { .. } => {}
            RunEvent::PluginMessage {
                plugin, message, ..
            } => {
                let _ = writeln!(self.stderr, "plugin `{plugin}`: {message}");
            }
            RunEvent::PluginLog {
                plugin,
                level,
                message,
                ..
            } => {
                let level = if level == "warn" { "warning" } else { &level };
                let _ = writeln!(self.stderr, "[{plugin}] {level}: {message}");
            }
            // Progress is for a live status line: shown on a terminal only
            // (a log file or a pipe gets the `events` stream instead).
            RunEvent::PluginProgress {
                plugin,
                percent,
                message,
                ..
            } => {
                if self.summary.is_some() {
                    let percent = percent.map(|p| format!("{p:.0}% ")).unwrap_or_default();
                    let _ = writeln!(self.stderr, "[{plugin}] {percent}{message}");
                }
            }
            RunEvent::Warning { message, .. } => {
                let _ = writeln!(self.stderr, "warning: {message}");
            }
            RunEvent::Output {
                task,
                stream,
                chunk,
            } => {
                let bytes = chunk.into_bytes();
                if self.prefix {
                    self.prefixed(&task, stream, &bytes, false)?;
                } else {
                    self.write(stream, &bytes)?;
                }
            }
            RunEvent::TaskWaiting { task } => {
                let _ = writeln!(
                    self.stderr,
                    "taskrush: `{task}` is running in another run; waiting for it"
                );
            }
            RunEvent::TaskCached { .. } if self.quiet => {}
            RunEvent::TaskCached { task, restored } => {
                let restored = match restored {
                    0 => String::new(),
                    1 => " (1 output restored)".to_owned(),
                    n => format!(" ({n} outputs restored)"),
                };
                let _ = writeln!(
                    self.stderr,
                    "taskrush: `{}` is up to date{restored}",
                    printable(&task)
                );
            }
            RunEvent::TaskFinished {
                task,
                status,
                exit_code,
                signal,
                message,
                ..
            } => {
                if self.prefix {
                    for stream in [Stream::Stdout, Stream::Stderr] {
                        self.prefixed(&task, stream, &[], true)?;
                    }
                }
                // Killed by SIGPIPE: whoever read its output stopped
                // reading (`| head`); that is not worth a message.
                let sigpipe = signal == Some(13) || exit_code == Some(128 + 13);
                if status == TaskStatus::Failed && !sigpipe {
                    let why = match (message, exit_code, signal) {
                        (Some(m), _, _) => m,
                        (None, Some(c), _) => format!("exit code {c}"),
                        (None, None, Some(s)) => format!("killed by signal {s}"),
                        (None, None, None) => "unknown reason".into(),
                    };
                    let _ = self.stdout.flush();
                    let _ = writeln!(
                        self.stderr,
                        "error: task `{}` failed: {}",
                        printable(&task),
                        printable_text(&why)
                    );
                }
            }
            RunEvent::RunFinished { error, .. } => {
                let _ = self.stdout.flush();
                if let Some(err) = error {
                    let _ = writeln!(self.stderr, "error: {}", err.message);
                    if let Some(hint) = err.data.hint {
                        let _ = writeln!(self.stderr, "hint: {hint}");
                    }
                }
                if let Some(summary) = &mut self.summary {
                    let _ = self.stderr.write_all(summary.render().as_bytes());
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), StdoutClosed> {
        match stream {
            Stream::Stdout => {
                let mut out = self.stdout.lock();
                out.write_all(bytes)
                    .and_then(|_| out.flush())
                    .map_err(|_| StdoutClosed)
            }
            Stream::Stderr => {
                let _ = self.stderr.write_all(bytes);
                Ok(())
            }
        }
    }

    /// Emit the complete lines of `bytes` (after what was pending) with the
    /// task's prefix; keep the incomplete rest unless `flush`.
    fn prefixed(
        &mut self,
        task: &str,
        stream: Stream,
        bytes: &[u8],
        flush: bool,
    ) -> Result<(), StdoutClosed> {
        let key = (task.to_owned(), stream);
        let mut pending = self.partial.remove(&key).unwrap_or_default();
        pending.extend_from_slice(bytes);
        let prefix = self.prefix_for(task);
        let mut out = Vec::with_capacity(pending.len() + 64);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(&pending[start..=start + i]);
            start += i + 1;
        }
        let rest = pending.split_off(start);
        if flush && !rest.is_empty() {
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(&rest);
            out.push(b'\n');
        } else if !rest.is_empty() {
            self.partial.insert(key, rest);
        }
        if out.is_empty() {
            return Ok(());
        }
        self.write(stream, &out)
    }

    fn prefix_for(&mut self, task: &str) -> String {
        if !self.color {
            return format!("[{}] ", printable(task));
        }
        let n = self.colors.len();
        let c = *self.colors.entry(task.to_owned()).or_insert(n);
        format!(
            "\x1b[{}m[{}]\x1b[0m ",
            PALETTE[c % PALETTE.len()],
            printable(task)
        )
    }
}

/// Whether to colour a stream that is (`terminal`) or is not a terminal:
/// never with `NO_COLOR` set (not empty), always with `CLICOLOR_FORCE` set
/// (not empty nor `0`), else on a terminal. See <https://no-color.org> and
/// <https://bixense.com/clicolors/>.
fn use_color(terminal: bool) -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    set("CLICOLOR_FORCE") || terminal
}

/// How one task of a run ended, for the summary.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ended {
    Ran,
    UpToDate,
    /// Up to date, with outputs put back from the store.
    Restored,
    Failed,
    Cancelled,
    /// Never started: a task before it failed, or the run was cancelled.
    NotRun,
}

impl Ended {
    fn word(self) -> &'static str {
        match self {
            Ended::Ran => "ran",
            Ended::UpToDate => "up to date",
            Ended::Restored => "restored",
            Ended::Failed => "failed",
            Ended::Cancelled => "cancelled",
            Ended::NotRun => "not run",
        }
    }

    /// SGR colour: green, dim, cyan, red, yellow.
    fn color(self) -> &'static str {
        match self {
            Ended::Ran => "32",
            Ended::UpToDate | Ended::NotRun => "2",
            Ended::Restored => "36",
            Ended::Failed => "31",
            Ended::Cancelled => "33",
        }
    }
}

/// The run summary: after a run of several tasks, one line per task of its
/// plan, in plan order: how it ended and how long its command took.
struct Summary {
    color: bool,
    tasks: Vec<String>,
    ended: HashMap<String, (Ended, Option<u64>)>,
}

impl Summary {
    fn new(color: bool) -> Summary {
        Summary {
            color,
            tasks: Vec::new(),
            ended: HashMap::new(),
        }
    }

    fn event(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStarted { tasks, .. } => {
                self.tasks = tasks.clone();
                self.ended.clear();
            }
            RunEvent::TaskCached { task, restored } => {
                let ended = if *restored > 0 {
                    Ended::Restored
                } else {
                    Ended::UpToDate
                };
                self.ended.insert(task.clone(), (ended, None));
            }
            RunEvent::TaskFinished {
                task,
                status,
                duration_ms,
                ..
            } => {
                let ended = match status {
                    TaskStatus::Success => Ended::Ran,
                    TaskStatus::Failed => Ended::Failed,
                    TaskStatus::Cancelled => Ended::Cancelled,
                };
                self.ended.insert(task.clone(), (ended, Some(*duration_ms)));
            }
            _ => {}
        }
    }

    /// The summary's lines; nothing for a run of fewer than two tasks.
    fn render(&self) -> String {
        if self.tasks.len() < 2 {
            return String::new();
        }
        let name_width = self
            .tasks
            .iter()
            .map(|t| printable(t).chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for task in &self.tasks {
            let (ended, ms) = self
                .ended
                .get(task)
                .copied()
                .unwrap_or((Ended::NotRun, None));
            let word = format!("{:<10}", ended.word());
            let word = if self.color {
                format!("\x1b[{}m{word}\x1b[0m", ended.color())
            } else {
                word
            };
            let time = ms.map(duration).unwrap_or_default();
            let line = format!("  {word}  {:<name_width$}  {time}", printable(task));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `850ms`, `1.2s`, `2m05s`.
fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Print `rows` under `head` as columns two spaces apart, each as wide as
/// its widest cell (the last one not padded). Write errors (a closed pipe)
/// are ignored: the caller is printing a listing.
pub fn table<const N: usize>(out: &mut impl Write, head: [&str; N], rows: &[[String; N]]) {
    let mut width = head.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(head));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.each_ref().map(String::as_str)));
    }
}

/// `s` with its control characters escaped (`\u{1b}`), for names and
/// descriptions that come from a `.rush` file: printed raw, an escape
/// sequence in a task name would drive the user's terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(s, false)
}

/// [`printable`] keeping line breaks and tabs: for messages of several
/// lines.
pub fn printable_text(s: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(s, true)
}

fn escape_controls(s: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && !(keep_lines && (c == '\n' || c == '\t'));
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_every_task_of_the_plan_in_order() {
        let mut s = Summary::new(false);
        s.event(&RunEvent::RunStarted {
            run_id: 1,
            file: ".rush".into(),
            tasks: vec!["gen".into(), "build".into(), "test".into()],
            jobs: 1,
            inherit_stdio: true,
            warning: None,
            iteration: None,
        });
        s.event(&RunEvent::TaskCached {
            task: "gen".into(),
            restored: 0,
        });
        s.event(&RunEvent::TaskFinished {
            task: "build".into(),
            status: TaskStatus::Failed,
            exit_code: Some(1),
            signal: None,
            duration_ms: 1234,
            message: None,
        });
        assert_eq!(
            s.render(),
            "  up to date  gen\n  failed      build  1.2s\n  not run     test\n"
        );
        assert_eq!(duration(5), "5ms");
        assert_eq!(duration(125_000), "2m05s");
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("build"), "build");
        assert_eq!(printable("a\x1b[31mb"), "a\\u{1b}[31mb");
        assert_eq!(printable("a\nb\u{9b}c"), "a\\nb\\u{9b}c");
        assert_eq!(printable_text("a\nb\tc\x07"), "a\nb\tc\\u{7}");
        assert_eq!(printable("héllo ✓"), "héllo ✓");
    }
}
