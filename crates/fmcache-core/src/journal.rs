//! The recorder's per-process journal: one record per probe, appended with
//! a single write(2) so records from one process never interleave and a
//! process killed mid-way leaves at most one torn record at the end.
//!
//! Record: `[kind u8][0xA5][len u16 LE][path bytes]`.

use crate::path::PATH_MAX;

/// What a probe asks of the path; the merge records accordingly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// stat family, access, readlink, realpath: metadata.
    Stat = 1,
    /// Opened for reading: metadata and bytes.
    Open = 2,
    /// Listed (opendir): metadata and listing.
    List = 3,
    /// Written, created, renamed or deleted: never cached.
    Modify = 4,
    /// Scope hint: a file whose installation prefix is software (the
    /// executable as exec'd and as the kernel resolved it).
    Prefix = 5,
    /// Scope hint: a directory that is software as it stands
    /// (PYTHONPATH, PYTHONHOME, LD_LIBRARY_PATH, VIRTUAL_ENV, CONDA_PREFIX).
    Tree = 6,
    /// Scope hint: the user's own area (cwd, HOME, TMPDIR): never a root
    /// by inference, and excluded from any root that holds it.
    UserArea = 7,
    /// Scope hint: a root the user named (FMCACHE_INCLUDE).
    Include = 8,
    /// How often a process probed again what it journaled once (the
    /// recorder drops repeats): payload `[probe_hash u64 LE][count u32 LE]`.
    /// Only for `fmcache report`: what a probe costs is paid per call.
    Repeats = 9,
    /// One process ended (written once per process, by the preload copy,
    /// at exit): how the report tells calls per process.
    Process = 10,
}

/// The recorder's identity of one probe (what it asked, of which path),
/// also how the merge matches a `Repeats` record to its path.
#[inline]
pub fn probe_hash(kind: Kind, key: &[u8]) -> u64 {
    (fmcache_format::path_hash(key) ^ (kind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// Payload of a `Repeats` record.
pub const REPEATS_LEN: usize = 12;

pub fn repeats_payload(hash: u64, count: u32) -> [u8; REPEATS_LEN] {
    let mut b = [0u8; REPEATS_LEN];
    b[..8].copy_from_slice(&hash.to_le_bytes());
    b[8..].copy_from_slice(&count.to_le_bytes());
    b
}

/// Reads a `Repeats` payload back (None if it has another length).
pub fn parse_repeats(payload: &[u8]) -> Option<(u64, u32)> {
    if payload.len() != REPEATS_LEN {
        return None;
    }
    let h = u64::from_le_bytes(payload[..8].try_into().ok()?);
    let n = u32::from_le_bytes(payload[8..].try_into().ok()?);
    Some((h, n))
}

const MARK: u8 = 0xA5;
pub const HEADER: usize = 4;
/// Largest encoded record.
pub const MAX_RECORD: usize = HEADER + PATH_MAX;

/// Encodes one record into `buf`; returns its length, or 0 if it does not
/// fit (the probe is then not recorded, and passes through in production).
pub fn encode(kind: Kind, path: &[u8], buf: &mut [u8; MAX_RECORD]) -> usize {
    if path.len() >= PATH_MAX {
        return 0;
    }
    buf[0] = kind as u8;
    buf[1] = MARK;
    buf[2..4].copy_from_slice(&(path.len() as u16).to_le_bytes());
    buf[HEADER..HEADER + path.len()].copy_from_slice(path);
    HEADER + path.len()
}

/// Decodes a journal; stops at the first torn or foreign record.
pub fn decode(bytes: &[u8]) -> impl Iterator<Item = (Kind, &[u8])> {
    let mut rest = bytes;
    core::iter::from_fn(move || {
        if rest.len() < HEADER || rest[1] != MARK {
            return None;
        }
        let kind = match rest[0] {
            1 => Kind::Stat,
            2 => Kind::Open,
            3 => Kind::List,
            4 => Kind::Modify,
            5 => Kind::Prefix,
            6 => Kind::Tree,
            7 => Kind::UserArea,
            8 => Kind::Include,
            9 => Kind::Repeats,
            10 => Kind::Process,
            _ => return None,
        };
        let len = u16::from_le_bytes([rest[2], rest[3]]) as usize;
        let path = rest.get(HEADER..HEADER + len)?;
        rest = &rest[HEADER + len..];
        Some((kind, path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_RECORD];
        for (k, p) in [
            (Kind::Stat, &b"/a"[..]),
            (Kind::Open, b"/b/c"),
            (Kind::Modify, b"/d"),
        ] {
            let n = encode(k, p, &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        let all: Vec<_> = decode(&out).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1], (Kind::Open, &b"/b/c"[..]));
        let torn: Vec<_> = decode(&out[..out.len() - 1]).collect();
        assert_eq!(torn.len(), 2);
    }

    #[test]
    fn repeats_round_trip() {
        let h = probe_hash(Kind::Stat, b"/usr/lib");
        assert_eq!(h & 1, 1);
        assert_ne!(h, probe_hash(Kind::Open, b"/usr/lib"));
        let mut buf = [0u8; MAX_RECORD];
        let n = encode(Kind::Repeats, &repeats_payload(h, 41), &mut buf);
        let all: Vec<_> = decode(&buf[..n]).collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, Kind::Repeats);
        assert_eq!(parse_repeats(all[0].1), Some((h, 41)));
        assert_eq!(parse_repeats(b"short"), None);
    }
}
