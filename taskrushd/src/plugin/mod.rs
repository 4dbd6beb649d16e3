//! Plugins: external processes that add hooks and commands to a project.

mod conformance;
mod host;
mod manifest;
mod process;

pub(crate) use conformance::test as conformance_test;
pub(crate) use host::{PluginFailure, PluginHost, RunPlugins, not_declared};
