//! How a blob's bytes are stored in DATA: raw, or one zstd frame
//! (`Blob::codec`). Each blob is compressed on its own, so staging can
//! unpack blobs on several threads. Unpacking is safe on any input: the
//! output is capped at the recorded size (a frame that would write more
//! fails), and the result must have exactly that size and the recorded
//! XXH3-128, else the blob is refused.

use std::borrow::Cow;

use crate::layout::{codec, Blob};

/// zstd level: 32 % of W2's contents against 37 % at level 1 and 30 % at
/// level 6, which compresses 2.4 times slower for 6 % fewer bytes
/// (bench/results/compression.md).
pub const ZSTD_LEVEL: i32 = 3;

/// Why a blob's bytes could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// A codec this build does not know.
    Codec(u32),
    /// Raw bytes whose count is not the recorded size.
    Size,
    /// Not a zstd frame, or one that decodes to more or fewer bytes than
    /// recorded.
    Corrupt,
    /// Bytes of the recorded size whose XXH3-128 is not the recorded one.
    Hash,
    /// No memory for the decoder or the output.
    Memory,
}

impl core::fmt::Display for BlobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlobError::Codec(c) => write!(f, "unknown blob codec {c}"),
            BlobError::Size => f.write_str("blob of the wrong size"),
            BlobError::Corrupt => f.write_str("corrupt compressed blob"),
            BlobError::Hash => f.write_str("blob hash mismatch"),
            BlobError::Memory => f.write_str("out of memory unpacking a blob"),
        }
    }
}

/// Compresses `raw` for storage: `(codec, stored bytes)`, raw when
/// compression saves less than an eighth (incompressible files: the
/// decode would cost time for little).
pub fn pack<'d>(
    raw: &'d [u8],
    z: &mut Option<zstd::bulk::Compressor<'static>>,
) -> (u32, Cow<'d, [u8]>) {
    if raw.len() < 64 {
        return (codec::RAW, Cow::Borrowed(raw));
    }
    if z.is_none() {
        *z = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
    }
    let Some(c) = z.as_mut() else {
        return (codec::RAW, Cow::Borrowed(raw));
    };
    match c.compress(raw) {
        Ok(p) if p.len() <= raw.len() - raw.len() / 8 => (codec::ZSTD, Cow::Owned(p)),
        _ => (codec::RAW, Cow::Borrowed(raw)),
    }
}

/// A reusable decoder: one per staging thread.
pub struct Unpacker {
    z: Option<zstd::bulk::Decompressor<'static>>,
    buf: Vec<u8>,
}

impl Default for Unpacker {
    fn default() -> Self {
        Self::new()
    }
}

impl Unpacker {
    pub fn new() -> Unpacker {
        Unpacker {
            z: None,
            buf: Vec::new(),
        }
    }

    /// The blob's contents from its `stored` bytes (see
    /// `CacheView::blob_stored`), checked against its size and hash:
    /// `stored` itself for a raw blob, else this decoder's buffer.
    pub fn contents<'s>(
        &'s mut self,
        blob: &Blob,
        stored: &'s [u8],
    ) -> Result<&'s [u8], BlobError> {
        let size = usize::try_from(blob.size).map_err(|_| BlobError::Size)?;
        let out: &[u8] = match blob.codec {
            codec::RAW => {
                if stored.len() != size {
                    return Err(BlobError::Size);
                }
                stored
            }
            codec::ZSTD => {
                if self.z.is_none() {
                    self.z = Some(zstd::bulk::Decompressor::new().map_err(|_| BlobError::Memory)?);
                }
                let z = self.z.as_mut().ok_or(BlobError::Memory)?;
                self.buf.clear();
                // Fallible: a crafted size must not abort the process.
                self.buf
                    .try_reserve_exact(size)
                    .map_err(|_| BlobError::Memory)?;
                // The decoder writes into the spare capacity, at most
                // `capacity` bytes: never past the buffer.
                let n = z
                    .decompress_to_buffer(stored, &mut self.buf)
                    .map_err(|_| BlobError::Corrupt)?;
                if n != size || self.buf.len() != size {
                    return Err(BlobError::Corrupt);
                }
                &self.buf
            }
            c => return Err(BlobError::Codec(c)),
        };
        if crate::blob_hash(out) != blob.hash {
            return Err(BlobError::Hash);
        }
        Ok(out)
    }
}

/// One blob's contents, checked (see `Unpacker::contents`): borrowed when
/// stored raw, owned when decompressed. Allocates a decoder per call: for
/// tools, not for staging.
pub fn unpack<'a>(blob: &Blob, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, BlobError> {
    if blob.codec == codec::RAW {
        let mut u = Unpacker::new();
        u.contents(blob, stored)?;
        return Ok(Cow::Borrowed(stored));
    }
    let mut u = Unpacker::new();
    u.contents(blob, stored)?;
    Ok(Cow::Owned(u.buf))
}
