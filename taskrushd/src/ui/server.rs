//! The page's HTTP server: hyper 1 (HTTP/1.1) on the daemon's runtime,
//! bound to 127.0.0.1 only; every request through [`super::guard`] first,
//! then [`super::routes`]; security headers on every answer.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::guard::{self, Keys, Seen};
use super::recent::Recent;
use crate::api::Daemon;

/// Every answer's body.
pub(super) type Body = BoxBody<Bytes, Infallible>;

/// Connections served at once at most; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server.
pub(crate) struct Server {
    pub(super) port: u16,
    pub(super) keys: Keys,
    /// Runs seen finishing since the server started.
    pub(super) recent: Recent,
    daemon: Weak<Daemon>,
    connections: AtomicUsize,
}

impl Server {
    /// Bind 127.0.0.1 on a free port and serve until the daemon stops.
    pub(super) async fn start(daemon: &Arc<Daemon>) -> std::io::Result<Arc<Server>> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let server = Arc::new(Server {
            port,
            keys: Keys::default(),
            recent: Recent::default(),
            daemon: Arc::downgrade(daemon),
            connections: AtomicUsize::new(0),
        });
        super::recent::follow(server.clone(), daemon);
        tokio::spawn(accept(
            server.clone(),
            listener,
            daemon.stopping.subscribe(),
        ));
        tracing::info!("plugin manager page served on http://127.0.0.1:{port}/");
        Ok(server)
    }

    /// One request: the guard, the token exchange, the cookie, the route.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let mut answer = self.checked(req).await;
        let headers = answer.headers_mut();
        for (name, value) in [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        answer
    }

    async fn checked(&self, req: Request<Incoming>) -> Response<Body> {
        let text = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let seen = Seen {
            host: text("host"),
            origin: text("origin"),
            fetch_site: text("sec-fetch-site"),
            post: req.method() == Method::POST,
        };
        if let Err(refusal) = guard::check(&seen, self.port) {
            return error(StatusCode::FORBIDDEN, &refusal.message(self.port));
        }
        if req.method() == Method::GET
            && req.uri().path() == "/"
            && let Some(token) = query(req.uri().query(), "token")
        {
            return match self.keys.exchange(&token) {
                Some(session) => Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/")
                    .header(header::SET_COOKIE, guard::set_cookie(&session, self.port))
                    .body(empty())
                    .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "bad answer")),
                None => page_refused(
                    StatusCode::FORBIDDEN,
                    "This link was already used or has expired.",
                ),
            };
        }
        let session = text("cookie").and_then(|c| guard::session_of(c, self.port));
        if !session.is_some_and(|s| self.keys.knows(s)) {
            return if req.uri().path() == "/" {
                page_refused(StatusCode::UNAUTHORIZED, "This page needs its key.")
            } else {
                error(
                    StatusCode::UNAUTHORIZED,
                    "no session: open the page with `taskrush daemon ui`",
                )
            };
        }
        let Some(daemon) = self.daemon.upgrade() else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
        };
        super::routes::route(self, &daemon, req).await
    }
}

/// Accept connections until the daemon stops; each served until it
/// closes or the daemon stops.
async fn accept(
    server: Arc<Server>,
    listener: TcpListener,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop = stopping.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("page server: cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if server.connections.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            server.connections.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let server = server.clone();
        let mut stop = stopping.clone();
        tokio::spawn(async move {
            let service_server = server.clone();
            let service = hyper::service::service_fn(move |req| {
                let server = service_server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            server.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tracing::info!("plugin manager page stopped");
}

/// The value of `name` in a query string (percent-decoding not needed:
/// our tokens and values are hex or plain).
pub(super) fn query(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// `%XX` and `+` decoded (project roots are paths).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

/// A JSON answer.
pub(super) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let text = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(text)).boxed())
        .unwrap_or_else(|_| Response::new(empty()))
}

/// `{"error": message}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// A small HTML page for a browser that may not come in.
fn page_refused(status: StatusCode, why: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>TaskRush</title>\
         <h1>TaskRush plugin manager</h1><p>{why}</p>\
         <p>Run <code>taskrush daemon ui</code> for a new link.</p>"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(html)).boxed())
        .unwrap_or_else(|_| Response::new(empty()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            super::query(Some("a=1&project=%2Fhome%2Fme+x"), "project").as_deref(),
            Some("/home/me x")
        );
        assert_eq!(super::query(Some("a=1"), "b"), None);
        assert_eq!(super::query(Some("t=%zz%2"), "t").as_deref(), Some("%zz%2"));
    }
}
