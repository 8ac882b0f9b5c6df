//! ld.so's search order for a library asked for by bare name (no `/`), as
//! pure decision: the directories glibc's `_dl_map_object` (elf/dl-load.c,
//! 2.36) tries, in its order, for a requesting object and its loader chain.
//! No system calls and no allocation: the preload library walks it inside
//! `la_objsearch` (`preload/src/libsearch.rs`), the oracle test
//! (`tests/tests/ldsearch_oracle.rs`) compares it with what the real ld.so
//! prints under `LD_DEBUG=libs`.
//!
//! The order:
//! 1. unless the requester has DT_RUNPATH (glibc then ignores every
//!    RPATH): the DT_RPATH of the requester, of the object that loaded it,
//!    and so on up the loader chain, each with its own `$ORIGIN`; then the
//!    executable's DT_RPATH if the chain did not meet it (the executable's
//!    DT_RPATH counts only when it has no DT_RUNPATH; other objects' count
//!    whatever else they carry);
//! 2. `LD_LIBRARY_PATH`, split on `:` and `;`, `$ORIGIN` the executable's;
//! 3. the requester's DT_RUNPATH;
//! 4. `/etc/ld.so.cache` ([`Step::Cache`]);
//! 5. the system directories ([`SYSTEM_DIRS`]).
//!
//! Entries are expanded as glibc does: `$ORIGIN` and `${ORIGIN}` (not
//! followed by an identifier character: `is_dst`) become the object's
//! directory, an unknown `$NAME` stays literal, trailing slashes go. A
//! directory met twice within one list is tried once (ld.so's
//! `fillin_rpath`); across lists it is tried again. The walk stops
//! ([`Step::Stop`]) where following ld.so would need what it alone knows:
//! `$LIB` and `$PLATFORM`, an empty or relative entry (the current
//! directory), an unknown `$ORIGIN` or loader, DF_1_NODEFLIB (ld.so then
//! filters the cache's answers), a directory too long for a path.

use crate::path::PathBuf;

/// ld.so's default directories on Debian x86-64, after the cache
/// (`ld.so --help`, "Shared library search path").
pub const SYSTEM_DIRS: [&[u8]; 4] = [
    b"/lib/x86_64-linux-gnu",
    b"/usr/lib/x86_64-linux-gnu",
    b"/lib",
    b"/usr/lib",
];

/// The list a directory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Rpath,
    LibraryPath,
    Runpath,
    System,
}

/// Why the walk cannot go on as ld.so would: the rest is ld.so's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `$LIB` or `$PLATFORM`.
    Token,
    /// An empty or relative entry (searched from the current directory).
    Relative,
    /// An object's `$ORIGIN` is not known.
    Origin,
    /// Who loaded an object of the chain is not known.
    Chain,
    /// The requester has DF_1_NODEFLIB.
    NoDefLib,
    /// An expanded directory longer than a path may be.
    TooLong,
}

/// One step of the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'s> {
    /// Try this directory (expanded, without trailing `/`).
    Dir(List, &'s [u8]),
    /// Look the name up in `/etc/ld.so.cache`.
    Cache,
    /// Leave the rest of the search to ld.so.
    Stop(Stop),
}

/// Who loaded an object (`l_loader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader<O> {
    Is(O),
    /// Nobody: the executable, or an object loaded by name from nowhere.
    None,
    Unknown,
}

/// What the walk needs to know about a loaded object.
pub trait Object<'a>: Copy + PartialEq {
    /// The DT_RPATH string.
    fn rpath(self) -> Option<&'a [u8]>;
    /// The DT_RUNPATH string.
    fn runpath(self) -> Option<&'a [u8]>;
    /// `$ORIGIN`: the directory of the path it was loaded under (not
    /// canonicalised), the executable's for the executable.
    fn origin(self) -> Option<&'a [u8]>;
    fn loader(self) -> Loader<Self>;
    /// DF_1_NODEFLIB.
    fn nodeflib(self) -> bool;
}

#[derive(Clone, Copy)]
enum Phase<O> {
    /// The DT_RPATH chain, at this object.
    Chain(O),
    /// The executable's DT_RPATH.
    Main,
    LibraryPath,
    Runpath,
    Cache,
    System(usize),
    /// After the list being walked.
    Stopped(Stop),
    Done,
}

/// Entries of a list whose expansion hashes are kept for the duplicate
/// check (later ones are expanded again to compare).
const SEEN: usize = 64;

/// The walk: call [`Walk::next`] until it gives `None` (the search failed
/// everywhere) or a step settles it.
pub struct Walk<'a, O> {
    requester: O,
    main: Option<O>,
    library_path: Option<&'a [u8]>,
    phase: Phase<O>,
    met_main: bool,
    /// The list being walked, where the next entry starts, its separators
    /// and `$ORIGIN`.
    list: &'a [u8],
    at: usize,
    seps: &'static [u8],
    origin: Option<&'a [u8]>,
    kind: List,
    /// Expansion hashes of the list's entries so far.
    seen: [u64; SEEN],
    entries: usize,
    buf: PathBuf,
    other: PathBuf,
}

enum Inner {
    Dir(List),
    Cache,
    Stop(Stop),
}

impl<'a, O: Object<'a>> Walk<'a, O> {
    /// The search for a name `requester` asks for; `main` is the
    /// executable, `library_path` the `LD_LIBRARY_PATH` ld.so read at start.
    pub fn new(requester: O, main: Option<O>, library_path: Option<&'a [u8]>) -> Self {
        let phase = if requester.runpath().is_none() {
            Phase::Chain(requester)
        } else {
            Phase::LibraryPath
        };
        Walk {
            requester,
            main,
            library_path: library_path.filter(|l| !l.is_empty()),
            phase,
            met_main: false,
            list: b"",
            at: 1,
            seps: b":",
            origin: None,
            kind: List::Rpath,
            seen: [0; SEEN],
            entries: 0,
            buf: PathBuf::new(),
            other: PathBuf::new(),
        }
    }

    /// The next step; `None` once every place was named.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Step<'_>> {
        Some(match self.advance()? {
            Inner::Dir(k) => Step::Dir(k, self.buf.as_bytes()),
            Inner::Cache => Step::Cache,
            Inner::Stop(s) => {
                self.phase = Phase::Done;
                self.list = b"";
                self.at = 1;
                Step::Stop(s)
            }
        })
    }

    fn start(&mut self, list: &'a [u8], seps: &'static [u8], origin: Option<&'a [u8]>, k: List) {
        self.list = list;
        self.at = 0;
        self.seps = seps;
        self.origin = origin;
        self.kind = k;
        self.entries = 0;
    }

    /// The executable's DT_RPATH, which its DT_RUNPATH cancels.
    fn rpath_of(&self, o: O) -> Option<&'a [u8]> {
        if Some(o) == self.main && o.runpath().is_some() {
            return None;
        }
        o.rpath()
    }

    fn advance(&mut self) -> Option<Inner> {
        loop {
            // The current list's next entry, if any is left.
            while self.at <= self.list.len() {
                let rest = &self.list[self.at..];
                let len = rest
                    .iter()
                    .position(|b| self.seps.contains(b))
                    .unwrap_or(rest.len());
                let entry = &rest[..len];
                let start = self.at;
                self.at += len + 1;
                if let Err(s) = expand(entry, self.origin, &mut self.buf) {
                    return Some(Inner::Stop(s));
                }
                if self.is_repeat(start) {
                    continue;
                }
                return Some(Inner::Dir(self.kind));
            }
            match self.phase {
                Phase::Chain(o) => {
                    self.met_main |= Some(o) == self.main;
                    self.phase = match o.loader() {
                        Loader::Is(next) => Phase::Chain(next),
                        Loader::None => Phase::Main,
                        Loader::Unknown => Phase::Stopped(Stop::Chain),
                    };
                    if let Some(rp) = self.rpath_of(o) {
                        self.start(rp, b":", o.origin(), List::Rpath);
                    }
                }
                Phase::Main => {
                    self.phase = Phase::LibraryPath;
                    if let (Some(m), false) = (self.main, self.met_main) {
                        if let Some(rp) = self.rpath_of(m) {
                            self.start(rp, b":", m.origin(), List::Rpath);
                        }
                    }
                }
                Phase::LibraryPath => {
                    self.phase = Phase::Runpath;
                    if let Some(lp) = self.library_path {
                        let origin = self.main.and_then(|m| m.origin());
                        self.start(lp, b":;", origin, List::LibraryPath);
                    }
                }
                Phase::Runpath => {
                    self.phase = Phase::Cache;
                    if let Some(rp) = self.requester.runpath() {
                        self.start(rp, b":", self.requester.origin(), List::Runpath);
                    }
                }
                Phase::Cache => {
                    if self.requester.nodeflib() {
                        return Some(Inner::Stop(Stop::NoDefLib));
                    }
                    self.phase = Phase::System(0);
                    return Some(Inner::Cache);
                }
                Phase::System(i) => {
                    let d = SYSTEM_DIRS.get(i)?;
                    self.phase = Phase::System(i + 1);
                    self.buf.set(d);
                    return Some(Inner::Dir(List::System));
                }
                Phase::Stopped(s) => return Some(Inner::Stop(s)),
                Phase::Done => return None,
            }
        }
    }

    /// Whether the entry just expanded (in `buf`) repeats an earlier one
    /// of the same list; notes it otherwise.
    fn is_repeat(&mut self, end: usize) -> bool {
        let h = hash(self.buf.as_bytes());
        let n = self.entries;
        self.entries += 1;
        if n < SEEN {
            self.seen[n] = h;
        }
        // Earlier entries, before `end` (each expanded fine, or the walk
        // had stopped).
        let mut i = 0;
        let mut start = 0;
        while start < end {
            let rest = &self.list[start..end];
            let len = rest
                .iter()
                .position(|b| self.seps.contains(b))
                .unwrap_or(rest.len());
            let entry = &rest[..len];
            if i >= SEEN || self.seen[i] == h {
                let same = expand(entry, self.origin, &mut self.other).is_ok()
                    && self.other.as_bytes() == self.buf.as_bytes();
                if same {
                    return true;
                }
            }
            i += 1;
            start += len + 1;
        }
        false
    }
}

fn hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h = (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// glibc's `is_dst`: the length of the token `name` at `s` (just after
/// the `$`), braces included, or 0.
fn is_dst(s: &[u8], name: &[u8]) -> usize {
    let (curly, body) = match s.first() {
        Some(b'{') => (true, &s[1..]),
        _ => (false, s),
    };
    if !body.starts_with(name) {
        return 0;
    }
    let next = body.get(name.len()).copied();
    if curly && next != Some(b'}') {
        return 0;
    }
    if next.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return 0;
    }
    name.len() + if curly { 2 } else { 0 }
}

/// One search-path entry as ld.so builds it: `$ORIGIN`/`${ORIGIN}`
/// replaced by `origin`, trailing slashes removed.
pub fn expand(entry: &[u8], origin: Option<&[u8]>, out: &mut PathBuf) -> Result<(), Stop> {
    out.clear();
    if entry.is_empty() {
        return Err(Stop::Relative);
    }
    let mut rest = entry;
    while let Some(i) = rest.iter().position(|&b| b == b'$') {
        if !out.push(&rest[..i]) {
            return Err(Stop::TooLong);
        }
        let after = &rest[i + 1..];
        let n = is_dst(after, b"ORIGIN");
        if n > 0 {
            if !out.push(origin.ok_or(Stop::Origin)?) {
                return Err(Stop::TooLong);
            }
            rest = &after[n..];
        } else if is_dst(after, b"PLATFORM") > 0 || is_dst(after, b"LIB") > 0 {
            return Err(Stop::Token);
        } else {
            // Not a token ld.so knows: kept as written.
            if !out.push(b"$") {
                return Err(Stop::TooLong);
            }
            rest = after;
        }
    }
    if !out.push(rest) {
        return Err(Stop::TooLong);
    }
    let b = out.as_bytes();
    let mut n = b.len();
    while n > 1 && b[n - 1] == b'/' {
        n -= 1;
    }
    out.truncate(n);
    if out.as_bytes().first() != Some(&b'/') {
        return Err(Stop::Relative);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Obj {
        rpath: Option<&'static str>,
        runpath: Option<&'static str>,
        origin: &'static str,
        loader: Option<usize>,
        unknown_loader: bool,
        nodeflib: bool,
    }

    #[derive(Clone, Copy)]
    struct O<'a>(&'a [Obj], usize);
    impl PartialEq for O<'_> {
        fn eq(&self, o: &Self) -> bool {
            self.1 == o.1
        }
    }
    impl<'a> Object<'a> for O<'a> {
        fn rpath(self) -> Option<&'a [u8]> {
            self.0[self.1].rpath.map(str::as_bytes)
        }
        fn runpath(self) -> Option<&'a [u8]> {
            self.0[self.1].runpath.map(str::as_bytes)
        }
        fn origin(self) -> Option<&'a [u8]> {
            Some(self.0[self.1].origin.as_bytes())
        }
        fn loader(self) -> Loader<Self> {
            let o = &self.0[self.1];
            match (o.unknown_loader, o.loader) {
                (true, _) => Loader::Unknown,
                (_, Some(i)) => Loader::Is(O(self.0, i)),
                (_, None) => Loader::None,
            }
        }
        fn nodeflib(self) -> bool {
            self.0[self.1].nodeflib
        }
    }

    /// The walk as strings: directories, "cache", "stop:<why>".
    fn walk(objs: &[Obj], req: usize, llp: Option<&str>) -> Vec<String> {
        let mut w = Walk::new(O(objs, req), Some(O(objs, 0)), llp.map(str::as_bytes));
        let mut out = Vec::new();
        while let Some(s) = w.next() {
            out.push(match s {
                Step::Dir(_, d) => String::from_utf8_lossy(d).into_owned(),
                Step::Cache => "cache".into(),
                Step::Stop(s) => format!("stop:{s:?}"),
            });
        }
        out
    }

    const SYS: [&str; 5] = [
        "cache",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib",
        "/usr/lib",
    ];

    fn with_sys(v: &[&str]) -> Vec<String> {
        v.iter().chain(SYS.iter()).map(|s| s.to_string()).collect()
    }

    /// An object with `$ORIGIN` `origin`, loaded by `loader`.
    fn o(
        origin: &'static str,
        rpath: Option<&'static str>,
        runpath: Option<&'static str>,
        loader: Option<usize>,
    ) -> Obj {
        Obj {
            rpath,
            runpath,
            origin,
            loader,
            ..Obj::default()
        }
    }

    #[test]
    fn rpath_chain_then_main_then_library_path_then_runpath() {
        let objs = [
            o("/app/bin", Some("/m1:$ORIGIN/../lib"), None, None),
            o("/t/a", Some("${ORIGIN}/x/:/a"), None, Some(2)),
            o("/t/b", Some("/b"), None, None),
        ];
        // Object 2 was loaded by nobody known to be the main: main's RPATH
        // comes last of the RPATHs.
        let dirs = ["/t/a/x", "/a", "/b", "/m1", "/app/bin/../lib", "/l1", "/l2"];
        assert_eq!(walk(&objs, 1, Some("/l1;/l2")), with_sys(&dirs));
        assert_eq!(
            walk(&objs, 1, Some("/l1;/l2:")),
            [&dirs[..], &["stop:Relative"]].concat()
        );
    }

    #[test]
    fn main_in_the_chain_is_searched_once() {
        let objs = [
            o("/app", Some("/m"), None, None),
            o("/t", Some("/a"), None, Some(0)),
        ];
        assert_eq!(walk(&objs, 1, None), with_sys(&["/a", "/m"]));
    }

    #[test]
    fn runpath_of_the_requester_cancels_every_rpath() {
        let objs = [
            o("/app", Some("/m"), None, None),
            o("/t", Some("/a"), Some("$ORIGIN:/r"), Some(0)),
            o("/u", None, None, Some(1)),
        ];
        assert_eq!(walk(&objs, 1, Some("/l")), with_sys(&["/l", "/t", "/r"]));
        // A loader's RPATH counts even when it has a RUNPATH too.
        assert_eq!(walk(&objs, 2, None), with_sys(&["/a", "/m"]));
    }

    #[test]
    fn executable_rpath_is_cancelled_by_its_runpath() {
        let objs = [
            o("/app", Some("/m"), Some("/mr"), None),
            o("/t", None, None, Some(0)),
        ];
        assert_eq!(walk(&objs, 1, None), with_sys(&[]));
        assert_eq!(walk(&objs, 0, None), with_sys(&["/mr"]));
    }

    #[test]
    fn repeats_within_a_list_are_tried_once_across_lists_again() {
        let objs = [o("/app", Some("/a:/b/:/a//:$ORIGIN:/app:/b"), None, None)];
        assert_eq!(
            walk(&objs, 0, Some("/a;/a:/c")),
            with_sys(&["/a", "/b", "/app", "/a", "/c"])
        );
    }

    #[test]
    fn many_entries_still_deduplicated() {
        let list: String = (0..100)
            .map(|i| format!("/d{}", i % 70))
            .collect::<Vec<_>>()
            .join(":");
        let list: &'static str = Box::leak(list.into_boxed_str());
        let objs = [o("/app", Some(list), None, None)];
        let w = walk(&objs, 0, None);
        assert_eq!(w.len(), 70 + SYS.len());
    }

    #[test]
    fn tokens_and_relative_entries_stop() {
        let one = |rp: &'static str| {
            let objs = [o("/o", Some(rp), None, None)];
            walk(&objs, 0, None)
        };
        assert_eq!(one("/a:$ORIGIN/$PLATFORM:/b"), ["/a", "stop:Token"]);
        assert_eq!(one("${LIB}"), ["stop:Token"]);
        assert_eq!(one("/a::/b"), ["/a", "stop:Relative"]);
        assert_eq!(one("rel"), ["stop:Relative"]);
        // Not tokens: `$ORIGINX`, `${ORIGIN`, `$FOO` stay literal.
        assert_eq!(
            one("/x/$ORIGINX:/y/${ORIGIN:/z/$FOO/$ORIGIN_")[..3],
            ["/x/$ORIGINX", "/y/${ORIGIN", "/z/$FOO/$ORIGIN_"]
        );
        assert_eq!(one("$ORIGIN/a$ORIGIN")[0], "/o/a/o");
        assert_eq!(one("/")[0], "/");
    }

    #[test]
    fn unknown_loader_and_nodeflib_stop() {
        let objs = [
            o("/app", None, None, None),
            Obj {
                unknown_loader: true,
                nodeflib: true,
                ..o("/t", Some("/a"), None, None)
            },
        ];
        assert_eq!(walk(&objs, 1, None), ["/a", "stop:Chain"]);
        let objs = [Obj {
            nodeflib: true,
            ..o("/app", None, Some("/r"), None)
        }];
        assert_eq!(walk(&objs, 0, None), ["/r", "stop:NoDefLib"]);
    }
}
