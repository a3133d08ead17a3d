//! What a GPU model is and what its counters mean, as plain Rust with no GPU and no I/O.
//!
//! - [`peaks`]: the datasheet table of dense peak rates, the per-SM per-clock rates of each
//!   architecture, and clock-normalized peaks.
//! - [`pipes`]: [`Pipes`], how busy each part of a GPU was (Hopper GPM), the one definition the
//!   NVML backend, the simulated node, the recorder and the accounting share.
//!
//! The pure core, the simulated node and the kernels crate all depend on this crate; it depends
//! on nothing of theirs.

pub mod peaks;
pub mod pipes;

pub use peaks::{
    clock_normalized_peak, estimate_peak, lookup, sm_peak, Arch, GpuSpec, ParsePrecisionError,
    Peaks, Precision, GPUS,
};
pub use pipes::Pipes;
