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
    let marks = scan(p);
    !(marks.nul_or_double_slash || marks.dot_component) || is_normal_bytewise(p)
}

/// `is_normal`, a byte at a time (for paths with a `.` or `..` component).
fn is_normal_bytewise(p: &[u8]) -> bool {
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

/// What a path holds that keys care about.
struct Marks {
    /// A NUL byte, or `//`.
    nul_or_double_slash: bool,
    /// A `.` or `..` component (`.work` is not one).
    dot_component: bool,
}

/// `Marks` of `p`, sixteen bytes at a time: this runs on every call, and
/// most paths have neither mark (a hidden directory's dot is looked at
/// alone, not the whole path byte by byte).
fn scan(p: &[u8]) -> Marks {
    let component_at = |i: usize| match p.get(i + 1) {
        None | Some(b'/') => true,
        Some(b'.') => matches!(p.get(i + 2), None | Some(b'/')),
        _ => false,
    };
    let mut marks = Marks {
        nul_or_double_slash: false,
        dot_component: p.first() == Some(&b'.') && component_at(0),
    };
    let mut carry = 0u32; // bit 0: the previous block ended with '/'
    let mut look = |base: usize, block: &[u8; 16]| {
        let m = block_masks(block);
        let after_slash = (m.slash << 1) | carry;
        carry = m.slash >> 15;
        if m.nul != 0 || after_slash & m.slash != 0 {
            marks.nul_or_double_slash = true;
        }
        let mut dots = after_slash & m.dot;
        while dots != 0 && !marks.dot_component {
            marks.dot_component = component_at(base + dots.trailing_zeros() as usize);
            dots &= dots - 1;
        }
    };
    let mut blocks = p.chunks_exact(16);
    for (k, c) in blocks.by_ref().enumerate() {
        if let Ok(block) = c.try_into() {
            look(k * 16, block);
        }
    }
    // The tail, padded with bytes that match nothing ('a').
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut block = [b'a'; 16];
        for (d, &b) in block.iter_mut().zip(rest) {
            *d = b;
        }
        look(p.len() - rest.len(), &block);
    }
    marks
}

/// Bit i set where byte i of a block is `/`, `.`, NUL.
struct BlockMasks {
    slash: u32,
    dot: u32,
    nul: u32,
}

/// SSE2 is part of every x86-64 CPU: no feature detection (which would
/// run CPUID, slow in a virtual machine, in every process).
#[cfg(target_arch = "x86_64")]
fn block_masks(block: &[u8; 16]) -> BlockMasks {
    use core::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: an unaligned load of the 16 bytes `block` borrows; the rest
    // is SSE2 arithmetic on registers, which every x86-64 CPU has.
    let (slash, dot, nul) = unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let mask = |c: u8| _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8))) as u32;
        (mask(b'/'), mask(b'.'), mask(0))
    };
    BlockMasks { slash, dot, nul }
}

#[cfg(not(target_arch = "x86_64"))]
fn block_masks(block: &[u8; 16]) -> BlockMasks {
    block_masks_bytewise(block)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn block_masks_bytewise(block: &[u8; 16]) -> BlockMasks {
    let bits = |c: u8| {
        block
            .iter()
            .enumerate()
            .fold(0u32, |m, (i, &b)| m | u32::from(b == c) << i)
    };
    BlockMasks {
        slash: bits(b'/'),
        dot: bits(b'.'),
        nul: bits(0),
    }
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
    scan(path).dot_component
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
    fn the_block_scan_agrees_with_a_byte_walk() {
        // Every string of up to 10 bytes over the bytes that matter, alone
        // and after 10 bytes of an absolute path, so each mark falls at
        // every place of a 16-byte block and across the block boundary.
        let alphabet = [b'/', b'.', b'a', 0u8];
        let mut n = [0usize; 2];
        let mut check = |p: &[u8]| {
            let mut start = 0;
            let mut dot = false;
            for (i, &b) in p.iter().enumerate() {
                if b == b'/' {
                    dot |= matches!(&p[start..i], b"." | b"..");
                    start = i + 1;
                }
            }
            dot |= matches!(&p[start..], b"." | b"..");
            let odd = p.contains(&0) || p.windows(2).any(|w| w == b"//");
            let m = scan(p);
            assert_eq!(m.dot_component, dot, "{p:?}");
            assert_eq!(m.nul_or_double_slash, odd, "{p:?}");
            if p.first() == Some(&b'/') {
                assert_eq!(is_normal(p), is_normal_bytewise(p), "{p:?}");
            }
            n[usize::from(dot || odd)] += 1;
        };
        for len in 0..=10usize {
            let mut idx = vec![0usize; len];
            loop {
                let tail: Vec<u8> = idx.iter().map(|&i| alphabet[i]).collect();
                check(&tail);
                check(&[&b"/aaaaaaaaa"[..], &tail].concat());
                // Next string of this length.
                let mut k = 0;
                while k < len && idx[k] == alphabet.len() - 1 {
                    idx[k] = 0;
                    k += 1;
                }
                if k == len {
                    break;
                }
                idx[k] += 1;
            }
        }
        assert!(n[0] > 1000 && n[1] > 1000, "both answers reached: {n:?}");
    }

    #[test]
    fn block_masks_agree_with_a_byte_walk() {
        let alphabet = [b'/', b'.', b'a', 0u8, 0xff, 0x80];
        let mut block = [0u8; 16];
        for seed in 0..20_000u32 {
            let mut x = seed.wrapping_mul(2_654_435_761);
            for b in &mut block {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = alphabet[x as usize % alphabet.len()];
            }
            let (f, s) = (block_masks(&block), block_masks_bytewise(&block));
            assert_eq!(
                (f.slash, f.dot, f.nul),
                (s.slash, s.dot, s.nul),
                "{block:?}"
            );
        }
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
