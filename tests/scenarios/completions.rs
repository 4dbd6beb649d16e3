//! Shell completions (`taskrush --completions SHELL`) and the man page
//! (`taskrush --man`): task names and plugin commands come from the
//! daemon, which is started if needed; no plugin is started for them.

use taskrush_tests::Scenario;

use crate::plugins::plugin;

/// A project with tasks and a plugin adding `greet` (counting its starts
/// in `rec.jsonl`).
fn project() -> Scenario {
    let s = Scenario::new();
    plugin(&s, "hello", "good");
    let rec = s.project().join("rec.jsonl").display().to_string();
    s.env("REC", &rec).rush(
        "plugins:\n  - {name: hello, config: {commands: [greet], record: '${REC}'}}\n\
         tasks:\n  build:\n    cmd: 'true'\n    description: Build it\n  test:\n    cmd: 'true'\n",
    )
}

fn starts(s: &Scenario) -> usize {
    s.read("rec.jsonl")
        .lines()
        .filter(|l| l.contains("\"hook\": \"initialize\""))
        .count()
}

/// What bash's completion function offers for the words `line`, the last
/// one being completed.
fn complete_bash(s: &Scenario, line: &[&str]) -> Vec<String> {
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    s.write(
        "complete.bash",
        format!(
            "eval \"$(taskrush --completions bash)\"\n\
             COMP_WORDS=({})\nCOMP_CWORD={}\n_taskrush\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            words.join(" "),
            line.len() - 1
        ),
    );
    let out = s.sh("bash complete.bash");
    out.success();
    let mut got: Vec<String> = out.stdout().lines().map(str::to_owned).collect();
    got.sort();
    got
}

#[test]
fn bash_completes_tasks_plugin_commands_words_and_flags_without_starting_a_plugin() {
    let s = project();
    s.run(&["greet"]).success();
    assert_eq!(starts(&s), 1);
    // A fresh daemon: the completion starts it and knows `greet` from
    // the plugin's last handshake.
    s.run(&["daemon", "stop"]).success();
    let first = complete_bash(&s, &["taskrush", ""]);
    for w in [
        "build", "test", "greet", "run", "daemon", "plugin", "events", "help",
    ] {
        assert!(
            first.contains(&w.to_owned()),
            "`{w}` not offered: {first:?}"
        );
    }
    assert_eq!(complete_bash(&s, &["taskrush", "gr"]), ["greet"]);
    assert_eq!(complete_bash(&s, &["taskrush", "run", "b"]), ["build"]);
    // After a task: more tasks, no built-in words.
    let after = complete_bash(&s, &["taskrush", "build", ""]);
    assert!(after.contains(&"test".to_owned()), "{after:?}");
    assert!(!after.contains(&"daemon".to_owned()), "{after:?}");
    assert_eq!(
        complete_bash(&s, &["taskrush", "daemon", "st"]),
        ["start", "stats", "status", "stop"]
    );
    assert_eq!(
        complete_bash(&s, &["taskrush", "--completions", ""]),
        ["bash", "fish", "zsh"]
    );
    let flags = complete_bash(&s, &["taskrush", "--no"]);
    assert_eq!(flags, ["--no-daemon", "--no-deps"]);
    assert!(
        s.daemon_pid().is_some(),
        "the completion started the daemon"
    );
    assert_eq!(starts(&s), 1, "a completion started the plugin");
}

#[test]
fn zsh_and_fish_scripts_are_produced_and_accepted_by_their_shells() {
    let s = Scenario::new();
    for shell in ["zsh", "fish"] {
        let out = s.run(&["--completions", shell]);
        out.success();
        let script = out.stdout();
        assert!(script.contains("--complete-names"), "{script}");
        assert!(script.contains("daemon"), "{script}");
        if have(shell) {
            s.write(&format!("completion.{shell}"), &script);
            s.sh(&format!("{shell} -n completion.{shell}")).success();
        } else {
            println!(
                "skipped: `{shell}` is not installed, its script was not checked by `{shell} -n`"
            );
        }
    }
    s.run(&["--completions", "tcsh"])
        .expect_code(2)
        .expect_stderr_containing("invalid value 'tcsh'");
}

#[test]
fn the_man_page_is_printed_without_a_daemon() {
    let s = Scenario::new();
    let out = s.run(&["--man"]);
    out.success();
    assert!(out.stdout().starts_with(".ie"), "{}", out.stdout());
    assert!(out.stdout().contains(".TH taskrush 1"));
    assert!(!s.socket().exists(), "`--man` started a daemon");
}

/// Whether `tool` can be started.
fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// What bash's completion function offers for `line` (the cursor at its
/// end), with the words split as bash splits them (`:` is one of
/// COMP_WORDBREAKS), and the line as bash leaves it after replacing the
/// text after the last break with the one offer, if only one.
fn complete_bash_line(s: &Scenario, line: &str) -> (Vec<String>, String) {
    let mut words: Vec<String> = Vec::new();
    // `web:b` is `web`, `:`, `b`; `web:` ends with the word `:`.
    for part in line.split(' ') {
        for (i, piece) in part.split(':').enumerate() {
            if i > 0 {
                words.push(":".to_owned());
            }
            if !piece.is_empty() || i == 0 {
                words.push(piece.to_owned());
            }
        }
    }
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    s.write(
        "complete-line.bash",
        format!(
            "eval \"$(taskrush --completions bash)\"\n\
             COMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{line}'\nCOMP_POINT={}\n_taskrush\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            quoted.join(" "),
            words.len() - 1,
            line.len()
        ),
    );
    let out = s.sh("bash complete-line.bash");
    out.success();
    let mut got: Vec<String> = out.stdout().lines().map(str::to_owned).collect();
    got.sort();
    // Bash replaces the text after the last blank or `:` before the cursor.
    let start = line.rfind([' ', ':']).map_or(0, |i| i + 1);
    let completed = match got.as_slice() {
        [one] => format!("{}{one}", &line[..start]),
        _ => line.to_owned(),
    };
    (got, completed)
}

#[test]
fn bash_completes_a_namespaced_task_although_bash_splits_words_at_colons() {
    let s = Scenario::new()
        .rush("tasks:\n  lint:\n    cmd: 'true'\nincludes:\n  web: web\n")
        .file(
            "web/.rush",
            "tasks:\n  build:\n    cmd: 'true'\n  gen:\n    cmd: 'true'\n",
        );
    // COMP_WORDS=(taskrush web : b): the reply replaces `b`.
    let (got, completed) = complete_bash_line(&s, "taskrush web:b");
    assert_eq!(got, ["build"], "after colon trimming");
    assert_eq!(completed, "taskrush web:build");
    let (_, completed) = complete_bash_line(&s, "taskrush run web:g");
    assert_eq!(completed, "taskrush run web:gen");
    // Right after the colon: every task of `web`.
    let (got, _) = complete_bash_line(&s, "taskrush web:");
    assert_eq!(got, ["build", "gen"]);
    // Words without a colon are offered whole.
    let (got, _) = complete_bash_line(&s, "taskrush li");
    assert_eq!(got, ["lint"]);
}
