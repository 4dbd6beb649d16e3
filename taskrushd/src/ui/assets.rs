//! The page itself: plain HTML, CSS and JavaScript embedded in the binary
//! (no framework, no build step).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header;
use hyper::{Response, StatusCode};

use super::server::Body;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The asset at `path`, if there is one.
pub(super) fn get(path: &str) -> Option<Response<Body>> {
    let (text, kind) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, kind)
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed())
        .ok()
}
