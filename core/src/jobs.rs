//! Jobs as plain data: who a job is, how it ended, and what it has used and cost so far.
//!
//! These types are shared by attribution (which job holds a GPU), accounting (what an interval
//! costs), the ledger (what is persisted) and export (what is shown). No behaviour beyond sums.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Non-zero exit or death by a signal: its whole cost is wasted (sunk) cost.
    Failed,
    /// It vanished without anyone saying how it ended.
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Outcome::Running,
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::Unknown,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
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
}

/// Running sums of what a job (or a job on one GPU, or a GPU) used and cost. Money is in the
/// configured currency; every field only ever grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// GPU-seconds held (weighted by the job's share of each GPU).
    pub gpu_seconds: f64,
    pub energy_j: f64,
    pub carbon_g: f64,
    pub cost_gpu_time: f64,
    pub cost_energy: f64,
    pub cost_overhead: f64,
    /// GPU-seconds held while the GPU was idle (utilization below the idle threshold).
    pub idle_gpu_seconds: f64,
    /// The cost (all components) of those idle seconds.
    pub idle_cost: f64,
    /// FLOPs executed, estimated from the GPU's pipe activity (GPM) x each pipe's peak rate.
    pub flop: f64,
    /// GPU-seconds held while FP32-bound: the FP32 pipe busy, the tensor cores idle.
    pub fp32_seconds: f64,
    /// What those seconds would have saved at the GPU's bf16/fp32 speedup: their cost x
    /// (1 - 1/speedup).
    pub fp32_saving: f64,
}

impl Usage {
    pub fn total_cost(&self) -> f64 {
        self.cost_gpu_time + self.cost_energy + self.cost_overhead
    }

    pub fn add(&mut self, o: &Usage) {
        self.gpu_seconds += o.gpu_seconds;
        self.energy_j += o.energy_j;
        self.carbon_g += o.carbon_g;
        self.cost_gpu_time += o.cost_gpu_time;
        self.cost_energy += o.cost_energy;
        self.cost_overhead += o.cost_overhead;
        self.idle_gpu_seconds += o.idle_gpu_seconds;
        self.idle_cost += o.idle_cost;
        self.flop += o.flop;
        self.fp32_seconds += o.fp32_seconds;
        self.fp32_saving += o.fp32_saving;
    }

    /// The fields in ledger column order (see `ledger::schema::USAGE_COLUMNS`).
    pub fn to_array(&self) -> [f64; 11] {
        [
            self.gpu_seconds,
            self.energy_j,
            self.carbon_g,
            self.cost_gpu_time,
            self.cost_energy,
            self.cost_overhead,
            self.idle_gpu_seconds,
            self.idle_cost,
            self.flop,
            self.fp32_seconds,
            self.fp32_saving,
        ]
    }

    pub fn from_array(a: [f64; 11]) -> Self {
        let [gpu_seconds, energy_j, carbon_g, cost_gpu_time, cost_energy, cost_overhead, idle_gpu_seconds, idle_cost, flop, fp32_seconds, fp32_saving] =
            a;
        Usage {
            gpu_seconds,
            energy_j,
            carbon_g,
            cost_gpu_time,
            cost_energy,
            cost_overhead,
            idle_gpu_seconds,
            idle_cost,
            flop,
            fp32_seconds,
            fp32_saving,
        }
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
}

/// What a registration said about a job's processes and GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Registered {
    /// The job's root process; it and its descendants belong to the job.
    pub pid: Option<u32>,
    /// GPUs allocated to the job (UUIDs or indices as text), held even while idle.
    #[serde(default)]
    pub gpus: Vec<String>,
}

impl JobRecord {
    /// The cost that bought nothing: all of it for a failed run; else its idle time plus what
    /// FP32-bound time would have saved with mixed precision.
    pub fn wasted_cost(&self) -> f64 {
        if self.outcome == Outcome::Failed {
            self.usage.total_cost()
        } else {
            self.usage.idle_cost + self.usage.fp32_saving
        }
    }
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
}
