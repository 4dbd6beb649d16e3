//! The audit trail: what plugins did, one JSON object per line in
//! `audit.jsonl` in the user's state directory (beside the daemon log;
//! 0600, never through a symlink, rotated by size like the log).
//!
//! Records are handed to a writer thread through a bounded channel:
//! writing never blocks a hook. When the channel is full the record is
//! dropped and counted; the next record written is preceded by a
//! `dropped` record with the count. Every string in a record goes through
//! [`redact::scrub`](super::redact::scrub) before it is queued.

use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use serde_json::{Map, Value, json};

use super::redact;
use crate::server::log_file::RotatingLog;

/// Records waiting for the writer at most.
pub(crate) const QUEUE: usize = 1024;

enum Msg {
    Record(Value),
    /// Answered once every record before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

struct Sink {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Start writing the audit trail to `path`. Without this (unit tests),
/// records go nowhere.
pub(crate) fn open(path: &Path) -> Result<(), crate::server::listener::BindError> {
    let mut file = RotatingLog::open(path)?;
    let (tx, rx) = sync_channel::<Msg>(QUEUE);
    std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            for msg in rx {
                let record = match msg {
                    Msg::Record(r) => r,
                    Msg::Flush(done) => {
                        let _ = done.send(());
                        continue;
                    }
                };
                let mut line = record.to_string();
                line.push('\n');
                if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                    tracing::warn!("cannot write the audit trail: {e}");
                }
            }
        })
        .map_err(|e| crate::server::listener::BindError::Io(path.into(), e))?;
    let _ = SINK.set(Sink {
        tx,
        dropped: AtomicU64::new(0),
    });
    Ok(())
}

/// Queue a record of `kind` for `plugin` of project `root`; `fields` are
/// added to `time`, `kind`, `plugin` and `root`. Never blocks.
pub(crate) fn record(kind: &str, plugin: &str, root: &Path, fields: Value) {
    if kind == "denied" {
        watched(plugin, root, &fields);
    }
    let Some(sink) = SINK.get() else { return };
    let mut obj = Map::new();
    obj.insert("time".into(), taskrush_protocol::audit::now().into());
    obj.insert("kind".into(), kind.into());
    obj.insert("plugin".into(), plugin.into());
    obj.insert("root".into(), root.display().to_string().into());
    if let Value::Object(more) = fields {
        obj.extend(more);
    }
    sink.push(scrub_value(Value::Object(obj)));
}

/// `denied` records collected for a (plugin, root) while a [`Watch`] of it
/// lives: the conformance kit's permission check.
type Watched = std::collections::HashMap<(String, std::path::PathBuf), Vec<Value>>;

static WATCHES: std::sync::LazyLock<std::sync::Mutex<Watched>> =
    std::sync::LazyLock::new(Default::default);

/// Records of denials to plugin `plugin` of `root` made while it lives
/// (besides being written to the trail as always).
pub(super) struct Watch {
    key: (String, std::path::PathBuf),
}

impl Watch {
    pub(super) fn new(plugin: &str, root: &Path) -> Watch {
        let key = (plugin.to_owned(), root.to_owned());
        WATCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), Vec::new());
        Watch { key }
    }

    /// The `denied` records so far (their fields, secrets masked).
    pub(super) fn denied(&self) -> Vec<Value> {
        WATCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.key)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

fn watched(plugin: &str, root: &Path, fields: &Value) {
    let mut w = WATCHES.lock().unwrap_or_else(|p| p.into_inner());
    if w.is_empty() {
        return;
    }
    if let Some(list) = w.get_mut(&(plugin.to_owned(), root.to_owned()))
        && list.len() < 100
    {
        list.push(scrub_value(fields.clone()));
    }
}

impl Sink {
    /// Queue `record` (after a `dropped` record when some were lost).
    fn push(&self, record: Value) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = json!({"time": taskrush_protocol::audit::now(), "kind": "dropped", "count": dropped});
            if self.tx.try_send(Msg::Record(note)).is_err() {
                self.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
        }
        match self.tx.try_send(Msg::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Wait (at most `limit`) until the records queued so far are written:
/// the daemon calls it last, so that `daemon stop` returns with the
/// `exited` records of its plugins on disk.
pub(crate) fn flush(limit: std::time::Duration) {
    let Some(sink) = SINK.get() else { return };
    let (tx, rx) = std::sync::mpsc::channel();
    let deadline = std::time::Instant::now() + limit;
    let mut msg = Msg::Flush(tx);
    loop {
        match sink.tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
}

fn scrub_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact::scrub(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub_value).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, scrub_value(v))).collect())
        }
        other => other,
    }
}

/// The sha256 of a file, in hex, or `None` if it cannot be read.
pub(crate) fn sha256_file(path: &Path) -> Option<String> {
    use sha2::Digest as _;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(hex(&h.finalize()))
}

/// The sha256 of `bytes`, in hex.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// CPU time (ms) and peak resident size (KiB) of a live process, from
/// `/proc`, where available.
pub(crate) fn usage(pid: u32) -> (Option<u64>, Option<u64>) {
    let cpu = cpu(pid).map(|c| c.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        });
    (cpu, rss)
}

/// Wait until process `pid` (a child of the daemon, not yet reaped) has
/// ended, without reaping it: `waitid(WNOWAIT)` checked at each SIGCHLD
/// (no polling). False when it cannot be waited for this way.
pub(crate) async fn wait_ended(pid: u32) -> bool {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    use tokio::signal::unix::{SignalKind, signal};
    let Some(p) = Pid::from_raw(pid as i32) else {
        return false;
    };
    // Listening first: a SIGCHLD after the check below is not missed.
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        return false;
    };
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    loop {
        match waitid(WaitId::Pid(p), opts) {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(_) => return false,
        }
        if sigchld.recv().await.is_none() {
            return false;
        }
    }
}

/// CPU time (user + system, ms) of process `pid` and of the children it
/// reaped, from `/proc/PID/stat`; still there while it is a zombie.
pub(crate) fn cpu(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may hold spaces.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    let [ut, st, cut, cst] = f[..] else {
        return None;
    };
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(((ut + st) * 1000 / hz, (cut + cst) * 1000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_records_and_says_how_many_before_the_next() {
        let (tx, rx) = sync_channel(1);
        let sink = Sink {
            tx,
            dropped: AtomicU64::new(0),
        };
        for n in 0..3 {
            sink.push(json!({ "n": n }));
        }
        let records = |rx: &std::sync::mpsc::Receiver<Msg>| -> Vec<Value> {
            rx.try_iter()
                .map(|m| match m {
                    Msg::Record(r) => r,
                    Msg::Flush(_) => Value::Null,
                })
                .collect()
        };
        assert_eq!(records(&rx), [json!({"n": 0})]);
        sink.push(json!({ "n": 3 }));
        let got = records(&rx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["kind"], "dropped");
        assert_eq!(got[0]["count"], 2);
        // The record itself found the queue full again: counted.
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
