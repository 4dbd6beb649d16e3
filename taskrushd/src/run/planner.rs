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
