//! `Static<T>`: a static the library writes at one known moment and reads
//! without a lock afterwards, in place of `static mut`.

use core::cell::UnsafeCell;

/// A static written only where nothing else can run: in the constructor
/// (single-threaded, before `main`; an atomic flag or length published
/// after the write tells readers it is there), or in LD_AUDIT callbacks,
/// which ld.so serialises under its loader lock. Every access is an
/// `unsafe` block saying which of the two holds.
pub struct Static<T>(UnsafeCell<T>);

// SAFETY: shared between threads only as the type's documentation says:
// every write happens before any concurrent reader can see the value
// (constructor, then a Release store the readers Acquire), or under the
// loader lock that serialises every access (audit callbacks).
unsafe impl<T> Sync for Static<T> {}

impl<T> Static<T> {
    pub const fn new(v: T) -> Self {
        Static(UnsafeCell::new(v))
    }

    /// The value's address; dereferencing it is the caller's `unsafe`.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}
