//! The scheduling of a run, without processes: which task may start next
//! (its dependencies succeeded, fewer than `-j` are running, nothing failed,
//! the run is not cancelled) and how the run ends. The runner drives it:
//! it starts what [`Schedule::next`] gives and reports back with
//! [`Schedule::finished`].

use std::collections::VecDeque;

use taskrush_protocol::run::{EXIT_CANCELLED, RunStatus, TaskStatus};

use crate::run::planner::Plan;

/// What stops a run from starting new tasks: the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// This task (an index into the plan) failed with this exit status.
    Task(usize, i32),
    /// A task's runner itself failed (it panicked).
    Internal,
}

/// The state of a run's tasks: waiting, ready, running, done.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Per task, how many of its dependencies have not succeeded yet.
    waiting_on: Vec<usize>,
    /// Per task, the tasks that depend on it.
    dependents: Vec<Vec<usize>>,
    /// Tasks whose dependencies all succeeded, in the order they became
    /// ready (the plan's order at first).
    ready: VecDeque<usize>,
    running: usize,
    /// At most this many tasks run at once (at least 1).
    jobs: usize,
    failed: Option<Failed>,
    cancelled: bool,
}

impl Schedule {
    /// `cancelled`: the run was cancelled before it started.
    pub(crate) fn new(plan: &Plan, jobs: usize, cancelled: bool) -> Schedule {
        let n = plan.tasks.len();
        let waiting_on: Vec<usize> = plan.tasks.iter().map(|t| t.deps.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, t) in plan.tasks.iter().enumerate() {
            for &d in &t.deps {
                dependents[d].push(i);
            }
        }
        let ready = (0..n).filter(|&i| waiting_on[i] == 0).collect();
        Schedule {
            waiting_on,
            dependents,
            ready,
            running: 0,
            jobs: jobs.max(1),
            failed: None,
            cancelled,
        }
    }

    /// The next task to start now, counted as running; `None` while `-j`
    /// tasks run, once a task failed or the run is cancelled, or when no
    /// task is ready.
    pub(crate) fn next(&mut self) -> Option<usize> {
        if self.failed.is_some() || self.cancelled || self.running >= self.jobs {
            return None;
        }
        let i = self.ready.pop_front()?;
        self.running += 1;
        Some(i)
    }

    /// Task `i` (given by [`next`](Self::next)) ended: a success makes its
    /// dependents ready once their other dependencies succeeded too; the
    /// first failure stops new tasks; a cancelled task cancels the run.
    pub(crate) fn finished(&mut self, i: usize, status: TaskStatus, exit_code: i32) {
        self.running = self.running.saturating_sub(1);
        match status {
            TaskStatus::Success => {
                for &d in &self.dependents[i] {
                    self.waiting_on[d] -= 1;
                    if self.waiting_on[d] == 0 {
                        self.ready.push_back(d);
                    }
                }
            }
            TaskStatus::Failed => {
                self.failed.get_or_insert(Failed::Task(i, exit_code));
            }
            TaskStatus::Cancelled => self.cancelled = true,
        }
    }

    /// A task's runner failed without saying which task it ran: the run
    /// fails (if nothing failed before).
    pub(crate) fn lost(&mut self) {
        self.running = self.running.saturating_sub(1);
        self.failed.get_or_insert(Failed::Internal);
    }

    /// The run is being cancelled: no new task starts.
    pub(crate) fn cancel(&mut self) {
        self.cancelled = true;
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// How the run ended: its status, exit status and the task that failed
    /// it. A cancelled run is cancelled even if a task failed first.
    pub(crate) fn end(&self, plan: &Plan) -> (RunStatus, i32, Option<String>) {
        if self.cancelled {
            return (RunStatus::Cancelled, EXIT_CANCELLED, None);
        }
        match self.failed {
            Some(Failed::Task(i, code)) => {
                (RunStatus::Failed, code, Some(plan.tasks[i].name.clone()))
            }
            Some(Failed::Internal) => (RunStatus::Failed, 1, Some("<internal>".into())),
            None => (RunStatus::Success, 0, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::planner::PlannedTask;

    /// A plan of `(name, dependencies by index)`, in that order.
    fn plan(tasks: &[(&str, &[usize])]) -> Plan {
        Plan {
            tasks: tasks
                .iter()
                .map(|(name, deps)| PlannedTask {
                    name: (*name).into(),
                    deps: deps.to_vec(),
                })
                .collect(),
        }
    }

    /// Every task that may start now, by name.
    fn start_all(s: &mut Schedule, p: &Plan) -> Vec<String> {
        std::iter::from_fn(|| s.next())
            .map(|i| p.tasks[i].name.clone())
            .collect()
    }

    fn index(p: &Plan, name: &str) -> usize {
        p.tasks.iter().position(|t| t.name == name).unwrap()
    }

    fn ok(s: &mut Schedule, p: &Plan, name: &str) {
        s.finished(index(p, name), TaskStatus::Success, 0);
    }

    #[test]
    fn a_task_starts_only_after_all_its_dependencies_succeeded() {
        // a, b <- d; c <- d; d <- e (a diamond with a tail)
        let p = plan(&[
            ("a", &[]),
            ("b", &[0]),
            ("c", &[0]),
            ("d", &[1, 2]),
            ("e", &[3]),
        ]);
        let mut s = Schedule::new(&p, 8, false);
        assert_eq!(start_all(&mut s, &p), ["a"]);
        ok(&mut s, &p, "a");
        assert_eq!(start_all(&mut s, &p), ["b", "c"]);
        ok(&mut s, &p, "c");
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        ok(&mut s, &p, "b");
        assert_eq!(start_all(&mut s, &p), ["d"]);
        ok(&mut s, &p, "d");
        assert_eq!(start_all(&mut s, &p), ["e"]);
        ok(&mut s, &p, "e");
        assert_eq!(s.end(&p), (RunStatus::Success, 0, None));
    }

    #[test]
    fn independent_tasks_start_in_plan_order_at_most_j_at_a_time() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[]), ("e", &[])]);
        let mut s = Schedule::new(&p, 2, false);
        assert_eq!(start_all(&mut s, &p), ["a", "b"]);
        ok(&mut s, &p, "b");
        assert_eq!(start_all(&mut s, &p), ["c"]);
        ok(&mut s, &p, "a");
        ok(&mut s, &p, "c");
        assert_eq!(start_all(&mut s, &p), ["d", "e"]);
    }

    #[test]
    fn zero_jobs_means_one_at_a_time() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let mut s = Schedule::new(&p, 0, false);
        assert_eq!(start_all(&mut s, &p), ["a"]);
        ok(&mut s, &p, "a");
        assert_eq!(start_all(&mut s, &p), ["b"]);
    }

    #[test]
    fn the_first_failure_stops_new_tasks_and_fails_the_run_with_its_exit_status() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[0])]);
        let mut s = Schedule::new(&p, 2, false);
        assert_eq!(start_all(&mut s, &p), ["a", "b"]);
        s.finished(index(&p, "b"), TaskStatus::Failed, 3);
        // `c` was ready and a slot is free, but nothing new starts.
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        // The task still running ends as it ends; a later failure does not
        // replace the first.
        s.finished(index(&p, "a"), TaskStatus::Failed, 7);
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        assert_eq!(s.end(&p), (RunStatus::Failed, 3, Some("b".into())));
    }

    #[test]
    fn the_dependents_of_a_failed_task_never_start() {
        let p = plan(&[("a", &[]), ("b", &[0])]);
        let mut s = Schedule::new(&p, 4, false);
        assert_eq!(start_all(&mut s, &p), ["a"]);
        s.finished(0, TaskStatus::Failed, 1);
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        assert_eq!(s.end(&p), (RunStatus::Failed, 1, Some("a".into())));
    }

    #[test]
    fn a_lost_task_runner_fails_the_run_as_internal() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let mut s = Schedule::new(&p, 1, false);
        assert_eq!(start_all(&mut s, &p), ["a"]);
        s.lost();
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        assert_eq!(s.end(&p), (RunStatus::Failed, 1, Some("<internal>".into())));
    }

    #[test]
    fn cancelling_stops_new_tasks_and_wins_over_a_failure() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &[])]);
        let mut s = Schedule::new(&p, 1, false);
        assert_eq!(start_all(&mut s, &p), ["a"]);
        s.cancel();
        assert!(s.is_cancelled());
        s.finished(0, TaskStatus::Failed, 2);
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        assert_eq!(s.end(&p), (RunStatus::Cancelled, EXIT_CANCELLED, None));
    }

    #[test]
    fn a_cancelled_task_cancels_the_run() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let mut s = Schedule::new(&p, 1, false);
        assert_eq!(start_all(&mut s, &p), ["a"]);
        s.finished(0, TaskStatus::Cancelled, EXIT_CANCELLED);
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        assert_eq!(s.end(&p), (RunStatus::Cancelled, EXIT_CANCELLED, None));
    }

    #[test]
    fn a_run_cancelled_before_it_starts_starts_nothing() {
        let p = plan(&[("a", &[])]);
        let mut s = Schedule::new(&p, 4, true);
        assert_eq!(start_all(&mut s, &p), Vec::<String>::new());
        assert_eq!(s.end(&p), (RunStatus::Cancelled, EXIT_CANCELLED, None));
    }

    #[test]
    fn an_empty_plan_succeeds_at_once() {
        let p = plan(&[]);
        let mut s = Schedule::new(&p, 4, false);
        assert_eq!(s.next(), None);
        assert_eq!(s.end(&p), (RunStatus::Success, 0, None));
    }
}
