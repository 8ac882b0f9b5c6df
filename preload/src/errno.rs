//! The application's errno (we are in its link namespace as a preload).

pub fn set(e: i32) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

pub fn get() -> i32 {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}
