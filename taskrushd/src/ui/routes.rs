//! The page's API: one function per endpoint, each calling the daemon's
//! own method handler ([`Api`]) as a socket client would.
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /api/overview` | `daemon_status` |
//! | `GET /api/plugins?project=ROOT` | `plugin_info` of every plugin of `plugin_list` |
//! | `GET /api/runs` | `list_runs` and the runs seen finishing |
//! | `GET /api/audit?project=ROOT[&plugin=NAME]` | the last audit records |
//! | `GET /api/events` | the event stream (server-sent events) |
//! | `POST /api/plugins/restart` `{project, name}` | `plugin_restart` |
//! | `POST /api/plugins/grant` `{project, name}` | `plugin_grant` |
//! | `POST /api/plugins/revoke` `{project, name}` | `plugin_revoke` |
//! | `GET /api/metrics` | `metrics` |
//! | `GET /metrics` | `metrics` as OpenMetrics text |
//! | `GET /api/logs?project=ROOT&plugin=NAME` | `plugin_logs` |
//! | `POST /api/plugins/disable`, `/enable` `{project, name}` | `plugin_disable` |
//! | `POST /api/plugins/update` `{project, name}` | `plugin_install NAME` (the newest) |
//! | `POST /api/plugins/remove` `{project, name}` | `plugin_remove` |
//! | `GET /api/registry/search?q=…` | `plugin_search` |
//! | `POST /api/registry/install` `{project, name, version?}` | `plugin_install NAME@=VERSION` |

use std::collections::BTreeMap;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use jsonrpsee::types::ErrorObjectOwned;
use serde::Deserialize;
use serde_json::{Value, json};
use taskrush_protocol::api::TaskRushApiServer as _;

use super::server::{Body, Server, error, json, query};
use crate::api::{Api, Daemon};

/// A POST body at most.
const MAX_BODY: usize = 64 * 1024;
/// Audit records answered at most.
const AUDIT_LINES: usize = 100;
/// The end of the audit trail read for them.
const AUDIT_TAIL: u64 = 512 * 1024;

/// Route a guarded request.
pub(super) async fn route(
    server: &Server,
    daemon: &Arc<Daemon>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let q = |name: &str| query(req.uri().query(), name);
    let api = Api(daemon.clone());
    if req.method() == Method::GET {
        if let Some(asset) = super::assets::get(&path) {
            return asset;
        }
        return match path.as_str() {
            "/api/overview" => overview(&api),
            "/api/plugins" => plugins(&api, daemon, q("project")).await,
            "/api/runs" => runs(&api, server),
            "/api/audit" => audit(daemon, q("project"), q("plugin")).await,
            "/api/events" => super::sse::stream(daemon),
            "/api/metrics" => metrics_json(&api).await,
            "/metrics" => metrics_openmetrics(&api).await,
            "/api/logs" => plugin_logs(&api, q("project"), q("plugin")),
            "/api/registry/search" => registry_search(&api, q("q")).await,
            _ => error(StatusCode::NOT_FOUND, &format!("no page `{path}`")),
        };
    }
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and POST are served",
        );
    }
    const ACTIONS: &[&str] = &[
        "/api/plugins/restart",
        "/api/plugins/grant",
        "/api/plugins/revoke",
        "/api/plugins/disable",
        "/api/plugins/enable",
        "/api/plugins/update",
        "/api/plugins/remove",
        "/api/registry/install",
    ];
    if !ACTIONS.contains(&path.as_str()) {
        return error(StatusCode::NOT_FOUND, &format!("no action `{path}`"));
    }
    let action = match read_action(req).await {
        Ok(action) => action,
        Err(answer) => return answer,
    };
    let Some(root) = loaded(daemon, &action.project) else {
        return unknown_project(&action.project);
    };
    let answer = match path.as_str() {
        "/api/plugins/restart" => restart(&api, &root, &action.name).await,
        "/api/plugins/grant" => grant(&api, &root, &action.name).await,
        "/api/plugins/revoke" => revoke(&api, &root, &action.name).await,
        "/api/plugins/disable" => disable(&api, &root, &action.name, true).await,
        "/api/plugins/enable" => disable(&api, &root, &action.name, false).await,
        "/api/plugins/update" => update(&api, &action.project, &action.name).await,
        "/api/plugins/remove" => remove(&api, &action.name).await,
        "/api/registry/install" => {
            registry_install(&api, &action.name, action.version.as_deref()).await
        }
        _ => return error(StatusCode::NOT_FOUND, &format!("no action `{path}`")),
    };
    let action_name = path.rsplit('/').next().unwrap_or_default();
    let ok = answer.status().is_success();
    crate::plugin::audit_record(
        "ui_action",
        &action.name,
        std::path::Path::new(&root),
        json!({ "action": action_name, "ok": ok, "status": answer.status().as_u16() }),
    );
    answer
}

/// A POST's body: which plugin of which project.
#[derive(Deserialize)]
struct Action {
    project: String,
    name: String,
    /// The version to install (`/api/registry/install`); the newest without.
    #[serde(default)]
    version: Option<String>,
}

async fn read_action(req: Request<Incoming>) -> Result<Action, Response<Body>> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body must be `{{\"project\": ROOT, \"name\": PLUGIN}}`: {e}"),
        )
    })
}

/// The project's root if the daemon has it loaded: the page acts only on
/// projects the daemon already serves (it never makes it load a folder).
fn loaded(daemon: &Daemon, project: &str) -> Option<String> {
    daemon
        .loaded_roots()
        .into_iter()
        .find(|root| root == project)
}

fn unknown_project(project: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &format!("`{project}` is not a project the daemon serves"),
    )
}

/// A handler's error as the page shows it: its message and its hint.
fn failed(e: ErrorObjectOwned) -> Response<Body> {
    let hint = e
        .data()
        .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
        .and_then(|d| d.get("hint").cloned());
    json(
        StatusCode::CONFLICT,
        &json!({ "error": e.message(), "code": e.code(), "hint": hint }),
    )
}

fn answer<T: serde::Serialize>(r: Result<T, ErrorObjectOwned>) -> Response<Body> {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => failed(e),
    }
}

/// The daemon's environment: what the page's actions expand `${VAR}` in
/// plugin config with and resolve granted commands on (the page has no
/// shell of its own; the daemon inherited the environment of the
/// `taskrush` that started it).
fn env() -> Option<BTreeMap<String, String>> {
    Some(std::env::vars().collect())
}

/// `GET /api/overview`.
fn overview(api: &Api) -> Response<Body> {
    answer(api.daemon_status())
}

/// `GET /api/plugins?project=ROOT`: every plugin in detail.
async fn plugins(api: &Api, daemon: &Daemon, project: Option<String>) -> Response<Body> {
    let Some(root) = project.as_deref().and_then(|p| loaded(daemon, p)) else {
        return unknown_project(project.as_deref().unwrap_or_default());
    };
    let list = match api.plugin_list(root.clone(), None).await {
        Ok(list) => list,
        Err(e) => return failed(e),
    };
    let mut details = Vec::with_capacity(list.len());
    for p in list {
        match api.plugin_info(root.clone(), None, p.name.clone()).await {
            Ok(d) => details.push(serde_json::to_value(d).unwrap_or(Value::Null)),
            Err(e) => details.push(json!({ "name": p.name, "error": e.message() })),
        }
    }
    json(StatusCode::OK, &details)
}

/// `GET /api/runs`: in progress (every client's) and seen finishing.
fn runs(api: &Api, server: &Server) -> Response<Body> {
    let running = api.list_runs().unwrap_or_default();
    json(
        StatusCode::OK,
        &json!({ "running": running, "recent": server.recent.list() }),
    )
}

/// `GET /api/audit?project=ROOT[&plugin=NAME]`: the last records of the
/// audit trail for the project (and plugin), newest last.
async fn audit(daemon: &Daemon, project: Option<String>, plugin: Option<String>) -> Response<Body> {
    let Some(root) = project.as_deref().and_then(|p| loaded(daemon, p)) else {
        return unknown_project(project.as_deref().unwrap_or_default());
    };
    let path = daemon.audit_path();
    let records = tokio::task::spawn_blocking(move || {
        let text = tail(&path, AUDIT_TAIL).unwrap_or_default();
        let mut records: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r.get("root").and_then(Value::as_str) == Some(root.as_str()))
            .filter(|r| {
                plugin
                    .as_deref()
                    .is_none_or(|p| r.get("plugin").and_then(Value::as_str) == Some(p))
            })
            .collect();
        let skip = records.len().saturating_sub(AUDIT_LINES);
        records.drain(..skip);
        records
    })
    .await
    .unwrap_or_default();
    json(StatusCode::OK, &records)
}

/// The last `max` bytes of a file, from a line start.
fn tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(if start > 0 {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default()
    } else {
        text
    })
}

/// `POST /api/plugins/restart`.
async fn restart(api: &Api, root: &str, name: &str) -> Response<Body> {
    answer(
        api.plugin_restart(root.into(), None, name.into(), env())
            .await,
    )
}

/// `POST /api/plugins/grant`: what it asks for (the page showed the
/// difference before asking).
async fn grant(api: &Api, root: &str, name: &str) -> Response<Body> {
    answer(
        api.plugin_grant(root.into(), None, name.into(), None, env())
            .await,
    )
}

/// `POST /api/plugins/revoke`.
async fn revoke(api: &Api, root: &str, name: &str) -> Response<Body> {
    answer(api.plugin_revoke(root.into(), None, name.into()).await)
}

/// `GET /api/metrics`: the `metrics` method's answer (every project).
async fn metrics_json(api: &Api) -> Response<Body> {
    answer(api.metrics(None, None).await)
}

/// `GET /metrics`: the same figures in the OpenMetrics text format.
async fn metrics_openmetrics(api: &Api) -> Response<Body> {
    match api.metrics(None, None).await {
        Ok(m) => {
            let text = taskrush_protocol::metrics::openmetrics(&m);
            Response::builder()
                .status(StatusCode::OK)
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .header(hyper::header::CACHE_CONTROL, "no-store")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(text)).boxed())
                .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot answer"))
        }
        Err(e) => failed(e),
    }
}

/// `GET /api/logs?project=ROOT&plugin=NAME`: the `plugin_logs` method's
/// lines, those of the project's instance when a project is given.
fn plugin_logs(api: &Api, project: Option<String>, plugin: Option<String>) -> Response<Body> {
    let Some(name) = plugin else {
        return error(StatusCode::BAD_REQUEST, "`plugin` is required");
    };
    match api.plugin_logs(name) {
        Ok(mut lines) => {
            if let Some(root) = project {
                lines.retain(|l| l.root.as_deref().is_none_or(|r| r == root));
            }
            json(StatusCode::OK, &lines)
        }
        Err(e) => failed(e),
    }
}

/// `POST /api/plugins/disable` and `/enable`: `plugin_disable` (which
/// audits it).
async fn disable(api: &Api, root: &str, name: &str, disable: bool) -> Response<Body> {
    answer(
        api.plugin_disable(root.into(), None, name.into(), disable)
            .await,
    )
}

/// `POST /api/plugins/update` `{project, name}`: `plugin_update` of that
/// project's plugin within its `.rush` requirement (and its `.rush.lock`).
async fn update(api: &Api, project: &str, name: &str) -> Response<Body> {
    answer(
        api.plugin_update(project.into(), None, Some(name.into()), None, None)
            .await,
    )
}

/// `POST /api/plugins/remove`: `plugin_remove` (every installed version).
async fn remove(api: &Api, name: &str) -> Response<Body> {
    answer(api.plugin_remove(name.into(), None).await)
}

/// `GET /api/registry/search?q=TEXT`: `plugin_search` over the configured
/// registries.
async fn registry_search(api: &Api, text: Option<String>) -> Response<Body> {
    answer(api.plugin_search(text.unwrap_or_default()).await)
}

/// `POST /api/registry/install` `{project, name[, version]}`:
/// `plugin_install` of `name@=version` (or the newest without a version).
async fn registry_install(api: &Api, name: &str, version: Option<&str>) -> Response<Body> {
    let spec = match version {
        Some(v) if !v.is_empty() => format!("{name}@={v}"),
        _ => name.to_owned(),
    };
    answer(api.plugin_install(spec, None, None, None, None).await)
}
