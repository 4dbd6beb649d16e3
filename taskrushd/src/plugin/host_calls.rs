//! The host calls plugins make (`protocol/src/host.rs`), one server for
//! every kind: a WebAssembly guest through its `taskrush.host_call`
//! import, an external plugin as JSON-RPC requests on its stdout, a
//! native plugin through its host callback. Each is checked against the
//! plugin's granted permissions. A call the grants do not
//! allow is answered `PERMISSION_DENIED` and written to the audit trail
//! as a `denied` record.
//!
//! Paths are resolved (symlinks included) before they are checked, and
//! files are opened without following a final symlink, so a link inside
//! a granted directory cannot lead outside it.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use taskrush_protocol::error::WireError;
use taskrush_protocol::host::{
    CallCommandParams, Denied, EnvGetParams, EnvGetResult, GraphEnv, GraphTask, HttpRequestParams,
    HttpRequestResult, MAX_BODY_BYTES, ReadFileParams, ReadFileResult, RunCommandParams,
    RunCommandResult, TaskGraphParams, TaskGraphResult, TaskResultEntry, TaskResultsParams,
    TaskResultsResult, WriteFileParams, WriteFileResult, error, method,
};
use taskrush_protocol::plugin::CommandResult;

use crate::config::rush_file::RushFile;
use taskrush_protocol::jsonrpc::{Message, Response};
use taskrush_protocol::plugin::{Permissions, PluginManifest};

use super::audit;

/// What a guest may reach: its granted permissions, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Grants {
    pub(crate) name: String,
    /// The project root (relative paths are relative to it).
    pub(crate) root: PathBuf,
    pub(crate) plugin_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    pub(crate) granted: Permissions,
    /// Granted `filesystem` entries: (writable, path as resolved).
    pub(crate) paths: Vec<(bool, PathBuf)>,
    /// The values of the granted environment variables that are set.
    pub(crate) env: BTreeMap<String, String>,
    /// The environment programs run by `run_command` get (`PATH`, `HOME`,
    /// locale, `TMPDIR`, the granted variables).
    pub(crate) process_env: BTreeMap<String, String>,
    /// The daemon's runtime (programs of `run_command` are spawned on it),
    /// so that a plain thread can serve calls too; `None`: the current one.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    /// What calls beyond files, hosts, variables and programs reach (the
    /// task graph, other plugins); `None` in unit tests.
    pub(crate) links: Option<Links>,
}

/// What `task_graph`, `task_results` and `call_command` reach: the plugin
/// host, the project as the plugin was started for it, the client's
/// environment (the run's, when the call comes from a run's hook).
#[derive(Clone)]
pub(crate) struct Links {
    pub(crate) host: Weak<super::host::PluginHost>,
    pub(crate) config: Arc<RushFile>,
    pub(crate) env: Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

/// The call the plugin is answering when it makes a host call: carried
/// with every call the host makes to a plugin (see
/// `PluginProcess::call_in`), handed to [`serve_blocking`].
#[derive(Clone, Default)]
pub(crate) struct CallContext {
    /// The run whose hook it answers (what `task_results` reports).
    pub(crate) run_id: Option<u64>,
    /// The plugins whose `call_command` led to this call, the first
    /// caller first and the plugin called last (empty: the call came
    /// from the host itself). A call to a plugin already in it is a
    /// cycle.
    pub(crate) chain: Vec<String>,
    /// The project as the request being served parsed it (a plugin
    /// command), when there is no run: what `task_graph` shows.
    pub(crate) project: Option<Project>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("run_id", &self.run_id)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl CallContext {
    /// A call of a run's hook.
    pub(crate) fn run(run_id: u64) -> CallContext {
        CallContext {
            run_id: Some(run_id),
            ..CallContext::default()
        }
    }

    /// A call made for a request about `config` (a plugin command).
    pub(crate) fn request(config: &RushFile, env: &BTreeMap<String, String>) -> CallContext {
        CallContext {
            project: Some((Arc::new(config.clone()), Arc::new(env.clone()))),
            ..CallContext::default()
        }
    }
}

/// One run in progress, as host calls see it: registered by the run's
/// plugins (`RunPlugins`) for as long as they live.
pub(crate) struct RunView {
    pub(crate) config: Arc<RushFile>,
    pub(crate) env: Arc<BTreeMap<String, String>>,
    /// The tasks that ended so far, in that order.
    pub(crate) results: Mutex<Vec<TaskResultEntry>>,
}

static RUNS: LazyLock<Mutex<HashMap<u64, Arc<RunView>>>> = LazyLock::new(Default::default);

fn runs() -> std::sync::MutexGuard<'static, HashMap<u64, Arc<RunView>>> {
    RUNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `run_id` started: its tasks' results are served until
/// [`run_ended`].
pub(crate) fn run_started(run_id: u64, view: Arc<RunView>) {
    runs().insert(run_id, view);
}

/// Run `run_id` as `view` ended. A run restarted under the same id (watch
/// mode) registered a new view already: that one stays.
pub(crate) fn run_ended(run_id: u64, view: &Arc<RunView>) {
    let mut runs = runs();
    if runs.get(&run_id).is_some_and(|v| Arc::ptr_eq(v, view)) {
        runs.remove(&run_id);
    }
}

fn run_view(run_id: u64) -> Option<Arc<RunView>> {
    runs().get(&run_id).cloned()
}

/// The grants of plugin `name` resolved for host calls: `granted` against
/// the project root, its directory `plugin_dir`, its private `data` and
/// `tmp` dirs, the client's environment `client` (granted variables only),
/// the environment programs it runs get (`process_env`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn resolve(
    name: &str,
    plugin_dir: &Path,
    granted: &Permissions,
    (root, data, tmp): (&Path, &Path, &Path),
    client: &BTreeMap<String, String>,
    process_env: &BTreeMap<String, String>,
    links: Option<Links>,
) -> Grants {
    let home = client.get("HOME").map(String::as_str);
    let paths = granted
        .filesystem
        .iter()
        .map(|e| super::enforce::granted_path(e, root, plugin_dir, home))
        .collect();
    let env = client
        .iter()
        .filter(|(k, _)| granted.environment.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Grants {
        name: name.to_owned(),
        root: root.to_owned(),
        plugin_dir: plugin_dir.to_owned(),
        data_dir: data.to_owned(),
        tmp_dir: tmp.to_owned(),
        granted: granted.clone(),
        paths,
        env,
        process_env: process_env.clone(),
        runtime: tokio::runtime::Handle::try_current().ok(),
        links,
    }
}

/// Every host call this host serves, for `initialize`'s `host_methods`.
pub(crate) fn methods() -> Vec<String> {
    method::ALL.iter().map(|m| (*m).to_owned()).collect()
}

impl Grants {
    /// Directories `read_file` may read below.
    fn readable(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.paths.iter().map(|(_, p)| p.clone()).collect();
        v.extend([
            self.root.clone(),
            self.plugin_dir.clone(),
            self.data_dir.clone(),
            self.tmp_dir.clone(),
        ]);
        v.iter().filter_map(|p| p.canonicalize().ok()).collect()
    }

    /// Directories `write_file` may write below.
    fn writable(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .paths
            .iter()
            .filter(|(w, _)| *w)
            .map(|(_, p)| p.clone())
            .collect();
        v.extend([self.data_dir.clone(), self.tmp_dir.clone()]);
        v.iter().filter_map(|p| p.canonicalize().ok()).collect()
    }
}

/// One failed host call, as the guest sees it.
struct CallErr(WireError);

fn failed(message: impl Into<String>) -> CallErr {
    CallErr(WireError {
        code: error::FAILED,
        message: message.into(),
        data: None,
    })
}

/// Serve one message from the plugin: the response to send back, or
/// `None` for a notification. `deadline` is the deadline of the call the
/// plugin is answering.
///
/// Blocking (a call may wait for a file, a program or an HTTP server up
/// to `deadline`): call it from a thread that may block — the wasm
/// instance's blocking thread, a `spawn_blocking` task, or a plain thread
/// that is not a runtime worker (a native plugin's loader). It never
/// needs to be inside the runtime: what must run on it (programs of
/// `run_command`) goes through the handle kept in [`Grants`]. Async code
/// calls [`serve`].
pub(crate) fn serve_blocking(
    g: &Grants,
    cx: &CallContext,
    bytes: &[u8],
    deadline: Instant,
) -> Option<Vec<u8>> {
    let msg: Message = match serde_json::from_slice(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(target: "plugin", plugin = %g.name, "sent a host call that is not JSON-RPC: {e}");
            let r = Response::<Value>::new(
                taskrush_protocol::jsonrpc::Id::Null,
                Err(WireError {
                    code: -32700,
                    message: format!("parse error: {e}"),
                    data: None,
                }),
            );
            return serde_json::to_vec(&r).ok();
        }
    };
    let Some(method) = msg.method.clone() else {
        tracing::warn!(target: "plugin", plugin = %g.name, "sent a host call without a method");
        return None;
    };
    let params = msg.params.clone().unwrap_or(Value::Null);
    let Some(id) = msg.id.clone() else {
        super::process::notification(&g.name, Some(&g.root), &method, Some(params));
        return None;
    };
    let outcome = dispatch(g, cx, &method, params, deadline).map_err(|CallErr(e)| e);
    serde_json::to_vec(&Response::new(id, outcome)).ok()
}

/// [`serve_blocking`] for async code: on a blocking thread, so that the
/// caller (an external plugin's reader) is never held up.
pub(crate) async fn serve(
    g: Arc<Grants>,
    cx: CallContext,
    bytes: Vec<u8>,
    deadline: Instant,
) -> Option<Vec<u8>> {
    tokio::task::spawn_blocking(move || serve_blocking(&g, &cx, &bytes, deadline))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(target: "plugin", "a host call failed: {e}");
            None
        })
}

fn dispatch(
    g: &Grants,
    cx: &CallContext,
    name: &str,
    params: Value,
    deadline: Instant,
) -> Result<Value, CallErr> {
    fn p<T: DeserializeOwned>(name: &str, v: Value) -> Result<T, CallErr> {
        serde_json::from_value(v).map_err(|e| {
            CallErr(WireError {
                code: -32602,
                message: format!("invalid params of `{name}`: {e}"),
                data: None,
            })
        })
    }
    fn r<T: Serialize>(v: T) -> Result<Value, CallErr> {
        serde_json::to_value(v).map_err(|e| failed(e.to_string()))
    }
    match name {
        method::ENV_GET => r(env_get(g, p(name, params)?)?),
        method::READ_FILE => r(read_file(g, p(name, params)?)?),
        method::WRITE_FILE => r(write_file(g, p(name, params)?)?),
        method::HTTP_REQUEST => r(http_request(g, p(name, params)?, deadline)?),
        method::RUN_COMMAND => r(run_command(g, p(name, params)?, deadline)?),
        method::TASK_GRAPH => {
            let _: Option<TaskGraphParams> = p(name, params)?;
            r(task_graph(g, cx))
        }
        method::TASK_RESULTS => {
            let params = if params.is_null() {
                TaskResultsParams::default()
            } else {
                p(name, params)?
            };
            r(task_results(g, cx, params)?)
        }
        method::CALL_COMMAND => r(call_command(g, cx, p(name, params)?, deadline)?),
        other => Err(CallErr(WireError {
            code: -32601,
            message: format!("method not found: `{other}`"),
            data: None,
        })),
    }
}

/// Deny `item` of `permission` to the guest, and audit it.
fn deny(g: &Grants, call: &str, permission: &str, item: &str) -> CallErr {
    audit::record(
        "denied",
        &g.name,
        &g.root,
        json!({"call": call, "permission": permission, "item": item}),
    );
    tracing::warn!(target: "plugin", plugin = %g.name, "denied `{call}`: no `{permission}` grant for `{item}`");
    CallErr(WireError {
        code: error::PERMISSION_DENIED,
        message: format!("permission denied: `{call}` needs a `{permission}` grant for `{item}`"),
        data: serde_json::to_value(Denied {
            permission: permission.into(),
            item: item.into(),
        })
        .ok(),
    })
}

/// The project the call is about: its run's, else the one the plugin
/// was started for.
/// A project and the client environment it is used with.
pub(crate) type Project = (Arc<RushFile>, Arc<BTreeMap<String, String>>);

fn project(g: &Grants, cx: &CallContext) -> Option<Project> {
    if let Some(p) = cx.project.as_ref().filter(|(c, _)| c.root == g.root) {
        return Some(p.clone());
    }
    if let Some(run) = cx.run_id.and_then(run_view)
        && run.config.root == g.root
    {
        return Some((run.config.clone(), run.env.clone()));
    }
    g.links.as_ref().map(|l| (l.config.clone(), l.env.clone()))
}

fn task_graph(g: &Grants, cx: &CallContext) -> TaskGraphResult {
    let Some((config, _)) = project(g, cx) else {
        return TaskGraphResult {
            root: g.root.display().to_string(),
            ..Default::default()
        };
    };
    let mut out = TaskGraphResult {
        root: config.root.display().to_string(),
        ..Default::default()
    };
    for (name, t) in &config.tasks {
        for d in &t.depends_on {
            out.edges.push([name.clone(), d.clone()]);
        }
        out.tasks.insert(
            name.clone(),
            GraphTask {
                command: t.cmd.clone(),
                description: t.description.clone(),
                deps: t.depends_on.clone(),
                env: t
                    .env
                    .iter()
                    .map(|(k, v)| GraphEnv {
                        name: k.clone(),
                        // Only what the `environment` grant covers.
                        value: g.granted.environment.contains(k).then(|| v.clone()),
                    })
                    .collect(),
                sources: t.cache_files.clone(),
                outputs: t.outputs.clone(),
                dir: t.dir.clone(),
                plugins: t.plugins.keys().cloned().collect(),
            },
        );
    }
    out
}

fn task_results(
    g: &Grants,
    cx: &CallContext,
    p: TaskResultsParams,
) -> Result<TaskResultsResult, CallErr> {
    let Some(run_id) = p.run_id.or(cx.run_id) else {
        return Err(failed(
            "no run: `task_results` is served while the plugin answers a hook of a run (or give `run_id`)",
        ));
    };
    let run = run_view(run_id)
        .filter(|r| r.config.root == g.root)
        .ok_or_else(|| failed(format!("no run {run_id} of this project is in progress")))?;
    let tasks = run
        .results
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(TaskResultsResult { run_id, tasks })
}

/// `a` → `b` → `a`.
fn chain_text(chain: &[String]) -> String {
    chain
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn call_command(
    g: &Grants,
    cx: &CallContext,
    p: CallCommandParams,
    deadline: Instant,
) -> Result<CommandResult, CallErr> {
    if !g.granted.plugins.contains(&p.plugin) {
        return Err(deny(g, method::CALL_COMMAND, "plugins", &p.plugin));
    }
    let mut chain = cx.chain.clone();
    if chain.last() != Some(&g.name) {
        chain.push(g.name.clone());
    }
    let cycle = chain.contains(&p.plugin);
    chain.push(p.plugin.clone());
    if cycle {
        audit::record(
            "denied",
            &g.name,
            &g.root,
            json!({"call": method::CALL_COMMAND, "permission": "plugins", "item": p.plugin, "why": "cycle", "chain": chain}),
        );
        tracing::warn!(target: "plugin", plugin = %g.name, "refused a call cycle: {}", chain_text(&chain));
        return Err(failed(format!(
            "call cycle refused: {} (a plugin cannot be called again by a call it made)",
            chain_text(&chain)
        )));
    }
    let links = g
        .links
        .as_ref()
        .ok_or_else(|| failed("this host cannot call plugins from here"))?;
    let host = links
        .host
        .upgrade()
        .ok_or_else(|| failed("the daemon is stopping"))?;
    let (config, env) = project(g, cx).ok_or_else(|| failed("no project"))?;
    let left = budget(deadline, None)?;
    let handle = g
        .runtime
        .clone()
        .or_else(|| tokio::runtime::Handle::try_current().ok())
        .ok_or_else(|| failed("no runtime to call the plugin on"))?;
    let callee = CallContext {
        run_id: cx.run_id,
        chain,
        project: Some((config.clone(), env.clone())),
    };
    handle
        .block_on(host.plugin_command(
            &g.name,
            &config,
            &env,
            (&p.plugin, &p.command),
            p.args,
            callee,
            left,
        ))
        .map_err(failed)
}

fn env_get(g: &Grants, p: EnvGetParams) -> Result<EnvGetResult, CallErr> {
    if !g.granted.environment.contains(&p.name) {
        return Err(deny(g, method::ENV_GET, "environment", &p.name));
    }
    Ok(EnvGetResult {
        value: g.env.get(&p.name).cloned(),
    })
}

/// `path` (relative to the project root) with `.` and `..` folded.
fn absolute(g: &Grants, path: &str) -> PathBuf {
    let joined = g.root.join(path);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn under(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

fn read_file(g: &Grants, p: ReadFileParams) -> Result<ReadFileResult, CallErr> {
    let wanted = absolute(g, &p.path);
    // Resolved first: a symlink is judged by where it leads.
    let real = match wanted.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            // Do not tell whether a file outside the grants exists.
            if !under(&wanted, &g.readable()) {
                return Err(deny(g, method::READ_FILE, "filesystem", &p.path));
            }
            return Err(failed(format!("cannot read `{}`: {e}", p.path)));
        }
    };
    if !under(&real, &g.readable()) {
        return Err(deny(g, method::READ_FILE, "filesystem", &p.path));
    }
    let file =
        std::fs::File::open(&real).map_err(|e| failed(format!("cannot read `{}`: {e}", p.path)))?;
    let mut bytes = Vec::new();
    file.take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(format!("cannot read `{}`: {e}", p.path)))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(failed(format!(
            "`{}` is larger than {} MiB",
            p.path,
            MAX_BODY_BYTES >> 20
        )));
    }
    let contents =
        String::from_utf8(bytes).map_err(|_| failed(format!("`{}` is not UTF-8 text", p.path)))?;
    Ok(ReadFileResult { contents })
}

fn write_file(g: &Grants, p: WriteFileParams) -> Result<WriteFileResult, CallErr> {
    use std::os::unix::fs::OpenOptionsExt;
    let wanted = absolute(g, &p.path);
    let (Some(parent), Some(file_name)) = (wanted.parent(), wanted.file_name()) else {
        return Err(deny(g, method::WRITE_FILE, "filesystem", &p.path));
    };
    let real_parent = match parent.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            if !under(parent, &g.writable()) {
                return Err(deny(g, method::WRITE_FILE, "filesystem", &p.path));
            }
            return Err(failed(format!("cannot write `{}`: {e}", p.path)));
        }
    };
    let real = real_parent.join(file_name);
    if !under(&real, &g.writable()) {
        return Err(deny(g, method::WRITE_FILE, "filesystem", &p.path));
    }
    if p.contents.len() > MAX_BODY_BYTES {
        return Err(failed(format!(
            "the contents are larger than {} MiB",
            MAX_BODY_BYTES >> 20
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options
        .create(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644);
    if p.append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    let mut f = options
        .open(&real)
        .map_err(|e| failed(format!("cannot write `{}`: {e}", p.path)))?;
    f.write_all(p.contents.as_bytes())
        .map_err(|e| failed(format!("cannot write `{}`: {e}", p.path)))?;
    Ok(WriteFileResult {
        bytes_written: p.contents.len() as u64,
    })
}

/// Whether `host` (and `port`) is in the `network` grant: `host`,
/// `host:port`, `*.domain` or `*`.
pub(crate) fn host_granted(granted: &[String], host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    granted.iter().any(|g| {
        let g = g.to_ascii_lowercase();
        let (gh, gp) = match g.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse::<u16>().ok()),
            _ => (g.clone(), None),
        };
        if gp.is_some_and(|gp| gp != port) {
            return false;
        }
        gh == "*"
            || gh == host
            || gh
                .strip_prefix("*.")
                .is_some_and(|d| host.ends_with(&format!(".{d}")))
    })
}

/// What is left of the call's deadline, capped by `timeout_ms`.
fn budget(deadline: Instant, timeout_ms: Option<u64>) -> Result<Duration, CallErr> {
    let left = deadline.saturating_duration_since(Instant::now());
    let left = match timeout_ms {
        Some(ms) => left.min(Duration::from_millis(ms)),
        None => left,
    };
    if left.is_zero() {
        return Err(failed("the call's deadline passed"));
    }
    Ok(left)
}

fn http_request(
    g: &Grants,
    p: HttpRequestParams,
    deadline: Instant,
) -> Result<HttpRequestResult, CallErr> {
    let uri: ureq::http::Uri = p
        .url
        .parse()
        .map_err(|e| failed(format!("invalid url `{}`: {e}", p.url)))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if !matches!(scheme, "http" | "https") {
        return Err(failed(format!(
            "invalid url `{}`: only http and https are served",
            p.url
        )));
    }
    let host = uri.host().unwrap_or("");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    if !host_granted(&g.granted.network, host, port) {
        return Err(deny(g, method::HTTP_REQUEST, "network", host));
    }
    if p.body.len() > MAX_BODY_BYTES {
        return Err(failed(format!(
            "the body is larger than {} MiB",
            MAX_BODY_BYTES >> 20
        )));
    }
    let left = budget(deadline, p.timeout_ms)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(left))
        .http_status_as_error(false)
        // A redirect could lead to a host that is not granted.
        .max_redirects(0)
        // Never through a proxy from the daemon's environment.
        .proxy(None)
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(p.method.as_str())
        .uri(uri);
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    let req = req
        .body(p.body.into_bytes())
        .map_err(|e| failed(format!("invalid request: {e}")))?;
    let mut resp = agent
        .run(req)
        .map_err(|e| failed(format!("`{}` failed: {e}", p.url)))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_BODY_BYTES as u64)
        .read_to_end(&mut body)
        .map_err(|e| failed(format!("reading the answer of `{}` failed: {e}", p.url)))?;
    Ok(HttpRequestResult {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn run_command(
    g: &Grants,
    p: RunCommandParams,
    deadline: Instant,
) -> Result<RunCommandResult, CallErr> {
    let base = Path::new(&p.program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let granted = g
        .granted
        .process
        .iter()
        .any(|c| *c == p.program || (!p.program.contains('/') && c == base));
    if !granted {
        return Err(deny(g, method::RUN_COMMAND, "process", &p.program));
    }
    let cwd = match &p.cwd {
        Some(c) => absolute(g, c),
        None => g.root.clone(),
    };
    let left = budget(deadline, p.timeout_ms)?;
    // The program runs under the plugin's sandbox, with its grants, as
    // an external plugin would (`enforce::plan`).
    let manifest = PluginManifest {
        name: g.name.clone(),
        version: "0.0.0".into(),
        description: String::new(),
        author: String::new(),
        license: String::new(),
        homepage: None,
        repository: None,
        taskrush_version: "*".into(),
        plugin_type: Default::default(),
        entry_point: std::iter::once(p.program.clone())
            .chain(p.args.iter().cloned())
            .collect(),
        permissions: g.granted.clone(),
        enforcement: None,
    };
    let mut env = g.process_env.clone();
    let plan = super::enforce::plan(&g.name, &manifest, &g.granted, &cwd, &g.root, &mut env)
        .map_err(|e| failed(format!("cannot run `{}`: {e}", p.program)))?;
    let handle = g
        .runtime
        .clone()
        .or_else(|| tokio::runtime::Handle::try_current().ok())
        .ok_or_else(|| failed("no runtime to run the program on"))?;
    handle.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut proc =
            crate::process::spawn::spawn_plugin(&plan.argv, &cwd, &env, Some(&plan.spec))
                .map_err(|e| failed(format!("cannot run `{}`: {e}", p.program)))?;
        let group = proc.group();
        let stdin = proc.child.stdin.take();
        let stdout = proc.child.stdout.take();
        let stderr = proc.child.stderr.take();
        let input = p.stdin.clone();
        let work = async {
            let write = async {
                if let Some(mut w) = stdin {
                    let _ = w.write_all(input.as_bytes()).await;
                }
            };
            let read = |r: Option<tokio::process::ChildStdout>| async move {
                let mut v = Vec::new();
                if let Some(r) = r {
                    let _ = r.take(MAX_BODY_BYTES as u64).read_to_end(&mut v).await;
                }
                v
            };
            let read_err = |r: Option<tokio::process::ChildStderr>| async move {
                let mut v = Vec::new();
                if let Some(r) = r {
                    let _ = r.take(MAX_BODY_BYTES as u64).read_to_end(&mut v).await;
                }
                v
            };
            let ((), out, err) = tokio::join!(write, read(stdout), read_err(stderr));
            let status = proc.child.wait().await;
            (out, err, status)
        };
        match tokio::time::timeout(left, work).await {
            Ok((out, err, status)) => {
                let status =
                    status.map_err(|e| failed(format!("cannot wait for `{}`: {e}", p.program)))?;
                Ok(RunCommandResult {
                    exit_code: status.code(),
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                })
            }
            Err(_) => {
                group.signal(rustix::process::Signal::KILL);
                Err(failed(format!(
                    "`{}` did not finish within {} (killed)",
                    p.program,
                    crate::human::duration(left)
                )))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_grants_match_hosts_ports_and_subdomains() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(host_granted(
            &g(&["hooks.slack.com"]),
            "hooks.slack.com",
            443
        ));
        assert!(host_granted(
            &g(&["Hooks.Slack.com"]),
            "hooks.slack.com.",
            443
        ));
        assert!(!host_granted(&g(&["hooks.slack.com"]), "evil.com", 443));
        assert!(host_granted(&g(&["127.0.0.1:8080"]), "127.0.0.1", 8080));
        assert!(!host_granted(&g(&["127.0.0.1:8080"]), "127.0.0.1", 8081));
        assert!(host_granted(&g(&["*.example.com"]), "a.example.com", 80));
        assert!(!host_granted(
            &g(&["*.example.com"]),
            "example.com.evil",
            80
        ));
        assert!(!host_granted(&g(&[]), "localhost", 80));
    }

    fn grants(dir: &Path) -> Grants {
        let root = dir.join("project");
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        for d in [&root, &data, &tmp, &dir.join("out")] {
            std::fs::create_dir_all(d).unwrap();
        }
        Grants {
            name: "p".into(),
            root: root.clone(),
            plugin_dir: dir.join("plugin"),
            data_dir: data,
            tmp_dir: tmp,
            granted: Permissions {
                environment: vec!["TOKEN".into()],
                ..Default::default()
            },
            paths: vec![(true, dir.join("out"))],
            env: [("TOKEN".to_owned(), "t".to_owned())].into(),
            process_env: BTreeMap::new(),
            runtime: None,
            links: None,
        }
    }

    fn call(g: &Grants, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params});
        let out = serve_blocking(
            g,
            &CallContext::default(),
            &serde_json::to_vec(&req).unwrap(),
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn files_are_read_and_written_only_within_the_grants_and_symlinks_do_not_escape() {
        let d = tempfile::tempdir().unwrap();
        let g = grants(d.path());
        std::fs::write(g.root.join("a.txt"), "hello").unwrap();
        std::fs::write(d.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), g.root.join("link")).unwrap();
        assert_eq!(
            call(&g, "read_file", json!({"path":"a.txt"}))["result"]["contents"],
            "hello"
        );
        for path in ["../secret", "link", "/etc/passwd", "../nope"] {
            let r = call(&g, "read_file", json!({ "path": path }));
            assert_eq!(r["error"]["code"], -32020, "{path}: {r}");
            assert_eq!(r["error"]["data"]["permission"], "filesystem");
        }
        let w = call(&g, "write_file", json!({"path":"../out/x","contents":"1"}));
        assert_eq!(w["result"]["bytes_written"], 1, "{w}");
        let w = call(&g, "write_file", json!({"path":"b.txt","contents":"1"}));
        assert_eq!(
            w["error"]["code"], -32020,
            "the project root is read-only: {w}"
        );
        std::os::unix::fs::symlink(d.path().join("secret"), d.path().join("out/l")).unwrap();
        let w = call(&g, "write_file", json!({"path":"../out/l","contents":"x"}));
        assert_eq!(
            w["error"]["code"], -32021,
            "no write through a symlink: {w}"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("secret")).unwrap(),
            "s"
        );
    }

    #[test]
    fn only_granted_variables_and_hosts_are_served() {
        let d = tempfile::tempdir().unwrap();
        let g = grants(d.path());
        assert_eq!(
            call(&g, "env_get", json!({"name":"TOKEN"}))["result"]["value"],
            "t"
        );
        let r = call(&g, "env_get", json!({"name":"HOME"}));
        assert_eq!(r["error"]["code"], -32020);
        assert_eq!(
            r["error"]["data"],
            json!({"permission":"environment","item":"HOME"})
        );
        let r = call(&g, "http_request", json!({"url":"http://127.0.0.1:9/"}));
        assert_eq!(
            r["error"]["data"],
            json!({"permission":"network","item":"127.0.0.1"})
        );
        let r = call(
            &g,
            "run_command",
            json!({"program":"sh","args":["-c","id"]}),
        );
        assert_eq!(
            r["error"]["data"],
            json!({"permission":"process","item":"sh"})
        );
        let r = call(&g, "nope", json!({}));
        assert_eq!(r["error"]["code"], -32601);
    }

    #[test]
    fn call_command_needs_a_plugins_grant_and_refuses_a_cycle_naming_the_chain() {
        let d = tempfile::tempdir().unwrap();
        let mut g = grants(d.path());
        let r = call(&g, "call_command", json!({"plugin": "b", "command": "x"}));
        assert_eq!(r["error"]["code"], -32020, "{r}");
        assert_eq!(
            r["error"]["data"],
            json!({"permission": "plugins", "item": "b"})
        );
        g.granted.plugins = vec!["a".into(), "p".into()];
        let cx = CallContext {
            chain: vec!["a".into(), "p".into()],
            ..CallContext::default()
        };
        for (target, chain) in [("a", "`a` → `p` → `a`"), ("p", "`a` → `p` → `p`")] {
            let req = json!({"jsonrpc": "2.0", "id": 1, "method": "call_command",
                             "params": {"plugin": target, "command": "x"}});
            let out = serve_blocking(
                &g,
                &cx,
                &serde_json::to_vec(&req).unwrap(),
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap();
            let r: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(r["error"]["code"], -32021, "{r}");
            let m = r["error"]["message"].as_str().unwrap();
            assert!(
                m.starts_with(&format!("call cycle refused: {chain}")),
                "{m}"
            );
        }
    }

    #[test]
    fn task_results_outside_a_run_say_so() {
        let d = tempfile::tempdir().unwrap();
        let r = call(&grants(d.path()), "task_results", json!({}));
        assert_eq!(r["error"]["code"], -32021);
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no run: `task_results`")),
            "{r}"
        );
    }
}
