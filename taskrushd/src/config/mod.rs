//! The config room: everything about `.rush` files.
//!
//! Owns the data model, the parser and its positioned errors
//! (`rush_file`, `config_error`, the files a `.rush` includes merged
//! into one set of tasks in `includes`, a plugin entry's `limits:` in `limits`),
//! `${VAR}` expansion (`expand`), finding
//! the file (`discover`), bounded reads of files read whole (`whole_file`)
//! and the loaded projects kept while their file does not change
//! (`projects`); and the user's own config file (`user_config`: plugin
//! grants and denials for CI, stricter enforcement).
//!
//! Architecture invariants:
//! - Parsing never runs on a runtime worker nor under a shared lock.
//! - Every error names the file, and a line and column where there is one.
//! - Nothing here starts a process or touches the cache.

pub(crate) mod check;
pub(crate) mod config_error;
pub(crate) mod discover;
pub(crate) mod dotenv;
pub(crate) mod expand;
pub(crate) mod includes;
pub(crate) mod limits;
pub(crate) mod projects;
pub(crate) mod rush_file;
pub(crate) mod task_dir;
pub(crate) mod user_config;
pub(crate) mod whole_file;
