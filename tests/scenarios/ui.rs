//! The plugin manager page (`taskrush daemon ui`): a server on 127.0.0.1
//! protected like Jupyter's. Given a daemon, `daemon ui --print` gives a
//! link with a one-time token; raw HTTP over TCP shows who gets in and who
//! does not, what the event stream carries, and that the server stops with
//! the daemon. (The page itself is driven in Chromium by
//! `tests/ui/page.test.mjs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use taskrush_tests::{Scenario, wait_until};

/// One HTTP exchange as the test saw it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The page server of a scenario's daemon.
struct Page {
    port: u16,
    token: String,
}

impl Page {
    fn open(s: &Scenario) -> Page {
        let out = s.run(&["daemon", "ui", "--print"]);
        out.success();
        let url = out.stdout().trim().to_owned();
        let rest = url
            .strip_prefix("http://127.0.0.1:")
            .unwrap_or_else(|| panic!("a loopback link: {url}"));
        let (port, token) = rest.split_once("/?token=").expect("a token in the link");
        Page {
            port: port.parse().expect("a port"),
            token: token.to_owned(),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Send a raw request (head lines given) and read the whole answer.
    fn send(&self, request_line: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut head = format!("{request_line} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.host()));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(head.as_bytes()).expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read the answer");
        parse(&raw)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(&format!("GET {path}"), headers, "")
    }

    /// The token exchanged for a session cookie (`NAME=VALUE`).
    fn login(&self) -> String {
        let a = self.get(&format!("/?token={}", self.token), &[]);
        assert_eq!(a.status, 303, "{}", a.body);
        let cookie = a.header("set-cookie").expect("a cookie").to_owned();
        cookie.split(';').next().expect("NAME=VALUE").to_owned()
    }
}

fn parse(raw: &str) -> Answer {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn served() -> Scenario {
    let s = Scenario::new().rush("tasks:\n  hello:\n    cmd: echo hello\n");
    s.run(&["hello"]).success();
    s
}

#[test]
fn a_request_without_the_token_or_with_a_wrong_one_is_refused() {
    let s = served();
    let page = Page::open(&s);
    let a = page.get("/", &[]);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("taskrush daemon ui"), "{}", a.body);
    assert_eq!(page.get("/api/overview", &[]).status, 401);
    assert_eq!(page.get("/api/events", &[]).status, 401);
    let wrong = format!("/?token={}", "0".repeat(64));
    assert_eq!(page.get(&wrong, &[]).status, 403);
    // A made-up cookie does not pass either.
    let fake = format!("Cookie: taskrush_ui_{}={}", page.port, "1".repeat(64));
    let (k, v) = fake.split_once(": ").expect("header");
    assert_eq!(page.get("/api/overview", &[(k, v)]).status, 401);
}

#[test]
fn the_token_is_exchanged_once_for_an_httponly_cookie_and_dropped_from_the_address() {
    let s = served();
    let page = Page::open(&s);
    let a = page.get(&format!("/?token={}", page.token), &[]);
    assert_eq!(a.status, 303);
    assert_eq!(a.header("location"), Some("/"));
    let cookie = a.header("set-cookie").expect("a cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(&page.token), "the token is not the cookie");
    let session = cookie.split(';').next().expect("NAME=VALUE").to_owned();
    // Used once: the same link is refused now.
    assert_eq!(
        page.get(&format!("/?token={}", page.token), &[]).status,
        403
    );
    // The cookie opens the page and the API, with the security headers.
    let index = page.get("/", &[("Cookie", &session)]);
    assert_eq!(index.status, 200);
    assert!(
        index.body.contains("<script src=\"/app.js\""),
        "{}",
        index.body
    );
    let csp = index.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(index.header("x-frame-options"), Some("DENY"));
    let overview = page.get("/api/overview", &[("Cookie", &session)]);
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert_eq!(overview.header("cache-control"), Some("no-store"));
    let status: serde_json::Value = serde_json::from_str(&overview.body).expect("json");
    let project = s.project().canonicalize().expect("project");
    assert_eq!(
        status["projects"][0].as_str(),
        Some(project.to_str().expect("utf-8"))
    );
}

#[test]
fn a_foreign_origin_is_refused_on_the_api_the_event_stream_and_actions() {
    let s = served();
    let page = Page::open(&s);
    let cookie = page.login();
    let evil = [
        ("Cookie", cookie.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let a = page.get("/api/overview", &evil);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("`Origin`"), "{}", a.body);
    assert_eq!(page.get("/api/events", &evil).status, 403);
    // Another port of the same host is another origin.
    let other_port = format!("http://127.0.0.1:{}", page.port.wrapping_add(1));
    let a = page.get(
        "/api/events",
        &[("Cookie", &cookie), ("Origin", &other_port)],
    );
    assert_eq!(a.status, 403);
    let body = r#"{"project":"/nowhere","name":"p"}"#;
    let a = page.send("POST /api/plugins/restart", &evil, body);
    assert_eq!(a.status, 403);
    // A POST without an Origin is refused too.
    let a = page.send("POST /api/plugins/restart", &[("Cookie", &cookie)], body);
    assert_eq!(a.status, 403, "{}", a.body);
    // So is a request the browser marks cross-site.
    let a = page.get(
        "/api/overview",
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(a.status, 403);
    // The same request from the page's own origin passes.
    let origin = page.origin();
    let a = page.send(
        "POST /api/plugins/restart",
        &[("Cookie", &cookie), ("Origin", &origin)],
        body,
    );
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(
        a.body.contains("not a project the daemon serves"),
        "{}",
        a.body
    );
}

#[test]
fn a_foreign_host_header_is_refused_even_with_the_cookie() {
    let s = served();
    let page = Page::open(&s);
    let cookie = page.login();
    for host in [
        format!("evil.example:{}", page.port),
        format!("localhost:{}", page.port),
        "127.0.0.1".to_owned(),
    ] {
        let a = page.get("/api/overview", &[("Host", &host), ("Cookie", &cookie)]);
        assert_eq!(a.status, 403, "Host: {host}: {}", a.body);
        assert!(a.body.contains("`Host`"), "{}", a.body);
    }
    // Even the token exchange needs the right Host (DNS rebinding).
    let fresh = Page::open(&s);
    let a = fresh.get(
        &format!("/?token={}", fresh.token),
        &[("Host", &format!("evil.example:{}", fresh.port))],
    );
    assert_eq!(a.status, 403);
    // The refused request did not use the token up.
    fresh.login();
}

/// A project with plugin `watcher` (hooks `before_task`, `after_task`)
/// after one run.
fn watched() -> Scenario {
    let s = Scenario::new();
    super::plugins::plugin(&s, "watcher", "good");
    let s = s.rush("plugins:\n  - name: watcher\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).expect_stdout("ran\n").success();
    s
}

#[test]
fn after_a_run_api_metrics_answers_the_plugins_hook_calls_and_latency() {
    let s = watched();
    let page = Page::open(&s);
    let cookie = page.login();
    let origin = page.origin();
    let a = page.get("/api/metrics", &[("Cookie", &cookie), ("Origin", &origin)]);
    assert_eq!(a.status, 200, "{}", a.body);
    let m: serde_json::Value = serde_json::from_str(&a.body).expect("metrics JSON");
    let p = m["plugins"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "watcher"))
        .unwrap_or_else(|| panic!("watcher in {m}"));
    let h = p["hooks"]
        .as_array()
        .and_then(|l| l.iter().find(|h| h["name"] == "after_task"))
        .unwrap_or_else(|| panic!("after_task in {p}"));
    assert_eq!(h["calls"], 1, "{h}");
    assert_eq!(h["latency"]["count"], 1, "{h}");
    assert!(h["latency"]["p95_ms"].is_number(), "{h}");
    let t = m["tasks"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["task"] == "t"))
        .unwrap_or_else(|| panic!("task t in {m}"));
    assert_eq!(t["runs"], 1, "{t}");
}

#[test]
fn slash_metrics_answers_openmetrics_text_ending_with_eof() {
    let s = watched();
    let page = Page::open(&s);
    let cookie = page.login();
    let origin = page.origin();
    let a = page.get("/metrics", &[("Cookie", &cookie), ("Origin", &origin)]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(a.body.contains("taskrush_uptime_seconds"), "{}", a.body);
    assert!(a.body.contains("plugin=\"watcher\""), "{}", a.body);
    assert!(a.body.trim_end().ends_with("# EOF"), "{}", a.body);
}

#[test]
fn disabling_a_plugin_from_the_page_shows_in_plugin_list_and_enabling_undoes_it() {
    let s = watched();
    let page = Page::open(&s);
    let cookie = page.login();
    let origin = page.origin();
    let project = s.project().canonicalize().expect("project");
    let body = format!(r#"{{"project":"{}","name":"watcher"}}"#, project.display());
    let headers = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
    let a = page.send("POST /api/plugins/disable", &headers, &body);
    assert_eq!(a.status, 200, "{}", a.body);
    let list = s.run(&["plugin", "list", "--json"]);
    list.success();
    let list: Vec<serde_json::Value> = serde_json::from_str(&list.stdout()).expect("list JSON");
    assert_eq!(list[0]["disabled"], true, "{list:?}");
    let a = page.get(
        &format!("/api/plugins?project={}", project.display()),
        &headers,
    );
    assert!(a.body.contains(r#""disabled":true"#), "{}", a.body);

    let a = page.send("POST /api/plugins/enable", &headers, &body);
    assert_eq!(a.status, 200, "{}", a.body);
    let list = s.run(&["plugin", "list", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&list.stdout()).expect("list JSON");
    // (`disabled` is left out when false.)
    assert_ne!(list[0]["disabled"], true, "{list:?}");
}

#[test]
fn the_event_stream_carries_a_run_of_another_client_live() {
    let s = served();
    let page = Page::open(&s);
    let cookie = page.login();
    let mut stream = TcpStream::connect(("127.0.0.1", page.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nOrigin: {}\r\n\r\n",
        page.host(),
        page.origin()
    )
    .expect("write");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(line.contains(" 200 "), "{line}");
    // Wait for the stream's first comment: it is live from then on.
    loop {
        line.clear();
        reader.read_line(&mut line).expect("a line");
        if line.starts_with(": open") {
            break;
        }
    }
    s.run(&["hello"]).success();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw = Vec::new();
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        // Chunked encoding: the data lines are inside the chunks.
        if let Some(json) = line.trim().strip_prefix("data: ") {
            let ev: serde_json::Value = serde_json::from_str(json).expect("json");
            saw.push(ev["event"].as_str().unwrap_or_default().to_owned());
            if ev["event"] == "run_finished" {
                break;
            }
        }
    }
    assert!(saw.contains(&"run_started".to_owned()), "{saw:?}");
    assert!(saw.contains(&"run_finished".to_owned()), "{saw:?}");
    // The finished run is listed among the recent ones.
    let runs = page.get("/api/runs", &[("Cookie", &cookie)]);
    let runs: serde_json::Value = serde_json::from_str(&runs.body).expect("json");
    assert_eq!(runs["recent"][0]["status"], "success", "{runs}");
    assert_eq!(runs["recent"][0]["tasks"][0]["task"], "hello", "{runs}");
}

#[test]
fn the_page_server_stops_with_the_daemon() {
    let s = served();
    let page = Page::open(&s);
    // A second call reuses the server with a new token.
    let again = Page::open(&s);
    assert_eq!(again.port, page.port);
    assert_ne!(again.token, page.token);
    assert!(TcpStream::connect(("127.0.0.1", page.port)).is_ok());
    s.run(&["daemon", "stop"]).success();
    assert!(
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", page.port)).is_err()
        }),
        "the page's port still accepts after the daemon stopped"
    );
}

#[test]
fn an_open_page_keeps_an_idle_daemon_alive_until_it_closes() {
    let s = Scenario::new()
        .env("TASKRUSH_IDLE_TIMEOUT", "400ms")
        .rush("tasks:\n  hello:\n    cmd: echo hello\n");
    let page = Page::open(&s);
    let cookie = page.login();
    let pid = s.daemon_pid().expect("a daemon");
    let mut stream = TcpStream::connect(("127.0.0.1", page.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        page.host()
    )
    .expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    while !line.starts_with(": open") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("a line") > 0,
            "stream ended"
        );
    }
    // Several idle timeouts pass while the page is open.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        s.daemon_pid(),
        Some(pid),
        "the daemon stopped under an open page"
    );
    drop(reader);
    drop(stream);
    // Closed: the page no longer keeps it (it notices at the next
    // keepalive at the latest, 15 s).
    assert!(
        wait_until(Duration::from_secs(30), || {
            !taskrush_tests::daemons_for(&s.socket()).contains(&pid)
        }),
        "the daemon did not stop once the page closed"
    );
}

#[test]
fn daemon_ui_opens_the_link_with_dollar_browser_and_prints_it_when_there_is_none() {
    let s = served();
    let opened = s.root().join("opened");
    s.write(
        "browser.sh",
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display()),
    );
    let browser = s.project().join("browser.sh");
    let mut perms = std::fs::metadata(&browser)
        .expect("browser.sh")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&browser, perms).expect("chmod");
    let out = s.run_with(&["daemon", "ui"], |c| {
        c.env("BROWSER", &browser);
    });
    out.success();
    assert!(
        out.stdout().contains("opened the plugin manager page"),
        "{}",
        out.stdout()
    );
    assert!(
        wait_until(Duration::from_secs(10), || opened.exists()),
        "the browser was not started"
    );
    let url = std::fs::read_to_string(&opened).expect("the link");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.contains("/?token="), "{url}");
    // No launcher at all: the link is printed.
    let out = s.run_with(&["daemon", "ui"], |c| {
        c.env("BROWSER", "/nonexistent/browser")
            .env("PATH", "/nonexistent");
    });
    out.success();
    assert!(
        out.stdout().contains("open this link in your browser"),
        "{}",
        out.stdout()
    );
    assert!(out.stdout().contains("/?token="), "{}", out.stdout());
}
