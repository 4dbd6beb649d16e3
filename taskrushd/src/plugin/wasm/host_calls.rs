//! The host calls a WebAssembly guest makes through its
//! `taskrush.host_call` import (`protocol/src/host.rs`), each checked
//! against the plugin's granted permissions. A call the grants do not
//! allow is answered `PERMISSION_DENIED` and written to the audit trail
//! as a `denied` record.
//!
//! Paths are resolved (symlinks included) before they are checked, and
//! files are opened without following a final symlink, so a link inside
//! a granted directory cannot lead outside it.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use taskrush_protocol::error::WireError;
use taskrush_protocol::host::{
    Denied, EnvGetParams, EnvGetResult, HttpRequestParams, HttpRequestResult, MAX_BODY_BYTES,
    ReadFileParams, ReadFileResult, RunCommandParams, RunCommandResult, WriteFileParams,
    WriteFileResult, error, method,
};
use taskrush_protocol::jsonrpc::{Message, Response};
use taskrush_protocol::plugin::{Permissions, PluginManifest};

use super::super::audit;

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

/// Serve one message from the guest: the response to send back, or
/// `None` for a notification. `deadline` is the deadline of the call the
/// guest is answering.
pub(crate) fn serve(g: &Grants, bytes: &[u8], deadline: Instant) -> Option<Vec<u8>> {
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
        super::super::process::notification(&g.name, Some(&g.root), &method, Some(params));
        return None;
    };
    let outcome = dispatch(g, &method, params, deadline).map_err(|CallErr(e)| e);
    serde_json::to_vec(&Response::new(id, outcome)).ok()
}

fn dispatch(g: &Grants, name: &str, params: Value, deadline: Instant) -> Result<Value, CallErr> {
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
    let plan = super::super::enforce::plan(&g.name, &manifest, &g.granted, &cwd, &g.root, &mut env)
        .map_err(|e| failed(format!("cannot run `{}`: {e}", p.program)))?;
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| failed("no runtime to run the program on"))?;
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
        }
    }

    fn call(g: &Grants, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params});
        let out = serve(
            g,
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
}
