//! Why a task failed without a status of its own: it could not start, or
//! something before or around it stopped it. Rendered in one place, the
//! [`Display`](std::fmt::Display) below, into the `message` of its
//! `task_finished` event.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::cache::lookup::LookupError;
use crate::config::expand::ExpandError;
use crate::plugin::HookFailure;

/// Why a task failed (its command's own failures are its exit status).
#[derive(Debug)]
pub(crate) enum TaskFailure {
    /// The plan names a task its config does not have.
    Vanished { task: String },
    /// An entry of the task's `env` cannot be expanded.
    Env {
        task: String,
        key: String,
        error: ExpandError,
    },
    /// Its inputs could not be read or hashed, or its cache entry could not
    /// be cleared before it ran (an entry left in place could later say it
    /// is up to date when it is not).
    Cache(LookupError),
    /// A plugin vetoed it, or a required plugin failed.
    Plugin(HookFailure),
    /// Its shell could not be started in the project root.
    CannotStart { root: PathBuf, error: io::Error },
    /// Its `dir:` is not a directory (checked when it starts).
    NoDir {
        task: String,
        dir: String,
        file: PathBuf,
        line: usize,
    },
    /// A `dotenv:` file is missing (and not optional), unreadable or
    /// malformed: the whole message, naming the file (never a value).
    Dotenv(String),
    /// Its process could not be waited for.
    CannotWait(io::Error),
    /// A failure, and then a required plugin failed in the hooks after it.
    Also(Box<TaskFailure>, HookFailure),
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskFailure::Vanished { task } => write!(f, "task `{task}` vanished from the plan"),
            TaskFailure::Env { task, key, error } => {
                write!(f, "in `env.{key}` of task `{task}`: {}", error.message)
            }
            TaskFailure::Cache(e) => e.fmt(f),
            TaskFailure::Plugin(failure) => failure.fmt(f),
            TaskFailure::CannotStart { root, error } => {
                write!(
                    f,
                    "cannot start the command in `{}`: {error}",
                    root.display()
                )
            }
            TaskFailure::NoDir {
                task,
                dir,
                file,
                line,
            } => {
                write!(f, "`dir` `{dir}` of task `{task}` ")?;
                if *line > 0 {
                    write!(f, "({}:{line}) ", file.display())?;
                } else {
                    write!(f, "(in `{}`) ", file.display())?;
                }
                write!(
                    f,
                    "is not a directory\nhint: `dir` is relative to the `.rush` file's directory; create it, or have a dependency create it"
                )
            }
            TaskFailure::Dotenv(message) => f.write_str(message),
            TaskFailure::CannotWait(e) => write!(f, "cannot wait for the task: {e}"),
            TaskFailure::Also(first, also) => write!(f, "{first}\n{also}"),
        }
    }
}

impl std::error::Error for TaskFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_reads_as_the_message_it_replaces() {
        let env = TaskFailure::Env {
            task: "build".into(),
            key: "OUT".into(),
            error: ExpandError {
                message: "unterminated `${` in `${HOME`".into(),
            },
        };
        assert_eq!(
            env.to_string(),
            "in `env.OUT` of task `build`: unterminated `${` in `${HOME`"
        );
        let start = TaskFailure::CannotStart {
            root: "/p".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            start.to_string(),
            "cannot start the command in `/p`: entity not found"
        );
        let veto = HookFailure::Vetoed {
            plugin: "guard".into(),
            message: "no".into(),
        };
        let also = TaskFailure::Also(Box::new(start), veto);
        assert_eq!(
            also.to_string(),
            "cannot start the command in `/p`: entity not found\nvetoed by plugin `guard`: no"
        );
        assert_eq!(
            TaskFailure::Cache(LookupError::Check("cannot read `x`".into())).to_string(),
            "cannot check the cache: cannot read `x`"
        );
    }
}
