//! The guest side of the WebAssembly ABI (`docs/plugins.md`, "The guest
//! ABI"): memory handed between host and guest, and the `host_call`
//! import. Used by the code [`export_plugin!`](crate::export_plugin)
//! emits; plugin code never calls it.
//!
//! The only module of the SDK that may use `unsafe` (the workspace denies
//! it elsewhere): the ABI passes raw pointers into linear memory. Every
//! `unsafe` block says why it is sound, relying on the ABI's ownership
//! rules: the host writes into and frees only memory that
//! `taskrush_alloc` returned, with the length it asked for.
#![allow(unsafe_code)]

pub use taskrush_protocol::host::wasm::ABI_VERSION;

/// `version` as a byte array of its own length, for the `taskrush_version`
/// custom section (a `static` of a fixed-size type).
pub const fn version_bytes<const N: usize>(version: &str) -> [u8; N] {
    let bytes = version.as_bytes();
    assert!(bytes.len() == N, "the array length must be the version's");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

#[cfg(target_arch = "wasm32")]
pub use guest::{alloc, free, handle, host};

#[cfg(target_arch = "wasm32")]
mod guest {
    use std::alloc::Layout;

    use taskrush_protocol::host::wasm::{pack, unpack};

    use crate::{Dispatcher, Host, TaskRushPlugin, Transport};

    /// Size `len` (at least 1: a zero-sized allocation is undefined),
    /// alignment 1; `None` past what the allocator accepts.
    fn layout(len: u32) -> Option<Layout> {
        Layout::from_size_align((len as usize).max(1), 1).ok()
    }

    /// `taskrush_alloc`: `len` bytes owned by whoever asked (null when out
    /// of memory or too large).
    pub fn alloc(len: u32) -> *mut u8 {
        match layout(len) {
            // SAFETY: the layout's size is not zero.
            Some(layout) => unsafe { std::alloc::alloc(layout) },
            None => std::ptr::null_mut(),
        }
    }

    /// `taskrush_free`.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`] with the same `len` and is freed once
    /// (null is ignored).
    pub unsafe fn free(ptr: *mut u8, len: u32) {
        if ptr.is_null() {
            return;
        }
        if let Some(layout) = layout(len) {
            // SAFETY: the caller's contract: `alloc` returned `ptr` for
            // this very layout.
            unsafe { std::alloc::dealloc(ptr, layout) }
        }
    }

    /// Copies `bytes` into fresh guest memory, packed for the host (which
    /// frees it with `taskrush_free`); 0 when empty or out of memory.
    fn hand_over(bytes: &[u8]) -> i64 {
        let len = bytes.len() as u32; // wasm32: usize is 32 bits
        if len == 0 {
            return 0;
        }
        let ptr = alloc(len);
        if ptr.is_null() {
            return 0;
        }
        // SAFETY: `ptr` is a fresh allocation of `len` bytes, distinct
        // from `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        pack(ptr as u32, len)
    }

    /// `taskrush_handle`.
    ///
    /// # Safety
    /// `ptr` points to `len` initialized bytes that stay valid and
    /// unchanged for the call (the host wrote them into memory from
    /// `taskrush_alloc` and frees them after the call).
    pub unsafe fn handle<P: TaskRushPlugin>(
        dispatcher: &mut Dispatcher<P>,
        ptr: *const u8,
        len: u32,
    ) -> i64 {
        let input: &[u8] = if len == 0 || ptr.is_null() {
            &[]
        } else {
            // SAFETY: the caller's contract.
            unsafe { std::slice::from_raw_parts(ptr, len as usize) }
        };
        match dispatcher.handle(input) {
            Some(out) => hand_over(&out),
            None => 0,
        }
    }

    #[link(wasm_import_module = "taskrush")]
    unsafe extern "C" {
        /// `taskrush.host_call(ptr, len) -> i64`.
        #[link_name = "host_call"]
        fn taskrush_host_call(ptr: *const u8, len: u32) -> i64;
    }

    /// The [`Transport`] of a WebAssembly guest: the `host_call` import.
    struct HostCall;

    impl Transport for HostCall {
        fn call(&mut self, message: &[u8]) -> Option<Vec<u8>> {
            // SAFETY: the host only reads the `len` bytes at `ptr` during
            // the call; `message` outlives it.
            let packed = unsafe { taskrush_host_call(message.as_ptr(), message.len() as u32) };
            if packed == 0 {
                return None;
            }
            let (ptr, len) = unpack(packed);
            let ptr = ptr as usize as *mut u8;
            // SAFETY: the ABI: the host wrote `len` bytes of response into
            // memory it got from `taskrush_alloc(len)`, and the guest owns
            // (and frees) it from here on.
            let out = unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec();
            // SAFETY: as above; freed once, with the length it was
            // allocated with.
            unsafe { free(ptr, len) };
            Some(out)
        }
    }

    /// The [`Host`] of a WebAssembly guest.
    pub fn host() -> Host {
        Host::new(HostCall)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_section_holds_the_version_text() {
        const V: &str = "1.2.3-beta.1";
        const B: [u8; V.len()] = super::version_bytes(V);
        assert_eq!(&B, V.as_bytes());
    }
}
