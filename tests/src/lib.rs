//! The scenario builder for TaskRush's end-to-end tests.
//!
//! Every [`Scenario`] gets its own temp directory holding a project, a
//! private daemon socket, log and home directory: scenarios run in
//! parallel and never touch a daemon outside their directory. The real
//! `taskrush` and `taskrushd` binaries are driven (built by `cargo build
//! --bins`, which `scripts/test` does first, or by [`bin_dir`] when they
//! are missing); nothing is mocked.
//!
//! ```ignore
//! Scenario::new()
//!     .rush("tasks:\n  hi:\n    cmd: echo hi\n")
//!     .run(&["hi"])
//!     .stdout("hi\n")
//!     .success();
//! ```

pub mod wasm_guest;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where cargo put the binaries: beside the `deps/` directory holding
/// this test executable. `CARGO_BIN_EXE_*` is set only for a test's own
/// package, and the binaries belong to the daemon and CLI packages: when
/// one is missing (a clean clone running `cargo test` alone), they are
/// built once per test process with the test's profile. `cargo test`
/// releases its build lock before it runs the tests, so this does not
/// wait on itself; parallel test processes queue on cargo's lock and the
/// later ones find the binaries built.
pub fn bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    match DIR.get_or_init(find_or_build_bins) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    }
}

const BINS: [&str; 2] = ["taskrush", "taskrushd"];

fn find_or_build_bins() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("the test executable has no path: {e}"))?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("`{}` is not in target/<profile>/deps/", exe.display()))?
        .to_path_buf();
    let missing = || BINS.iter().any(|bin| !dir.join(bin).is_file());
    if !missing() {
        return Ok(dir);
    }
    // target/<profile-dir>/: `debug` is the `dev` profile, `release` and
    // custom profiles keep their name.
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(name) => name.to_string(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = [
        "build",
        "-p",
        "taskrush-daemon",
        "-p",
        "taskrush-cli",
        "--bins",
        "--profile",
        &profile,
    ];
    let shown = format!("cargo {}", args.join(" "));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            format!("`{shown}` did not start: {e}\nhint: run it by hand, then the tests")
        })?;
    if !status.success() {
        return Err(format!(
            "`{shown}` failed ({status})\nhint: run it by hand to see why, then the tests"
        ));
    }
    if missing() {
        return Err(format!(
            "`{shown}` did not put `taskrush` and `taskrushd` in `{}`\nhint: run it by hand, then the tests",
            dir.display()
        ));
    }
    Ok(dir)
}

pub struct Scenario {
    dir: tempfile::TempDir,
    /// Extra environment for every command (and the daemon they start).
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    pub fn new() -> Scenario {
        let dir = tempfile::Builder::new()
            .prefix("tr-")
            .tempdir()
            .expect("a temp dir");
        std::fs::create_dir_all(dir.path().join("project")).expect("project dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home dir");
        let cwd = dir.path().join("project");
        Scenario {
            dir,
            env: Vec::new(),
            cwd,
        }
    }

    /// The temp directory of this scenario.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The project directory (the default working directory).
    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("taskrushd.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("run").join("taskrushd.log")
    }

    /// Write the project's `.rush`.
    pub fn rush(self, yaml: &str) -> Scenario {
        self.file(".rush", yaml)
    }

    /// Write a file under the project.
    pub fn file(self, rel: &str, content: &str) -> Scenario {
        self.write(rel, content);
        self
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.project().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("parent dir");
        }
        std::fs::write(&p, content).expect("write file");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.project().join(rel)).unwrap_or_default()
    }

    /// Run commands from this directory (relative to the project).
    pub fn cwd(mut self, rel: &str) -> Scenario {
        self.cwd = self.project().join(rel);
        std::fs::create_dir_all(&self.cwd).expect("cwd");
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Scenario {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The user config file the daemon reads (`$XDG_CONFIG_HOME/taskrush/config.toml`).
    pub fn user_config_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("home")
            .join("config")
            .join("taskrush")
            .join("config.toml")
    }

    /// Write the user config (TOML).
    pub fn user_config(self, toml: &str) -> Scenario {
        let p = self.user_config_path();
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("config dir");
        std::fs::write(&p, toml).expect("write the user config");
        self
    }

    /// Grant plugin `name` whatever its manifest declares, in every
    /// project, through the user config (as CI would): for scenarios
    /// whose plugins declare permissions and are not about consent.
    pub fn grant(self, name: &str) -> Scenario {
        self.grant_in_config(name);
        self
    }

    /// [`grant`](Self::grant), for helpers that hold a `&Scenario`.
    pub fn grant_in_config(&self, name: &str) {
        let p = self.user_config_path();
        let mut text = std::fs::read_to_string(&p).unwrap_or_default();
        if text.contains(&format!("plugin = \"{name}\"\nall = true")) {
            return;
        }
        text.push_str(&format!(
            "\n[[grants]]\nproject = \"*\"\nplugin = \"{name}\"\nall = true\n"
        ));
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("config dir");
        std::fs::write(&p, text).expect("write the user config");
    }

    /// A `taskrush` command with this scenario's private environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("taskrush"));
        c.args(args);
        self.prepare(&mut c);
        c
    }

    /// A `taskrushd` command with this scenario's private environment.
    pub fn daemon_command(&self) -> Command {
        let mut c = Command::new(bin_dir().join("taskrushd"));
        self.prepare(&mut c);
        c
    }

    fn prepare(&self, c: &mut Command) {
        let home = self.dir.path().join("home");
        c.current_dir(&self.cwd)
            .env_remove("TASKRUSH_LOG")
            .env_remove("TASKRUSHD")
            .env_remove("TASKRUSH_DAEMON")
            .env("TASKRUSH_SOCKET", self.socket())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("runtime"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }

    /// Run `taskrush ARGS` to completion (bounded: 60 s).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, |_| {})
    }

    /// Like [`run`](Self::run), with a chance to adjust the command.
    pub fn run_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Outcome {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        adjust(&mut c);
        let child = c.spawn().expect("spawn taskrush");
        self.finish(child, Duration::from_secs(60))
    }

    /// Run a shell script with `taskrush` on its PATH and this scenario's
    /// environment (for pipelines such as `taskrush spam | head -1`).
    pub fn sh(&self, script: &str) -> Outcome {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        self.prepare(&mut c);
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("spawn sh");
        self.finish(child, Duration::from_secs(60))
    }

    /// Wait for a spawned command (killing it after `limit`) and collect it.
    pub fn finish(&self, mut child: Child, limit: Duration) -> Outcome {
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let t_out = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_end(&mut v);
            }
            v
        });
        let t_err = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut v);
            }
            v
        });
        let started = Instant::now();
        let status = wait_timeout(&mut child, limit).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("taskrush did not finish within {limit:?}")
        });
        let elapsed = started.elapsed();
        Outcome {
            stdout_bytes: t_out.join().unwrap_or_default(),
            stderr_bytes: t_err.join().unwrap_or_default(),
            status,
            elapsed,
            tmp: self.dir.path().to_path_buf(),
        }
    }

    /// Start the daemon by hand with extra environment (not from a CLI).
    pub fn start_daemon(&self, env: &[(&str, &str)]) {
        let mut c = self.daemon_command();
        c.arg("--notify-ready")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn taskrushd");
        let mut line = String::new();
        let mut out = child.stdout.take().expect("piped stdout");
        let mut buf = [0u8; 64];
        let n = out.read(&mut buf).unwrap_or(0);
        line.push_str(&String::from_utf8_lossy(&buf[..n]));
        assert!(line.starts_with("ready"), "daemon did not start: {line:?}");
        // It lives on in its own session; it is stopped on drop.
        std::mem::forget(child);
    }

    /// `taskrush daemon status --json`, parsed; `None` when no daemon
    /// answers (it is not started for this).
    pub fn daemon_status(&self) -> Option<serde_json::Value> {
        let out = self.run(&["daemon", "status", "--json"]);
        serde_json::from_str(out.stdout().trim()).ok()
    }

    /// The daemon's pid, if one serves this scenario's socket.
    pub fn daemon_pid(&self) -> Option<u32> {
        let v = self.daemon_status()?;
        v.get("pid")?.as_u64().map(|p| p as u32)
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // Stop this scenario's daemon, if any, so no process outlives it.
        if self.socket().exists() {
            let mut c = self.command(&["daemon", "stop"]);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            if let Ok(mut child) = c.spawn()
                && wait_timeout(&mut child, Duration::from_secs(15)).is_none()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What a finished `taskrush` did.
pub struct Outcome {
    pub stdout_bytes: Vec<u8>,
    pub stderr_bytes: Vec<u8>,
    pub status: ExitStatus,
    pub elapsed: Duration,
    tmp: PathBuf,
}

impl Outcome {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout_bytes).into_owned()
    }

    /// stderr with the scenario's temp dir replaced by `[TMP]`.
    pub fn stderr(&self) -> String {
        let s = String::from_utf8_lossy(&self.stderr_bytes).into_owned();
        s.replace(&self.tmp.display().to_string(), "[TMP]")
    }

    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    #[track_caller]
    pub fn expect_stdout(&self, expected: &str) -> &Self {
        assert_eq!(
            self.stdout(),
            expected,
            "stdout differs; stderr was:\n{}",
            self.stderr()
        );
        self
    }

    #[track_caller]
    pub fn expect_stderr(&self, expected: &str) -> &Self {
        assert_eq!(
            self.stderr(),
            expected,
            "stderr differs; stdout was:\n{}",
            self.stdout()
        );
        self
    }

    #[track_caller]
    pub fn expect_stderr_starting(&self, prefix: &str) -> &Self {
        let stderr = self.stderr();
        assert!(
            stderr.starts_with(prefix),
            "stderr does not start with:\n{prefix}\nstderr:\n{stderr}"
        );
        self
    }

    #[track_caller]
    pub fn expect_stderr_containing(&self, part: &str) -> &Self {
        let stderr = self.stderr();
        assert!(
            stderr.contains(part),
            "stderr does not contain:\n{part}\nstderr:\n{stderr}"
        );
        self
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "exit code differs;\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }
}

/// `child.wait()` with a limit; `None` if it did not exit in time.
/// The test environment's switch: with `TASKRUSH_REQUIRE_SANDBOX=1`
/// (set by `scripts/test` where the kernel has Landlock), a scenario that
/// would skip for want of sandbox enforcement fails instead, so a
/// regression in the daemon's Landlock detection cannot pass as skips.
pub const ENV_REQUIRE_SANDBOX: &str = "TASKRUSH_REQUIRE_SANDBOX";

/// Skip a kernel-dependent sandbox scenario, printing `reason`; a panic
/// instead under [`ENV_REQUIRE_SANDBOX`]`=1`.
pub fn skip_unenforced(reason: &str) {
    let required = std::env::var_os(ENV_REQUIRE_SANDBOX).is_some_and(|v| v == "1");
    skip_unenforced_if(reason, required);
}

/// [`skip_unenforced`] with the switch given: panics when `required`.
pub fn skip_unenforced_if(reason: &str, required: bool) {
    if required {
        panic!(
            "{reason}, but `{ENV_REQUIRE_SANDBOX}=1`: this kernel has Landlock, so the sandbox must be enforced"
        );
    }
    eprintln!("SKIPPED: {reason}");
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Poll `cond` every few milliseconds until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The state letter of `pid` in `/proc/PID/stat` (`Z` for a zombie, `X`
/// for a dead one), if it still exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next()
            .unwrap_or(' '),
    )
}

/// Every process in `/proc`: its pid and its command line (arguments
/// joined by spaces; empty for zombies, which run nothing).
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(pid, cmdline)| cmdline.contains(needle) && *pid != std::process::id())
        .map(|(pid, _)| pid)
        .collect()
}

/// Send a signal to a process.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// A pseudo-terminal: `slave` is what a program sees as its terminal,
/// `master` is the test's keyboard and screen.
pub struct Pty {
    pub master: std::fs::File,
    pub slave: std::fs::File,
}

impl Pty {
    pub fn open() -> Pty {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::path::Path::new(&*name.to_string_lossy()))
            .expect("open the pty slave");
        Pty {
            master: std::fs::File::from(master),
            slave,
        }
    }
}

/// Run `taskrush ARGS` with the terminal `pty` as stdin, stdout and stderr;
/// type `input` once `ready` (a file under the project) exists. Returns
/// what the terminal showed and the exit code.
pub fn run_in_terminal(s: &Scenario, args: &[&str], input: Option<(&str, &[u8])>) -> (String, i32) {
    use std::io::Write;
    let pty = Pty::open();
    let mut c = s.command(args);
    c.stdin(pty.slave.try_clone().expect("dup"))
        .stdout(pty.slave.try_clone().expect("dup"))
        .stderr(pty.slave.try_clone().expect("dup"));
    let mut child = c.spawn().expect("spawn taskrush");
    // The command holds duplicates of the slave until dropped: the master
    // reports the end only once every slave descriptor is closed.
    drop(c);
    drop(pty.slave);
    let mut master_r = pty.master.try_clone().expect("dup master");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last slave descriptor is closed.
        while let Ok(n) = master_r.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    if let Some((ready, bytes)) = input {
        assert!(
            wait_until(Duration::from_secs(20), || s.project().join(ready).exists()),
            "task ready"
        );
        let mut m = pty.master.try_clone().expect("dup master");
        m.write_all(bytes).expect("type");
    }
    let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("taskrush did not finish in a terminal")
    });
    // Let the reader drain; the daemon's copies of the slave are closed
    // when the connection ends. Bounded: a leaked descriptor must fail the
    // test, not hang it.
    assert!(
        wait_until(Duration::from_secs(10), || reader.is_finished()),
        "the terminal was never released"
    );
    let out = reader.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    (String::from_utf8_lossy(&out).into_owned(), code)
}

/// Pids of running `taskrushd` processes serving `socket` (by their
/// environment's TASKRUSH_SOCKET).
pub fn daemons_for(socket: &Path) -> Vec<u32> {
    let needle = format!("TASKRUSH_SOCKET={}", socket.display());
    processes()
        .into_iter()
        .filter(|(pid, cmdline)| {
            cmdline.contains("taskrushd")
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// A subscription to the daemon's global event stream (`events`), read on
/// a thread: the readiness signal for reloads and re-runs.
pub struct EventStream {
    rx: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Every event received so far, in order.
    pub seen: Vec<serde_json::Value>,
    _sock: std::os::unix::net::UnixStream,
}

impl Scenario {
    /// Subscribe to the daemon's events; returns once the subscription is
    /// live (its id was answered). The daemon must be running.
    pub fn events(&self) -> EventStream {
        use std::io::{BufRead, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(self.socket())
            .expect("connect to the daemon's socket");
        sock.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":[]}\n")
            .expect("subscribe");
        let reader = sock.try_clone().expect("dup socket");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let answer = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an answer to `events`");
        assert!(answer.get("result").is_some(), "events refused: {answer}");
        EventStream {
            rx,
            seen: Vec::new(),
            _sock: sock,
        }
    }
}

impl EventStream {
    /// The next event (the `result` of an `event` notification) within
    /// `limit`.
    pub fn next(&mut self, limit: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.rx.recv_timeout(left).ok()?;
            if msg["method"] == "event" {
                let ev = msg["params"]["result"].clone();
                self.seen.push(ev.clone());
                return Some(ev);
            }
        }
    }

    /// Wait (at most 20 s) for an event that `pred` accepts and return it.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!(
                    "no {what} event within 20 s; seen:\n{}",
                    self.seen
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// Wait for an event of kind `kind`.
    #[track_caller]
    pub fn wait_kind(&mut self, kind: &str) -> serde_json::Value {
        self.wait_for(kind, |e| e["event"] == kind)
    }
}
