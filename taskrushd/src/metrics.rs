//! Metrics, always on: per plugin (starts, crashes, handshakes, each hook's
//! and command's calls and latency, the time it added to tasks) and per
//! task (runs, cache hits, durations), in memory since the daemon started,
//! never persisted.
//!
//! Cheap by construction: a plugin's and a task's figures are atomics in
//! an `Arc` found once (a plugin's when its slot is made; a task's under
//! a short lock per task end), and a histogram is a fixed array of
//! counters, so recording a hook call allocates nothing and takes no lock.
//! Nothing here polls: CPU time and peak RSS of live plugin processes are
//! read from `/proc` when a client asks ([`snapshot`]), those of ended ones
//! at their exit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use taskrush_protocol::metrics as wire;
use taskrush_protocol::plugin::Hook;

/// Tasks tracked at most (their histograms are about 1.3 KiB each); later
/// ones are counted in `tasks_dropped`.
pub(crate) const MAX_TASKS: usize = 2048;
/// Commands tracked per plugin at most.
const MAX_COMMANDS: usize = 64;

/// Buckets: 4 per power of two of microseconds (each 25% wide), up to
/// 2^40 µs (12 days); values above land in the last.
const BUCKETS: usize = 160;

/// A fixed log-bucket latency histogram of atomics.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

/// The bucket of `us` microseconds.
fn index(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros(); // ≥ 2
    let m = (us >> (e - 2)) & 3;
    (((e - 1) * 4) as usize + m as usize).min(BUCKETS - 1)
}

/// The (exclusive) upper bound of bucket `i`, in microseconds.
fn upper(i: usize) -> u64 {
    if i < 4 {
        return i as u64 + 1;
    }
    let e = (i / 4) as u32 + 1;
    let m = (i % 4) as u64;
    (4 + m + 1) << (e - 2)
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[index(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    /// The `q` quantile in microseconds (the upper bound of its bucket,
    /// at most the largest value seen).
    fn quantile(&self, counts: &[u64; BUCKETS], total: u64, q: f64) -> u64 {
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max_us.load(Relaxed));
            }
        }
        self.max_us.load(Relaxed)
    }

    pub(crate) fn p95(&self) -> Duration {
        let counts: [u64; BUCKETS] = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        let total = counts.iter().sum();
        Duration::from_micros(self.quantile(&counts, total, 0.95))
    }

    pub(crate) fn summary(&self) -> wire::Latency {
        let counts: [u64; BUCKETS] = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        // The buckets' sum, not `count`: both move while we read.
        let total: u64 = counts.iter().sum();
        let ms = |us: u64| us as f64 / 1000.0;
        let mut cumulative = 0;
        let mut next = 0;
        let buckets = wire::BUCKET_BOUNDS_US
            .iter()
            .map(|&bound| {
                // Buckets whose upper bound is ≤ `bound` (the bounds are
                // bucket bounds: powers of two).
                while next < BUCKETS && upper(next) <= bound {
                    cumulative += counts[next];
                    next += 1;
                }
                (bound as f64 / 1e6, cumulative)
            })
            .collect();
        wire::Latency {
            count: total,
            sum_ms: ms(self.sum_us.load(Relaxed)),
            p50_ms: ms(self.quantile(&counts, total, 0.50)),
            p95_ms: ms(self.quantile(&counts, total, 0.95)),
            p99_ms: ms(self.quantile(&counts, total, 0.99)),
            max_ms: ms(self.max_us.load(Relaxed)),
            buckets,
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Ok,
    Error,
    Timeout,
    Veto,
}

/// The calls of one hook or command.
#[derive(Default)]
pub(crate) struct Calls {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    vetoes: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    pub(crate) latency: Histogram,
}

impl Calls {
    pub(crate) fn record(&self, took: Duration, end: End, bytes: (u64, u64)) {
        self.calls.fetch_add(1, Relaxed);
        match end {
            End::Ok => {}
            End::Error => {
                self.errors.fetch_add(1, Relaxed);
            }
            End::Timeout => {
                self.errors.fetch_add(1, Relaxed);
                self.timeouts.fetch_add(1, Relaxed);
            }
            End::Veto => {
                self.vetoes.fetch_add(1, Relaxed);
            }
        }
        self.bytes_out.fetch_add(bytes.0, Relaxed);
        self.bytes_in.fetch_add(bytes.1, Relaxed);
        self.latency.record(took);
    }

    fn summary(&self, name: &str) -> wire::CallMetrics {
        wire::CallMetrics {
            name: name.to_owned(),
            calls: self.calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            vetoes: self.vetoes.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            latency: self.latency.summary(),
        }
    }
}

const HOOKS: [Hook; 3] = [Hook::BeforeTask, Hook::AfterTask, Hook::OnTaskFailure];

/// One plugin of one project.
#[derive(Default)]
pub(crate) struct PluginStats {
    pub(crate) spawns: AtomicU64,
    pub(crate) crashes: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) marked_failed: AtomicU64,
    pub(crate) handshake: Histogram,
    hooks: [Calls; 3],
    commands: Mutex<Vec<(String, Arc<Calls>)>>,
    /// Microseconds its hooks added to tasks, and how many tasks.
    added_us: AtomicU64,
    added_tasks: AtomicU64,
    /// CPU (ms) of its ended processes, and the largest peak RSS (KiB)
    /// of any of them.
    ended_cpu_ms: AtomicU64,
    peak_rss_kib: AtomicU64,
    /// The pid of its live process, read when asked (0: none).
    pub(crate) pid: AtomicU64,
}

impl PluginStats {
    /// The figures of `hook` (`None` for a hook of a newer protocol).
    pub(crate) fn hook(&self, hook: Hook) -> Option<&Calls> {
        HOOKS
            .iter()
            .position(|h| *h == hook)
            .map(|i| &self.hooks[i])
    }

    /// The figures of command `name` (`None` past [`MAX_COMMANDS`]).
    pub(crate) fn command(&self, name: &str) -> Option<Arc<Calls>> {
        let mut commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = commands.iter().find(|(n, _)| n == name) {
            return Some(c.clone());
        }
        if commands.len() >= MAX_COMMANDS {
            return None;
        }
        let c = Arc::new(Calls::default());
        commands.push((name.to_owned(), c.clone()));
        Some(c)
    }

    /// Its hooks added `d` to one task.
    pub(crate) fn added(&self, d: Duration) {
        self.added_us
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.added_tasks.fetch_add(1, Relaxed);
    }

    /// One of its processes ended, having used `cpu_ms` and at most
    /// `peak_kib`.
    pub(crate) fn ended(&self, cpu_ms: Option<u64>, peak_kib: Option<u64>) {
        if let Some(c) = cpu_ms {
            self.ended_cpu_ms.fetch_add(c, Relaxed);
        }
        if let Some(k) = peak_kib {
            self.peak_rss_kib.fetch_max(k, Relaxed);
        }
    }

    /// The hook with the most time in it, with its p95 (for the slow
    /// plugin warning).
    pub(crate) fn slowest_hook(&self) -> Option<(&'static str, Duration)> {
        HOOKS
            .iter()
            .zip(&self.hooks)
            .max_by_key(|(_, c)| c.latency.sum_us.load(Relaxed))
            .filter(|(_, c)| c.calls.load(Relaxed) > 0)
            .map(|(h, c)| (h.method(), c.latency.p95()))
    }

    fn summary(&self, root: &Path, name: &str, wasm: bool) -> wire::PluginMetrics {
        let mut cpu = self.ended_cpu_ms.load(Relaxed);
        let mut peak = self.peak_rss_kib.load(Relaxed);
        let pid = self.pid.load(Relaxed);
        if pid != 0
            && let Ok(pid) = u32::try_from(pid)
        {
            let (c, p) = crate::plugin::usage(pid);
            cpu += c.unwrap_or(0);
            peak = peak.max(p.unwrap_or(0));
        }
        let spawns = self.spawns.load(Relaxed);
        let commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        wire::PluginMetrics {
            root: root.display().to_string(),
            name: name.to_owned(),
            spawns,
            crashes: self.crashes.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            marked_failed: self.marked_failed.load(Relaxed),
            handshake: self.handshake.summary(),
            hooks: HOOKS
                .iter()
                .zip(&self.hooks)
                .filter(|(_, c)| c.calls.load(Relaxed) > 0)
                .map(|(h, c)| c.summary(h.method()))
                .collect(),
            commands: commands.iter().map(|(n, c)| c.summary(n)).collect(),
            cpu_ms: (!wasm && spawns > 0).then_some(cpu),
            // A WebAssembly instance: the peak of its linear memory.
            peak_rss_kib: (peak > 0).then_some(peak),
            added_ms: self.added_us.load(Relaxed) / 1000,
            added_tasks: self.added_tasks.load(Relaxed),
            disabled: false,
        }
    }
}

/// One task of one project.
#[derive(Default)]
pub(crate) struct TaskStats {
    runs: AtomicU64,
    cache_hits: AtomicU64,
    failures: AtomicU64,
    duration: Histogram,
}

impl TaskStats {
    pub(crate) fn ended(&self, took: Duration, cached: bool, failed: bool) {
        self.runs.fetch_add(1, Relaxed);
        if cached {
            self.cache_hits.fetch_add(1, Relaxed);
        }
        if failed {
            self.failures.fetch_add(1, Relaxed);
        }
        self.duration.record(took);
    }
}

/// Plugin stats by project root and name; whether the plugin is a
/// WebAssembly one is set at its start.
type PluginMap = HashMap<PathBuf, BTreeMap<String, (Arc<PluginStats>, bool)>>;

struct Registry {
    started: Instant,
    plugins: Mutex<PluginMap>,
    tasks: Mutex<HashMap<PathBuf, HashMap<String, Arc<TaskStats>>>>,
    task_count: AtomicU64,
    tasks_dropped: AtomicU64,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    started: Instant::now(),
    plugins: Mutex::new(HashMap::new()),
    tasks: Mutex::new(HashMap::new()),
    task_count: AtomicU64::new(0),
    tasks_dropped: AtomicU64::new(0),
});

/// Start the clock (the daemon calls this at start).
pub(crate) fn start() {
    LazyLock::force(&REGISTRY);
}

/// The figures of plugin `name` of `root` (made on first use).
pub(crate) fn plugin(root: &Path, name: &str) -> Arc<PluginStats> {
    let mut plugins = REGISTRY.plugins.lock().unwrap_or_else(|p| p.into_inner());
    let by_name = match plugins.get_mut(root) {
        Some(m) => m,
        None => plugins.entry(root.to_path_buf()).or_default(),
    };
    if let Some((s, _)) = by_name.get(name) {
        return s.clone();
    }
    let s = Arc::new(PluginStats::default());
    by_name.insert(name.to_owned(), (s.clone(), false));
    s
}

/// Mark plugin `name` of `root` as a WebAssembly one (no process to read).
pub(crate) fn set_wasm(root: &Path, name: &str, wasm: bool) {
    let mut plugins = REGISTRY.plugins.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, w)) = plugins.get_mut(root).and_then(|m| m.get_mut(name)) {
        *w = wasm;
    }
}

/// Task `task` of `root` ended after `took`.
pub(crate) fn task_ended(root: &Path, task: &str, took: Duration, cached: bool, failed: bool) {
    let stats = {
        let mut tasks = REGISTRY.tasks.lock().unwrap_or_else(|p| p.into_inner());
        match tasks.get(root).and_then(|m| m.get(task)) {
            Some(s) => s.clone(),
            None => {
                if REGISTRY.task_count.load(Relaxed) >= MAX_TASKS as u64 {
                    REGISTRY.tasks_dropped.fetch_add(1, Relaxed);
                    return;
                }
                REGISTRY.task_count.fetch_add(1, Relaxed);
                let s = Arc::new(TaskStats::default());
                tasks
                    .entry(root.to_path_buf())
                    .or_default()
                    .insert(task.to_owned(), s.clone());
                s
            }
        }
    };
    stats.ended(took, cached, failed);
}

/// Every figure (of project `root` only, when given). Reads each live
/// plugin process's CPU time and peak RSS from `/proc`: call it on a
/// blocking thread.
pub(crate) fn snapshot(root: Option<&Path>) -> wire::Metrics {
    let plugins: Vec<(PathBuf, String, Arc<PluginStats>, bool)> = {
        let map = REGISTRY.plugins.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(r, _)| root.is_none_or(|want| want == r.as_path()))
            .flat_map(|(r, m)| {
                m.iter()
                    .map(|(n, (s, w))| (r.clone(), n.clone(), s.clone(), *w))
            })
            .collect()
    };
    let mut plugins: Vec<wire::PluginMetrics> = plugins
        .iter()
        .map(|(r, n, s, w)| {
            let mut m = s.summary(r, n, *w);
            m.disabled = crate::plugin::is_disabled(r, n);
            m
        })
        .collect();
    plugins.sort_by(|a, b| (&a.root, &a.name).cmp(&(&b.root, &b.name)));
    let tasks: Vec<(PathBuf, String, Arc<TaskStats>)> = {
        let map = REGISTRY.tasks.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(r, _)| root.is_none_or(|want| want == r.as_path()))
            .flat_map(|(r, m)| m.iter().map(|(t, s)| (r.clone(), t.clone(), s.clone())))
            .collect()
    };
    let mut tasks: Vec<wire::TaskMetrics> = tasks
        .iter()
        .map(|(r, t, s)| wire::TaskMetrics {
            root: r.display().to_string(),
            task: t.clone(),
            runs: s.runs.load(Relaxed),
            cache_hits: s.cache_hits.load(Relaxed),
            failures: s.failures.load(Relaxed),
            duration: s.duration.summary(),
        })
        .collect();
    tasks.sort_by(|a, b| (&a.root, &a.task).cmp(&(&b.root, &b.task)));
    wire::Metrics {
        uptime_ms: REGISTRY.started.elapsed().as_millis() as u64,
        plugins,
        tasks,
        tasks_dropped: REGISTRY.tasks_dropped.load(Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What recording one hook call costs, as the hook path does it: the
    /// clock read at its start and end, and the call's counters. Run by
    /// hand (`docs/performance.md`, "Metrics"):
    /// `cargo test -p taskrush-daemon -- --ignored --nocapture recording_cost`
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn recording_cost() {
        const N: u32 = 2_000_000;
        let calls = Calls::default();
        let clock_only = {
            let began = std::time::Instant::now();
            for _ in 0..N {
                std::hint::black_box(std::time::Instant::now().elapsed());
            }
            began.elapsed() / N
        };
        let recorded = {
            let began = std::time::Instant::now();
            for i in 0..N {
                let t = std::time::Instant::now();
                let took = t.elapsed() + Duration::from_micros(u64::from(i % 5000));
                calls.record(took, End::Ok, (120, 80));
            }
            began.elapsed() / N
        };
        assert_eq!(calls.calls.load(Relaxed), u64::from(N));
        println!(
            "per hook call: {recorded:?} recorded (two clock reads and the counters), of which {clock_only:?} the clock reads"
        );
    }

    #[test]
    fn each_value_falls_in_a_bucket_whose_bounds_hold_it() {
        for us in [
            0,
            1,
            3,
            4,
            5,
            7,
            8,
            9,
            10,
            63,
            64,
            100,
            1000,
            123_456,
            1 << 39,
        ] {
            let i = index(us);
            assert!(us < upper(i), "{us} in bucket {i} below {}", upper(i));
            if i > 0 {
                assert!(
                    us >= upper(i - 1),
                    "{us} in bucket {i} above {}",
                    upper(i - 1)
                );
            }
        }
        // The exported bounds are bucket bounds.
        for b in wire::BUCKET_BOUNDS_US {
            assert!((0..BUCKETS).any(|i| upper(i) == b), "{b}");
        }
    }

    #[test]
    fn percentiles_are_within_a_bucket_of_the_values() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max_ms, 100.0);
        assert!((50.0..=50.0 * 1.25).contains(&s.p50_ms), "{}", s.p50_ms);
        assert!((95.0..=100.0).contains(&s.p95_ms), "{}", s.p95_ms);
        assert!((99.0..=100.0).contains(&s.p99_ms), "{}", s.p99_ms);
        // Cumulative, and everything is below 1.05 s.
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(
            s.buckets.iter().find(|(le, _)| *le > 1.0).map(|b| b.1),
            Some(100)
        );
        assert_eq!(s.buckets[0].1, 0);
    }
}
