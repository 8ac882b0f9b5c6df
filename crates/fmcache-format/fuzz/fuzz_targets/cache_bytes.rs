//! Arbitrary bytes as a cache. The first byte chooses what is made right
//! before opening, so the fuzzer gets past checks no mutation can pass by
//! chance: bit 0 gives the file this build's identity, bit 1 recomputes
//! both checksums. The rest is the file, also read as a stage's `inodes`
//! table.
#![no_main]

use fmcache_format_fuzz::{exercise, fix_checksums, stamp_build};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if mode & 1 != 0 {
        stamp_build(&mut file);
    }
    if mode & 2 != 0 {
        fix_checksums(&mut file);
    }
    exercise(&file);
    for ino in [0u64, 1, u64::MAX, file.len() as u64] {
        let _ = fmcache_core::stage::staged_entry(&file, ino);
    }
    if file.len() >= 16 {
        let ino = u64::from_le_bytes(file[..8].try_into().unwrap());
        let _ = fmcache_core::stage::staged_entry(&file, ino);
    }
});
