//! The figures of a job or a set of jobs: its usage, its wasted cost, and what follows from them.

use crate::jobs::{JobRecord, Outcome, Usage};

const SECONDS_PER_HOUR: f64 = 3600.0;
const JOULES_PER_KWH: f64 = 3.6e6;
const GRAMS_PER_KG: f64 = 1000.0;

/// What a job, or a set of jobs, used and cost; the derived figures are methods so that they
/// always agree with the sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub usage: Usage,
    /// [`JobRecord::wasted_cost`], summed.
    pub wasted_cost: f64,
}

impl Figures {
    pub fn of(job: &JobRecord) -> Self {
        Figures {
            usage: job.usage,
            wasted_cost: job.wasted_cost(),
        }
    }

    pub fn add(&mut self, o: &Figures) {
        self.usage.add(&o.usage);
        self.wasted_cost += o.wasted_cost;
    }

    pub fn gpu_hours(&self) -> f64 {
        self.usage.gpu_seconds / SECONDS_PER_HOUR
    }

    pub fn kwh(&self) -> f64 {
        self.usage.energy_j / JOULES_PER_KWH
    }

    pub fn co2_kg(&self) -> f64 {
        self.usage.carbon_g / GRAMS_PER_KG
    }

    /// GPU time, energy and overhead.
    pub fn cost_total(&self) -> f64 {
        self.usage.total_cost()
    }

    /// Idle GPU-seconds / GPU-seconds; 0 without GPU-seconds.
    pub fn idle_share(&self) -> f64 {
        let u = &self.usage;
        if u.gpu_seconds > 0.0 {
            u.idle_gpu_seconds / u.gpu_seconds
        } else {
            0.0
        }
    }
}

/// The sums over a set of jobs: a group, or the whole report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub jobs: usize,
    /// Runs that failed (their cost since their last checkpoint is in `wasted_cost`).
    pub failed: usize,
    pub figures: Figures,
}

impl Totals {
    pub fn over<'a>(jobs: impl IntoIterator<Item = &'a JobRecord>) -> Self {
        let mut t = Totals::default();
        for j in jobs {
            t.add(j);
        }
        t
    }

    pub fn add(&mut self, j: &JobRecord) {
        self.jobs += 1;
        self.failed += usize::from(j.outcome == Outcome::Failed);
        self.figures.add(&Figures::of(j));
    }
}
