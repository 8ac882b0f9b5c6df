//! Build a cache file from records. Deterministic: the same records give
//! the same bytes whatever order they were added in.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write};

use crate::layout::*;
use crate::{blob_hash, build_id, path_hash};

/// One name of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirentRec {
    pub name: Vec<u8>,
    pub d_type: u8,
    pub ino: u64,
}

/// Contents of a regular file and the canonical path they are staged at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content<'d> {
    pub mirror: Vec<u8>,
    pub bytes: Cow<'d, [u8]>,
}

/// Everything known about one probed path: the builder's input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record<'d> {
    pub path: Vec<u8>,
    /// lstat(2): stat or errno.
    pub lstat: Option<Result<StatRec, i32>>,
    /// stat(2) when it differs from lstat (symlinks).
    pub follow: Option<Result<StatRec, i32>>,
    pub link: Option<Vec<u8>>,
    /// access(2) errnos for R, W, X.
    pub access: Option<[u8; 3]>,
    pub listing: Option<Vec<DirentRec>>,
    pub content: Option<Content<'d>>,
    pub excluded: bool,
    /// A root of the served software.
    pub root: bool,
    /// An ancestor of a root, for realpath's walk only.
    pub walk: bool,
}

#[derive(Default)]
struct Strings {
    bytes: Vec<u8>,
    seen: HashMap<Vec<u8>, StrRef>,
}

impl Strings {
    fn add(&mut self, s: &[u8]) -> StrRef {
        if let Some(r) = self.seen.get(s) {
            return *r;
        }
        let r = StrRef {
            offset: self.bytes.len() as u32,
            len: s.len() as u32,
        };
        self.bytes.extend_from_slice(s);
        self.seen.insert(s.to_vec(), r);
        r
    }
}

fn push<T: Plain>(out: &mut Vec<u8>, v: &T) {
    out.extend_from_slice(as_bytes(v));
}

fn align(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(SECTION_ALIGN) {
        out.push(0);
    }
}

/// Collects records, then writes a cache.
#[derive(Default)]
pub struct Builder<'d> {
    records: Vec<Record<'d>>,
    notes: Vec<u8>,
    uid: u32,
    gid: u32,
}

/// Sizes of what was written, for summaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    pub entries: usize,
    pub blobs: usize,
    /// Size of the DATA section: the stored (compressed) contents.
    pub data_bytes: u64,
    /// The contents before compression, each distinct blob once.
    pub content_bytes: u64,
    pub file_size: u64,
    pub checksum: u64,
}

impl<'d> Builder<'d> {
    pub fn new(recorder_uid: u32, recorder_gid: u32) -> Self {
        Builder {
            records: Vec::new(),
            notes: Vec::new(),
            uid: recorder_uid,
            gid: recorder_gid,
        }
    }

    /// Sets the notes for people (`Header::notes`).
    pub fn notes(&mut self, text: Vec<u8>) {
        self.notes = text;
    }

    /// Adds a record; a later record for the same path replaces it.
    pub fn add(&mut self, rec: Record<'d>) {
        self.records.push(rec);
    }

    /// The records added so far (a path added twice appears twice).
    pub fn records(&self) -> &[Record<'d>] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Serialises into `out`; returns what it wrote.
    pub fn write(mut self, out: &mut dyn Write) -> io::Result<Written> {
        // Last record per path wins; sort by path for a canonical order.
        let mut by_path: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, r) in self.records.iter().enumerate() {
            by_path.insert(r.path.clone(), i);
        }
        let mut keep: Vec<usize> = by_path.into_values().collect();
        keep.sort_by(|&a, &b| self.records[a].path.cmp(&self.records[b].path));
        let records: Vec<Record<'d>> = {
            let mut slots: Vec<Option<Record<'d>>> = self.records.drain(..).map(Some).collect();
            keep.iter()
                .map(|&i| slots[i].take().expect("each index once"))
                .collect()
        };

        let mut strings = Strings::default();
        let mut stats: Vec<StatRec> = Vec::new();
        let mut stat_ix: HashMap<StatRec, u32> = HashMap::new();
        let mut dirents: Vec<Dirent> = Vec::new();
        let mut order: Vec<u32> = Vec::new();
        let mut blobs: Vec<Blob> = Vec::new();
        let mut blob_ix: HashMap<[u8; 16], u32> = HashMap::new();
        let mut data: Vec<Cow<'_, [u8]>> = Vec::new();
        let mut zstd = None;
        let mut data_len: u64 = 0;
        let mut entries: Vec<Entry> = Vec::with_capacity(records.len());
        let mut top_filter = [0u64; 4];
        for r in records.iter() {
            if let Some(c) = first_component(&r.path) {
                let (w, b) = top_bit(c);
                top_filter[w] |= b;
            }
        }

        let mut stat_of = |r: &Option<Result<StatRec, i32>>| -> (u32, u16) {
            match r {
                None => (NONE, 0),
                Some(Err(e)) => (NONE, (*e).clamp(1, u16::MAX as i32) as u16),
                Some(Ok(st)) => {
                    let next = stats.len() as u32;
                    let ix = *stat_ix.entry(*st).or_insert_with(|| {
                        stats.push(*st);
                        next
                    });
                    (ix, 0)
                }
            }
        };

        for r in &records {
            let mut e = Entry {
                hash: path_hash(&r.path),
                path: strings.add(&r.path),
                blob: NONE,
                ..Entry::default()
            };
            (e.lstat, e.lstat_errno) = stat_of(&r.lstat);
            (e.follow, e.follow_errno) = if r.follow.is_some() {
                stat_of(&r.follow)
            } else {
                (e.lstat, e.lstat_errno)
            };
            if r.excluded {
                e.flags |= flag::EXCLUDED;
            }
            if r.root {
                e.flags |= flag::ROOT;
            }
            if r.walk {
                e.flags |= flag::WALK;
            }
            if let Some(l) = &r.link {
                e.link = strings.add(l);
            }
            if let Some(a) = r.access {
                e.flags |= flag::ACCESS;
                e.access_errno = a;
            }
            if let Some(list) = &r.listing {
                e.flags |= flag::LISTED;
                e.dirent_first = dirents.len() as u32;
                e.dirent_count = list.len() as u32;
                let mut sorted: Vec<u32> = (0..list.len() as u32).collect();
                sorted.sort_by(|&a, &b| list[a as usize].name.cmp(&list[b as usize].name));
                order.extend(sorted);
                for d in list {
                    dirents.push(Dirent {
                        ino: d.ino,
                        name: strings.add(&d.name),
                        d_type: d.d_type,
                        _pad: [0; 7],
                    });
                }
            }
            if let Some(c) = &r.content {
                let hash = blob_hash(&c.bytes);
                let next = blobs.len() as u32;
                let ix = *blob_ix.entry(hash).or_insert_with(|| {
                    let (codec, stored) = crate::codec::pack(&c.bytes, &mut zstd);
                    blobs.push(Blob {
                        offset: data_len,
                        size: c.bytes.len() as u64,
                        stored: stored.len() as u64,
                        codec,
                        _pad: 0,
                        hash,
                    });
                    data_len += stored.len() as u64;
                    data.push(stored);
                    data_len = data_len.next_multiple_of(SECTION_ALIGN as u64);
                    next
                });
                e.flags |= flag::CONTENT;
                e.blob = ix;
                e.mirror = strings.add(&c.mirror);
            }
            entries.push(e);
        }

        if entries.len() > MAX_ENTRIES as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} entries: a cache holds at most {MAX_ENTRIES}",
                    entries.len()
                ),
            ));
        }
        let bucket_count = (entries.len() * 2).max(16).next_power_of_two();
        let mut buckets = vec![0u64; bucket_count];
        for (i, e) in entries.iter().enumerate() {
            let mut slot = (e.hash as usize) & (bucket_count - 1);
            while buckets[slot] != 0 {
                slot = (slot + 1) & (bucket_count - 1);
            }
            buckets[slot] = bucket_of(i as u32, e.hash, e.path.offset);
        }

        let notes = strings.add(&self.notes);
        // Meta part: header placeholder, then the sections in order.
        let mut meta = vec![0u8; HEADER_SIZE];
        let mut sections = [Section::default(); sec::COUNT];
        let mut put = |meta: &mut Vec<u8>, which: usize, bytes: &dyn Fn(&mut Vec<u8>)| {
            align(meta);
            let start = meta.len();
            bytes(meta);
            sections[which] = Section {
                offset: start as u64,
                size: (meta.len() - start) as u64,
            };
        };
        put(&mut meta, sec::BUCKETS, &|m| {
            buckets
                .iter()
                .for_each(|b| m.extend_from_slice(&b.to_le_bytes()))
        });
        put(&mut meta, sec::ENTRIES, &|m| {
            entries.iter().for_each(|e| push(m, e))
        });
        put(&mut meta, sec::STATS, &|m| {
            stats.iter().for_each(|s| push(m, s))
        });
        put(&mut meta, sec::DIRENTS, &|m| {
            dirents.iter().for_each(|d| push(m, d))
        });
        put(&mut meta, sec::DIRENT_ORDER, &|m| {
            order
                .iter()
                .for_each(|o| m.extend_from_slice(&o.to_le_bytes()))
        });
        put(&mut meta, sec::BLOBS, &|m| {
            blobs.iter().for_each(|b| push(m, b))
        });
        put(&mut meta, sec::STRINGS, &|m| {
            m.extend_from_slice(&strings.bytes)
        });
        align(&mut meta);
        let meta_size = meta.len() as u64;
        sections[sec::DATA] = Section {
            offset: meta_size,
            size: data_len,
        };

        let header = Header {
            magic: MAGIC,
            version: FORMAT_VERSION,
            header_size: HEADER_SIZE as u32,
            build_id: build_id(),
            file_size: meta_size + data_len,
            meta_size,
            checksum: 0,
            meta_checksum: 0,
            recorder_uid: self.uid,
            recorder_gid: self.gid,
            entry_count: entries.len() as u32,
            bucket_count: bucket_count as u32,
            sections,
            notes,
            top_filter,
            reserved: [0; 8],
        };
        meta[..HEADER_SIZE].copy_from_slice(as_bytes(&header));

        // Checksums: fields are zero in `meta` now, as the definition wants.
        let meta_checksum = xxhash_rust::xxh3::xxh3_64(&meta);
        let mut whole = xxhash_rust::xxh3::Xxh3::new();
        whole.update(&meta);
        let pad = [0u8; SECTION_ALIGN];
        let pad_of = |len: usize| (SECTION_ALIGN - len % SECTION_ALIGN) % SECTION_ALIGN;
        for d in &data {
            whole.update(d);
            whole.update(&pad[..pad_of(d.len())]);
        }
        let checksum = whole.digest();
        meta[48..56].copy_from_slice(&checksum.to_le_bytes());
        meta[56..64].copy_from_slice(&meta_checksum.to_le_bytes());

        out.write_all(&meta)?;
        for d in &data {
            out.write_all(d)?;
            out.write_all(&pad[..pad_of(d.len())])?;
        }
        Ok(Written {
            entries: entries.len(),
            blobs: blobs.len(),
            data_bytes: data_len,
            content_bytes: blobs.iter().map(|b| b.size).sum(),
            file_size: meta_size + data_len,
            checksum,
        })
    }
}
