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
        if let Mode::Serve(srv) = mode() {
            // SAFETY: dlerror's text is null or a NUL-terminated, writable
            // buffer libc allocated for this thread, until its next call.
            if let Some(text) = unsafe { crate::cargs::cstr_mut(msg) } {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // Shortened in place: a new NUL at the new end.
                    let n = srv.unstage_message(text);
                    if let Some(end) = text.get_mut(n) {
                        *end = 0;
                    }
                }));
            }
        }
        msg
    };
}
