//! The plugin side of the native C ABI (`docs/plugins.md`, "The native
//! ABI"): what the `taskrush_native_*` exports that
//! [`export_plugin!`](crate::export_plugin) emits off `wasm32` do. Plugin
//! code never calls it.
//!
//! The only module of the SDK besides `abi` that may use `unsafe`: the
//! ABI passes raw pointers. Every `unsafe` block says why it is sound,
//! relying on the ABI's ownership rules: the host's message is borrowed
//! for the call; the answer is allocated here (a boxed slice) and comes
//! back to [`free`] with its length; the host's answers to host calls are
//! the host's and are copied before the next callback.
//!
//! Panics never cross the boundary: [`call`] runs the plugin under
//! `catch_unwind` (the [`Dispatcher`](crate::Dispatcher) already answers a
//! panicking handler with an error; what is left, e.g. a panic building
//! the plugin, returns [`CALL_PANICKED`]).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use taskrush_protocol::host::native::{
    ABI_VERSION, CALL_BAD_ARGUMENTS, CALL_OK, CALL_PANICKED, HOST_ANSWERED,
};

use crate::{Host, Transport};

/// The host callback: `(ctx, msg, len, &answer, &answer_len) -> i32`.
pub type HostFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    msg: *const u8,
    len: usize,
    answer: *mut *const u8,
    answer_len: *mut usize,
) -> i32;

thread_local! {
    /// The callback of the call in progress on this thread.
    static CURRENT: Cell<Option<(*mut c_void, HostFn)>> = const { Cell::new(None) };
}

/// `taskrush_native_call`: `handle` gets the message, its answer is
/// handed to the host in a buffer [`free`] frees.
///
/// # Safety
/// `msg` points to `len` readable bytes for the call (or is null with
/// `len` 0); `out` and `out_len` are writable; `host_call`, when given,
/// may be called with `ctx` during the call.
pub unsafe fn call(
    handle: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    msg: *const u8,
    len: usize,
    ctx: *mut c_void,
    host_call: Option<HostFn>,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    if out.is_null() || out_len.is_null() || (msg.is_null() && len != 0) {
        return CALL_BAD_ARGUMENTS;
    }
    // SAFETY: both checked non-null; the caller's contract makes them
    // writable.
    unsafe {
        *out = std::ptr::null_mut();
        *out_len = 0;
    }
    let input: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract: `len` bytes at `msg`, unchanged
        // for the call.
        unsafe { std::slice::from_raw_parts(msg, len) }
    };
    let previous = CURRENT.with(|c| c.replace(host_call.map(|f| (ctx, f))));
    let answer = catch_unwind(AssertUnwindSafe(|| handle(input)));
    CURRENT.with(|c| c.set(previous));
    match answer {
        Ok(Some(bytes)) if !bytes.is_empty() => {
            let boxed = bytes.into_boxed_slice();
            let n = boxed.len();
            let ptr = Box::into_raw(boxed) as *mut u8;
            // SAFETY: checked non-null and writable above.
            unsafe {
                *out = ptr;
                *out_len = n;
            }
            CALL_OK
        }
        Ok(_) => CALL_OK,
        Err(_) => CALL_PANICKED,
    }
}

/// `taskrush_native_free`: frees an answer [`call`] handed out.
///
/// # Safety
/// `ptr` and `len` are what `call` wrote to `*out`/`*out_len`, freed once
/// (null is ignored).
pub unsafe fn free(ptr: *mut u8, len: usize) {
    if ptr.is_null() {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr, len);
    // SAFETY: the caller's contract: a boxed slice of exactly `len` bytes
    // from `call`, not freed before.
    drop(unsafe { Box::from_raw(slice) });
}

/// The [`Transport`] of a native plugin: the callback of the call in
/// progress on this thread (none outside a call: no answer).
struct Callback;

impl Transport for Callback {
    fn call(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let (ctx, f) = CURRENT.with(Cell::get)?;
        let mut answer: *const u8 = std::ptr::null();
        let mut answer_len = 0usize;
        // SAFETY: the host gave `f` and `ctx` for this call, which is in
        // progress on this thread; `message` outlives the callback and the
        // out-pointers are local.
        let rc = unsafe {
            f(
                ctx,
                message.as_ptr(),
                message.len(),
                &mut answer,
                &mut answer_len,
            )
        };
        if rc != HOST_ANSWERED || answer.is_null() {
            return None;
        }
        // SAFETY: the ABI: the host's answer, `answer_len` bytes valid
        // until its next callback or the end of the call; copied now.
        Some(unsafe { std::slice::from_raw_parts(answer, answer_len) }.to_vec())
    }
}

/// The [`Host`] of a native plugin.
pub fn host() -> Host {
    Host::new(Callback)
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn echo_host(
        ctx: *mut c_void,
        msg: *const u8,
        len: usize,
        answer: *mut *const u8,
        answer_len: *mut usize,
    ) -> i32 {
        // SAFETY: the test passes a `Vec<u8>` as `ctx`; the plugin passes
        // `len` bytes at `msg` and writable out-pointers.
        unsafe {
            let buf = &mut *(ctx as *mut Vec<u8>);
            *buf = std::slice::from_raw_parts(msg, len).to_vec();
            *answer = buf.as_ptr();
            *answer_len = buf.len();
        }
        HOST_ANSWERED
    }

    #[test]
    fn an_answer_crosses_the_boundary_and_is_freed_and_host_calls_reach_the_callback() {
        let mut seen = Vec::new();
        let (mut out, mut out_len) = (std::ptr::null_mut(), 0usize);
        let msg = b"ping";
        // SAFETY: valid message, out-pointers and callback context.
        let rc = unsafe {
            call(
                |input| {
                    let echoed = host_echo(input);
                    Some(echoed)
                },
                msg.as_ptr(),
                msg.len(),
                &mut seen as *mut Vec<u8> as *mut c_void,
                Some(echo_host),
                &mut out,
                &mut out_len,
            )
        };
        assert_eq!(rc, CALL_OK);
        // SAFETY: what `call` returned.
        let answer = unsafe { std::slice::from_raw_parts(out, out_len) }.to_vec();
        // SAFETY: freed once, with its length.
        unsafe { free(out, out_len) };
        assert_eq!(answer, b"host saw ping");
        assert_eq!(seen, b"ping");
    }

    fn host_echo(input: &[u8]) -> Vec<u8> {
        let back = Callback.call(input).unwrap_or_default();
        [b"host saw ".as_slice(), &back].concat()
    }

    #[test]
    fn a_panic_is_answered_with_a_code_not_unwound_across() {
        let (mut out, mut out_len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: valid (empty) message and out-pointers; no callback.
        let rc = unsafe {
            call(
                |_| panic!("boom"),
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                None,
                &mut out,
                &mut out_len,
            )
        };
        assert_eq!(rc, CALL_PANICKED);
        assert!(out.is_null());
    }
}
