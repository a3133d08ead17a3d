//! The node as of the latest sample: what the sampler publishes and what `/metrics` and the API
//! render. Plain data, cheap to share behind an `Arc`; readers never touch the hardware.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use gpucost_core::account::energy::EnergyMethod;
use gpucost_core::account::pricing::Pricing;
use gpucost_core::account::GpuTotals;
use gpucost_core::jobs::{GpuRecord, JobRecord, Outcome};
use gpucost_core::reading::{GpuStatic, ProcessUse, Reading, Source};
use gpucost_core::report::whatif::WhatIfOptions;

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the sample was taken (monotonic clock); `None` before the first one.
    pub taken_at: Option<Instant>,
    /// The scenario name when the node is simulated.
    pub simulated: Option<String>,
    pub source: Source,
    /// Whether the GPU library is loaded and answering.
    pub backend_up: bool,
    /// Why it is not, when it is not.
    pub backend_error: Option<String>,
    /// Whether an operator asked the agent to let go of the GPU library (SIGUSR1): nothing is
    /// measured until it is taken back (SIGUSR2).
    pub backend_paused: bool,
    /// Times the library was closed and opened again because every GPU failed.
    pub backend_reopens: u64,
    /// Whether the listener for Xids and other driver events is waiting for them.
    pub xid_listener_up: bool,
    /// (gpu, driver event) -> count since the agent started (ECC errors, a GPU unavailable or
    /// lost, as the event listener heard them).
    pub driver_events: Vec<(u32, &'static str, u64)>,
    pub driver: Option<String>,
    pub gpus: Vec<GpuSnapshot>,
    /// Wall time the last sampling cycle took.
    pub sample_duration_s: f64,
    pub samples_total: u64,
    /// Ticks skipped because a cycle ran late (a slow or hung NVML call).
    pub skipped_samples: u64,
    /// Socket requests dropped unanswered because they waited past their caller's deadline.
    pub late_requests: u64,
    /// The latest benchmark of each GPU, by UUID.
    pub benchmarks: Arc<BTreeMap<String, gpucost_core::benchmark::GpuBenchmark>>,
    /// `bench.min_ratio`.
    pub bench_min_ratio: f64,
    /// (gpu, field, kind) -> count of failed reads; `field` is "all" when the whole GPU failed.
    pub sample_errors: Vec<(u32, &'static str, &'static str, u64)>,
    /// Job and GPU totals as last persisted (or live, when there is no ledger).
    pub published: Published,
    /// Why the ledger cannot be written, when it cannot.
    pub ledger_error: Option<String>,
    pub currency: String,
    pub market: &'static str,
    /// Job labels exported on `gpucost_job_info`.
    pub export_labels: Arc<Vec<String>>,
    /// Per running job: achieved FLOP/s and peak over the last tick (live, not persisted).
    pub job_rates: Arc<BTreeMap<String, gpucost_core::tracker::JobRate>>,
    /// What each job's savings levers are priced with (`gpucost_job_savings_potential`).
    pub what_if: Arc<WhatIfPrices>,
}

/// The node's prices and its GPUs' models: with a job's usage, all that
/// [`gpucost_core::report::whatif::what_if`] needs, as `gpucost report --what-if` calls it. The
/// node replaces it only when a GPU appears or changes model, so that the renderer can tell an
/// unchanged job by its record alone.
#[derive(Debug, Clone, Default)]
pub struct WhatIfPrices {
    pub pricing: Pricing,
    /// GPU UUID -> model ([`gpucost_core::report::whatif::models_by_uuid`]).
    pub model_of: BTreeMap<String, String>,
    pub opts: WhatIfOptions,
}

/// Totals that must never go backwards, as exported.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Jobs on this node: running ones and those in their grace period.
    pub jobs: Arc<Vec<Arc<JobRecord>>>,
    /// By GPU UUID.
    pub gpus: Arc<BTreeMap<String, GpuRecord>>,
    /// Finished jobs since the ledger began, by outcome.
    pub finished: BTreeMap<Outcome, u64>,
}

impl Snapshot {
    /// How old the sample is at `now` (monotonic), when there is one.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.taken_at.map(|t| now.saturating_duration_since(t))
    }

    /// Whether the node thread finished a sampling cycle within `stale_after` of `now`: its own
    /// heartbeat, what `/healthz` and the systemd watchdog go by. A stuck or lost GPU does not
    /// hold it back (each GPU's read has a deadline), so it says whether the agent works, not
    /// whether every GPU answers: [`Snapshot::stale_gpus`] says that.
    pub fn fresh(&self, now: Instant, stale_after: Duration) -> bool {
        self.age(now).is_some_and(|a| a <= stale_after)
    }

    /// The GPUs that did not answer the last cycle (lost, failing, stuck in a call, or not read
    /// because the library is closed or released): reported by `/healthz`, never a reason for
    /// it to fail, since restarting the agent does not bring a GPU back.
    pub fn stale_gpus(&self) -> impl Iterator<Item = &GpuSnapshot> {
        self.gpus.iter().filter(|g| !g.up)
    }

    pub fn empty(source: Source, simulated: Option<String>) -> Self {
        Snapshot {
            taken_at: None,
            simulated,
            source,
            backend_up: false,
            backend_error: None,
            backend_paused: false,
            backend_reopens: 0,
            xid_listener_up: false,
            driver_events: Vec::new(),
            driver: None,
            gpus: Vec::new(),
            sample_duration_s: 0.0,
            samples_total: 0,
            skipped_samples: 0,
            late_requests: 0,
            benchmarks: Arc::new(BTreeMap::new()),
            bench_min_ratio: gpucost_core::config::defaults::BENCH_MIN_RATIO,
            sample_errors: Vec::new(),
            published: Published::default(),
            ledger_error: None,
            currency: String::new(),
            market: "",
            export_labels: Arc::new(Vec::new()),
            job_rates: Arc::new(BTreeMap::new()),
            what_if: Arc::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GpuSnapshot {
    pub info: GpuStatic,
    /// False while the GPU is lost or unreadable.
    pub up: bool,
    /// The latest good reading; `None` while the GPU is down (gauges are not exported then).
    pub reading: Option<Reading>,
    /// The latest process list (read on the slower cadence).
    pub processes: Vec<ProcessUse>,
    pub totals: GpuTotals,
    /// How the last interval's energy was measured.
    pub energy_method: Option<EnergyMethod>,
    pub health: GpuHealth,
}

/// How well a GPU is being read, for `/healthz` and the agent's own metrics.
#[derive(Debug, Clone, Default)]
pub struct GpuHealth {
    /// Why the GPU is down, while it is.
    pub down_reason: Option<String>,
    /// When its last good reading came in (monotonic).
    pub last_reading_at: Option<Instant>,
    /// Seconds it was not measured since the agent started (down: lost, failing, stuck, or the
    /// library closed or released). No time, energy or cost is counted for them.
    pub unmeasured_s: f64,
}

/// The JSON shape of a GPU in `/api/v1/gpus`.
#[derive(Debug, Serialize)]
pub struct GpuView<'a> {
    pub index: u32,
    pub uuid: &'a str,
    pub model: &'a str,
    /// What a MIG GPU instance is a slice of; absent for a whole GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mig: Option<&'a gpucost_core::reading::MigSlice>,
    pub source: Source,
    pub up: bool,
    pub energy_joules_total: f64,
    pub energy_method: Option<EnergyMethod>,
    /// The one-second average where the GPU has one, else the instant value
    /// ([`Reading::power_mw`]).
    pub power_watts: Option<f64>,
    /// The instantaneous value, where the GPU reports it.
    pub power_instant_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub utilization_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub sm_clock_hertz: Option<f64>,
    pub temperature_celsius: Option<u32>,
    pub processes: &'a [ProcessUse],
}

impl GpuSnapshot {
    /// The JSON view; its energy total is the one `/metrics` exports (as last persisted), so the
    /// API and the metrics never disagree.
    pub fn view<'a>(&'a self, source: Source, published: &Published) -> GpuView<'a> {
        let r = self.reading.as_ref();
        GpuView {
            index: self.info.index,
            uuid: &self.info.uuid,
            model: &self.info.model,
            mig: self.info.mig.as_ref(),
            source,
            up: self.up,
            energy_joules_total: published
                .gpus
                .get(&self.info.uuid)
                .map_or(0.0, |g| g.usage.energy_j),
            energy_method: self.energy_method,
            power_watts: r.and_then(|r| r.power_mw()).map(|mw| mw as f64 / 1e3),
            power_instant_watts: r.and_then(|r| r.power_instant_mw).map(|mw| mw as f64 / 1e3),
            power_limit_watts: r.and_then(|r| r.power_limit_mw).map(|mw| mw as f64 / 1e3),
            utilization_ratio: r.and_then(|r| r.utilization_pct).map(|p| p / 100.0),
            memory_used_bytes: r.and_then(|r| r.memory_used_bytes),
            memory_total_bytes: r.and_then(|r| r.memory_total_bytes),
            sm_clock_hertz: r.and_then(|r| r.sm_clock_mhz).map(|m| m as f64 * 1e6),
            temperature_celsius: r.and_then(|r| r.temperature_c),
            processes: &self.processes,
        }
    }
}
