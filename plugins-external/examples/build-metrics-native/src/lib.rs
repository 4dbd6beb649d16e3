//! A build-metrics collector: `after_task` records each task's duration
//! and status, per run; the `build-metrics` command prints the durations
//! of the last run, and, from the project's task graph (the `task_graph`
//! host call), each task's dependencies and the critical path through
//! that run: the chain of `depends_on` whose durations add up the most.
//! One crate, every kind of plugin: a `cdylib` (native), `wasm32-wasip1`
//! (WebAssembly) and the `build-metrics` binary (an external process).

use std::collections::BTreeMap;
use std::fmt::Write;

use taskrush_plugin::protocol::host::{TaskGraphResult, method};
use taskrush_plugin::{
    CommandResult, Hook, Host, InitializeParams, PluginCommand, Result, TaskContext, TaskResult,
    TaskRushPlugin, TaskStatus, export_plugin,
};

/// One task as it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub run_id: u64,
    pub task: String,
    pub duration_ms: u64,
    pub status: TaskStatus,
    pub cached: bool,
}

#[derive(Default)]
pub struct BuildMetrics {
    records: Vec<Record>,
}

/// The critical path through `ran` (task → its duration) along the
/// graph's dependency edges: the tasks in run order and their total.
/// Ties go to the longer chain, then to the first name.
pub fn critical_path(graph: &TaskGraphResult, ran: &BTreeMap<String, u64>) -> (Vec<String>, u64) {
    // Longest path ending at each task (memoised; the graph is acyclic,
    // the host refuses cycles, but a visiting set guards anyway).
    fn best(
        t: &str,
        graph: &TaskGraphResult,
        ran: &BTreeMap<String, u64>,
        memo: &mut BTreeMap<String, (Vec<String>, u64)>,
        visiting: &mut Vec<String>,
    ) -> (Vec<String>, u64) {
        if let Some(b) = memo.get(t) {
            return b.clone();
        }
        visiting.push(t.to_owned());
        let mut before: (Vec<String>, u64) = (Vec::new(), 0);
        let deps = graph
            .tasks
            .get(t)
            .map(|g| g.deps.clone())
            .unwrap_or_default();
        for d in deps {
            if !ran.contains_key(&d) || visiting.contains(&d) {
                continue;
            }
            let c = best(&d, graph, ran, memo, visiting);
            if (c.1, c.0.len()) > (before.1, before.0.len()) {
                before = c;
            }
        }
        visiting.pop();
        before.0.push(t.to_owned());
        before.1 += ran.get(t).copied().unwrap_or(0);
        memo.insert(t.to_owned(), before.clone());
        before
    }
    let mut memo = BTreeMap::new();
    let mut out: (Vec<String>, u64) = (Vec::new(), 0);
    for t in ran.keys() {
        let c = best(t, graph, ran, &mut memo, &mut Vec::new());
        if (c.1, c.0.len()) > (out.1, out.0.len()) {
            out = c;
        }
    }
    out
}

impl BuildMetrics {
    /// The records of the last run seen.
    fn last_run(&self) -> Vec<&Record> {
        let last = self.records.iter().map(|r| r.run_id).max();
        self.records
            .iter()
            .filter(|r| Some(r.run_id) == last)
            .collect()
    }

    /// The summary `build-metrics` prints: the last run's totals and its
    /// tasks slowest first; with the task graph, each task's dependencies
    /// and the critical path.
    pub fn summary(&self, graph: std::result::Result<&TaskGraphResult, &str>) -> String {
        let run = self.last_run();
        let failed = run
            .iter()
            .filter(|r| r.status == TaskStatus::Failed)
            .count();
        let total: u64 = run.iter().map(|r| r.duration_ms).sum();
        let mut out = format!(
            "build metrics: {} tasks, {failed} failed, {total} ms in all\n",
            run.len()
        );
        let mut sorted = run.clone();
        sorted.sort_by(|a, b| b.duration_ms.cmp(&a.duration_ms).then(a.task.cmp(&b.task)));
        for r in &sorted {
            let status = match (r.status, r.cached) {
                (_, true) => "cached",
                (TaskStatus::Success, _) => "success",
                (TaskStatus::Failed, _) => "failed",
                _ => "cancelled",
            };
            let _ = writeln!(out, "  {:<20} {:>8} ms  {status}", r.task, r.duration_ms);
        }
        let graph = match graph {
            Ok(g) => g,
            Err(why) => {
                let _ = writeln!(out, "(no task graph: {why})");
                return out;
            }
        };
        let _ = writeln!(out, "task graph: {} tasks", graph.tasks.len());
        for (name, t) in &graph.tasks {
            let deps = if t.deps.is_empty() {
                "no dependencies".to_owned()
            } else {
                format!("depends on {}", t.deps.join(", "))
            };
            let _ = writeln!(out, "  {name:<20} {deps}");
        }
        let ran: BTreeMap<String, u64> = run
            .iter()
            .map(|r| (r.task.clone(), r.duration_ms))
            .collect();
        let (path, ms) = critical_path(graph, &ran);
        if path.is_empty() {
            out.push_str("critical path: no run seen yet\n");
        } else {
            let _ = writeln!(out, "critical path: {} ({ms} ms)", path.join(" -> "));
        }
        out
    }
}

impl TaskRushPlugin for BuildMetrics {
    fn name(&self) -> &str {
        "build-metrics"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::AfterTask]
    }

    fn initialize(&mut self, _params: &InitializeParams, host: &mut Host) -> Result {
        host.debug("build-metrics ready");
        Ok(())
    }

    fn after_task(&mut self, ctx: &TaskContext, result: &TaskResult, _host: &mut Host) -> Result {
        self.records.push(Record {
            run_id: ctx.run_id,
            task: ctx.task_name.clone(),
            duration_ms: result.duration_ms,
            status: result.status,
            cached: result.cached,
        });
        Ok(())
    }

    fn commands(&self) -> Vec<PluginCommand> {
        vec![PluginCommand {
            name: "build-metrics".into(),
            description: "Durations of the last run, the task graph and its critical path".into(),
        }]
    }

    fn command(
        &mut self,
        _name: &str,
        _args: &[String],
        _cwd: &str,
        host: &mut Host,
    ) -> Result<CommandResult> {
        // The project as written, read when asked: the `.rush` may have
        // changed since the run.
        let graph = if host.offers(method::TASK_GRAPH) {
            host.task_graph().map_err(|e| e.to_string())
        } else {
            Err("the host does not offer `task_graph`".to_owned())
        };
        Ok(CommandResult {
            stdout: self.summary(graph.as_ref().map_err(String::as_str)),
            ..CommandResult::default()
        })
    }
}

export_plugin!(BuildMetrics);

#[cfg(test)]
mod tests {
    use super::*;
    use taskrush_plugin::protocol::host::GraphTask;

    fn ran(m: &mut BuildMetrics, run_id: u64, tasks: &[(&str, u64, TaskStatus)]) {
        let mut host = Host::detached();
        for (task, ms, status) in tasks {
            let ctx = TaskContext {
                task_name: (*task).into(),
                command: String::new(),
                working_dir: "/p".into(),
                env_vars: Default::default(),
                config: Default::default(),
                run_id,
            };
            let result = TaskResult {
                status: *status,
                exit_code: None,
                duration_ms: *ms,
                cached: false,
            };
            m.after_task(&ctx, &result, &mut host).unwrap();
        }
    }

    fn graph(tasks: &[(&str, &[&str])]) -> TaskGraphResult {
        let mut g = TaskGraphResult::default();
        for (name, deps) in tasks {
            g.tasks.insert(
                (*name).into(),
                GraphTask {
                    deps: deps.iter().map(|d| (*d).to_owned()).collect(),
                    ..GraphTask::default()
                },
            );
        }
        g
    }

    #[test]
    fn the_summary_counts_failures_of_the_last_run_and_lists_the_slowest_task_first() {
        let mut m = BuildMetrics::default();
        ran(&mut m, 1, &[("old", 900, TaskStatus::Success)]);
        ran(
            &mut m,
            2,
            &[
                ("lint", 5, TaskStatus::Success),
                ("test", 40, TaskStatus::Failed),
            ],
        );
        let s = m.summary(Err("none"));
        assert!(
            s.starts_with("build metrics: 2 tasks, 1 failed, 45 ms in all\n"),
            "{s}"
        );
        assert!(s.find("test").unwrap() < s.find("lint").unwrap(), "{s}");
        assert!(!s.contains("old"), "{s}");
    }

    #[test]
    fn the_critical_path_is_the_heaviest_chain_of_dependencies_that_ran() {
        // compile(10) -> test(5) and gen(30) -> package(1), test
        let g = graph(&[
            ("compile", &[]),
            ("gen", &[]),
            ("test", &["compile"]),
            ("package", &["gen", "test"]),
            ("docs", &[]),
        ]);
        let ran: BTreeMap<String, u64> =
            [("compile", 10), ("gen", 30), ("test", 25), ("package", 1)]
                .into_iter()
                .map(|(t, ms)| (t.to_owned(), ms))
                .collect();
        let (path, ms) = critical_path(&g, &ran);
        assert_eq!(path, ["compile", "test", "package"]);
        assert_eq!(ms, 36);
    }

    #[test]
    fn with_the_graph_the_summary_names_each_tasks_dependencies_and_the_critical_path() {
        let mut m = BuildMetrics::default();
        ran(
            &mut m,
            7,
            &[
                ("compile", 0, TaskStatus::Success),
                ("test", 0, TaskStatus::Success),
            ],
        );
        let s = m.summary(Ok(&graph(&[("compile", &[]), ("test", &["compile"])])));
        assert!(s.contains("task graph: 2 tasks\n"), "{s}");
        assert!(
            s.contains("  compile              no dependencies\n"),
            "{s}"
        );
        assert!(
            s.contains("  test                 depends on compile\n"),
            "{s}"
        );
        assert!(s.contains("critical path: compile -> test (0 ms)\n"), "{s}");
    }
}
