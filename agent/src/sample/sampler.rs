//! The sampler: owns the backend and the per-GPU totals; each [`Sampler::cycle`] reads every GPU
//! (the process list on a slower cadence) and says what the interval since the last one held.
//!
//! It is driven by the node's owner thread (`crate::node`), because NVML calls block. The
//! backend comes from a [`BackendFactory`] and time from a [`Clock`], both passed in, so tests
//! drive it with a scripted backend in virtual time. Nothing here is fatal: a missing library is
//! retried, a lost GPU is reported and re-read, a failed field is counted and logged, and the
//! cycle goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpucost_core::clock::Clock;
use tracing::{debug, info, warn};

use super::{Backend, BackendFactory};
use crate::snapshot::GpuSnapshot;
use gpucost_core::account::GpuTotals;
use gpucost_core::reading::{Field, FieldError, GpuStatic, SampleError, Source};

#[derive(Debug, Clone)]
pub struct Cadence {
    pub interval: Duration,
    pub process_interval: Duration,
    /// How often to try again to load NVML when it is not available.
    pub retry_interval: Duration,
}

struct GpuSlot {
    snap: GpuSnapshot,
    last_read: Option<Instant>,
    /// Fields already reported as unsupported, so the log says it once.
    said_unsupported: BTreeSet<Field>,
    said_failed: BTreeSet<Field>,
}

impl GpuSlot {
    fn new(info: GpuStatic, totals: GpuTotals) -> Self {
        GpuSlot {
            snap: GpuSnapshot {
                info,
                up: true,
                reading: None,
                processes: Vec::new(),
                totals,
                energy_method: None,
            },
            last_read: None,
            said_unsupported: BTreeSet::new(),
            said_failed: BTreeSet::new(),
        }
    }
}

pub struct Sampler {
    factory: Box<dyn BackendFactory>,
    cadence: Cadence,
    clock: Arc<dyn Clock>,
    backend: Option<Box<dyn Backend>>,
    next_open: Instant,
    open_error: Option<String>,
    driver: Option<String>,
    gpus: Vec<GpuSlot>,
    /// Totals of GPUs that disappeared from the device list, kept by UUID in case they return.
    retired: BTreeMap<String, GpuTotals>,
    next_processes: Instant,
    samples_total: u64,
    errors: BTreeMap<(u32, &'static str, &'static str), u64>,
}

/// What one GPU did over the interval that a cycle closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    /// Seconds since the previous reading (0 for the first).
    pub dt: f64,
    pub energy_j: f64,
    pub utilization: Option<f64>,
    /// Pipe activity over the interval, where the GPU has GPM.
    pub pipes: Option<gpucost_core::reading::Pipes>,
}

/// The result of a cycle.
#[derive(Debug, Clone, Default)]
pub struct CycleResult {
    /// GPUs read successfully, with their interval.
    pub ticks: Vec<Tick>,
    /// Whether process lists were read this cycle (attribution runs then).
    pub processes_read: bool,
    pub duration: Duration,
}

impl Sampler {
    pub fn new(factory: Box<dyn BackendFactory>, cadence: Cadence, clock: Arc<dyn Clock>) -> Self {
        let now = clock.mono();
        Sampler {
            factory,
            cadence,
            clock,
            backend: None,
            next_open: now,
            open_error: None,
            driver: None,
            gpus: Vec::new(),
            retired: BTreeMap::new(),
            next_processes: now,
            samples_total: 0,
            errors: BTreeMap::new(),
        }
    }

    pub fn source(&self) -> Source {
        self.factory.source()
    }

    fn open(&mut self, now: Instant) {
        let mut backend = match self.factory.open() {
            Ok(b) => b,
            Err(e) => {
                let msg = e.to_string();
                if self.open_error.as_deref() != Some(msg.as_str()) {
                    warn!(
                        "{} unavailable ({msg}); {}. No GPU metrics until it loads \
                         (gpucost_nvml_up 0); retrying every {}",
                        self.factory.library(),
                        self.factory.unavailable_hint(),
                        humantime::format_duration(self.cadence.retry_interval)
                    );
                } else {
                    debug!("{} still unavailable: {msg}", self.factory.library());
                }
                self.open_error = Some(msg);
                self.next_open = now + self.cadence.retry_interval;
                return;
            }
        };
        let gpus = match backend.gpus() {
            Ok(g) => g,
            Err(e) => {
                warn!("GPU library loaded but cannot list GPUs: {e}; retrying");
                self.open_error = Some(e.to_string());
                self.next_open = now + self.cadence.retry_interval;
                return;
            }
        };
        self.driver = backend.driver_version();
        info!(
            source = backend.source().as_str(),
            driver = self.driver.as_deref().unwrap_or("unknown"),
            "GPU library up: {} GPU(s): {}",
            gpus.len(),
            gpus.iter()
                .map(|g| format!("{} {} ({})", g.index, g.model, g.uuid))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Keep the totals of GPUs we knew (by UUID), so a re-open never resets a counter.
        for slot in self.gpus.drain(..) {
            self.retired
                .insert(slot.snap.info.uuid.clone(), slot.snap.totals);
        }
        self.gpus = gpus
            .into_iter()
            .map(|info| {
                let totals = self.retired.remove(&info.uuid).unwrap_or_default();
                GpuSlot::new(info, totals)
            })
            .collect();
        self.open_error = None;
        self.backend = Some(backend);
        self.next_processes = now;
    }

    fn count_error(&mut self, gpu: u32, field: &'static str, kind: &'static str) {
        *self.errors.entry((gpu, field, kind)).or_default() += 1;
    }

    /// One sampling cycle: read every GPU and fold the readings into the totals.
    pub fn cycle(&mut self) -> CycleResult {
        let now = self.clock.mono();
        let mut result = CycleResult::default();
        if self.backend.is_none() && now >= self.next_open {
            self.open(now);
        }
        let with_processes = now >= self.next_processes && self.backend.is_some();
        result.processes_read = with_processes;
        if with_processes {
            self.next_processes = now + self.cadence.process_interval;
        }
        if let Some(backend) = self.backend.as_mut() {
            let mut failures = Vec::new();
            for slot in &mut self.gpus {
                let index = slot.snap.info.index;
                let dt = slot
                    .last_read
                    .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
                match backend.read(index, with_processes) {
                    Ok(mut r) => {
                        if !slot.snap.up {
                            info!(
                                gpu = index,
                                "GPU {index} ({}) answers again", slot.snap.info.uuid
                            );
                            slot.snap.up = true;
                        }
                        for (field, err) in std::mem::take(&mut r.field_errors) {
                            match err {
                                FieldError::NotSupported => {
                                    if slot.said_unsupported.insert(field) {
                                        info!(
                                            gpu = index,
                                            "GPU {index}: {field} is not supported; {}",
                                            unsupported_note(field)
                                        );
                                    }
                                }
                                FieldError::Failed(msg) => {
                                    if slot.said_failed.insert(field) {
                                        warn!(gpu = index, "GPU {index}: reading {field} failed: {msg} (counted in gpucost_agent_sample_errors_total; said once)");
                                    }
                                    failures.push((index, field.as_str(), "failed"));
                                }
                            }
                        }
                        let step = slot.snap.totals.apply(&r, dt, now);
                        if step.counter_reset {
                            warn!(gpu = index, "GPU {index}: energy counter went backwards or jumped (driver reload or wrap); this interval uses power x time, the total keeps counting up");
                        }
                        slot.snap.energy_method = Some(step.method);
                        if let Some(ps) = r.processes.take() {
                            slot.snap.processes = ps;
                        }
                        result.ticks.push(Tick {
                            index,
                            uuid: slot.snap.info.uuid.clone(),
                            model: slot.snap.info.model.clone(),
                            dt,
                            energy_j: step.delta_j,
                            utilization: r.utilization_pct.map(|p| p / 100.0),
                            pipes: r.pipes,
                        });
                        slot.snap.reading = Some(r);
                        slot.last_read = Some(now);
                    }
                    Err(e) => {
                        if slot.snap.up {
                            warn!(gpu = index, "GPU {index} ({}) cannot be read: {e}; its totals are kept and it is retried every cycle", slot.snap.info.uuid);
                        }
                        slot.snap.up = false;
                        slot.snap.reading = None;
                        slot.snap.processes.clear();
                        slot.snap.totals.energy.interrupt();
                        // The interval the GPU was away is not measured: the next good reading
                        // starts a new interval (the energy counter still covers it if it kept
                        // counting).
                        slot.last_read = Some(now);
                        let kind = match e {
                            SampleError::GpuLost(_) => "gpu_lost",
                            _ => "failed",
                        };
                        failures.push((index, "all", kind));
                    }
                }
            }
            for (gpu, xid) in backend.take_xids() {
                warn!(gpu, xid, "GPU {gpu}: Xid {xid} reported by the driver");
                if let Some(slot) = self.gpus.iter_mut().find(|s| s.snap.info.index == gpu) {
                    slot.snap.totals.add_xid(xid);
                }
            }
            for (gpu, field, kind) in failures {
                self.count_error(gpu, field, kind);
            }
        }
        self.samples_total += 1;
        result.duration = self.clock.mono().saturating_duration_since(now);
        result
    }

    pub fn gpus(&self) -> impl Iterator<Item = &GpuSnapshot> {
        self.gpus.iter().map(|s| &s.snap)
    }

    pub fn backend_up(&self) -> bool {
        self.backend.is_some()
    }

    pub fn open_error(&self) -> Option<&str> {
        self.open_error.as_deref()
    }

    pub fn driver(&self) -> Option<&str> {
        self.driver.as_deref()
    }

    pub fn samples_total(&self) -> u64 {
        self.samples_total
    }

    /// (gpu, field, kind) -> count of failed reads.
    pub fn errors(&self) -> Vec<(u32, &'static str, &'static str, u64)> {
        self.errors
            .iter()
            .map(|(&(g, f, k), &n)| (g, f, k, n))
            .collect()
    }

    /// The scenario name when the node is simulated.
    pub fn simulated(&self) -> Option<&str> {
        self.factory.simulated()
    }
}

fn unsupported_note(field: Field) -> &'static str {
    match field {
        Field::Energy => "energy is integrated from power x time instead",
        _ => "it is left out of the metrics",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use gpucost_core::clock::ManualClock;

    use super::*;
    use crate::sample::scripted::{Script, Scripted};

    fn sampler(script: Script) -> (Sampler, Scripted) {
        let clock = Arc::new(ManualClock::new(1000.0));
        let gpus = Scripted::new(script, clock.clone());
        let cadence = Cadence {
            interval: Duration::from_secs(1),
            process_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(10),
        };
        (Sampler::new(Box::new(gpus.clone()), cadence, clock), gpus)
    }

    #[test]
    fn process_lists_are_read_on_their_own_slower_cadence() {
        let (mut s, gpus) = sampler(Script::h100s(1));
        let mut read = Vec::new();
        for _ in 0..11 {
            read.push(s.cycle().processes_read);
            gpus.advance(Duration::from_secs(1));
        }
        assert_eq!(
            read,
            [true, false, false, false, false, true, false, false, false, false, true]
        );
    }

    #[test]
    fn each_interval_is_the_time_since_the_last_reading_with_its_energy() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        let first = s.cycle();
        assert!(first.ticks.iter().all(|t| t.dt == 0.0 && t.energy_j == 0.0));
        gpus.script().gpus[1].power_w = 400.0;
        gpus.advance(Duration::from_millis(2500));
        let c = s.cycle();
        let by_gpu: Vec<(f64, f64)> = c.ticks.iter().map(|t| (t.dt, t.energy_j)).collect();
        assert_eq!(by_gpu, [(2.5, 250.0), (2.5, 1000.0)]);
        assert_eq!(s.samples_total(), 2);
    }
}
