//! Plugin output a person can see: warnings and errors a plugin logs during
//! a run on that run's stderr (prefixed with its name, bounded), progress in
//! `taskrush events`, every line in `taskrush plugin logs NAME [-f]`. Real
//! Python and Node plugins using the SDKs of `plugins-external/`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use taskrush_tests::Scenario;

fn sdk(lang: &str) -> std::path::PathBuf {
    super::plugins::repo().join("plugins-external").join(lang)
}

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python plugin `speaker` that, before each task, logs one line of each
/// level, reports progress, and `config.extra` more warnings.
fn python_speaker() -> Scenario {
    let s = Scenario::new()
        .file(
            ".rush-plugins/speaker/plugin.toml",
            &format!(
                "name = \"speaker\"\nversion = \"1.0.0\"\n\
                 entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\"]\n\
                 taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\"read:{}\"]\n",
                sdk("python").display()
            ),
        )
        .file(
            ".rush-plugins/speaker/main.py",
            &format!(
                "import sys\nsys.path.insert(0, {:?})\n\
                 from taskrush_plugin import Plugin\n\
                 plugin = Plugin(\"speaker\", \"1.0.0\")\n\
                 @plugin.before_task\n\
                 def before(ctx):\n    \
                     plugin.debug(\"debug detail\")\n    \
                     plugin.info(\"checking \" + ctx.task_name)\n    \
                     plugin.warn(\"webhook answered 500\")\n    \
                     plugin.error(\"could not post the result\")\n    \
                     plugin.progress(\"uploading\", percent=40)\n    \
                     for i in range(int(ctx.config.get(\"extra\", 0))):\n        \
                         plugin.warn(f\"chatter {{i}}\")\n\
                 sys.exit(plugin.run())\n",
                sdk("python").display().to_string()
            ),
        );
    s.grant_in_config("speaker");
    s
}

#[test]
fn a_plugins_warnings_and_errors_during_a_run_show_on_its_stderr_with_the_plugins_name() {
    let s = python_speaker().rush("plugins:\n  - name: speaker\ntasks:\n  t:\n    cmd: echo ran\n");
    let out = s.run(&["t"]);
    out.success().expect_stdout("ran\n");
    let err = out.stderr();
    assert!(
        err.contains("[speaker] warning: webhook answered 500\n"),
        "{err}"
    );
    assert!(
        err.contains("[speaker] error: could not post the result\n"),
        "{err}"
    );
    // Info and debug lines are not the run's business: `plugin logs` has
    // them.
    assert!(!err.contains("checking t"), "{err}");
    assert!(!err.contains("debug detail"), "{err}");
    let logs = s.run(&["plugin", "logs", "speaker"]);
    logs.success();
    let text = logs.stdout();
    for part in [
        "debug detail",
        "checking t",
        "webhook answered 500",
        "could not post the result",
        "40% uploading",
    ] {
        assert!(text.contains(part), "`{part}` missing from:\n{text}");
    }
    assert!(text.contains("progress"), "{text}");
    let json = s.run(&["plugin", "logs", "speaker", "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(json.stdout().lines().next().expect("a JSON line")).expect("JSON");
    assert_eq!(first["plugin"], "speaker");
    assert_eq!(first["task"], "t");
    assert!(first["run_id"].is_u64(), "{first}");
}

#[test]
fn a_chatty_plugin_cannot_flood_a_run_but_every_line_is_in_plugin_logs() {
    let s = python_speaker().rush(
        "plugins:\n  - name: speaker\n    config: {extra: 300}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.success();
    let err = out.stderr();
    let shown = err.lines().filter(|l| l.starts_with("[speaker] ")).count();
    // 20 events (its progress is one of them: not shown off a terminal)
    // and one saying the rest were held back.
    assert_eq!(shown, 20, "{err}");
    assert!(
        err.contains(
            "[speaker] warning: more output held back; see `taskrush plugin logs speaker`"
        ),
        "{err}"
    );
    let logs = s.run(&["plugin", "logs", "speaker"]);
    assert!(logs.stdout().contains("chatter 299"), "{}", logs.stdout());
}

#[test]
fn plugin_logs_follow_shows_the_kept_lines_then_new_ones_until_stopped() {
    let s = python_speaker().rush("plugins:\n  - name: speaker\ntasks:\n  t:\n    cmd: 'true'\n");
    s.run(&["t"]).success();
    let mut child = s
        .command(&["plugin", "logs", "speaker", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start `plugin logs -f`");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_line = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line with `{what}` within 20 s"),
            }
        }
    };
    // The kept line of the first run…
    wait_line("checking t");
    // …then a new one, from a second run, while it follows.
    s.write(
        ".rush",
        "plugins:\n  - name: speaker\ntasks:\n  u:\n    cmd: 'true'\n",
    );
    s.run(&["u"]).success();
    wait_line("checking u");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_node_plugins_progress_shows_in_taskrush_events_and_its_warnings_in_the_run() {
    if !have("node") {
        eprintln!("SKIPPED: `node` is not installed");
        return;
    }
    let s = Scenario::new()
        .file(
            ".rush-plugins/uploader/plugin.toml",
            &format!(
                "name = \"uploader\"\nversion = \"1.0.0\"\n\
                 entry_point = [\"node\", \"main.cjs\"]\n\
                 taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\"read:{}\"]\n",
                sdk("node").display()
            ),
        )
        .file(
            ".rush-plugins/uploader/main.cjs",
            &format!(
                "const {{ Plugin }} = require({:?});\n\
                 const plugin = new Plugin('uploader', '1.0.0');\n\
                 plugin.afterTask(async (ctx, result) => {{\n  \
                   plugin.progress('uploading artifacts', {{ percent: 75 }});\n  \
                   plugin.warn(`slow upload for ${{ctx.task_name}}`);\n\
                 }});\n\
                 plugin.run();\n",
                sdk("node").join("index.cjs").display().to_string()
            ),
        )
        .rush("plugins:\n  - name: uploader\ntasks:\n  build:\n    cmd: echo built\n");
    s.grant_in_config("uploader");
    s.start_daemon(&[]);
    let mut events = s.events();
    let out = s.run(&["build"]);
    out.success().expect_stdout("built\n");
    assert!(
        out.stderr()
            .contains("[uploader] warning: slow upload for build\n"),
        "{}",
        out.stderr()
    );
    let ev = events.wait_kind("plugin_progress");
    assert_eq!(ev["plugin"], "uploader");
    assert_eq!(ev["task"], "build");
    assert_eq!(ev["percent"], 75.0);
    assert_eq!(ev["message"], "uploading artifacts");
    assert!(ev["run_id"].is_u64(), "{ev}");
    // The human form of `taskrush events` says it in words.
    let logs = s.run(&["plugin", "logs", "uploader"]);
    assert!(
        logs.stdout().contains("75% uploading artifacts"),
        "{}",
        logs.stdout()
    );
}
