//! A hook's C arguments made safe at the boundary. The `hook!` macro
//! converts every argument once (`FromC`), under the C contract of the
//! function it replaces; handlers below it get `CPath`, `Out`,
//! `OutBytes` and `InBytes` and never dereference a raw pointer
//! themselves. Each
//! constructor is `unsafe` and states the contract it relies on; every
//! method after it is safe.

use core::ffi::{c_char, CStr};
use core::marker::PhantomData;

/// A path (or other string) argument: null, or a NUL-terminated string
/// that stays valid for the call. Copy, like the pointer it holds.
#[derive(Clone, Copy)]
pub struct CPath<'a> {
    ptr: *const c_char,
    _str: PhantomData<&'a CStr>,
}

impl<'a> CPath<'a> {
    /// # Safety
    /// `ptr` is null or points to a NUL-terminated string that stays
    /// valid during `'a`. It may change between reads (mkstemp's template
    /// does, in the real call), never while one is held.
    pub unsafe fn new(ptr: *const c_char) -> Self {
        CPath {
            ptr,
            _str: PhantomData,
        }
    }

    /// No string (a call that has no path, `fchdir` say).
    pub const fn null() -> CPath<'static> {
        CPath {
            ptr: core::ptr::null(),
            _str: PhantomData,
        }
    }

    /// A string of ours (a staged path, say).
    pub fn of(s: &'a CStr) -> Self {
        CPath {
            ptr: s.as_ptr(),
            _str: PhantomData,
        }
    }

    pub fn get(self) -> Option<&'a CStr> {
        // SAFETY: `new`'s contract (or `of`'s borrow): NUL-terminated and
        // valid for 'a.
        (!self.ptr.is_null()).then(|| unsafe { CStr::from_ptr(self.ptr) })
    }

    /// The string's bytes without the NUL, if non-null.
    pub fn bytes(self) -> Option<&'a [u8]> {
        self.get().map(CStr::to_bytes)
    }

    pub fn is_null(self) -> bool {
        self.ptr.is_null()
    }

    /// The pointer, to hand to a real function unchanged.
    pub fn as_ptr(self) -> *const c_char {
        self.ptr
    }
}

/// A caller's out-parameter (`struct stat *`): null, or writable for one
/// `T` (any alignment). Writes replace the whole value; nothing reads it
/// before the real function filled it (`filled`).
pub struct Out<'a, T> {
    ptr: *mut T,
    _buf: PhantomData<&'a mut T>,
}

impl<T> Clone for Out<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<'_, T> {}

impl<'a, T: Copy> Out<'a, T> {
    /// # Safety
    /// `ptr` is null or valid for writes of one `T` during `'a`.
    pub unsafe fn new(ptr: *mut T) -> Self {
        Out {
            ptr,
            _buf: PhantomData,
        }
    }

    pub fn is_null(self) -> bool {
        self.ptr.is_null()
    }

    /// Writes `v`; `false` (nothing written) when the pointer is null.
    pub fn write(self, v: T) -> bool {
        if self.ptr.is_null() {
            return false;
        }
        // SAFETY: `new`'s contract: non-null means writable for one T.
        unsafe { core::ptr::write_unaligned(self.ptr, v) };
        true
    }

    /// Copies a record of up to one `T` (a directory entry shorter than
    /// the struct, say); the rest of the caller's `T` stays as it was.
    pub fn write_bytes(self, rec: &[u8]) -> bool {
        if self.ptr.is_null() {
            return false;
        }
        let n = rec.len().min(core::mem::size_of::<T>());
        // SAFETY: `new`'s contract: writable for one T, and n <= its size.
        unsafe { core::ptr::copy_nonoverlapping(rec.as_ptr(), self.ptr.cast::<u8>(), n) };
        true
    }

    /// The same buffer as a `U` no larger than `T` (checked when built):
    /// `struct dirent` and `struct dirent64` on 64-bit Linux.
    pub fn cast<U: Copy>(self) -> Out<'a, U> {
        const { assert!(core::mem::size_of::<U>() <= core::mem::size_of::<T>()) };
        Out {
            ptr: self.ptr.cast(),
            _buf: PhantomData,
        }
    }

    /// The pointer, to return to the caller.
    pub fn as_ptr(self) -> *mut T {
        self.ptr
    }

    /// What the real function wrote, once it succeeded.
    ///
    /// # Safety
    /// The real function returned success for this pointer, so it wrote
    /// a whole `T` there.
    pub unsafe fn filled(self) -> Option<T> {
        // SAFETY: the caller's promise above; non-null checked.
        (!self.ptr.is_null()).then(|| unsafe { core::ptr::read_unaligned(self.ptr) })
    }
}

/// A caller's byte buffer of `len` bytes (readlink, getcwd, realpath):
/// writes stay inside it.
#[derive(Clone, Copy)]
pub struct OutBytes<'a> {
    ptr: *mut c_char,
    len: usize,
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> OutBytes<'a> {
    /// # Safety
    /// `ptr` is null or valid for writes of `len` bytes during `'a`.
    pub unsafe fn new(ptr: *mut c_char, len: usize) -> Self {
        OutBytes {
            ptr,
            len: if ptr.is_null() { 0 } else { len },
            _buf: PhantomData,
        }
    }

    /// No buffer (the caller passed NULL: the call allocates).
    pub const fn none() -> OutBytes<'static> {
        OutBytes {
            ptr: core::ptr::null_mut(),
            len: 0,
            _buf: PhantomData,
        }
    }

    /// A buffer from malloc for `len` bytes (what realpath(p, NULL) and
    /// friends return, for the caller to free); `None` when out of memory.
    pub fn malloc(len: usize) -> Option<Self> {
        // SAFETY: plain allocation; the result is checked before use.
        let ptr = unsafe { libc::malloc(len.max(1)) }.cast::<c_char>();
        // SAFETY: malloc gave `len` writable bytes.
        (!ptr.is_null()).then(|| unsafe { OutBytes::new(ptr, len) })
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// Copies as much of `bytes` as fits (readlink's truncation); returns
    /// how many.
    pub fn write_prefix(self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.len);
        // SAFETY: `n` is within the `len` writable bytes of `new`'s
        // contract, and `bytes` is ours (no overlap with the caller's).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.cast::<u8>(), n) };
        n
    }

    /// Copies `bytes` and a NUL; `false` (nothing written) when they do
    /// not fit.
    pub fn write_cstr(self, bytes: &[u8]) -> bool {
        if bytes.len() >= self.len {
            return false;
        }
        self.write_prefix(bytes);
        // SAFETY: bytes.len() < len, inside the buffer.
        unsafe { *self.ptr.add(bytes.len()) = 0 };
        true
    }

    /// The pointer, to return to the caller.
    pub fn as_ptr(self) -> *mut c_char {
        self.ptr
    }
}

/// An input of `len` bytes (bind's address), read only once the real
/// call accepted it: a pointer the kernel refused (EFAULT) is never made
/// into a slice.
#[derive(Clone, Copy)]
pub struct InBytes<'a> {
    ptr: *const u8,
    len: usize,
    _buf: PhantomData<&'a [u8]>,
}

impl<'a> InBytes<'a> {
    /// # Safety
    /// `ptr` is null, or readable and unchanged for `len` bytes during
    /// `'a` whenever the real call succeeded with it.
    pub unsafe fn new(ptr: *const u8, len: usize) -> Self {
        InBytes {
            ptr,
            len,
            _buf: PhantomData,
        }
    }

    /// The bytes, after the real call succeeded; `None` for null.
    pub fn after_success(self) -> Option<&'a [u8]> {
        // SAFETY: `new`'s contract; the caller asks only after success.
        (!self.ptr.is_null()).then(|| unsafe { core::slice::from_raw_parts(self.ptr, self.len) })
    }
}

/// A writable NUL-terminated string's bytes, without the NUL (dlerror's
/// message, which we shorten in place), or `None` for null.
///
/// # Safety
/// `ptr` is null or a NUL-terminated string writable up to its NUL, used
/// by nothing else during `'a`.
pub unsafe fn cstr_mut<'a>(ptr: *mut c_char) -> Option<&'a mut [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise: NUL-terminated, writable, ours for 'a.
    unsafe {
        let len = CStr::from_ptr(ptr).to_bytes().len();
        Some(core::slice::from_raw_parts_mut(ptr.cast::<u8>(), len))
    }
}

/// How `hook!` turns one raw argument into what its handler gets.
pub trait FromC<'a> {
    type Safe;
    /// # Safety
    /// The argument satisfies the C contract of the function it was
    /// passed to (see each impl's `Safe` type).
    unsafe fn convert(self) -> Self::Safe;
}

impl<'a> FromC<'a> for *const c_char {
    type Safe = CPath<'a>;
    unsafe fn convert(self) -> CPath<'a> {
        // SAFETY: the caller's contract: a C string argument.
        unsafe { CPath::new(self) }
    }
}

/// A caller's buffer or out-pointer of one value of these types.
macro_rules! out {
    ($($t:ty),* $(,)?) => {
        $(impl<'a> FromC<'a> for *mut $t {
            type Safe = Out<'a, $t>;
            unsafe fn convert(self) -> Out<'a, $t> {
                // SAFETY: the caller's contract: writable for one value.
                unsafe { Out::new(self) }
            }
        })*
    };
}

out!(
    libc::stat,
    libc::statx,
    libc::dirent,
    libc::dirent64,
    *mut libc::dirent,
    *mut libc::dirent64,
);

/// Values, handles the library only compares or passes on (DIR *, FILE
/// *), and pointers whose length is another argument (converted in the
/// hook's line, where both are at hand).
macro_rules! as_is {
    ($($t:ty),* $(,)?) => {
        $(impl FromC<'_> for $t {
            type Safe = $t;
            unsafe fn convert(self) -> $t {
                self
            }
        })*
    };
}

as_is!(
    i32,
    u32,
    i64,
    u64,
    usize,
    *mut c_char,
    *mut libc::DIR,
    *mut libc::FILE,
    *mut *mut *mut libc::dirent,
    *mut *mut *mut libc::dirent64,
    *const *const c_char,
    *const libc::timespec,
    *const libc::timeval,
    *const libc::utimbuf,
    *const libc::sockaddr,
    *mut i32,
    *mut u64,
    *mut libc::c_void,
    *const libc::pthread_attr_t,
    *const libc::posix_spawnattr_t,
    *const libc::posix_spawn_file_actions_t,
    Option<extern "C" fn(*mut libc::c_void) -> i32>,
    Option<extern "C" fn(*mut libc::c_void) -> *mut libc::c_void>,
    Option<unsafe extern "C" fn(*const libc::dirent64) -> i32>,
    Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> i32>,
);
