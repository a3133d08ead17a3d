//! The simulated node: given a scenario and a moment, what each GPU reads.
//!
//! Everything here is a pure function of (scenario, scenario time), so two readers of the same
//! scenario (the agent's simulated backend and the fake NVML library) agree, and tests can compute
//! expected values exactly. Energy is the exact integral of the power curve, ripple included.

use crate::pipes::{PipeSeconds, Pipes};
use crate::scenario::{Context, EventKind, JobSpec, PhaseSpec, Scenario};
use crate::violations::{time_sine_at_least, ViolationSeconds};

/// NVML clock-event (throttle) reason bits, as in nvml.h.
pub mod reason {
    pub const GPU_IDLE: u64 = 0x1;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
}

/// Angular frequency of the ripple (a period of about 7.3 s).
const RIPPLE_OMEGA: f64 = std::f64::consts::TAU / 7.3;
/// Memory the driver holds on a GPU with nothing running, in MiB.
const DRIVER_RESERVED_MIB: u64 = 512;
/// Temperature rise from idle to full power, in degrees Celsius.
const TEMP_RISE_C: f64 = 42.0;

/// A process on a GPU, as NVML's running-process calls report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimProcess {
    pub pid: u32,
    pub used_memory_bytes: u64,
    /// Percent of the sample period this process had a kernel on the SMs (NVML's per-process
    /// `smUtil`): the job's phase utilization for its main process, 0 for its workers.
    pub sm_util_pct: u32,
    /// Its job's contexts: which of NVML's lists (compute, graphics, MPS) show it.
    pub context: Context,
    /// The MIG GPU instance it runs in (`gpuInstanceId` in NVML's process lists), while its GPU
    /// is in MIG mode.
    pub gpu_instance: Option<u32>,
}

/// What a MIG GPU instance reads at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MigInstanceState {
    /// Memory its jobs hold (the instance's own memory, what NVML reports through the MIG
    /// device handle).
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Activity of its jobs, relative to the instance (what `nvmlGpmMigSampleGet` averages).
    pub pipes: Pipes,
}

/// Everything a sampler can read from one GPU at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuState {
    pub power_w: f64,
    pub utilization: f64,
    pub memory_used_bytes: u64,
    pub sm_clock_mhz: u32,
    pub temperature_c: f64,
    /// NVML clock-event reason bits (see [`reason`]).
    pub throttle_reasons: u64,
    /// The energy counter in millijoules; `None` where the scenario says it is not supported.
    pub energy_mj: Option<u64>,
    pub processes: Vec<SimProcess>,
    /// Pipe activity now (what GPM averages between two samples; see [`SimulatedNode::pipes_between`]).
    pub pipes: Pipes,
}

/// The load a GPU carries during one stretch of constant activity.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Watts above idle.
    excess_w: f64,
    utilization: f64,
    memory_mib: u64,
    pipes: Pipes,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            excess_w: 0.0,
            utilization: 0.0,
            memory_mib: 0,
            pipes: Pipes::IDLE,
        }
    }
}

/// A scenario made ready for queries.
#[derive(Debug, Clone)]
pub struct SimulatedNode {
    scenario: Scenario,
    uuids: Vec<String>,
    /// Per GPU: sorted breakpoints within one timeline (0 and duration included).
    breakpoints: Vec<Vec<f64>>,
    /// Per GPU: energy in joules from 0 to each breakpoint (ignoring resets).
    cumulative_j: Vec<Vec<f64>>,
    /// Per GPU: pipe-seconds (scenario time) from 0 to each breakpoint.
    cumulative_pipes: Vec<Vec<PipeSeconds>>,
    /// Per GPU: seconds (scenario time) each violation counter counted from 0 to each breakpoint.
    cumulative_violations: Vec<Vec<ViolationSeconds>>,
}

impl SimulatedNode {
    pub fn new(scenario: Scenario) -> Self {
        let n = scenario.gpus.len();
        let uuids = scenario
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| {
                g.uuid.clone().unwrap_or_else(|| {
                    format!("GPU-5133d5e1-0000-4000-8000-{:012x}", 0x51_0000 + i)
                })
            })
            .collect();
        let mut node = SimulatedNode {
            scenario,
            uuids,
            breakpoints: vec![Vec::new(); n],
            cumulative_j: vec![Vec::new(); n],
            cumulative_pipes: vec![Vec::new(); n],
            cumulative_violations: vec![Vec::new(); n],
        };
        for g in 0..n {
            let mut bps = vec![0.0, node.scenario.duration_s];
            if let Some(trace) = &node.scenario.gpus[g].trace {
                bps.extend(&trace.t_s);
            }
            for j in node
                .scenario
                .jobs
                .iter()
                .filter(|j| j.gpus.contains(&(g as u32)))
            {
                let mut t = j.start_s;
                bps.push(t);
                for p in &j.phases {
                    t += p.seconds;
                    bps.push(t);
                }
            }
            bps.sort_by(f64::total_cmp);
            bps.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
            let mut cum = Vec::with_capacity(bps.len());
            let mut cum_pipes = Vec::with_capacity(bps.len());
            let mut total = 0.0;
            let mut total_pipes = PipeSeconds::ZERO;
            let mut cum_violations = vec![ViolationSeconds::default()];
            cum.push(0.0);
            cum_pipes.push(total_pipes);
            for w in bps.windows(2) {
                total += node.segment_energy_j(g, w[0], w[1]);
                cum.push(total);
                let pipes = node.load(g, w[0]).pipes;
                total_pipes = total_pipes.plus(PipeSeconds::of(pipes, w[1] - w[0]));
                cum_pipes.push(total_pipes);
                let last = *cum_violations.last().expect("starts with one");
                cum_violations.push(last.plus(node.segment_violations(g, w[0], w[1])));
            }
            node.breakpoints[g] = bps;
            node.cumulative_j[g] = cum;
            node.cumulative_pipes[g] = cum_pipes;
            node.cumulative_violations[g] = cum_violations;
        }
        node
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    pub fn gpu_count(&self) -> u32 {
        self.scenario.gpus.len() as u32
    }

    pub fn uuid(&self, gpu: u32) -> &str {
        &self.uuids[gpu as usize]
    }

    /// Splits scenario time into (completed timelines, time within the current one).
    fn split(&self, t: f64) -> (f64, f64) {
        let d = self.scenario.duration_s;
        if self.scenario.repeat {
            let p = (t / d).floor();
            (p, t - p * d)
        } else {
            (0.0, t)
        }
    }

    /// The phases running on a GPU at time `tm` within one timeline, with their jobs.
    fn active(&self, gpu: usize, tm: f64) -> impl Iterator<Item = (&JobSpec, &PhaseSpec)> {
        self.scenario
            .jobs
            .iter()
            .filter(move |j| j.gpus.contains(&(gpu as u32)))
            .filter_map(move |j| {
                let mut start = j.start_s;
                j.phases.iter().find_map(|p| {
                    let end = start + p.seconds;
                    let hit = tm >= start && tm < end;
                    start = end;
                    hit.then_some((j, p))
                })
            })
    }

    /// The load on a GPU at time `tm` within one timeline (after the timeline: nothing).
    fn load(&self, gpu: usize, tm: f64) -> Load {
        let spec = &self.scenario.gpus[gpu];
        if let Some(s) = spec.trace.as_ref().and_then(|t| t.at(tm)) {
            return Load {
                excess_w: s.energy_rate_w - spec.idle_power_w,
                utilization: s.utilization,
                memory_mib: s.memory_used_mib.saturating_sub(DRIVER_RESERVED_MIB),
                pipes: spec.without_unknown_pipes(s.pipes),
            };
        }
        let mut load = Load::default();
        for (_, p) in self.active(gpu, tm) {
            load.excess_w += (p.power_w - spec.idle_power_w).max(0.0);
            load.utilization += p.utilization;
            load.memory_mib += p.memory_mib;
            load.pipes = load.pipes.plus(p.pipes());
        }
        load.excess_w = load.excess_w.min(spec.power_limit_w - spec.idle_power_w);
        load.utilization = load.utilization.min(1.0);
        load.pipes = spec.without_unknown_pipes(load.pipes.capped());
        load
    }

    /// The recorded interval covering `tm` on a traced GPU.
    fn traced(&self, gpu: usize, tm: f64) -> Option<crate::trace::TraceSample> {
        self.scenario.gpus[gpu]
            .trace
            .as_ref()
            .and_then(|t| t.at(tm))
    }

    fn ripple_phase(gpu: usize) -> f64 {
        gpu as f64 * 1.7
    }

    /// Exact energy in joules over `[a, b)`, both within one segment of constant load.
    fn segment_energy_j(&self, gpu: usize, a: f64, b: f64) -> f64 {
        if b <= a {
            return 0.0;
        }
        let idle = self.scenario.gpus[gpu].idle_power_w;
        let load = self.load(gpu, a);
        if self.traced(gpu, a).is_some() {
            // Recorded: the counter's average rate over the interval, no ripple.
            return (idle + load.excess_w) * (b - a);
        }
        let amp = self.scenario.ripple;
        let phi = Self::ripple_phase(gpu);
        // P(t) = idle + X * (1 + A sin(w t + phi)); its integral in closed form.
        let ripple =
            load.excess_w * amp * ((RIPPLE_OMEGA * a + phi).cos() - (RIPPLE_OMEGA * b + phi).cos())
                / RIPPLE_OMEGA;
        (idle + load.excess_w) * (b - a) + ripple
    }

    /// Scenario seconds within `[a, b)` (one stretch of constant load within a timeline) that
    /// each violation counter counts.
    fn segment_violations(&self, gpu: usize, a: f64, b: f64) -> ViolationSeconds {
        if b <= a {
            return ViolationSeconds::default();
        }
        if let Some(rec) = self.traced(gpu, a) {
            return ViolationSeconds::of_bits(rec.clock_event_reasons, b - a);
        }
        let spec = &self.scenario.gpus[gpu];
        let load = self.load(gpu, a);
        let span = b - a;
        // At the power cap: idle + X (1 + A sin(w t + phi)) >= 0.98 limit, as in `state`.
        let cap = 0.98 * spec.power_limit_w;
        let steady = spec.idle_power_w + load.excess_w;
        let swing = load.excess_w * self.scenario.ripple;
        let power = if swing > 0.0 {
            let c = (cap - steady) / swing;
            time_sine_at_least(a, b, RIPPLE_OMEGA, Self::ripple_phase(gpu), c)
        } else if steady >= cap {
            span
        } else {
            0.0
        };
        let heat = load.excess_w / (spec.power_limit_w - spec.idle_power_w);
        let hot = spec.idle_temperature_c + TEMP_RISE_C * heat >= 85.0;
        ViolationSeconds {
            power,
            thermal: if hot { span } else { 0.0 },
            low_utilization: if load.utilization == 0.0 { span } else { 0.0 },
            ..ViolationSeconds::default()
        }
    }

    /// Wall-clock seconds each of the GPU's violation counters has counted from scenario time 0
    /// to `t` (NVML counts in nanoseconds of real time; with `speed` > 1 a scenario second is
    /// shorter). Past a timeline that does not repeat the GPU is idle: low utilization counts.
    pub fn violation_s(&self, gpu: u32, t: f64) -> ViolationSeconds {
        let g = gpu as usize;
        let (periods, tm) = self.split(t.max(0.0));
        let bps = &self.breakpoints[g];
        let cum = &self.cumulative_violations[g];
        let per_timeline = *cum.last().expect("at least two breakpoints");
        let within = if tm >= self.scenario.duration_s {
            let idle = tm - self.scenario.duration_s;
            per_timeline.plus(ViolationSeconds {
                low_utilization: idle,
                ..ViolationSeconds::default()
            })
        } else {
            let k = bps.partition_point(|b| *b <= tm) - 1;
            cum[k].plus(self.segment_violations(g, bps[k], tm))
        };
        per_timeline
            .scaled(periods)
            .plus(within)
            .scaled(1.0 / self.scenario.speed)
    }

    /// True energy in joules from scenario time 0 to `t`, ignoring counter resets. With
    /// `speed` > 1 this is wall-clock energy: the integral of power over wall time.
    pub fn energy_j(&self, gpu: u32, t: f64) -> f64 {
        let g = gpu as usize;
        let (periods, tm) = self.split(t.max(0.0));
        let bps = &self.breakpoints[g];
        let cum = &self.cumulative_j[g];
        let per_timeline = *cum.last().expect("at least two breakpoints");
        let within = if tm >= self.scenario.duration_s {
            // Past a non-repeating timeline: idle power from its end on.
            per_timeline + self.scenario.gpus[g].idle_power_w * (tm - self.scenario.duration_s)
        } else {
            let k = bps.partition_point(|b| *b <= tm) - 1;
            cum[k] + self.segment_energy_j(g, bps[k], tm)
        };
        // Scenario time may run faster than the wall clock; energy accrues per wall second at
        // the power shown, so that power x time and the counter agree for any reader.
        self.scenario.gpus[g].initial_energy_j
            + (periods * per_timeline + within) / self.scenario.speed
    }

    /// Board power averaged over the wall-clock second before scenario time `t` (what NVML
    /// reports as `NVML_FI_DEV_POWER_AVERAGE`), from the exact energy integral; at time 0 the
    /// power then.
    pub fn power_average_w(&self, gpu: u32, t: f64) -> f64 {
        let t = t.max(0.0);
        let from = (t - self.scenario.speed).max(0.0);
        let wall_s = (t - from) / self.scenario.speed;
        if wall_s <= 0.0 {
            return self.state(gpu, t).power_w;
        }
        (self.energy_j(gpu, t) - self.energy_j(gpu, from)) / wall_s
    }

    /// Pipe-seconds from scenario time 0 to `t`: for each pipe, the integral of its activity
    /// over scenario time (exact; activity is constant within a phase), and the seconds it was
    /// unknown. The difference between two times, averaged over their distance
    /// ([`PipeSeconds::mean_over`]), is what a GPM metric reports.
    pub fn pipe_seconds(&self, gpu: u32, t: f64) -> PipeSeconds {
        let g = gpu as usize;
        let (periods, tm) = self.split(t.max(0.0));
        let bps = &self.breakpoints[g];
        let cum = &self.cumulative_pipes[g];
        let per_timeline = *cum.last().expect("at least two breakpoints");
        let within = if tm >= self.scenario.duration_s {
            // Past a non-repeating timeline nothing runs.
            per_timeline
        } else {
            let k = bps.partition_point(|b| *b <= tm) - 1;
            cum[k].plus(PipeSeconds::of(self.load(g, bps[k]).pipes, tm - bps[k]))
        };
        per_timeline.scaled(periods).plus(within)
    }

    /// Average pipe activity over scenario time `[t0, t1)`, what GPM reports for two samples
    /// taken at `t0` and `t1`. For `t1 <= t0`, the activity at `t0`.
    pub fn pipes_between(&self, gpu: u32, t0: f64, t1: f64) -> Pipes {
        if t1 <= t0 {
            let (_, tm) = self.split(t0.max(0.0));
            return self.load(gpu as usize, tm).pipes;
        }
        self.pipe_seconds(gpu, t1)
            .minus(self.pipe_seconds(gpu, t0))
            .mean_over(t1 - t0)
    }

    /// Whether the GPU supports GPM (pipe activity): see [`crate::GpuSpec::gpm_supported`].
    pub fn gpm_supported(&self, gpu: u32) -> bool {
        self.scenario.gpus[gpu as usize].gpm_supported()
    }

    /// Absolute scenario time of the most recent event of `kind` on `gpu` at or before `t`.
    fn last_event(&self, gpu: u32, t: f64, kind: EventKind) -> Option<f64> {
        let (periods, tm) = self.split(t.max(0.0));
        let d = self.scenario.duration_s;
        let times = self
            .scenario
            .events
            .iter()
            .filter(|e| e.gpu == gpu && e.kind == kind)
            .map(|e| e.at_s);
        let this_timeline = times.clone().filter(|at| *at <= tm).fold(None, max_opt);
        match this_timeline {
            Some(at) => Some(periods * d + at),
            None if periods >= 1.0 => times.fold(None, max_opt).map(|at| (periods - 1.0) * d + at),
            None => None,
        }
    }

    /// Whether the GPU answers at time `t` (false between a `gpu_lost` and a `gpu_recovered`).
    /// A lost GPU is back at the start of each repetition of the timeline.
    pub fn is_present(&self, gpu: u32, t: f64) -> bool {
        let (_, tm) = self.split(t.max(0.0));
        let mut present = true;
        let mut events: Vec<_> = self
            .scenario
            .events
            .iter()
            .filter(|e| e.gpu == gpu && e.at_s <= tm)
            .collect();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        for e in events {
            match e.kind {
                EventKind::GpuLost => present = false,
                EventKind::GpuRecovered => present = true,
                _ => {}
            }
        }
        present
    }

    /// When a `hang` that covers scenario time `t` on `gpu` ends (absolute scenario time), if one
    /// does.
    pub fn hang_end(&self, gpu: u32, t: f64) -> Option<f64> {
        let (periods, tm) = self.split(t.max(0.0));
        let d = self.scenario.duration_s;
        self.scenario
            .events
            .iter()
            .filter(|e| e.gpu == gpu && e.kind == EventKind::Hang)
            .filter_map(|e| {
                let end = e.at_s + e.seconds.unwrap_or(0.0);
                (tm >= e.at_s && tm < end).then_some(periods * d + end)
            })
            .reduce(f64::max)
    }

    /// Xid errors on `gpu` in scenario time `(t0, t1]`, in order, as `(time, xid)`.
    pub fn xids_between(&self, gpu: u32, t0: f64, t1: f64) -> Vec<(f64, u32)> {
        self.events_between(gpu, t0, t1, |k| k == EventKind::Xid)
            .into_iter()
            .map(|(at, _, xid)| (at, xid))
            .collect()
    }

    /// Events of the kinds `wanted` accepts on `gpu` in scenario time `(t0, t1]`, in order of
    /// time (then of the scenario's order), as `(time, kind, Xid code or 0)`.
    pub fn events_between(
        &self,
        gpu: u32,
        t0: f64,
        t1: f64,
        wanted: impl Fn(EventKind) -> bool,
    ) -> Vec<(f64, EventKind, u32)> {
        let d = self.scenario.duration_s;
        let mut out = Vec::new();
        let (p0, _) = self.split(t0.max(0.0));
        let (p1, _) = self.split(t1.max(0.0));
        let mut p = p0;
        while p <= p1 {
            for e in self
                .scenario
                .events
                .iter()
                .filter(|e| e.gpu == gpu && wanted(e.kind))
            {
                let at = p * d + e.at_s;
                if at > t0 && at <= t1 {
                    out.push((at, e.kind, e.xid.unwrap_or(0)));
                }
            }
            if !self.scenario.repeat {
                break;
            }
            p += 1.0;
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// Whether an `event_wait_error` covers scenario time `t` on `gpu`.
    pub fn event_wait_fails(&self, gpu: u32, t: f64) -> bool {
        let (_, tm) = self.split(t.max(0.0));
        self.scenario.events.iter().any(|e| {
            e.gpu == gpu
                && e.kind == EventKind::EventWaitError
                && tm >= e.at_s
                && tm < e.at_s + e.seconds.unwrap_or(0.0)
        })
    }

    /// Whether the GPU is in MIG mode at scenario time `t`: the scenario's `mig`, switched by
    /// its `mig_enable` and `mig_disable` events (each repetition of the timeline starts as at
    /// time 0).
    pub fn mig_on(&self, gpu: u32, t: f64) -> bool {
        let (_, tm) = self.split(t.max(0.0));
        let mut events: Vec<_> = self
            .scenario
            .events
            .iter()
            .filter(|e| e.gpu == gpu && e.at_s <= tm)
            .filter(|e| matches!(e.kind, EventKind::MigEnable | EventKind::MigDisable))
            .collect();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        events
            .last()
            .map_or(self.scenario.gpus[gpu as usize].mig, |e| {
                e.kind == EventKind::MigEnable
            })
    }

    /// Whether the GPU's `k`-th MIG instance exists at scenario time `t`: the GPU is in MIG mode
    /// and the instance was created and not yet destroyed (`created_at_s`, `destroyed_at_s`).
    pub fn mig_instance_exists(&self, gpu: u32, k: usize, t: f64) -> bool {
        let Some(m) = self.scenario.gpus[gpu as usize].mig_instances.get(k) else {
            return false;
        };
        let (_, tm) = self.split(t.max(0.0));
        self.mig_on(gpu, t)
            && m.created_at_s.is_none_or(|c| tm >= c)
            && m.destroyed_at_s.is_none_or(|d| tm < d)
    }

    /// The `MIG-...` UUID of the GPU's MIG instance with GPU instance id `gi`: the scenario's,
    /// or one derived from the GPU's index and `gi`.
    pub fn mig_uuid(&self, gpu: u32, gi: u32) -> Option<String> {
        let (_, m) = self.scenario.gpus[gpu as usize].mig_instance(gi)?;
        Some(m.uuid.clone().unwrap_or_else(|| {
            format!(
                "MIG-5133d5e1-0000-4000-8000-{:012x}",
                0x52_0000 + gpu as u64 * 0x100 + gi as u64
            )
        }))
    }

    /// The load of the jobs running in MIG instance `gi` of a GPU at time `tm` within one
    /// timeline: memory in MiB and pipe activity relative to the instance.
    fn instance_load(&self, gpu: usize, gi: u32, tm: f64) -> (u64, Pipes) {
        let spec = &self.scenario.gpus[gpu];
        let mut memory_mib = 0;
        let mut pipes = Pipes::IDLE;
        for (_, p) in self
            .active(gpu, tm)
            .filter(|(j, _)| j.gpu_instance == Some(gi))
        {
            memory_mib += p.memory_mib;
            pipes = pipes.plus(p.pipes());
        }
        (memory_mib, spec.without_unknown_pipes(pipes.capped()))
    }

    /// What MIG instance `gi` of a GPU reads at scenario time `t` (`None`: no such instance).
    pub fn mig_instance_state(&self, gpu: u32, gi: u32, t: f64) -> Option<MigInstanceState> {
        let (_, m) = self.scenario.gpus[gpu as usize].mig_instance(gi)?;
        let (_, gib) = crate::scenario::MigInstanceSpec::parse_profile(&m.profile)?;
        let total = u64::from(gib) * 1024 * 1024 * 1024;
        let (_, tm) = self.split(t.max(0.0));
        let (memory_mib, pipes) = self.instance_load(gpu as usize, gi, tm);
        Some(MigInstanceState {
            memory_used_bytes: (memory_mib * 1024 * 1024).min(total),
            memory_total_bytes: total,
            pipes,
        })
    }

    /// Pipe-seconds of MIG instance `gi` from scenario time 0 to `t` (as
    /// [`SimulatedNode::pipe_seconds`] for the whole GPU).
    pub fn mig_pipe_seconds(&self, gpu: u32, gi: u32, t: f64) -> PipeSeconds {
        let g = gpu as usize;
        let (periods, tm) = self.split(t.max(0.0));
        let bps = &self.breakpoints[g];
        let upto = |end: f64| {
            let mut total = PipeSeconds::ZERO;
            for w in bps.windows(2) {
                if w[0] >= end {
                    break;
                }
                let (_, pipes) = self.instance_load(g, gi, w[0]);
                total = total.plus(PipeSeconds::of(pipes, w[1].min(end) - w[0]));
            }
            total
        };
        let per_timeline = upto(self.scenario.duration_s);
        per_timeline.scaled(periods).plus(upto(tm))
    }

    /// Whether a job's process is on the GPU at scenario time `t` (what
    /// [`SimulatedNode::state`] lists), without the rest of the state.
    pub fn has_processes(&self, gpu: u32, t: f64) -> bool {
        let (_, tm) = self.split(t.max(0.0));
        self.active(gpu as usize, tm).next().is_some()
    }

    /// NVML GPU utilization (0..1) at scenario time `t`: what [`SimulatedNode::state`] reads,
    /// without the rest of the state (the fake library's sample buffer asks for many).
    pub fn utilization(&self, gpu: u32, t: f64) -> f64 {
        let g = gpu as usize;
        let (_, tm) = self.split(t.max(0.0));
        if let Some(rec) = self.traced(g, tm) {
            return rec.utilization;
        }
        let load = self.load(g, tm);
        if load.utilization > 0.0 {
            let wave = (RIPPLE_OMEGA * tm + Self::ripple_phase(g)).sin();
            (load.utilization * (1.0 + self.scenario.ripple * wave)).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// What the GPU reads at scenario time `t`. Callers check [`SimulatedNode::is_present`] first.
    pub fn state(&self, gpu: u32, t: f64) -> GpuState {
        let g = gpu as usize;
        let spec = &self.scenario.gpus[g];
        let (_, tm) = self.split(t.max(0.0));
        let load = self.load(g, tm);
        // The ripple follows time within the timeline, so each repetition has the same energy.
        let wave = (RIPPLE_OMEGA * tm + Self::ripple_phase(g)).sin();
        let power_w = spec.idle_power_w + load.excess_w * (1.0 + self.scenario.ripple * wave);
        let utilization = if load.utilization > 0.0 {
            (load.utilization * (1.0 + self.scenario.ripple * wave)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let heat = load.excess_w / (spec.power_limit_w - spec.idle_power_w);
        let temperature_c = spec.idle_temperature_c + TEMP_RISE_C * heat;
        let at_cap = power_w >= 0.98 * spec.power_limit_w;
        let mut throttle_reasons = 0;
        if load.utilization == 0.0 {
            throttle_reasons |= reason::GPU_IDLE;
        }
        if at_cap {
            throttle_reasons |= reason::SW_POWER_CAP;
        }
        if temperature_c >= 85.0 {
            throttle_reasons |= reason::SW_THERMAL_SLOWDOWN;
        }
        let sm_clock_mhz = if load.utilization == 0.0 {
            spec.idle_sm_clock_mhz
        } else if at_cap {
            (spec.max_sm_clock_mhz as f64 * 0.88) as u32
        } else {
            spec.max_sm_clock_mhz
        };
        let energy_mj = spec.energy_counter.then(|| {
            let since = self
                .last_event(gpu, t, EventKind::EnergyReset)
                .map(|r| self.energy_j(gpu, r))
                .unwrap_or(0.0);
            ((self.energy_j(gpu, t) - since) * 1000.0).max(0.0) as u64
        });
        let mig = self.mig_on(gpu, t);
        let processes = self
            .active(g, tm)
            .flat_map(|(j, p)| {
                let main = SimProcess {
                    pid: j.pid,
                    used_memory_bytes: p.memory_mib * 1024 * 1024,
                    sm_util_pct: (p.utilization * 100.0).round() as u32,
                    context: j.context,
                    gpu_instance: j.gpu_instance.filter(|_| mig),
                };
                let workers = j.worker_pids.iter().map(move |pid| SimProcess {
                    pid: *pid,
                    used_memory_bytes: 0,
                    sm_util_pct: 0,
                    context: j.context,
                    gpu_instance: j.gpu_instance.filter(|_| mig),
                });
                std::iter::once(main).chain(workers)
            })
            .collect();
        let memory_mib = (DRIVER_RESERVED_MIB + load.memory_mib).min(spec.memory_total_mib);
        if let Some(rec) = self.traced(g, tm) {
            // What was recorded; the jobs' processes share its memory and utilization.
            let mut processes: Vec<SimProcess> = processes;
            let main_pids: Vec<u32> = self.active(g, tm).map(|(j, _)| j.pid).collect();
            let mains = main_pids.len().max(1) as u64;
            for p in processes.iter_mut().filter(|p| main_pids.contains(&p.pid)) {
                p.used_memory_bytes = load.memory_mib / mains * 1024 * 1024;
                p.sm_util_pct = (rec.utilization * 100.0 / mains as f64).round() as u32;
            }
            return GpuState {
                power_w: rec.power_w,
                utilization: rec.utilization,
                memory_used_bytes: rec.memory_used_mib * 1024 * 1024,
                sm_clock_mhz: rec.sm_clock_mhz,
                temperature_c: rec.temperature_c,
                throttle_reasons: rec.clock_event_reasons,
                energy_mj,
                processes,
                pipes: rec.pipes,
            };
        }
        GpuState {
            power_w,
            utilization,
            memory_used_bytes: memory_mib * 1024 * 1024,
            sm_clock_mhz,
            temperature_c,
            throttle_reasons,
            energy_mj,
            processes,
            pipes: load.pipes,
        }
    }
}

fn max_opt(acc: Option<f64>, x: f64) -> Option<f64> {
    Some(acc.map_or(x, |a| a.max(x)))
}
