//! Metrics: what plugins and tasks cost, as `plugin stats`, `daemon
//! stats` and `daemon metrics` (OpenMetrics) show it after real runs with
//! real Python plugins; the slow-plugin warning; `plugin disable|enable`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use taskrush_tests::Scenario;

use super::plugins::plugin;

/// `plugin stats --json`, the entry of plugin `name`.
fn stats_of(s: &Scenario, name: &str) -> Value {
    let out = s.run(&["plugin", "stats", name, "--json"]);
    out.success();
    let list: Vec<Value> = serde_json::from_str(&out.stdout()).expect("plugin stats JSON");
    assert_eq!(list.len(), 1, "{}", out.stdout());
    list.into_iter().next().unwrap_or_default()
}

fn hook<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["hooks"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == name))
        .unwrap_or_else(|| panic!("no hook `{name}` in {p}"))
}

#[test]
fn after_two_runs_plugin_stats_shows_each_hooks_calls_and_latency() {
    let s = Scenario::new();
    plugin(&s, "watcher", "good");
    let s = s.rush("plugins:\n  - name: watcher\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).expect_stdout("ran\n").success();
    s.run(&["t"]).expect_stdout("ran\n").success();

    let p = stats_of(&s, "watcher");
    assert_eq!(p["spawns"], 1, "{p}");
    assert_eq!(p["crashes"], 0, "{p}");
    assert_eq!(p["handshake"]["count"], 1, "{p}");
    for name in ["before_task", "after_task"] {
        let h = hook(&p, name);
        assert_eq!(h["calls"], 2, "{h}");
        assert_eq!(h["errors"], 0, "{h}");
        assert_eq!(h["latency"]["count"], 2, "{h}");
        let p50 = h["latency"]["p50_ms"].as_f64().unwrap_or(0.0);
        let max = h["latency"]["max_ms"].as_f64().unwrap_or(0.0);
        assert!(p50 > 0.0 && p50 <= max, "{h}");
        assert!(h["bytes_out"].as_u64().unwrap_or(0) > 0, "{h}");
        assert!(h["bytes_in"].as_u64().unwrap_or(0) > 0, "{h}");
    }
    assert_eq!(p["added_tasks"], 2, "{p}");
    // Read from `/proc` when asked: the process is warm.
    assert!(p["peak_rss_kib"].as_u64().unwrap_or(0) > 0, "{p}");
    assert!(p["cpu_ms"].is_u64(), "{p}");

    // The table a person reads.
    let out = s.run(&["plugin", "stats"]);
    out.success();
    let table = out.stdout();
    assert!(table.contains("PLUGIN"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("watcher") && l.contains("before_task")),
        "{table}"
    );
    assert!(table.contains("to 2 tasks"), "{table}");
}

#[test]
fn a_plugin_that_sleeps_in_after_task_is_named_at_the_end_of_the_run_and_a_fast_one_is_not() {
    let s = Scenario::new();
    plugin(&s, "slack-notify", "slow-after");
    plugin(&s, "quick", "good");
    let s = s.rush(
        "plugins:\n  - name: quick\n  - {name: slack-notify, timeout: 10s}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    let stderr = out.stderr();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(" added ")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let line = warnings[0];
    assert!(
        line.starts_with("warning: slack-notify added ") && line.contains(" to 1 task (p95 "),
        "{line}"
    );
    assert!(line.contains(" per after_task)"), "{line}");

    // A share of 100% names nobody.
    let config = s.user_config_path();
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(
        &config,
        format!("{text}\n[metrics]\nslow_plugin_share = 1.0\n"),
    )
    .expect("write the user config");
    let out = s.run(&["t"]);
    out.success();
    assert!(!out.stderr().contains(" added "), "{}", out.stderr());
}

#[test]
fn a_crashing_plugin_counts_its_crashes_and_errors() {
    let s = Scenario::new();
    plugin(&s, "crashy", "crash");
    let s = s.rush("plugins:\n  - name: crashy\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).success();
    s.run(&["t"]).success();
    let p = stats_of(&s, "crashy");
    assert_eq!(p["crashes"], 2, "{p}");
    assert_eq!(p["spawns"], 2, "{p}");
    assert_eq!(p["restarts"], 1, "{p}");
    assert_eq!(hook(&p, "before_task")["errors"], 2, "{p}");
    // Its ended processes' CPU time was taken at their exit.
    assert!(p["cpu_ms"].is_u64(), "{p}");
}

#[test]
fn daemon_stats_counts_runs_and_cache_hits_per_task() {
    let s = Scenario::new()
        .file("src/a.txt", "a")
        .rush("tasks:\n  build:\n    cmd: echo built\n    cache_files: [\"src/*.txt\"]\n");
    s.run(&["build"]).success();
    s.run(&["build"]).success();
    let out = s.run(&["daemon", "stats", "--json"]);
    out.success();
    let v: Value = serde_json::from_str(&out.stdout()).expect("daemon stats JSON");
    let t = v["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["task"] == "build"))
        .unwrap_or_else(|| panic!("no task `build` in {v}"));
    assert_eq!(t["runs"], 2, "{t}");
    assert_eq!(t["cache_hits"], 1, "{t}");
    assert_eq!(t["failures"], 0, "{t}");
    assert_eq!(t["duration"]["count"], 2, "{t}");

    let out = s.run(&["daemon", "stats"]);
    out.success();
    let line = out
        .stdout()
        .lines()
        .find(|l| l.starts_with("build"))
        .map(str::to_owned)
        .unwrap_or_default();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells.get(1..4),
        Some(&["2", "1", "0"][..]),
        "{}",
        out.stdout()
    );
}

#[test]
fn daemon_metrics_prints_openmetrics_text_a_scraper_parses() {
    let s = Scenario::new();
    plugin(&s, "watcher", "good");
    let s = s.rush("plugins:\n  - name: watcher\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).success();
    let out = s.run(&["daemon", "metrics"]);
    out.success();
    let text = out.stdout();
    let families = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, kind) in [
        ("taskrush_uptime_seconds", "gauge"),
        ("taskrush_plugin_spawns", "counter"),
        ("taskrush_plugin_crashes", "counter"),
        ("taskrush_plugin_hook_calls", "counter"),
        ("taskrush_plugin_hook_duration_seconds", "histogram"),
        ("taskrush_plugin_handshake_seconds", "histogram"),
        ("taskrush_task_runs", "counter"),
        ("taskrush_task_cache_hits", "counter"),
        ("taskrush_task_duration_seconds", "histogram"),
    ] {
        assert_eq!(families.get(name).map(String::as_str), Some(kind), "{name}");
    }
    let calls = text
        .lines()
        .find(|l| {
            l.starts_with("taskrush_plugin_hook_calls_total{")
                && l.contains("plugin=\"watcher\"")
                && l.contains("hook=\"before_task\"")
        })
        .unwrap_or_else(|| panic!("no before_task calls in\n{text}"));
    assert!(calls.ends_with(" 1"), "{calls}");
}

/// A small OpenMetrics text checker: every sample belongs to the family
/// its `# TYPE` line declared just before (counters end in `_total`,
/// histograms have cumulative `_bucket`s ending at `le="+Inf"` equal to
/// `_count`, and a `_sum`), label values are quoted, values are numbers,
/// families are declared once, and the text ends with `# EOF`. Answers
/// each family's type.
fn parse_openmetrics(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut types = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    let mut eof = false;
    for line in text.lines() {
        if eof {
            return Err(format!("a line after `# EOF`: {line}"));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or("a bad TYPE line")?;
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unknown type `{kind}`"));
            }
            if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(format!("family `{name}` declared twice"));
            }
            current = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(format!("unexpected line `{line}`"));
        }
        let (family, kind) = current.clone().ok_or("a sample before any TYPE")?;
        let (name_labels, value) = line.rsplit_once(' ').ok_or("a sample without a value")?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("not a number in `{line}`"))?;
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').ok_or("unclosed labels")?),
            None => (name_labels, ""),
        };
        let mut le = None;
        let mut key = Vec::new();
        for pair in split_labels(labels)? {
            let (k, v) = pair.split_once('=').ok_or("a label without `=`")?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(format!("an unquoted label value in `{line}`"))?;
            if k == "le" {
                le = Some(v.to_owned());
            } else {
                key.push(format!("{k}={v}"));
            }
        }
        let series = format!("{family}{{{}}}", key.join(","));
        let suffix = name
            .strip_prefix(family.as_str())
            .ok_or(format!("sample `{name}` outside family `{family}`"))?;
        match (kind.as_str(), suffix) {
            ("counter", "_total") | ("gauge", "") => {}
            ("histogram", "_bucket") => {
                let le = le.ok_or("a bucket without `le`")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("bad le `{le}`"))?
                };
                buckets.entry(series).or_default().push((le, value));
            }
            ("histogram", "_count") => {
                counts.insert(series, value);
            }
            ("histogram", "_sum") => {}
            _ => return Err(format!("sample `{name}` does not fit a {kind}")),
        }
    }
    if !eof {
        return Err("no `# EOF`".into());
    }
    for (series, b) in &buckets {
        if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
            return Err(format!("{series}: buckets not cumulative"));
        }
        let last = b.last().ok_or("no buckets")?;
        if last.0 != f64::INFINITY || Some(&last.1) != counts.get(series) {
            return Err(format!("{series}: the +Inf bucket is not the count"));
        }
    }
    Ok(types)
}

/// `a="x,y",b="z"` → its pairs (commas inside quotes kept).
fn split_labels(labels: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in labels.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                cur.push(c);
            }
            '\\' => {
                escaped = true;
                cur.push(c);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("an unclosed quote in `{labels}`"));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[test]
fn a_disabled_plugin_is_skipped_with_a_warning_across_daemon_restarts_until_enabled() {
    let s = Scenario::new();
    plugin(&s, "watcher", "good");
    let s = s.rush("plugins:\n  - name: watcher\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).success();
    s.run(&["plugin", "disable", "watcher"])
        .expect_stdout("disabled `watcher` for this project: its hooks are skipped\n")
        .success();
    let list = s.run(&["plugin", "list", "--json"]);
    let list: Vec<Value> = serde_json::from_str(&list.stdout()).expect("plugin list JSON");
    assert_eq!(list[0]["disabled"], true, "{list:?}");
    let calls_before = hook(&stats_of(&s, "watcher"), "before_task")["calls"].clone();

    // Kept across a daemon restart.
    s.run(&["daemon", "stop"]).success();
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    assert!(
        out.stderr().contains(
            "plugin `watcher` is disabled for this project: its hooks are skipped (`taskrush plugin enable watcher` enables it)"
        ),
        "{}",
        out.stderr()
    );
    let table = s.run(&["plugin", "list"]);
    assert!(
        table
            .stdout()
            .lines()
            .any(|l| l.starts_with("watcher") && l.contains("disabled")),
        "{}",
        table.stdout()
    );
    // Not started, not called: a fresh daemon has no figures of its hooks.
    let p = s.run(&["plugin", "stats", "watcher", "--json"]);
    let p: Vec<Value> = serde_json::from_str(&p.stdout()).expect("plugin stats JSON");
    assert!(
        p.first()
            .is_none_or(|p| p["spawns"] == 0 && p["disabled"] == true),
        "{p:?} (before: {calls_before})"
    );

    s.run(&["plugin", "enable", "watcher"])
        .expect_stdout("enabled `watcher` for this project\n")
        .success();
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    assert!(!out.stderr().contains("disabled"), "{}", out.stderr());
    assert_eq!(hook(&stats_of(&s, "watcher"), "before_task")["calls"], 1);

    // Both changes are in the audit trail.
    let audit = s.run(&["plugin", "audit", "watcher", "--json"]);
    let kinds: BTreeSet<String> = audit
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["kind"].as_str().map(str::to_owned))
        .collect();
    assert!(
        kinds.contains("disabled") && kinds.contains("enabled"),
        "{kinds:?}"
    );
}

#[test]
fn the_tasks_of_a_disabled_required_plugin_fail_naming_it() {
    let s = Scenario::new();
    plugin(&s, "guard", "good");
    let s =
        s.rush("plugins:\n  - {name: guard, required: true}\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["plugin", "disable", "guard"]).success();
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0);
    assert_eq!(out.stdout(), "");
    out.expect_stderr_containing("the required plugin `guard` is disabled for this project");
    out.expect_stderr_containing("taskrush plugin enable guard");
    s.run(&["plugin", "enable", "guard"]).success();
    s.run(&["t"]).expect_stdout("ran\n").success();
}
