//! The process room: starting, signalling and outliving processes.
//!
//! Owns the one place where task and plugin processes are started and
//! stopped (`spawn`: working directory, environment from scratch, process
//! group, kill on drop, the open-file limit), the watchdog process that
//! ends registered process groups when the daemon dies (`watchdog`) and
//! the plugin sandbox, a helper mode of the daemon's binary (`sandbox`),
//! and a cgroup v2 per plugin for its memory and process limits (`cgroup`).
//!
//! Architecture invariants:
//! - No other module spawns a process.
//! - A task's environment never includes the daemon's own.

pub(crate) mod cgroup;
#[cfg(target_os = "linux")]
pub(crate) mod sandbox;
/// No sandbox off Linux: plugins run with what can be enforced (their
/// environment), and say so.
#[cfg(not(target_os = "linux"))]
pub(crate) mod sandbox {
    #[derive(Debug, Clone, Default, PartialEq)]
    pub(crate) struct Spec {
        pub(crate) read: Vec<std::path::PathBuf>,
        pub(crate) write: Vec<std::path::PathBuf>,
        pub(crate) exec: Vec<std::path::PathBuf>,
        pub(crate) network: bool,
        pub(crate) proxy_port: Option<u16>,
        pub(crate) landlock: bool,
        pub(crate) parent: u32,
        pub(crate) fd_limit: Option<u64>,
        pub(crate) open_files: Option<u64>,
        pub(crate) cgroup: Option<std::path::PathBuf>,
    }
    pub(crate) fn landlock_level() -> Result<bool, String> {
        Err("no sandbox on this operating system (Linux only)".to_owned())
    }
    pub(crate) fn landlock_tcp() -> Result<(), String> {
        landlock_level().map(|_| ())
    }
}
pub(crate) mod spawn;
pub(crate) mod watchdog;
