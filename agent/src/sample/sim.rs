//! The simulated backend: the scenario model of `gpucost-sim`, read as if it were NVML.
//!
//! Used only when the operator asks for it (`--simulate`); the agent never falls back to it.
//! Scenario time runs from the moment the backend opens, at the scenario's speed, on the
//! monotonic clock it is given (virtual time in tests).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use gpucost_core::clock::Clock;
use gpucost_sim::{Scenario, SimulatedNode};

use super::{Backend, BackendFactory};
use gpucost_core::reading::{
    mig_unit_index, Field, FieldError, GpuStatic, MigSlice, ProcessUse, Reading, SampleError,
    Source, ThrottleReason,
};

pub struct SimBackend {
    node: SimulatedNode,
    clock: Arc<dyn Clock>,
    started: Instant,
    /// Scenario time up to which Xids have been reported.
    xids_until_s: Mutex<f64>,
    /// Unit index -> the scenario GPU and, for a MIG instance, what it is (as `gpus` listed).
    units: BTreeMap<u32, (u32, Option<MigSlice>)>,
    /// Per scenario GPU, the GPU instance ids `gpus` listed (`None`: listed whole).
    listed: BTreeMap<u32, Option<Vec<u32>>>,
    /// A GPU switched MIG mode since `gpus` (its `mig_enable`/`mig_disable` events).
    layout_changed: AtomicBool,
}

impl SimBackend {
    /// The node of `scenario`, whose time 0 is `started` on `clock`.
    pub fn new(scenario: Scenario, clock: Arc<dyn Clock>, started: Instant) -> Self {
        let node = SimulatedNode::new(scenario);
        // Xids from before this open were reported by the backend open then (or missed while
        // none was, as a real driver's events are while nobody listens).
        let now_s = scenario_time(clock.as_ref(), started, node.scenario());
        SimBackend {
            node,
            started,
            clock,
            xids_until_s: Mutex::new(now_s),
            units: BTreeMap::new(),
            listed: BTreeMap::new(),
            layout_changed: AtomicBool::new(false),
        }
    }

    pub fn scenario(&self) -> &Scenario {
        self.node.scenario()
    }

    fn now_s(&self) -> f64 {
        scenario_time(self.clock.as_ref(), self.started, self.node.scenario())
    }
}

/// Scenario seconds since `started`, at the scenario's speed.
fn scenario_time(clock: &dyn Clock, started: Instant, s: &Scenario) -> f64 {
    clock
        .mono()
        .saturating_duration_since(started)
        .as_secs_f64()
        * s.speed
}

/// Opens the simulated node (which never fails). Scenario time runs from the first open on:
/// a node opened again (after a release, or to list GPUs anew after a MIG switch) goes on where
/// its timeline is, as real GPUs do.
pub struct SimFactory {
    scenario: Scenario,
    clock: Arc<dyn Clock>,
    started: Option<Instant>,
}

impl SimFactory {
    pub fn new(scenario: Scenario, clock: Arc<dyn Clock>) -> Self {
        SimFactory {
            scenario,
            clock,
            started: None,
        }
    }
}

impl BackendFactory for SimFactory {
    fn source(&self) -> Source {
        Source::Simulated
    }
    fn simulated(&self) -> Option<&str> {
        Some(&self.scenario.name)
    }
    fn library(&self) -> &'static str {
        "the simulated node"
    }
    fn unavailable_hint(&self) -> String {
        format!("scenario {:?}", self.scenario.name)
    }
    fn open(&mut self) -> Result<Box<dyn Backend>, SampleError> {
        let started = *self.started.get_or_insert_with(|| self.clock.mono());
        Ok(Box::new(SimBackend::new(
            self.scenario.clone(),
            self.clock.clone(),
            started,
        )))
    }
}

impl Backend for SimBackend {
    fn source(&self) -> Source {
        Source::Simulated
    }

    fn driver_version(&self) -> Option<String> {
        Some(self.node.scenario().driver_version.clone())
    }

    /// Each GPU, or where it is in MIG mode now, its MIG instances, as the NVML backend lists
    /// them (`nvml/mig.rs`).
    fn gpus(&mut self) -> Result<Vec<GpuStatic>, SampleError> {
        let t = self.now_s();
        self.units.clear();
        self.layout_changed.store(false, Ordering::Relaxed);
        let mut out = Vec::new();
        for i in 0..self.node.gpu_count() {
            let spec = &self.node.scenario().gpus[i as usize];
            let uuid = self.node.uuid(i).to_string();
            let instances = self.instances(i, t);
            self.listed.insert(i, instances.clone());
            let Some(instances) = instances else {
                self.units.insert(i, (i, None));
                out.push(GpuStatic {
                    index: i,
                    uuid,
                    model: spec.model.clone(),
                    mig: None,
                    // A scenario says nothing of SMs or compute capability: the datasheet
                    // table's (for the model) stand in when its pipe activity is priced.
                    compute_capability: None,
                    sm_count: None,
                });
                continue;
            };
            for (gi, m) in spec
                .mig_instance_ids()
                .into_iter()
                .zip(&spec.mig_instances)
                .filter(|(gi, _)| instances.contains(gi))
            {
                let slice = MigSlice {
                    parent_index: i,
                    parent_uuid: uuid.clone(),
                    gpu_instance_id: gi,
                    profile: m.profile.clone(),
                    slices: MigSlice::slices_of_profile(&m.profile).unwrap_or(1),
                    parent_slices: spec.mig_slices,
                };
                let index = mig_unit_index(i, gi);
                self.units.insert(index, (i, Some(slice.clone())));
                out.push(GpuStatic {
                    index,
                    uuid: self.node.mig_uuid(i, gi).unwrap_or_default(),
                    model: spec.model.clone(),
                    mig: Some(slice),
                    compute_capability: None,
                    sm_count: None,
                });
            }
        }
        Ok(out)
    }

    fn layout_changed(&self) -> bool {
        self.layout_changed.load(Ordering::Relaxed)
    }

    fn take_xids(&self) -> Vec<(u32, u32)> {
        let t = self.now_s();
        let since = std::mem::replace(
            &mut *self
                .xids_until_s
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            t,
        );
        let mut out: Vec<(f64, u32, u32)> = (0..self.node.gpu_count())
            .flat_map(|g| {
                self.node
                    .xids_between(g, since, t)
                    .into_iter()
                    .map(move |(at, xid)| (at, g, xid))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.into_iter().map(|(_, g, xid)| (g, xid)).collect()
    }

    fn read(&self, unit: u32, with_processes: bool) -> Result<Reading, SampleError> {
        let (index, mig) = self.units.get(&unit).cloned().unwrap_or((unit, None));
        let Some(spec) = self.node.scenario().gpus.get(index as usize) else {
            return Err(SampleError::Failed(format!("no simulated GPU {index}")));
        };
        let t = self.now_s();
        if !self.node.is_present(index, t) {
            return Err(SampleError::GpuLost("simulated".into()));
        }
        // A GPU switched MIG mode, or whose instances changed, since it was listed is listed
        // again.
        if with_processes && self.listed.get(&index) != Some(&self.instances(index, t)) {
            self.layout_changed.store(true, Ordering::Relaxed);
        }
        if let Some(m) = mig {
            return self.read_mig(index, &m, t, with_processes);
        }
        let s = self.node.state(index, t);
        let mut errors = Vec::new();
        if s.energy_mj.is_none() {
            errors.push((
                gpucost_core::reading::Field::Energy,
                gpucost_core::reading::FieldError::NotSupported,
            ));
        }
        if !self.node.gpm_supported(index) {
            errors.push((
                gpucost_core::reading::Field::Pipes,
                gpucost_core::reading::FieldError::NotSupported,
            ));
        }
        Ok(Reading {
            energy_mj: s.energy_mj,
            power_average_mw: Some((self.node.power_average_w(index, t) * 1000.0).round() as u32),
            power_instant_mw: Some((s.power_w * 1000.0).round() as u32),
            power_limit_mw: Some((spec.power_limit_w * 1000.0).round() as u32),
            utilization_pct: Some((s.utilization * 100.0).round()),
            memory_used_bytes: Some(s.memory_used_bytes),
            memory_total_bytes: Some(spec.memory_total_mib * 1024 * 1024),
            sm_clock_mhz: Some(s.sm_clock_mhz),
            temperature_c: Some(s.temperature_c.round() as u32),
            clock_event_reasons: Some(s.throttle_reasons),
            violation_ns: violation_ns(self.node.violation_s(index, t)),
            processes: with_processes.then(|| {
                s.processes
                    .iter()
                    .map(|p| ProcessUse {
                        pid: p.pid,
                        used_memory_bytes: Some(p.used_memory_bytes),
                        sm_util_pct: Some(p.sm_util_pct),
                    })
                    .collect()
            }),
            pipes: self.node.gpm_supported(index).then_some(s.pipes),
            field_errors: errors,
        })
    }
}

impl SimBackend {
    /// The GPU instance ids of GPU `index` that exist at `t` while it is in MIG mode with at
    /// least one; `None`: a whole GPU (as the NVML backend lists one).
    fn instances(&self, index: u32, t: f64) -> Option<Vec<u32>> {
        let spec = &self.node.scenario().gpus[index as usize];
        let ids: Vec<u32> = spec
            .mig_instance_ids()
            .into_iter()
            .enumerate()
            .filter(|(k, _)| self.node.mig_instance_exists(index, *k, t))
            .map(|(_, gi)| gi)
            .collect();
        (!ids.is_empty()).then_some(ids)
    }

    /// A MIG instance as the NVML backend reads one: its own memory, activity and processes,
    /// its share of the board's energy and power, no utilization.
    fn read_mig(
        &self,
        index: u32,
        m: &MigSlice,
        t: f64,
        with_processes: bool,
    ) -> Result<Reading, SampleError> {
        let spec = &self.node.scenario().gpus[index as usize];
        let gi = m.gpu_instance_id;
        let Some(own) = self.node.mig_instance_state(index, gi, t) else {
            self.layout_changed.store(true, Ordering::Relaxed);
            return Err(SampleError::Failed(format!("MIG instance {gi} is gone")));
        };
        let s = self.node.state(index, t);
        let mw = |w: f64| m.share_of((w * 1000.0).round() as u64) as u32;
        let mut errors = vec![(Field::Utilization, FieldError::NotSupported)];
        if s.energy_mj.is_none() {
            errors.push((Field::Energy, FieldError::NotSupported));
        }
        Ok(Reading {
            energy_mj: s.energy_mj.map(|mj| m.share_of(mj)),
            power_average_mw: Some(mw(self.node.power_average_w(index, t))),
            power_instant_mw: Some(mw(s.power_w)),
            power_limit_mw: Some(mw(spec.power_limit_w)),
            utilization_pct: None,
            memory_used_bytes: Some(own.memory_used_bytes),
            memory_total_bytes: Some(own.memory_total_bytes),
            sm_clock_mhz: Some(s.sm_clock_mhz),
            temperature_c: Some(s.temperature_c.round() as u32),
            clock_event_reasons: Some(s.throttle_reasons),
            violation_ns: violation_ns(self.node.violation_s(index, t)),
            processes: with_processes.then(|| {
                s.processes
                    .iter()
                    .filter(|p| p.gpu_instance == Some(gi))
                    .map(|p| ProcessUse {
                        pid: p.pid,
                        used_memory_bytes: Some(p.used_memory_bytes),
                        sm_util_pct: None,
                    })
                    .collect()
            }),
            pipes: self.node.gpm_supported(index).then_some(own.pipes),
            field_errors: errors,
        })
    }
}

/// The simulated node's violation counters, as NVML reports them: nanoseconds by reason.
fn violation_ns(v: gpucost_sim::ViolationSeconds) -> BTreeMap<ThrottleReason, u64> {
    [
        (ThrottleReason::SwPowerCap, v.power),
        (ThrottleReason::SwThermalSlowdown, v.thermal),
        (ThrottleReason::SyncBoost, v.sync_boost),
        (ThrottleReason::BoardLimit, v.board_limit),
        (ThrottleReason::LowUtilization, v.low_utilization),
        (ThrottleReason::Reliability, v.reliability),
        (ThrottleReason::HwThermalSlowdown, v.hw_thermal),
        (ThrottleReason::HwPowerBrakeSlowdown, v.hw_power_brake),
    ]
    .into_iter()
    .map(|(r, s)| (r, (s.max(0.0) * 1e9) as u64))
    .collect()
}

/// Process facts of the simulated node's jobs, so attribution runs its real rules on them: a job
/// with an `id` sits in a Slurm cgroup (`.../slurmstepd.scope/job_<id>/...`), the others are
/// plain processes. Pids the scenario does not know (a real `gpucost run` on a simulated node)
/// are looked up in the real `/proc`.
pub struct SimProcs {
    procs: std::collections::BTreeMap<u32, gpucost_core::attribute::process::ProcInfo>,
    real: crate::identity::procfs::ProcFs,
}

impl SimProcs {
    pub fn new(scenario: &Scenario, real: crate::identity::procfs::ProcFs) -> Self {
        use gpucost_core::attribute::process::ProcInfo;
        let mut procs = std::collections::BTreeMap::new();
        for j in &scenario.jobs {
            let comm = j
                .command
                .split_whitespace()
                .next()
                .unwrap_or(&j.name)
                .to_string();
            let info = |pid: u32, ppid: u32| ProcInfo {
                pid,
                ppid,
                uid: j.uid,
                user: Some(j.user.clone()),
                comm: comm.clone(),
                start_ticks: 0,
                slurm_job: j.id.clone(),
                pod_uid: None,
                env_job_id: None,
                env_labels: Default::default(),
            };
            procs.insert(j.pid, info(j.pid, 1));
            for w in &j.worker_pids {
                procs.insert(*w, info(*w, j.pid));
            }
        }
        SimProcs { procs, real }
    }
}

impl gpucost_core::attribute::process::ProcSource for SimProcs {
    fn info(&self, pid: u32) -> Option<gpucost_core::attribute::process::ProcInfo> {
        self.procs
            .get(&pid)
            .cloned()
            .or_else(|| self.real.info(pid))
    }
}

/// The simulated node's scheduler: it reports each scenario job's ending with its exit code, as a
/// Slurm epilog would (`gpucost job end`), so failed runs are visible in the demo. A job's id is
/// its scenario `id`, else the id attribution gives its process (`unattributed:PID`).
pub struct SimEndings {
    node: SimulatedNode,
    clock: Arc<dyn Clock>,
    started: Instant,
    until_s: f64,
}

impl SimEndings {
    pub fn new(scenario: Scenario, clock: Arc<dyn Clock>) -> Self {
        SimEndings {
            node: SimulatedNode::new(scenario),
            started: clock.mono(),
            clock,
            until_s: 0.0,
        }
    }

    /// Jobs that ended since the last call: (job id, exit code), in order.
    pub fn take(&mut self) -> Vec<(String, i32)> {
        let s = self.node.scenario();
        let t = scenario_time(self.clock.as_ref(), self.started, s);
        let since = std::mem::replace(&mut self.until_s, t);
        let d = s.duration_s;
        let mut out: Vec<(f64, String, i32)> = Vec::new();
        for j in &s.jobs {
            let end = Scenario::job_end_s(j);
            let first = if s.repeat { (since / d).floor() } else { 0.0 };
            let last = if s.repeat { (t / d).floor() } else { 0.0 };
            let mut p = first;
            while p <= last {
                let at = p * d + end;
                if at > since && at <= t {
                    let id =
                        j.id.clone()
                            .unwrap_or_else(|| format!("unattributed:{}", j.pid));
                    out.push((at, id, j.exit_code));
                }
                p += 1.0;
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.into_iter().map(|(_, id, code)| (id, code)).collect()
    }
}
