//! The daemon's one file watcher (one inotify instance for everything).
//!
//! Theory of operation:
//! - Interest is registered by key: a project's `.rush` file, a plugin's
//!   files (manifest and entry point), or a `run --watch` session's tree.
//!   Single files are watched through their **parent directory**, filtered
//!   by path: watching the file itself misses editor saves (write a temp
//!   file, rename it over), because the watch dies with the replaced inode.
//! - The set of watched directories is recomputed from the registrations
//!   and applied as a diff; a directory covered by a recursive watch is not
//!   watched twice.
//! - notify's thread hands raw events to a tokio task with `blocking_send`
//!   (a full queue pushes back into the kernel's queue, whose overflow is
//!   the `Rescan` flag). That task routes them: file keys are debounced
//!   ([`router::DEBOUNCE`] after the last event, at most
//!   [`router::MAX_DELAY`] after the
//!   first) and handed to the daemon; session trees get every matching path
//!   and debounce themselves.
//! - Overflow (`Rescan`) marks every key changed: a full rescan. Hitting
//!   the watch limit (ENOSPC, notify's `MaxFilesWatch`) is logged and shown
//!   by `daemon status` with how to raise it; nothing depends on the
//!   watcher for correctness, since every request stats its `.rush` file.
//! - Cached tasks' input directories are watched too (see "Inputs" below).
//! - Nothing polls: with no events, no task wakes up. A `--watch` session
//!   that cannot get a native watch falls back to a polling watcher of its
//!   own, the only polling there is.
//!
//! Calls into notify (`watch`/`unwatch`) block on notify's thread, so they
//! run on tokio's blocking pool, never on a runtime worker.
//!
//! # Inputs: up-to-date checks without touching the inputs
//!
//! After a cached task's key is computed (every input `stat`ed, hashed when
//! new), the directories that could show a change to its inputs are watched
//! ([`Key::Inputs`]; which directories: `InputFiles::watch_dirs`). Every
//! event under them bumps the inputs' *generation*. A check that begins
//! while the directories are already watched gets a [`Ticket`] (the
//! generation then, [`Watcher::begin_inputs`]); [`Watcher::finish_inputs`]
//! says whether it is still good when the key is done (same generation,
//! same directories, watched as the inodes listed). The up-to-date logic
//! (`cache/up_to_date.rs`) remembers such a key as *clean* with its ticket,
//! and the next check of the same recipe takes it without a single `stat`
//! of the inputs while [`Watcher::is_current`] says the ticket is. This
//! room knows generations only, never cache keys.
//!
//! Consistency ("a request issued after a save sees that save") needs one
//! more thing: the events of every change made *before* the request must
//! have been routed. [`Watcher::sync`] proves it the way Watchman does:
//! it creates a cookie file in a directory of the same inotify instance
//! and waits for its event. An inotify instance has one queue, filled in
//! the order the changes were made, and the router reads it in order; so
//! when the cookie's event arrives, every earlier change has bumped its
//! generation. If the cookie does not come back in time (or the watch
//! limit, an overflow or a missing watcher got in the way), the check falls
//! back to `stat`ing everything — the watcher only ever makes it faster.
//! A watched directory that is itself replaced, renamed or deleted is
//! watched again from scratch (its old watch follows the old inode).
//!
//! # The room, file by file
//!
//! - [`watcher`]: the [`Watcher`] itself, starting it, file keys (`.rush`
//!   files, plugin files) registered and forgotten, `daemon status`;
//! - [`routes`]: [`Key`] and the routes (who is interested in which file,
//!   tree or directory), the directories that must be watched;
//! - [`router`]: the task that reads notify's events in order and routes
//!   them, with the debounce of file keys and the overflow rescan;
//! - [`inputs`]: cached tasks' inputs, their generations and
//!   [`Ticket`]s, the cookies of [`Watcher::sync`];
//! - [`trees`]: `run --watch` sessions' trees ([`trees::TreeGuard`],
//!   [`PathFilter`]), the polling fallback;
//! - [`native`]: the adapter to notify's native watcher: applying the
//!   routes as watches, watching replaced directories again, the watch
//!   limit. (Not `notify.rs`: that would shadow the `notify` crate.)
//!
//! The rest of the daemon uses only what this file re-exports.
//!
//! # Architecture invariants
//!
//! - Nothing depends on the watcher for correctness: it makes reloads
//!   proactive and up-to-date checks faster, never staler. Whoever uses it
//!   must work the same (a little later, or with more `stat`s) when it is
//!   degraded or missing.
//! - A ticket is current only while its inputs' directories stay watched,
//!   as the inodes listed, with no event under them: whatever could make a
//!   key computed under it stale (an event, an overflow, a lost or replaced
//!   watch, the inputs forgotten) moves the generation or drops the inputs.
//!   It is trusted only after a successful [`Watcher::sync`].
//! - Generations only grow: a ticket of [`Watcher::begin_inputs`] can never
//!   match inputs that were forgotten and registered again.
//! - The router never waits for notify's thread (which may be blocked
//!   handing it events): calls into notify (`watch`/`unwatch`) happen only
//!   in `Watcher::apply`, on the blocking pool, under the `native` lock the
//!   router never takes. Lock order: `native`, `routes`, `applied`.
//! - notify's thread only hands events over; it never takes a lock of the
//!   daemon.
//! - Nothing polls, except the fallback of a `--watch` session that cannot
//!   get a native watch.
//! - This room never reads a `.rush` file, never hashes a file, never
//!   decides whether a task is up to date and never sees a cache key: it
//!   reports keys, paths and generations (clean keys are
//!   `cache/up_to_date.rs`'s), and imports nothing from `crate::cache`.

mod inputs;
mod native;
mod router;
mod routes;
mod trees;
mod watcher;

pub(crate) use inputs::{Ticket, WatchDir, path_id};
pub(crate) use routes::Key;
pub(crate) use trees::PathFilter;
pub(crate) use watcher::Watcher;
