//! The daemon's metrics as the `metrics` method answers them, and the same
//! figures as OpenMetrics text ([`openmetrics`], what `taskrush daemon
//! metrics` prints). Kept in the daemon's memory since it started, never
//! persisted. The names of the OpenMetrics families are stable; they are
//! listed in `docs/metrics.md`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The answer of `metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Milliseconds since the daemon started (the figures cover that time).
    pub uptime_ms: u64,
    /// Per plugin and project, in project then plugin name order.
    pub plugins: Vec<PluginMetrics>,
    /// Per task and project, in project then task name order.
    pub tasks: Vec<TaskMetrics>,
    /// Tasks not counted because the daemon already tracks its maximum.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tasks_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One plugin of one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginMetrics {
    /// The project root.
    pub root: String,
    pub name: String,
    /// Processes (or WebAssembly instances) started.
    pub spawns: u64,
    /// Crashes: exits, hangs past the deadline, traps.
    pub crashes: u64,
    /// Starts after the first (after a crash, a change, or by hand).
    pub restarts: u64,
    /// Times it was marked failed (the circuit breaker tripped).
    pub marked_failed: u64,
    /// Spawn to the end of the `initialize` handshake.
    pub handshake: Latency,
    /// Per hook it was called for (`before_task`, `after_task`,
    /// `on_task_failure`).
    pub hooks: Vec<CallMetrics>,
    /// Per command of it that was run.
    pub commands: Vec<CallMetrics>,
    /// CPU time of its processes (user + system), the live one read from
    /// `/proc` when asked, the ended ones at their exit. `None` for a
    /// WebAssembly plugin (its time is its calls' time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// The largest peak resident set size of its processes (`VmHWM`);
    /// for a WebAssembly plugin, the largest its instance's linear memory
    /// has been after a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    /// Time its hook calls added to tasks (starts are not counted: see
    /// `handshake`).
    pub added_ms: u64,
    /// Tasks it added time to.
    pub added_tasks: u64,
    /// Whether it is disabled for its project (`taskrush plugin disable`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// The calls of one hook or command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallMetrics {
    /// The hook's method or the command's name.
    pub name: String,
    /// Calls sent to the plugin (a plugin that could not be started was
    /// not called: see `crashes` and `marked_failed`).
    pub calls: u64,
    /// Failed calls: the plugin crashed, broke the protocol, or answered
    /// an error (other than a veto).
    pub errors: u64,
    /// Calls with no answer within the deadline (also counted in `errors`).
    pub timeouts: u64,
    /// `before_task` errors answered on purpose: the task did not run.
    pub vetoes: u64,
    /// Bytes of the requests sent (newline-delimited JSON; 0 for
    /// WebAssembly plugins, which are not sent bytes).
    pub bytes_out: u64,
    /// Bytes of the answers received.
    pub bytes_in: u64,
    pub latency: Latency,
}

/// One task of one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// The project root.
    pub root: String,
    pub task: String,
    /// Times it ran or was found up to date.
    pub runs: u64,
    /// Times it was up to date (nothing ran).
    pub cache_hits: u64,
    pub failures: u64,
    /// From its start to its end (hooks included), cache hits included.
    pub duration: Latency,
}

/// A latency histogram summed up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub sum_ms: f64,
    /// Percentiles: the upper bound of the histogram bucket they fall in
    /// (buckets are 25% wide), at most `max_ms`.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Cumulative counts at fixed bounds ([`BUCKET_BOUNDS_US`]): `le` in
    /// seconds, then the number of values below it. The `+Inf` bucket is
    /// `count`.
    pub buckets: Vec<(f64, u64)>,
}

/// The bounds of the exported histogram buckets, in microseconds: powers
/// of four from 64 µs to about 4.8 hours. Stable: dashboards depend on
/// them.
pub const BUCKET_BOUNDS_US: [u64; 15] = [
    1 << 6,
    1 << 8,
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
    1 << 26,
    1 << 28,
    1 << 30,
    1 << 32,
    1 << 34,
];

/// A counter family: its name, its help, its value.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The OpenMetrics text of `m` (also valid Prometheus text), ending with
/// `# EOF`.
pub fn openmetrics(m: &Metrics) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "taskrush_uptime_seconds",
        "gauge",
        "Seconds since the daemon started (every other figure covers that time).",
    );
    let _ = writeln!(out, "taskrush_uptime_seconds {}", secs(m.uptime_ms as f64));

    let plugin_counters: [Counter<PluginMetrics>; 5] = [
        (
            "taskrush_plugin_spawns",
            "Plugin processes or instances started.",
            |p| p.spawns,
        ),
        (
            "taskrush_plugin_crashes",
            "Plugin crashes (exits, hangs past the deadline, traps).",
            |p| p.crashes,
        ),
        (
            "taskrush_plugin_restarts",
            "Plugin starts after the first.",
            |p| p.restarts,
        ),
        (
            "taskrush_plugin_marked_failed",
            "Times a plugin was marked failed (circuit breaker tripped).",
            |p| p.marked_failed,
        ),
        (
            "taskrush_plugin_added_tasks",
            "Tasks a plugin's hooks added time to.",
            |p| p.added_tasks,
        ),
    ];
    for (name, help, get) in plugin_counters {
        family(&mut out, name, "counter", help);
        for p in &m.plugins {
            let _ = writeln!(out, "{name}_total{} {}", plugin_labels(p, &[]), get(p));
        }
    }
    family(
        &mut out,
        "taskrush_plugin_added_seconds",
        "counter",
        "Time a plugin's hooks added to tasks.",
    );
    for p in &m.plugins {
        let _ = writeln!(
            out,
            "taskrush_plugin_added_seconds_total{} {}",
            plugin_labels(p, &[]),
            secs(p.added_ms as f64)
        );
    }
    family(
        &mut out,
        "taskrush_plugin_cpu_seconds",
        "counter",
        "CPU time of a plugin's processes (user and system).",
    );
    for p in &m.plugins {
        if let Some(cpu) = p.cpu_ms {
            let _ = writeln!(
                out,
                "taskrush_plugin_cpu_seconds_total{} {}",
                plugin_labels(p, &[]),
                secs(cpu as f64)
            );
        }
    }
    family(
        &mut out,
        "taskrush_plugin_peak_rss_bytes",
        "gauge",
        "The largest peak resident set size of a plugin's processes.",
    );
    for p in &m.plugins {
        if let Some(kib) = p.peak_rss_kib {
            let _ = writeln!(
                out,
                "taskrush_plugin_peak_rss_bytes{} {}",
                plugin_labels(p, &[]),
                kib * 1024
            );
        }
    }
    family(
        &mut out,
        "taskrush_plugin_disabled",
        "gauge",
        "1 when a plugin is disabled for its project.",
    );
    for p in &m.plugins {
        let _ = writeln!(
            out,
            "taskrush_plugin_disabled{} {}",
            plugin_labels(p, &[]),
            u8::from(p.disabled)
        );
    }
    family(
        &mut out,
        "taskrush_plugin_handshake_seconds",
        "histogram",
        "Plugin start: spawn to the end of the initialize handshake.",
    );
    for p in &m.plugins {
        histogram(
            &mut out,
            "taskrush_plugin_handshake_seconds",
            &plugin_labels(p, &[]),
            &p.handshake,
        );
    }

    for (kind, label, get) in [
        (
            "hook",
            "hook",
            (|p: &PluginMetrics| &p.hooks) as fn(&PluginMetrics) -> &Vec<CallMetrics>,
        ),
        ("command", "command", |p: &PluginMetrics| &p.commands),
    ] {
        let counters: [Counter<CallMetrics>; 6] = [
            ("calls", "Calls", |c| c.calls),
            ("errors", "Failed calls (timeouts included)", |c| c.errors),
            ("timeouts", "Calls unanswered within the deadline", |c| {
                c.timeouts
            }),
            ("vetoes", "before_task vetoes", |c| c.vetoes),
            ("sent_bytes", "Bytes of requests sent to the plugin", |c| {
                c.bytes_out
            }),
            ("received_bytes", "Bytes of answers received", |c| {
                c.bytes_in
            }),
        ];
        for (what, help, value) in counters {
            if kind == "command" && what == "vetoes" {
                continue;
            }
            let name = format!("taskrush_plugin_{kind}_{what}");
            family(&mut out, &name, "counter", &format!("{help}, per {kind}."));
            for p in &m.plugins {
                for c in get(p) {
                    let _ = writeln!(
                        out,
                        "{name}_total{} {}",
                        plugin_labels(p, &[(label, &c.name)]),
                        value(c)
                    );
                }
            }
        }
        let name = format!("taskrush_plugin_{kind}_duration_seconds");
        family(
            &mut out,
            &name,
            "histogram",
            &format!("Latency of a plugin's calls, per {kind}."),
        );
        for p in &m.plugins {
            for c in get(p) {
                histogram(
                    &mut out,
                    &name,
                    &plugin_labels(p, &[(label, &c.name)]),
                    &c.latency,
                );
            }
        }
    }

    let task_counters: [Counter<TaskMetrics>; 3] = [
        (
            "taskrush_task_runs",
            "Times a task ran or was found up to date.",
            |t| t.runs,
        ),
        (
            "taskrush_task_cache_hits",
            "Times a task was up to date.",
            |t| t.cache_hits,
        ),
        ("taskrush_task_failures", "Times a task failed.", |t| {
            t.failures
        }),
    ];
    for (name, help, get) in task_counters {
        family(&mut out, name, "counter", help);
        for t in &m.tasks {
            let _ = writeln!(out, "{name}_total{} {}", task_labels(t), get(t));
        }
    }
    family(
        &mut out,
        "taskrush_task_duration_seconds",
        "histogram",
        "A task's duration, hooks included.",
    );
    for t in &m.tasks {
        histogram(
            &mut out,
            "taskrush_task_duration_seconds",
            &task_labels(t),
            &t.duration,
        );
    }
    out.push_str("# EOF\n");
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
}

fn histogram(out: &mut String, name: &str, labels: &str, l: &Latency) {
    // `labels` is `{a="b"}`: the bucket's `le` goes inside.
    let inner = labels.trim_start_matches('{').trim_end_matches('}');
    let sep = if inner.is_empty() { "" } else { "," };
    for (le, count) in &l.buckets {
        let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"+Inf\"}} {}", l.count);
    let _ = writeln!(out, "{name}_count{labels} {}", l.count);
    let _ = writeln!(out, "{name}_sum{labels} {}", secs(l.sum_ms));
}

fn plugin_labels(p: &PluginMetrics, more: &[(&str, &str)]) -> String {
    let mut s = format!(
        "{{root=\"{}\",plugin=\"{}\"",
        escape(&p.root),
        escape(&p.name)
    );
    for (k, v) in more {
        let _ = write!(s, ",{k}=\"{}\"", escape(v));
    }
    s.push('}');
    s
}

fn task_labels(t: &TaskMetrics) -> String {
    format!(
        "{{root=\"{}\",task=\"{}\"}}",
        escape(&t.root),
        escape(&t.task)
    )
}

/// Milliseconds as seconds, in the shortest form that reads back exactly.
fn secs(ms: f64) -> f64 {
    ms / 1000.0
}

/// A label value: `\`, `"` and new lines escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_each_family_once_and_ends_with_eof() {
        let latency = Latency {
            count: 2,
            sum_ms: 3.0,
            buckets: BUCKET_BOUNDS_US
                .iter()
                .map(|b| (*b as f64 / 1e6, 2))
                .collect(),
            ..Latency::default()
        };
        let m = Metrics {
            uptime_ms: 1500,
            plugins: vec![PluginMetrics {
                root: "/p\"q".into(),
                name: "slack".into(),
                hooks: vec![CallMetrics {
                    name: "after_task".into(),
                    calls: 2,
                    latency: latency.clone(),
                    ..CallMetrics::default()
                }],
                handshake: latency,
                ..PluginMetrics::default()
            }],
            ..Metrics::default()
        };
        let text = openmetrics(&m);
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("taskrush_uptime_seconds 1.5\n"));
        assert!(text.contains(
            "taskrush_plugin_hook_calls_total{root=\"/p\\\"q\",plugin=\"slack\",hook=\"after_task\"} 2\n"
        ));
        assert!(text.contains(
            "taskrush_plugin_hook_duration_seconds_bucket{root=\"/p\\\"q\",plugin=\"slack\",hook=\"after_task\",le=\"0.000064\"} 2\n"
        ));
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(types.len(), unique.len());
    }
}
