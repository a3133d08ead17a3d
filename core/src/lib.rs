//! The pure middle of gpucost, in the order data flows: what is read from a GPU ([`reading`]),
//! which job holds it ([`attribute`]), what the interval cost ([`account`]), the job table that
//! adds it up ([`tracker`], [`jobs`]), and what a report shows ([`report`]); with the config
//! ([`config`]), benchmark results ([`benchmark`]) and time ([`clock`]).
//!
//! Nothing here does I/O but reading a config file the caller names, and nothing reads a clock:
//! time comes in through [`clock::Clock`] or as arguments. The crate's dependencies (no async
//! runtime, HTTP, SQLite, gRPC, NVML or CUDA) keep it so.

pub mod account;
pub mod attribute;
pub mod benchmark;
pub mod clock;
pub mod config;
pub mod jobs;
pub mod reading;
pub mod report;
pub mod tracker;
