//! The plugin sandbox: `taskrushd --sandbox-exec SPEC -- ARGV…`, a helper
//! mode of the daemon's own binary that restricts itself, then execs the
//! plugin (Linux).
//!
//! The daemon is multi-threaded, so nothing is done between its fork and
//! exec: plugins are started with `posix_spawn` of `/proc/self/exe` in
//! this mode, which runs single-threaded before tokio or tracing start
//! and, in safe Rust: sets the parent-death signal (and checks the parent
//! is still the daemon), joins the plugin's cgroup when it has one, sets
//! the open-file limit (soft and hard), drops every
//! capability when root, applies a Landlock ruleset (file system rights,
//! TCP bind/connect, scopes) and a seccomp filter on `socket()`, then
//! execs the plugin with the environment the daemon gave it.
//!
//! On a failure it writes one line on stderr, `taskrush sandbox: …`, and
//! exits with [`EXIT_SANDBOX`]. The achieved level is computed by the
//! daemon beforehand ([`landlock_level`]), so nothing needs reporting back.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

/// The helper mode's flag (first argument).
pub(crate) const FLAG: &str = "--sandbox-exec";

/// Exit code of the helper when it could not restrict itself or exec.
pub(crate) const EXIT_SANDBOX: u8 = 125;

/// Test switch: with `TASKRUSH_SANDBOX_NO_LANDLOCK=1` in the daemon's
/// environment, Landlock counts as unavailable (nothing is applied).
pub(crate) const ENV_NO_LANDLOCK: &str = "TASKRUSH_SANDBOX_NO_LANDLOCK";

/// What the helper applies before exec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Spec {
    /// Read-only (files and directories beneath).
    pub(crate) read: Vec<PathBuf>,
    /// Read-write (all but execute).
    pub(crate) write: Vec<PathBuf>,
    /// Read and execute.
    pub(crate) exec: Vec<PathBuf>,
    /// Internet TCP allowed (else `socket(AF_INET*)` is refused).
    pub(crate) network: bool,
    /// The plugin's network proxy (127.0.0.1): with Landlock, the only
    /// port TCP may connect to.
    #[serde(default)]
    pub(crate) proxy_port: Option<u16>,
    /// Apply Landlock (false when it is unavailable or switched off).
    pub(crate) landlock: bool,
    /// The daemon's pid: the helper dies with it.
    pub(crate) parent: u32,
    /// The soft `RLIMIT_NOFILE` to put back.
    pub(crate) fd_limit: Option<u64>,
    /// `RLIMIT_NOFILE`, soft and hard (in place of `fd_limit`).
    #[serde(default)]
    pub(crate) open_files: Option<u64>,
    /// The cgroup (v2) to join before exec.
    #[serde(default)]
    pub(crate) cgroup: Option<PathBuf>,
}

/// Run the helper mode when the arguments ask for it; the exit code then.
pub(crate) fn run_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != FLAG {
        return None;
    }
    let spec = args.next().and_then(|s| s.into_string().ok());
    let sep = args.next();
    let argv: Vec<_> = args.collect();
    let err = match (spec, sep) {
        (Some(spec), Some(sep)) if sep == "--" && !argv.is_empty() => {
            match serde_json::from_str::<Spec>(&spec) {
                Ok(spec) => exec(&spec, &argv),
                Err(e) => format!("invalid spec: {e}"),
            }
        }
        _ => format!("usage: taskrushd {FLAG} SPEC -- PROGRAM [ARGS…]"),
    };
    eprintln!("taskrush sandbox: {err}");
    Some(ExitCode::from(EXIT_SANDBOX))
}

/// Restrict this process and exec `argv`; returns only on failure.
fn exec(spec: &Spec, argv: &[std::ffi::OsString]) -> String {
    use rustix::process::{Resource, Rlimit, Signal};
    if rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_err()
        || rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(spec.parent)
    {
        return "the daemon is gone".into();
    }
    if let Some(dir) = &spec.cgroup
        && let Err(e) = std::fs::write(dir.join("cgroup.procs"), "0")
    {
        return format!("cannot join the cgroup `{}`: {e}", dir.display());
    }
    if let Some(n) = spec.open_files {
        let now = rustix::process::getrlimit(Resource::Nofile);
        let n = now.maximum.map_or(n, |hard| n.min(hard));
        let limit = Rlimit {
            current: Some(n),
            maximum: Some(n),
        };
        if let Err(e) = rustix::process::setrlimit(Resource::Nofile, limit) {
            return format!("cannot set the open-file limit to {n}: {e}");
        }
    } else if let Some(soft) = spec.fd_limit {
        let now = rustix::process::getrlimit(Resource::Nofile);
        let _ = rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: now.maximum,
            },
        );
    }
    if let Err(e) = drop_capabilities() {
        return format!("dropping capabilities: {e}");
    }
    if spec.landlock
        && let Err(e) = landlock(spec)
    {
        return format!("landlock: {e}");
    }
    if let Err(e) = seccomp(spec.network) {
        return format!("seccomp: {e}");
    }
    let e = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    format!("cannot run `{}`: {e}", argv[0].to_string_lossy())
}

/// As root, empty the bounding set and every capability set: a uid-0
/// plugin would otherwise get them all back at exec.
fn drop_capabilities() -> std::io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    for cap in CapabilitySet::all().iter() {
        let _ = rustix::thread::remove_capability_from_bounding_set(cap);
    }
    let empty = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, empty)?;
    Ok(())
}

/// The ruleset: every file system right handled, scopes (abstract Unix
/// sockets, signals outside the sandbox), and TCP bind/connect when `tcp`
/// (no network grant, or only the proxy's port; an unrestricted network
/// grant leaves TCP to the seccomp filter, which allows TCP only).
fn ruleset(tcp: bool) -> Result<landlock::RulesetCreated, landlock::RulesetError> {
    let abi = ABI::V7;
    let r = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?;
    let r = if tcp {
        r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
    } else {
        r
    };
    r.scope(Scope::from_all(abi))?.create()
}

fn landlock(spec: &Spec) -> Result<(), Box<dyn std::error::Error>> {
    let abi = ABI::V7;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let write = AccessFs::from_all(abi) & !AccessFs::Execute;
    let exec = read | AccessFs::Execute;
    let mut rules = ruleset(!spec.network || spec.proxy_port.is_some())?;
    if let Some(port) = spec.proxy_port {
        rules = rules.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    for (paths, rights) in [(&spec.read, read), (&spec.write, write), (&spec.exec, exec)] {
        for path in paths {
            // A path that does not exist grants nothing.
            let Ok(fd) = PathFd::new(path) else { continue };
            let rights = if path.is_dir() {
                rights
            } else {
                rights & AccessFs::from_file(abi)
            };
            rules = rules.add_rule(PathBeneath::new(fd, rights))?;
        }
    }
    let status: RestrictionStatus = rules.restrict_self()?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err("not enforced by this kernel".into());
    }
    Ok(())
}

/// Refuse `socket()` for Unix sockets (the daemon's socket; `socketpair`
/// stays allowed), for families other than Unix/inet/netlink (packet,
/// vsock, …), for internet sockets without network, and otherwise for
/// anything but TCP (UDP, raw, MPTCP, SCTP). `io_uring_setup` too, and the
/// x32 numbers, which the x86_64 architecture check lets through.
fn seccomp(network: bool) -> Result<(), Box<dyn std::error::Error>> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen::Dword, SeccompCmpOp::*, SeccompCondition as C,
        SeccompFilter, SeccompRule as R, TargetArch,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        "riscv64" => TargetArch::riscv64,
        other => return Err(format!("no seccomp filter for `{other}`").into()),
    };
    let c = |a, op, v| C::new(a, Dword, op, v);
    let (unix, in4, in6) = (
        libc::AF_UNIX as u64,
        libc::AF_INET as u64,
        libc::AF_INET6 as u64,
    );
    let mut sock = vec![
        R::new(vec![
            c(0, Ne, unix)?,
            c(0, Ne, in4)?,
            c(0, Ne, in6)?,
            c(0, Ne, libc::AF_NETLINK as u64)?,
        ])?,
        R::new(vec![c(0, Eq, unix)?])?,
    ];
    for f in [in4, in6] {
        if !network {
            sock.push(R::new(vec![c(0, Eq, f)?])?);
            continue;
        }
        for ty in [
            libc::SOCK_DGRAM,
            libc::SOCK_RAW,
            libc::SOCK_SEQPACKET,
            libc::SOCK_RDM,
        ] {
            sock.push(R::new(vec![c(0, Eq, f)?, c(1, MaskedEq(0xf), ty as u64)?])?);
        }
        sock.push(R::new(vec![
            c(2, Gt, libc::IPPROTO_TCP as u64)?,
            c(0, Eq, f)?,
        ])?);
    }
    let mut rules: std::collections::BTreeMap<i64, Vec<R>> =
        [(libc::SYS_socket, sock), (libc::SYS_io_uring_setup, vec![])]
            .into_iter()
            .collect();
    if arch == TargetArch::x86_64 {
        rules.insert(0x4000_0000 | libc::SYS_socket, vec![]);
        rules.insert(0x4000_0000 | libc::SYS_io_uring_setup, vec![]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )?;
    let prog: seccompiler::BpfProgram = filter.try_into()?;
    seccompiler::apply_filter(&prog)?;
    Ok(())
}

/// What Landlock achieves on this kernel: `Ok(true)` fully, `Ok(false)`
/// partly (an older ABI), `Err(why)` not at all. Probed once, on a
/// throwaway thread (the domain is per thread), never on the daemon's own.
pub(crate) fn landlock_level() -> Result<bool, String> {
    static LEVEL: OnceLock<Result<bool, String>> = OnceLock::new();
    LEVEL
        .get_or_init(|| {
            if std::env::var_os(ENV_NO_LANDLOCK).is_some_and(|v| v == "1") {
                return Err(format!("Landlock switched off (`{ENV_NO_LANDLOCK}=1`)"));
            }
            std::thread::spawn(|| match ruleset(true).and_then(|r| r.restrict_self()) {
                Ok(s) => match s.ruleset {
                    RulesetStatus::FullyEnforced => Ok(true),
                    RulesetStatus::PartiallyEnforced => Ok(false),
                    RulesetStatus::NotEnforced => {
                        Err("the kernel has no Landlock (or it is disabled)".to_owned())
                    }
                },
                Err(e) => Err(format!("Landlock: {e}")),
            })
            .join()
            .unwrap_or_else(|_| Err("the Landlock probe panicked".to_owned()))
        })
        .clone()
}

/// Whether Landlock governs TCP connect here (ABI ≥ 4), so that a plugin
/// with a host list can reach its proxy's port only; else why not. Probed
/// once, like [`landlock_level`].
pub(crate) fn landlock_tcp() -> Result<(), String> {
    static TCP: OnceLock<Result<(), String>> = OnceLock::new();
    landlock_level()?;
    TCP.get_or_init(|| {
        std::thread::spawn(|| {
            let status = Ruleset::default()
                .set_compatibility(CompatLevel::BestEffort)
                .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
                .and_then(|r| r.create())
                .and_then(|r| r.restrict_self());
            match status {
                Ok(s) if s.ruleset == RulesetStatus::FullyEnforced => Ok(()),
                Ok(_) => Err("Landlock here has no TCP rules (ABI < 4)".to_owned()),
                Err(e) => Err(format!("Landlock TCP rules: {e}")),
            }
        })
        .join()
        .unwrap_or_else(|_| Err("the Landlock probe panicked".to_owned()))
    })
    .clone()
}
