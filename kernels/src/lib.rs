//! GPU-side knowledge and code for gpucost.
//!
//! This crate owns what an efficiency figure is measured against: [`peaks`] holds the datasheet
//! table of dense peak rates for common data-center GPUs, the per-SM per-clock rates of each
//! architecture, and the arithmetic that turns them into a peak at the clock a GPU actually ran
//! at (or an estimate for a GPU the table does not know).
//!
//! Later it will also hold the CUDA sources (GEMM and memory-bandwidth probes behind
//! `gpucost bench`) and their cudarc launchers; everything here today is plain Rust with no GPU
//! or driver dependency, so it builds and tests on any machine.

pub mod peaks;

pub use peaks::{
    clock_normalized_peak, estimate_peak, lookup, Arch, GpuSpec, ParsePrecisionError, Peaks,
    Precision, GPUS,
};
