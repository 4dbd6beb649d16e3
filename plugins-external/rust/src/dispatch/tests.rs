//! The dispatcher against a fake host: a closure that records every
//! message the plugin sends and answers host calls from a table.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Value, json};

use crate::{
    CommandResult, Dispatcher, Error, Hook, Host, HostError, InitializeParams, PluginCommand,
    Result, TaskContext, TaskError, TaskResult, TaskRushPlugin,
};

/// A plugin that uses every method and host call.
#[derive(Default)]
struct Probe {
    prefix: String,
    seen: Vec<String>,
}

impl TaskRushPlugin for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn version(&self) -> &str {
        "2.1.0"
    }
    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::BeforeTask, Hook::AfterTask, Hook::OnTaskFailure]
    }
    fn initialize(&mut self, params: &InitializeParams, host: &mut Host) -> Result {
        self.prefix = params.config["prefix"].as_str().unwrap_or("").to_owned();
        if self.prefix == "fail" {
            return Err(Error::failed("cannot start"));
        }
        host.info("started");
        Ok(())
    }
    fn before_task(&mut self, ctx: &TaskContext, host: &mut Host) -> Result {
        self.seen.push(format!("before {}", ctx.task_name));
        if ctx.command.contains("rm -rf /") {
            return Err(Error::veto(format!("`{}` is dangerous", ctx.task_name))
                .with_data(json!({"pattern": "rm -rf /"})));
        }
        if ctx.task_name == "secret" {
            host.read_file("/etc/shadow")?;
        }
        if ctx.task_name == "panic" {
            panic!("boom");
        }
        Ok(())
    }
    fn after_task(&mut self, ctx: &TaskContext, result: &TaskResult, host: &mut Host) -> Result {
        let r = host.http_post(
            "http://127.0.0.1:9/hook",
            "application/json",
            json!({"text": format!("{} {:?}", ctx.task_name, result.status)}).to_string(),
        )?;
        self.seen
            .push(format!("after {} -> {}", ctx.task_name, r.status));
        Ok(())
    }
    fn on_task_failure(&mut self, ctx: &TaskContext, error: &TaskError, _: &mut Host) -> Result {
        self.seen
            .push(format!("failure {}: {}", ctx.task_name, error.message));
        Ok(())
    }
    fn commands(&self) -> Vec<PluginCommand> {
        vec![PluginCommand {
            name: "greet".into(),
            description: "Say hello".into(),
        }]
    }
    fn command(
        &mut self,
        _name: &str,
        args: &[String],
        cwd: &str,
        host: &mut Host,
    ) -> Result<CommandResult> {
        let user = host.env_get("USER")?.unwrap_or_else(|| "nobody".into());
        Ok(CommandResult {
            exit_code: 0,
            stdout: format!("{}hello {user} {} in {cwd}\n", self.prefix, args.join(" ")),
            stderr: String::new(),
        })
    }
}

/// What the fake host saw.
type Sent = Rc<RefCell<Vec<Value>>>;

/// A host that answers `env_get` and `http_request`, denies `read_file`
/// and records everything.
fn fake_host() -> (Host, Sent) {
    let sent: Sent = Rc::default();
    let log = Rc::clone(&sent);
    let host = Host::new(move |msg: &[u8]| {
        let msg: Value = serde_json::from_slice(msg).expect("the SDK sends JSON");
        log.borrow_mut().push(msg.clone());
        let id = msg.get("id")?.clone();
        let outcome = match msg["method"].as_str() {
            Some("env_get") => json!({"result": {"value": "ada"}}),
            Some("http_request") => json!({"result": {"status": 204}}),
            Some("read_file") => json!({"error": {
                "code": -32020,
                "message": "`read_file` of `/etc/shadow` is not granted",
                "data": {"permission": "filesystem", "item": "/etc/shadow"}
            }}),
            _ => json!({"error": {"code": -32601, "message": "no such method"}}),
        };
        let mut answer = json!({"jsonrpc": "2.0", "id": id});
        answer
            .as_object_mut()
            .unwrap()
            .extend(outcome.as_object().unwrap().clone());
        Some(serde_json::to_vec(&answer).unwrap())
    });
    (host, sent)
}

fn probe() -> (Dispatcher<Probe>, Sent) {
    let (host, sent) = fake_host();
    (Dispatcher::new(Probe::default(), host), sent)
}

fn call(d: &mut Dispatcher<Probe>, message: Value) -> Value {
    let out = d
        .handle(&serde_json::to_vec(&message).unwrap())
        .expect("a request has an answer");
    serde_json::from_slice(&out).expect("the answer is JSON")
}

fn init(d: &mut Dispatcher<Probe>, config: Value) -> Value {
    call(
        d,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocol_versions": [1, 2], "taskrush_version": "0.3.0", "name": "probe",
            "config": config, "project_root": "/p",
            "host_methods": taskrush_protocol::host::method::ALL,
        }}),
    )
}

fn ctx(task: &str, command: &str) -> Value {
    json!({"task_name": task, "command": command, "working_dir": "/p", "run_id": 7})
}

#[test]
fn initialize_answers_name_version_protocol_hooks_and_commands() {
    let (mut d, sent) = probe();
    let answer = init(&mut d, json!({"prefix": "> "}));
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": 1, "result": {
            "name": "probe", "version": "2.1.0", "protocol": 1,
            "hooks": ["before_task", "after_task", "on_task_failure"],
            "commands": [{"name": "greet", "description": "Say hello"}]
        }})
    );
    assert_eq!(d.protocol(), Some(1));
    assert_eq!(
        sent.borrow()[0],
        json!({"jsonrpc": "2.0", "method": "log", "params": {"level": "info", "message": "started"}})
    );
}

#[test]
fn a_host_offering_no_protocol_this_sdk_speaks_is_refused_with_the_supported_list() {
    let (mut d, _) = probe();
    let answer = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": "a", "method": "initialize", "params": {
            "protocol_versions": [2], "taskrush_version": "9.0.0", "name": "probe",
            "project_root": "/p"
        }}),
    );
    assert_eq!(answer["id"], "a");
    assert_eq!(answer["error"]["code"], -32011);
    assert_eq!(answer["error"]["data"], json!({"supported": [1]}));
}

#[test]
fn an_error_from_initialize_fails_the_start() {
    let (mut d, _) = probe();
    let answer = init(&mut d, json!({"prefix": "fail"}));
    assert_eq!(
        answer["error"],
        json!({"code": -32603, "message": "cannot start"})
    );
}

#[test]
fn a_veto_from_before_task_answers_the_veto_code_with_its_data() {
    let (mut d, _) = probe();
    init(&mut d, json!({}));
    let ok = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 3, "method": "before_task", "params": {"context": ctx("build", "make")}}),
    );
    assert_eq!(ok, json!({"jsonrpc": "2.0", "id": 3, "result": null}));
    let vetoed = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 4, "method": "before_task", "params": {"context": ctx("wipe", "rm -rf / ")}}),
    );
    assert_eq!(
        vetoed["error"],
        json!({"code": -32010, "message": "`wipe` is dangerous", "data": {"pattern": "rm -rf /"}})
    );
    assert_eq!(d.plugin().seen, ["before build", "before wipe"]);
}

#[test]
fn a_denied_host_call_is_a_typed_error_and_a_failure_of_the_hook() {
    let (mut host, _) = fake_host();
    assert_eq!(
        host.read_file("/etc/shadow"),
        Err(HostError::PermissionDenied {
            permission: "filesystem".into(),
            item: "/etc/shadow".into(),
            message: "`read_file` of `/etc/shadow` is not granted".into(),
        })
    );
    let (mut d, _) = probe();
    init(&mut d, json!({}));
    let answer = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 5, "method": "before_task", "params": {"context": ctx("secret", "cat")}}),
    );
    assert_eq!(answer["error"]["code"], -32603);
    assert_eq!(
        answer["error"]["message"],
        "`read_file` of `/etc/shadow` is not granted"
    );
}

#[test]
fn after_task_and_on_task_failure_get_their_result_and_error() {
    let (mut d, sent) = probe();
    init(&mut d, json!({}));
    let answer = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 6, "method": "after_task", "params": {
            "context": ctx("test", "cargo test"),
            "result": {"status": "failed", "exit_code": 101, "duration_ms": 1200}
        }}),
    );
    assert_eq!(answer["result"], Value::Null);
    let http = sent.borrow().last().cloned().unwrap();
    assert_eq!(http["method"], "http_request");
    assert_eq!(http["params"]["method"], "POST");
    assert_eq!(http["params"]["url"], "http://127.0.0.1:9/hook");
    assert_eq!(
        http["params"]["headers"],
        json!({"Content-Type": "application/json"})
    );
    assert_eq!(http["params"]["body"], r#"{"text":"test Failed"}"#);
    call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 7, "method": "on_task_failure", "params": {
            "context": ctx("test", "cargo test"),
            "error": {"message": "exit code 101", "exit_code": 101}
        }}),
    );
    assert_eq!(
        d.plugin().seen,
        ["after test -> 204", "failure test: exit code 101"]
    );
    let missing = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 8, "method": "after_task", "params": {"context": ctx("t", "")}}),
    );
    assert_eq!(missing["error"]["code"], -32602);
}

#[test]
fn a_command_gets_its_args_and_cwd_and_an_unknown_one_is_invalid_params() {
    let (mut d, _) = probe();
    init(&mut d, json!({"prefix": "> "}));
    let answer = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 9, "method": "command", "params": {
            "name": "greet", "args": ["a", "b"], "cwd": "/p/sub"
        }}),
    );
    assert_eq!(
        answer["result"],
        json!({"exit_code": 0, "stdout": "> hello ada a b in /p/sub\n", "stderr": ""})
    );
    let unknown = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 10, "method": "command", "params": {"name": "nope", "cwd": "/"}}),
    );
    assert_eq!(
        unknown["error"],
        json!({"code": -32602, "message": "unknown command `nope`"})
    );
}

#[test]
fn unknown_methods_bad_json_notifications_and_responses() {
    let (mut d, _) = probe();
    let unknown = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 11, "method": "teleport", "params": {}}),
    );
    assert_eq!(
        unknown["error"],
        json!({"code": -32601, "message": "method `teleport` not found"})
    );
    let bad: Value = serde_json::from_slice(&d.handle(b"{not json").unwrap()).unwrap();
    assert_eq!(bad["id"], Value::Null);
    assert_eq!(bad["error"]["code"], -32700);
    let array: Value = serde_json::from_slice(&d.handle(b"[1]").unwrap()).unwrap();
    assert_eq!(array["error"]["code"], -32600);
    assert_eq!(
        d.handle(br#"{"jsonrpc":"2.0","method":"cancel","params":{}}"#),
        None
    );
    assert_eq!(d.handle(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), None);
    let bad_params = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 12, "method": "before_task", "params": {"ctx": {}}}),
    );
    assert_eq!(bad_params["error"]["code"], -32602);
}

#[test]
fn a_panicking_hook_answers_an_internal_error_and_the_plugin_goes_on() {
    let (mut d, _) = probe();
    init(&mut d, json!({}));
    let answer = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 13, "method": "before_task", "params": {"context": ctx("panic", "x")}}),
    );
    assert_eq!(answer["error"]["code"], -32603);
    assert_eq!(
        answer["error"]["message"],
        "the plugin panicked in `before_task`: boom"
    );
    let next = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 14, "method": "before_task", "params": {"context": ctx("build", "make")}}),
    );
    assert_eq!(next["result"], Value::Null);
}

#[test]
fn shutdown_answers_null() {
    let (mut d, _) = probe();
    let answer = call(
        &mut d,
        json!({"jsonrpc": "2.0", "id": 15, "method": "shutdown"}),
    );
    assert_eq!(answer, json!({"jsonrpc": "2.0", "id": 15, "result": null}));
}

#[test]
fn without_a_host_calls_fail_and_log_lines_are_dropped() {
    let mut host = Host::detached();
    host.warn("nobody listens");
    assert!(matches!(
        host.env_get("HOME"),
        Err(HostError::Failed { code: -32021, .. })
    ));
}

#[test]
fn an_answer_to_another_request_is_a_failure() {
    let mut host =
        Host::new(|_: &[u8]| Some(br#"{"jsonrpc":"2.0","id":99,"result":{"value":"x"}}"#.to_vec()));
    let e = host.env_get("HOME").unwrap_err();
    assert_eq!(
        e.to_string(),
        "the host's answer to `env_get` has another id (expected 1)"
    );
}
