//! Write TaskRush plugins in Rust.
//!
//! Implement [`TaskRushPlugin`] (the RFC's trait, in a form that crosses a
//! WebAssembly or C boundary: every method gets a [`Host`] handle, commands
//! are a method instead of boxed closures), then export it with
//! [`export_plugin!`]. One plugin, three kinds, with no change to its
//! code: built for `wasm32-wasip1`, the crate is a WebAssembly plugin
//! that speaks the guest ABI (`docs/plugins.md`, "The guest ABI"); built
//! as a `cdylib` for the host, a native plugin that speaks the C ABI
//! ("The native ABI"); and a binary whose `main` calls the
//! `taskrush_plugin_main()` the macro emits is an external plugin
//! speaking the stdio protocol. The crate's own unit tests run the plugin
//! through a [`Dispatcher`].
//!
//! The messages are the very same ones every plugin kind speaks, from
//! `taskrush-protocol` (re-exported as [`protocol`]).
//!
//! ```
//! use taskrush_plugin::{
//!     CommandResult, Error, Hook, Host, PluginCommand, Result, TaskContext, TaskRushPlugin,
//!     export_plugin,
//! };
//!
//! #[derive(Default)]
//! struct NoFridayDeploys {
//!     vetoed: u32,
//! }
//!
//! impl TaskRushPlugin for NoFridayDeploys {
//!     fn name(&self) -> &str {
//!         "no-friday-deploys"
//!     }
//!     fn version(&self) -> &str {
//!         env!("CARGO_PKG_VERSION")
//!     }
//!     fn hooks(&self) -> Vec<Hook> {
//!         vec![Hook::BeforeTask] // the host calls no other hook
//!     }
//!     fn before_task(&mut self, ctx: &TaskContext, host: &mut Host) -> Result {
//!         let today = host.env_get("TODAY")?.unwrap_or_default();
//!         if ctx.task_name == "deploy" && today == "friday" {
//!             self.vetoed += 1;
//!             return Err(Error::veto("no deploys on Fridays"));
//!         }
//!         Ok(())
//!     }
//!     fn commands(&self) -> Vec<PluginCommand> {
//!         vec![PluginCommand {
//!             name: "vetoes".into(),
//!             description: "How many deploys were refused".into(),
//!         }]
//!     }
//!     fn command(
//!         &mut self,
//!         _name: &str,
//!         _args: &[String],
//!         _cwd: &str,
//!         _host: &mut Host,
//!     ) -> Result<CommandResult> {
//!         Ok(CommandResult {
//!             stdout: format!("{}\n", self.vetoed),
//!             ..CommandResult::default()
//!         })
//!     }
//! }
//!
//! export_plugin!(NoFridayDeploys);
//! ```

pub mod abi;
mod dispatch;
mod error;
mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod stdio;

pub use dispatch::{Dispatcher, PROTOCOL_VERSIONS};
pub use error::{Error, HostError, Result};
pub use host::{Host, Transport};
/// The message types, as the daemon and every SDK use them.
pub use taskrush_protocol as protocol;
pub use taskrush_protocol::host::{HttpRequestParams, HttpRequestResult, RunCommandResult};
pub use taskrush_protocol::plugin::{
    CommandResult, Hook, InitializeParams, PluginCommand, TaskContext, TaskError, TaskResult,
};
pub use taskrush_protocol::run::TaskStatus;

/// A TaskRush plugin. Only `name` and `version` are required; every other
/// method has a default that does nothing.
///
/// Every method receives the [`Host`] handle for host calls (HTTP, files,
/// environment, programs, log lines), each checked against the plugin's
/// grants. Calls to one plugin instance never overlap.
pub trait TaskRushPlugin {
    /// The plugin's name (what `plugin list` shows when the `.rush` entry
    /// does not name it).
    fn name(&self) -> &str;

    /// The plugin's version, usually `env!("CARGO_PKG_VERSION")`.
    fn version(&self) -> &str;

    /// The hooks this plugin implements. The host calls no other hook, so
    /// a plugin that only adds commands costs tasks nothing: list every
    /// hook you override.
    fn hooks(&self) -> Vec<Hook> {
        Vec::new()
    }

    /// The first call, once per instance: the global `config`, the
    /// project root and the granted permissions. An error fails the
    /// plugin's start.
    fn initialize(&mut self, params: &InitializeParams, host: &mut Host) -> Result {
        let _ = (params, host);
        Ok(())
    }

    /// The last call before the instance is dropped (errors are logged).
    fn shutdown(&mut self, host: &mut Host) -> Result {
        let _ = host;
        Ok(())
    }

    /// Before a task's command runs. Any error stops the task;
    /// [`Error::veto`] says it was deliberate.
    fn before_task(&mut self, ctx: &TaskContext, host: &mut Host) -> Result {
        let _ = (ctx, host);
        Ok(())
    }

    /// After a task ended: success, failed, cancelled, or cached.
    fn after_task(&mut self, ctx: &TaskContext, result: &TaskResult, host: &mut Host) -> Result {
        let _ = (ctx, result, host);
        Ok(())
    }

    /// After a task failed, with the failure.
    fn on_task_failure(&mut self, ctx: &TaskContext, error: &TaskError, host: &mut Host) -> Result {
        let _ = (ctx, error, host);
        Ok(())
    }

    /// The commands this plugin adds: `taskrush <name> args…`.
    fn commands(&self) -> Vec<PluginCommand> {
        Vec::new()
    }

    /// Runs one of [`commands`](TaskRushPlugin::commands) (the host asks
    /// for no other): `args` as typed, `cwd` the client's directory.
    fn command(
        &mut self,
        name: &str,
        args: &[String],
        cwd: &str,
        host: &mut Host,
    ) -> Result<CommandResult> {
        let _ = (args, cwd, host);
        Err(Error::invalid_params(format!("unknown command `{name}`")))
    }
}

/// Exports a [`TaskRushPlugin`] as a WebAssembly, native or external
/// plugin.
///
/// `export_plugin!(MyPlugin)` builds the instance with `Default`;
/// `export_plugin!(MyPlugin, MyPlugin::new(…))` with any expression (run
/// once, before the first message). On `target_arch = "wasm32"` it emits
/// the guest ABI's exports (`taskrush_abi_version`, `taskrush_alloc`,
/// `taskrush_free`, `taskrush_handle`), the `taskrush_version` custom
/// section (the plugin crate's `CARGO_PKG_VERSION`), and binds [`Host`] to
/// the `taskrush.host_call` import. On other targets it emits the native
/// C ABI's exports (`taskrush_native_abi_version`, `taskrush_native_call`,
/// `taskrush_native_free`: a `cdylib` of the crate is a native plugin)
/// and `pub fn taskrush_plugin_main() -> std::process::ExitCode`, which
/// serves the stdio protocol (a binary whose `main` calls it is an
/// external plugin). Use it once per crate, at the top level, and link
/// at most one crate that uses it into a binary (their exported symbols
/// would clash). The
/// expansion allows `unsafe_code` for its unsafe attributes, which a
/// crate-level `deny(unsafe_code)` permits (`forbid` does not).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::export_plugin!($plugin, <$plugin as ::core::default::Default>::default());
    };
    ($plugin:ty, $make:expr) => {
        // The workspace lint denies `unsafe_code`; exports need the unsafe
        // attributes `no_mangle` and `link_section`. Each use is sound:
        // see the comments below. All raw memory access is in
        // `taskrush_plugin::abi`.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            ::std::thread_local! {
                static TASKRUSH_DISPATCHER: ::core::cell::RefCell<
                    ::core::option::Option<$crate::Dispatcher<$plugin>>,
                > = const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            // SAFETY (no_mangle): the ABI's names; no other symbol in a
            // plugin has them (the macro is used once per crate).
            #[unsafe(no_mangle)]
            extern "C" fn taskrush_abi_version() -> i32 {
                $crate::abi::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            extern "C" fn taskrush_alloc(len: u32) -> *mut u8 {
                $crate::abi::alloc(len)
            }

            #[unsafe(no_mangle)]
            unsafe extern "C" fn taskrush_free(ptr: *mut u8, len: u32) {
                // SAFETY: the ABI lets the host free only what
                // `taskrush_alloc` or `taskrush_handle` returned, once,
                // with its length.
                unsafe { $crate::abi::free(ptr, len) }
            }

            #[unsafe(no_mangle)]
            unsafe extern "C" fn taskrush_handle(ptr: *const u8, len: u32) -> i64 {
                TASKRUSH_DISPATCHER.with(|slot| {
                    let mut slot = slot.borrow_mut();
                    let dispatcher = slot
                        .get_or_insert_with(|| $crate::Dispatcher::new($make, $crate::abi::host()));
                    // SAFETY: the host passes `len` bytes it wrote into
                    // memory from `taskrush_alloc`, and frees them only
                    // after this call returns.
                    unsafe { $crate::abi::handle(dispatcher, ptr, len) }
                })
            }

            // SAFETY (link_section): a custom section holds data only; the
            // name is the ABI's and nothing else in the module uses it.
            #[used]
            #[unsafe(link_section = "taskrush_version")]
            static TASKRUSH_VERSION: [u8; ::core::env!("CARGO_PKG_VERSION").len()] =
                $crate::abi::version_bytes(::core::env!("CARGO_PKG_VERSION"));
        };

        // The native C ABI (`taskrush_plugin::native`): one instance per
        // calling thread (the host calls a plugin from one thread).
        #[cfg(not(target_arch = "wasm32"))]
        #[allow(unsafe_code)]
        const _: () = {
            ::std::thread_local! {
                static TASKRUSH_DISPATCHER: ::core::cell::RefCell<
                    ::core::option::Option<$crate::Dispatcher<$plugin>>,
                > = const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            // SAFETY (no_mangle): the ABI's names; no other symbol in a
            // plugin has them (the macro is used once per crate).
            #[unsafe(no_mangle)]
            extern "C" fn taskrush_native_abi_version() -> u32 {
                $crate::native::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            unsafe extern "C" fn taskrush_native_call(
                msg: *const u8,
                len: usize,
                ctx: *mut ::core::ffi::c_void,
                host_call: ::core::option::Option<$crate::native::HostFn>,
                out: *mut *mut u8,
                out_len: *mut usize,
            ) -> i32 {
                let handle = |input: &[u8]| {
                    TASKRUSH_DISPATCHER.with(|slot| {
                        let mut slot = slot.borrow_mut();
                        slot.get_or_insert_with(|| {
                            $crate::Dispatcher::new($make, $crate::native::host())
                        })
                        .handle(input)
                    })
                };
                // SAFETY: the ABI: the host passes `len` bytes at `msg`,
                // writable `out`/`out_len`, and a callback valid for the
                // call.
                unsafe { $crate::native::call(handle, msg, len, ctx, host_call, out, out_len) }
            }

            #[unsafe(no_mangle)]
            unsafe extern "C" fn taskrush_native_free(ptr: *mut u8, len: usize) {
                // SAFETY: the ABI lets the host free only what
                // `taskrush_native_call` returned, once, with its length.
                unsafe { $crate::native::free(ptr, len) }
            }
        };

        /// Serves this plugin on stdin/stdout (an external plugin): a
        /// binary's `main` returns it.
        #[cfg(not(target_arch = "wasm32"))]
        pub fn taskrush_plugin_main() -> ::std::process::ExitCode {
            $crate::stdio::serve($make)
        }
    };
}
