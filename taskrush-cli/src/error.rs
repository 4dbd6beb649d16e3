//! The CLI's errors and their one renderer.
//!
//! Style: `error: ` + lower-case message with names in backticks, then the
//! location (`  --> file:line:col`), then `hint: `, then `caused by:`.

use std::path::PathBuf;
use std::time::Duration;

use taskrush_protocol::error::WireError;
use taskrush_protocol::run::EXIT_ERROR;

#[derive(Debug)]
pub enum CliError {
    /// An error answered by the daemon (bad `.rush`, unknown task, …).
    Remote(WireError),
    /// The daemon could not be started.
    DaemonStart { reason: String, log: PathBuf },
    /// The connection broke.
    Disconnected(String),
    /// A socket read or write timed out (turned into [`CliError::NoAnswer`]
    /// where the socket is known).
    TimedOut,
    /// The daemon accepted the connection but did not answer `hello` in time.
    NoAnswer { socket: PathBuf, waited: Duration },
    /// The socket belongs to another user: nothing was sent to it.
    ForeignSocket { socket: PathBuf, uid: u32 },
    /// The daemon said something we do not understand.
    Protocol(String),
    /// Wrong use of the command line.
    Usage {
        message: String,
        hint: Option<String>,
    },
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl CliError {
    pub fn io(context: &str, source: std::io::Error) -> CliError {
        CliError::Io {
            context: context.to_owned(),
            source,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage { .. } => 2,
            _ => EXIT_ERROR,
        }
    }

    /// The full message, as printed on stderr.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            CliError::Remote(err) => {
                let data = err.error_data();
                out.push_str(&format!("error: {}\n", err.message));
                if let Some(loc) = data.location() {
                    out.push_str(&format!("  --> {loc}\n"));
                }
                if let Some(hint) = data.hint {
                    out.push_str(&format!("hint: {hint}\n"));
                }
            }
            CliError::DaemonStart { reason, log } => {
                out.push_str(&format!(
                    "error: the daemon `taskrushd` did not start: {reason}\n"
                ));
                out.push_str(&format!("hint: its log is `{}`\n", log.display()));
                if let Some(tail) = log_tail(log, 10) {
                    out.push_str("last lines of the log:\n");
                    out.push_str(&tail);
                }
            }
            CliError::Disconnected(why) => {
                out.push_str(&format!(
                    "error: lost the connection to the daemon ({why})\n"
                ));
                out.push_str("hint: see `taskrush daemon logs`\n");
            }
            CliError::TimedOut => {
                out.push_str("error: the daemon did not answer in time\n");
                out.push_str("hint: see `taskrush daemon logs`\n");
            }
            CliError::NoAnswer { socket, waited } => {
                out.push_str(&format!(
                    "error: the daemon at `{}` did not answer within {}\n",
                    socket.display(),
                    seconds(*waited)
                ));
                out.push_str(
                    "hint: `taskrush daemon restart` replaces it; set TASKRUSH_CONNECT_TIMEOUT (seconds) to wait longer\n",
                );
            }
            CliError::ForeignSocket { socket, uid } => {
                out.push_str(&format!(
                    "error: the socket `{}` belongs to another user (uid {uid}); nothing was sent to it\n",
                    socket.display()
                ));
                if std::env::var_os("TASKRUSH_SOCKET").is_some_and(|s| !s.is_empty()) {
                    out.push_str(
                        "hint: point TASKRUSH_SOCKET at a path in a directory only you can write, or unset it\n",
                    );
                } else {
                    // The default path: the runtime directory is shared.
                    out.push_str(
                        "hint: XDG_RUNTIME_DIR is not private to you: set it (or TASKRUSH_SOCKET) to a directory only you can write\n",
                    );
                }
            }
            CliError::Protocol(why) => {
                out.push_str(&format!("error: {why}\n"));
                out.push_str(
                    "hint: the daemon may be of another version: `taskrush daemon restart`\n",
                );
            }
            CliError::Usage { message, hint } => {
                out.push_str(&format!("error: {message}\n"));
                if let Some(hint) = hint {
                    out.push_str(&format!("hint: {hint}\n"));
                }
            }
            CliError::Io { context, source } => {
                out.push_str(&format!("error: {context}\n  caused by: {source}\n"));
            }
        }
        out
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// The last `n` lines of a file, indented, if it can be read.
pub fn log_tail(path: &std::path::Path, n: usize) -> Option<String> {
    use std::io::{Read as _, Seek as _};
    // The end of the file only: the log may have been replaced by anything.
    let mut file = crate::client::open_regular(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(std::io::SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .ok()?;
    let mut bytes = Vec::new();
    file.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let tail: String = lines[start..].iter().map(|l| format!("  {l}\n")).collect();
    (!tail.is_empty()).then_some(tail)
}
