//! Giving freed memory back to the system after a burst of work.
//!
//! glibc's `malloc` keeps what the daemon frees in its arenas: after a
//! check of a million input files, or 2,000 connections that came and
//! went, a long-lived daemon would otherwise keep its peak for the rest of
//! its life (measured: 316–368 MiB left after two checks of a 1M-file
//! glob, with the hash memo bounded). [`release_soon`] is called where
//! such bursts end (a run finished, a connection closed); one
//! `malloc_trim(0)` follows a second after the first call, on a blocking
//! thread, covering every call made meanwhile. An idle daemon makes no
//! call and stays asleep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after a burst ends the memory is given back: calls within it
/// share one trim.
const DELAY: Duration = Duration::from_secs(1);

static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Give freed memory back to the system shortly (needs a tokio runtime;
/// without one it does nothing).
pub(crate) fn release_soon() {
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        SCHEDULED.store(false, Ordering::Release);
        return;
    };
    runtime.spawn(async {
        tokio::time::sleep(DELAY).await;
        // Cleared before the trim: a burst ending during it schedules the
        // next one.
        SCHEDULED.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

/// Return the free pages of every malloc arena to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: `malloc_trim` takes a size and has no other precondition; it
    // works on glibc's own heap under glibc's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
