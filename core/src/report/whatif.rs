//! What would each job have cost with each of the levers every cost guide names (`gpucost
//! report --what-if`), from what was measured and the configured prices only. A lever whose
//! inputs are unknown is `None` ("unknown"), never a saving of 0.
//!
//! - `spot`, `reserved`: its GPU time at that market's rate for each of its GPUs' models (the
//!   `[[pricing.gpu]]` entry's `spot_per_hour` / `reserved_per_hour`), energy and overhead as
//!   they were; spot with the interruption overhead (a share of the run done again).
//! - `off_peak`: its energy at the cheapest tariff of the week; whether its duration fits in one
//!   stretch of that tariff is said apart.
//! - `bf16`: its FP32-bound time at the GPU's measured (else datasheet) BF16/FP32 speedup, which
//!   the accounting already priced as the FP32 saving; unknown for a job whose GPUs reported no
//!   pipe activity (no FP32-bound test was possible, [`pipes_measured`]).
//! - `no_idle`: without the GPU time it held while the GPU was idle.
//! - `checkpoint`: a failed or preempted run without the cost it lost since its last checkpoint
//!   (all of it when it reported none), as if it had checkpointed just before the end; the other
//!   outcomes lose nothing (their cost), an `unknown` one is unknown.
//!
//! One definition for `gpucost report --what-if` (from the ledger, or from Prometheus for the
//! fleet) and for the agent's `gpucost_job_savings_potential` (each job's [`WhatIf::savings`]).

use std::collections::BTreeMap;

use crate::account::pricing::Pricing;
use crate::jobs::{GpuRecord, JobRecord, Outcome, Usage};

/// The levers, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lever {
    Spot,
    Reserved,
    OffPeak,
    Bf16,
    NoIdle,
    Checkpoint,
}

impl Lever {
    pub const ALL: [Lever; 6] = [
        Lever::Spot,
        Lever::Reserved,
        Lever::OffPeak,
        Lever::Bf16,
        Lever::NoIdle,
        Lever::Checkpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Lever::Spot => "spot",
            Lever::Reserved => "reserved",
            Lever::OffPeak => "off_peak",
            Lever::Bf16 => "bf16",
            Lever::NoIdle => "no_idle",
            Lever::Checkpoint => "checkpoint",
        }
    }
}

/// The assumptions the levers need beyond the prices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WhatIfOptions {
    /// The share of a spot run done again after interruptions (0.1: a tenth).
    pub spot_rerun: f64,
}

impl Default for WhatIfOptions {
    fn default() -> Self {
        WhatIfOptions { spot_rerun: 0.10 }
    }
}

/// What a job, or a group of jobs, cost and would have cost with each lever.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    pub actual: f64,
    /// The cost with each lever, in [`Lever::ALL`]'s order; `None` where its inputs are unknown.
    pub levers: [Option<f64>; 6],
    /// Whether the run fits in one stretch of the cheapest tariff (a group: all of its runs).
    pub off_peak_fits: bool,
}

impl WhatIf {
    /// The cost with `lever`, `None` when unknown.
    pub fn with(&self, lever: Lever) -> Option<f64> {
        self.levers[lever as usize]
    }

    /// What `lever` would have saved (`actual - with`), `None` when unknown.
    pub fn saving(&self, lever: Lever) -> Option<f64> {
        self.with(lever).map(|c| self.actual - c)
    }

    /// What each lever whose inputs are known would have saved, in [`Lever::ALL`]'s order
    /// (negative where the lever would have cost more).
    pub fn savings(&self) -> impl Iterator<Item = (Lever, f64)> + '_ {
        Lever::ALL
            .into_iter()
            .filter_map(|l| self.saving(l).map(|s| (l, s)))
    }

    /// The sum over several jobs or groups; a lever unknown for any of them is unknown.
    pub fn sum<'a>(items: impl IntoIterator<Item = &'a WhatIf>) -> WhatIf {
        let mut total = WhatIf {
            actual: 0.0,
            levers: [Some(0.0); 6],
            off_peak_fits: true,
        };
        for w in items {
            total.actual += w.actual;
            for (t, v) in total.levers.iter_mut().zip(w.levers) {
                *t = t.zip(v).map(|(a, b)| a + b);
            }
            total.off_peak_fits &= w.off_peak_fits;
        }
        total
    }
}

/// Each GPU's model by UUID (a MIG instance's is its physical GPU's): the `model_of` of
/// [`what_if`] for a ledger's or a node's GPUs.
pub fn models_by_uuid<'a>(
    gpus: impl IntoIterator<Item = &'a GpuRecord>,
) -> BTreeMap<String, String> {
    gpus.into_iter()
        .map(|g| (g.uuid.clone(), g.model.clone()))
        .collect()
}

/// Whether a job's GPUs reported pipe activity (FLOPs counted, or FP32-bound time found), so
/// that the FP32-bound test could run: the input of the `bf16` lever. A job that held no GPU
/// time had nothing to test.
pub fn pipes_measured(u: &Usage) -> bool {
    u.flop > 0.0 || u.fp32_seconds > 0.0 || u.gpu_seconds == 0.0
}

/// The what-if of one job. `model_of` maps the GPU UUIDs of `job.per_gpu` to their models (the
/// ledger's GPUs, [`models_by_uuid`]); a GPU it does not know makes the rate-based levers
/// unknown.
pub fn what_if(
    job: &JobRecord,
    model_of: &BTreeMap<String, String>,
    pricing: &Pricing,
    opts: &WhatIfOptions,
) -> WhatIf {
    what_if_measured(job, pipes_measured(&job.usage), model_of, pricing, opts)
}

/// [`what_if`] where whether the job's pipes were measured is known from elsewhere than its
/// usage: a fleet report's usage comes from Prometheus, which has no FLOP counts, and the agents
/// say whether they measured a job's pipes by exporting its `bf16` lever.
pub fn what_if_measured(
    job: &JobRecord,
    pipes_measured: bool,
    model_of: &BTreeMap<String, String>,
    pricing: &Pricing,
    opts: &WhatIfOptions,
) -> WhatIf {
    let u = &job.usage;
    let actual = u.total_cost();
    let not_gpu_time = u.cost_energy + u.cost_overhead;
    // GPU time at another market's rate, over every GPU the job held: what its GPU time cost
    // scaled by the two rates, so that what the cost already weighs stays weighed (a MIG
    // instance pays its slices' share of its GPU's rate); its hours at the rate where the
    // configured market has no rate to scale from.
    let at_rate = |rate: fn(&crate::account::pricing::GpuPrice) -> Option<f64>| -> Option<f64> {
        job.per_gpu.iter().try_fold(0.0, |acc, (uuid, gu)| {
            let model = model_of.get(uuid)?;
            let entry = &pricing.gpus[pricing.matched_rule(model)?];
            let to = rate(entry)?;
            let gpu_time = match entry.rate(pricing.market).filter(|r| *r > 0.0) {
                Some(from) => gu.cost_gpu_time * to / from,
                None => gu.gpu_seconds / 3600.0 * to,
            };
            Some(acc + gpu_time)
        })
    };
    let spot = at_rate(|g| g.spot_per_hour)
        .map(|gpu_time| (gpu_time + not_gpu_time) * (1.0 + opts.spot_rerun.max(0.0)));
    let reserved = at_rate(|g| g.reserved_per_hour).map(|gpu_time| gpu_time + not_gpu_time);
    let (cheapest, stretch_s) = pricing.energy.cheapest();
    let facility_kwh = u.energy_j / 3.6e6 * pricing.pue;
    let off_peak = actual - u.cost_energy + facility_kwh * cheapest;
    let duration = job.ended_at.unwrap_or(job.started_at) - job.started_at;
    let bf16 = pipes_measured.then_some(actual - u.fp32_saving);
    let no_idle = actual - u.idle_cost;
    let checkpoint = (job.outcome != Outcome::Unknown).then(|| actual - job.waste().lost);
    WhatIf {
        actual,
        levers: [
            spot,
            reserved,
            Some(off_peak),
            bf16,
            Some(no_idle),
            checkpoint,
        ],
        off_peak_fits: duration <= stretch_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{Checkpoint, Progress, Scheduler, Usage};

    fn pricing(extra: &str) -> Pricing {
        parse_text(&format!(
            "[pricing]\npue = 1.0\n[pricing.energy]\nprice_per_kwh = 0.30\n\
             [[pricing.energy.window]]\nstart = \"22:00\"\nend = \"06:00\"\nprice_per_kwh = 0.10\n\
             [[pricing.gpu]]\nmatch = \"H100\"\non_demand_per_hour = 4.0\n{extra}"
        ))
        .unwrap()
    }

    fn parse_text(text: &str) -> Result<Pricing, String> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        crate::account::pricing::from_toml_value(&doc["pricing"]).map_err(|e| e.to_string())
    }

    /// Two hours on one H100 at 4/h (8), 10 kWh at 0.30 (3), overhead 1; half an hour idle
    /// (3 of its cost), an hour FP32-bound (saving 2), FLOPs counted.
    fn job() -> (JobRecord, BTreeMap<String, String>) {
        let usage = Usage {
            gpu_seconds: 7200.0,
            energy_j: 10.0 * 3.6e6,
            cost_gpu_time: 8.0,
            cost_energy: 3.0,
            cost_overhead: 1.0,
            idle_gpu_seconds: 1800.0,
            idle_cost: 3.0,
            fp32_seconds: 3600.0,
            fp32_saving: 2.0,
            flop: 1e18,
            ..Usage::default()
        };
        let j = JobRecord {
            id: "j".into(),
            name: "j".into(),
            user: "alice".into(),
            uid: Some(1000),
            scheduler: Scheduler::Gpucost,
            labels: BTreeMap::new(),
            started_at: 0.0,
            ended_at: Some(7200.0),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            signal: None,
            reason: None,
            usage,
            per_gpu: BTreeMap::from([("GPU-a".to_string(), usage)]),
            registration: None,
            progress: None,
        };
        let models = BTreeMap::from([("GPU-a".to_string(), "NVIDIA H100 80GB HBM3".to_string())]);
        (j, models)
    }

    #[test]
    fn each_lever_from_what_was_measured() {
        let (j, models) = job();
        let p = pricing("spot_per_hour = 2.0\nreserved_per_hour = 3.0\n");
        let w = what_if(&j, &models, &p, &WhatIfOptions::default());
        assert_eq!(w.actual, 12.0);
        // Spot: (2 h x 2 + 3 + 1) x 1.1.
        assert!((w.with(Lever::Spot).unwrap() - 8.8).abs() < 1e-9);
        // Reserved: 2 h x 3 + 3 + 1.
        assert_eq!(w.with(Lever::Reserved), Some(10.0));
        // Off-peak: 10 kWh at 0.10 instead of 3.
        assert!((w.with(Lever::OffPeak).unwrap() - 10.0).abs() < 1e-9);
        assert!(w.off_peak_fits, "2 h fits in the 8 h night");
        assert_eq!(w.with(Lever::Bf16), Some(10.0));
        assert_eq!(w.with(Lever::NoIdle), Some(9.0));
        assert_eq!(w.saving(Lever::NoIdle), Some(3.0));
        // It succeeded: checkpoints would have saved nothing.
        assert_eq!(w.saving(Lever::Checkpoint), Some(0.0));
        // What the agent exports: the saving of every known lever, in order.
        let savings: Vec<(Lever, f64)> = w.savings().collect();
        assert_eq!(savings.len(), 6);
        assert_eq!(savings[0].0, Lever::Spot);
        assert!((savings[0].1 - 3.2).abs() < 1e-9, "{savings:?}");
        assert_eq!(savings[3], (Lever::Bf16, 2.0));
    }

    /// A MIG instance's GPU time costs its slices' share of its GPU's rate, at every market:
    /// an hour of a 1g slice of an H100 (1/7 of 4/h on demand) is 1/7 of the spot rate on spot,
    /// not a whole H100's.
    #[test]
    fn a_mig_instance_is_priced_at_its_share_on_every_market() {
        let (mut j, models) = job();
        let slice = Usage {
            gpu_seconds: 3600.0,
            cost_gpu_time: 4.0 / 7.0,
            cost_energy: 0.0,
            cost_overhead: 0.0,
            ..Usage::default()
        };
        j.usage = slice;
        j.per_gpu = BTreeMap::from([("GPU-a".to_string(), slice)]);
        let p = pricing("spot_per_hour = 2.0\nreserved_per_hour = 3.0\n");
        let w = what_if(&j, &models, &p, &WhatIfOptions::default());
        assert!(
            (w.with(Lever::Spot).unwrap() - 2.0 / 7.0 * 1.1).abs() < 1e-9,
            "{w:?}"
        );
        assert!(
            (w.with(Lever::Reserved).unwrap() - 3.0 / 7.0).abs() < 1e-9,
            "{w:?}"
        );
    }

    /// A failed run loses what it cost since its last checkpoint (less its idle and FP32 parts,
    /// counted by their own levers); all of it without one; an unknown end is unknown.
    #[test]
    fn the_checkpoint_lever_is_the_work_a_failure_lost() {
        let (mut j, models) = job();
        let p = pricing("");
        j.outcome = Outcome::Failed;
        let w = what_if(&j, &models, &p, &WhatIfOptions::default());
        // 12 in all, 3 of it idle and 2 FP32 saving: 7 lost.
        assert_eq!(w.saving(Lever::Checkpoint), Some(7.0));
        j.progress = Some(Progress {
            checkpoint: Some(Checkpoint {
                at: 3600.0,
                cost: 6.0,
                idle_cost: 1.0,
                fp32_saving: 1.0,
            }),
            ..Progress::default()
        });
        j.outcome = Outcome::Preempted;
        let w = what_if(&j, &models, &p, &WhatIfOptions::default());
        // After the checkpoint: 6 more, of it 2 idle and 1 FP32: 3 lost.
        assert_eq!(w.saving(Lever::Checkpoint), Some(3.0));
        j.outcome = Outcome::Unknown;
        let w = what_if(&j, &models, &p, &WhatIfOptions::default());
        assert_eq!(w.with(Lever::Checkpoint), None);
    }

    /// Without a spot or reserved rate, or without pipe data, the lever is unknown, never the
    /// actual cost; an unknown GPU makes the rates unknown.
    #[test]
    fn unknown_inputs_are_unknown() {
        let (mut j, models) = job();
        let p = pricing("");
        let w = what_if(&j, &models, &p, &WhatIfOptions::default());
        assert_eq!((w.with(Lever::Spot), w.with(Lever::Reserved)), (None, None));
        j.usage.flop = 0.0;
        j.usage.fp32_seconds = 0.0;
        j.usage.fp32_saving = 0.0;
        let w = what_if(&j, &models, &p, &WhatIfOptions::default());
        assert_eq!(w.with(Lever::Bf16), None);
        // Only the known levers have a saving, in order.
        let known: Vec<Lever> = w.savings().map(|(l, _)| l).collect();
        assert_eq!(known, [Lever::OffPeak, Lever::NoIdle, Lever::Checkpoint]);
        // Measured elsewhere (the agents of a fleet report): known, and saving nothing.
        let w = what_if_measured(&j, true, &models, &p, &WhatIfOptions::default());
        assert_eq!(w.saving(Lever::Bf16), Some(0.0));
        let p = pricing("spot_per_hour = 2.0\n");
        let w = what_if(&j, &BTreeMap::new(), &p, &WhatIfOptions::default());
        assert_eq!(w.with(Lever::Spot), None);
        // A run longer than the night does not fit in it.
        j.ended_at = Some(9.0 * 3600.0);
        assert!(!what_if(&j, &models, &p, &WhatIfOptions::default()).off_peak_fits);
        // Sums: unknown when any part is.
        let a = WhatIf {
            actual: 1.0,
            levers: [Some(1.0), None, Some(0.5), Some(1.0), Some(1.0), Some(1.0)],
            off_peak_fits: true,
        };
        let s = WhatIf::sum([&a, &a]);
        assert_eq!(s.actual, 2.0);
        assert_eq!(
            s.levers,
            [Some(2.0), None, Some(1.0), Some(2.0), Some(2.0), Some(2.0)]
        );
    }
}
