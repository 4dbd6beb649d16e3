//! Loading a native plugin's library and calling through its C ABI
//! (`protocol::host::native`; `docs/plugins.md`, "The native ABI").
//!
//! The only module of the daemon besides the WebAssembly engine's module
//! load that may use `unsafe`: loading a library runs its initializers
//! and calling it trusts its symbols' types. Both are what "native
//! plugins are trusted code" means: the user allowed them
//! (`[native] allow = true`). Every `unsafe` block says what it relies on.
//!
//! A library is never unloaded: it is leaked once loaded (`dlclose` of
//! code a thread may still be in is undefined), so a plugin's calls can
//! never outlive its code.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use taskrush_protocol::host::native as abi;

type VersionFn = unsafe extern "C" fn() -> u32;
type HostFn =
    unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut *const u8, *mut usize) -> i32;
type CallFn = unsafe extern "C" fn(
    *const u8,
    usize,
    *mut c_void,
    Option<HostFn>,
    *mut *mut u8,
    *mut usize,
) -> i32;
type FreeFn = unsafe extern "C" fn(*mut u8, usize);

/// A loaded native plugin library (never unloaded).
#[derive(Clone, Copy)]
pub(crate) struct Library {
    call: CallFn,
    free: FreeFn,
}

/// Why a call returned no answer.
#[derive(Debug)]
pub(crate) enum CallFailed {
    /// The plugin panicked outside its dispatcher.
    Panicked,
    /// It returned another code.
    Code(i32),
}

impl Library {
    /// Load `path`, check its ABI version before anything else, and find
    /// its call and free symbols. The error names the file, and both
    /// versions on a mismatch.
    pub(crate) fn open(path: &Path) -> Result<Library, String> {
        let shown = path.display();
        // SAFETY: loading runs the library's initializers: native plugins
        // are trusted code the user allowed.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load `{shown}`: {e}"))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        let symbol = |name: &str| {
            format!(
                "`{shown}` does not export `{name}` (the native ABI): is it a TaskRush native plugin?"
            )
        };
        // SAFETY: the ABI's type of this symbol (`() -> u32`).
        let version = unsafe { lib.get::<VersionFn>(abi::SYMBOL_ABI_VERSION.as_bytes()) }
            .map_err(|_| symbol(abi::SYMBOL_ABI_VERSION))?;
        // SAFETY: calling the ABI-version symbol takes nothing and does
        // nothing but return a number.
        let version = unsafe { version() };
        if version != abi::ABI_VERSION {
            return Err(format!(
                "`{shown}` is built for native ABI version {version}, this host speaks version {}",
                abi::ABI_VERSION
            ));
        }
        // SAFETY: the ABI's types of these symbols, checked by the
        // version above.
        let call = unsafe { lib.get::<CallFn>(abi::SYMBOL_CALL.as_bytes()) }
            .map_err(|_| symbol(abi::SYMBOL_CALL))?;
        // SAFETY: as above.
        let free = unsafe { lib.get::<FreeFn>(abi::SYMBOL_FREE.as_bytes()) }
            .map_err(|_| symbol(abi::SYMBOL_FREE))?;
        Ok(Library {
            call: *call,
            free: *free,
        })
    }

    /// One message in, its answer out (`None`: no answer, a
    /// notification). The plugin's host calls go to `host` (`None`: no
    /// answer). A panic in `host` is answered as a failed host call; a
    /// plugin built with the SDK never unwinds into here.
    pub(crate) fn call(
        &self,
        message: &[u8],
        host: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, CallFailed> {
        let mut ctx = Ctx {
            host,
            answer: Vec::new(),
        };
        let (mut out, mut out_len) = (std::ptr::null_mut::<u8>(), 0usize);
        // SAFETY: the ABI: the message is borrowed for the call, `ctx`
        // lives across it and is only used by `trampoline`, the
        // out-pointers are local.
        let rc = unsafe {
            (self.call)(
                message.as_ptr(),
                message.len(),
                &mut ctx as *mut Ctx<'_> as *mut c_void,
                Some(trampoline),
                &mut out,
                &mut out_len,
            )
        };
        if rc != abi::CALL_OK {
            return Err(if rc == abi::CALL_PANICKED {
                CallFailed::Panicked
            } else {
                CallFailed::Code(rc)
            });
        }
        if out.is_null() {
            return Ok(None);
        }
        // SAFETY: the ABI: the plugin's answer, `out_len` bytes it owns
        // until we free it, once, with its length (just below).
        let answer = unsafe { std::slice::from_raw_parts(out, out_len) }.to_vec();
        // SAFETY: as above.
        unsafe { (self.free)(out, out_len) };
        Ok(Some(answer))
    }
}

/// The host side of one call: where host calls go and the last answer
/// (valid until the next callback, as the ABI says).
struct Ctx<'a> {
    host: &'a mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    answer: Vec<u8>,
}

/// The host callback handed to the plugin.
unsafe extern "C" fn trampoline(
    ctx: *mut c_void,
    msg: *const u8,
    len: usize,
    answer: *mut *const u8,
    answer_len: *mut usize,
) -> i32 {
    if ctx.is_null() || answer.is_null() || answer_len.is_null() || (msg.is_null() && len != 0) {
        return abi::HOST_FAILED;
    }
    // SAFETY: `ctx` is the `Ctx` `Library::call` passed for the call in
    // progress (the plugin hands it back unchanged), not otherwise used
    // meanwhile.
    let ctx = unsafe { &mut *(ctx as *mut Ctx<'_>) };
    let message: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the ABI: `len` bytes at `msg` for the callback.
        unsafe { std::slice::from_raw_parts(msg, len) }
    };
    // Panics never cross the boundary, this way either.
    let served = catch_unwind(AssertUnwindSafe(|| (ctx.host)(message)));
    match served {
        Ok(Some(bytes)) => {
            ctx.answer = bytes;
            // SAFETY: checked non-null; the plugin passed writable
            // out-pointers. The bytes stay in `ctx` until the next
            // callback or the end of the call.
            unsafe {
                *answer = ctx.answer.as_ptr();
                *answer_len = ctx.answer.len();
            }
            abi::HOST_ANSWERED
        }
        Ok(None) => abi::HOST_NO_ANSWER,
        Err(_) => abi::HOST_FAILED,
    }
}
