//! Arbitrary bytes after the magic as `/etc/ld.so.cache`: the lookup the
//! auditor makes for every bare name found nowhere else must never panic
//! or read outside the bytes, and what it returns lies inside them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = b"glibc-ld.so.cache1.1".to_vec();
    bytes.extend_from_slice(data);
    for name in [&b"libc.so.6"[..], b"", b"libm.so.6"] {
        if let Some(p) = fmcache_core::ldcache::lookup(&bytes, name, fmcache_core::ldcache::FLAGS_X8664_LIBC6) {
            let range = bytes.as_ptr_range();
            assert!(range.contains(&p.as_ptr()) && p.first() == Some(&b'/'));
        }
    }
});
