//! Shared pieces of the micro-benchmarks: the synthetic cache generator and
//! the per-process attach as the preload library does it.

pub mod attach;
pub mod synth;
