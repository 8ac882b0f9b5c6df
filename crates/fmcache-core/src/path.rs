//! Cache keys: literal absolute paths, normalised the same way by the
//! recorder and the server, in fixed buffers (no allocation).
//!
//! Normalisation only does what the kernel's path walk makes equivalent
//! in every case: a relative path is appended to the current directory,
//! runs of `/` collapse to one, and interior `.` components are dropped.
//! `..` stays literal (it depends on symlinks), and so does a trailing `/`
//! or `/.` (they demand a directory).

/// Longest path the kernel accepts, terminating NUL included.
pub const PATH_MAX: usize = 4096;
/// Longest file-name component.
pub const NAME_MAX: usize = 255;

/// A path in a fixed buffer, NUL-terminated for system calls. The buffer
/// is left uninitialised past the path (hooks build several per call, and
/// zeroing 4 KiB each time showed up in profiles).
pub struct PathBuf {
    buf: [core::mem::MaybeUninit<u8>; PATH_MAX],
    len: usize,
}

impl Default for PathBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PathBuf {
    pub const fn new() -> Self {
        let mut buf = [core::mem::MaybeUninit::uninit(); PATH_MAX];
        buf[0] = core::mem::MaybeUninit::new(0);
        PathBuf { buf, len: 0 }
    }
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: bytes [0, len) are always initialised.
        unsafe { core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
    }
    /// The path with its NUL, for raw system calls.
    pub fn as_cstr(&self) -> &core::ffi::CStr {
        // SAFETY: `push` refuses NUL bytes and always writes a NUL at `len`
        // (the buffer is one longer than any accepted path).
        unsafe {
            let bytes = core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len + 1);
            core::ffi::CStr::from_bytes_with_nul_unchecked(bytes)
        }
    }
    pub fn clear(&mut self) {
        self.len = 0;
        self.buf[0] = core::mem::MaybeUninit::new(0);
    }
    /// Appends raw bytes; `false` if the result would not fit or holds NUL.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.len + bytes.len() >= PATH_MAX || bytes.contains(&0) {
            return false;
        }
        // SAFETY: in bounds (checked above); u8 and MaybeUninit<u8> match.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buf.as_mut_ptr().cast::<u8>().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
        self.buf[self.len] = core::mem::MaybeUninit::new(0);
        true
    }
    pub fn set(&mut self, bytes: &[u8]) -> bool {
        self.clear();
        self.push(bytes)
    }
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.buf[len] = core::mem::MaybeUninit::new(0);
        }
    }
}

/// Builds the cache key of `input` (as given to a system call) into `out`.
/// `cwd` is used for relative input. Returns `false` when the key cannot
/// be formed (empty input, too long, no cwd): the caller passes through.
///
/// An input of PATH_MAX bytes or more has no key even when `//` or `/./`
/// padding would shrink it: the kernel copies the string in first
/// (`getname`) and fails ENAMETOOLONG before any lookup, so the real call
/// answers it exactly and touches no file system. Only the input counts: a
/// short relative path whose joined form is longer is fine natively (its
/// key just does not fit, so it passes through too).
pub fn normalize(cwd: Option<&[u8]>, input: &[u8], out: &mut PathBuf) -> bool {
    out.clear();
    if input.is_empty() || input.len() >= PATH_MAX {
        return false;
    }
    // Most paths a program passes are already normal: one scan and one
    // copy instead of a pass per component (this is on every call).
    if input[0] == b'/' && is_normal(input) {
        return out.push(input);
    }
    if input[0] != b'/' {
        match cwd {
            Some(c) if c.first() == Some(&b'/') => {
                if !append_components(out, c, false) {
                    return false;
                }
            }
            _ => return false,
        }
    }
    append_components(out, input, true)
}

/// Whether absolute `p` is its own key: no `//`, no `.` component other
/// than a trailing one below the root (`/a/.` stays; `/.` becomes `/`).
fn is_normal(p: &[u8]) -> bool {
    for (i, &b) in p.iter().enumerate() {
        if b == 0 {
            return false;
        }
        if b != b'/' {
            continue;
        }
        match (p.get(i + 1), p.get(i + 2)) {
            (Some(b'/'), _) | (Some(b'.'), Some(b'/')) => return false,
            (Some(b'.'), None) if i == 0 => return false,
            _ => {}
        }
    }
    true
}

/// Appends `src`'s components to `out` with the rules above. `keep_tail`
/// keeps a trailing `/` or `/.` of `src`.
fn append_components(out: &mut PathBuf, src: &[u8], keep_tail: bool) -> bool {
    let comps = src.split(|&b| b == b'/').filter(|c| !c.is_empty());
    let mut last_dot = false;
    for c in comps {
        last_dot = c == b".";
        if last_dot {
            continue;
        }
        if !out.as_bytes().ends_with(b"/") && !out.push(b"/") || !out.push(c) {
            return false;
        }
    }
    if keep_tail && src.len() > 1 && (src.ends_with(b"/") || last_dot) && out.len > 1 {
        return out.push(if last_dot { b"/." } else { b"/" });
    }
    if out.len == 0 {
        return out.push(b"/");
    }
    true
}

/// The parent of a normalised absolute path (`/` for `/x`), or `None` for
/// `/` itself.
pub fn parent(path: &[u8]) -> Option<&[u8]> {
    let trimmed = trim_trailing_slash(path);
    if trimmed == b"/" || trimmed.is_empty() {
        return None;
    }
    let cut = trimmed.iter().rposition(|&b| b == b'/')?;
    Some(if cut == 0 { b"/" } else { &trimmed[..cut] })
}

/// The last component of a path.
pub fn file_name(path: &[u8]) -> &[u8] {
    let trimmed = trim_trailing_slash(path);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

pub fn trim_trailing_slash(path: &[u8]) -> &[u8] {
    let mut p = path;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    p
}

/// Whether a component is `.` or `..`, whose meaning depends on the walk.
pub fn has_dot_components(path: &[u8]) -> bool {
    // A byte scan: this runs on every call the cache does not hold.
    let mut start = 0;
    for (i, &b) in path.iter().enumerate() {
        if b == b'/' {
            if matches!(&path[start..i], b"." | b"..") {
                return true;
            }
            start = i + 1;
        }
    }
    matches!(&path[start..], b"." | b"..")
}

/// Whether `path` equals `prefix` or lies under it (component-wise).
pub fn under(path: &[u8], prefix: &[u8]) -> bool {
    let prefix = trim_trailing_slash(prefix);
    if prefix == b"/" {
        return path.starts_with(b"/");
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// Bytes of a path, lossily, for messages (allocates: never on the
/// serving path).
pub fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(cwd: &str, p: &str) -> Option<String> {
        let mut b = PathBuf::new();
        normalize(Some(cwd.as_bytes()), p.as_bytes(), &mut b)
            .then(|| String::from_utf8(b.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn normalizes_like_the_kernel_walk() {
        assert_eq!(norm("/w", "/a//b/./c").as_deref(), Some("/a/b/c"));
        assert_eq!(norm("/w", "x/y").as_deref(), Some("/w/x/y"));
        assert_eq!(norm("/w", ".").as_deref(), Some("/w"));
        assert_eq!(norm("/", "x").as_deref(), Some("/x"));
        assert_eq!(norm("/w", "/").as_deref(), Some("/"));
        assert_eq!(norm("/w", "//").as_deref(), Some("/"));
        assert_eq!(norm("/w", "/a/../b").as_deref(), Some("/a/../b"));
        assert_eq!(norm("/w", "/a/b/").as_deref(), Some("/a/b/"));
        assert_eq!(norm("/w", "/a/b/.").as_deref(), Some("/a/b/."));
        assert_eq!(norm("/w", ""), None);
        assert_eq!(norm("/w", &"a".repeat(5000)), None);
    }

    #[test]
    fn padded_inputs_of_path_max_bytes_have_no_key() {
        // 4095 bytes (4096 with the NUL) is the longest the kernel takes.
        let pad = |n: usize| format!("{}/etc", "/".repeat(n - 4));
        assert_eq!(norm("/w", &pad(4095)).as_deref(), Some("/etc"));
        assert_eq!(norm("/w", &pad(4096)), None);
        assert_eq!(norm("/w", &pad(4097)), None);
        let dots = format!("{}etc", "./".repeat(2046));
        assert_eq!(dots.len(), 4095);
        assert_eq!(norm("/w", &dots).as_deref(), Some("/w/etc"));
        assert_eq!(norm("/w", &format!("./{dots}")), None);
    }

    #[test]
    fn the_one_copy_path_matches_the_component_walk() {
        let parts = ["", "/", "//", ".", "..", "a", "b.", ".c", "/.", "./", "..."];
        let mut n = 0;
        for a in parts {
            for b in parts {
                for c in parts {
                    let input = format!("/{a}{b}{c}");
                    let mut fast = PathBuf::new();
                    let ok = normalize(None, input.as_bytes(), &mut fast);
                    let mut slow = PathBuf::new();
                    let ok2 = append_components(&mut slow, input.as_bytes(), true);
                    assert_eq!(ok, ok2, "{input}");
                    assert_eq!(fast.as_bytes(), slow.as_bytes(), "{input}");
                    n += usize::from(is_normal(input.as_bytes()));
                }
            }
        }
        assert!(n > 100, "the test must reach the one-copy path ({n})");
    }

    #[test]
    fn dot_components_are_found_anywhere() {
        for p in [
            ".", "..", "/.", "/..", "./a", "../a", "/a/./b", "/a/../b", "/a/.", "a/..",
        ] {
            assert!(has_dot_components(p.as_bytes()), "{p}");
        }
        for p in ["", "/", "/a", "/.a/..b/...", "/a./b", "a//b", "/a/b/"] {
            assert!(!has_dot_components(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn parents_and_names() {
        assert_eq!(parent(b"/a/b"), Some(&b"/a"[..]));
        assert_eq!(parent(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent(b"/"), None);
        assert_eq!(file_name(b"/a/b/"), b"b");
        assert!(under(b"/venv/lib", b"/venv"));
        assert!(!under(b"/venv2", b"/venv"));
        assert!(under(b"/x", b"/"));
    }
}
