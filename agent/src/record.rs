//! `gpucost agent --record FILE`: writes what the agent reads as a scenario that replays it.
//!
//! Each GPU becomes a `[[gpu]]` with a `[gpu.trace]` (the readings of every sample: energy as
//! the agent accounted it, power, utilization, memory, SM clock, temperature, clock events, GPM
//! pipes), each job that held a GPU a `[[job]]` (its process, GPUs, start, end and exit code),
//! each Xid an `[[event]]`. `gpucost agent --simulate FILE` then replays the run, so a run on a
//! real GPU can become a test fixture. The file is rewritten (atomically) every persist interval
//! and on shutdown. A rewrite costs time in proportion to the recording's length (about 40 ms per
//! GPU-hour at 1 s samples, release build), so a long recording is rewritten less often: never sooner than 100
//! times the last rewrite took, which keeps it under 1% of the agent's time; a crash loses at most
//! that long.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use gpucost_sim::{EventKind, EventSpec, GpuSpec, JobSpec, PhaseSpec, Scenario, Trace, TracePipes};

use gpucost_hw::peaks::Precision;
use gpucost_hw::Pipes;

use crate::sample::sampler::Tick;
use crate::snapshot::GpuSnapshot;
use gpucost_core::benchmark::GpuBenchmark;
use gpucost_core::jobs::{JobRecord, Outcome};

/// Pids given to recorded jobs whose process was never listed (unique, far above real ones).
const SYNTHETIC_PID: u32 = 4_000_000;

struct RecGpu {
    index: u32,
    uuid: String,
    model: String,
    memory_total_mib: u64,
    power_limit_w: f64,
    /// Whether every reading had the energy counter.
    counter: bool,
    trace: Trace,
    /// Xid counts at the last sample, to find new ones.
    xids: BTreeMap<u32, u64>,
}

struct RecJob {
    /// GPU indices it held.
    gpus: BTreeSet<u32>,
    /// Seconds since the recording began: when it was first and last seen holding a GPU.
    first_s: f64,
    last_s: f64,
    /// The processes listed on its GPUs while it alone held them.
    pids: BTreeSet<u32>,
}

pub struct Recorder {
    path: PathBuf,
    started: Instant,
    started_unix: f64,
    source: String,
    driver: Option<String>,
    interval_s: f64,
    gpus: BTreeMap<String, RecGpu>,
    jobs: BTreeMap<String, RecJob>,
    /// The agent's record of each recorded job as last seen (jobs leave the agent's table after
    /// their grace period; the recording keeps them).
    records: BTreeMap<String, JobRecord>,
    events: Vec<EventSpec>,
    /// No periodic rewrite before this (see the module's note).
    next_write: Instant,
}

/// A rewrite waits at least this many times as long as the last one took.
const WRITE_SPACING: u32 = 100;

impl Recorder {
    /// A recorder writing to `path`; fails at once when the file cannot be written.
    pub fn new(
        path: &Path,
        source: &str,
        interval_s: f64,
        started_unix: f64,
    ) -> std::io::Result<Self> {
        std::fs::write(path, "# gpucost recording: no sample yet\n")?;
        Ok(Recorder {
            path: path.to_path_buf(),
            started: Instant::now(),
            started_unix,
            source: source.to_string(),
            driver: None,
            interval_s,
            gpus: BTreeMap::new(),
            jobs: BTreeMap::new(),
            records: BTreeMap::new(),
            events: Vec::new(),
            next_write: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a periodic rewrite is due (the last one was long enough ago for its cost).
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_write
    }

    /// Adds one sampling cycle: each GPU read in it, and who held it.
    pub fn observe(
        &mut self,
        now: Instant,
        ticks: &[Tick],
        gpus: &[&GpuSnapshot],
        owners: &BTreeMap<String, Vec<(String, f64)>>,
        driver: Option<&str>,
    ) {
        // Milliseconds, millijoules, milliwatts: what NVML resolves; shorter files.
        let t = round(
            now.saturating_duration_since(self.started).as_secs_f64(),
            1e3,
        );
        if self.driver.is_none() {
            self.driver = driver.map(str::to_string);
        }
        for tick in ticks {
            let Some(snap) = gpus.iter().find(|g| g.info.uuid == tick.uuid) else {
                continue;
            };
            let Some(r) = snap.reading.as_ref() else {
                continue;
            };
            let g = self
                .gpus
                .entry(tick.uuid.clone())
                .or_insert_with(|| RecGpu {
                    index: tick.index,
                    uuid: tick.uuid.clone(),
                    model: tick.model.clone(),
                    memory_total_mib: 0,
                    power_limit_w: 0.0,
                    counter: true,
                    trace: Trace::default(),
                    xids: snap.totals.events.xids.clone(),
                });
            if g.trace.t_s.last().is_some_and(|last| *last >= t) {
                continue;
            }
            let mib = |b: u64| b / (1024 * 1024);
            g.memory_total_mib = g.memory_total_mib.max(r.memory_total_bytes.map_or(0, mib));
            g.power_limit_w = g
                .power_limit_w
                .max(r.power_limit_mw.map_or(0.0, |mw| f64::from(mw) / 1000.0));
            g.counter &= r.energy_mj.is_some();
            let tr = &mut g.trace;
            let energy = tr
                .energy_j
                .last()
                .map_or(0.0, |e| e + tick.energy_j.max(0.0));
            tr.t_s.push(t);
            tr.energy_j.push(round(energy, 1e3));
            tr.power_w
                // The model's power is the instant value; its one-second average follows from
                // the recorded energy.
                .push(
                    r.power_instant_mw
                        .or(r.power_average_mw)
                        .map_or(0.0, |mw| f64::from(mw) / 1000.0),
                );
            tr.utilization
                .push(round(tick.utilization.unwrap_or(0.0).clamp(0.0, 1.0), 1e4));
            tr.memory_used_mib.push(r.memory_used_bytes.map_or(0, mib));
            tr.sm_clock_mhz.push(r.sm_clock_mhz.unwrap_or(0));
            tr.temperature_c
                .push(r.temperature_c.map_or(0.0, f64::from));
            tr.clock_event_reasons
                .push(r.clock_event_reasons.unwrap_or(0));
            match (&tick.pipes, tr.pipes.as_mut()) {
                (Some(p), Some(cols)) => cols.push(&sim_pipes(p)),
                // GPM went or came mid-recording: unknown values (nan) fill the gap, and the
                // columns stay aligned.
                (None, Some(cols)) => cols.push(&Pipes::UNKNOWN),
                (Some(p), None) => {
                    let mut cols = TracePipes::default();
                    for _ in 1..tr.t_s.len() {
                        cols.push(&Pipes::UNKNOWN);
                    }
                    cols.push(&sim_pipes(p));
                    tr.pipes = Some(cols);
                }
                (None, None) => {}
            }
            for (xid, n) in &snap.totals.events.xids {
                let before = g.xids.get(xid).copied().unwrap_or(0);
                for _ in before..*n {
                    self.events.push(EventSpec {
                        at_s: t,
                        gpu: g.index,
                        kind: EventKind::Xid,
                        xid: Some(*xid),
                        seconds: None,
                    });
                }
            }
            g.xids = snap.totals.events.xids.clone();
            let held = owners
                .get(&tick.uuid)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (id, _) in held {
                let j = self.jobs.entry(id.clone()).or_insert_with(|| RecJob {
                    gpus: BTreeSet::new(),
                    first_s: t,
                    last_s: t,
                    pids: BTreeSet::new(),
                });
                j.gpus.insert(tick.index);
                j.last_s = t;
                if held.len() == 1 {
                    j.pids.extend(snap.processes.iter().map(|p| p.pid));
                }
            }
        }
    }

    /// The recording so far as a scenario; `benchmarks` are the agent's latest, by GPU UUID.
    pub fn scenario(&self, benchmarks: &BTreeMap<String, GpuBenchmark>) -> Option<Scenario> {
        let mut gpus: Vec<&RecGpu> = self.gpus.values().collect();
        gpus.sort_by_key(|g| g.index);
        let end_s = gpus.iter().map(|g| g.trace.end_s()).fold(0.0_f64, f64::max);
        if gpus.is_empty() || end_s <= 0.0 {
            return None;
        }
        // Scenario GPUs are numbered in order; NVML's indices may have gaps.
        let position: BTreeMap<u32, u32> = gpus
            .iter()
            .enumerate()
            .map(|(i, g)| (g.index, i as u32))
            .collect();
        let mut used_pids = BTreeSet::new();
        let mut jobs = Vec::new();
        for (k, (id, j)) in self.jobs.iter().enumerate() {
            let rec = self.records.get(id);
            // A job holds its GPU during the interval that ends where it is first seen.
            let start_s = (j.first_s - self.interval_s).max(0.0);
            let ended = rec
                .and_then(|r| r.ended_at)
                .map(|e| e - self.started_unix)
                .filter(|e| e.is_finite());
            let stop_s = ended
                .unwrap_or(j.last_s)
                .clamp(j.first_s, end_s)
                .max(start_s + 1e-3);
            let registered = rec
                .and_then(|r| r.registration.as_ref())
                .and_then(|r| r.pid);
            let pid = registered
                .filter(|p| j.pids.contains(p))
                .or_else(|| j.pids.iter().copied().find(|p| !used_pids.contains(p)))
                .filter(|p| *p != 0 && !used_pids.contains(p))
                .unwrap_or(SYNTHETIC_PID + k as u32);
            used_pids.insert(pid);
            let exit_code = match rec {
                Some(r) => r
                    .exit_code
                    .or(r.signal.map(|s| 128 + s))
                    .unwrap_or(if r.outcome == Outcome::Failed { 1 } else { 0 }),
                None => 0,
            };
            jobs.push(JobSpec {
                name: rec.map_or_else(|| id.clone(), |r| r.name.clone()),
                id: Some(id.clone()),
                user: rec.map_or_else(|| "root".to_string(), |r| r.user.clone()),
                uid: rec.and_then(|r| r.uid).unwrap_or(0),
                pid,
                worker_pids: Vec::new(),
                gpu_instance: None,
                command: String::new(),
                gpus: j
                    .gpus
                    .iter()
                    .filter_map(|g| position.get(g).copied())
                    .collect(),
                start_s,
                exit_code,
                context: Default::default(),
                phases: vec![PhaseSpec {
                    seconds: stop_s - start_s,
                    utilization: 0.0,
                    power_w: 0.0,
                    memory_mib: 0,
                    precision: None,
                    sm_active: None,
                    tensor_active: None,
                    fp16_active: None,
                    fp32_active: None,
                    fp64_active: None,
                    dram_active: None,
                }],
            });
        }
        let events = self
            .events
            .iter()
            .filter_map(|e| {
                Some(EventSpec {
                    gpu: *position.get(&e.gpu)?,
                    at_s: e.at_s.min(end_s * (1.0 - 1e-9)),
                    ..e.clone()
                })
            })
            .collect();
        let gpus = gpus
            .iter()
            .map(|g| {
                let tr = &g.trace;
                let min_u32 = |v: &[u32]| v.iter().copied().filter(|c| *c > 0).min();
                let max_clock = tr.sm_clock_mhz.iter().copied().max().unwrap_or(1980).max(1);
                let idle_clock = min_u32(&tr.sm_clock_mhz)
                    .unwrap_or(max_clock)
                    .min(max_clock);
                let power_limit_w = if g.power_limit_w > 0.0 {
                    g.power_limit_w
                } else {
                    tr.power_w.iter().copied().fold(1.0, f64::max)
                };
                let idle_power_w = tr
                    .power_w
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
                    .min(power_limit_w * 0.99);
                // A benchmarked GPU replays with its measured share of the datasheet (BF16, the
                // peak MFU is against; else FP32); one that was not, without a benchmark.
                let efficiency = benchmarks.get(&g.uuid).and_then(|b| {
                    let ratios = gpucost_core::benchmark::ratios(&g.model, b);
                    let of = |p| ratios.iter().find(|(q, _)| *q == p).map(|(_, r)| *r);
                    of(Precision::Bf16)
                        .or(of(Precision::Fp32))
                        .map(|r| r.clamp(1e-3, 1.0))
                });
                GpuSpec {
                    model: g.model.clone(),
                    uuid: Some(g.uuid.clone()),
                    memory_total_mib: g
                        .memory_total_mib
                        .max(tr.memory_used_mib.iter().copied().max().unwrap_or(1))
                        .max(1),
                    power_limit_w,
                    idle_power_w,
                    max_sm_clock_mhz: max_clock,
                    idle_sm_clock_mhz: idle_clock,
                    idle_temperature_c: tr
                        .temperature_c
                        .iter()
                        .copied()
                        .fold(f64::INFINITY, f64::min),
                    energy_counter: g.counter,
                    power_average: None,
                    violation_fields: true,
                    utilization_period_s: None,
                    utilization_samples: true,
                    violation_status: true,
                    initial_energy_j: 0.0,
                    gpm: Some(tr.pipes.is_some()),
                    // Unknown values are in the trace itself (nan), sample by sample.
                    gpm_unknown_pipes: Vec::new(),
                    gpm_no_permission: false,
                    // A recorded MIG instance replays as a whole GPU (its own readings).
                    mig: false,
                    mig_slices: 7,
                    mig_instances: Vec::new(),
                    bench_efficiency: efficiency.unwrap_or(0.92),
                    benchmarked: efficiency.is_some(),
                    trace: Some(tr.clone()),
                    nvml: Default::default(),
                }
            })
            .collect();
        Some(Scenario {
            name: "recorded".into(),
            description: format!(
                "{:.0} s recorded by gpucost {} from {} (driver {}), {} s samples",
                end_s,
                env!("CARGO_PKG_VERSION"),
                self.source,
                self.driver.as_deref().unwrap_or("unknown"),
                self.interval_s
            ),
            duration_s: (end_s + self.interval_s).ceil(),
            repeat: false,
            speed: 1.0,
            driver_version: self.driver.clone().unwrap_or_else(|| "unknown".into()),
            ripple: 0.0,
            driver_upgrade_at_s: None,
            deprecated_calls_only: false,
            gpus,
            jobs,
            events,
        })
    }

    /// Writes the recording so far (atomically: a temporary file, then a rename); `job` looks up
    /// the agent's record of a job.
    pub fn write<'a>(
        &mut self,
        job: impl Fn(&str) -> Option<&'a JobRecord>,
        benchmarks: &BTreeMap<String, GpuBenchmark>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        for id in self.jobs.keys() {
            if let Some(r) = job(id) {
                self.records.insert(id.clone(), r.clone());
            }
        }
        let Some(scenario) = self.scenario(benchmarks) else {
            return Ok(());
        };
        // What is written must load: a recording that cannot be replayed is a bug here.
        let text = toml::to_string(&scenario)?;
        Scenario::parse(&text, &self.path.display().to_string())?;
        let tmp = self.path.with_extension("tmp");
        let header = format!(
            "# Recorded by `gpucost agent --record`; replay with `gpucost agent --simulate FILE`.\n\
             # Scenario time 0 is unix time {:.3}.\n",
            self.started_unix
        );
        std::fs::write(&tmp, format!("{header}{text}"))?;
        std::fs::rename(&tmp, &self.path)?;
        let now = Instant::now();
        self.next_write = now + now.duration_since(started) * WRITE_SPACING;
        Ok(())
    }
}

fn round(v: f64, per_unit: f64) -> f64 {
    (v * per_unit).round() / per_unit
}

/// GPM ratios to four places (GPM reports percent with two).
fn sim_pipes(p: &Pipes) -> Pipes {
    p.map(|v| round(v.clamp(0.0, 1.0), 1e4))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use gpucost_core::jobs::{Registered, Scheduler, Usage};
    use gpucost_core::reading::{GpuStatic, Pipes, ProcessUse, Reading};

    fn gpu(index: u32, pids: &[u32], xids: &[(u32, u64)]) -> GpuSnapshot {
        GpuSnapshot {
            info: GpuStatic {
                index,
                uuid: format!("GPU-{index}"),
                model: "NVIDIA H100 80GB HBM3".into(),
                mig: None,
                compute_capability: None,
                sm_count: None,
            },
            up: true,
            reading: Some(Reading {
                energy_mj: Some(1),
                power_average_mw: Some(300_000),
                power_limit_mw: Some(700_000),
                utilization_pct: Some(50.0),
                memory_used_bytes: Some(2048 << 20),
                memory_total_bytes: Some(81559 << 20),
                sm_clock_mhz: Some(1980),
                temperature_c: Some(50),
                clock_event_reasons: Some(0),
                ..Reading::default()
            }),
            processes: pids
                .iter()
                .map(|pid| ProcessUse {
                    pid: *pid,
                    used_memory_bytes: Some(1 << 30),
                    sm_util_pct: Some(50),
                })
                .collect(),
            totals: gpucost_core::account::GpuTotals {
                events: gpucost_core::account::GpuEvents {
                    xids: xids.iter().copied().collect(),
                    ..Default::default()
                },
                ..Default::default()
            },
            energy_method: None,
            health: Default::default(),
        }
    }

    fn tick(index: u32, pipes: Option<Pipes>) -> Tick {
        Tick {
            index,
            uuid: format!("GPU-{index}"),
            model: "NVIDIA H100 80GB HBM3".into(),
            dt: 1.0,
            energy_j: 300.0,
            utilization: Some(0.5),
            pipes,
            slice_share: 1.0,
            mig: false,
            compute_capability: None,
            sm_count: None,
            sm_clock_mhz: None,
        }
    }

    fn job(
        id: &str,
        outcome: Outcome,
        exit: Option<i32>,
        signal: Option<i32>,
        pid: Option<u32>,
    ) -> JobRecord {
        JobRecord {
            id: id.into(),
            name: format!("{id}-name"),
            user: "alice".into(),
            uid: Some(1001),
            scheduler: Scheduler::Gpucost,
            labels: Default::default(),
            started_at: 0.0,
            ended_at: None,
            outcome,
            exit_code: exit,
            signal,
            reason: None,
            usage: Usage::default(),
            per_gpu: Default::default(),
            registration: pid.map(|p| Registered {
                pid: Some(p),
                gpus: Vec::new(),
                by_root: false,
            }),
            progress: None,
        }
    }

    /// Jobs, GPUs with gaps in their indices, GPM that appears mid-recording, Xids and exit
    /// codes all come out as a scenario that loads.
    #[test]
    fn recordings_are_replayable_scenarios() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.toml");
        let mut r = Recorder::new(&path, "NVML", 1.0, 1000.0).unwrap();
        let t0 = r.started;
        // The tensor metric failed: unknown, written as nan, replayed as unknown.
        let pipes = Pipes {
            fp32_active: Some(0.6),
            tensor_active: None,
            ..Pipes::IDLE
        };
        for k in 0..4u32 {
            let now = t0 + Duration::from_secs(u64::from(k) + 1);
            // GPU 0 runs job a (pid 10, registered) alone; GPU 2 runs b and c together (pid 10 is
            // listed there too, so c, whose process was never alone, gets a made-up pid).
            let snaps = [gpu(0, &[10], &[]), gpu(2, &[20], &[(13, u64::from(k / 2))])];
            let refs: Vec<&GpuSnapshot> = snaps.iter().collect();
            let ticks = [tick(0, (k >= 2).then_some(pipes)), tick(2, None)];
            let owners = BTreeMap::from([
                ("GPU-0".to_string(), vec![("a".to_string(), 1.0)]),
                (
                    "GPU-2".to_string(),
                    vec![("b".to_string(), 0.5), ("c".to_string(), 0.5)],
                ),
            ]);
            r.observe(now, &ticks, &refs, &owners, Some("550.1"));
        }
        let records = [
            job("a", Outcome::Failed, None, None, Some(10)),
            job("b", Outcome::Failed, None, Some(9), None),
        ];
        let before = Instant::now();
        r.write(|id| records.iter().find(|j| j.id == id), &BTreeMap::new())
            .unwrap();
        assert!(
            !r.due(before),
            "the next rewrite waits for the cost of this one"
        );
        assert!(r.due(r.next_write));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("Scenario time 0 is unix time 1000.000"),
            "{text}"
        );
        let s = Scenario::parse(&text, "rec.toml").unwrap();
        assert_eq!(s.driver_version, "550.1");
        assert_eq!(s.gpus.len(), 2);
        assert!(s.gpus.iter().all(|g| !g.benchmarked));
        let t0 = s.gpus[0].trace.as_ref().unwrap();
        assert_eq!(t0.t_s, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            t0.energy_j,
            [0.0, 300.0, 600.0, 900.0],
            "joules since the first sample"
        );
        let p = t0.pipes.as_ref().unwrap();
        let unknown = |c: &[f64], k: usize| c[k].is_nan();
        assert!(
            unknown(&p.fp32_active, 0) && unknown(&p.fp32_active, 1),
            "unknown before GPM came: {:?}",
            p.fp32_active
        );
        assert_eq!(p.fp32_active[2..], [0.6, 0.6]);
        assert!((0..4).all(|k| unknown(&p.tensor_active, k)));
        assert_eq!(p.sm_active[2..], [0.0, 0.0]);
        assert!(s.gpus[1].trace.as_ref().unwrap().pipes.is_none());
        let by_id = |id: &str| s.jobs.iter().find(|j| j.id.as_deref() == Some(id)).unwrap();
        let (a, b, c) = (by_id("a"), by_id("b"), by_id("c"));
        assert_eq!((a.pid, a.gpus.as_slice(), a.exit_code), (10, &[0][..], 1));
        assert_eq!((b.gpus.as_slice(), b.exit_code), (&[1][..], 128 + 9));
        assert_eq!(c.exit_code, 0, "no record: ended with the recording");
        assert!(b.pid >= SYNTHETIC_PID && c.pid >= SYNTHETIC_PID && b.pid != c.pid);
        assert_eq!(a.name, "a-name");
        assert_eq!(a.start_s, 0.0, "one interval before it was first seen");
        assert_eq!(s.events.len(), 1);
        assert_eq!((s.events[0].gpu, s.events[0].xid), (1, Some(13)));
    }

    #[test]
    fn an_unwritable_recording_fails_at_once() {
        let err = Recorder::new(Path::new("/nonexistent-dir/rec.toml"), "NVML", 1.0, 0.0);
        assert!(err.is_err());
    }
}
