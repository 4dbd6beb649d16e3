//! Editors as clients: `check_rush` on unsaved text, positions in the
//! encoding a client counts in, and `taskrush lsp` driven by a scripted
//! LSP client and by a real editor (headless Neovim).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use taskrush_tests::{Scenario, bin_dir, wait_timeout};

const PROJECT: &str = "\
tasks:
  lint:
    description: check the style
    cmd: echo linting
  build:
    cmd: echo building > built.txt
    depends_on: [lint]
    cache_files: [\"src/**\"]
";

fn started(rush: &str) -> Scenario {
    let t = Scenario::new().rush(rush);
    t.run(&["--list"]).success();
    t
}

fn rush_path(t: &Scenario) -> String {
    t.project()
        .canonicalize()
        .expect("project dir")
        .join(".rush")
        .display()
        .to_string()
}

/// One request on a fresh connection (newline-delimited framing).
fn call(t: &Scenario, method: &str, params: Value) -> Value {
    let mut s = UnixStream::connect(t.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    writeln!(s, "{msg}").expect("send");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("answer");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn an_unsaved_buffer_with_an_unknown_dependency_is_reported_at_its_item_and_the_project_keeps_its_config()
 {
    let t = started(PROJECT);
    let broken = PROJECT.replace("depends_on: [lint]", "depends_on: [lnt]");
    let got = call(
        &t,
        "check_rush",
        json!({"path": rush_path(&t), "text": broken}),
    );
    let check = &got["result"];
    assert_eq!(check["position_encoding"], "utf-32", "{got}");
    let d = &check["diagnostics"][0];
    assert_eq!(d["severity"], "error", "{got}");
    assert!(
        d["message"].as_str().unwrap_or_default().contains("`lnt`"),
        "{got}"
    );
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(7), Some(18))
    );
    assert_eq!(check["tasks"], json!([]));
    // The project on disk is untouched: it lists as before, no warning.
    let list = t.run(&["--list", "--json"]);
    list.success().expect_stderr("");
    assert!(list.stdout().contains("\"build\""), "{}", list.stdout());
    assert!(!list.stdout().contains("warning"), "{}", list.stdout());

    // A text that loads: no diagnostics, its tasks and where their
    // dependencies are written.
    let got = call(
        &t,
        "check_rush",
        json!({"path": rush_path(&t), "text": PROJECT}),
    );
    let check = &got["result"];
    assert_eq!(check["diagnostics"], json!([]), "{got}");
    let build = &check["tasks"][0];
    assert_eq!(build["name"], "build", "{got}");
    assert_eq!(
        (build["line"].as_u64(), build["column"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(build["cached"], true);
    assert_eq!(
        build["depends_on"],
        json!([{"name": "lint", "line": 7, "column": 18}])
    );
}

#[test]
fn utf16_columns_after_an_emoji_are_counted_as_the_client_asks() {
    let t = started(PROJECT);
    // An unknown key after an emoji on its line (flow mapping).
    let text = "tasks:\n  deploy: {description: \"🚀 ship\", dependson: [x]}\n";
    let column = |encoding: Option<&str>| {
        let mut params = json!({"path": rush_path(&t), "text": text});
        if let Some(e) = encoding {
            params["position_encoding"] = json!(e);
        }
        let got = call(&t, "check_rush", params);
        let check = &got["result"];
        let d = &check["diagnostics"][0];
        assert!(
            d["message"]
                .as_str()
                .unwrap_or_default()
                .contains("dependson"),
            "{got}"
        );
        assert_eq!(d["line"], 2, "{got}");
        (
            check["position_encoding"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            d["column"].as_u64().unwrap_or_default(),
        )
    };
    // `dependson` is the 35th character; the emoji is 2 UTF-16 units and
    // 4 UTF-8 bytes.
    assert_eq!(column(None), ("utf-32".into(), 35));
    assert_eq!(column(Some("characters")), ("utf-32".into(), 35));
    assert_eq!(column(Some("utf-16")), ("utf-16".into(), 36));
    assert_eq!(column(Some("utf-8")), ("utf-8".into(), 38));
    let bad = call(
        &t,
        "check_rush",
        json!({"path": rush_path(&t), "text": text, "position_encoding": "ebcdic"}),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`position_encoding`"),
        "{bad}"
    );
}

#[test]
fn list_tasks_and_its_config_errors_count_columns_as_the_client_asks() {
    // `build` is the 24th character of its line, after an emoji.
    let t = started("tasks: {\"🚀\": {cmd: x}, build: {cmd: y}}\n");
    let cwd = t.project().display().to_string();
    let build_column = |encoding: Option<&str>| {
        let got = call(
            &t,
            "list_tasks",
            json!({"cwd": cwd, "position_encoding": encoding}),
        );
        let list = &got["result"];
        let build = list["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == "build"))
            .unwrap_or_else(|| panic!("{got}"));
        assert_eq!(build["line"], 1);
        (
            list["position_encoding"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            build["column"].as_u64().unwrap_or_default(),
        )
    };
    assert_eq!(build_column(None), ("utf-32".into(), 24));
    assert_eq!(build_column(Some("utf-16")), ("utf-16".into(), 25));
    assert_eq!(build_column(Some("utf-8")), ("utf-8".into(), 27));

    // A file never loaded, broken after the emoji: the error's column too.
    let t = Scenario::new().rush("tasks: {\"🚀\": {cmd: x}, build: {cmdd: y}}\n");
    let cwd = t.project().display().to_string();
    let error_column = |encoding: &str| {
        t.run(&["--list"]);
        let got = call(
            &t,
            "list_tasks",
            json!({"cwd": cwd, "position_encoding": encoding}),
        );
        assert_eq!(got["error"]["code"], -32001, "{got}");
        got["error"]["data"]["column"].as_u64().unwrap_or_default()
    };
    assert_eq!(error_column("utf-32"), 32);
    assert_eq!(error_column("utf-16"), 33);
}

/// `taskrush lsp` on pipes, spoken to with Content-Length framing.
struct Lsp {
    child: Child,
    stdin: ChildStdin,
    incoming: mpsc::Receiver<Value>,
    next_id: u64,
}

impl Lsp {
    fn start(t: &Scenario) -> Lsp {
        let mut child = t
            .command(&["lsp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn taskrush lsp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut len = 0;
                loop {
                    let mut header = String::new();
                    if r.read_line(&mut header).unwrap_or(0) == 0 {
                        return;
                    }
                    if header == "\r\n" {
                        break;
                    }
                    if let Some(n) = header.strip_prefix("Content-Length: ") {
                        len = n.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let Ok(v) = serde_json::from_slice(&body) else {
                    return;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Lsp {
            child,
            stdin,
            incoming,
            next_id: 1,
        }
    }

    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// The next message that `matches`, others being skipped (bounded).
    fn wait(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(v) if matches(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("no {what} from `taskrush lsp` within 30 s"),
            }
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let answer = self.wait(method, |v| v["id"] == id);
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    fn diagnostics(&mut self) -> Value {
        self.wait("diagnostics", |v| {
            v["method"] == "textDocument/publishDiagnostics"
        })["params"]["diagnostics"]
            .clone()
    }

    fn stop(mut self) {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("`taskrush lsp` did not exit after `exit`");
        }
    }
}

fn uri(path: &str) -> String {
    format!("file://{path}")
}

#[test]
fn a_scripted_lsp_client_gets_diagnostics_completion_definitions_references_hover_symbols_and_lenses()
 {
    let t = Scenario::new()
        .rush("tasks:\n  lint:\n    cmd: echo lint\n  app:\n    depends_on: [lint, web:build]\nincludes:\n  web: web\n")
        .file(
            "web/.rush",
            "tasks:\n  build:\n    description: \"🚀 the web app\"\n    cmd: echo building web\n    depends_on: [gen]\n    cache_files: [\"*.txt\"]\n  gen:\n    cmd: echo gen\n",
        );
    let root = rush_path(&t);
    let web = t
        .project()
        .canonicalize()
        .expect("project")
        .join("web/.rush")
        .display()
        .to_string();
    let mut lsp = Lsp::start(&t);
    let init = lsp.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    assert_eq!(init["capabilities"]["positionEncoding"], "utf-16", "{init}");
    assert_eq!(init["capabilities"]["hoverProvider"], true);
    lsp.notify("initialized", json!({}));

    // A broken line as typed: an error at its key.
    let broken = "tasks:\n  lint:\n    cmd: echo lint\n    dependson: [app]\n";
    lsp.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri(&root), "languageId": "yaml", "version": 1, "text": broken}}),
    );
    let d = lsp.diagnostics();
    assert_eq!(d[0]["severity"], 1, "{d}");
    assert_eq!(
        d[0]["range"]["start"],
        json!({"line": 3, "character": 4}),
        "{d}"
    );
    assert_eq!(d[0]["range"]["end"], json!({"line": 3, "character": 13}));
    assert!(
        d[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("did you mean `depends_on`"),
        "{d}"
    );
    // Never checked clean: the config the daemon loaded (the saved file)
    // answers meanwhile.
    let hover = lsp.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri(&root)}, "position": {"line": 1, "character": 3}}),
    );
    let text = hover["contents"]["value"].as_str().unwrap_or_default();
    assert!(text.contains("echo lint"), "{hover}");

    // Fixed (still unsaved): no diagnostics.
    let text = t.read(".rush");
    lsp.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri(&root), "version": 2}, "contentChanges": [{"text": text}]}),
    );
    assert_eq!(lsp.diagnostics(), json!([]));

    let at = |line: u32, character: u32| {
        json!({"textDocument": {"uri": uri(&root)}, "position": {"line": line, "character": character},
               "context": {"includeDeclaration": false}})
    };
    // Completion in `depends_on: [` offers every task, included ones too.
    let completion = lsp.request("textDocument/completion", at(4, 17));
    let labels: Vec<&str> = completion["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["label"].as_str())
        .collect();
    for name in ["lint", "web:build", "web:gen"] {
        assert!(labels.contains(&name), "`{name}` not offered: {labels:?}");
    }
    // Completion of a task's keys.
    let keys = lsp.request("textDocument/completion", at(2, 4));
    assert!(keys.to_string().contains("\"cache_files\""), "{keys}");

    // Definition of `web:build` (in `depends_on`) is in the included file.
    let def = lsp.request("textDocument/definition", at(4, 24));
    assert_eq!(def["uri"], uri(&web), "{def}");
    assert_eq!(def["range"]["start"], json!({"line": 1, "character": 2}));

    // References to `lint`: the item in `app`'s `depends_on`.
    let refs = lsp.request("textDocument/references", at(1, 3));
    assert_eq!(
        refs,
        json!([{"uri": uri(&root), "range": {"start": {"line": 4, "character": 17},
                                              "end": {"line": 4, "character": 21}}}])
    );

    // Hover on `web:build`: description, command, dependencies, cache.
    let hover = lsp.request("textDocument/hover", at(4, 26));
    let text = hover["contents"]["value"].as_str().unwrap_or_default();
    // It is cached and never ran: the daemon says why it would run.
    for part in [
        "🚀 the web app",
        "echo building web",
        "`web:gen`",
        "cache: ",
    ] {
        assert!(text.contains(part), "`{part}` not in hover: {text}");
    }
    assert!(!text.contains("cache: unknown"), "{text}");
    // `lint` is not cached.
    let hover = lsp.request("textDocument/hover", at(1, 3));
    let text = hover["contents"]["value"].as_str().unwrap_or_default();
    assert!(text.contains("not cached"), "{text}");

    // Symbols of this file: its own tasks.
    let symbols = lsp.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri(&root)}}),
    );
    let names: Vec<&str> = symbols
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["app", "lint"]);

    // Code lenses run through the daemon; the end is said in a message.
    let lenses = lsp.request(
        "textDocument/codeLens",
        json!({"textDocument": {"uri": uri(&root)}}),
    );
    let run_app = lenses
        .as_array()
        .expect("lenses")
        .iter()
        .find(|l| l["command"]["arguments"][0]["task"] == "app")
        .expect("a lens for `app`")
        .clone();
    assert_eq!(run_app["command"]["title"], "▶ Run with its 2 dependencies");
    let alone = lenses
        .as_array()
        .expect("lenses")
        .iter()
        .find(|l| {
            l["command"]["arguments"][0]["task"] == "app"
                && l["command"]["arguments"][0]["no_deps"] == true
        })
        .expect("a lens running `app` alone");
    assert_eq!(alone["command"]["title"], "Run this task only");
    lsp.request(
        "workspace/executeCommand",
        json!({"command": run_app["command"]["command"], "arguments": run_app["command"]["arguments"]}),
    );
    let done = lsp.wait("the run's end", |v| {
        v["method"] == "window/showMessage"
            && v["params"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("succeeded") || m.contains("failed"))
    });
    assert!(
        done["params"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`app` succeeded"),
        "{done}"
    );

    // Typing `depends_on: [` breaks the text (the normal state while
    // typing): the diagnostics say so, and completion still offers the
    // tasks of the last text that loaded.
    let typing = "tasks:\n  lint:\n    cmd: echo lint\n  app:\n    depends_on: [";
    lsp.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri(&root), "version": 3}, "contentChanges": [{"text": typing}]}),
    );
    let d = lsp.diagnostics();
    assert_eq!(d[0]["severity"], 1, "{d}");
    let completion = lsp.request("textDocument/completion", at(4, 17));
    let labels: Vec<&str> = completion["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["label"].as_str())
        .collect();
    for name in ["lint", "web:build", "web:gen"] {
        assert!(
            labels.contains(&name),
            "`{name}` not offered while broken: {labels:?}"
        );
    }
    // Definition still answers from those symbols.
    let def = lsp.request("textDocument/definition", at(1, 3));
    assert_eq!(def["uri"], uri(&root), "{def}");
    lsp.stop();
}

fn nvim() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nvim"))
        .find(|p| p.is_file())
}

#[test]
fn neovim_shows_the_broken_line_completes_a_dependency_and_jumps_to_its_definition() {
    let Some(nvim) = nvim() else {
        // `scripts/test` sets it once `nvim` is installed: then a missing
        // editor is a failure, never a silent skip.
        if std::env::var_os("TASKRUSH_REQUIRE_NVIM").is_some_and(|v| v == "1") {
            panic!("`nvim` is not on PATH but TASKRUSH_REQUIRE_NVIM=1 requires it");
        }
        eprintln!("skipped: `nvim` is not installed (scripts/test installs Debian's neovim)");
        return;
    };
    let version = Command::new(&nvim)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    eprintln!("using {version}");
    let t = Scenario::new().rush(
        "tasks:\n  lint:\n    cmd: echo lint\n  build:\n    dependson: [lint]\n    cmd: echo build\n",
    );
    let root = t.project().canonicalize().expect("project");
    let out = t.root().join("nvim-result.json");
    // Neovim 0.7: `vim.lsp.start_client`, `buf_request_sync`; no position
    // encoding negotiation (UTF-16, LSP's default).
    let script = format!(
        r#"
local result = {{}}
local root = {root:?}
local id = vim.lsp.start_client({{cmd = {{{taskrush:?}, 'lsp'}}, root_dir = root, name = 'taskrush'}})
vim.cmd('edit ' .. root .. '/.rush')
local buf = vim.api.nvim_get_current_buf()
vim.lsp.buf_attach_client(buf, id)
vim.wait(30000, function() return #vim.diagnostic.get(buf) > 0 end, 20)
local d = vim.diagnostic.get(buf)[1]
if d then result.diagnostic = {{lnum = d.lnum, col = d.col, message = d.message}} end
-- Fix the line as a user would type it.
vim.api.nvim_buf_set_lines(buf, 4, 5, false, {{'    depends_on: [lint]'}})
vim.wait(30000, function() return #vim.diagnostic.get(buf) == 0 end, 20)
result.fixed = #vim.diagnostic.get(buf) == 0
local uri = vim.uri_from_bufnr(buf)
local function at(line, character)
  return {{textDocument = {{uri = uri}}, position = {{line = line, character = character}}}}
end
local got = vim.lsp.buf_request_sync(buf, 'textDocument/completion', at(4, 17), 20000) or {{}}
result.completion = {{}}
for _, r in pairs(got) do
  for _, item in ipairs((r.result or {{}}).items or {{}}) do table.insert(result.completion, item.label) end
end
got = vim.lsp.buf_request_sync(buf, 'textDocument/definition', at(4, 19), 20000) or {{}}
for _, r in pairs(got) do
  local loc = r.result
  if loc and loc[1] then loc = loc[1] end
  if loc and loc.uri then
    vim.lsp.util.jump_to_location(loc, 'utf-16')
    local cursor = vim.api.nvim_win_get_cursor(0)
    result.jumped = {{line = cursor[1], col = cursor[2], word = vim.fn.expand('<cword>')}}
  end
end
local f = io.open({out:?}, 'w')
f:write(vim.fn.json_encode(result))
f:close()
vim.lsp.stop_client(id)
vim.wait(5000, function() return vim.lsp.get_client_by_id(id) == nil end, 20)
vim.cmd('qa!')
"#,
        root = root.display().to_string(),
        taskrush = bin_dir().join("taskrush").display().to_string(),
        out = out.display().to_string(),
    );
    let script_path = t.root().join("editor-test.lua");
    std::fs::write(&script_path, script).expect("write the script");
    let run = t.sh(&format!(
        "{nvim:?} --headless -u NONE -i NONE -n -c 'luafile {}' </dev/null",
        script_path.display()
    ));
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default())
        .unwrap_or_else(|e| panic!("no result from Neovim ({e}): {}", run.stderr()));
    let d = &result["diagnostic"];
    assert_eq!(
        (d["lnum"].as_u64(), d["col"].as_u64()),
        (Some(4), Some(4)),
        "{result}"
    );
    assert!(
        d["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dependson"),
        "{result}"
    );
    assert_eq!(result["fixed"], true, "{result}");
    assert!(
        result["completion"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("lint"))),
        "{result}"
    );
    assert_eq!(
        result["jumped"],
        json!({"line": 2, "col": 2, "word": "lint"}),
        "{result}"
    );
}
