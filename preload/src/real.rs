//! The real libc functions behind our hooks, resolved once with
//! `dlsym(RTLD_NEXT)` and cached in a static per symbol.

/// `real!(name: fn(A, B) -> R)` evaluates to the next definition of `name`
/// as a function pointer. Resolution happens on first use (a hook may run
/// before our constructor, from another library's) and is idempotent, so
/// a race only resolves twice.
macro_rules! real {
    ($name:ident : fn($($arg:ty),*) -> $ret:ty) => {{
        static PTR: core::sync::atomic::AtomicPtr<libc::c_void> =
            core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
        let mut p = PTR.load(core::sync::atomic::Ordering::Relaxed);
        if p.is_null() {
            // SAFETY: a NUL-terminated symbol name.
            p = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!(stringify!($name), "\0").as_ptr().cast()) };
            PTR.store(p, core::sync::atomic::Ordering::Relaxed);
        }
        if p.is_null() {
            None
        } else {
            // SAFETY: the symbol has this C signature in glibc.
            Some(unsafe { core::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn($($arg),*) -> $ret>(p) })
        }
    }};
}

/// Calls the real function, or fails with ENOSYS if libc lacks it.
macro_rules! call_real {
    ($name:ident : fn($($arg:ty),*) -> $ret:ty, $fail:expr, ($($val:expr),*)) => {{
        match real!($name: fn($($arg),*) -> $ret) {
            // SAFETY: forwarding the caller's own arguments unchanged.
            Some(f) => unsafe { f($($val),*) },
            None => {
                crate::errno::set(libc::ENOSYS);
                $fail
            }
        }
    }};
}
