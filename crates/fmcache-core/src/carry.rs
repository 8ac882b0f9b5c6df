//! Carrying the library into the processes a job starts: ld.so reads
//! `LD_AUDIT` only at exec, so a process that has the library in
//! `LD_PRELOAD` adds it to `LD_AUDIT` in every environment it hands on.
//! Pure functions on byte strings, with no allocation, so the exec hooks
//! can use them in a vfork child.

/// The library's file name: an entry with this name is the library,
/// however the user spelled its directory.
pub const LIB_FILE: &[u8] = b"libfmcache.so";

/// ld.so splits LD_PRELOAD on ':' and ' ', LD_AUDIT on ':'; accepting both
/// for both only makes "names the library" more permissive.
fn entries(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b':' || b == b' ')
        .filter(|e| !e.is_empty())
}

/// Whether a loader list names `lib` (by its path, or by its file name).
pub fn names_lib(list: &[u8], lib: &[u8]) -> bool {
    let own = crate::path::file_name(lib);
    entries(list).any(|e| e == lib || crate::path::file_name(e) == own)
}

/// Whether the variables of a child's environment ask for the library to
/// record or serve there (`DLFM_OP` on and the library in `LD_PRELOAD`),
/// while `LD_AUDIT` does not name it yet.
pub fn audit_missing(
    op: Option<&[u8]>,
    preload: Option<&[u8]>,
    audit: Option<&[u8]>,
    lib: &[u8],
) -> bool {
    matches!(op, Some(b"write-cache") | Some(b"read-cache"))
        && preload.is_some_and(|p| names_lib(p, lib))
        && !audit.is_some_and(|a| names_lib(a, lib))
}

/// Writes `LD_AUDIT=<existing>:<lib>` (or `LD_AUDIT=<lib>`) into `out` and
/// returns its length, or None if it does not fit. The library goes last:
/// ld.so chains auditors in order, so ours sees the name every other
/// auditor settled on, which is the one that will be opened.
pub fn audit_assignment(existing: Option<&[u8]>, lib: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut put = |b: &[u8]| -> Option<()> {
        out.get_mut(n..n + b.len())?.copy_from_slice(b);
        n += b.len();
        Some(())
    };
    put(b"LD_AUDIT=")?;
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        put(e)?;
        put(b":")?;
    }
    put(lib)?;
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &[u8] = b"/opt/fm/lib/libfmcache.so";

    #[test]
    fn names_by_path_or_file_name() {
        assert!(names_lib(LIB, LIB));
        assert!(names_lib(b"libfmcache.so", LIB));
        assert!(names_lib(b"/x/liba.so /other/libfmcache.so", LIB));
        assert!(names_lib(b"/x/liba.so::/opt/fm/lib/libfmcache.so", LIB));
        assert!(!names_lib(b"/x/libfmcache.so.1:/y/libother.so", LIB));
        assert!(!names_lib(b"", LIB));
    }

    #[test]
    fn missing_only_when_asked_for_and_absent() {
        let on = Some(&b"read-cache"[..]);
        assert!(audit_missing(on, Some(LIB), None, LIB));
        assert!(audit_missing(
            Some(b"write-cache"),
            Some(b"libfmcache.so"),
            Some(b"/a/libaudit.so"),
            LIB
        ));
        assert!(!audit_missing(on, Some(LIB), Some(LIB), LIB));
        assert!(
            !audit_missing(on, None, None, LIB),
            "the program dropped the preload"
        );
        assert!(!audit_missing(Some(b"off"), Some(LIB), None, LIB));
        assert!(!audit_missing(None, Some(LIB), None, LIB));
    }

    #[test]
    fn assignment_appends_and_bounds() {
        let mut buf = [0u8; 128];
        let n = audit_assignment(None, LIB, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"LD_AUDIT=/opt/fm/lib/libfmcache.so");
        let n = audit_assignment(Some(b"/a/x.so"), LIB, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"LD_AUDIT=/a/x.so:/opt/fm/lib/libfmcache.so");
        let n = audit_assignment(Some(b""), LIB, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"LD_AUDIT=/opt/fm/lib/libfmcache.so");
        let mut small = [0u8; 20];
        assert_eq!(audit_assignment(None, LIB, &mut small), None);
    }
}
