//! The cache room: is a task up to date, and what it stored.
//!
//! Owns cache keys and the on-disk store `.rush-cache/` (`store`), one
//! task's up-to-date check and the daemon-wide registry of cached tasks in
//! progress (`up_to_date`), the protocol a run follows (look up, claim,
//! invalidate, store: `lookup`; the runner calls nothing else of the
//! protocol), expanding `cache_files` patterns into input files
//! (`input_files`) and the in-memory memo of content hashes
//! (`file_hashes`), and the per-user store of task outputs that a hit
//! restores (`outputs`). Whether a file changed is `stamp.rs`'s, at the top.
//!
//! Architecture invariants:
//! - Slow, never stale: when in doubt, a full check.
//! - A key is stored only for inputs the run actually saw.
//! - Listing and hashing are bounded and stop when their run is cancelled.

pub(crate) mod file_hashes;
pub(crate) mod input_files;
pub(crate) mod lookup;
pub(crate) mod outputs;
pub(crate) mod store;
pub(crate) mod up_to_date;
