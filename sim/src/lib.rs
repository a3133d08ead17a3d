//! The simulated GPU node.
//!
//! A scenario (TOML, see `sim/README.md`) describes GPUs, the jobs that load them in phases, and
//! faults (a GPU lost, an energy-counter reset, an Xid error); a GPU may instead replay recorded
//! readings of a real one ([`Trace`]). [`SimulatedNode`] answers what each GPU
//! reads at a given scenario time, pipe activity ([`Pipes`], what Hopper's GPM reports)
//! included. It is shared by the agent's `--simulate` mode and by the fake `libnvidia-ml.so` in
//! `tests/fake-nvml`, so the demo and the tests run on one model.
//!
//! Nothing here does I/O except [`Scenario::load`], which reads the scenario file.

mod model;
mod pipes;
mod scenario;
mod trace;
mod violations;

pub use model::{reason, GpuState, MigInstanceState, SimProcess, SimulatedNode};
pub use pipes::{coefficients, PipeSeconds, Pipes};
pub use scenario::{
    Context, DriverEventKind, EventKind, EventSpec, GpuSpec, JobSpec, MigInstanceSpec, NvmlQuirks,
    PhaseSpec, RegisterEventsError, Scenario, ScenarioError, DEMO,
};
pub use trace::{Trace, TracePipes};
pub use violations::ViolationSeconds;

#[cfg(test)]
mod tests;
