//! The network proxy of a plugin with a `network` host list: an HTTP
//! proxy on `127.0.0.1:PORT` that lets the plugin reach only those hosts.
//!
//! One listener per plugin process, started with it and closed when it
//! ends: the port is the plugin's identity. The sandbox lets the plugin
//! connect to that port only (Landlock TCP rules), so it cannot borrow
//! another plugin's grants, and nothing secret has to be handed to it
//! (credentials in the proxy URL would sit in its environment, its
//! children's and its logs).
//!
//! It speaks `CONNECT host:port` (a tunnel, for https) and absolute-URI
//! requests (`GET http://host/path`, plain http: the request is sent on
//! in origin form with `Connection: close`, one request per connection).
//! A host is allowed when a `network` entry names it ([`Rule`]); the
//! proxy resolves names itself and refuses loopback, private, link-local
//! and other special addresses unless an entry names that address. A
//! refusal is answered `403` with the reason, logged, and recorded in the
//! audit trail (`denied`).
//!
//! Bounded everywhere: the request head ([`MAX_HEAD`], read within
//! [`HEAD_TIMEOUT`]), the upstream connect ([`CONNECT_TIMEOUT`]), a
//! connection idle in both directions ([`IDLE_TIMEOUT`]), the connections
//! per plugin ([`MAX_CONNECTIONS`]). Every connection is a task of the
//! runtime doing async I/O only; none waits on another plugin's.
//!
//! Test and ops switch: [`ENV_RESOLVE`] in the daemon's environment
//! (`name=ADDR[:PORT],…`, like curl's `--resolve`) makes the proxy resolve
//! a name to the given address, which may be loopback or private: it is
//! set by whoever starts the daemon, never by a plugin.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use super::audit;

/// Longest request head (request line and headers) read from a plugin.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// How long a plugin has to send its request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long resolving a name and connecting upstream may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no byte in either direction for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Open connections per plugin process; more are answered `503`.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// The daemon's environment variable with names only the proxy resolves.
pub(crate) const ENV_RESOLVE: &str = "TASKRUSH_PROXY_RESOLVE";

/// A host a `network` entry allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// `hooks.slack.com`: this name only.
    Name(String),
    /// `*.example.com`: names under `example.com` (not itself), stored as
    /// `.example.com`.
    Under(String),
    /// `127.0.0.1`, `[::1]`: this address, even when it is not public.
    Addr(IpAddr),
}

/// One `network` entry: a host and, optionally, the one port allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    host: Host,
    port: Option<u16>,
}

/// Split `host[:port]` / `[v6][:port]` / a bare IPv6 address.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an unclosed `[`".to_owned())?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("`{after}` after `]`")),
            },
        };
    }
    match s.matches(':').count() {
        0 => Ok((s, None)),
        1 => s
            .split_once(':')
            .map(|(h, p)| (h, Some(p)))
            .ok_or_else(|| "no port".to_owned()),
        // An IPv6 address without brackets (no port then).
        _ => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
}

/// Whether `name` is a DNS name (letters, digits, `-`, `_`, dots).
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Rule {
    /// A manifest's `network` entry: `host`, `host:port`, `*.domain`,
    /// `*.domain:port`, an IPv4 address, `[IPv6]` (each with an optional
    /// `:port`). Names are matched without case and a trailing dot.
    pub(crate) fn parse(entry: &str) -> Result<Rule, String> {
        let e = entry.trim().to_ascii_lowercase();
        if e.contains("://") || e.contains('/') {
            return Err("a host, not a URL (e.g. `hooks.slack.com`)".into());
        }
        let (host, port) = split_host_port(&e)?;
        let port = port.map(parse_port).transpose()?;
        let host = host.trim_end_matches('.');
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            Host::Addr(ip)
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !is_name(domain) {
                return Err(format!("`{domain}` is not a domain name"));
            }
            Host::Under(format!(".{domain}"))
        } else if is_name(host) {
            Host::Name(host.to_owned())
        } else {
            return Err(format!(
                "`{host}` is not a host name or an address (a `*.` wildcard is allowed only as the first label)"
            ));
        };
        Ok(Rule { host, port })
    }

    fn port_ok(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether this entry allows `host:port` as the plugin asked for it.
    fn allows(&self, host: &Target, port: u16) -> bool {
        self.port_ok(port)
            && match (&self.host, host) {
                (Host::Name(n), Target::Name(h)) => n == h,
                (Host::Under(d), Target::Name(h)) => h.ends_with(d.as_str()),
                (Host::Addr(a), Target::Addr(h)) => a == h,
                _ => false,
            }
    }

    /// Whether this entry names address `ip` (for `port`).
    fn names(&self, ip: IpAddr, port: u16) -> bool {
        self.port_ok(port) && self.host == Host::Addr(ip)
    }
}

/// The host a request names: a name or an address literal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Name(String),
    Addr(IpAddr),
}

impl Target {
    fn parse(host: &str) -> Option<Target> {
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Target::Addr(ip));
        }
        is_name(host).then(|| Target::Name(host.to_owned()))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Addr(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Target::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Whether `ip` is a public unicast address: not loopback, private,
/// link-local, shared (CGNAT), unspecified, multicast, broadcast or
/// documentation. IPv4-mapped IPv6 addresses are judged as IPv4.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    fn v4(a: Ipv4Addr) -> bool {
        let [b0, b1, ..] = a.octets();
        !(a.is_loopback()
            || a.is_private()
            || a.is_link_local()
            || a.is_unspecified()
            || a.is_multicast()
            || a.is_broadcast()
            || a.is_documentation()
            || b0 == 0
            || (b0 == 100 && (64..128).contains(&b1))
            || b0 >= 240)
    }
    fn v6(a: Ipv6Addr) -> bool {
        if let Some(m) = a.to_ipv4_mapped() {
            return v4(m);
        }
        !(a.is_loopback()
            || a.is_unspecified()
            || a.is_multicast()
            || a.is_unique_local()
            || a.is_unicast_link_local()
            || a.segments()[0] == 0x2001 && a.segments()[1] == 0x0db8)
    }
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => v6(a),
    }
}

/// A name → address override: the address, and the port when it is
/// given (else the port asked for).
type Resolve = HashMap<String, (IpAddr, Option<u16>)>;

/// Parse [`ENV_RESOLVE`]: `name=ADDR[:PORT]` entries, comma separated.
fn parse_resolve(value: &str) -> Result<Resolve, String> {
    let mut out = Resolve::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("`{entry}` is not `name=ADDR[:PORT]`"))?;
        let (host, port) = split_host_port(addr.trim())?;
        let ip = host
            .parse::<IpAddr>()
            .map_err(|_| format!("`{host}` in `{entry}` is not an IP address"))?;
        let port = port.map(parse_port).transpose()?;
        out.insert(
            name.trim()
                .to_ascii_lowercase()
                .trim_end_matches('.')
                .into(),
            (ip, port),
        );
    }
    Ok(out)
}

/// The overrides of the daemon's environment, read once (an invalid
/// value is logged and ignored).
fn overrides() -> &'static Resolve {
    static RESOLVE: OnceLock<Resolve> = OnceLock::new();
    RESOLVE.get_or_init(|| {
        let Ok(value) = std::env::var(ENV_RESOLVE) else {
            return Resolve::new();
        };
        parse_resolve(&value).unwrap_or_else(|e| {
            tracing::warn!("ignoring `{ENV_RESOLVE}`: {e}");
            Resolve::new()
        })
    })
}

/// What a plugin's proxy knows about it.
struct Grant {
    plugin: String,
    root: PathBuf,
    rules: Vec<Rule>,
    /// Refusals logged in the current second (the second, the count): at
    /// most [`DENIALS_LOGGED`] a second reach the daemon log.
    logged: std::sync::Mutex<(u64, u32)>,
}

/// Refusals per second and plugin written to the daemon log (the audit
/// trail bounds its own queue).
const DENIALS_LOGGED: u32 = 10;

impl Grant {
    /// Whether one more refusal may be logged now.
    fn may_log(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut l = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if l.0 != now {
            *l = (now, 0);
        }
        l.1 += 1;
        l.1 <= DENIALS_LOGGED
    }
}

/// A running proxy; closed (with every connection through it) on drop.
pub(crate) struct Proxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Parse `hosts` (a `network` permission) and listen for plugin
    /// `plugin` of project `root` on a free port of 127.0.0.1.
    pub(crate) async fn start(
        plugin: &str,
        root: &Path,
        hosts: &[String],
    ) -> Result<Proxy, String> {
        let rules = hosts
            .iter()
            .map(|h| {
                Rule::parse(h).map_err(|e| {
                    format!("its `network` permission has an invalid entry `{h}`: {e}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| format!("cannot start its network proxy: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot start its network proxy: {e}"))?
            .port();
        let grant = Arc::new(Grant {
            plugin: plugin.to_owned(),
            root: root.to_owned(),
            rules,
            logged: std::sync::Mutex::new((0, 0)),
        });
        let task = tokio::spawn(serve(listener, grant));
        tracing::debug!(target: "plugin", plugin, port, "network proxy listening");
        Ok(Proxy { port, task })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Point the plugin's HTTP clients at this proxy: `HTTP_PROXY`,
    /// `HTTPS_PROXY` (and lowercase) set, `NO_PROXY` empty.
    pub(crate) fn set_env(&self, env: &mut BTreeMap<String, String>) {
        let url = format!("http://127.0.0.1:{}", self.port);
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.insert(k.into(), url.clone());
        }
        for k in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
            env.insert(k.into(), String::new());
        }
    }
}

async fn serve(listener: TcpListener, grant: Arc<Grant>) {
    let mut conns = JoinSet::new();
    let refusing = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        refuse_busy(stream, &refusing);
                        if grant.may_log() {
                            tracing::warn!(target: "plugin", plugin = %grant.plugin, "network proxy: {MAX_CONNECTIONS} connections open, one more refused");
                        }
                        continue;
                    }
                    conns.spawn(handle(stream, grant.clone()));
                }
                Err(e) => {
                    // Out of descriptors, most likely: do not spin.
                    tracing::warn!(target: "plugin", plugin = %grant.plugin, "network proxy cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Answer `503` to a connection past [`MAX_CONNECTIONS`]: written, then
/// what the client sent drained (closing with unread data would reset the
/// connection before the client reads the answer), for at most a second,
/// by at most [`MAX_CONNECTIONS`] such tasks at a time (beyond, closed at
/// once).
fn refuse_busy(mut stream: TcpStream, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
        refusing.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let why =
            format!("too many connections through the proxy (at most {MAX_CONNECTIONS} at a time)");
        let _ = timeout(Duration::from_secs(1), async {
            stream.write_all(reply(503, &why).as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::Relaxed);
    });
}

/// A complete response with a plain-text reason, closing the connection.
fn reply(code: u16, why: &str) -> String {
    let text = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("taskrush proxy: {why}\n");
    format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Taskrush-Proxy: {}\r\n\r\n{body}",
        body.len(),
        if code == 403 { "denied" } else { "error" },
    )
}

/// Why a request was not served: the status and the reason.
struct Refusal(u16, String);

/// A parsed request head.
struct Request {
    /// `CONNECT` (a tunnel) or a plain http request.
    connect: bool,
    host: String,
    port: u16,
    /// For plain http: the head to send upstream.
    head: Vec<u8>,
}

/// Read the request head; returns it and the bytes read after it.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Vec<u8>, usize), Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| Refusal(400, format!("reading the request: {e}")))?;
        if n == 0 {
            return Err(Refusal(
                400,
                "the connection closed before the request head ended".into(),
            ));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((buf, from + end + 4));
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal(
                431,
                format!("the request head is longer than {MAX_HEAD} bytes"),
            ));
        }
    }
}

/// Parse a request head (`head` ends with the blank line).
fn parse_request(head: &[u8]) -> Result<Request, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(Refusal(400, "an incomplete request head".into()));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal(431, "more than 96 headers".into()));
        }
        Err(e) => return Err(Refusal(400, format!("a malformed request head: {e}"))),
    }
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target).map_err(|e| bad_target(target, &e))?;
        let port = port
            .ok_or_else(|| bad_target(target, "no port"))
            .and_then(|p| parse_port(p).map_err(|e| bad_target(target, &e)))?;
        return Ok(Request {
            connect: true,
            host: host.to_owned(),
            port,
            head: Vec::new(),
        });
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(Refusal(
            400,
            format!("`{target}`: https goes through `CONNECT host:443`, not a forwarded request"),
        ));
    }
    if !lower.starts_with("http://") {
        return Err(Refusal(
            400,
            format!("`{target}` is not an absolute `http://` URL (a proxy request names its host)"),
        ));
    }
    let rest = &target[7..];
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = split_host_port(authority).map_err(|e| bad_target(target, &e))?;
    let port = port
        .map(|p| parse_port(p).map_err(|e| bad_target(target, &e)))
        .transpose()?
        .unwrap_or(80);
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    // The head sent upstream: origin form, the hop-by-hop and proxy
    // headers dropped, one request per connection.
    let mut out = format!("{method} {path} HTTP/1.{}\r\n", req.version.unwrap_or(1)).into_bytes();
    let mut has_host = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
        ) {
            continue;
        }
        has_host |= name == "host";
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request {
        connect: false,
        host: host.to_owned(),
        port,
        head: out,
    })
}

fn bad_target(target: &str, why: &str) -> Refusal {
    Refusal(400, format!("`{target}` is not `host:port`: {why}"))
}

/// Serve one connection from the plugin.
async fn handle(mut client: TcpStream, grant: Arc<Grant>) {
    let _ = client.set_nodelay(true);
    let upstream = match timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Err(_) => Err(Refusal(
            400,
            format!(
                "no complete request head within {} s",
                HEAD_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(r)) => Err(r),
        Ok(Ok((buf, end))) => match parse_request(&buf[..end]) {
            Err(r) => Err(r),
            Ok(req) => open(&grant, &req).await.map(|up| (up, req, buf, end)),
        },
    };
    let (mut up, req, buf, end) = match upstream {
        Ok(x) => x,
        Err(Refusal(code, why)) => {
            // Then drain what the client still sends (a body), briefly:
            // closing with unread data would reset the connection before
            // the client reads the answer.
            let _ = timeout(Duration::from_secs(1), async {
                client.write_all(reply(code, &why).as_bytes()).await?;
                client.shutdown().await?;
                let mut sink = [0u8; 1024];
                while client.read(&mut sink).await? > 0 {}
                std::io::Result::Ok(())
            })
            .await;
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let first = if req.connect {
        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
        if timeout(IDLE_TIMEOUT, client.write_all(ok)).await.is_err() {
            return;
        }
        buf[end..].to_vec()
    } else {
        let mut head = req.head;
        head.extend_from_slice(&buf[end..]);
        head
    };
    if !first.is_empty()
        && !matches!(
            timeout(IDLE_TIMEOUT, up.write_all(&first)).await,
            Ok(Ok(()))
        )
    {
        return;
    }
    relay(client, up).await;
}

/// Check the request against the grant, resolve, check the addresses and
/// connect.
async fn open(grant: &Grant, req: &Request) -> Result<TcpStream, Refusal> {
    let Some(target) = Target::parse(&req.host) else {
        return Err(Refusal(
            400,
            format!("`{}` is not a host name or an address", req.host),
        ));
    };
    let port = req.port;
    let deny = |why: String| -> Refusal {
        if grant.may_log() {
            tracing::warn!(target: "plugin", plugin = %grant.plugin, "network proxy refused `{target}:{port}`: {why}");
        }
        audit::record(
            "denied",
            &grant.plugin,
            &grant.root,
            serde_json::json!({
                "permission": "network",
                "host": target.to_string(),
                "port": port,
                "why": why,
            }),
        );
        Refusal(
            403,
            format!(
                "plugin `{}` may not connect to `{target}:{port}`: {why}",
                grant.plugin
            ),
        )
    };
    if !grant.rules.iter().any(|r| r.allows(&target, port)) {
        return Err(deny(
            "the host is not in its `network` permission (hint: add it to the plugin's manifest and grant it)".into(),
        ));
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let addrs: Vec<SocketAddr> = match &target {
        Target::Addr(ip) => vec![SocketAddr::new(*ip, port)],
        Target::Name(name) => match overrides().get(name) {
            // Set by whoever started the daemon: trusted as it is.
            Some((ip, p)) => vec![SocketAddr::new(*ip, p.unwrap_or(port))],
            None => {
                let found = tokio::time::timeout_at(
                    deadline,
                    tokio::net::lookup_host((name.as_str(), port)),
                )
                .await
                .map_err(|_| {
                    Refusal(
                        504,
                        format!(
                            "resolving `{name}` took longer than {} s",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    )
                })?
                .map_err(|e| Refusal(502, format!("cannot resolve `{name}`: {e}")))?;
                let all: Vec<SocketAddr> = found.collect();
                let ok: Vec<SocketAddr> = all
                    .iter()
                    .copied()
                    .filter(|a| {
                        is_public(a.ip()) || grant.rules.iter().any(|r| r.names(a.ip(), port))
                    })
                    .collect();
                if ok.is_empty() {
                    let list: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
                    return Err(deny(format!(
                        "`{name}` resolves to {} (loopback, private or otherwise not public; hint: grant the address itself to allow it)",
                        if list.is_empty() {
                            "nothing".to_owned()
                        } else {
                            list.join(", ")
                        }
                    )));
                }
                ok
            }
        },
    };
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => {
                return Err(Refusal(
                    504,
                    format!(
                        "connecting to `{target}:{port}` took longer than {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                ));
            }
        }
    }
    tracing::debug!(target: "plugin", plugin = %grant.plugin, "network proxy cannot connect to `{target}:{port}`: {last}");
    Err(Refusal(
        502,
        format!("cannot connect to `{target}:{port}`: {last}"),
    ))
}

/// Copy both ways until both sides are done (an end of file is passed
/// on as a half close), an error on either side, or nothing moved in
/// either direction for [`IDLE_TIMEOUT`].
async fn relay(mut a: TcpStream, mut b: TcpStream) {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let _ = tokio::try_join!(pipe(ar, bw, &last, start), pipe(br, aw, &last, start));
}

async fn pipe<R, W>(mut r: R, mut w: W, last: &AtomicU64, start: Instant) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let idle = || std::io::Error::new(std::io::ErrorKind::TimedOut, "idle");
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match timeout(IDLE_TIMEOUT, r.read(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => {
                // The other direction may be busy (a long download).
                let quiet = (start.elapsed().as_millis() as u64)
                    .saturating_sub(last.load(Ordering::Relaxed));
                if quiet >= IDLE_TIMEOUT.as_millis() as u64 {
                    let _ = w.shutdown().await;
                    return Err(idle());
                }
                continue;
            }
        };
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        timeout(IDLE_TIMEOUT, w.write_all(&buf[..n]))
            .await
            .map_err(|_| idle())??;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str], host: &str, port: u16) -> bool {
        let rules: Vec<Rule> = entries.iter().map(|e| Rule::parse(e).unwrap()).collect();
        let target = Target::parse(host).unwrap();
        rules.iter().any(|r| r.allows(&target, port))
    }

    #[test]
    fn a_host_entry_allows_that_name_on_any_port_or_the_one_it_names() {
        assert!(allowed(&["hooks.slack.com"], "hooks.slack.com", 443));
        assert!(allowed(&["hooks.slack.com"], "HOOKS.Slack.com.", 80));
        assert!(!allowed(&["hooks.slack.com"], "slack.com", 443));
        assert!(!allowed(&["hooks.slack.com"], "evil-hooks.slack.com", 443));
        assert!(allowed(&["api.test:8443"], "api.test", 8443));
        assert!(!allowed(&["api.test:8443"], "api.test", 443));
    }

    #[test]
    fn a_wildcard_allows_names_under_the_domain_but_not_the_domain() {
        let w = ["*.example.com"];
        assert!(allowed(&w, "a.example.com", 443));
        assert!(allowed(&w, "a.b.example.com", 443));
        assert!(!allowed(&w, "example.com", 443));
        assert!(!allowed(&w, "badexample.com", 443));
        assert!(!allowed(&["*.example.com:443"], "a.example.com", 80));
    }

    #[test]
    fn an_address_entry_allows_that_address_only() {
        assert!(allowed(&["127.0.0.1"], "127.0.0.1", 8080));
        assert!(allowed(&["127.0.0.1:8080"], "127.0.0.1", 8080));
        assert!(!allowed(&["127.0.0.1:8080"], "127.0.0.1", 8081));
        assert!(allowed(&["[::1]:80"], "::1", 80));
        assert!(allowed(&["::1"], "::1", 80));
        assert!(!allowed(&["127.0.0.1"], "localhost", 80));
        assert!(!allowed(&["hooks.slack.com"], "1.2.3.4", 443));
    }

    #[test]
    fn invalid_entries_are_refused_with_why() {
        for bad in [
            "https://x.com",
            "x.com/path",
            "a.*.com",
            "*",
            "x.com:0",
            "x.com:http",
            "a b",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_resolve_switch_takes_names_with_an_address_and_an_optional_port() {
        let r = parse_resolve("receiver.test=127.0.0.1:8080, other.test=[::1]").unwrap();
        assert_eq!(
            r["receiver.test"],
            ("127.0.0.1".parse().unwrap(), Some(8080))
        );
        assert_eq!(r["other.test"], ("::1".parse().unwrap(), None));
        assert!(parse_resolve("x=notanip").is_err());
    }

    #[test]
    fn a_forwarded_request_goes_on_in_origin_form_without_proxy_headers() {
        let head = b"POST http://receiver.test:8080/hook?a=1 HTTP/1.1\r\nHost: receiver.test:8080\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic x\r\nContent-Length: 2\r\n\r\n";
        let req = parse_request(head).ok().unwrap();
        assert!(!req.connect);
        assert_eq!((req.host.as_str(), req.port), ("receiver.test", 8080));
        assert_eq!(
            String::from_utf8(req.head).unwrap(),
            "POST /hook?a=1 HTTP/1.1\r\nHost: receiver.test:8080\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        let req = parse_request(
            b"CONNECT hooks.slack.com:443 HTTP/1.1\r\nHost: hooks.slack.com:443\r\n\r\n",
        )
        .ok()
        .unwrap();
        assert!(req.connect);
        assert_eq!((req.host.as_str(), req.port), ("hooks.slack.com", 443));
        assert!(parse_request(b"GET /relative HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"CONNECT host HTTP/1.1\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn a_head_longer_than_the_limit_is_refused() {
        let long = vec![b'a'; MAX_HEAD + 10];
        let mut r: &[u8] = &long;
        match read_head(&mut r).await {
            Err(Refusal(431, _)) => {}
            _ => panic!("not refused"),
        }
    }

    /// An upstream that answers every connection with what it read of
    /// the request head, then closes.
    async fn upstream() -> u16 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Ok((head, end)) = read_head(&mut s).await else {
                        return;
                    };
                    let body = String::from_utf8_lossy(&head[..end]).into_owned();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        port
    }

    async fn ask(proxy: u16, raw: &str) -> String {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy))
            .await
            .unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn the_proxy_forwards_and_tunnels_to_granted_hosts_and_refuses_others() {
        let up = upstream().await;
        let hosts = ["127.0.0.1".to_owned()];
        let proxy = Proxy::start("p", Path::new("/r"), &hosts).await.unwrap();
        let port = proxy.port();
        let got = ask(
            port,
            &format!("GET http://127.0.0.1:{up}/x HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\n\r\n"),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.contains("GET /x HTTP/1.1\r\n"), "{got}");
        assert!(got.contains("Connection: close"), "{got}");
        let got = ask(
            port,
            &format!("CONNECT 127.0.0.1:{up} HTTP/1.1\r\n\r\nGET /t HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
            "{got}"
        );
        assert!(got.contains("GET /t HTTP/1.1"), "{got}");
        let got = ask(port, "GET http://other.test/ HTTP/1.1\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
        assert!(
            got.contains("`other.test:80`") && got.contains("not in its `network` permission"),
            "{got}"
        );
        drop(proxy);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err(),
            "closed on drop"
        );
    }

    #[tokio::test]
    async fn a_granted_name_that_resolves_to_loopback_is_refused_unless_the_address_is_granted() {
        let up = upstream().await;
        let proxy = Proxy::start("p", Path::new("/r"), &["localhost".to_owned()])
            .await
            .unwrap();
        let got = ask(
            proxy.port(),
            &format!("CONNECT localhost:{up} HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
        assert!(
            got.contains("resolves to 127.0.0.1") && got.contains("not public"),
            "{got}"
        );
        let hosts = ["localhost".to_owned(), format!("127.0.0.1:{up}")];
        let proxy = Proxy::start("p", Path::new("/r"), &hosts).await.unwrap();
        let got = ask(
            proxy.port(),
            &format!("GET http://localhost:{up}/ HTTP/1.0\r\n\r\n"),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    }

    #[tokio::test]
    async fn past_the_connection_cap_a_plugin_gets_503_at_once() {
        let proxy = Proxy::start("p", Path::new("/r"), &["x.test".to_owned()])
            .await
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port()))
                .await
                .unwrap();
            // Half a head: the connection stays open, waiting.
            s.write_all(b"CONNECT x.test:443 HTTP/1.1\r\n")
                .await
                .unwrap();
            held.push(s);
        }
        // Let the proxy accept them all.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = ask(proxy.port(), "CONNECT x.test:443 HTTP/1.1\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        drop(held);
    }
}
