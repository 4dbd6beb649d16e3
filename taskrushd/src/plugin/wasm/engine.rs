//! The one wasmtime [`Engine`] of the daemon, its epoch ticker, and
//! compiled modules cached in memory and on disk.
//!
//! - Epoch interruption is on: every call sets a deadline in ticks of
//!   [`TICK`]. The ticker thread advances the epoch only while at least one
//!   call is in flight ([`InFlight`]); with none it waits on a condition
//!   variable, so an idle daemon has no wake-ups from it.
//! - A compiled module is kept in memory (a restart after a trap does not
//!   compile again) and on disk in `<cache dir>/taskrush/wasm/` (0700),
//!   keyed by the module's sha256 and the engine's compatibility hash
//!   (wasmtime version and settings), so a warm daemon restart loads
//!   machine code instead of compiling.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, Module};

/// One epoch tick: the resolution of call deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Compiled modules kept in memory (most recent first out when full).
const MEMORY_CACHE: usize = 32;

struct Ticker {
    calls: Mutex<usize>,
    wake: Condvar,
}

static TICKER: Ticker = Ticker {
    calls: Mutex::new(0),
    wake: Condvar::new(),
};

/// The daemon's engine (created, with its ticker thread, on first use).
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // The engine's settings are part of the cache key (see `key`).
        let engine = Engine::new(&config).unwrap_or_else(|e| {
            // Only an invalid `Config` fails, and this one is fixed.
            panic!("cannot create the WebAssembly engine: {e:#}")
        });
        let ticking = engine.clone();
        let spawned = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || tick(&ticking));
        if let Err(e) = spawned {
            tracing::error!(target: "plugin", "cannot start the WebAssembly epoch thread: {e}; deadlines of WebAssembly plugins are not enforced");
        }
        engine
    })
}

fn tick(engine: &Engine) {
    loop {
        {
            let mut calls = TICKER.calls.lock().unwrap_or_else(|p| p.into_inner());
            while *calls == 0 {
                calls = TICKER.wake.wait(calls).unwrap_or_else(|p| p.into_inner());
            }
        }
        std::thread::sleep(TICK);
        engine.increment_epoch();
    }
}

/// A call in flight: the ticker runs while one exists.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn enter() -> InFlight {
        let mut calls = TICKER.calls.lock().unwrap_or_else(|p| p.into_inner());
        *calls += 1;
        TICKER.wake.notify_one();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut calls = TICKER.calls.lock().unwrap_or_else(|p| p.into_inner());
        *calls = calls.saturating_sub(1);
    }
}

/// The ticks a deadline `left` from now is: never early. The ticker's
/// phase is unknown (its next tick may come at once), so one tick more
/// than `left` rounded up; the deadline is met within two ticks late.
pub(crate) fn ticks(left: Duration) -> u64 {
    left.as_nanos().div_ceil(TICK.as_nanos()).max(1) as u64 + 1
}

/// Where a module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Memory,
    Disk,
    Compiled,
}

/// The compiled `bytes` (whose sha256 is `sha`), from memory, the disk
/// cache, or compiled now (and stored in both).
pub(crate) fn module(bytes: &[u8], sha: &str) -> Result<(Module, Source), String> {
    static MEMORY: Mutex<Option<HashMap<String, Module>>> = Mutex::new(None);
    let engine = engine();
    if let Some(m) = MEMORY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(sha)
    {
        return Ok((m.clone(), Source::Memory));
    }
    let file = cache_dir().map(|d| d.join(format!("{sha}-{}.cwasm", key(engine))));
    let mut source = Source::Compiled;
    let mut module = None;
    if let Some(f) = &file
        && f.is_file()
    {
        match load_precompiled(engine, f) {
            Ok(m) => {
                module = Some(m);
                source = Source::Disk;
            }
            Err(e) => {
                tracing::warn!(target: "plugin", file = %f.display(), "cannot load a cached compiled module, compiling again: {e:#}");
                let _ = std::fs::remove_file(f);
            }
        }
    }
    let module = match module {
        Some(m) => m,
        None => {
            let m = Module::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
            if let Some(f) = &file {
                store(&m, f);
            }
            m
        }
    };
    let mut memory = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let memory = memory.get_or_insert_with(HashMap::new);
    if memory.len() >= MEMORY_CACHE
        && let Some(k) = memory.keys().next().cloned()
    {
        memory.remove(&k);
    }
    memory.insert(sha.to_owned(), module.clone());
    Ok((module, source))
}

/// Load machine code that this daemon compiled and wrote to its private
/// cache directory.
///
/// `Module::deserialize_file` is `unsafe` because wasmtime cannot check
/// that the file holds machine code it produced: running arbitrary bytes
/// as code would be arbitrary code execution. It is sound here because
/// (1) the file is only ever written by [`store`], from `Module::serialize`
/// of this engine, under a name that includes the engine's compatibility
/// hash; (2) the directory is created 0700 and owned by the daemon's user
/// (checked in [`cache_dir`]), so nobody else can put a file there (whoever
/// can write there runs as the user already); (3) files are written under
/// a temporary name and renamed, so a half-written file is never read;
/// (4) wasmtime still checks the header (its version and settings) and
/// refuses a file from another engine.
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, file: &Path) -> wasmtime::Result<Module> {
    // SAFETY: see above: only this daemon writes the private cache directory.
    unsafe { Module::deserialize_file(engine, file) }
}

fn store(module: &Module, file: &Path) {
    let bytes = match module.serialize() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(target: "plugin", "cannot serialize a compiled module: {e:#}");
            return;
        }
    };
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let done = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(target: "plugin", file = %file.display(), "cannot cache a compiled module: {e}");
    }
    if let Some(dir) = file.parent() {
        prune(dir, DISK_CACHE);
    }
}

/// Compiled modules kept on disk: the oldest beyond this are removed when
/// one is added.
const DISK_CACHE: usize = 64;

/// Remove the least recently written entries of `dir` beyond `keep`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep {
        return;
    }
    files.sort();
    for (_, f) in &files[..files.len() - keep] {
        let _ = std::fs::remove_file(f);
    }
}

/// The engine's compatibility hash, as hex.
fn key(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// `$XDG_CACHE_HOME/taskrush/wasm` (0700, ours), created; `None` (no disk
/// cache) when it cannot be made private.
fn cache_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(dirs::cache_dir)?;
        let dir = base.join("taskrush").join("wasm");
        match private_dir(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(target: "plugin", dir = %dir.display(), "no disk cache for compiled WebAssembly modules: {e}");
                None
            }
        }
    })
    .clone()
}

/// Create `dir` 0700 and check that it is ours and private.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(std::io::Error::other(
            "it is not a directory owned by this user",
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The custom section `name` of a WebAssembly module, if it has one
/// (a plain walk over the section headers).
pub(crate) fn custom_section<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    fn leb(b: &[u8], at: &mut usize) -> Option<usize> {
        let mut v: u64 = 0;
        for shift in (0..35).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return usize::try_from(v).ok();
            }
        }
        None
    }
    if bytes.get(..4)? != b"\0asm" {
        return None;
    }
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let size = leb(bytes, &mut at)?;
        let end = at.checked_add(size)?;
        let body = bytes.get(at..end)?;
        if id == 0 {
            let mut p = 0;
            let n = leb(body, &mut p)?;
            let section_name = body.get(p..p.checked_add(n)?)?;
            if section_name == name.as_bytes() {
                return body.get(p + n..);
            }
        }
        at = end;
    }
    None
}
