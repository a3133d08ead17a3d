//! Jobs as plain data: who a job is, how it ended, and what it has used and cost so far.
//!
//! These types are shared by attribution (which job holds a GPU), accounting (what an interval
//! costs), the ledger (what is persisted) and export (what is shown). No behaviour beyond sums.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::account::GpuEvents;

/// Names a configured job label (`jobs.export_labels`) may not take: the labels the exported
/// job series already carry, and `job`, which Prometheus owns.
pub const RESERVED_LABELS: &[&str] = &[
    "job",
    "job_id",
    "name",
    "user",
    "scheduler",
    "instance",
    "gpu",
    "simulated",
    "outcome",
];

/// Where a job's identity came from (the `scheduler` label of `gpucost_job_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Registered by `gpucost run` or the API.
    Gpucost,
    Slurm,
    Kubernetes,
    /// `GPUCOST_JOB_ID` in the process environment.
    Env,
    /// Nothing said who it is: named after the process.
    Unattributed,
}

impl Scheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Gpucost => "gpucost",
            Scheduler::Slurm => "slurm",
            Scheduler::Kubernetes => "kubernetes",
            Scheduler::Env => "env",
            Scheduler::Unattributed => "unattributed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Scheduler::Gpucost,
            Scheduler::Slurm,
            Scheduler::Kubernetes,
            Scheduler::Env,
            Scheduler::Unattributed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How a job ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    /// Non-zero exit, death by a signal, its time limit, out of memory, a node that failed
    /// ([`EndReason`] says which, when known): the cost since its last checkpoint is sunk.
    Failed,
    /// Ended by its user or an administrator (`scancel`): a deliberate end, not a failure.
    Cancelled,
    /// Ended by the scheduler for a job of higher priority (Slurm's PREEMPTED, a spot
    /// reclaim): the cost since its last checkpoint is sunk, as for a failure.
    Preempted,
    /// It vanished without anyone saying how it ended.
    Unknown,
}

impl Outcome {
    /// Every outcome, in order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Running,
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::Preempted,
        Outcome::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Preempted => "preempted",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Outcome::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The outcome of a process that exited with `code` or was killed by `signal`.
    pub fn from_exit(code: Option<i32>, signal: Option<i32>) -> Self {
        match (code, signal) {
            (_, Some(_)) => Outcome::Failed,
            (Some(0), None) => Outcome::Succeeded,
            (Some(_), None) => Outcome::Failed,
            (None, None) => Outcome::Unknown,
        }
    }

    /// Whether the cost since the job's last checkpoint is sunk (wasted): a failed or
    /// preempted run must be run again from there. A cancelled run was ended on purpose.
    pub fn loses_work(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Preempted)
    }
}

/// Why a job failed, where known (the `reason` label of `gpucost_job_outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// It exited with a non-zero code (`exit_code`).
    ExitCode,
    /// A signal killed it (`signal`).
    Signal,
    /// It ran into its time limit (Slurm's TIMEOUT and DEADLINE).
    TimeLimit,
    /// Killed out of memory (Slurm's OUT_OF_MEMORY, Kubernetes' OOMKilled).
    Oom,
    /// The node it ran on failed (Slurm's NODE_FAIL, BOOT_FAIL).
    NodeFail,
}

impl EndReason {
    pub const ALL: [EndReason; 5] = [
        EndReason::ExitCode,
        EndReason::Signal,
        EndReason::TimeLimit,
        EndReason::Oom,
        EndReason::NodeFail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ExitCode => "exit_code",
            EndReason::Signal => "signal",
            EndReason::TimeLimit => "time_limit",
            EndReason::Oom => "oom",
            EndReason::NodeFail => "node_fail",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        EndReason::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The reason an exit status gives for a failure: the signal, else a non-zero code.
    pub fn from_exit(code: Option<i32>, signal: Option<i32>) -> Option<Self> {
        match (code, signal) {
            (_, Some(_)) => Some(EndReason::Signal),
            (Some(c), None) if c != 0 => Some(EndReason::ExitCode),
            _ => None,
        }
    }
}

/// One field of [`Usage`]: its name (the ledger's column, the JSON key), its unit, and how to
/// read it. [`Usage::FIELDS`] lists them all, in the order the struct declares them.
#[derive(Debug, Clone, Copy)]
pub struct UsageField {
    pub name: &'static str,
    /// `s`, `J`, `g` (CO2e), `FLOP`, or `money` (the configured currency).
    pub unit: &'static str,
    pub get: fn(&Usage) -> f64,
}

/// Declares [`Usage`] from one list of fields, and from the same list its field table
/// ([`Usage::FIELDS`]), its sum ([`Usage::add`]) and its conversions to and from an array in
/// field order (what the ledger stores).
macro_rules! usage {
    (
        $(#[$struct_attr:meta])*
        pub struct Usage {
            $( $(#[$field_attr:meta])* $field:ident: $unit:literal, )*
        }
    ) => {
        $(#[$struct_attr])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        pub struct Usage {
            $( $(#[$field_attr])* pub $field: f64, )*
        }

        impl Usage {
            /// How many fields a `Usage` has.
            pub const LEN: usize = [$(stringify!($field)),*].len();

            /// Every field, in declaration order: the order of the ledger's usage columns and of
            /// [`Usage::to_array`].
            pub const FIELDS: [UsageField; Self::LEN] = [
                $( UsageField { name: stringify!($field), unit: $unit, get: |u| u.$field }, )*
            ];

            /// Adds `o` field by field.
            pub fn add(&mut self, o: &Usage) {
                $( self.$field += o.$field; )*
            }

            /// The fields in [`Usage::FIELDS`] order.
            pub fn to_array(&self) -> [f64; Self::LEN] {
                [$( self.$field, )*]
            }

            /// The inverse of [`Usage::to_array`].
            pub fn from_array(a: [f64; Self::LEN]) -> Self {
                let [$( $field, )*] = a;
                Usage { $( $field, )* }
            }
        }
    };
}

usage! {
    /// Running sums of what a job (or a job on one GPU, or a GPU) used and cost. Money is in the
    /// configured currency; every field only ever grows.
    ///
    /// Each field's name is its ledger column and its JSON key; append new fields at the end (the
    /// ledger's columns follow this order, and a new one needs a schema migration).
    pub struct Usage {
        /// GPU-seconds held (weighted by the job's share of each GPU).
        gpu_seconds: "s",
        energy_j: "J",
        carbon_g: "g",
        cost_gpu_time: "money",
        cost_energy: "money",
        cost_overhead: "money",
        /// GPU-seconds held while the GPU was idle (utilization below the idle threshold).
        idle_gpu_seconds: "s",
        /// The cost (all components) of those idle seconds.
        idle_cost: "money",
        /// FLOPs executed, estimated from the GPU's pipe activity (GPM) x what its SMs do per clock
        /// on each pipe x the SM clock (`account::efficiency::interval_peaks`).
        flop: "FLOP",
        /// GPU-seconds held while FP32-bound: the FP32 pipe busy, the tensor cores idle.
        fp32_seconds: "s",
        /// What those seconds would have saved at the GPU's bf16/fp32 speedup: their cost x
        /// (1 - 1/speedup).
        fp32_saving: "money",
    }
}

impl Usage {
    pub fn total_cost(&self) -> f64 {
        self.cost_gpu_time + self.cost_energy + self.cost_overhead
    }
}

/// A job as the agent knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The `job_id` label: stable across agent restarts.
    pub id: String,
    pub name: String,
    pub user: String,
    pub uid: Option<u32>,
    pub scheduler: Scheduler,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it failed, where known (only for `failed`).
    #[serde(default)]
    pub reason: Option<EndReason>,
    /// Sum over the job's GPUs.
    pub usage: Usage,
    /// By GPU UUID.
    pub per_gpu: BTreeMap<String, Usage>,
    /// How the job was registered, for jobs registered by `gpucost run`, `job start` or the API
    /// (kept in the ledger so a restarted agent still knows the job's processes and GPUs).
    pub registration: Option<Registered>,
    /// What the job reported about its own progress, if anything.
    pub progress: Option<Progress>,
}

/// Progress a job reports over the API (cumulative since it started).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    pub tokens: u64,
    pub samples: u64,
    pub steps: u64,
    /// Model FLOPs per token (e.g. 6 x parameters for a decoder's training step), if given.
    pub flops_per_token: Option<f64>,
    /// Model FLOPs per step, if given (used when no per-token figure is).
    pub flops_per_step: Option<f64>,
    /// Model FLOPs done so far, from the counts above.
    pub model_flop: f64,
    /// Model FLOP/s between the last two reports.
    pub flop_rate: Option<f64>,
    /// Unix seconds of the last report.
    pub updated_at: f64,
    /// The job's last reported checkpoint, if it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// What a job had cost when it reported its last checkpoint: a failed or preempted run loses
/// only what came after. The idle and FP32 parts are kept so that the waste reasons, which
/// count those since the start, never count the same money twice.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Unix seconds.
    pub at: f64,
    /// The job's total cost (all components) then.
    pub cost: f64,
    /// Its idle cost then.
    pub idle_cost: f64,
    /// Its FP32 saving then.
    pub fp32_saving: f64,
}

impl Checkpoint {
    /// The checkpoint of a job whose usage is `u` now, at `at`.
    pub fn of(u: &Usage, at: f64) -> Self {
        Checkpoint {
            at,
            cost: u.total_cost(),
            idle_cost: u.idle_cost,
            fp32_saving: u.fp32_saving,
        }
    }
}

/// What a registration said about a job's processes and GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Registered {
    /// The job's root process; it and its descendants belong to the job.
    pub pid: Option<u32>,
    /// GPUs allocated to the job (UUIDs or indices as text), held even while idle.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// Registered by root (a scheduler's hook, root's `gpucost run`): it claims every process
    /// below its root; a user's registration claims only that user's processes.
    #[serde(default)]
    pub by_root: bool,
}

impl JobRecord {
    /// The id an earlier run keeps when a scheduler gives its id to a new job (Slurm's ids
    /// start again after its controller's state is reset; a requeued job runs again under its
    /// id): `ID@START`, its start in unix seconds. The new run takes the id.
    pub fn earlier_run_id(id: &str, started_at: f64) -> String {
        format!("{id}@{}", started_at as i64)
    }

    /// The cost that bought nothing: its idle time, plus what FP32-bound time would have saved
    /// with mixed precision, plus, for a failed or preempted run, the rest of what it cost
    /// since its last checkpoint (since its start when it reported none). The parts are
    /// [`JobRecord::waste`]'s and add up to this.
    pub fn wasted_cost(&self) -> f64 {
        let w = self.waste();
        w.idle + w.fp32 + w.lost
    }

    /// The waste by reason, no part of the cost in two of them.
    pub fn waste(&self) -> Waste {
        let u = &self.usage;
        let lost = if self.outcome.loses_work() {
            let c = self
                .progress
                .as_ref()
                .and_then(|p| p.checkpoint)
                .unwrap_or_default();
            // What came after the checkpoint, less its idle and FP32 parts (counted above).
            let after = u.total_cost() - c.cost;
            let counted = (u.idle_cost - c.idle_cost) + (u.fp32_saving - c.fp32_saving);
            (after - counted).max(0.0)
        } else {
            0.0
        };
        Waste {
            idle: u.idle_cost,
            fp32: u.fp32_saving,
            lost,
        }
    }
}

/// A job's wasted cost by reason (`gpucost_job_wasted_cost_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Waste {
    /// Held while idle.
    pub idle: f64,
    /// What mixed precision would have saved of FP32-bound time.
    pub fp32: f64,
    /// The rest of the cost a failed or preempted run lost since its last checkpoint (under
    /// its outcome's name, `failed` or `preempted`).
    pub lost: f64,
}

/// A GPU's node-level totals, kept in the ledger so that counters continue across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    pub uuid: String,
    pub index: u32,
    pub model: String,
    /// All usage of the GPU, allocated or not.
    pub usage: Usage,
    /// Seconds the GPU was held by no job.
    pub unallocated_seconds: f64,
    /// Seconds throttled by reason, and Xids.
    #[serde(default)]
    pub events: GpuEvents,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A usage whose fields are 1, 2, 3, ... in declaration order.
    fn counting() -> Usage {
        let mut a = [0.0; Usage::LEN];
        for (i, v) in a.iter_mut().enumerate() {
            *v = (i + 1) as f64;
        }
        Usage::from_array(a)
    }

    #[test]
    fn the_field_table_names_reads_and_orders_every_field() {
        let u = counting();
        assert_eq!(Usage::from_array(u.to_array()), u);
        for (i, f) in Usage::FIELDS.iter().enumerate() {
            assert_eq!((f.get)(&u), (i + 1) as f64, "{}", f.name);
        }
        // The JSON keys are the field names, in the same order.
        let json = serde_json::to_value(u).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut names: Vec<&str> = Usage::FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        assert_eq!(keys, names);
        for f in &Usage::FIELDS {
            assert_eq!(json[f.name], serde_json::json!((f.get)(&u)), "{}", f.name);
        }
    }

    #[test]
    fn add_sums_every_field() {
        let mut u = counting();
        u.add(&counting());
        for (i, f) in Usage::FIELDS.iter().enumerate() {
            assert_eq!((f.get)(&u), 2.0 * (i + 1) as f64, "{}", f.name);
        }
    }
}
