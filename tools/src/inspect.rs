//! `fmcache inspect`: what a cache holds.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::process::ExitCode;

use fmcache_format::{CacheView, Verify};
use serde_json::{json, Value};

use crate::launch::{self, human_bytes, os, show};

/// Show what a cache file holds
///
/// Header, entries by kind, failed lookups by errno, content bytes, and
/// the directories with the most cached entries and failed lookups. The
/// whole file is verified; a corrupt or foreign cache exits with 1.
#[derive(clap::Args)]
pub struct Args {
    /// Cache file [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(value_name = "FILE")]
    file: Option<OsString>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// How many directories to list in the top tables.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
}

/// A whole file in an 8-byte aligned buffer, as `CacheView` wants.
pub struct Loaded {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Loaded {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Reads a file; the error is the reason alone (the caller names the file).
pub fn load(path: &[u8]) -> Result<Loaded, String> {
    let buf = std::fs::read(os(path)).map_err(|e| launch::io_reason(&e))?;
    let len = buf.len();
    if buf.as_ptr().align_offset(8) == 0 {
        return Ok(Loaded { buf, start: 0, len });
    }
    let mut aligned = vec![0u8; len + 8];
    let start = aligned.as_ptr().align_offset(8);
    aligned[start..start + len].copy_from_slice(&buf);
    Ok(Loaded {
        buf: aligned,
        start,
        len,
    })
}

/// Entry counts by kind. `other` holds special files and entries without
/// a recorded lstat.
#[derive(Default, Debug)]
pub struct Kinds {
    pub files_with_content: u64,
    pub files_without_content: u64,
    pub dirs_with_listing: u64,
    pub dirs_without_listing: u64,
    pub symlinks: u64,
    pub other: u64,
    pub failed: u64,
    pub excluded: u64,
    /// Ancestors of the roots, kept for realpath's walk only.
    pub walked: u64,
}

/// What `inspect` reports, also used for `record`'s summary.
pub struct Summary {
    pub format_version: u32,
    pub build_id: String,
    pub checksum: u64,
    pub file_size: u64,
    pub meta_size: u64,
    pub recorder_uid: u32,
    pub recorder_gid: u32,
    pub entries: u64,
    pub kinds: Kinds,
    pub errnos: BTreeMap<String, u64>,
    pub content_bytes: u64,
    pub blobs: u64,
    /// Bytes the contents take in the cache (compressed).
    pub stored_bytes: u64,
    pub compressed_blobs: u64,
    pub top_probed: Vec<(String, u64)>,
    pub top_failed: Vec<(String, u64)>,
    /// The roots of the software served.
    pub roots: Vec<String>,
    /// Groups of probed paths the scope left out (passed through), with
    /// how many paths, largest first.
    pub left_out: Vec<(String, u64)>,
}

pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESTALE => "ESTALE",
        libc::EREMOTEIO => "EREMOTEIO",
        libc::ENOMEDIUM => "ENOMEDIUM",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

fn top(counts: HashMap<&[u8], u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(&[u8], u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    v.truncate(n);
    v.into_iter().map(|(d, c)| (show(d), c)).collect()
}

pub fn summarize(view: &CacheView<'_>, top_n: usize) -> Summary {
    let h = view.header();
    let mut kinds = Kinds::default();
    let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
    let mut probed: HashMap<&[u8], u64> = HashMap::new();
    let mut failed: HashMap<&[u8], u64> = HashMap::new();
    for e in view.entries() {
        if e.is_excluded() {
            kinds.excluded += 1;
            continue;
        }
        if e.is_walk() {
            kinds.walked += 1;
            continue;
        }
        let parent = fmcache_core::path::parent(e.path());
        if let Some(p) = parent {
            *probed.entry(p).or_default() += 1;
        }
        match e.lstat() {
            Some(Ok(st)) if st.is_reg() => match e.blob() {
                Some(_) => kinds.files_with_content += 1,
                None => kinds.files_without_content += 1,
            },
            Some(Ok(st)) if st.is_dir() => match e.listing() {
                Some(_) => kinds.dirs_with_listing += 1,
                None => kinds.dirs_without_listing += 1,
            },
            Some(Ok(st)) if st.is_symlink() => kinds.symlinks += 1,
            Some(Ok(_)) | None => kinds.other += 1,
            Some(Err(errno)) => {
                kinds.failed += 1;
                *errnos.entry(errno_name(errno)).or_default() += 1;
                if let Some(p) = parent {
                    *failed.entry(p).or_default() += 1;
                }
            }
        }
    }
    Summary {
        format_version: h.version,
        build_id: h.build_id.iter().map(|b| format!("{b:02x}")).collect(),
        checksum: h.checksum,
        file_size: h.file_size,
        meta_size: h.meta_size,
        recorder_uid: h.recorder_uid,
        recorder_gid: h.recorder_gid,
        entries: view.entry_count() as u64,
        kinds,
        errnos,
        content_bytes: view.blobs().iter().map(|b| b.size).sum(),
        stored_bytes: view.blobs().iter().map(|b| b.stored).sum(),
        compressed_blobs: view
            .blobs()
            .iter()
            .filter(|b| b.codec != fmcache_format::layout::codec::RAW)
            .count() as u64,
        blobs: view.blobs().len() as u64,
        top_probed: top(probed, top_n),
        top_failed: top(failed, top_n),
        roots: view
            .entries()
            .filter(|e| e.is_root())
            .map(|e| show(e.path()))
            .collect(),
        left_out: fmcache_core::merge::left_out_notes(view.notes())
            .into_iter()
            .map(|(g, n)| (show(&g), n as u64))
            .collect(),
    }
}

fn top_json(v: &[(String, u64)]) -> Value {
    Value::Array(
        v.iter()
            .map(|(d, c)| json!({ "dir": d, "count": c }))
            .collect(),
    )
}

impl Summary {
    pub fn to_json(&self, file: &str) -> Value {
        let k = &self.kinds;
        json!({
            "file": file,
            "format_version": self.format_version,
            "build": fmcache_format::build_name(),
            "build_id": self.build_id,
            "checksum": format!("{:016x}", self.checksum),
            "file_size": self.file_size,
            "meta_size": self.meta_size,
            "recorder_uid": self.recorder_uid,
            "recorder_gid": self.recorder_gid,
            "entries": self.entries,
            "kinds": {
                "files_with_content": k.files_with_content,
                "files_without_content": k.files_without_content,
                "dirs_with_listing": k.dirs_with_listing,
                "dirs_without_listing": k.dirs_without_listing,
                "symlinks": k.symlinks,
                "other": k.other,
                "failed": k.failed,
                "excluded": k.excluded,
                "walked": k.walked,
            },
            "errnos": self.errnos,
            "content_bytes": self.content_bytes,
            "blobs": self.blobs,
            "stored_bytes": self.stored_bytes,
            "compressed_blobs": self.compressed_blobs,
            "top_probed": top_json(&self.top_probed),
            "top_failed": top_json(&self.top_failed),
            "roots": self.roots,
            "left_out": top_json(&self.left_out),
        })
    }

    fn print(&self, file: &str, top_n: usize) {
        let k = &self.kinds;
        println!("cache           {file}");
        println!("format version  {}", self.format_version);
        println!(
            "build           {} (this build)",
            fmcache_format::build_name()
        );
        println!("build id        {}", self.build_id);
        println!("checksum        {:016x}", self.checksum);
        println!(
            "file size       {} ({}; index {}, contents {})",
            self.file_size,
            human_bytes(self.file_size),
            human_bytes(self.meta_size),
            human_bytes(self.file_size.saturating_sub(self.meta_size))
        );
        println!(
            "recorded as     uid {} gid {}",
            self.recorder_uid, self.recorder_gid
        );
        println!("entries         {}", self.entries);
        let files = k.files_with_content + k.files_without_content;
        let dirs = k.dirs_with_listing + k.dirs_without_listing;
        println!(
            "  regular files   {files:>9}  ({} with contents, {} without)",
            k.files_with_content, k.files_without_content
        );
        println!(
            "  directories     {dirs:>9}  ({} with listing, {} without)",
            k.dirs_with_listing, k.dirs_without_listing
        );
        println!("  symlinks        {:>9}", k.symlinks);
        println!("  other           {:>9}", k.other);
        let by_errno: Vec<String> = self
            .errnos
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        if by_errno.is_empty() {
            println!("  failed lookups  {:>9}", k.failed);
        } else {
            println!(
                "  failed lookups  {:>9}  ({})",
                k.failed,
                by_errno.join(", ")
            );
        }
        println!("  excluded        {:>9}", k.excluded);
        println!(
            "  walked through  {:>9}  (ancestors of the roots, for realpath)",
            k.walked
        );
        println!(
            "contents        {} ({}) in {} blobs",
            self.content_bytes,
            human_bytes(self.content_bytes),
            self.blobs
        );
        println!(
            "  stored as     {} ({}), {} of the blobs zstd-compressed",
            self.stored_bytes,
            human_bytes(self.stored_bytes),
            self.compressed_blobs
        );
        println!("served roots    {}", self.roots.len());
        for r in &self.roots {
            println!("  {r}");
        }
        print_top(
            "left out (not software; passed through), probed paths by group",
            &self.left_out,
        );
        if top_n > 0 {
            print_top(
                &format!("top {top_n} directories by cached entries inside"),
                &self.top_probed,
            );
            print_top(
                &format!("top {top_n} directories by failed lookups inside"),
                &self.top_failed,
            );
        }
    }
}

fn print_top(title: &str, rows: &[(String, u64)]) {
    println!("{title}:");
    if rows.is_empty() {
        println!("  (none)");
    }
    for (dir, count) in rows {
        println!("  {count:>9}  {dir}");
    }
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    let cfg = launch::config(args.file.as_deref())?;
    let name = show(&cfg.cache);
    let loaded = load(&cfg.cache).map_err(|e| format!("{name}: {e}"))?;
    let view = CacheView::open(loaded.bytes(), Verify::Full).map_err(|e| format!("{name}: {e}"))?;
    let s = summarize(&view, args.top);
    if args.json {
        println!("{}", s.to_json(&name));
    } else {
        s.print(&name, args.top);
    }
    Ok(ExitCode::SUCCESS)
}
