//! dlerror(): ld.so names the file it tried, which under the cache may be
//! a staged copy or a missing name pointed into the stage; the program
//! sees the original text.

use core::ffi::c_char;

use crate::state::{mode, Mode};

hook! {
    // The real dlerror is resolved in the constructor with the rest: a
    // dlsym() at the time of the call would clear the very error asked for.
    fn dlerror() -> *mut c_char, real => {
        let msg = real();
        if let (Mode::Serve(srv), false) = (mode(), msg.is_null()) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: dlerror's text is a NUL-terminated, writable buffer
                // libc allocated for this thread; it only gets shorter.
                unsafe {
                    let len = core::ffi::CStr::from_ptr(msg).to_bytes().len();
                    let text = core::slice::from_raw_parts_mut(msg.cast::<u8>(), len);
                    let n = srv.unstage_message(text);
                    *msg.add(n) = 0;
                }
            }));
        }
        msg
    };
}
