//! `/etc/ld.so.cache` (glibc's "new" format, `glibc-ld.so.cache1.1`): the
//! path ld.so's cache gives a library name, for a bare-name search found
//! in no search directory. Pure, over the file's bytes (the auditor maps
//! the file once); any byte pattern is safe: every offset is checked.
//!
//! Layout (elf/cache.c, sysdeps/generic/dl-cache.h): a 48-byte header
//! (magic [20], nlibs u32 at 20, len_strings u32, flags u8, pad, extension
//! offset u32, unused [3] u32), then `nlibs` entries of 24 bytes (flags
//! i32, key u32, value u32, osversion u32, hwcap u64); key and value are
//! offsets from the start of the file to NUL-terminated strings.

const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const HEADER: usize = 48;
const ENTRY: usize = 24;
/// `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64`.
pub const FLAGS_X8664_LIBC6: u32 = 0x0303;

/// The path of the one plain entry for `name` with `flags` (no hwcap
/// subdirectory, no OS version condition), absolute. Several such
/// entries, or a conditional one for the name: `None`, since ld.so's own
/// choice among them then depends on the machine.
pub fn lookup<'a>(cache: &'a [u8], name: &[u8], flags: u32) -> Option<&'a [u8]> {
    if !cache.starts_with(MAGIC) {
        return None;
    }
    let u32_at = |o: usize| {
        cache
            .get(o..o.checked_add(4)?)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let cstr_at = |o: usize| {
        let rest = cache.get(o..)?;
        rest.iter().position(|&c| c == 0).map(|n| &rest[..n])
    };
    let n = u32_at(20)? as usize;
    // More entries than the file can hold: not a cache.
    if n > cache.len().saturating_sub(HEADER) / ENTRY {
        return None;
    }
    // Whether the string at `o` is `name`: decided at the first byte that
    // differs, so the scan of every entry (about 1,500 here, once per
    // library search) does not measure each key. An unterminated key is
    // not the name.
    let is_name = |o: usize| {
        cache
            .get(o..)
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.first() == Some(&0))
    };
    let mut found = None;
    for i in 0..n {
        let e = HEADER + i * ENTRY;
        if !is_name(u32_at(e + 4)? as usize) {
            continue;
        }
        let (f, value, osv) = (u32_at(e)?, u32_at(e + 8)?, u32_at(e + 12)?);
        let hwcap = u32_at(e + 16)? as u64 | (u32_at(e + 20)? as u64) << 32;
        if hwcap != 0 || osv != 0 {
            return None;
        }
        if f == flags {
            if found.is_some() {
                return None;
            }
            found = Some(cstr_at(value as usize)?);
        }
    }
    found.filter(|p| p.first() == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with `entries` (flags, key, value, hwcap).
    fn cache(entries: &[(u32, &str, &str, u64)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let base = HEADER + entries.len() * ENTRY;
        let mut table = Vec::new();
        for (flags, k, v, hw) in entries {
            let ko = base + strings.len();
            strings.extend_from_slice(k.as_bytes());
            strings.push(0);
            let vo = base + strings.len();
            strings.extend_from_slice(v.as_bytes());
            strings.push(0);
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&(ko as u32).to_le_bytes());
            table.extend_from_slice(&(vo as u32).to_le_bytes());
            table.extend_from_slice(&0u32.to_le_bytes());
            table.extend_from_slice(&hw.to_le_bytes());
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.resize(HEADER, 0);
        out.extend(table);
        out.extend(strings);
        out
    }

    #[test]
    fn one_plain_entry_is_the_answer() {
        let c = cache(&[
            (
                FLAGS_X8664_LIBC6,
                "libz.so.1",
                "/lib/x86_64-linux-gnu/libz.so.1",
                0,
            ),
            (0x0003, "libz.so.1", "/usr/lib32/libz.so.1", 0),
        ]);
        assert_eq!(
            lookup(&c, b"libz.so.1", FLAGS_X8664_LIBC6),
            Some(&b"/lib/x86_64-linux-gnu/libz.so.1"[..])
        );
        assert_eq!(lookup(&c, b"libq.so", FLAGS_X8664_LIBC6), None);
    }

    #[test]
    fn two_entries_or_a_hwcap_one_are_left_to_ld_so() {
        let two = cache(&[
            (FLAGS_X8664_LIBC6, "liba.so", "/a/liba.so", 0),
            (FLAGS_X8664_LIBC6, "liba.so", "/b/liba.so", 0),
        ]);
        assert_eq!(lookup(&two, b"liba.so", FLAGS_X8664_LIBC6), None);
        let hw = cache(&[(FLAGS_X8664_LIBC6, "liba.so", "/a/liba.so", 1 << 62)]);
        assert_eq!(lookup(&hw, b"liba.so", FLAGS_X8664_LIBC6), None);
    }

    #[test]
    fn truncated_and_lying_caches_give_none() {
        let c = cache(&[(FLAGS_X8664_LIBC6, "liba.so", "/a/liba.so", 0)]);
        for n in 0..c.len() {
            let _ = lookup(&c[..n], b"liba.so", FLAGS_X8664_LIBC6);
        }
        let mut lying = c.clone();
        lying[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(lookup(&lying, b"liba.so", FLAGS_X8664_LIBC6), None);
    }

    /// The machine's own cache agrees with `ldconfig -p` on every name
    /// listed there once for x86-64 without a hwcap.
    #[test]
    fn agrees_with_ldconfig_on_this_machine() {
        let Ok(bytes) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        let Ok(o) = std::process::Command::new("/sbin/ldconfig")
            .arg("-p")
            .output()
        else {
            return;
        };
        let text = String::from_utf8_lossy(&o.stdout);
        let mut per_name: std::collections::BTreeMap<&str, Vec<(&str, &str)>> = Default::default();
        for line in text.lines().skip(1) {
            // "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1"
            let Some((left, path)) = line.trim().split_once(" => ") else {
                continue;
            };
            let Some((name, tags)) = left.split_once(" (") else {
                continue;
            };
            per_name.entry(name).or_default().push((tags, path));
        }
        let mut checked = 0;
        for (name, v) in &per_name {
            let plain: Vec<&&str> = v
                .iter()
                .filter(|(t, _)| *t == "libc6,x86-64)")
                .map(|(_, p)| p)
                .collect();
            let conditional = v
                .iter()
                .any(|(t, _)| t.contains("hwcap") || t.contains("OS ABI"));
            if plain.len() == 1 && !conditional {
                assert_eq!(
                    lookup(&bytes, name.as_bytes(), FLAGS_X8664_LIBC6),
                    Some(plain[0].as_bytes()),
                    "{name}"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 20 || per_name.is_empty(),
            "only {checked} names checked"
        );
    }
}
