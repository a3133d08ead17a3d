//! The simulated backend: the scenario model of `gpucost-sim`, read as if it were NVML.
//!
//! Used only when the operator asks for it (`--simulate`); the agent never falls back to it.
//! Scenario time runs from the moment the backend opens, at the scenario's speed.

use std::time::Instant;

use gpucost_sim::{Node, Scenario};

use super::{Backend, GpuStatic, ProcessUse, Reading, SampleError, Source};

pub struct SimBackend {
    node: Node,
    started: Instant,
    /// Scenario time of each GPU's previous reading, to report Xids once.
    last_read_s: Vec<f64>,
}

impl SimBackend {
    pub fn new(scenario: Scenario) -> Self {
        let node = Node::new(scenario);
        let n = node.gpu_count() as usize;
        SimBackend {
            node,
            started: Instant::now(),
            last_read_s: vec![0.0; n],
        }
    }

    pub fn scenario(&self) -> &Scenario {
        self.node.scenario()
    }

    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.node.scenario().speed
    }
}

impl Backend for SimBackend {
    fn source(&self) -> Source {
        Source::Simulated
    }

    fn driver_version(&self) -> Option<String> {
        Some(self.node.scenario().driver_version.clone())
    }

    fn gpus(&mut self) -> Result<Vec<GpuStatic>, SampleError> {
        Ok((0..self.node.gpu_count())
            .map(|i| GpuStatic {
                index: i,
                uuid: self.node.uuid(i).to_string(),
                model: self.node.scenario().gpus[i as usize].model.clone(),
            })
            .collect())
    }

    fn read(&mut self, index: u32, with_processes: bool) -> Result<Reading, SampleError> {
        let Some(spec) = self.node.scenario().gpus.get(index as usize) else {
            return Err(SampleError::Failed(format!("no simulated GPU {index}")));
        };
        let t = self.now_s();
        let since = std::mem::replace(&mut self.last_read_s[index as usize], t);
        let xids = self
            .node
            .xids_between(index, since, t)
            .into_iter()
            .map(|(_, xid)| xid)
            .collect();
        if !self.node.is_present(index, t) {
            return Err(SampleError::GpuLost("simulated".into()));
        }
        let s = self.node.state(index, t);
        let mut errors = Vec::new();
        if s.energy_mj.is_none() {
            errors.push((super::Field::Energy, super::FieldError::NotSupported));
        }
        Ok(Reading {
            energy_mj: s.energy_mj,
            power_mw: Some((s.power_w * 1000.0).round() as u32),
            power_limit_mw: Some((spec.power_limit_w * 1000.0).round() as u32),
            utilization_pct: Some((s.utilization * 100.0).round() as u32),
            memory_used_bytes: Some(s.memory_used_bytes),
            memory_total_bytes: Some(spec.memory_total_mib * 1024 * 1024),
            sm_clock_mhz: Some(s.sm_clock_mhz),
            temperature_c: Some(s.temperature_c.round() as u32),
            clock_event_reasons: Some(s.throttle_reasons),
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
            xids,
            field_errors: errors,
        })
    }
}

/// Process facts of the simulated node's jobs, so attribution runs its real rules on them: a job
/// with an `id` sits in a Slurm cgroup (`.../slurmstepd.scope/job_<id>/...`), the others are
/// plain processes. Pids the scenario does not know (a real `gpucost run` on a simulated node)
/// are looked up in the real `/proc`.
pub struct SimProcs {
    procs: std::collections::BTreeMap<u32, crate::attribute::procfs::ProcInfo>,
    real: crate::attribute::procfs::ProcFs,
}

impl SimProcs {
    pub fn new(scenario: &Scenario, real: crate::attribute::procfs::ProcFs) -> Self {
        use crate::attribute::procfs::ProcInfo;
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

impl crate::attribute::procfs::ProcSource for SimProcs {
    fn info(&self, pid: u32) -> Option<crate::attribute::procfs::ProcInfo> {
        self.procs
            .get(&pid)
            .cloned()
            .or_else(|| self.real.info(pid))
    }
}
