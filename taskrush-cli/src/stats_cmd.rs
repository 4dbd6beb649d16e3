//! `taskrush plugin stats [NAME]`, `taskrush daemon stats` and `taskrush
//! daemon metrics`: the daemon's `metrics`, as tables read at a glance, as
//! JSON, or as OpenMetrics text.

use std::io::Write;

use serde_json::json;
use taskrush_protocol::method;
use taskrush_protocol::metrics::{Latency, Metrics, PluginMetrics, openmetrics};

use crate::client::Client;
use crate::error::CliError;

fn fetch(c: &mut Client, cwd: Option<&str>, file: Option<String>) -> Result<Metrics, CliError> {
    c.call(method::METRICS, json!({"cwd": cwd, "file": file}))
}

fn print_json<T: serde::Serialize>(out: &mut impl Write, v: &T) {
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

/// `plugin stats [NAME] [--json]`: the project's plugins.
pub fn plugin_stats(
    c: &mut Client,
    cwd: &str,
    file: Option<String>,
    name: Option<&str>,
    as_json: bool,
) -> Result<i32, CliError> {
    let mut m = fetch(c, Some(cwd), file)?;
    if let Some(name) = name {
        m.plugins.retain(|p| p.name == name);
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    if as_json {
        print_json(&mut out, &m.plugins);
        return Ok(0);
    }
    if m.plugins.is_empty() {
        let _ = match name {
            Some(n) => writeln!(
                out,
                "no figures for plugin `{}` yet: it was not used since the daemon started",
                crate::render::printable(n)
            ),
            None => writeln!(
                out,
                "no plugin figures yet: no plugin of this project was used since the daemon started"
            ),
        };
        return Ok(0);
    }
    let _ = write!(out, "{}", plugin_tables(&m.plugins, m.uptime_ms));
    Ok(0)
}

/// The two tables of `plugin stats`: per call, then per plugin.
fn plugin_tables(plugins: &[PluginMetrics], uptime_ms: u64) -> String {
    let mut calls = vec![row(&[
        "PLUGIN", "CALL", "CALLS", "P50", "P95", "P99", "MAX", "ERRORS", "TIMEOUTS", "VETOES",
    ])];
    for p in plugins {
        let name = crate::render::printable(&p.name).into_owned();
        let mut first = true;
        let mut line = |call: String, c: Option<(u64, u64, u64)>, l: &Latency| {
            let (errors, timeouts, vetoes) = c.unwrap_or((0, 0, 0));
            calls.push(row(&[
                if first { &name } else { "" },
                &call,
                &l.count.to_string(),
                &ms(l.p50_ms),
                &ms(l.p95_ms),
                &ms(l.p99_ms),
                &ms(l.max_ms),
                &errors.to_string(),
                &timeouts.to_string(),
                &vetoes.to_string(),
            ]));
            first = false;
        };
        for h in &p.hooks {
            line(
                h.name.clone(),
                Some((h.errors, h.timeouts, h.vetoes)),
                &h.latency,
            );
        }
        for cmd in &p.commands {
            line(
                format!("command {}", crate::render::printable(&cmd.name)),
                Some((cmd.errors, cmd.timeouts, 0)),
                &cmd.latency,
            );
        }
        if p.handshake.count > 0 {
            line("(start)".into(), None, &p.handshake);
        }
    }
    let mut life = vec![row(&[
        "PLUGIN", "SPAWNS", "CRASHES", "RESTARTS", "FAILED", "CPU", "PEAK RSS", "ADDED",
    ])];
    for p in plugins {
        let mut name = crate::render::printable(&p.name).into_owned();
        if p.disabled {
            name.push_str(" (disabled)");
        }
        life.push(row(&[
            &name,
            &p.spawns.to_string(),
            &p.crashes.to_string(),
            &p.restarts.to_string(),
            &p.marked_failed.to_string(),
            &p.cpu_ms.map(|c| ms(c as f64)).unwrap_or_else(|| "-".into()),
            &p.peak_rss_kib
                .map(|k| size(k * 1024))
                .unwrap_or_else(|| "-".into()),
            &format!(
                "{} to {} task{}",
                ms(p.added_ms as f64),
                p.added_tasks,
                if p.added_tasks == 1 { "" } else { "s" }
            ),
        ]));
    }
    let mut s = table(&calls, &[2, 3, 4, 5, 6, 7, 8, 9]);
    s.push('\n');
    s.push_str(&table(&life, &[1, 2, 3, 4, 5, 6]));
    s.push_str(&format!(
        "\nsince the daemon started {} ago; latencies are within 25%\n",
        ms(uptime_ms as f64)
    ));
    s
}

/// `daemon stats [--json]`: every project's tasks.
pub fn daemon_stats(c: &mut Client, as_json: bool) -> Result<i32, CliError> {
    let m = fetch(c, None, None)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if as_json {
        print_json(
            &mut out,
            &json!({"uptime_ms": m.uptime_ms, "tasks": m.tasks, "tasks_dropped": m.tasks_dropped}),
        );
        return Ok(0);
    }
    if m.tasks.is_empty() {
        let _ = writeln!(out, "no task ran since the daemon started");
        return Ok(0);
    }
    let mut root = None;
    let mut rows = Vec::new();
    let header = row(&[
        "TASK", "RUNS", "CACHED", "FAILED", "P50", "P95", "P99", "MAX",
    ]);
    for t in &m.tasks {
        if root != Some(&t.root) {
            if !rows.is_empty() {
                let _ = writeln!(out, "{}", table(&rows, &[1, 2, 3, 4, 5, 6, 7]));
                rows.clear();
            }
            let _ = writeln!(out, "{}", crate::render::printable(&t.root));
            rows.push(header.clone());
            root = Some(&t.root);
        }
        let l = &t.duration;
        rows.push(row(&[
            &crate::render::printable(&t.task),
            &t.runs.to_string(),
            &t.cache_hits.to_string(),
            &t.failures.to_string(),
            &ms(l.p50_ms),
            &ms(l.p95_ms),
            &ms(l.p99_ms),
            &ms(l.max_ms),
        ]));
    }
    let _ = write!(out, "{}", table(&rows, &[1, 2, 3, 4, 5, 6, 7]));
    if m.tasks_dropped > 0 {
        let _ = writeln!(
            out,
            "({} task runs not counted: the daemon keeps figures for {} tasks at most)",
            m.tasks_dropped, 2048
        );
    }
    Ok(0)
}

/// `daemon metrics`: OpenMetrics text, for scrapers.
pub fn daemon_metrics(c: &mut Client) -> Result<i32, CliError> {
    let m = fetch(c, None, None)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = out.write_all(openmetrics(&m).as_bytes());
    Ok(0)
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Columns padded to their widest cell; those in `right` aligned right.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// `0.4ms`, `12ms`, `1.2s`, `3m05s`.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}ms")
    } else if v < 1000.0 {
        format!("{v:.0}ms")
    } else if v < 60_000.0 {
        format!("{:.1}s", v / 1000.0)
    } else {
        let s = (v / 1000.0).round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// `12.3 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskrush_protocol::metrics::CallMetrics;

    #[test]
    fn the_plugin_table_has_a_line_per_hook_and_a_line_per_plugin() {
        let p = PluginMetrics {
            name: "slack-notify".into(),
            spawns: 1,
            hooks: vec![CallMetrics {
                name: "after_task".into(),
                calls: 3,
                latency: Latency {
                    count: 3,
                    p50_ms: 310.0,
                    p95_ms: 310.0,
                    p99_ms: 310.0,
                    max_ms: 312.0,
                    ..Latency::default()
                },
                ..CallMetrics::default()
            }],
            cpu_ms: Some(120),
            peak_rss_kib: Some(12_600),
            added_ms: 840,
            added_tasks: 3,
            ..PluginMetrics::default()
        };
        let t = plugin_tables(&[p], 5000);
        assert!(t.contains("slack-notify  after_task"), "{t}");
        assert!(t.contains("310ms"), "{t}");
        assert!(t.contains("840ms to 3 tasks"), "{t}");
        assert!(t.contains("12.3 MiB"), "{t}");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(ms(0.42), "0.4ms");
        assert_eq!(ms(310.0), "310ms");
        assert_eq!(ms(1234.0), "1.2s");
        assert_eq!(ms(185_000.0), "3m05s");
    }
}
