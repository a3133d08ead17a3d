//! Recorded readings of a real GPU, replayed by the simulated node.
//!
//! `gpucost agent --record FILE` writes a scenario whose GPUs each carry a `[gpu.trace]`: one
//! column per field, one value per sample. A traced GPU reads what was recorded instead of what
//! its jobs' phases would make it read; the jobs then only say which process held the GPU when
//! and how it ended. Value `k` of a column describes the interval `(t_s[k-1], t_s[k]]` (what
//! NVML's utilization and GPM averages cover); before `t_s[0]` the first values hold, after the
//! last sample the GPU follows its jobs again (idle once they ended).

use serde::{Deserialize, Serialize};

use crate::pipes::Pipes;

/// One GPU's recorded samples, column by column (every column as long as `t_s`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    /// Sample times, scenario seconds, strictly increasing.
    pub t_s: Vec<f64>,
    /// The energy counter in joules since the first sample (non-decreasing). Empty where the GPU
    /// had no counter: energy is then the recorded power integrated over time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub energy_j: Vec<f64>,
    pub power_w: Vec<f64>,
    /// 0..1.
    pub utilization: Vec<f64>,
    pub memory_used_mib: Vec<u64>,
    pub sm_clock_mhz: Vec<u32>,
    pub temperature_c: Vec<f64>,
    /// NVML clock-event reason bits.
    pub clock_event_reasons: Vec<u64>,
    /// GPM pipe activity, where the GPU had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipes: Option<TracePipes>,
}

/// Recorded pipe activity (0..1), one column per pipe of [`Pipes`]; `nan` where that pipe was
/// unknown in that sample (its GPM metric failed, or GPM gave nothing for the interval).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracePipes {
    pub sm_active: Vec<f64>,
    pub sm_occupancy: Vec<f64>,
    pub tensor_active: Vec<f64>,
    pub hmma_active: Vec<f64>,
    pub imma_active: Vec<f64>,
    pub dfma_tensor_active: Vec<f64>,
    pub fp16_active: Vec<f64>,
    pub fp32_active: Vec<f64>,
    pub fp64_active: Vec<f64>,
    pub dram_active: Vec<f64>,
}

impl TracePipes {
    fn columns(&self) -> [(&'static str, &Vec<f64>); 10] {
        [
            ("sm_active", &self.sm_active),
            ("sm_occupancy", &self.sm_occupancy),
            ("tensor_active", &self.tensor_active),
            ("hmma_active", &self.hmma_active),
            ("imma_active", &self.imma_active),
            ("dfma_tensor_active", &self.dfma_tensor_active),
            ("fp16_active", &self.fp16_active),
            ("fp32_active", &self.fp32_active),
            ("fp64_active", &self.fp64_active),
            ("dram_active", &self.dram_active),
        ]
    }

    fn at(&self, k: usize) -> Pipes {
        let v = |column: &Vec<f64>| Some(column[k]).filter(|x| !x.is_nan());
        Pipes {
            sm_active: v(&self.sm_active),
            sm_occupancy: v(&self.sm_occupancy),
            tensor_active: v(&self.tensor_active),
            hmma_active: v(&self.hmma_active),
            imma_active: v(&self.imma_active),
            dfma_tensor_active: v(&self.dfma_tensor_active),
            fp16_active: v(&self.fp16_active),
            fp32_active: v(&self.fp32_active),
            fp64_active: v(&self.fp64_active),
            dram_active: v(&self.dram_active),
        }
    }

    /// Appends one sample (an unknown pipe as `nan`).
    pub fn push(&mut self, p: &Pipes) {
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        self.sm_active.push(v(p.sm_active));
        self.sm_occupancy.push(v(p.sm_occupancy));
        self.tensor_active.push(v(p.tensor_active));
        self.hmma_active.push(v(p.hmma_active));
        self.imma_active.push(v(p.imma_active));
        self.dfma_tensor_active.push(v(p.dfma_tensor_active));
        self.fp16_active.push(v(p.fp16_active));
        self.fp32_active.push(v(p.fp32_active));
        self.fp64_active.push(v(p.fp64_active));
        self.dram_active.push(v(p.dram_active));
    }
}

/// What a traced GPU reads during one recorded interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TraceSample {
    /// Average power over the interval, from the energy counter where recorded.
    pub energy_rate_w: f64,
    pub power_w: f64,
    pub utilization: f64,
    pub memory_used_mib: u64,
    pub sm_clock_mhz: u32,
    pub temperature_c: f64,
    pub clock_event_reasons: u64,
    pub pipes: Pipes,
}

impl Trace {
    /// The interval that covers scenario time `tm` (`[t_s[k-1], t_s[k])`; the first one before
    /// the trace), or `None` after the last sample.
    pub(crate) fn at(&self, tm: f64) -> Option<TraceSample> {
        let k = self.t_s.partition_point(|t| *t <= tm);
        if k >= self.t_s.len() {
            return None;
        }
        let energy_rate_w = if k > 0 && !self.energy_j.is_empty() {
            (self.energy_j[k] - self.energy_j[k - 1]) / (self.t_s[k] - self.t_s[k - 1])
        } else {
            self.power_w[k]
        };
        Some(TraceSample {
            energy_rate_w,
            power_w: self.power_w[k],
            utilization: self.utilization[k],
            memory_used_mib: self.memory_used_mib[k],
            sm_clock_mhz: self.sm_clock_mhz[k],
            temperature_c: self.temperature_c[k],
            clock_event_reasons: self.clock_event_reasons[k],
            pipes: self.pipes.as_ref().map_or(Pipes::IDLE, |p| p.at(k)),
        })
    }

    /// Seconds the trace covers.
    pub fn end_s(&self) -> f64 {
        self.t_s.last().copied().unwrap_or(0.0)
    }

    /// The first problem with the trace, as (column, problem).
    pub(crate) fn check(
        &self,
        duration_s: f64,
        memory_total_mib: u64,
    ) -> Result<(), (String, String)> {
        let n = self.t_s.len();
        if n == 0 {
            return Err(("t_s".into(), "a trace needs at least one sample".into()));
        }
        let mut lengths: Vec<(&str, usize)> = vec![
            ("power_w", self.power_w.len()),
            ("utilization", self.utilization.len()),
            ("memory_used_mib", self.memory_used_mib.len()),
            ("sm_clock_mhz", self.sm_clock_mhz.len()),
            ("temperature_c", self.temperature_c.len()),
            ("clock_event_reasons", self.clock_event_reasons.len()),
        ];
        if !self.energy_j.is_empty() {
            lengths.push(("energy_j", self.energy_j.len()));
        }
        if let Some(p) = &self.pipes {
            lengths.extend(p.columns().map(|(name, c)| (name, c.len())));
        }
        if let Some((name, len)) = lengths.iter().find(|(_, len)| *len != n) {
            return Err((
                (*name).to_string(),
                format!("has {len} values, t_s has {n}"),
            ));
        }
        if let Some(k) = (0..n).find(|&k| {
            !self.t_s[k].is_finite()
                || self.t_s[k] < 0.0
                || (k > 0 && self.t_s[k] <= self.t_s[k - 1])
        }) {
            return Err((
                "t_s".into(),
                format!("must be >= 0 and strictly increasing (sample {k})"),
            ));
        }
        if self.end_s() > duration_s + 1e-9 {
            return Err((
                "t_s".into(),
                format!(
                    "ends at {}s, after duration_s ({duration_s}s)",
                    self.end_s()
                ),
            ));
        }
        if let Some(k) = (0..self.energy_j.len()).find(|&k| {
            !self.energy_j[k].is_finite()
                || self.energy_j[k] < 0.0
                || (k > 0 && self.energy_j[k] < self.energy_j[k - 1])
        }) {
            return Err((
                "energy_j".into(),
                format!("must be >= 0 and never decrease (sample {k})"),
            ));
        }
        let ratio = |v: &f64| (0.0..=1.0).contains(v);
        let watts = |v: &f64| v.is_finite() && *v >= 0.0;
        type Check<'a> = (&'a str, &'a Vec<f64>, &'a dyn Fn(&f64) -> bool, &'a str);
        let mut checks: Vec<Check<'_>> = vec![
            ("power_w", &self.power_w, &watts, "must be >= 0"),
            (
                "utilization",
                &self.utilization,
                &ratio,
                "must be in [0, 1]",
            ),
            ("temperature_c", &self.temperature_c, &watts, "must be >= 0"),
        ];
        let ratio_or_nan = |v: &f64| v.is_nan() || ratio(v);
        if let Some(p) = &self.pipes {
            for (name, c) in p.columns() {
                checks.push((
                    name,
                    c,
                    &ratio_or_nan,
                    "must be in [0, 1] (or nan: unknown)",
                ));
            }
        }
        for (name, column, ok, problem) in checks {
            if let Some(k) = column.iter().position(|v| !ok(v)) {
                return Err((
                    name.to_string(),
                    format!("{problem}, got {} (sample {k})", column[k]),
                ));
            }
        }
        if let Some(k) = self
            .memory_used_mib
            .iter()
            .position(|m| *m > memory_total_mib)
        {
            return Err((
                "memory_used_mib".into(),
                format!(
                    "{} MiB is more than the GPU has (sample {k})",
                    self.memory_used_mib[k]
                ),
            ));
        }
        Ok(())
    }
}
