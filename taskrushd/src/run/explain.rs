//! `run --explain` and `run --dry-run`: per task of a plan, whether it
//! would run now and why, without running anything (no task, no hook, no
//! plugin started, nothing claimed or invalidated in the cache).
//!
//! Why comes from comparing the task's recipe and input files with what
//! its last successful run saw (`InputsRecord`, stored beside its entry in
//! `.rush-cache/`): the first few changed input files, the command, the
//! task's `dir`, its arguments, the `env` names whose values changed and
//! the dotenv files that changed (never the values), the patterns.

use std::collections::BTreeMap;
use std::sync::Arc;

use taskrush_protocol::daemon::TaskExplained;

use crate::cache::outputs;
use crate::cache::store::{CacheStore, InputsRecord};
use crate::cache::up_to_date::{Recipe, UpToDate};
use crate::config::rush_file::RushFile;
use crate::run::planner::Plan;
use crate::run::runner::{env_pairs, output_base, read_dotenv, task_command_line, task_env};

/// Changed files named before "and N more".
const FILES_NAMED: usize = 3;

/// Explains each task of `plan`, in order.
pub(crate) async fn explain(
    config: &RushFile,
    plan: &Plan,
    client_env: &BTreeMap<String, String>,
    force: bool,
    args: Option<&(String, Vec<String>)>,
    up_to_date: &Arc<UpToDate>,
) -> Vec<TaskExplained> {
    let mut out = Vec::with_capacity(plan.tasks.len());
    for planned in &plan.tasks {
        let name = planned.name.clone();
        let Some(task) = config.tasks.get(&name) else {
            continue;
        };
        let (would_run, reasons) =
            if task.cmd.is_none() && task.before.is_none() && task.after.is_none() {
                (
                    false,
                    vec!["no command: only its dependencies run".to_owned()],
                )
            } else if force {
                (true, vec!["forced (--force)".to_owned()])
            } else if task.cache_files.is_empty() {
                (
                    true,
                    vec!["no `cache_files`: not cached, it runs every time".to_owned()],
                )
            } else {
                // The same recipe as the runner's: arguments, `dir` and
                // `dotenv` files included.
                let args: &[String] = match args {
                    Some((to, args)) if *to == name => args,
                    _ => &[],
                };
                let dotenv = match read_dotenv(config, task).await {
                    Ok(loaded) => loaded,
                    Err(failure) => {
                        out.push(TaskExplained {
                            task: name,
                            would_run: true,
                            reasons: vec![failure.to_string()],
                        });
                        continue;
                    }
                };
                match task_env(task, client_env, &dotenv.vars) {
                    Err(failure) => (true, vec![failure.to_string()]),
                    Ok(env) => {
                        let (cache_root, patterns) =
                            task.cache_root_and_patterns(&config.root, &task.cache_files);
                        let recipe = Recipe {
                            root: cache_root,
                            task: task.name.clone(),
                            cmd: task_command_line(task, args),
                            env: env_pairs(task, &env, dotenv.key),
                            patterns: patterns.into(),
                        };
                        why(recipe, task, up_to_date, config).await
                    }
                }
            };
        out.push(TaskExplained {
            task: name,
            would_run,
            reasons,
        });
    }
    out
}

/// A cached task: up to date, to restore, or to run and why.
async fn why(
    recipe: Recipe,
    task: &crate::config::rush_file::Task,
    up_to_date: &Arc<UpToDate>,
    config: &RushFile,
) -> (bool, Vec<String>) {
    let key = match up_to_date.key(&recipe).await {
        Ok(key) => key,
        Err(e) => return (true, vec![format!("cannot check the cache: {e}")]),
    };
    let store = CacheStore::new(&recipe.root);
    if !task.outputs.is_empty() {
        let outputs_store = up_to_date.outputs.clone();
        let base = output_base(&config.root, task);
        let found = tokio::task::spawn_blocking(move || {
            let manifest = outputs_store.peek_manifest(&key)?;
            let stale: Vec<String> = outputs::stale_outputs(&base, &manifest)
                .iter()
                .map(|o| o.path().to_owned())
                .collect();
            Some(stale)
        })
        .await
        .ok()
        .flatten();
        match found {
            Some(stale) if stale.is_empty() => return (false, vec!["up to date".to_owned()]),
            Some(stale) => {
                return (
                    false,
                    vec![format!(
                        "{} missing or changed: restored from the cache, not run",
                        name_files("output", &stale)
                    )],
                );
            }
            None => {}
        }
    } else if store.load(&recipe.task).as_ref() == Some(&key) {
        return (false, vec!["up to date".to_owned()]);
    }
    let Some(last) = store.load_inputs(&recipe.task) else {
        return (
            true,
            vec!["no successful run recorded in this checkout".to_owned()],
        );
    };
    let now = match up_to_date.inputs_record(recipe).await {
        Ok(now) => now,
        Err(e) => return (true, vec![format!("cannot check the cache: {e}")]),
    };
    let mut reasons = differences(&last, &now);
    if reasons.is_empty() {
        reasons.push(if task.outputs.is_empty() {
            "its last run failed or was cancelled since its last success".to_owned()
        } else {
            "its outputs are not in the output store (evicted, pruned, or never stored)".to_owned()
        });
    }
    (true, reasons)
}

/// "output `a`", "3 outputs (`a`, `b`, `c`)", "5 outputs (`a`, `b`, `c` and 2 more)".
fn name_files(what: &str, paths: &[String]) -> String {
    let named: Vec<String> = paths
        .iter()
        .take(FILES_NAMED)
        .map(|p| format!("`{p}`"))
        .collect();
    match paths.len() {
        1 => format!("{what} {}", named[0]),
        n if n <= FILES_NAMED => format!("{n} {what}s ({})", named.join(", ")),
        n => format!(
            "{n} {what}s ({} and {} more)",
            named.join(", "),
            n - FILES_NAMED
        ),
    }
}

/// What differs between the last successful run and now: names only.
fn differences(last: &InputsRecord, now: &InputsRecord) -> Vec<String> {
    let mut reasons = Vec::new();
    if last.cmd != now.cmd {
        reasons.push("the command changed".to_owned());
    }
    if last.dir != now.dir {
        reasons.push("the task's dir changed".to_owned());
    }
    if last.args != now.args {
        reasons.push("the arguments changed".to_owned());
    }
    let mut names: Vec<&String> = last.env.keys().chain(now.env.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if last.env.get(name) != now.env.get(name) {
            // The key names a dotenv file `dotenv PATH` (no variable has a
            // space in its name).
            reasons.push(match name.strip_prefix("dotenv ") {
                Some(path) => format!("dotenv file `{path}` changed"),
                None => format!("environment variable `{name}` changed"),
            });
        }
    }
    if last.patterns != now.patterns {
        reasons.push("its `cache_files` changed".to_owned());
    }
    let mut changed = Vec::new();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for (path, hash) in &now.files {
        match last.files.get(path) {
            None => added.push(path.clone()),
            Some(before) if before != hash => {
                if hash.is_none() {
                    removed.push(path.clone());
                } else {
                    changed.push(path.clone());
                }
            }
            Some(_) => {}
        }
    }
    for path in last.files.keys() {
        if !now.files.contains_key(path) {
            removed.push(path.clone());
        }
    }
    if !changed.is_empty() {
        reasons.push(format!("{} changed", name_files("input", &changed)));
    }
    if !added.is_empty() {
        reasons.push(format!("{} added", name_files("input", &added)));
    }
    if !removed.is_empty() {
        reasons.push(format!("{} removed", name_files("input", &removed)));
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_files_and_environment_names_never_values() {
        let mut last = InputsRecord::default();
        last.env.insert("TOKEN".into(), "aaa".into());
        last.env.insert("dotenv .env.local".into(), "h1".into());
        last.files.insert("src/a.c".into(), Some("1".into()));
        last.files.insert("src/gone.c".into(), Some("1".into()));
        let mut now = last.clone();
        now.cmd = "other".into();
        now.dir = "d".into();
        now.args = "a".into();
        now.env.insert("TOKEN".into(), "bbb".into());
        now.env.insert("dotenv .env.local".into(), "h2".into());
        now.files.insert("src/a.c".into(), Some("2".into()));
        now.files.remove("src/gone.c");
        now.files.insert("src/new.c".into(), Some("3".into()));
        assert_eq!(
            differences(&last, &now),
            [
                "the command changed",
                "the task's dir changed",
                "the arguments changed",
                "environment variable `TOKEN` changed",
                "dotenv file `.env.local` changed",
                "input `src/a.c` changed",
                "input `src/new.c` added",
                "input `src/gone.c` removed",
            ]
        );
        let many: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        assert_eq!(
            name_files("input", &many),
            "5 inputs (`f0`, `f1`, `f2` and 2 more)"
        );
    }
}
