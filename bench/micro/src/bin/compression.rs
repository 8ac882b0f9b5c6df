//! Per-blob compression of real caches, the measurement behind the codec
//! fmcache stores contents with (bench/compression.sh,
//! bench/results/compression.md).
//!
//! `fmcache-compression CACHE...`: for each cache and each codec, every
//! blob is compressed on its own (as the writer does) and kept raw when
//! compression saves less than an eighth; prints one table row per codec:
//! stored bytes, their share of the contents, compress time and decompress
//! time on one thread (median of three passes).

use std::time::Instant;

use fmcache_format::{CacheView, Verify};

#[derive(Clone, Copy)]
enum Codec {
    Lz4,
    Zstd(i32),
}

impl Codec {
    fn name(self) -> String {
        match self {
            Codec::Lz4 => "lz4 (lz4_flex block)".into(),
            Codec::Zstd(l) => format!("zstd -{l}"),
        }
    }
    fn compress(self, raw: &[u8]) -> Vec<u8> {
        match self {
            Codec::Lz4 => lz4_flex::block::compress(raw),
            Codec::Zstd(l) => zstd::bulk::compress(raw, l).expect("zstd compress"),
        }
    }
    fn decompress(self, packed: &[u8], out: &mut [u8]) -> usize {
        match self {
            Codec::Lz4 => lz4_flex::block::decompress_into(packed, out).expect("lz4 decompress"),
            Codec::Zstd(_) => {
                zstd::bulk::decompress_to_buffer(packed, out).expect("zstd decompress")
            }
        }
    }
}

/// The writer's rule: compressed only when that saves at least an eighth.
fn pays(raw: usize, packed: usize) -> bool {
    packed <= raw - raw / 8
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let codecs = [
        Codec::Lz4,
        Codec::Zstd(1),
        Codec::Zstd(3),
        Codec::Zstd(6),
        Codec::Zstd(9),
        Codec::Zstd(15),
    ];
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).expect("read cache");
        // Copied to an 8-aligned buffer, as a mapping would be.
        let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: u64 has no invalid bit patterns; the view covers the
        // vector's own bytes.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), bytes.len())
        };
        buf.copy_from_slice(&bytes);
        let view = CacheView::open(buf, Verify::Full).expect("a valid cache");
        let blobs: Vec<Vec<u8>> = view
            .blobs()
            .iter()
            .map(|b| view.blob_bytes(b).expect("blob").into_owned())
            .collect();
        let total: usize = blobs.iter().map(Vec::len).sum();
        let meta = view.header().meta_size;
        println!(
            "\n{path}: {} bytes on disk, {} blobs, {total} bytes of contents, {meta} bytes of tables\n",
            bytes.len(),
            blobs.len(),
        );
        println!("| codec | stored bytes | stored / contents | blobs kept raw | compress s | decompress s | decompress MB/s |");
        println!("|---|---|---|---|---|---|---|");
        for codec in codecs {
            let t = Instant::now();
            let packed: Vec<Option<Vec<u8>>> = blobs
                .iter()
                .map(|b| {
                    let p = codec.compress(b);
                    pays(b.len(), p.len()).then_some(p)
                })
                .collect();
            let compress_s = t.elapsed().as_secs_f64();
            let stored: usize = packed
                .iter()
                .zip(&blobs)
                .map(|(p, b)| p.as_ref().map_or(b.len(), Vec::len))
                .sum();
            let raw = packed.iter().filter(|p| p.is_none()).count();
            let mut out = vec![0u8; blobs.iter().map(Vec::len).max().unwrap_or(0)];
            let times: Vec<f64> = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    for (p, b) in packed.iter().zip(&blobs) {
                        match p {
                            Some(p) => {
                                let n = codec.decompress(p, &mut out[..b.len()]);
                                assert_eq!(n, b.len());
                            }
                            None => out[..b.len()].copy_from_slice(b),
                        }
                        std::hint::black_box(&out);
                    }
                    t.elapsed().as_secs_f64()
                })
                .collect();
            let d = median(times);
            println!(
                "| {} | {stored} | {:.1} % | {raw} | {compress_s:.2} | {d:.3} | {:.0} |",
                codec.name(),
                100.0 * stored as f64 / total as f64,
                total as f64 / d / 1e6,
            );
        }
    }
}
