//! The network proxy (Linux): a plugin whose manifest grants `network`
//! hosts reaches them through the daemon's proxy, and nothing else. The
//! allowed host, `receiver.test`, is a made-up name only the proxy
//! resolves (`TASKRUSH_PROXY_RESOLVE` in the daemon's environment), so a
//! client that skipped the proxy could not even find it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::Value;
use taskrush_tests::{Scenario, wait_until};

/// A local HTTP server: each request (head and `Content-Length` body) is
/// answered `200 received` and sent on the channel.
fn receiver() -> (u16, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("port").port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(&conn);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; length];
                let _ = r.read_exact(&mut body);
                let _ = (&conn).write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nreceived",
                );
                let _ = tx.send(format!("{head}{}", String::from_utf8_lossy(&body)));
            });
        }
    });
    (port, rx)
}

fn sdk(lang: &str) -> PathBuf {
    super::plugins::repo().join("plugins-external").join(lang)
}

/// A project whose required plugin `poster` (Python, the SDK's
/// `http_request`) posts to `url` before task `t`, with `network` = `hosts`.
fn python_poster(url: &str, hosts: &str) -> Scenario {
    Scenario::new()
        .file(
            ".rush-plugins/poster/plugin.toml",
            &format!(
                "name = \"poster\"\nversion = \"1.0.0\"\n\
                 entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\"]\n\
                 taskrush_version = \">=0.3\"\n\n[permissions]\n\
                 network = {hosts}\nfilesystem = [\"read:{}\"]\n",
                sdk("python").display()
            ),
        )
        .file(
            ".rush-plugins/poster/main.py",
            &format!(
                "import sys\nsys.path.insert(0, {:?})\n\
                 from taskrush_plugin import Plugin, RpcError, http_request\n\
                 plugin = Plugin(\"poster\", \"1.0.0\")\n\
                 @plugin.before_task\n\
                 def post(ctx):\n    \
                     r = http_request(\"POST\", ctx.config.url, body={{\"task\": ctx.task_name}})\n    \
                     if r.status != 200:\n        \
                         raise RpcError(f\"HTTP {{r.status}}: {{r.text().strip()}}\")\n\
                 sys.exit(plugin.run())\n",
                sdk("python").display().to_string()
            ),
        )
        .rush(&format!(
            "plugins:\n  - name: poster\n    required: true\n    config: {{url: '{url}'}}\n\
             tasks:\n  t:\n    cmd: echo ran\n"
        ))
}

/// Start the daemon with `receiver.test` resolved to the receiver.
fn start(s: &Scenario, port: u16) {
    // Not a scenario about consent: the user config grants the plugin.
    s.grant_in_config("poster");
    s.start_daemon(&[(
        "TASKRUSH_PROXY_RESOLVE",
        &format!("receiver.test=127.0.0.1:{port}"),
    )]);
}

fn network_level(s: &Scenario, plugin: &str) -> String {
    let out = s.run(&["plugin", "info", plugin, "--json"]);
    out.success();
    let info: Value = serde_json::from_str(&out.stdout()).expect("plugin info JSON");
    info["enforcement"]["network"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn audit_records(s: &Scenario) -> Vec<Value> {
    std::fs::read_to_string(s.root().join("run").join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_python_plugin_posts_through_the_proxy_to_a_granted_host_only_the_proxy_resolves() {
    let (port, got) = receiver();
    let s = python_poster("http://receiver.test/hook", "[\"receiver.test\"]");
    start(&s, port);
    s.run(&["t"]).success().expect_stdout("ran\n");
    let request = got
        .recv_timeout(Duration::from_secs(20))
        .expect("the receiver got the request");
    assert!(
        request.starts_with("POST /hook HTTP/1.1\r\n"),
        "origin form: {request}"
    );
    assert!(request.contains("Host: receiver.test"), "{request}");
    assert!(request.ends_with("{\"task\": \"t\"}"), "{request}");
    let level = network_level(&s, "poster");
    assert!(
        level == "enforced" || level.starts_with("partial: proxy-aware clients only"),
        "{level}"
    );
}

#[test]
fn a_request_to_a_host_outside_the_grant_is_refused_with_403_and_audited() {
    let (port, got) = receiver();
    let s = python_poster("http://other.test/hook", "[\"receiver.test\"]");
    start(&s, port);
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "the task ran: {}", out.stdout());
    let err = out.stderr();
    assert!(
        err.contains("plugin `poster`")
            && err.contains("HTTP 403")
            && err.contains("`other.test:80`")
            && err.contains("not in its `network` permission"),
        "the task says which plugin was refused which host: {err}"
    );
    assert!(got.try_recv().is_err(), "nothing reached the receiver");
    let denied = |s: &Scenario| {
        audit_records(s)
            .into_iter()
            .find(|r| r["kind"] == "denied" && r["plugin"] == "poster" && r["host"] == "other.test")
    };
    assert!(
        wait_until(Duration::from_secs(10), || denied(&s).is_some()),
        "a `denied` audit record names the plugin and the host: {:?}",
        audit_records(&s)
    );
    let record = denied(&s).expect("record");
    assert_eq!(record["permission"], "network");
    assert_eq!(record["port"], 80);
    let shown = s.run(&["plugin", "audit", "poster"]);
    shown.success();
    assert!(
        shown.stdout().contains("denied") && shown.stdout().contains("network `other.test:80`"),
        "{}",
        shown.stdout()
    );
    let log = std::fs::read_to_string(s.log()).unwrap_or_default();
    assert!(
        log.contains("network proxy refused `other.test:80`"),
        "the daemon log says so too"
    );
}

#[test]
fn a_granted_name_that_resolves_to_a_private_address_is_refused() {
    // `localhost` is granted by name, but resolves to loopback.
    let (port, _got) = receiver();
    let s = python_poster(&format!("http://localhost:{port}/hook"), "[\"localhost\"]");
    start(&s, port);
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "the task ran: {}", out.stdout());
    assert!(
        out.stderr().contains("HTTP 403") && out.stderr().contains("not public"),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_plugin_with_a_host_grant_cannot_connect_around_the_proxy() {
    // Even the address itself granted: a direct connect is refused by the
    // kernel, only the proxy's port is open to the plugin.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("port").port();
    let s = super::sandbox::probe(
        &format!("{{connect: ['127.0.0.1', {port}]}}"),
        "network = [\"127.0.0.1\"]\n",
    );
    let level = network_level(&s, "probe");
    if level != "enforced" {
        taskrush_tests::skip_unenforced(&format!(
            "the daemon reports network `{level}` on this kernel"
        ));
        return;
    }
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "it connected: {}", out.stdout());
    let err = out.stderr();
    assert!(
        err.contains("plugin `probe`")
            && err.contains("denied: PermissionError")
            && (err.contains("Errno 13") || err.contains("Errno 1]")),
        "EACCES/EPERM: {err}"
    );
}

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_node_plugin_posts_through_the_proxy_with_the_sdk_helper() {
    if !have("node") {
        eprintln!("SKIPPED: `node` is not installed");
        return;
    }
    let (port, got) = receiver();
    let s = Scenario::new()
        .file(
            ".rush-plugins/poster/plugin.toml",
            &format!(
                "name = \"poster\"\nversion = \"1.0.0\"\n\
                 entry_point = [\"node\", \"main.cjs\"]\n\
                 taskrush_version = \">=0.3\"\n\n[permissions]\n\
                 network = [\"receiver.test\"]\nfilesystem = [\"read:{}\"]\n",
                sdk("node").display()
            ),
        )
        .file(
            ".rush-plugins/poster/main.cjs",
            &format!(
                "const {{ Plugin, RpcError, httpRequest }} = require({:?});\n\
                 const plugin = new Plugin('poster', '1.0.0');\n\
                 plugin.beforeTask(async (ctx) => {{\n  \
                   const r = await httpRequest('POST', ctx.config.url, {{ body: {{ task: ctx.task_name }} }});\n  \
                   if (r.status !== 200) throw new RpcError(`HTTP ${{r.status}}: ${{r.text().trim()}}`);\n\
                 }});\n\
                 plugin.run();\n",
                sdk("node").join("index.cjs").display().to_string()
            ),
        )
        .rush(
            "plugins:\n  - name: poster\n    required: true\n    config: {url: 'http://receiver.test/node'}\n\
             tasks:\n  t:\n    cmd: echo ran\n",
        );
    start(&s, port);
    s.run(&["t"]).success().expect_stdout("ran\n");
    let request = got
        .recv_timeout(Duration::from_secs(20))
        .expect("the receiver got the request");
    assert!(request.starts_with("POST /node HTTP/1.1\r\n"), "{request}");
    assert!(request.ends_with("{\"task\":\"t\"}"), "{request}");
    // Another host: the proxy's refusal comes back as the hook's error.
    s.write(
        ".rush",
        "plugins:\n  - name: poster\n    required: true\n    config: {url: 'https://other.test/x'}\n\
         tasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "the task ran: {}", out.stdout());
    assert!(
        out.stderr().contains("403") && out.stderr().contains("other.test"),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_go_plugin_reaches_a_made_up_host_and_a_granted_loopback_address_through_the_proxy() {
    // Go's own `http.ProxyFromEnvironment` skips loopback hosts; with
    // Landlock the direct connection would be refused, so the second URL
    // succeeds only through the proxy.
    if !have_go() {
        eprintln!("SKIPPED: `go` is not installed");
        return;
    }
    let (port, got) = receiver();
    let s = Scenario::new();
    let src = s.root().join("poster-src");
    std::fs::create_dir_all(&src).expect("src dir");
    std::fs::write(
        src.join("go.mod"),
        format!(
            "module poster\n\ngo 1.19\n\nrequire taskrush.dev/plugin v0.0.0\n\nreplace taskrush.dev/plugin => {}\n",
            sdk("go").display()
        ),
    )
    .expect("go.mod");
    std::fs::write(
        src.join("main.go"),
        r#"package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"taskrush.dev/plugin"
)

func main() {
	p := plugin.New("poster", "1.0.0")
	p.BeforeTask(func(ctx plugin.TaskContext) error {
		client := plugin.HTTPClient(10 * time.Second)
		for _, u := range ctx.Config.Strings("urls") {
			resp, err := client.Post(u, "application/json", strings.NewReader(`{"task":"`+ctx.TaskName+`"}`))
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
			}
		}
		return nil
	})
	if err := p.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"#,
    )
    .expect("main.go");
    let dir = s.project().join(".rush-plugins/poster");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(dir.join("poster"))
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go build");
    assert!(
        built.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let s = s
        .file(
            ".rush-plugins/poster/plugin.toml",
            &format!(
                "name = \"poster\"\nversion = \"1.0.0\"\nentry_point = [\"./poster\"]\n\
                 taskrush_version = \">=0.3\"\n\n[permissions]\n\
                 network = [\"receiver.test\", \"127.0.0.1:{port}\"]\n"
            ),
        )
        .rush(&format!(
            "plugins:\n  - name: poster\n    required: true\n    \
             config: {{urls: ['http://receiver.test/go', 'http://127.0.0.1:{port}/loopback']}}\n\
             tasks:\n  t:\n    cmd: echo ran\n"
        ));
    start(&s, port);
    s.run(&["t"]).success().expect_stdout("ran\n");
    let first = got
        .recv_timeout(Duration::from_secs(20))
        .expect("first request");
    let second = got
        .recv_timeout(Duration::from_secs(20))
        .expect("second request");
    assert!(first.starts_with("POST /go HTTP/1.1\r\n"), "{first}");
    assert!(
        second.starts_with("POST /loopback HTTP/1.1\r\n"),
        "{second}"
    );
}

fn have_go() -> bool {
    std::process::Command::new("go")
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn without_landlock_a_host_list_is_reported_partial_and_the_proxy_still_filters() {
    let (port, got) = receiver();
    let s = python_poster("http://receiver.test/hook", "[\"receiver.test\"]");
    s.grant_in_config("poster");
    s.start_daemon(&[
        (
            "TASKRUSH_PROXY_RESOLVE",
            &format!("receiver.test=127.0.0.1:{port}"),
        ),
        ("TASKRUSH_SANDBOX_NO_LANDLOCK", "1"),
    ]);
    let level = network_level(&s, "poster");
    assert!(
        level.starts_with("partial: proxy-aware clients only (Landlock switched off")
            && level.ends_with("a client that ignores the proxy can connect to any TCP host"),
        "{level}"
    );
    s.run(&["t"]).success().expect_stdout("ran\n");
    got.recv_timeout(Duration::from_secs(20))
        .expect("the receiver got the request");
}

/// A TLS server (a Python child) for `receiver.test`, with a self-signed
/// certificate made by `openssl`: its port, the certificate's path, the
/// request lines it got, and the child (killed on drop).
struct TlsReceiver {
    port: u16,
    cert: PathBuf,
    lines: Receiver<String>,
    child: std::process::Child,
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_SERVER: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    try:
        s = ctx.wrap_socket(c, server_side=True)
        f = s.makefile("rb")
        first = f.readline().decode().strip()
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        print(first, flush=True)
        s.close()
    except Exception as e:
        print("error: %s" % e, flush=True)
"#;

fn tls_receiver(dir: &std::path::Path) -> Option<TlsReceiver> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=receiver.test",
            "-addext",
            "subjectAltName=DNS:receiver.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        return None;
    }
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(TLS_SERVER)
        .arg(&cert)
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut r = TlsReceiver {
        port: 0,
        cert,
        lines,
        child,
    };
    r.port = r
        .lines
        .recv_timeout(Duration::from_secs(20))
        .ok()?
        .parse()
        .ok()?;
    Some(r)
}

#[test]
fn https_goes_through_a_connect_tunnel_with_tls_end_to_end() {
    let s = python_poster("https://receiver.test/tls", "[\"receiver.test\"]");
    let Some(tls) = tls_receiver(s.root()) else {
        eprintln!("SKIPPED: cannot make a certificate with `openssl` or start the TLS server");
        return;
    };
    // The plugin trusts the test certificate: granted the variable that
    // names it and read access to it.
    s.write(
        ".rush-plugins/poster/plugin.toml",
        format!(
            "name = \"poster\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\n\
             network = [\"receiver.test:443\"]\nenvironment = [\"SSL_CERT_FILE\"]\n\
             filesystem = [\"read:{}\", \"read:{}\"]\n",
            sdk("python").display(),
            tls.cert.display()
        ),
    );
    let s = s.env("SSL_CERT_FILE", &tls.cert.display().to_string());
    // `receiver.test:443` is what the plugin asks for; the proxy connects
    // to the TLS server's port.
    start(&s, tls.port);
    s.run(&["t"]).success().expect_stdout("ran\n");
    let line = tls
        .lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the TLS server got the request");
    assert_eq!(line, "POST /tls HTTP/1.1");
}
