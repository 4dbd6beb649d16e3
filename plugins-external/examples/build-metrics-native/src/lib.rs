//! A build-metrics collector: `after_task` records each task's duration
//! and status; the `build-metrics` command prints a summary. One crate,
//! every kind of plugin: a `cdylib` (native), `wasm32-wasip1` (WebAssembly)
//! and the `build-metrics` binary (an external process).

use std::fmt::Write;

use taskrush_plugin::{
    CommandResult, Hook, Host, InitializeParams, PluginCommand, Result, TaskContext, TaskResult,
    TaskRushPlugin, TaskStatus, export_plugin,
};

/// One task as it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub task: String,
    pub duration_ms: u64,
    pub status: TaskStatus,
    pub cached: bool,
}

#[derive(Default)]
pub struct BuildMetrics {
    records: Vec<Record>,
}

impl BuildMetrics {
    /// The summary `build-metrics` prints: totals, then the tasks slowest
    /// first.
    pub fn summary(&self) -> String {
        let failed = self
            .records
            .iter()
            .filter(|r| r.status == TaskStatus::Failed)
            .count();
        let total: u64 = self.records.iter().map(|r| r.duration_ms).sum();
        let mut out = format!(
            "build metrics: {} tasks, {failed} failed, {total} ms in all\n",
            self.records.len()
        );
        let mut sorted = self.records.clone();
        sorted.sort_by(|a, b| b.duration_ms.cmp(&a.duration_ms).then(a.task.cmp(&b.task)));
        for r in sorted {
            let status = match (r.status, r.cached) {
                (_, true) => "cached",
                (TaskStatus::Success, _) => "success",
                (TaskStatus::Failed, _) => "failed",
                _ => "cancelled",
            };
            let _ = writeln!(out, "  {:<20} {:>8} ms  {status}", r.task, r.duration_ms);
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
        // TASK_GRAPH (issue 14, host calls): once the host offers the
        // `task_graph` host call (`host_methods` in `initialize`), read the
        // project's task graph here to report the critical path (the
        // longest chain of `depends_on`) beside the durations. Until then
        // the summary lists the tasks that ran.
        host.debug("build-metrics ready");
        Ok(())
    }

    fn after_task(&mut self, ctx: &TaskContext, result: &TaskResult, _host: &mut Host) -> Result {
        self.records.push(Record {
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
            description: "Durations of the tasks run since the plugin started".into(),
        }]
    }

    fn command(
        &mut self,
        _name: &str,
        _args: &[String],
        _cwd: &str,
        _host: &mut Host,
    ) -> Result<CommandResult> {
        Ok(CommandResult {
            stdout: self.summary(),
            ..CommandResult::default()
        })
    }
}

export_plugin!(BuildMetrics);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_failures_and_lists_the_slowest_task_first() {
        let mut m = BuildMetrics::default();
        let mut host = Host::detached();
        for (task, ms, status) in [
            ("lint", 5, TaskStatus::Success),
            ("test", 40, TaskStatus::Failed),
        ] {
            let ctx = TaskContext {
                task_name: task.into(),
                command: String::new(),
                working_dir: "/p".into(),
                env_vars: Default::default(),
                config: Default::default(),
                run_id: 1,
            };
            let result = TaskResult {
                status,
                exit_code: None,
                duration_ms: ms,
                cached: false,
            };
            m.after_task(&ctx, &result, &mut host).unwrap();
        }
        let s = m.summary();
        assert!(
            s.starts_with("build metrics: 2 tasks, 1 failed, 45 ms in all\n"),
            "{s}"
        );
        assert!(s.find("test").unwrap() < s.find("lint").unwrap(), "{s}");
    }
}
