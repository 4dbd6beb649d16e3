//! `taskrush lsp`: a language server for `.rush` files on stdin/stdout
//! (LSP 3.17), backed by the warm daemon.
//!
//! Synchronous, as rust-analyzer's `lsp-server` is: one loop reads a
//! message and answers it. It never parses YAML and never starts an async
//! runtime: every answer comes from the daemon's `check_rush` (the
//! positioned errors and warnings of the editor's unsaved text, and the
//! symbols it defines: tasks, where they are written, their
//! `depends_on` items and where those are written), `explain_run` (a
//! cached task's status in a hover) and `run` (the code lenses' command). Completion looks at the line being typed only to know
//! which list to offer (keys, task names, plugin names); the names come
//! from the last text of the document that loaded.
//!
//! While the text is broken (the normal state while typing: `check_rush`
//! then answers no tasks) completion, hover, definition, references,
//! symbols and lenses serve the symbols of the document's last clean
//! check, or, for a document never checked clean, those of the config the
//! daemon has loaded (`list_tasks`); diagnostics always come from the
//! latest check.
//!
//! Positions are UTF-16 code units, LSP's default (the daemon is asked for
//! them with `position_encoding: "utf-16"`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::Notification as _;
use lsp_types::request::Request as _;
use serde_json::{Value, json};
use taskrush_protocol::daemon::TaskList;
use taskrush_protocol::editor::{PositionEncoding, RushCheck, TaskReference, TaskSymbol};
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::run::RunRequest;

use crate::client::{Client, Incoming};
use crate::error::CliError;

/// The command a "Run" code lens asks the client to execute.
const RUN_COMMAND: &str = "taskrush.run";

/// Keys of the top level of a `.rush` file, of a task, of a plugin entry.
const TOP_KEYS: &[&str] = &["tasks", "plugins", "dotenv", "includes"];
const TASK_KEYS: &[(&str, &str)] = &[
    ("cmd", "the shell command"),
    ("description", "one line shown by `taskrush --list`"),
    ("depends_on", "tasks that run first"),
    ("cache_files", "globs of the inputs: skipped when unchanged"),
    (
        "outputs",
        "globs of the files it writes, restored on a cache hit",
    ),
    ("env", "environment variables"),
    ("dotenv", "`.env` files to read"),
    ("dir", "where it runs, relative to the file"),
    ("before", "shell hook run before `cmd`"),
    ("after", "shell hook run after `cmd` succeeded"),
    ("plugins", "per-task plugin settings"),
];
const PLUGIN_KEYS: &[&str] = &[
    "name", "version", "type", "path", "required", "config", "timeout", "limits",
];

/// One open document.
struct Document {
    text: String,
    /// The last answer of `check_rush` for a text that loaded (its symbols
    /// serve while the text is broken).
    symbols: Option<RushCheck>,
}

struct Server {
    connection: Connection,
    daemon: Option<Client>,
    documents: HashMap<String, Document>,
}

/// `taskrush lsp`.
pub fn serve() -> Result<i32, CliError> {
    let (connection, io_threads) = Connection::stdio();
    let capabilities = json!({
        "positionEncoding": "utf-16",
        "textDocumentSync": {"openClose": true, "change": 1, "save": {"includeText": false}},
        "completionProvider": {"triggerCharacters": [" ", "[", ",", "-", ":"]},
        "hoverProvider": true,
        "definitionProvider": true,
        "referencesProvider": true,
        "documentSymbolProvider": true,
        "codeLensProvider": {"resolveProvider": false},
        "executeCommandProvider": {"commands": [RUN_COMMAND]},
    });
    let init = json!({
        "capabilities": capabilities,
        "serverInfo": {"name": "taskrush", "version": taskrush_protocol::VERSION},
    });
    let started = (|| {
        let (id, _params) = connection.initialize_start()?;
        connection.initialize_finish(id, init)
    })();
    if let Err(e) = started {
        return Err(CliError::Protocol(format!(
            "`taskrush lsp`: the editor did not initialize: {e}"
        )));
    }
    let mut server = Server {
        connection,
        daemon: None,
        documents: HashMap::new(),
    };
    server.main_loop();
    drop(server);
    let _ = io_threads.join();
    Ok(0)
}

impl Server {
    fn main_loop(&mut self) {
        while let Ok(message) = self.connection.receiver.recv() {
            match message {
                Message::Request(request) => {
                    match self.connection.handle_shutdown(&request) {
                        Ok(true) | Err(_) => return,
                        Ok(false) => {}
                    }
                    let id = request.id.clone();
                    let response = match self.request(request) {
                        Ok(result) => Response::new_ok(id, result),
                        Err(message) => {
                            Response::new_err(id, ErrorCode::RequestFailed as i32, message)
                        }
                    };
                    self.send(Message::Response(response));
                }
                Message::Notification(n) => self.notification(n),
                Message::Response(_) => {}
            }
        }
    }

    fn send(&self, message: Message) {
        let _ = self.connection.sender.send(message);
    }

    fn notify(&self, method: &str, params: Value) {
        self.send(Message::Notification(Notification::new(
            method.to_owned(),
            params,
        )));
    }

    fn show_message(&self, kind: u8, message: String) {
        self.notify(
            lsp_types::notification::ShowMessage::METHOD,
            json!({"type": kind, "message": message}),
        );
    }

    /// A call to the daemon, connecting (and starting it) when needed;
    /// once more on a fresh connection when the daemon went away.
    fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, CliError> {
        for attempt in 0..2 {
            if self.daemon.is_none() {
                self.daemon = Some(crate::client::connect(
                    &DaemonPaths::from_env(),
                    false,
                    false,
                )?);
            }
            let Some(client) = self.daemon.as_mut() else {
                continue;
            };
            match client.call(method, params.clone()) {
                Err(CliError::Disconnected(_) | CliError::TimedOut) if attempt == 0 => {
                    self.daemon = None;
                }
                other => return other,
            }
        }
        Err(CliError::Disconnected("the daemon went away".into()))
    }

    fn notification(&mut self, n: Notification) {
        use lsp_types::notification::{
            DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, DidSaveTextDocument,
        };
        let uri = n.params["textDocument"]["uri"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let text = n.params["textDocument"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                self.documents.insert(
                    uri.clone(),
                    Document {
                        text,
                        symbols: None,
                    },
                );
                self.check(&uri);
            }
            DidChangeTextDocument::METHOD => {
                // Full sync: the last change holds the whole text.
                let text = n.params["contentChanges"]
                    .as_array()
                    .and_then(|c| c.last())
                    .and_then(|c| c["text"].as_str());
                if let (Some(text), Some(doc)) = (text, self.documents.get_mut(&uri)) {
                    doc.text = text.to_owned();
                    self.check(&uri);
                }
            }
            DidSaveTextDocument::METHOD => self.check(&uri),
            DidCloseTextDocument::METHOD => {
                self.documents.remove(&uri);
                self.publish(&uri, Vec::new());
            }
            _ => {}
        }
    }

    fn publish(&self, uri: &str, diagnostics: Vec<Value>) {
        self.notify(
            lsp_types::notification::PublishDiagnostics::METHOD,
            json!({"uri": uri, "diagnostics": diagnostics}),
        );
    }

    /// Checks a document's text with the daemon and publishes what it says.
    fn check(&mut self, uri: &str) {
        let Some(path) = path_of(uri) else { return };
        let Some(text) = self.documents.get(uri).map(|d| d.text.clone()) else {
            return;
        };
        let params = json!({
            "path": path.display().to_string(),
            "text": text,
            "position_encoding": PositionEncoding::Utf16.name(),
        });
        let check: RushCheck = match self.call(method::CHECK_RUSH, params) {
            Ok(check) => check,
            Err(e) => {
                self.show_message(1, format!("taskrush: {}", e.render().trim_end()));
                return;
            }
        };
        let this = path.display().to_string();
        let diagnostics = check
            .diagnostics
            .iter()
            .map(|d| {
                let here = d.path == this;
                let (line, column) = match (here, d.line, d.column) {
                    (true, Some(l), c) => (l.saturating_sub(1), c.unwrap_or(1).saturating_sub(1)),
                    _ => (0, 0),
                };
                let mut message = d.message.clone();
                if !here {
                    message = format!("`{}`: {message}", d.path);
                }
                if let Some(hint) = &d.hint {
                    message = format!("{message}\nhint: {hint}");
                }
                let end = word_end(&text, line, column);
                json!({
                    "range": {"start": {"line": line, "character": column},
                              "end": {"line": line, "character": end}},
                    "severity": if d.severity == "error" { 1 } else { 2 },
                    "source": "taskrush",
                    "message": message,
                })
            })
            .collect();
        let loads = check.diagnostics.iter().all(|d| d.severity != "error");
        if loads {
            if let Some(doc) = self.documents.get_mut(uri) {
                doc.symbols = Some(check);
            }
        } else if self.documents.get(uri).is_some_and(|d| d.symbols.is_none()) {
            // Broken while typing (the normal state) and never checked
            // clean: the daemon's loaded config of the file serves until
            // the text loads.
            let loaded = self.loaded(&path);
            if let Some(doc) = self.documents.get_mut(uri) {
                doc.symbols = loaded;
            }
        }
        self.publish(uri, diagnostics);
    }

    /// The symbols of the config the daemon has loaded for `path` (its
    /// saved text, or the last valid one), from `list_tasks`: positions of
    /// `depends_on` items are unknown there (0).
    fn loaded(&mut self, path: &Path) -> Option<RushCheck> {
        let cwd = path.parent()?.display().to_string();
        let params = json!({
            "cwd": cwd,
            "file": path.display().to_string(),
            "position_encoding": PositionEncoding::Utf16.name(),
        });
        let list: TaskList = self.call(method::LIST_TASKS, params).ok()?;
        let tasks = list
            .tasks
            .into_iter()
            .map(|t| TaskSymbol {
                name: t.name,
                file: t.file,
                line: t.line,
                column: t.column,
                description: t.description,
                cmd: t.cmd,
                cached: t.cached,
                depends_on: t
                    .depends_on
                    .into_iter()
                    .map(|name| TaskReference {
                        name,
                        line: 0,
                        column: 0,
                    })
                    .collect(),
            })
            .collect();
        // Only the plugins that add commands are known here.
        let mut plugins: Vec<String> = list.commands.into_iter().map(|c| c.plugin).collect();
        plugins.sort();
        plugins.dedup();
        Some(RushCheck {
            file: list.file,
            position_encoding: list.position_encoding,
            diagnostics: Vec::new(),
            tasks,
            plugins,
        })
    }

    fn request(&mut self, request: Request) -> Result<Value, String> {
        use lsp_types::request::{
            CodeLensRequest, Completion, DocumentSymbolRequest, ExecuteCommand, GotoDefinition,
            HoverRequest, References,
        };
        let params = &request.params;
        match request.method.as_str() {
            Completion::METHOD => Ok(self.completion(params)),
            HoverRequest::METHOD => Ok(self.hover(params)),
            GotoDefinition::METHOD => Ok(self.definition(params)),
            References::METHOD => Ok(self.references(params)),
            DocumentSymbolRequest::METHOD => Ok(self.document_symbols(params)),
            CodeLensRequest::METHOD => Ok(self.code_lenses(params)),
            ExecuteCommand::METHOD => self.execute(params),
            _ => Err(format!("`{}` is not supported", request.method)),
        }
    }

    fn document(&self, params: &Value) -> Option<(&str, &Document)> {
        let uri = params["textDocument"]["uri"].as_str()?;
        let (uri, doc) = self.documents.get_key_value(uri)?;
        Some((uri.as_str(), doc))
    }

    fn symbols(&self, params: &Value) -> &[TaskSymbol] {
        self.document(params)
            .and_then(|(_, d)| d.symbols.as_ref())
            .map(|c| c.tasks.as_slice())
            .unwrap_or_default()
    }

    /// The task named at the cursor: the `depends_on` item or task name
    /// written there (by the daemon's positions), else the word there.
    fn task_at(&self, params: &Value) -> Option<&TaskSymbol> {
        let (uri, doc) = self.document(params)?;
        let path = path_of(uri)?.display().to_string();
        let (line, character) = position(params)?;
        let tasks = self.symbols(params);
        let (start, word) = word_at(&doc.text, line, character)?;
        // A position the daemon gave is the word's first character, or
        // the quote before it.
        let on = |l: usize, c: usize| l == line + 1 && (c == start + 1 || c == start);
        for task in tasks.iter().filter(|t| t.file == path) {
            if on(task.line, task.column) {
                return Some(task);
            }
            if let Some(dep) = task.depends_on.iter().find(|d| on(d.line, d.column)) {
                return tasks.iter().find(|t| t.name == dep.name);
            }
        }
        tasks.iter().find(|t| t.name == word)
    }

    fn completion(&self, params: &Value) -> Value {
        let Some((_, doc)) = self.document(params) else {
            return json!([]);
        };
        let Some((line, character)) = position(params) else {
            return json!([]);
        };
        let symbols = doc.symbols.as_ref();
        let item = |label: &str, kind: u8, detail: Option<&str>| json!({"label": label, "kind": kind, "detail": detail});
        let items: Vec<Value> = match context(&doc.text, line, character) {
            Context::DependsOn => symbols
                .map(|s| s.tasks.iter())
                .into_iter()
                .flatten()
                .map(|t| item(&t.name, 3, t.description.as_deref()))
                .collect(),
            Context::PluginName => symbols
                .map(|s| s.plugins.iter())
                .into_iter()
                .flatten()
                .map(|p| item(p, 9, Some("plugin")))
                .collect(),
            Context::TopKey => TOP_KEYS.iter().map(|k| item(k, 14, None)).collect(),
            Context::TaskKey => TASK_KEYS
                .iter()
                .map(|(k, d)| item(k, 10, Some(d)))
                .collect(),
            Context::PluginKey => PLUGIN_KEYS.iter().map(|k| item(k, 10, None)).collect(),
            Context::None => Vec::new(),
        };
        json!({"isIncomplete": false, "items": items})
    }

    fn hover(&mut self, params: &Value) -> Value {
        let Some(task) = self.task_at(params).cloned() else {
            return Value::Null;
        };
        let mut text = format!("**{}**", task.name);
        if let Some(d) = &task.description {
            text.push_str(&format!("\n\n{d}"));
        }
        match &task.cmd {
            Some(cmd) => text.push_str(&format!("\n\n```sh\n{cmd}\n```")),
            None => text.push_str("\n\n(no `cmd`: runs its dependencies)"),
        }
        if !task.depends_on.is_empty() {
            let deps: Vec<String> = task
                .depends_on
                .iter()
                .map(|d| format!("`{}`", d.name))
                .collect();
            text.push_str(&format!("\n\ndepends on {}", deps.join(", ")));
        }
        if task.cached {
            text.push_str(&format!("\n\ncache: {}", self.cache_status(&task)));
        } else {
            text.push_str("\n\nnot cached: runs every time");
        }
        json!({"contents": {"kind": "markdown", "value": text}})
    }

    /// Whether a cached task is up to date, as the daemon's `explain_run`
    /// says for the saved file ("up to date", "input `src/a.c` changed").
    fn cache_status(&mut self, task: &TaskSymbol) -> String {
        let dir = Path::new(&task.file)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        // The root file: an included task is named from it.
        let file = self
            .documents
            .values()
            .filter_map(|d| d.symbols.as_ref())
            .find(|c| c.tasks.iter().any(|t| t.name == task.name))
            .map(|c| c.file.clone())
            .unwrap_or_else(|| task.file.clone());
        let request = json!({"request": {"cwd": dir, "tasks": [task.name], "file": file,
                                         "env": crate::client_env()}});
        let explained: Result<taskrush_protocol::daemon::RunExplained, _> =
            self.call(method::EXPLAIN_RUN, request);
        match explained {
            Ok(e) => e
                .tasks
                .iter()
                .find(|t| t.task == task.name)
                .map(|t| t.reasons.join("; "))
                .unwrap_or_else(|| "unknown".into()),
            Err(e) => format!("unknown ({})", e.render().trim_end()),
        }
    }

    fn definition(&self, params: &Value) -> Value {
        match self.task_at(params) {
            Some(task) => location(&task.file, task.line, task.column, task.name.as_str()),
            None => Value::Null,
        }
    }

    fn references(&self, params: &Value) -> Value {
        let Some(target) = self.task_at(params) else {
            return json!([]);
        };
        let mut found = Vec::new();
        if params["context"]["includeDeclaration"].as_bool() == Some(true) {
            found.push(location(
                &target.file,
                target.line,
                target.column,
                &target.name,
            ));
        }
        for task in self.symbols(params) {
            for dep in task.depends_on.iter().filter(|d| d.name == target.name) {
                if dep.line > 0 {
                    // As written: an included file names its own tasks
                    // without their namespace.
                    let written = target.name.rsplit(':').next().unwrap_or(&target.name);
                    found.push(location(&task.file, dep.line, dep.column, written));
                }
            }
        }
        Value::Array(found)
    }

    fn document_symbols(&self, params: &Value) -> Value {
        let Some(path) = self.document(params).and_then(|(uri, _)| path_of(uri)) else {
            return json!([]);
        };
        let path = path.display().to_string();
        let symbols: Vec<Value> = self
            .symbols(params)
            .iter()
            .filter(|t| t.file == path && t.line > 0)
            .map(|t| {
                let range = range(t.line, t.column, &t.name);
                json!({
                    "name": t.name,
                    "detail": t.description,
                    "kind": 12,
                    "range": range,
                    "selectionRange": range,
                })
            })
            .collect();
        Value::Array(symbols)
    }

    fn code_lenses(&self, params: &Value) -> Value {
        let Some((uri, _)) = self.document(params) else {
            return json!([]);
        };
        let Some(path) = path_of(uri) else {
            return json!([]);
        };
        let file = path.display().to_string();
        let mut lenses = Vec::new();
        for t in self.symbols(params) {
            if t.file != file || t.line == 0 {
                continue;
            }
            let range = range(t.line, t.column, &t.name);
            let run = |title: String, force: bool, no_deps: bool| {
                json!({"range": range, "command": {
                    "title": title,
                    "command": RUN_COMMAND,
                    "arguments": [{"file": file, "task": t.name, "force": force, "no_deps": no_deps}],
                }})
            };
            let title = match t.depends_on.len() {
                0 => "▶ Run".to_owned(),
                1 => "▶ Run with its dependency".to_owned(),
                n => format!("▶ Run with its {n} dependencies"),
            };
            lenses.push(run(title, false, false));
            if !t.depends_on.is_empty() {
                lenses.push(run("Run this task only".to_owned(), false, true));
            }
            lenses.push(run("Run ignoring the cache".to_owned(), true, false));
        }
        Value::Array(lenses)
    }

    /// `workspace/executeCommand` `taskrush.run`: starts the run through
    /// the daemon on its own connection and thread, and says how it ended
    /// with `window/showMessage`.
    fn execute(&self, params: &Value) -> Result<Value, String> {
        if params["command"].as_str() != Some(RUN_COMMAND) {
            return Err(format!(
                "unknown command `{}`",
                params["command"].as_str().unwrap_or_default()
            ));
        }
        let arg = &params["arguments"][0];
        let (Some(file), Some(task)) = (arg["file"].as_str(), arg["task"].as_str()) else {
            return Err(format!("`{RUN_COMMAND}` needs `file` and `task`"));
        };
        let dir = Path::new(file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let request = RunRequest {
            cwd: dir.display().to_string(),
            tasks: vec![task.to_owned()],
            file: Some(file.to_owned()),
            env: crate::client_env(),
            jobs: 1,
            force: arg["force"].as_bool().unwrap_or(false),
            inherit_stdio: false,
            watch: false,
            on_change: Default::default(),
            args: Vec::new(),
            token: None,
            no_deps: arg["no_deps"].as_bool().unwrap_or(false),
        };
        let sender = self.connection.sender.clone();
        let task = task.to_owned();
        let say = move |kind: u8, message: String| {
            let _ = sender.send(Message::Notification(Notification::new(
                lsp_types::notification::ShowMessage::METHOD.to_owned(),
                json!({"type": kind, "message": message}),
            )));
        };
        say(3, format!("taskrush: running `{task}`"));
        std::thread::spawn(move || {
            let (kind, message) = match follow_run(request) {
                Ok((true, summary)) => (3, format!("taskrush: `{task}` succeeded{summary}")),
                Ok((false, summary)) => (1, format!("taskrush: `{task}` failed{summary}")),
                Err(e) => (1, format!("taskrush: {}", e.render().trim_end())),
            };
            say(kind, message);
        });
        Ok(Value::Null)
    }
}

/// Runs `request` on a new connection to the daemon until `run_finished`:
/// whether it succeeded, and a few words on how.
fn follow_run(request: RunRequest) -> Result<(bool, String), CliError> {
    let mut client = crate::client::connect(&DaemonPaths::from_env(), false, false)?;
    let params = serde_json::to_value(&request).map_err(|e| CliError::Protocol(e.to_string()))?;
    let id = client.send(method::RUN, json!({ "request": params }))?;
    loop {
        match client.read()? {
            Incoming::Response { id: got, result } if got == id => {
                result.map_err(CliError::Remote)?;
            }
            Incoming::Notification { params, .. } => {
                let event = &params["result"];
                if event["event"] == "run_finished" {
                    let ok = event["status"] == "success";
                    let summary =
                        match (event["failed_task"].as_str(), event["duration_ms"].as_u64()) {
                            (Some(t), _) => format!(" (`{t}` failed)"),
                            (None, Some(ms)) => format!(" in {ms} ms"),
                            _ => String::new(),
                        };
                    return Ok((ok, summary));
                }
            }
            _ => {}
        }
    }
}

/// The path of a `file://` URI.
fn path_of(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(rest.get(i + 1..i + 3)?, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(String::from_utf8(out).ok()?))
}

/// The `file://` URI of `path`.
fn uri_of(path: &str) -> String {
    let mut uri = String::from("file://");
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// 0-based line and UTF-16 character of `params.position`.
fn position(params: &Value) -> Option<(usize, usize)> {
    let p = &params["position"];
    Some((
        p["line"].as_u64()? as usize,
        p["character"].as_u64()? as usize,
    ))
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The range of `name` written at 1-based `line`/`column` (a quoted name
/// is still covered from its first character).
fn range(line: usize, column: usize, name: &str) -> Value {
    let (l, c) = (line.saturating_sub(1), column.saturating_sub(1));
    json!({"start": {"line": l, "character": c},
           "end": {"line": l, "character": c + utf16_len(name)}})
}

fn location(file: &str, line: usize, column: usize, name: &str) -> Value {
    json!({"uri": uri_of(file), "range": range(line, column, name)})
}

fn name_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}' | '"' | '\'' | '#')
}

/// The UTF-16 character where the word starting at `character` of 0-based
/// `line` ends (at least one past it).
fn word_end(text: &str, line: usize, character: usize) -> usize {
    let Some(line_text) = text.lines().nth(line) else {
        return character + 1;
    };
    let mut units = 0;
    let mut end = None;
    for c in line_text.chars() {
        if units >= character {
            if !name_char(c) || (c == ':' && end.is_some()) {
                break;
            }
            end = Some(units + c.len_utf16());
        }
        units += c.len_utf16();
    }
    end.unwrap_or(character + 1).max(character + 1)
}

/// The word under 0-based `line`/`character`: its first UTF-16 character
/// and text (a task name may hold `:`; a trailing one is the YAML key's).
fn word_at(text: &str, line: usize, character: usize) -> Option<(usize, String)> {
    let line_text = text.lines().nth(line)?;
    let mut start = 0;
    let mut units = 0;
    let mut word = String::new();
    for c in line_text.chars() {
        if name_char(c) {
            if word.is_empty() {
                start = units;
            }
            word.push(c);
        } else if units >= character {
            break;
        } else {
            word.clear();
        }
        units += c.len_utf16();
        if units > character && !name_char(c) {
            break;
        }
    }
    let word = word
        .trim_end_matches(':')
        .trim_start_matches('-')
        .to_owned();
    (!word.is_empty()).then_some((start, word))
}

/// What the cursor is writing, for completion.
#[derive(Debug, PartialEq)]
enum Context {
    TopKey,
    TaskKey,
    PluginKey,
    DependsOn,
    PluginName,
    None,
}

/// Looks at the line being typed and at the keys above it (by indentation).
fn context(text: &str, line: usize, character: usize) -> Context {
    let lines: Vec<&str> = text.lines().collect();
    let current = lines.get(line).copied().unwrap_or("");
    let before: String = {
        let mut units = 0;
        current
            .chars()
            .take_while(|c| {
                units += c.len_utf16();
                units <= character
            })
            .collect()
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key = |l: &str| {
        let t = l.trim_start().trim_start_matches("- ");
        t.split_once(':')
            .map(|(k, _)| k.trim().trim_matches('"').to_owned())
    };
    // The chain of parent keys of the cursor's line, nearest first.
    let mut parents: Vec<String> = Vec::new();
    let mut level = indent(&before);
    for l in lines[..line.min(lines.len())].iter().rev() {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if indent(l) < level {
            if let Some(k) = key(l) {
                parents.push(k);
            }
            level = indent(l);
            if level == 0 {
                break;
            }
        }
    }
    if let Some((k, _)) = before.trim_start().split_once(':') {
        // After `key:` on the same line.
        let k = k.trim_start_matches("- ").trim();
        return match k {
            "depends_on" | "deps" => Context::DependsOn,
            _ => Context::None,
        };
    }
    let in_list = before.trim_start().starts_with('-');
    match parents.as_slice() {
        [] => Context::TopKey,
        [p, ..] if in_list && (p == "depends_on" || p == "deps") => Context::DependsOn,
        [p, t, tasks] if p == "plugins" && tasks == "tasks" && !t.is_empty() => Context::PluginName,
        [_, tasks] if tasks == "tasks" => Context::TaskKey,
        [plugins] if plugins == "plugins" => Context::PluginKey,
        _ => Context::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_being_typed_says_which_names_to_offer() {
        let text = "tasks:\n  build:\n    cmd: x\n    depends_on: [li\n    \n  t:\n    depends_on:\n      - l\n    plugins:\n      s\nplu";
        assert_eq!(context(text, 3, 19), Context::DependsOn);
        assert_eq!(context(text, 4, 4), Context::TaskKey);
        assert_eq!(context(text, 7, 9), Context::DependsOn);
        assert_eq!(context(text, 9, 7), Context::PluginName);
        assert_eq!(context(text, 10, 3), Context::TopKey);
    }

    #[test]
    fn uris_and_paths_round_trip() {
        let path = "/tmp/a b/ü.rush";
        assert_eq!(path_of(&uri_of(path)), Some(PathBuf::from(path)));
    }

    #[test]
    fn the_word_under_the_cursor_is_a_task_name() {
        let text = "    depends_on: [lint, \"web:build\"]";
        assert_eq!(word_at(text, 0, 18).map(|w| w.1), Some("lint".into()));
        assert_eq!(word_at(text, 0, 26).map(|w| w.1), Some("web:build".into()));
    }
}
