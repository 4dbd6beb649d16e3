//! WebAssembly plugins: a core module for `wasm32-wasip1` speaking the
//! guest ABI of `protocol/src/host.rs` (`wasm`), run in wasmtime.
//!
//! - [`engine`]: the one engine, its epoch ticker, the module caches;
//! - host calls a guest makes go to the one server of every plugin kind,
//!   [`super::host_calls`];
//! - this file: one instance ([`Guest`]): loading (size cap, ABI check,
//!   `_initialize`), the sandbox (WASI preopens only for granted paths,
//!   granted variables only, no sockets, stdout/stderr into the daemon
//!   log), and calls (queued, deadlines by epoch, memory capped by
//!   `StoreLimits`).
//!
//! Invariants:
//! - Nothing a guest does blocks the async runtime: loading and every
//!   call run on blocking threads; a call holds the instance's queue lock
//!   (one call at a time per instance), and time spent waiting for it
//!   counts against the call's deadline.
//! - A guest that traps (deadline, memory cap, `unreachable`, a bad
//!   pointer) is never called again: its [`Guest`] reports every later
//!   call as gone, and the host starts a fresh instance (with the back-off
//!   and circuit breaker of external plugins).

pub(crate) mod engine;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use taskrush_protocol::host::wasm as abi;
use taskrush_protocol::jsonrpc::{Message, Request};
use wasmtime::{Caller, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use taskrush_protocol::plugin::Permissions;

use super::enforce::ENFORCED;
use super::host_calls;
pub(crate) use super::host_calls::Grants;
use super::process::CallError;
use super::stderr::StderrLog;
pub(crate) use engine::Source;

/// Default memory cap of an instance.
pub(crate) const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;
/// Default cap on the size of a module file.
pub(crate) const DEFAULT_MODULE_SIZE: u64 = 32 * 1024 * 1024;
/// The most a `.rush` entry may raise the memory cap to (wasm32's whole
/// address space).
pub(crate) const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// The most a `.rush` entry may raise the module size cap to.
pub(crate) const MAX_MODULE_SIZE: u64 = 256 * 1024 * 1024;
/// The largest message a guest may hand the host (a response or a host
/// call): the protocol's body cap plus room for the envelope.
const MAX_MESSAGE: u32 = (taskrush_protocol::host::MAX_BODY_BYTES as u32) * 2;
/// Tables of an instance, and elements of each (a Rust guest has one
/// table of a few hundred function references).
const MAX_TABLES: usize = 4;
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Bytes of guest stdout/stderr buffered before the guest's writes wait.
const STDIO_BUDGET: usize = 64 * 1024;

/// `64 MiB`, `1.5 KiB`, `12 B`.
pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The limits of one plugin's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) memory: u64,
    pub(crate) module_size: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: DEFAULT_MEMORY,
            module_size: DEFAULT_MODULE_SIZE,
        }
    }
}

/// What a new instance needs.
pub(crate) struct Setup {
    pub(crate) name: String,
    pub(crate) module: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) grants: Grants,
    pub(crate) stderr: Arc<StderrLog>,
    /// The deadline of instantiating it (`_initialize` included): the
    /// plugin's `timeout`.
    pub(crate) start_limit: Duration,
}

/// A module read, checked and compiled.
pub(crate) struct Loaded {
    pub(crate) module: Module,
    pub(crate) sha256: String,
    pub(crate) source: Source,
}

/// Why a module cannot be used (a restart cannot fix it: its file must
/// change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

/// The limits of the plugin of `spec`: its `.rush` entry's or the
/// defaults, lowered to the user's caps (`[wasm]` of the user config).
pub(crate) fn limits_of(spec: &crate::config::rush_file::PluginSpec) -> Limits {
    let caps = crate::config::user_config::current().config.wasm;
    Limits {
        memory: spec.memory.unwrap_or(DEFAULT_MEMORY).min(caps.max_memory),
        module_size: spec
            .module_size
            .unwrap_or(DEFAULT_MODULE_SIZE)
            .min(caps.max_module_size),
    }
}

/// The deadline of each call to the plugin of `spec`: its `timeout`,
/// for a WebAssembly plugin lowered to the user's `max_timeout`.
pub(crate) fn deadline_of(spec: &crate::config::rush_file::PluginSpec) -> Duration {
    if spec.kind.as_str() != "wasm" {
        return spec.timeout;
    }
    let caps = crate::config::user_config::current().config.wasm;
    spec.timeout.min(caps.max_timeout)
}

/// One line per value of a WebAssembly plugin's `.rush` entry above the
/// user's cap, naming both (empty when none is, or not a wasm plugin).
pub(crate) fn over_caps(spec: &crate::config::rush_file::PluginSpec) -> Vec<String> {
    if spec.kind.as_str() != "wasm" {
        return Vec::new();
    }
    let caps = crate::config::user_config::current().config.wasm;
    let mut lines = Vec::new();
    let mut size = |key: &str, set: Option<u64>, cap: u64, cap_key: &str| {
        if let Some(v) = set.filter(|v| *v > cap) {
            lines.push(format!(
                "plugin `{}`: `{key}: {}` is above your cap `[wasm] {cap_key} = {}` in the user config; using {}",
                spec.name,
                bytes(v),
                bytes(cap),
                bytes(cap)
            ));
        }
    };
    size("memory", spec.memory, caps.max_memory, "max_memory");
    size(
        "module_size",
        spec.module_size,
        caps.max_module_size,
        "max_module_size",
    );
    if spec.timeout > caps.max_timeout {
        lines.push(format!(
            "plugin `{}`: `timeout: {}` is above your cap `[wasm] max_timeout = {}` in the user config; using {}",
            spec.name,
            crate::human::duration(spec.timeout),
            crate::human::duration(caps.max_timeout),
            crate::human::duration(caps.max_timeout)
        ));
    }
    lines
}

/// A guest's limits as `plugin list/info`, `daemon status` and the audit
/// trail show them, beside an external plugin's: the instance's `memory`
/// cap and the `module_size` cap in bytes, the per-call `deadline` in
/// milliseconds, all `enforced` (by wasmtime's `StoreLimits`, a size check
/// before compiling, and epoch interruption).
pub(crate) fn limit_statuses(
    limits: &Limits,
    deadline: Duration,
) -> BTreeMap<String, taskrush_protocol::daemon::LimitStatus> {
    let enforced = |value: u64| taskrush_protocol::daemon::LimitStatus {
        value: Some(value),
        level: "enforced".to_owned(),
    };
    BTreeMap::from([
        ("memory".to_owned(), enforced(limits.memory)),
        ("module_size".to_owned(), enforced(limits.module_size)),
        (
            "deadline".to_owned(),
            enforced(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX)),
        ),
    ])
}

/// What a new instance of `loaded` (the plugin of `spec`) needs: its
/// limits, and its grants resolved against the project root `root`, its
/// private `data` and `tmp` dirs, the client's environment (`client`, for
/// granted variables) and the environment programs it runs get
/// (`process_env`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn setup(
    name: &str,
    spec: &crate::config::rush_file::PluginSpec,
    loaded: &super::manifest::Installed,
    granted: &Permissions,
    (root, data, tmp): (&Path, &Path, &Path),
    client: &BTreeMap<String, String>,
    process_env: &BTreeMap<String, String>,
    stderr: Arc<StderrLog>,
    links: Option<host_calls::Links>,
) -> Setup {
    Setup {
        name: name.to_owned(),
        module: loaded.dir.join(
            loaded
                .manifest
                .entry_point
                .first()
                .map(String::as_str)
                .unwrap_or(""),
        ),
        limits: limits_of(spec),
        grants: host_calls::resolve(
            name,
            &loaded.dir,
            granted,
            (root, data, tmp),
            client,
            process_env,
            links,
        ),
        stderr,
        start_limit: deadline_of(spec),
    }
}

/// Load, compile (or take from a cache) and instantiate, off the async
/// runtime. The error says why the module cannot be used.
pub(crate) async fn start(setup: Setup) -> Result<Guest, String> {
    let handle = tokio::runtime::Handle::current();
    let started = Instant::now();
    let joined = tokio::task::spawn_blocking(move || {
        // Guest stdio pipes are read by tasks on the runtime.
        let _rt = handle.enter();
        let loaded = load(&setup.module, setup.limits.module_size)?;
        let guest = Guest::new(&setup, &loaded)?;
        Ok::<_, Refused>((guest, loaded.source))
    })
    .await;
    match joined {
        Ok(Ok((guest, source))) => {
            tracing::info!(target: "plugin", plugin = %guest.name, sha256 = %guest.sha256, module = ?source, ms = started.elapsed().as_millis() as u64, "WebAssembly instance ready");
            Ok(guest)
        }
        Ok(Err(Refused(m))) => Err(m),
        Err(e) => Err(format!("loading its module failed: {e}")),
    }
}

/// The level achieved per kind of permission: by construction, a guest
/// reaches nothing but through WASI preopens and host calls that check
/// the grants. Programs run by `run_command` are as contained as the
/// sandbox of external plugins (Landlock).
pub(crate) fn levels(granted: &Permissions) -> BTreeMap<String, String> {
    let process = if granted.process.is_empty() {
        ENFORCED.to_owned()
    } else {
        match crate::process::sandbox::landlock_level() {
            Ok(true) => ENFORCED.to_owned(),
            Ok(false) => "partial: programs run by `run_command` are under an older Landlock ABI (some rights not governed)".to_owned(),
            Err(why) => format!("partial: the guest runs only granted programs, but they run without a file system sandbox ({why})"),
        }
    };
    [
        ("filesystem", ENFORCED.to_owned()),
        ("network", ENFORCED.to_owned()),
        ("environment", ENFORCED.to_owned()),
        ("process", process),
        ("daemon_socket", ENFORCED.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Read `path` (at most `max` bytes) and compile it (or take it from a
/// cache).
pub(crate) fn load(path: &Path, max: u64) -> Result<Loaded, Refused> {
    let shown = path.display();
    let bytes = read_module(path, max)?;
    let sha256 = super::audit::sha256(&bytes);
    let (module, source) = engine::module(&bytes, &sha256)
        .map_err(|e| Refused(format!("`{shown}` is not a valid WebAssembly module: {e}")))?;
    Ok(Loaded {
        module,
        sha256,
        source,
    })
}

fn read_module(path: &Path, max: u64) -> Result<Vec<u8>, Refused> {
    let shown = path.display();
    let bytes = crate::config::whole_file::read_at_most(path, max).map_err(|e| {
        Refused(match e {
            crate::config::whole_file::ReadError::TooLarge(..) => format!(
                "`{shown}` is larger than its module size cap ({})",
                bytes(max)
            ),
            other => format!("cannot read `{shown}`: it {}", other.what()),
        })
    })?;
    Ok(bytes)
}

/// The version in the `taskrush_version` custom section of the module at
/// `path`, if it has one.
pub(crate) fn version_section(path: &Path, max: u64) -> Result<Option<String>, Refused> {
    let bytes = read_module(path, max)?;
    if bytes.get(..4) != Some(b"\0asm") {
        return Err(Refused(format!(
            "`{}` is not a WebAssembly module (no `\\0asm` header)",
            path.display()
        )));
    }
    Ok(engine::custom_section(&bytes, abi::SECTION_VERSION)
        .map(|s| String::from_utf8_lossy(s).trim().to_owned()))
}

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
    grants: Arc<Grants>,
    /// The deadline of the call in progress (host calls get what is left).
    deadline: Instant,
    /// The call in progress, as its host calls see it.
    call: host_calls::CallContext,
}

struct Live {
    store: Store<State>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    handle: TypedFunc<(i32, i32), i64>,
}

/// One instance of a WebAssembly plugin.
pub(crate) struct Guest {
    name: String,
    memory_cap: u64,
    live: Arc<tokio::sync::Mutex<Option<Live>>>,
    next_id: AtomicU64,
    pub(crate) sha256: String,
    /// The largest its linear memory has been, in bytes (read after each
    /// call: what `plugin stats` shows as its peak memory).
    peak_memory: Arc<AtomicU64>,
}

impl Guest {
    /// The largest its linear memory has been after a call, in bytes.
    pub(crate) fn peak_memory(&self) -> u64 {
        self.peak_memory.load(Ordering::Relaxed)
    }

    /// Instantiate `loaded` under `setup`: check its ABI version, run its
    /// `_initialize`. Blocking: call it off the async runtime.
    pub(crate) fn new(setup: &Setup, loaded: &Loaded) -> Result<Guest, Refused> {
        let engine = engine::engine();
        let shown = setup.module.display();
        let grants = Arc::new(setup.grants.clone());
        let wasi = sandbox(setup, &grants)?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(setup.limits.memory).unwrap_or(usize::MAX))
            .instances(1)
            .memories(1)
            .tables(MAX_TABLES)
            // Tables live outside the memory cap: bounded on their own.
            .table_elements(MAX_TABLE_ELEMENTS)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            engine,
            State {
                wasi,
                limits,
                grants,
                deadline: Instant::now() + setup.start_limit,
                call: Default::default(),
            },
        );
        store.limiter(|s| &mut s.limits);
        let mut linker: Linker<State> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
            .map_err(|e| Refused(format!("cannot link WASI: {e:#}")))?;
        linker
            .func_wrap(abi::IMPORT_MODULE, abi::IMPORT_HOST_CALL, host_call)
            .map_err(|e| Refused(format!("cannot link host calls: {e:#}")))?;
        bounded_sleep(&mut linker).map_err(|e| Refused(format!("cannot link WASI: {e:#}")))?;
        // Starting counts as a call, with the plugin's deadline.
        store.set_epoch_deadline(engine::ticks(setup.start_limit));
        let _tick = engine::InFlight::enter();
        let instance = linker
            .instantiate(&mut store, &loaded.module)
            .map_err(|e| Refused(format!("cannot instantiate `{shown}`: {e:#}")))?;
        let func = |store: &mut Store<State>, name: &str| {
            instance.get_func(&mut *store, name).ok_or_else(|| {
                Refused(format!(
                    "`{shown}` does not export `{name}` (the guest ABI)"
                ))
            })
        };
        let version = func(&mut store, abi::EXPORT_ABI_VERSION)?
            .typed::<(), i32>(&store)
            .map_err(|e| {
                Refused(format!(
                    "`{shown}`: `{}` has the wrong type: {e:#}",
                    abi::EXPORT_ABI_VERSION
                ))
            })?
            .call(&mut store, ())
            .map_err(|e| {
                Refused(format!(
                    "`{shown}`: `{}` trapped: {e:#}",
                    abi::EXPORT_ABI_VERSION
                ))
            })?;
        if version != abi::ABI_VERSION {
            return Err(Refused(format!(
                "`{shown}` is built for guest ABI version {version}, this host speaks version {}",
                abi::ABI_VERSION
            )));
        }
        let memory = instance
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| {
                Refused(format!(
                    "`{shown}` does not export `memory` (the guest ABI)"
                ))
            })?;
        let typed_err = |name: &str, e: wasmtime::Error| {
            Refused(format!("`{shown}`: `{name}` has the wrong type: {e:#}"))
        };
        let alloc = func(&mut store, abi::EXPORT_ALLOC)?
            .typed::<i32, i32>(&store)
            .map_err(|e| typed_err(abi::EXPORT_ALLOC, e))?;
        let free = func(&mut store, abi::EXPORT_FREE)?
            .typed::<(i32, i32), ()>(&store)
            .map_err(|e| typed_err(abi::EXPORT_FREE, e))?;
        let handle = func(&mut store, abi::EXPORT_HANDLE)?
            .typed::<(i32, i32), i64>(&store)
            .map_err(|e| typed_err(abi::EXPORT_HANDLE, e))?;
        if let Some(init) = instance.get_func(&mut store, "_initialize") {
            init.typed::<(), ()>(&store)
                .and_then(|f| f.call(&mut store, ()))
                .map_err(|e| Refused(format!("`{shown}`: `_initialize` failed: {e:#}")))?;
        }
        Ok(Guest {
            name: setup.name.clone(),
            memory_cap: setup.limits.memory,
            live: Arc::new(tokio::sync::Mutex::new(Some(Live {
                store,
                memory,
                alloc,
                free,
                handle,
            }))),
            next_id: AtomicU64::new(1),
            peak_memory: Arc::new(AtomicU64::new(0)),
            sha256: loaded.sha256.clone(),
        })
    }

    /// Stop it: no call after this one runs (a call in progress ends at
    /// its deadline at the latest).
    pub(crate) fn stop(self: &Arc<Self>) {
        let live = self.live.clone();
        // Dropped once the call in progress (if any) is done.
        tokio::spawn(async move {
            live.lock().await.take();
        });
    }

    /// Call `method`: wait for the instance (the queue), then run the
    /// guest; everything within `limit`.
    pub(crate) async fn call(
        &self,
        cx: host_calls::CallContext,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, CallError> {
        let deadline = Instant::now() + limit;
        let live = self.live.clone();
        let guard = tokio::time::timeout(limit, live.lock_owned())
            .await
            .map_err(|_| CallError::Timeout(limit))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = serde_json::to_vec(&Request::new(id, method, params))
            .map_err(|e| CallError::Protocol(format!("cannot encode `{method}`: {e}")))?;
        let (name, cap) = (self.name.clone(), self.memory_cap);
        let method = method.to_owned();
        let peak = self.peak_memory.clone();
        let run = tokio::task::spawn_blocking(move || {
            let mut guard = guard;
            let Some(live) = guard.as_mut() else {
                return Err(CallError::Gone("it was stopped".into()));
            };
            live.store.data_mut().call = cx;
            let r = exchange(live, &msg, deadline);
            let size = live.memory.data_size(&live.store);
            peak.fetch_max(u64::try_from(size).unwrap_or(u64::MAX), Ordering::Relaxed);
            match r {
                Ok(bytes) => Ok(bytes),
                Err(Exchange::Trap(e)) => {
                    *guard = None;
                    Err(trapped(&e, limit, cap))
                }
                Err(Exchange::Broken(m)) => {
                    *guard = None;
                    Err(CallError::Protocol(m))
                }
                Err(Exchange::Late) => Err(CallError::Timeout(limit)),
            }
        });
        // The guest stops at its deadline (epoch); the margin covers a
        // host call that overran it.
        let bytes = match tokio::time::timeout(limit + Duration::from_secs(2), run).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(CallError::Gone(format!("its thread failed: {e}"))),
            Err(_) => return Err(CallError::Timeout(limit)),
        };
        let Some(bytes) = bytes else {
            return Err(CallError::Protocol(format!(
                "it answered `{method}` with no response (0 from `{}`)",
                abi::EXPORT_HANDLE
            )));
        };
        let msg: Message = serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Protocol(format!("its answer to `{method}` is not JSON-RPC: {e}"))
        })?;
        if msg.id.as_ref().and_then(|i| i.as_u64()) != Some(id) {
            tracing::warn!(target: "plugin", plugin = %name, "answered `{method}` with another id");
        }
        match msg.outcome() {
            Err(e) => Err(CallError::Remote {
                code: e.code,
                message: e.message,
            }),
            Ok(v) => Ok(v.unwrap_or(Value::Null)),
        }
    }
}

enum Exchange {
    Trap(wasmtime::Error),
    Broken(String),
    /// The deadline passed before the guest was entered.
    Late,
}

impl From<wasmtime::Error> for Exchange {
    fn from(e: wasmtime::Error) -> Exchange {
        Exchange::Trap(e)
    }
}

/// One message in, its answer out (`None`: no answer).
fn exchange(live: &mut Live, msg: &[u8], deadline: Instant) -> Result<Option<Vec<u8>>, Exchange> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        // Its time went by in the queue: the guest is not entered.
        return Err(Exchange::Late);
    }
    let _tick = engine::InFlight::enter();
    live.store.set_epoch_deadline(engine::ticks(left));
    live.store.data_mut().deadline = deadline;
    let len =
        i32::try_from(msg.len()).map_err(|_| Exchange::Broken("a message over 2 GiB".into()))?;
    let ptr = live.alloc.call(&mut live.store, len)?;
    live.memory
        .write(&mut live.store, ptr as u32 as usize, msg)
        .map_err(|_| {
            Exchange::Broken(format!(
                "`{}` returned a pointer outside its memory",
                abi::EXPORT_ALLOC
            ))
        })?;
    let packed = live.handle.call(&mut live.store, (ptr, len))?;
    if packed == 0 {
        live.free.call(&mut live.store, (ptr, len))?;
        return Ok(None);
    }
    let (optr, olen) = abi::unpack(packed);
    if olen > MAX_MESSAGE {
        return Err(Exchange::Broken(format!(
            "its answer is {} long, more than the {} a message may be",
            bytes(u64::from(olen)),
            bytes(u64::from(MAX_MESSAGE))
        )));
    }
    let mut out = vec![0; olen as usize];
    live.memory
        .read(&live.store, optr as usize, &mut out)
        .map_err(|_| {
            Exchange::Broken(format!(
                "`{}` returned a pointer outside its memory",
                abi::EXPORT_HANDLE
            ))
        })?;
    // Last in, first out: kind to a bump allocator.
    live.free
        .call(&mut live.store, (optr as i32, olen as i32))?;
    live.free.call(&mut live.store, (ptr, len))?;
    Ok(Some(out))
}

/// A trap as a call error: the deadline is a timeout, the rest a crash.
fn trapped(e: &wasmtime::Error, limit: Duration, cap: u64) -> CallError {
    if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return CallError::Timeout(limit);
    }
    let cause = match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    if cause.contains("growing memory") {
        return CallError::Trapped(format!("it grew its memory past its cap of {}", bytes(cap)));
    }
    CallError::Trapped(cause)
}

/// WASI's `poll_oneoff`, served by the host so that a sleep is bounded by
/// the call's deadline.
///
/// Epoch interruption stops guest code, not a host function: a guest
/// sleeping past its deadline in WASI's own `poll_oneoff` would hold a
/// blocking thread until the sleep ends. What guests use it for is a
/// sleep (one relative clock subscription: `std::thread::sleep` of a Rust
/// guest, TinyGo's `time.Sleep`); it is served here, cut at the deadline,
/// where the call ends as a timeout. Other subscriptions (several, an
/// absolute clock, file descriptors) are answered `ENOTSUP`: a plugin has
/// no stdin and its files are always ready.
fn bounded_sleep(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    const ERRNO_INVAL: i32 = 28;
    const ERRNO_FAULT: i32 = 21;
    const ERRNO_NOTSUP: i32 = 58;
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        |mut caller: Caller<'_, State>, subs: i32, events: i32, n: i32, out: i32| {
            let Some(memory) = caller
                .get_export(abi::EXPORT_MEMORY)
                .and_then(|e| e.into_memory())
            else {
                return Ok(ERRNO_FAULT);
            };
            if n == 0 {
                return Ok(ERRNO_INVAL);
            }
            if n != 1 {
                return Ok(ERRNO_NOTSUP);
            }
            // A subscription: userdata u64, tag u8 at 8 (0: clock), then
            // the clock's id u32 at 16, timeout u64 (ns) at 24, precision
            // u64 at 32, flags u16 at 40 (1: absolute).
            let mut sub = [0u8; 48];
            if memory
                .read(&caller, subs as u32 as usize, &mut sub)
                .is_err()
            {
                return Ok(ERRNO_FAULT);
            }
            let flags = u16::from_le_bytes([sub[40], sub[41]]);
            if sub[8] != 0 || flags & 1 != 0 {
                return Ok(ERRNO_NOTSUP);
            }
            let mut timeout = [0u8; 8];
            timeout.copy_from_slice(&sub[24..32]);
            let timeout = Duration::from_nanos(u64::from_le_bytes(timeout));
            let left = caller
                .data()
                .deadline
                .saturating_duration_since(Instant::now());
            if timeout > left {
                std::thread::sleep(left);
                return Err(wasmtime::Trap::Interrupt.into());
            }
            std::thread::sleep(timeout);
            // The event: userdata u64, error u16 at 8 (0), type u8 at 10
            // (0: clock), the rest 0; then the count of events.
            let mut event = [0u8; 32];
            event[..8].copy_from_slice(&sub[..8]);
            let wrote = memory
                .write(&mut caller, events as u32 as usize, &event)
                .and_then(|()| memory.write(&mut caller, out as u32 as usize, &1u32.to_le_bytes()));
            Ok(if wrote.is_ok() { 0 } else { ERRNO_FAULT })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The `taskrush.host_call` import.
fn host_call(mut caller: Caller<'_, State>, ptr: i32, len: i32) -> wasmtime::Result<i64> {
    let memory = caller
        .get_export(abi::EXPORT_MEMORY)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
    let len = len as u32;
    if len > MAX_MESSAGE {
        return Err(wasmtime::Error::msg(format!(
            "a host call of {} bytes, more than {MAX_MESSAGE}",
            len
        )));
    }
    let mut msg = vec![0; len as usize];
    memory.read(&caller, ptr as u32 as usize, &mut msg)?;
    let (grants, deadline) = (caller.data().grants.clone(), caller.data().deadline);
    let cx = caller.data().call.clone();
    let Some(answer) = host_calls::serve_blocking(&grants, &cx, &msg, deadline) else {
        return Ok(0);
    };
    let alloc = caller
        .get_export(abi::EXPORT_ALLOC)
        .and_then(|e| e.into_func())
        .ok_or_else(|| wasmtime::Error::msg("the guest exports no allocator"))?
        .typed::<i32, i32>(&caller)?;
    let n = answer.len() as i32;
    let at = alloc.call(&mut caller, n)?;
    memory.write(&mut caller, at as u32 as usize, &answer)?;
    Ok(abi::pack(at as u32, n as u32))
}

/// The WASI context: preopens only for the granted `filesystem` paths
/// (read-only or read-write as granted) and the plugin's data and tmp
/// dirs, only the granted variables, no sockets, stdout and stderr into
/// the daemon log.
fn sandbox(setup: &Setup, grants: &Grants) -> Result<WasiP1Ctx, Refused> {
    let mut b = WasiCtxBuilder::new();
    b.allow_blocking_current_thread(true);
    for (k, v) in &grants.env {
        b.env(k, v);
    }
    // Sockets: none (denied by default, said again so it stays so).
    b.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let out = log_pipe(&setup.stderr);
    b.stdout(wasmtime_wasi::cli::AsyncStdoutStream::new(
        STDIO_BUDGET,
        out.clone(),
    ));
    b.stderr(wasmtime_wasi::cli::AsyncStdoutStream::new(
        STDIO_BUDGET,
        out,
    ));
    let mut dirs: Vec<(PathBuf, bool)> =
        grants.paths.iter().map(|(w, p)| (p.clone(), *w)).collect();
    dirs.push((grants.data_dir.clone(), true));
    dirs.push((grants.tmp_dir.clone(), true));
    for (path, write) in dirs {
        if !path.is_dir() {
            continue;
        }
        let perms = if write {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        // The guest sees the directory at the same path as the host.
        let guest = path.display().to_string();
        b.preopened_dir(&path, &guest, perms)
            .map_err(|e| Refused(format!("cannot open `{guest}` for the guest: {e:#}")))?;
    }
    Ok(b.build_p1())
}

/// A pipe whose lines go to the plugin's stderr log (rate limited, like an
/// external plugin's stderr).
fn log_pipe(log: &Arc<StderrLog>) -> SharedWriter {
    let (reader, writer) = tokio::io::simplex(STDIO_BUDGET);
    let log = log.clone();
    tokio::spawn(super::stderr::read_stderr(reader, log));
    SharedWriter(Arc::new(std::sync::Mutex::new(writer)))
}

/// One pipe shared by the guest's stdout and stderr.
#[derive(Clone)]
struct SharedWriter(Arc<std::sync::Mutex<tokio::io::WriteHalf<tokio::io::SimplexStream>>>);

impl tokio::io::AsyncWrite for SharedWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::pin::Pin::new(&mut *w).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::pin::Pin::new(&mut *w).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::pin::Pin::new(&mut *w).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../../tests/src/wasm_guest.rs"]
pub(crate) mod test_guest;

#[cfg(test)]
mod tests {
    use super::test_guest::{Action, Guest as TestGuest, abi_only};
    use super::*;

    fn grants(dir: &Path) -> Grants {
        let (root, data, tmp) = (dir.join("project"), dir.join("data"), dir.join("tmp"));
        for d in [&root, &data, &tmp] {
            std::fs::create_dir_all(d).unwrap();
        }
        Grants {
            name: "g".into(),
            root,
            plugin_dir: dir.to_owned(),
            data_dir: data,
            tmp_dir: tmp,
            granted: Permissions::default(),
            paths: Vec::new(),
            env: BTreeMap::new(),
            process_env: BTreeMap::new(),
            runtime: None,
            links: None,
        }
    }

    async fn start_guest(dir: &Path, guest: &TestGuest, limits: Limits) -> Result<Guest, String> {
        let module = dir.join("g.wasm");
        std::fs::write(&module, guest.wasm()).unwrap();
        start(Setup {
            name: "g".into(),
            module,
            limits,
            grants: grants(dir),
            stderr: StderrLog::new("g"),
            start_limit: Duration::from_secs(5),
        })
        .await
    }

    fn plugin() -> TestGuest {
        TestGuest::plugin("g", "1.0.0", &["before_task", "after_task"])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_answers_calls_with_their_ids_and_its_fixed_results() {
        let d = tempfile::tempdir().unwrap();
        let g = start_guest(d.path(), &plugin(), Limits::default())
            .await
            .unwrap();
        let limit = Duration::from_secs(5);
        let init = g
            .call(
                Default::default(),
                "initialize",
                serde_json::json!({"a": 1}),
                limit,
            )
            .await
            .unwrap();
        assert_eq!(init["name"], "g");
        assert_eq!(
            init["hooks"],
            serde_json::json!(["before_task", "after_task"])
        );
        for _ in 0..100 {
            assert_eq!(
                g.call(Default::default(), "before_task", Value::Null, limit)
                    .await,
                Ok(serde_json::json!({}))
            );
        }
        assert_eq!(
            g.call(Default::default(), "nope", Value::Null, limit).await,
            Err(CallError::Remote {
                code: -32601,
                message: "method not found".into()
            })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_looping_guest_is_stopped_at_its_deadline_and_stays_stopped() {
        let d = tempfile::tempdir().unwrap();
        let g = start_guest(
            d.path(),
            &plugin().on("before_task", Action::Loop),
            Limits::default(),
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        let limit = Duration::from_millis(300);
        assert_eq!(
            g.call(Default::default(), "before_task", Value::Null, limit)
                .await,
            Err(CallError::Timeout(limit))
        );
        let took = t0.elapsed();
        assert!(
            took >= limit && took < limit + Duration::from_secs(2),
            "{took:?}"
        );
        assert!(matches!(
            g.call(Default::default(), "after_task", Value::Null, limit)
                .await,
            Err(CallError::Gone(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_sleeping_past_its_deadline_is_cut_at_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        let guest = plugin()
            .on("before_task", Action::Sleep(60_000))
            .on("after_task", Action::Sleep(10));
        let g = start_guest(d.path(), &guest, Limits::default())
            .await
            .unwrap();
        let limit = Duration::from_millis(1000);
        assert_eq!(
            g.call(Default::default(), "after_task", Value::Null, limit)
                .await,
            Ok(serde_json::json!({})),
            "a short sleep is WASI's own"
        );
        let t0 = Instant::now();
        let limit = Duration::from_millis(300);
        assert_eq!(
            g.call(Default::default(), "before_task", Value::Null, limit)
                .await,
            Err(CallError::Timeout(limit))
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn time_waiting_for_the_instance_counts_against_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        let g = Arc::new(
            start_guest(
                d.path(),
                &plugin().on("before_task", Action::Loop),
                Limits::default(),
            )
            .await
            .unwrap(),
        );
        let g1 = g.clone();
        let busy = tokio::spawn(async move {
            g1.call(
                Default::default(),
                "before_task",
                Value::Null,
                Duration::from_millis(500),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        let r = g
            .call(
                Default::default(),
                "after_task",
                Value::Null,
                Duration::from_millis(100),
            )
            .await;
        assert_eq!(r, Err(CallError::Timeout(Duration::from_millis(100))));
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "queued, not run after the loop"
        );
        assert!(matches!(busy.await.unwrap(), Err(CallError::Timeout(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_growing_past_its_memory_cap_traps() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory: 4 << 20,
            ..Limits::default()
        };
        let g = start_guest(d.path(), &plugin().on("before_task", Action::Grow), limits)
            .await
            .unwrap();
        let r = g
            .call(
                Default::default(),
                "before_task",
                Value::Null,
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(
            r,
            Err(CallError::Trapped(
                "it grew its memory past its cap of 4 MiB".into()
            ))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_module_for_another_abi_version_is_refused_naming_both() {
        let d = tempfile::tempdir().unwrap();
        let e = start_guest(d.path(), &plugin().abi(2), Limits::default())
            .await
            .err()
            .unwrap();
        assert!(
            e.ends_with("is built for guest ABI version 2, this host speaks version 1"),
            "{e}"
        );
        let module = d.path().join("x.wasm");
        std::fs::write(&module, abi_only(7)).unwrap();
        let e = load(&module, DEFAULT_MODULE_SIZE).map(|_| ()).err();
        assert_eq!(e, None, "it compiles; instantiating checks the version");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_module_over_its_size_cap_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits {
            module_size: 100,
            ..Limits::default()
        };
        let e = start_guest(d.path(), &plugin(), limits)
            .await
            .err()
            .unwrap();
        assert!(
            e.ends_with("is larger than its module size cap (100 B)"),
            "{e}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_calls_are_answered_and_denials_reach_the_guest() {
        let d = tempfile::tempdir().unwrap();
        let guest = plugin().on(
            "before_task",
            Action::HostCall(
                r#"{"jsonrpc":"2.0","id":1,"method":"read_file","params":{"path":"/etc/passwd"}}"#
                    .into(),
            ),
        );
        let g = start_guest(d.path(), &guest, Limits::default())
            .await
            .unwrap();
        let r = g
            .call(
                Default::default(),
                "before_task",
                Value::Null,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(r["error"]["code"], -32020, "{r}");
        assert_eq!(r["error"]["data"]["permission"], "filesystem");
    }

    #[test]
    fn a_deadline_in_ticks_is_never_early() {
        assert_eq!(engine::ticks(Duration::from_millis(300)), 31);
        assert_eq!(engine::ticks(Duration::from_micros(299_500)), 31);
        assert_eq!(engine::ticks(Duration::ZERO), 2);
    }

    #[test]
    fn the_version_section_is_found() {
        let bytes = plugin().version_section("2.3.4").wasm();
        assert_eq!(
            engine::custom_section(&bytes, abi::SECTION_VERSION),
            Some(&b"2.3.4"[..])
        );
        assert_eq!(
            engine::custom_section(&plugin().wasm(), abi::SECTION_VERSION),
            None
        );
    }
}
