//! An external-process plugin: the stdio protocol (`docs/plugins.md`,
//! "Framing", "The conversation") served over one [`Dispatcher`].
//!
//! [`export_plugin!`](crate::export_plugin) emits
//! `pub fn taskrush_plugin_main() -> std::process::ExitCode` off `wasm32`,
//! which calls [`serve`]; a binary's `main` calls it:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     my_plugin::taskrush_plugin_main()
//! }
//! ```
//!
//! Host calls are JSON-RPC requests written to stdout; the answer is read
//! from stdin. Requests from the host that arrive meanwhile are queued and
//! handled after the call in progress (calls to one instance never
//! overlap). Print nothing to stdout yourself: it carries the protocol
//! only (use `eprintln!`, or [`Host::log`](crate::Host::log)).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::rc::Rc;

use serde_json::Value;

use crate::{Dispatcher, Host, TaskRushPlugin, Transport};

/// The process's stdin and stdout, and requests read early.
struct Stdio<R, W> {
    input: R,
    output: W,
    queued: VecDeque<Vec<u8>>,
}

impl<R: BufRead, W: Write> Stdio<R, W> {
    /// The next line of stdin (without its newline), `None` at its end.
    fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let mut line = Vec::new();
            match self.input.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                return Some(line);
            }
        }
    }

    /// The next message for the plugin: a queued request first.
    fn next_message(&mut self) -> Option<Vec<u8>> {
        self.queued.pop_front().or_else(|| self.read_line())
    }

    fn write(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.output.write_all(message)?;
        self.output.write_all(b"\n")?;
        self.output.flush()
    }
}

struct StdioHost<R, W>(Rc<RefCell<Stdio<R, W>>>);

impl<R: BufRead, W: Write> Transport for StdioHost<R, W> {
    fn call(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let id = serde_json::from_slice::<Value>(message)
            .ok()
            .and_then(|v| v.get("id").cloned());
        let mut io = self.0.borrow_mut();
        io.write(message).ok()?;
        let id = id?; // a notification: no answer
        loop {
            let line = io.read_line()?;
            let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&line) else {
                io.queued.push_back(line); // answered -32700 in turn
                continue;
            };
            if m.contains_key("method") {
                io.queued.push_back(line);
            } else if m.get("id") == Some(&id) {
                return Some(line);
            }
            // A response to nothing we asked: dropped.
        }
    }
}

/// Serves `plugin` on this process's stdin and stdout until stdin ends:
/// success then, failure when stdout cannot be written.
pub fn serve<P: TaskRushPlugin>(plugin: P) -> ExitCode {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    serve_on(plugin, stdin, stdout)
}

/// [`serve`] over any reader and writer (tests).
pub fn serve_on<P: TaskRushPlugin, R: BufRead + 'static, W: Write + 'static>(
    plugin: P,
    input: R,
    output: W,
) -> ExitCode {
    let io = Rc::new(RefCell::new(Stdio {
        input,
        output,
        queued: VecDeque::new(),
    }));
    let mut dispatcher = Dispatcher::new(plugin, Host::new(StdioHost(io.clone())));
    loop {
        let Some(message) = io.borrow_mut().next_message() else {
            return ExitCode::SUCCESS;
        };
        if let Some(answer) = dispatcher.handle(&message)
            && io.borrow_mut().write(&answer).is_err()
        {
            return ExitCode::FAILURE;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{Result, TaskContext};

    /// Reads `X` through a host call in `before_task`.
    #[derive(Default)]
    struct Reader;

    impl TaskRushPlugin for Reader {
        fn name(&self) -> &str {
            "reader"
        }
        fn version(&self) -> &str {
            "1.0.0"
        }
        fn before_task(&mut self, _ctx: &TaskContext, host: &mut Host) -> Result {
            match host.env_get("X")?.as_deref() {
                Some("yes") => Ok(()),
                other => Err(crate::Error::veto(format!("X is {other:?}"))),
            }
        }
    }

    /// A writer the test can read after `serve_on` consumed it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_host_call_goes_out_on_stdout_and_requests_met_while_waiting_are_served_after_it() {
        let ctx = r#"{"task_name":"t","command":"","working_dir":"/p","run_id":1}"#;
        let input = format!(
            "{}\n{}\n{}\n",
            format_args!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"before_task","params":{{"context":{ctx}}}}}"#
            ),
            // The host's next request, before it answers the host call.
            r#"{"jsonrpc":"2.0","id":8,"method":"shutdown"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"value":"yes"}}"#,
        );
        let out = Shared::default();
        let code = serve_on(Reader, Cursor::new(input.into_bytes()), out.clone());
        assert_eq!(code, ExitCode::SUCCESS);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"jsonrpc":"2.0","id":1,"method":"env_get","params":{"name":"X"}}"#,
                r#"{"jsonrpc":"2.0","id":7,"result":null}"#,
                r#"{"jsonrpc":"2.0","id":8,"result":null}"#,
            ],
            "{text}"
        );
    }
}
