//! `includes:`: a monorepo's `.rush` split by package, its tasks named
//! `NAMESPACE:TASK`, run in their own directory, reloaded when any of the
//! files changes.

use taskrush_tests::Scenario;

const ROOT: &str = "\
includes:
  web: packages/web
  api: packages/api/.rush
tasks:
  gen:
    cmd: echo gen in $(basename \"$PWD\")
  all:
    depends_on: [web:build]
";

const WEB: &str = "\
tasks:
  build:
    cmd: echo web build in $(basename \"$PWD\")
    depends_on: [lint, api:build]
  lint:
    cmd: echo web lint
";

const API: &str = "\
tasks:
  build:
    cmd: echo api build in $(basename \"$PWD\")
    depends_on: [gen]
";

fn monorepo() -> Scenario {
    Scenario::new()
        .rush(ROOT)
        .file("packages/web/.rush", WEB)
        .file("packages/api/.rush", API)
}

#[test]
fn a_two_package_monorepo_runs_across_files_each_task_in_its_package() {
    // Given a root that includes two packages, whose tasks depend on each
    // other and on the root's,
    let s = monorepo();
    // when I run the root's `all`,
    let out = s.run(&["all"]);
    // every dependency runs first, across files, each task in the
    // directory of the file that defines it.
    out.success();
    out.expect_stdout("web lint\ngen in project\napi build in api\nweb build in web\n");
    // The list names them by namespace.
    s.run(&["--list"])
        .expect_stdout("all        [depends on: web:build]\napi:build  [depends on: gen]\ngen\nweb:build  [depends on: web:lint, api:build]\nweb:lint\n")
        .success();
    // A namespaced task runs by its full name, from a directory below the
    // root (the nearest `.rush` is the root's).
    s.run_with(&["api:build"], |c| {
        c.current_dir(s.project().join("packages"));
    })
    .expect_stdout("gen in project\napi build in api\n")
    .success();
    // The JSON list says where each task is defined and runs.
    let json = s.run(&["--list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&json.stdout()).expect("json");
    let web = list["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "web:build"))
        .expect("web:build")
        .clone();
    assert!(
        web["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("packages/web/.rush")),
        "{web}"
    );
    assert!(
        web["dir"]
            .as_str()
            .is_some_and(|f| f.ends_with("packages/web")),
        "{web}"
    );
    assert_eq!(
        (web["line"].as_u64(), web["column"].as_u64()),
        (Some(2), Some(3))
    );
    // So does its summary.
    let summary = s.run(&["--summary", "web:build"]);
    summary.success();
    assert!(
        summary
            .stdout()
            .contains("depends on: web:lint, api:build\ndir: ")
            && summary.stdout().contains("packages/web/.rush:2:3\n"),
        "{}",
        summary.stdout()
    );
}

#[test]
fn a_root_task_named_like_an_included_one_is_an_error_naming_both() {
    // Given a root task `web:build` and a `build` in the file included as `web`,
    let s = Scenario::new()
        .rush("includes:\n  web: web\ntasks:\n  web:build:\n    cmd: echo root\n")
        .file("web/.rush", "tasks:\n  build:\n    cmd: echo web\n");
    // when I list the tasks,
    let out = s.run(&["--list"]);
    // I am told both definitions, with their positions.
    out.expect_code(1);
    out.expect_stderr(
        "error: task `web:build` is defined twice: `web:build` at `[TMP]/project/.rush:4:3` and `build` of `web` at `[TMP]/project/web/.rush:2:3`\n  --> [TMP]/project/.rush:4:3\nhint: rename one of them, or change the namespace in `includes`\n",
    );
}

#[test]
fn an_include_cycle_is_an_error_showing_the_chain_with_positions() {
    // Given `a` that includes `b`, which includes `a` again,
    let s = Scenario::new()
        .rush("includes:\n  a: a\ntasks: {}\n")
        .file("a/.rush", "tasks: {}\nincludes:\n  b: ../b\n")
        .file("b/.rush", "includes:\n  back: ../a/.rush\ntasks: {}\n");
    // when I list the tasks,
    let out = s.run(&["--list"]);
    // the error shows each include of the cycle, where it is written.
    out.expect_code(1);
    out.expect_stderr(
        "error: include cycle: `[TMP]/project/.rush:2:3` includes `a`, then `[TMP]/project/a/.rush:3:3` includes `b`, then `[TMP]/project/b/.rush:2:3` includes `back`, which is `[TMP]/project/a/.rush` again\n  --> [TMP]/project/b/.rush:2:3\nhint: remove one of these includes\n",
    );
}

#[test]
fn a_broken_included_file_keeps_the_last_good_set_and_names_where_it_broke() {
    // Given a loaded monorepo,
    let s = monorepo();
    s.run(&["--list"]).success();
    let mut ev = s.events();
    // when an included file gets a typo,
    s.write(
        "packages/api/.rush",
        "tasks:\n  build:\n    cmdd: echo api\n",
    );
    // the daemon notices it by itself and keeps the last good tasks,
    let e = ev.wait_kind("config_rejected");
    assert_eq!(e["using_last_valid"], true, "{e}");
    let location = e["location"].as_str().unwrap_or_default();
    assert!(location.ends_with("packages/api/.rush:3:5"), "{e}");
    // and says where the included file broke.
    s.run(&["api:build"])
        .expect_stdout("gen in project\napi build in api\n")
        .expect_stderr("warning: using the last valid config; `[TMP]/project/packages/api/.rush:3:5`: unknown key `cmdd` in task `build`\n")
        .success();
}

#[test]
fn editing_an_included_file_reloads_the_project() {
    // Given a loaded monorepo,
    let s = monorepo();
    s.run(&["--list"]).success();
    let mut ev = s.events();
    // when a task is added to an included file,
    s.write(
        "packages/web/.rush",
        format!("{WEB}  test:\n    cmd: echo web test\n"),
    );
    // the daemon reloads the project by itself,
    let e = ev.wait_for("reload after the included file changed", |e| {
        e["event"] == "config_reloaded"
    });
    assert_eq!(e["tasks"], 6, "{e}");
    // and the new task runs.
    s.run(&["web:test"]).expect_stdout("web test\n").success();
}

#[test]
fn an_included_tasks_dir_dotenv_cache_files_and_outputs_are_relative_to_its_own_file() {
    // Given a package whose task has `dir:`, `dotenv:`, `cache_files` and
    // `outputs`, all written relative to the package's own `.rush`,
    let s = Scenario::new()
        .rush("includes:\n  web: packages/web\ntasks: {}\n")
        .file(
            "packages/web/.rush",
            "tasks:\n  build:\n    dir: app\n    dotenv: [.env]\n    cmd: mkdir -p dist && echo \"$GREETING from $(basename \"$PWD\")\" | tee dist/out.txt\n    cache_files: [\"src/**\"]\n    outputs: [dist]\n",
        )
        .file("packages/web/.env", "GREETING=hello\n")
        .file("packages/web/app/src/main.txt", "v1\n");
    // when I run it, it runs in `packages/web/app` with the package's `.env`,
    s.run(&["web:build"])
        .expect_stdout("hello from app\n")
        .success();
    assert_eq!(
        std::fs::read_to_string(s.project().join("packages/web/app/dist/out.txt")).unwrap(),
        "hello from app\n"
    );
    // its outputs come back from the store when deleted (it does not run),
    std::fs::remove_dir_all(s.project().join("packages/web/app/dist")).unwrap();
    let again = s.run(&["web:build"]);
    again.success();
    assert!(
        again.stderr().contains("is up to date"),
        "{}",
        again.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(s.project().join("packages/web/app/dist/out.txt")).unwrap(),
        "hello from app\n"
    );
    // and an edit of an input below `app/src` runs it again.
    std::fs::write(s.project().join("packages/web/app/src/main.txt"), "v2\n").unwrap();
    s.run(&["web:build"])
        .expect_stdout("hello from app\n")
        .success();
}
