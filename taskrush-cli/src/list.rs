//! `taskrush --list`.
//!
//! The list is printed while it is read from the socket: a 10,000-task
//! answer is a megabyte of JSON, and holding it (and the tasks parsed from
//! it) would more than double the CLI's memory. The daemon sends
//! `name_width` before `tasks`, so each line can be aligned as it comes.

use std::fmt;
use std::io::{BufWriter, StdoutLock, Write};

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use taskrush_protocol::daemon::{TaskInfo, TaskList};
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;

use crate::args::RunArgs;
use crate::error::CliError;
use crate::render::{printable, printable_text};

pub fn list(args: &RunArgs) -> Result<i32, CliError> {
    let mut client = crate::client::connect(&DaemonPaths::from_env(), false, args.no_daemon)?;
    let stdout = std::io::stdout();
    let printer = Printer {
        out: BufWriter::with_capacity(16 * 1024, stdout.lock()),
        closed: false,
    };
    let mut printer = client.call_streaming(method::LIST_TASKS, params(args)?, printer)?;
    let _ = printer.out.flush();
    Ok(0)
}

/// `taskrush --list --json`: the daemon's `list_tasks` answer, as is
/// (schema in docs/protocol.md), then a newline.
pub fn list_json(args: &RunArgs) -> Result<i32, CliError> {
    let list = fetch(args)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    // A closed stdout (`| head`) is not an error of ours.
    let _ = serde_json::to_writer_pretty(&mut out, &list)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    Ok(0)
}

/// `taskrush --summary TASK [--json]`: one task of the list.
pub fn summary(args: &RunArgs) -> Result<i32, CliError> {
    let name = args.summary.as_deref().unwrap_or_default();
    let list = fetch(args)?;
    if let Some(w) = &list.warning {
        eprintln!("warning: {}", printable_text(w));
    }
    let Some(task) = list.tasks.iter().find(|t| t.name == name) else {
        return Err(CliError::Usage {
            message: format!("unknown task `{}` in `{}`", printable(name), list.file),
            hint: Some("`taskrush --list` shows the tasks".to_owned()),
        });
    };
    let text = if args.json {
        let mut text =
            serde_json::to_string_pretty(task).map_err(|e| CliError::Protocol(e.to_string()))?;
        text.push('\n');
        text
    } else {
        summary_text(task)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(0)
}

/// The text of `--summary`: one `key: value` line per thing known.
fn summary_text(t: &TaskInfo) -> String {
    let mut out = format!("task: {}\n", printable(&t.name));
    if let Some(d) = &t.description {
        out.push_str(&format!("description: {}\n", printable(d)));
    }
    match &t.cmd {
        Some(cmd) => out.push_str(&format!("cmd: {}\n", printable(cmd))),
        None => out.push_str("cmd: (none: runs its dependencies only)\n"),
    }
    let join = |items: &[String]| {
        items
            .iter()
            .map(|s| printable(s).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !t.depends_on.is_empty() {
        out.push_str(&format!("depends on: {}\n", join(&t.depends_on)));
    }
    out.push_str(&format!("dir: {}\n", printable(&t.dir)));
    out.push_str(&format!(
        "defined at: {}:{}:{}\n",
        printable(&t.file),
        t.line,
        t.column
    ));
    if !t.cache_files.is_empty() {
        out.push_str(&format!("cache_files: {}\n", join(&t.cache_files)));
    }
    if !t.outputs.is_empty() {
        out.push_str(&format!("outputs: {}\n", join(&t.outputs)));
    }
    out
}

/// Ask the daemon for the task list of the project around the cwd.
pub fn fetch(args: &RunArgs) -> Result<TaskList, CliError> {
    let mut client = crate::client::connect(&DaemonPaths::from_env(), false, args.no_daemon)?;
    client.call(method::LIST_TASKS, params(args)?)
}

fn params(args: &RunArgs) -> Result<serde_json::Value, CliError> {
    Ok(serde_json::json!({
        "cwd": crate::cwd()?,
        "file": args.file.as_ref().map(|f| f.display().to_string()),
    }))
}

/// `build  Build it [depends on: gen]`: the name padded to `width`, then
/// the description and the dependencies, if any.
fn line(t: &TaskInfo, width: usize) -> String {
    // Names and descriptions come from the `.rush` file: their control
    // characters are shown escaped, never sent to the terminal.
    let mut line = String::with_capacity(width + 64);
    let name = printable(&t.name);
    line.push_str(&name);
    let desc = printable(t.description.as_deref().unwrap_or(""));
    if !desc.is_empty() || !t.depends_on.is_empty() {
        let pad = width.saturating_sub(name.chars().count()) + 2;
        line.extend(std::iter::repeat_n(' ', pad));
        line.push_str(&desc);
        if !t.depends_on.is_empty() {
            if !desc.is_empty() {
                line.push(' ');
            }
            line.push_str("[depends on: ");
            for (i, dep) in t.depends_on.iter().enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                line.push_str(&printable(dep));
            }
            line.push(']');
        }
    }
    line.push('\n');
    line
}

/// Prints a `TaskList` as it is deserialized.
struct Printer<'a> {
    out: BufWriter<StdoutLock<'a>>,
    /// Our stdout was closed (`| head`): read on, print nothing more.
    closed: bool,
}

impl Printer<'_> {
    fn print(&mut self, t: &TaskInfo, width: usize) {
        if !self.closed && self.out.write_all(line(t, width).as_bytes()).is_err() {
            self.closed = true;
        }
    }
}

impl<'de, 'a> DeserializeSeed<'de> for Printer<'a> {
    type Value = Printer<'a>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'a> Visitor<'de> for Printer<'a> {
    type Value = Printer<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a task list")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut width: Option<usize> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "warning" => {
                    if let Some(w) = map.next_value::<Option<String>>()? {
                        let _ = self.out.flush();
                        eprintln!("warning: {}", printable_text(&w));
                    }
                }
                "name_width" => width = Some(map.next_value()?),
                "tasks" => match width {
                    Some(width) => {
                        self = map.next_value_seed(Tasks {
                            printer: self,
                            width,
                        })?;
                    }
                    // A daemon that does not send the width first: the
                    // whole list is needed to align it.
                    None => {
                        let tasks: Vec<TaskInfo> = map.next_value()?;
                        let width = tasks.iter().map(|t| t.name.chars().count()).max();
                        for t in &tasks {
                            self.print(t, width.unwrap_or(0));
                        }
                    }
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(self)
    }
}

/// The `tasks` array, printed one element at a time.
struct Tasks<'a> {
    printer: Printer<'a>,
    width: usize,
}

impl<'de, 'a> DeserializeSeed<'de> for Tasks<'a> {
    type Value = Printer<'a>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, 'a> Visitor<'de> for Tasks<'a> {
    type Value = Printer<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tasks")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        while let Some(t) = seq.next_element::<TaskInfo>()? {
            self.printer.print(&t, self.width);
        }
        Ok(self.printer)
    }
}
