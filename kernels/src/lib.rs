//! GPU-side knowledge and code for gpucost.
//!
//! - [`registry`]: the CUDA modules (`kernels/cuda/*.cu`), their targets and entry points, and
//!   the PTX shipped for GPU nodes that have a driver but no CUDA toolkit.
//! - [`devices`]: which CUDA device is the GPU NVML names (by UUID, never by index).
//! - [`flops`]: how much work each kernel does, and rates from times. Pure.
//! - [`clocks`]: the SM clock each launch ran at, from the stamps its blocks write. Pure.
//! - [`suite`]: what `gpucost bench` and the agent run: each kernel verified, then timed.
//!
//! The datasheet peaks and per-SM rates live in `gpucost-hw` (no GPU, no CUDA).
//!
//! Everything that touches CUDA loads it at run time (cudarc with dynamic loading), so this
//! crate builds and its pure parts test on machines without CUDA; a missing driver or library
//! is an error value, never a panic.

mod blas;
mod check;
pub mod clocks;
pub mod devices;
pub mod flops;
mod gpu;
mod launch;
pub mod registry;
pub mod suite;

#[cfg(test)]
mod ptx_tests;
#[cfg(test)]
mod tools;
