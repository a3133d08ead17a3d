//! What GPU time costs: the per-interval accounting of PRODUCT.md, owner weights for a shared
//! GPU, and the rent-or-buy break-even estimate.
//!
//! Pure functions over plain data: no I/O, no clock. Per GPU and sample interval `[t0, t0+dt)`
//! with energy `dE` (J), for each owner with weight `w` (weights sum to 1):
//!
//! ```text
//! gpu_time cost  += w x hourly_price(model) x dt / 3600
//! energy cost    += w x dE / 3.6e6 x PUE x tariff(t0)
//! carbon grams   += w x dE / 3.6e6 x PUE x carbon_intensity
//! overhead       += w x overhead_per_gpu_hour x dt / 3600
//! gpu seconds    += w x dt            energy_j += w x dE
//! idle seconds   += w x dt            when utilization < idle_threshold (unknown: not idle)
//! idle cost      += the owner's whole cost of the interval, when idle
//! ```
//!
//! A MIG GPU instance is a GPU of its own whose `hourly_price` and per-GPU-hour overhead are
//! its share `s = slices / parent_slices` of the parent's ([`Interval::slice_share`]); its
//! `dE` is already its share of the parent's energy (the sampler reads it so), and `utilization`
//! is what MIG reports of it (`mig_activity`), so idle follows the instance too.

use crate::jobs::Usage;

use super::pricing::{Market, Pricing, PricingError, HOURS_PER_YEAR};

pub const SECONDS_PER_HOUR: f64 = 3600.0;
pub const JOULES_PER_KWH: f64 = 3.6e6;
/// A month, for monthly figures: 30.44 days.
pub const DAYS_PER_MONTH: f64 = 30.44;
pub const HOURS_PER_MONTH: f64 = DAYS_PER_MONTH * 24.0;

/// One GPU's sample interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval<'a> {
    /// Start, unix seconds: picks the tariff window.
    pub t0: f64,
    /// Length in seconds.
    pub dt: f64,
    /// Energy the GPU used in the interval (J).
    pub energy_j: f64,
    /// GPU utilization 0..1; `None` when unknown (then never idle).
    pub utilization: Option<f64>,
    /// NVML model name: picks the hourly price.
    pub model: &'a str,
    /// FLOPs the GPU executed in the interval, estimated from its pipe activity (0 unknown).
    pub flop: f64,
    /// `Some(bf16/fp32 speedup)` when the GPU was FP32-bound (FP32 pipe busy, tensor cores idle)
    /// and its tensor cores would have been that many times faster.
    pub fp32_bound_speedup: Option<f64>,
    /// The share of a physical GPU the unit is: 1 for a whole GPU, `slices / parent_slices`
    /// for a MIG instance (`GpuStatic::share`). Scales the hourly price and the overhead.
    pub slice_share: f64,
}

/// A job holding the GPU during the interval, with its share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Owner<'a> {
    /// Job id.
    pub key: &'a str,
    pub weight: f64,
}

/// What one GPU interval adds: per owner (job id -> Usage) and for the GPU as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalCost {
    /// One entry per distinct owner with a positive weight, in the order first given.
    pub per_owner: Vec<(String, Usage)>,
    /// The whole GPU: the sum over owners, or the full interval when nobody holds it.
    pub gpu: Usage,
    /// `dt` when nobody held the GPU, else 0.
    pub unallocated_seconds: f64,
}

/// Costs one interval of one GPU and splits it among `owners`.
///
/// Weights are normalised to sum to 1; non-positive and NaN weights are ignored and an owner
/// named twice gets the sum of its weights. With no (valid) owner the whole interval goes to the
/// GPU total and `unallocated_seconds`. A non-finite or non-positive `dt` adds nothing; negative
/// or non-finite energy counts as 0 (totals never go backwards).
pub fn cost_interval(pricing: &Pricing, iv: &Interval, owners: &[Owner]) -> IntervalCost {
    if !(iv.dt.is_finite() && iv.dt > 0.0) {
        return IntervalCost::default();
    }
    let whole = whole_interval(pricing, iv);
    let shares = normalise(owners);
    if shares.is_empty() {
        return IntervalCost {
            per_owner: Vec::new(),
            gpu: whole,
            unallocated_seconds: iv.dt,
        };
    }
    let mut gpu = Usage::default();
    let per_owner = shares
        .into_iter()
        .map(|(key, w)| {
            let u = scaled(&whole, w);
            gpu.add(&u);
            (key.to_string(), u)
        })
        .collect();
    IntervalCost {
        per_owner,
        gpu,
        unallocated_seconds: 0.0,
    }
}

/// The interval's usage for an owner of weight 1.
fn whole_interval(p: &Pricing, iv: &Interval) -> Usage {
    let dt = iv.dt;
    let de = if iv.energy_j.is_finite() && iv.energy_j > 0.0 {
        iv.energy_j
    } else {
        0.0
    };
    let facility_kwh = de / JOULES_PER_KWH * p.pue;
    let hours = dt / SECONDS_PER_HOUR;
    let share = if iv.slice_share.is_finite() {
        iv.slice_share.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let idle = matches!(iv.utilization, Some(u) if u < p.idle_threshold);
    let mut u = Usage {
        gpu_seconds: dt,
        energy_j: de,
        carbon_g: facility_kwh * p.carbon_intensity_g_per_kwh,
        cost_gpu_time: p.hourly_price(iv.model) * share * hours,
        cost_energy: facility_kwh * p.tariff_at(iv.t0),
        cost_overhead: p.overhead_per_gpu_hour * share * hours,
        flop: iv.flop.max(0.0),
        ..Usage::default()
    };
    if idle {
        u.idle_gpu_seconds = dt;
        u.idle_cost = u.total_cost();
    }
    // FP32 work on a GPU whose tensor cores would do it `speedup` times faster: what the
    // interval would have cost at that speed is the saving left on the table.
    if let Some(speedup) = iv.fp32_bound_speedup.filter(|s| s.is_finite() && *s > 1.0) {
        u.fp32_seconds = dt;
        u.fp32_saving = u.total_cost() * (1.0 - 1.0 / speedup);
    }
    u
}

fn scaled(u: &Usage, w: f64) -> Usage {
    Usage::from_array(u.to_array().map(|v| v * w))
}

/// Valid owners merged by key, with weights summing to 1 (empty when none is valid).
fn normalise<'a>(owners: &[Owner<'a>]) -> Vec<(&'a str, f64)> {
    let mut out: Vec<(&str, f64)> = Vec::new();
    for o in owners {
        if !(o.weight.is_finite() && o.weight > 0.0) {
            continue;
        }
        match out.iter_mut().find(|(k, _)| *k == o.key) {
            Some((_, w)) => *w += o.weight,
            None => out.push((o.key, o.weight)),
        }
    }
    let sum: f64 = out.iter().map(|(_, w)| w).sum();
    if !(sum.is_finite() && sum > 0.0) {
        return Vec::new();
    }
    for (_, w) in &mut out {
        *w /= sum;
    }
    out
}

/// Weights of the jobs sharing one GPU (PRODUCT.md): by SM utilization share when every job
/// has one and they sum to more than 0, else by GPU memory when every job has it and it sums
/// to more than 0, else equal. One job gets 1. Each entry is (job id, SM utilization share
/// summed over the job's processes, GPU memory bytes summed over them); the scale of the shares
/// does not matter. Negative or non-finite SM shares count as unknown.
pub fn owner_weights(jobs: &[(String, Option<f64>, Option<u64>)]) -> Vec<(String, f64)> {
    if jobs.len() == 1 {
        return vec![(jobs[0].0.clone(), 1.0)];
    }
    let sm: Option<Vec<f64>> = jobs
        .iter()
        .map(|j| j.1.filter(|s| s.is_finite() && *s >= 0.0))
        .collect();
    let mem: Option<Vec<f64>> = jobs.iter().map(|j| j.2.map(|b| b as f64)).collect();
    let by = |v: Vec<f64>| -> Option<Vec<(String, f64)>> {
        let sum: f64 = v.iter().sum();
        (sum > 0.0 && sum.is_finite()).then(|| {
            jobs.iter()
                .zip(v)
                .map(|(j, s)| (j.0.clone(), s / sum))
                .collect()
        })
    };
    if let Some(w) = sm.and_then(by) {
        return w;
    }
    if let Some(w) = mem.and_then(by) {
        return w;
    }
    let n = jobs.len() as f64;
    jobs.iter().map(|j| (j.0.clone(), 1.0 / n)).collect()
}

/// Renting in the cloud versus buying `gpu_count` GPUs, per month (30.44 days), for the
/// observed demand. Money is in the pricing's currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakeven {
    pub gpu_count: u32,
    /// The market compared with: the configured one, or on_demand when that is on_prem.
    pub cloud_market: Market,
    pub cloud_rate_per_hour: f64,
    /// Observed GPU-hours scaled to a month.
    pub gpu_hours_per_month: f64,
    /// On-demand and spot: those GPU-hours at the cloud rate. Reserved: `gpu_count` GPUs
    /// reserved around the clock (a reservation is paid whether used or not).
    pub cloud_per_month: f64,
    /// The owned GPUs' energy for those GPU-hours (at `power_w`, PUE, `tariff_per_kwh`).
    pub own_energy_per_month: f64,
    /// Opex of `gpu_count` GPUs plus `own_energy_per_month`.
    pub own_running_per_month: f64,
    /// `gpu_count` x purchase price.
    pub purchase_total: f64,
    /// `cloud_per_month - own_running_per_month`.
    pub monthly_saving: f64,
    /// `purchase_total / monthly_saving`; `None` when owning never pays off (no saving).
    pub months_to_breakeven: Option<f64>,
    /// The hardware's lifetime in months: a break-even beyond it never pays off in practice.
    pub lifetime_months: f64,
    /// Observed GPU-hours over what `gpu_count` GPUs offer in the observed days; above 1 means
    /// that many GPUs could not have carried the load.
    pub utilisation_of_owned_gpus: f64,
    /// The power assumed for owned GPUs: the entry's `power_w`, else the observed mean.
    pub power_w: f64,
    /// The time-weighted mean tariff over a week.
    pub tariff_per_kwh: f64,
}

/// Compares renting with buying `gpu_count` GPUs of `model`, for a demand of
/// `observed_gpu_hours` over `observed_days` drawing `mean_power_w` on average (used when the
/// entry has no `power_w`).
///
/// Needs the `[[pricing.gpu]]` entry for `model` to have both a cloud rate (the configured
/// market's, or `on_demand_per_hour` when the market is on_prem) and `purchase_price` with
/// `lifetime_years`; the error names the missing key. Errors about the arguments name the
/// argument (`gpu_count`, `observed_days`, ...).
pub fn breakeven(
    pricing: &Pricing,
    model: &str,
    gpu_count: u32,
    observed_gpu_hours: f64,
    observed_days: f64,
    mean_power_w: f64,
) -> Result<Breakeven, PricingError> {
    let arg = |key: &str, problem: &str| PricingError {
        key: key.into(),
        problem: problem.into(),
    };
    if gpu_count == 0 {
        return Err(arg("gpu_count", "must be at least 1"));
    }
    if !(observed_days.is_finite() && observed_days > 0.0) {
        return Err(arg("observed_days", "must be a number of days above 0"));
    }
    if !(observed_gpu_hours.is_finite() && observed_gpu_hours >= 0.0) {
        return Err(arg(
            "observed_gpu_hours",
            "must be a number of hours, 0 or more",
        ));
    }
    let Some(i) = pricing.matched_rule(model) else {
        return Err(PricingError {
            key: "pricing.gpu".into(),
            problem: format!(
                "no entry matches GPU model {model:?}; the break-even estimate needs one with \
                 on_demand_per_hour, purchase_price and lifetime_years"
            ),
        });
    };
    let g = &pricing.gpus[i];
    let key = |k: &str| format!("pricing.gpu[{i}].{k}");
    let cloud_market = match pricing.market {
        Market::OnPrem => Market::OnDemand,
        m => m,
    };
    let need = |k: &str| PricingError {
        key: key(k),
        problem: format!(
            "is needed for the break-even estimate of {model:?} (entry match = {:?})",
            g.pattern
        ),
    };
    let rate = g
        .cloud_rate(cloud_market)
        .ok_or_else(|| need(cloud_market.rate_key()))?;
    let purchase = g.purchase_price.ok_or_else(|| need("purchase_price"))?;
    let years = g.lifetime_years.ok_or_else(|| need("lifetime_years"))?;
    let power_w = match g.power_w {
        Some(p) => p,
        None if mean_power_w.is_finite() && mean_power_w >= 0.0 => mean_power_w,
        None => {
            return Err(arg(
                "mean_power_w",
                &format!(
                    "is not a power in watts; or set {} for this GPU",
                    key("power_w")
                ),
            ))
        }
    };

    let n = f64::from(gpu_count);
    let gpu_hours_per_month = observed_gpu_hours / observed_days * DAYS_PER_MONTH;
    let cloud_per_month = match cloud_market {
        Market::Reserved => n * HOURS_PER_MONTH * rate,
        _ => gpu_hours_per_month * rate,
    };
    let tariff = pricing.mean_tariff();
    let own_energy_per_month = gpu_hours_per_month * power_w / 1000.0 * pricing.pue * tariff;
    let opex_per_month = n * g.opex_per_year / HOURS_PER_YEAR * HOURS_PER_MONTH;
    let own_running_per_month = opex_per_month + own_energy_per_month;
    let purchase_total = n * purchase;
    let monthly_saving = cloud_per_month - own_running_per_month;
    Ok(Breakeven {
        gpu_count,
        cloud_market,
        cloud_rate_per_hour: rate,
        gpu_hours_per_month,
        cloud_per_month,
        own_energy_per_month,
        own_running_per_month,
        purchase_total,
        monthly_saving,
        months_to_breakeven: (monthly_saving > 0.0).then(|| purchase_total / monthly_saving),
        lifetime_months: years * HOURS_PER_YEAR / HOURS_PER_MONTH,
        utilisation_of_owned_gpus: observed_gpu_hours / (n * observed_days * 24.0),
        power_w,
        tariff_per_kwh: tariff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::pricing::from_toml_value;

    fn pricing(text: &str) -> Pricing {
        let doc: toml::Table = toml::from_str(text).expect("test TOML parses");
        from_toml_value(&doc["pricing"]).expect("test pricing is valid")
    }

    /// H100 at 4.00/h, PUE 1.25, 0.20/kWh by day and 0.08/kWh from 22:00 to 06:00 UTC,
    /// 380 g/kWh, 0.10 overhead per GPU-hour, 1.00/h for other GPUs.
    fn base() -> Pricing {
        pricing(
            r#"
[pricing]
pue = 1.25
carbon_intensity_g_per_kwh = 380
overhead_per_gpu_hour = 0.10
idle_threshold = 0.05
default_gpu_per_hour = 1.00
[pricing.energy]
price_per_kwh = 0.20
[[pricing.energy.window]]
start = "22:00"
end = "06:00"
price_per_kwh = 0.08
[[pricing.gpu]]
match = "H100"
on_demand_per_hour = 4.00
"#,
        )
    }

    /// Monday 2024-01-01 12:00 UTC.
    const NOON: f64 = 1_704_110_400.0;
    const H100: &str = "NVIDIA H100 80GB HBM3";

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn assert_usage(got: &Usage, want: &Usage, what: &str) {
        let pairs = [
            ("gpu_seconds", got.gpu_seconds, want.gpu_seconds),
            ("energy_j", got.energy_j, want.energy_j),
            ("carbon_g", got.carbon_g, want.carbon_g),
            ("cost_gpu_time", got.cost_gpu_time, want.cost_gpu_time),
            ("cost_energy", got.cost_energy, want.cost_energy),
            ("cost_overhead", got.cost_overhead, want.cost_overhead),
            (
                "idle_gpu_seconds",
                got.idle_gpu_seconds,
                want.idle_gpu_seconds,
            ),
            ("idle_cost", got.idle_cost, want.idle_cost),
        ];
        for (field, g, w) in pairs {
            assert!(close(g, w), "{what}: {field} = {g}, want {w}");
        }
    }

    /// Usage with the given sums; idle means all of it was idle.
    #[allow(clippy::too_many_arguments)]
    fn usage(s: f64, j: f64, gpu: f64, energy: f64, carbon: f64, over: f64, idle: bool) -> Usage {
        Usage {
            gpu_seconds: s,
            energy_j: j,
            carbon_g: carbon,
            cost_gpu_time: gpu,
            cost_energy: energy,
            cost_overhead: over,
            idle_gpu_seconds: if idle { s } else { 0.0 },
            idle_cost: if idle { gpu + energy + over } else { 0.0 },
            ..Usage::default()
        }
    }

    /// The worked hour: one H100 for 1 h using 2.52e6 J (700 W) at noon:
    /// GPU time 4.00 x 1 h = 4.00; 2.52e6 J = 0.7 kWh x PUE 1.25 = 0.875 kWh at the wall;
    /// energy 0.875 x 0.20 = 0.175; carbon 0.875 x 380 = 332.5 g; overhead 0.10 x 1 h = 0.10.
    fn hour(w: f64, idle: bool) -> Usage {
        usage(
            3600.0 * w,
            2.52e6 * w,
            4.00 * w,
            0.175 * w,
            332.5 * w,
            0.10 * w,
            idle,
        )
    }

    struct Case {
        name: &'static str,
        iv: Interval<'static>,
        owners: Vec<Owner<'static>>,
        per_owner: Vec<(&'static str, Usage)>,
        gpu: Usage,
        unallocated: f64,
    }

    fn iv() -> Interval<'static> {
        Interval {
            t0: NOON,
            dt: 3600.0,
            energy_j: 2.52e6,
            utilization: Some(0.9),
            model: H100,
            flop: 0.0,
            fp32_bound_speedup: None,
            slice_share: 1.0,
        }
    }

    fn own(key: &'static str, weight: f64) -> Owner<'static> {
        Owner { key, weight }
    }

    #[test]
    fn cost_interval_table() {
        let cases = vec![
            Case {
                name: "one job takes the whole worked hour (total 4.275)",
                iv: iv(),
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", hour(1.0, false))],
                gpu: hour(1.0, false),
                unallocated: 0.0,
            },
            Case {
                // a: 3.00 + 0.13125 + 0.075, 249.375 g; b: 1.00 + 0.04375 + 0.025, 83.125 g.
                name: "weights 3:1 are normalised to 0.75/0.25",
                iv: iv(),
                owners: vec![own("a", 3.0), own("b", 1.0)],
                per_owner: vec![
                    (
                        "a",
                        usage(2700.0, 1.89e6, 3.00, 0.13125, 249.375, 0.075, false),
                    ),
                    (
                        "b",
                        usage(900.0, 0.63e6, 1.00, 0.04375, 83.125, 0.025, false),
                    ),
                ],
                gpu: hour(1.0, false),
                unallocated: 0.0,
            },
            Case {
                name: "zero, negative, NaN and infinite weights are ignored",
                iv: iv(),
                owners: vec![
                    own("z", 0.0),
                    own("a", 0.5),
                    own("n", f64::NAN),
                    own("m", -1.0),
                    own("i", f64::INFINITY),
                ],
                per_owner: vec![("a", hour(1.0, false))],
                gpu: hour(1.0, false),
                unallocated: 0.0,
            },
            Case {
                name: "an owner named twice gets the sum of its weights",
                iv: iv(),
                owners: vec![own("a", 0.25), own("b", 0.5), own("a", 0.25)],
                per_owner: vec![("a", hour(0.5, false)), ("b", hour(0.5, false))],
                gpu: hour(1.0, false),
                unallocated: 0.0,
            },
            Case {
                name: "nobody holds it: unallocated, still costed on the GPU",
                iv: iv(),
                owners: vec![],
                per_owner: vec![],
                gpu: hour(1.0, false),
                unallocated: 3600.0,
            },
            Case {
                name: "only invalid weights: unallocated",
                iv: iv(),
                owners: vec![own("a", 0.0), own("b", f64::NAN)],
                per_owner: vec![],
                gpu: hour(1.0, false),
                unallocated: 3600.0,
            },
            Case {
                // Each of two owners: 1800 idle s and half of 4.275 = 2.1375 idle cost.
                name: "idle below the threshold: idle seconds and the whole cost",
                iv: Interval {
                    utilization: Some(0.01),
                    ..iv()
                },
                owners: vec![own("a", 0.5), own("b", 0.5)],
                per_owner: vec![("a", hour(0.5, true)), ("b", hour(0.5, true))],
                gpu: hour(1.0, true),
                unallocated: 0.0,
            },
            Case {
                name: "idle and unallocated: the GPU's idle time",
                iv: Interval {
                    utilization: Some(0.0),
                    ..iv()
                },
                owners: vec![],
                per_owner: vec![],
                gpu: hour(1.0, true),
                unallocated: 3600.0,
            },
            Case {
                name: "utilization exactly at the threshold is not idle",
                iv: Interval {
                    utilization: Some(0.05),
                    ..iv()
                },
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", hour(1.0, false))],
                gpu: hour(1.0, false),
                unallocated: 0.0,
            },
            Case {
                name: "unknown utilization is not idle",
                iv: Interval {
                    utilization: None,
                    ..iv()
                },
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", hour(1.0, false))],
                gpu: hour(1.0, false),
                unallocated: 0.0,
            },
            Case {
                // 23:00 UTC is off-peak: 0.875 kWh x 0.08 = 0.07.
                name: "the tariff window at t0 prices the energy",
                iv: Interval {
                    t0: NOON + 11.0 * 3600.0,
                    ..iv()
                },
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", usage(3600.0, 2.52e6, 4.00, 0.07, 332.5, 0.10, false))],
                gpu: usage(3600.0, 2.52e6, 4.00, 0.07, 332.5, 0.10, false),
                unallocated: 0.0,
            },
            Case {
                name: "a model matching no entry costs default_gpu_per_hour (1.00)",
                iv: Interval {
                    model: "Tesla T4",
                    ..iv()
                },
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", usage(3600.0, 2.52e6, 1.00, 0.175, 332.5, 0.10, false))],
                gpu: usage(3600.0, 2.52e6, 1.00, 0.175, 332.5, 0.10, false),
                unallocated: 0.0,
            },
            Case {
                // 30 s at 700 W = 21000 J = 0.0058333 kWh x 1.25 = 0.0072917 kWh at the wall:
                // energy 0.0014583, carbon 2.7708 g; GPU time 4 x 30/3600 = 0.033333;
                // overhead 0.10 x 30/3600 = 0.00083333.
                name: "a 30-second sample",
                iv: Interval {
                    dt: 30.0,
                    energy_j: 21_000.0,
                    ..iv()
                },
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", thirty_s())],
                gpu: thirty_s(),
                unallocated: 0.0,
            },
            Case {
                // Issue 15: a 3g.40gb instance of the worked H100, with its 3/7 of the board's
                // 2.52e6 J: GPU time 4.00 x 3/7, overhead 0.10 x 3/7, energy and carbon of its
                // 1.08e6 J; an hour of instance time.
                name: "a MIG instance pays its slices of the GPU's price",
                iv: Interval {
                    energy_j: 2.52e6 * 3.0 / 7.0,
                    slice_share: 3.0 / 7.0,
                    ..iv()
                },
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", mig_3_of_7(false))],
                gpu: mig_3_of_7(false),
                unallocated: 0.0,
            },
            Case {
                name: "an idle MIG instance nobody holds: its slices, idle and unallocated",
                iv: Interval {
                    energy_j: 2.52e6 * 3.0 / 7.0,
                    slice_share: 3.0 / 7.0,
                    utilization: Some(0.0),
                    ..iv()
                },
                owners: vec![],
                per_owner: vec![],
                gpu: mig_3_of_7(true),
                unallocated: 3600.0,
            },
            Case {
                name: "negative energy counts as 0",
                iv: Interval {
                    energy_j: -5.0,
                    ..iv()
                },
                owners: vec![own("a", 1.0)],
                per_owner: vec![("a", usage(3600.0, 0.0, 4.00, 0.0, 0.0, 0.10, false))],
                gpu: usage(3600.0, 0.0, 4.00, 0.0, 0.0, 0.10, false),
                unallocated: 0.0,
            },
        ];
        let p = base();
        for c in &cases {
            let got = cost_interval(&p, &c.iv, &c.owners);
            let keys: Vec<&str> = got.per_owner.iter().map(|(k, _)| k.as_str()).collect();
            let want_keys: Vec<&str> = c.per_owner.iter().map(|(k, _)| *k).collect();
            assert_eq!(keys, want_keys, "{}", c.name);
            for ((k, g), (_, w)) in got.per_owner.iter().zip(&c.per_owner) {
                assert_usage(g, w, &format!("{}: owner {k}", c.name));
            }
            assert_usage(&got.gpu, &c.gpu, &format!("{}: gpu", c.name));
            assert_eq!(got.unallocated_seconds, c.unallocated, "{}", c.name);
            // The GPU total is the sum over its owners.
            if !got.per_owner.is_empty() {
                let mut sum = Usage::default();
                got.per_owner.iter().for_each(|(_, u)| sum.add(u));
                assert_usage(&sum, &got.gpu, &format!("{}: sum", c.name));
            }
        }
    }

    /// The worked hour on a 3-of-7-slices MIG instance: every money and energy figure 3/7 of
    /// the whole GPU's, its time an hour.
    fn mig_3_of_7(idle: bool) -> Usage {
        let s = 3.0 / 7.0;
        usage(
            3600.0,
            2.52e6 * s,
            4.00 * s,
            0.175 * s,
            332.5 * s,
            0.10 * s,
            idle,
        )
    }

    /// 30 s at 700 W (the a-30-second-sample case): 0.0072917 kWh at the wall.
    fn thirty_s() -> Usage {
        let wall_kwh = 21_000.0 / 3.6e6 * 1.25;
        usage(
            30.0,
            21_000.0,
            4.0 * 30.0 / 3600.0,
            wall_kwh * 0.20,
            wall_kwh * 380.0,
            0.10 * 30.0 / 3600.0,
            false,
        )
    }

    #[test]
    fn worked_hour_totals() {
        let got = cost_interval(&base(), &iv(), &[own("job-1", 1.0)]);
        let u = &got.per_owner[0].1;
        assert!(close(u.cost_gpu_time, 4.00));
        assert!(close(u.cost_energy, 0.175));
        assert!(close(u.carbon_g, 332.5));
        assert!(close(u.cost_overhead, 0.10));
        assert!(close(u.total_cost(), 4.275));
    }

    #[test]
    fn bad_intervals_add_nothing() {
        for dt in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let got = cost_interval(&base(), &Interval { dt, ..iv() }, &[own("a", 1.0)]);
            assert_eq!(got, IntervalCost::default(), "dt = {dt}");
        }
    }

    #[test]
    fn owner_weights_table() {
        type Job = (&'static str, Option<f64>, Option<u64>);
        type Weight = (&'static str, f64);
        // (case, jobs, expected weights)
        let cases: &[(&str, &[Job], &[Weight])] = &[
            ("nobody", &[], &[]),
            ("one job gets 1", &[("a", None, None)], &[("a", 1.0)]),
            (
                "one job gets 1 even at 0 SM",
                &[("a", Some(0.0), Some(0))],
                &[("a", 1.0)],
            ),
            (
                "by SM share (60 + 20 = 80: 0.75 / 0.25)",
                &[("a", Some(60.0), Some(1)), ("b", Some(20.0), Some(3))],
                &[("a", 0.75), ("b", 0.25)],
            ),
            (
                "SM share of 0 gets 0",
                &[("a", Some(50.0), Some(1)), ("b", Some(0.0), Some(1))],
                &[("a", 1.0), ("b", 0.0)],
            ),
            (
                "one SM share unknown: by memory (30 + 10 GB)",
                &[
                    ("a", Some(60.0), Some(30 << 30)),
                    ("b", None, Some(10 << 30)),
                ],
                &[("a", 0.75), ("b", 0.25)],
            ),
            (
                "SM shares all 0: by memory",
                &[
                    ("a", Some(0.0), Some(1 << 30)),
                    ("b", Some(0.0), Some(3 << 30)),
                ],
                &[("a", 0.25), ("b", 0.75)],
            ),
            (
                "negative SM share counts as unknown: by memory",
                &[("a", Some(-5.0), Some(1)), ("b", Some(10.0), Some(1))],
                &[("a", 0.5), ("b", 0.5)],
            ),
            (
                "memory unknown for one: equal",
                &[
                    ("a", None, Some(1 << 30)),
                    ("b", None, None),
                    ("c", None, Some(5)),
                ],
                &[("a", 1.0 / 3.0), ("b", 1.0 / 3.0), ("c", 1.0 / 3.0)],
            ),
            (
                "memory all 0: equal",
                &[("a", None, Some(0)), ("b", None, Some(0))],
                &[("a", 0.5), ("b", 0.5)],
            ),
        ];
        for (name, jobs, want) in cases {
            let jobs: Vec<(String, Option<f64>, Option<u64>)> = jobs
                .iter()
                .map(|(id, sm, mem)| (id.to_string(), *sm, *mem))
                .collect();
            let got = owner_weights(&jobs);
            assert_eq!(got.len(), want.len(), "{name}");
            for ((gk, gw), (wk, ww)) in got.iter().zip(*want) {
                assert_eq!(gk, wk, "{name}");
                assert!(close(*gw, *ww), "{name}: {gk} = {gw}, want {ww}");
            }
        }
    }

    /// 8 H100s: on demand 4.00/h, reserved 2.60/h, 30000 each over 4 years, 1500/year opex,
    /// 700 W; PUE 1.25 and a flat 0.20/kWh.
    fn owned(market: &str, extra: &str) -> Pricing {
        pricing(&format!(
            r#"
[pricing]
market = "{market}"
pue = 1.25
[pricing.energy]
price_per_kwh = 0.20
[[pricing.gpu]]
match = "H100"
on_demand_per_hour = 4.00
reserved_per_hour = 2.60
purchase_price = 30000
lifetime_years = 4
opex_per_year = 1500
{extra}
"#
        ))
    }

    #[test]
    fn breakeven_worked_example() {
        // Observed: 2400 GPU-hours in 15 days = 160 a day = 4870.4 a month (x 30.44).
        // Cloud: 4870.4 x 4.00 = 19481.60 a month.
        // Owned energy: 4870.4 h x 0.7 kW x 1.25 x 0.20 = 852.32 a month.
        // Owned opex: 8 x 1500 / 8760 h x 730.56 h = 1000.767 a month; running 1853.087.
        // Saving 19481.60 - 1853.087 = 17628.513 a month; purchase 8 x 30000 = 240000;
        // break-even 240000 / 17628.513 = 13.61 months; lifetime 4 x 8760 / 730.56 = 47.96.
        // Utilisation 2400 / (8 x 15 x 24 = 2880) = 0.8333.
        for market in ["on_demand", "on_prem"] {
            let p = owned(market, "power_w = 700");
            // The observed mean power (300 W) is ignored: the entry says 700 W.
            let b = breakeven(&p, H100, 8, 2400.0, 15.0, 300.0).unwrap();
            assert_eq!(b.cloud_market, Market::OnDemand, "{market}");
            assert_eq!(b.cloud_rate_per_hour, 4.00);
            assert_eq!(b.power_w, 700.0);
            assert_eq!(b.tariff_per_kwh, 0.20);
            assert!(close(b.gpu_hours_per_month, 4870.4));
            assert!(close(b.cloud_per_month, 19_481.6));
            assert!(close(b.own_energy_per_month, 852.32));
            assert!(close(
                b.own_running_per_month,
                852.32 + 8.0 * 1500.0 / 8760.0 * 730.56
            ));
            assert!((b.own_running_per_month - 1853.087).abs() < 1e-3);
            assert_eq!(b.purchase_total, 240_000.0);
            assert!((b.monthly_saving - 17_628.513).abs() < 1e-3);
            let m = b.months_to_breakeven.unwrap();
            assert!((m - 13.6143).abs() < 1e-4, "{m}");
            assert!((b.lifetime_months - 47.963).abs() < 1e-3);
            assert!(close(b.utilisation_of_owned_gpus, 2400.0 / 2880.0));
        }
    }

    #[test]
    fn breakeven_reserved_pays_around_the_clock_and_mean_power_fills_in() {
        // Reserved: 8 x 730.56 h x 2.60 = 15195.648 a month, used or not.
        // No power_w: the observed 700 W is used, so the running cost is as in the worked
        // example (1853.087); saving 13342.561; 240000 / 13342.561 = 17.99 months.
        let b = breakeven(&owned("reserved", ""), H100, 8, 2400.0, 15.0, 700.0).unwrap();
        assert_eq!(b.cloud_market, Market::Reserved);
        assert!(close(b.cloud_per_month, 15_195.648));
        assert_eq!(b.power_w, 700.0);
        assert!((b.months_to_breakeven.unwrap() - 17.9876).abs() < 1e-4);
    }

    #[test]
    fn breakeven_never_when_renting_is_cheaper() {
        // 10 GPU-hours in 30 days: 10.147 a month x 4.00 = 40.59 in the cloud, while opex
        // alone is 8 x 125.1 = 1000.77 a month.
        let b = breakeven(&owned("on_demand", ""), H100, 8, 10.0, 30.0, 500.0).unwrap();
        assert!(b.monthly_saving < 0.0);
        assert_eq!(b.months_to_breakeven, None);
    }

    #[test]
    fn breakeven_errors_name_the_missing_key() {
        let no_purchase = pricing(
            "[pricing]\n[[pricing.gpu]]\nmatch = \"A100\"\non_demand_per_hour = 2\n\
             [[pricing.gpu]]\nmatch = \"H100\"\non_demand_per_hour = 4\n",
        );
        let no_cloud = pricing(
            "[pricing]\nmarket = \"on_prem\"\n[[pricing.gpu]]\nmatch = \"H100\"\n\
             purchase_price = 30000\nlifetime_years = 4\n",
        );
        // (case, pricing, model, gpu_count, gpu-hours, days, mean power, key, problem)
        type Case<'a> = (
            &'a str,
            &'a Pricing,
            &'a str,
            u32,
            f64,
            f64,
            f64,
            &'a str,
            &'a str,
        );
        let ok = owned("on_demand", "");
        let cases: &[Case] = &[
            (
                "no entry",
                &ok,
                "Tesla T4",
                8,
                1.0,
                1.0,
                1.0,
                "pricing.gpu",
                "no entry matches",
            ),
            (
                "no purchase price",
                &no_purchase,
                H100,
                8,
                1.0,
                1.0,
                1.0,
                "pricing.gpu[1].purchase_price",
                "break-even",
            ),
            (
                "no cloud rate when on_prem",
                &no_cloud,
                H100,
                8,
                1.0,
                1.0,
                1.0,
                "pricing.gpu[0].on_demand_per_hour",
                "break-even",
            ),
            (
                "no GPUs",
                &ok,
                H100,
                0,
                1.0,
                1.0,
                1.0,
                "gpu_count",
                "at least 1",
            ),
            (
                "no days",
                &ok,
                H100,
                8,
                1.0,
                0.0,
                1.0,
                "observed_days",
                "above 0",
            ),
            (
                "NaN hours",
                &ok,
                H100,
                8,
                f64::NAN,
                1.0,
                1.0,
                "observed_gpu_hours",
                "hours",
            ),
            (
                "no power anywhere",
                &ok,
                H100,
                8,
                1.0,
                1.0,
                f64::NAN,
                "mean_power_w",
                "pricing.gpu[0].power_w",
            ),
        ];
        for (name, p, model, n, hours, days, power, key, problem) in cases {
            let e = breakeven(p, model, *n, *hours, *days, *power).unwrap_err();
            assert_eq!(e.key, *key, "{name}: {e}");
            assert!(e.problem.contains(problem), "{name}: {e}");
        }
    }
}
