//! From "run these tasks" to an ordered plan: the requested tasks and
//! everything they depend on, each once, dependencies first.

use crate::config::config_error::ConfigError;
use crate::config::rush_file::RushFile;

/// One task of a plan; `deps` index into [`Plan::tasks`].
#[derive(Debug, Clone)]
pub(crate) struct PlannedTask {
    pub(crate) name: String,
    pub(crate) deps: Vec<usize>,
}

/// Tasks in a valid execution order (every task after its dependencies).
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub(crate) tasks: Vec<PlannedTask>,
}

impl Plan {
    pub(crate) fn names(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.name.clone()).collect()
    }
}

/// Plan `targets` (in the order given) with their dependencies, depth
/// first, dependencies in declared order. Iterative: a chain of 10,000
/// tasks does not recurse. Cycles were refused when the file was parsed;
/// one here is skipped rather than looped on.
pub(crate) fn plan(file: &RushFile, targets: &[String]) -> Result<Plan, ConfigError> {
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut tasks: Vec<PlannedTask> = Vec::new();
    let mut on_stack: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for target in targets {
        let root = file.task(target)?;
        if index.contains_key(root.name.as_str()) {
            continue;
        }
        // (task, next dependency to visit)
        let mut stack: Vec<(&str, usize)> = vec![(root.name.as_str(), 0)];
        on_stack.insert(root.name.as_str());
        while let Some(&mut (name, ref mut next)) = stack.last_mut() {
            let task = file.task(name)?;
            if let Some(dep) = task.depends_on.get(*next) {
                *next += 1;
                let dep = file.task(dep)?;
                let dep = dep.name.as_str();
                if !index.contains_key(dep) && on_stack.insert(dep) {
                    stack.push((dep, 0));
                }
                continue;
            }
            stack.pop();
            on_stack.remove(name);
            let deps = task
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect();
            index.insert(name, tasks.len());
            tasks.push(PlannedTask {
                name: name.to_owned(),
                deps,
            });
        }
    }
    Ok(Plan { tasks })
}

/// `plan` of the `targets` only (`no_deps`): their dependencies left
/// out, the order between the targets themselves kept.
pub(crate) fn plan_only(file: &RushFile, targets: &[String]) -> Result<Plan, ConfigError> {
    let full = plan(file, targets)?;
    let wanted: std::collections::HashSet<&str> = targets
        .iter()
        .map(|t| file.task(t).map(|t| t.name.as_str()))
        .collect::<Result<_, _>>()?;
    // Old index -> new index, for the tasks kept.
    let mut moved = vec![None; full.tasks.len()];
    let mut tasks = Vec::new();
    for (i, t) in full.tasks.iter().enumerate() {
        if wanted.contains(t.name.as_str()) {
            moved[i] = Some(tasks.len());
            tasks.push(PlannedTask {
                name: t.name.clone(),
                deps: t.deps.iter().filter_map(|d| moved[*d]).collect(),
            });
        }
    }
    Ok(Plan { tasks })
}

/// The plan a run request asks for: with dependencies, or without.
pub(crate) fn plan_for(
    file: &RushFile,
    targets: &[String],
    no_deps: bool,
) -> Result<Plan, ConfigError> {
    if no_deps {
        plan_only(file, targets)
    } else {
        plan(file, targets)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::config_error::ConfigErrorKind;
    use crate::config::rush_file::parse;

    /// A parsed file with `tasks`, each `(name, depends_on)`.
    fn file(tasks: &[(&str, &[&str])]) -> RushFile {
        let mut src = String::from("tasks:\n");
        for (name, deps) in tasks {
            src.push_str(&format!("  {name}:\n    cmd: echo {name}\n"));
            if !deps.is_empty() {
                src.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
            }
        }
        parse(Path::new("/p/.rush"), &src).expect("a valid file")
    }

    fn targets(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The plan as `name<-dep,dep` strings, dependencies by name.
    fn shown(plan: &Plan) -> Vec<String> {
        plan.tasks
            .iter()
            .map(|t| {
                let deps: Vec<&str> = t
                    .deps
                    .iter()
                    .map(|&i| plan.tasks[i].name.as_str())
                    .collect();
                format!("{}<-{}", t.name, deps.join(","))
            })
            .collect()
    }

    #[test]
    fn dependencies_come_first_in_declared_order_depth_first() {
        let f = file(&[
            ("build", &["gen", "lint"]),
            ("gen", &["fetch"]),
            ("lint", &[]),
            ("fetch", &[]),
        ]);
        let plan = plan(&f, &targets(&["build"])).expect("a plan");
        assert_eq!(
            shown(&plan),
            ["fetch<-", "gen<-fetch", "lint<-", "build<-gen,lint"]
        );
    }

    #[test]
    fn a_shared_dependency_is_planned_once() {
        let f = file(&[("a", &["c"]), ("b", &["c"]), ("c", &[])]);
        let plan = plan(&f, &targets(&["a", "b"])).expect("a plan");
        assert_eq!(shown(&plan), ["c<-", "a<-c", "b<-c"]);
    }

    #[test]
    fn targets_keep_their_order_and_each_is_planned_once() {
        let f = file(&[("a", &[]), ("b", &["a"]), ("c", &[])]);
        let plan = plan(&f, &targets(&["c", "b", "a", "c"])).expect("a plan");
        assert_eq!(plan.names(), ["c", "a", "b"]);
    }

    #[test]
    fn an_unknown_target_is_an_unknown_task_error() {
        let f = file(&[("build", &[])]);
        let err = plan(&f, &targets(&["biuld"])).expect_err("no such task");
        assert_eq!(err.kind, ConfigErrorKind::UnknownTask);
        assert_eq!(err.message, "unknown task `biuld`");
    }

    #[test]
    fn a_cycle_that_slipped_past_the_checker_is_skipped_not_looped_on() {
        // The parser refuses cycles; make one behind its back.
        let mut f = file(&[("a", &["b"]), ("b", &[])]);
        f.tasks.get_mut("b").expect("b").depends_on.push("a".into());
        let plan = plan(&f, &targets(&["a"])).expect("a plan");
        assert_eq!(shown(&plan), ["b<-", "a<-b"]);
    }

    #[test]
    fn a_long_chain_is_planned_without_recursion() {
        let mut f = file(&[("t0", &[])]);
        let template = f.tasks["t0"].clone();
        let n = 10_000;
        for i in 1..n {
            let mut t = template.clone();
            t.name = format!("t{i}");
            t.depends_on = vec![format!("t{}", i - 1)];
            f.tasks.insert(t.name.clone(), t);
        }
        let plan = plan(&f, &targets(&[&format!("t{}", n - 1)])).expect("a plan");
        assert_eq!(plan.tasks.len(), n);
        assert!(
            plan.tasks
                .iter()
                .enumerate()
                .all(|(i, t)| t.name == format!("t{i}")
                    && t.deps == (i > 0).then(|| i - 1).into_iter().collect::<Vec<_>>())
        );
    }
}
