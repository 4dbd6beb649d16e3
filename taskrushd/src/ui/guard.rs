//! Who may use the page's server: the Jupyter model, tightened.
//!
//! - `ui_open` answers a URL with a fresh random token. The browser's
//!   first request carries it (`/?token=…`); compared in constant time,
//!   used once, it is exchanged for a session cookie (HttpOnly,
//!   SameSite=Strict) with a redirect to `/` that drops it from the
//!   address bar and the history.
//! - Every request, the event stream included, must name the server
//!   exactly in `Host` (`127.0.0.1:PORT`: a DNS-rebinding page sends its
//!   own name), and its `Origin`, when present, must be exactly
//!   `http://127.0.0.1:PORT` (browsers do not guard server-sent events or
//!   WebSockets with CORS, and cookies are not port-scoped: another local
//!   server's page would send ours). `Sec-Fetch-Site: cross-site` is
//!   refused.
//! - A state-changing request is a POST with a matching `Origin` (never
//!   absent) and a session cookie.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

/// How long a token from `ui_open` may wait for its browser.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(300);
/// Tokens waiting at most (each `ui_open` adds one).
const MAX_TOKENS: usize = 16;
/// Sessions kept at most (oldest forgotten first).
const MAX_SESSIONS: usize = 64;

/// A fresh random secret: 32 bytes from the OS, as 64 hex digits.
pub(crate) fn secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether two secrets are equal, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The tokens waiting for their browser and the sessions they became.
#[derive(Default)]
pub(crate) struct Keys {
    tokens: Mutex<VecDeque<(String, Instant)>>,
    sessions: Mutex<VecDeque<String>>,
}

impl Keys {
    /// A new one-time token.
    pub(crate) fn new_token(&self) -> std::io::Result<String> {
        let token = secret()?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|(_, at)| at.elapsed() < TOKEN_TTL);
        if tokens.len() >= MAX_TOKENS {
            tokens.pop_front();
        }
        tokens.push_back((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Exchange a token for a new session id: `None` when it is unknown,
    /// used or expired. Every waiting token is compared (no early exit).
    pub(crate) fn exchange(&self, token: &str) -> Option<String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (i, (t, at)) in tokens.iter().enumerate() {
            if same(t, token) && at.elapsed() < TOKEN_TTL {
                found = Some(i);
            }
        }
        tokens.remove(found?);
        drop(tokens);
        let session = secret().ok()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
        Some(session)
    }

    /// Whether `session` is one this server handed out.
    pub(crate) fn knows(&self, session: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.iter().fold(false, |ok, s| ok | same(s, session))
    }
}

/// Why a request was refused before it reached a route.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 403: `Host` is not `127.0.0.1:PORT`.
    Host,
    /// 403: `Origin` present and not `http://127.0.0.1:PORT`, or absent on
    /// a POST.
    Origin,
    /// 403: `Sec-Fetch-Site: cross-site`.
    CrossSite,
}

impl Refusal {
    pub(crate) fn message(&self, port: u16) -> String {
        match self {
            Refusal::Host => {
                format!("refused: the `Host` header must be `127.0.0.1:{port}`")
            }
            Refusal::Origin => format!(
                "refused: the `Origin` header must be `http://127.0.0.1:{port}` (and present on POST)"
            ),
            Refusal::CrossSite => "refused: a cross-site request".into(),
        }
    }
}

/// The headers of a request that the checks read.
#[derive(Debug, Default)]
pub(crate) struct Seen<'a> {
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
    pub post: bool,
}

/// Check `Host`, `Origin` and `Sec-Fetch-Site` for the server on `port`.
pub(crate) fn check(seen: &Seen<'_>, port: u16) -> Result<(), Refusal> {
    if seen.host != Some(format!("127.0.0.1:{port}").as_str()) {
        return Err(Refusal::Host);
    }
    if seen.fetch_site == Some("cross-site") {
        return Err(Refusal::CrossSite);
    }
    match seen.origin {
        Some(origin) if origin != format!("http://127.0.0.1:{port}") => Err(Refusal::Origin),
        None if seen.post => Err(Refusal::Origin),
        _ => Ok(()),
    }
}

/// The cookie's name: with the port, since cookies are not port-scoped
/// (two daemons' pages, or another local server, do not overwrite it).
pub(crate) fn cookie_name(port: u16) -> String {
    format!("taskrush_ui_{port}")
}

/// The session id in a `Cookie` header, if it carries ours.
pub(crate) fn session_of(cookie_header: &str, port: u16) -> Option<&str> {
    let name = cookie_name(port);
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value for a new session.
pub(crate) fn set_cookie(session: &str, port: u16) -> String {
    format!(
        "{}={session}; Path=/; HttpOnly; SameSite=Strict",
        cookie_name(port)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(host: &'a str, origin: Option<&'a str>, post: bool) -> Seen<'a> {
        Seen {
            host: Some(host),
            origin,
            fetch_site: None,
            post,
        }
    }

    #[test]
    fn only_the_exact_host_and_origin_pass() {
        assert_eq!(check(&seen("127.0.0.1:8123", None, false), 8123), Ok(()));
        assert_eq!(
            check(
                &seen("127.0.0.1:8123", Some("http://127.0.0.1:8123"), true),
                8123
            ),
            Ok(())
        );
        assert_eq!(
            check(&seen("localhost:8123", None, false), 8123),
            Err(Refusal::Host)
        );
        assert_eq!(
            check(&seen("evil.example:8123", None, false), 8123),
            Err(Refusal::Host)
        );
        assert_eq!(
            check(
                &seen("127.0.0.1:8123", Some("http://127.0.0.1:9000"), false),
                8123
            ),
            Err(Refusal::Origin)
        );
        assert_eq!(
            check(
                &seen("127.0.0.1:8123", Some("http://localhost:8123"), false),
                8123
            ),
            Err(Refusal::Origin)
        );
        assert_eq!(
            check(&seen("127.0.0.1:8123", None, true), 8123),
            Err(Refusal::Origin)
        );
        let cross = Seen {
            fetch_site: Some("cross-site"),
            ..seen("127.0.0.1:8123", None, false)
        };
        assert_eq!(check(&cross, 8123), Err(Refusal::CrossSite));
    }

    #[test]
    fn a_token_is_exchanged_once_for_a_known_session() {
        let keys = Keys::default();
        let token = keys.new_token().unwrap();
        assert_eq!(keys.exchange("0".repeat(64).as_str()), None);
        let session = keys.exchange(&token).expect("first exchange");
        assert!(keys.knows(&session));
        assert!(!keys.knows(&token));
        assert_eq!(keys.exchange(&token), None, "a token is used once");
    }

    #[test]
    fn the_session_is_read_from_our_cookie_only() {
        assert_eq!(
            session_of("a=b; taskrush_ui_80=abc; taskrush_ui_81=def", 81),
            Some("def")
        );
        assert_eq!(session_of("taskrush_ui_8=abc", 80), None);
    }
}
