//! Structure-aware: the input describes records, the real writer builds a
//! valid cache from them, then the rest of the input overwrites words in
//! the header, the section table or any table, and both checksums are
//! recomputed. The reader validates it as the server would and every
//! accessor must stay in bounds although the checksums are right.
#![no_main]

use std::borrow::Cow;

use fmcache_format::layout::{HEADER_SIZE, S_IFDIR, S_IFLNK, S_IFREG};
use fmcache_format::{read_header, Builder, Content, DirentRec, Record, StatRec};
use fmcache_format_fuzz::{exercise, fix_checksums};
use libfuzzer_sys::fuzz_target;

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    fn name(&mut self) -> Vec<u8> {
        let n = 1 + self.u8() % 3;
        (0..n).map(|_| b"abc.x"[(self.u8() % 5) as usize]).collect()
    }
}

fn stat(c: &mut Cursor<'_>) -> Option<Result<StatRec, i32>> {
    let kind = c.u8();
    let mode = match kind % 5 {
        0 => return None,
        1 => return Some(Err(1 + (c.u8() % 40) as i32)),
        2 => S_IFREG | 0o644,
        3 => S_IFDIR | 0o755,
        _ => S_IFLNK | 0o777,
    };
    Some(Ok(StatRec {
        mode,
        ino: c.u8() as u64,
        size: c.u8() as i64,
        dev: 1,
        nlink: 1,
        ..StatRec::default()
    }))
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let mut b = Builder::new(0, 0);
    let records = c.u8() % 24;
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    for _ in 0..records {
        let depth = 1 + c.u8() % 4;
        let mut path = Vec::new();
        for _ in 0..depth {
            path.push(b'/');
            path.extend(c.name());
        }
        let flags = c.u8();
        let lstat = stat(&mut c);
        let is_link = matches!(lstat, Some(Ok(st)) if st.is_symlink());
        let mut r = Record {
            path: path.clone(),
            lstat,
            follow: if flags & 1 != 0 { stat(&mut c) } else { None },
            excluded: flags & 2 != 0,
            ..Record::default()
        };
        if is_link || flags & 4 != 0 {
            // Symlinks to neighbours, to themselves, to parents: loops.
            let t = match c.u8() % 4 {
                0 => path.clone(),
                1 => b"..".to_vec(),
                2 => c.name(),
                _ => [&b"/"[..], &c.name()].concat(),
            };
            r.link = Some(t);
        }
        if flags & 8 != 0 {
            r.access = Some([c.u8() % 14, c.u8() % 31, c.u8() % 14]);
        }
        if flags & 16 != 0 {
            let n = c.u8() % 6;
            let mut list = vec![
                DirentRec {
                    name: b".".to_vec(),
                    d_type: 4,
                    ino: 1,
                },
                DirentRec {
                    name: b"..".to_vec(),
                    d_type: 4,
                    ino: 2,
                },
            ];
            for _ in 0..n {
                list.push(DirentRec {
                    name: c.name(),
                    d_type: c.u8() % 13,
                    ino: c.u8() as u64,
                });
            }
            r.listing = Some(list);
        }
        if flags & 32 != 0 {
            let len = (c.u8() % 40) as usize;
            blobs.push((0..len).map(|_| c.u8()).collect());
            r.content = Some(Content {
                mirror: path.clone(),
                bytes: Cow::Owned(blobs.last().unwrap().clone()),
            });
        }
        b.add(r);
    }
    let mut file = Vec::new();
    b.write(&mut file).expect("writing to a Vec");
    let meta = read_header(&file).unwrap().meta_size as usize;
    // Mutations: (where, how wide, value). `where` picks the header (its
    // counts and section table) or a section by number, then an offset.
    let mutations = c.u8() % 8;
    for _ in 0..mutations {
        let target = c.u8();
        let width = [1usize, 2, 4, 8][(c.u8() % 4) as usize];
        let at = c.u32() as usize;
        let value = match c.u8() % 4 {
            0 => 0u64,
            1 => u64::MAX,
            2 => c.u8() as u64,
            _ => c.u64(),
        };
        let (start, len) = if target % 9 == 8 {
            (64, HEADER_SIZE - 64 - 48)
        } else {
            let h = read_header(&file).unwrap();
            let s = h.sections[(target % 9) as usize];
            (s.offset as usize, s.size as usize)
        };
        if len < width || start.checked_add(len).is_none_or(|e| e > file.len()) {
            continue;
        }
        let at = start + at % (len - width + 1);
        file[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }
    // Sometimes the staged index alone (the meta prefix), as servers map it.
    if c.u8() & 1 != 0 && meta <= file.len() {
        file.truncate(meta);
    }
    fix_checksums(&mut file);
    exercise(&file);
});
