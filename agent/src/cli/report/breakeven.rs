//! `gpucost report --breakeven`: what renting the node's GPUs costs against buying them, at the
//! use the ledger observed, per GPU model and in total, over a stated window.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::json;

use gpucost_core::account::cost::{breakeven, Breakeven};
use gpucost_core::account::pricing::Pricing;
use gpucost_core::jobs::JobRecord;

use super::format_utc;

/// The shortest window a break-even extrapolates from: a month guessed from minutes says nothing.
const MIN_WINDOW_S: f64 = 3600.0;

/// The observed window the estimate extrapolates to a month from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Window {
    pub start: f64,
    pub end: f64,
    /// `end - start` in days, at least [`MIN_WINDOW_S`].
    pub days: f64,
    /// The start came from `--since` (else from the first job in the ledger).
    pub chosen: bool,
}

/// One GPU model's break-even, or why there is none (its price entry lacks a key).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ModelBreakeven {
    pub model: String,
    pub result: Result<Breakeven, String>,
}

/// The models that have a break-even, summed: one purchase against one rent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Total {
    pub gpu_count: u32,
    pub cloud_per_month: f64,
    pub own_running_per_month: f64,
    pub purchase_total: f64,
    pub monthly_saving: f64,
    pub months_to_breakeven: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct FleetBreakeven {
    pub window: Window,
    pub models: Vec<ModelBreakeven>,
    /// Over the models with a break-even; `None` when none has one.
    pub total: Option<Total>,
}

/// The break-even of each GPU model: its GPU count (`gpu_models` has one entry per GPU), the
/// GPU-hours jobs held on GPUs of that model (`model_of` maps the keys of a job's `per_gpu`, GPU
/// UUIDs or nodes, to models; a key it lacks counts for no model) and their mean power, over the
/// window from `since` (else the first job's start) to `now`, priced with that model's own entry.
pub(super) fn breakeven_from(
    pricing: &Pricing,
    jobs: &[JobRecord],
    gpu_models: &[String],
    model_of: &BTreeMap<String, String>,
    since: Option<f64>,
    now: f64,
) -> anyhow::Result<FleetBreakeven> {
    if gpu_models.is_empty() {
        bail!("--breakeven: no GPUs known yet");
    }
    let start = since
        .or_else(|| jobs.iter().map(|j| j.started_at).reduce(f64::min))
        .unwrap_or(now);
    let window = Window {
        start,
        end: now,
        days: (now - start).max(MIN_WINDOW_S) / 86_400.0,
        chosen: since.is_some(),
    };
    // Per model: GPUs, GPU-seconds held by jobs and their energy.
    let mut per_model: BTreeMap<&str, (u32, f64, f64)> = BTreeMap::new();
    for m in gpu_models {
        per_model.entry(m.as_str()).or_default().0 += 1;
    }
    for j in jobs {
        for (key, u) in &j.per_gpu {
            if let Some(m) = model_of.get(key) {
                let e = per_model.entry(m.as_str()).or_default();
                e.1 += u.gpu_seconds;
                e.2 += u.energy_j;
            }
        }
    }
    let models: Vec<ModelBreakeven> = per_model
        .into_iter()
        .map(|(model, (count, gpu_s, energy))| {
            let mean_power = if gpu_s > 0.0 { energy / gpu_s } else { 0.0 };
            ModelBreakeven {
                model: model.to_string(),
                result: breakeven(
                    pricing,
                    model,
                    count,
                    gpu_s / 3600.0,
                    window.days,
                    mean_power,
                )
                .map_err(|e| e.to_string()),
            }
        })
        .collect();
    let priced: Vec<&Breakeven> = models
        .iter()
        .filter_map(|m| m.result.as_ref().ok())
        .collect();
    let total = (!priced.is_empty()).then(|| {
        let sum = |f: fn(&Breakeven) -> f64| priced.iter().map(|b| f(b)).sum::<f64>();
        let monthly_saving = sum(|b| b.monthly_saving);
        let purchase_total = sum(|b| b.purchase_total);
        Total {
            gpu_count: priced.iter().map(|b| b.gpu_count).sum(),
            cloud_per_month: sum(|b| b.cloud_per_month),
            own_running_per_month: sum(|b| b.own_running_per_month),
            purchase_total,
            monthly_saving,
            months_to_breakeven: (monthly_saving > 0.0).then(|| purchase_total / monthly_saving),
        }
    });
    Ok(FleetBreakeven {
        window,
        models,
        total,
    })
}

fn one_json(b: &Breakeven) -> serde_json::Value {
    json!({
        "gpu_count": b.gpu_count,
        "cloud_market": b.cloud_market.as_str(),
        "cloud_rate_per_hour": b.cloud_rate_per_hour,
        "gpu_hours_per_month": b.gpu_hours_per_month,
        "cloud_per_month": b.cloud_per_month,
        "own_energy_per_month": b.own_energy_per_month,
        "own_running_per_month": b.own_running_per_month,
        "purchase_total": b.purchase_total,
        "monthly_saving": b.monthly_saving,
        "months_to_breakeven": b.months_to_breakeven,
        "lifetime_months": b.lifetime_months,
        "utilisation_of_owned_gpus": b.utilisation_of_owned_gpus,
        "power_w": b.power_w,
        "tariff_per_kwh": b.tariff_per_kwh,
    })
}

pub(super) fn breakeven_json(f: &FleetBreakeven) -> serde_json::Value {
    let models: Vec<serde_json::Value> = f
        .models
        .iter()
        .map(|m| match &m.result {
            Ok(b) => {
                let mut v = one_json(b);
                v["model"] = json!(m.model);
                v
            }
            Err(e) => json!({ "model": m.model, "error": e }),
        })
        .collect();
    json!({
        "window": {
            "start": f.window.start,
            "end": f.window.end,
            "days": f.window.days,
            "from": if f.window.chosen { "since" } else { "first_job" },
        },
        "models": models,
        "total": f.total.map(|t| json!({
            "gpu_count": t.gpu_count,
            "cloud_per_month": t.cloud_per_month,
            "own_running_per_month": t.own_running_per_month,
            "purchase_total": t.purchase_total,
            "monthly_saving": t.monthly_saving,
            "months_to_breakeven": t.months_to_breakeven,
        })),
    })
}

fn verdict(months: Option<f64>, lifetime_months: Option<f64>) -> String {
    match (months, lifetime_months) {
        (Some(m), Some(l)) if m <= l => {
            format!("buying pays off after {m:.1} months (hardware lifetime {l:.0} months)")
        }
        (Some(m), Some(l)) => format!(
            "buying would pay off only after {m:.1} months, beyond the hardware's {l:.0}-month lifetime: keep renting"
        ),
        (Some(m), None) => format!("buying pays off after {m:.1} months"),
        (None, _) => {
            "at this usage, owning costs more per month than renting: keep renting".to_string()
        }
    }
}

pub(super) fn breakeven_text(f: &FleetBreakeven, currency: &str) -> String {
    let w = &f.window;
    let span = if w.end - w.start < MIN_WINDOW_S {
        "under an hour, taken as one".to_string()
    } else if w.days < 2.0 {
        format!("{:.1} hours", w.days * 24.0)
    } else {
        format!("{:.1} days", w.days)
    };
    let mut out = format!(
        "\nBreak-even, extrapolated to a month from {} to {} ({span}; {}):\n",
        format_utc(w.start),
        format_utc(w.end),
        if w.chosen {
            "the window --since chose"
        } else {
            "since the first job in the ledger; --since chooses another"
        }
    );
    for m in &f.models {
        match &m.result {
            Ok(b) => out.push_str(&format!(
                "{model}: {n} GPU(s) at the observed use ({h:.1} GPU-hours/month, {u:.0}% of owned capacity)\n  \
                 rent ({market} at {rate:.2} {currency}/GPU-hour): {cloud:.2} {currency}/month\n  \
                 own: {buy:.2} {currency} up front, then {run:.2} {currency}/month (energy {en:.2} at {p:.0} W, {t:.3} {currency}/kWh)\n  \
                 {verdict}\n",
                model = m.model,
                n = b.gpu_count,
                h = b.gpu_hours_per_month,
                u = b.utilisation_of_owned_gpus * 100.0,
                market = b.cloud_market.as_str(),
                rate = b.cloud_rate_per_hour,
                cloud = b.cloud_per_month,
                buy = b.purchase_total,
                run = b.own_running_per_month,
                en = b.own_energy_per_month,
                p = b.power_w,
                t = b.tariff_per_kwh,
                verdict = verdict(b.months_to_breakeven, Some(b.lifetime_months)),
            )),
            Err(e) => out.push_str(&format!("{}: no break-even: {e}\n", m.model)),
        }
    }
    match &f.total {
        Some(t) if f.models.len() > 1 => out.push_str(&format!(
            "All {n} priced GPU(s): rent {cloud:.2} {currency}/month; own {buy:.2} {currency} up front, then {run:.2} {currency}/month\n  {verdict}\n",
            n = t.gpu_count,
            cloud = t.cloud_per_month,
            buy = t.purchase_total,
            run = t.own_running_per_month,
            verdict = verdict(t.months_to_breakeven, None),
        )),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucost_core::jobs::{GpuRecord, Outcome, Usage};

    /// What the ledger path passes: one model per GPU, and each GPU's model by UUID.
    fn run(
        pricing: &Pricing,
        jobs: &[JobRecord],
        gpus: &[GpuRecord],
        since: Option<f64>,
        now: f64,
    ) -> anyhow::Result<FleetBreakeven> {
        let (models, model_of) = super::super::gpu_models(gpus);
        breakeven_from(pricing, jobs, &models, &model_of, since, now)
    }

    fn record(started_at: f64) -> JobRecord {
        let mut j = super::super::fixtures::job("j", Outcome::Succeeded, &[]);
        j.per_gpu.clear();
        j.started_at = started_at;
        j
    }

    fn gpu(uuid: &str, model: &str) -> GpuRecord {
        GpuRecord {
            uuid: uuid.into(),
            index: 0,
            model: model.into(),
            usage: Usage::default(),
            unallocated_seconds: 0.0,
            events: Default::default(),
        }
    }

    fn pricing() -> Pricing {
        let text = r#"
            [[gpu]]
            match = "H100"
            on_demand_per_hour = 4.0
            purchase_price = 30000.0
            lifetime_years = 4
            [[gpu]]
            match = "H200"
            on_demand_per_hour = 6.0
            purchase_price = 40000.0
            lifetime_years = 4
        "#;
        let v: toml::Value = toml::from_str(text).unwrap();
        gpucost_core::account::pricing::from_toml_value(&v).unwrap()
    }

    /// A node with H100s and an H200: each model is priced with its own entry, on the GPU-hours
    /// held on GPUs of that model (it bought only the most common model, and priced every
    /// GPU-hour, the H200's included, at the H100's rate).
    #[test]
    fn each_model_breaks_even_on_its_own_use_and_price() {
        let gpus = [
            GpuRecord {
                index: 0,
                ..gpu("a", "NVIDIA H100 80GB HBM3")
            },
            GpuRecord {
                index: 1,
                ..gpu("b", "NVIDIA H100 80GB HBM3")
            },
            GpuRecord {
                index: 2,
                ..gpu("c", "NVIDIA H200")
            },
        ];
        let mut job = record(0.0);
        let held = |h: f64| Usage {
            gpu_seconds: h * 3600.0,
            energy_j: h * 3600.0 * 500.0,
            ..Usage::default()
        };
        job.per_gpu.insert("a".into(), held(10.0));
        job.per_gpu.insert("c".into(), held(30.0));
        let day = 86_400.0;
        let f = run(&pricing(), &[job], &gpus, Some(0.0), 2.0 * day).unwrap();
        assert_eq!(f.window.days, 2.0);
        assert!(f.window.chosen);
        let by: BTreeMap<&str, &Breakeven> = f
            .models
            .iter()
            .map(|m| (m.model.as_str(), m.result.as_ref().unwrap()))
            .collect();
        let h100 = by["NVIDIA H100 80GB HBM3"];
        let h200 = by["NVIDIA H200"];
        assert_eq!((h100.gpu_count, h200.gpu_count), (2, 1));
        let month = gpucost_core::account::cost::DAYS_PER_MONTH;
        assert!((h100.gpu_hours_per_month - 10.0 / 2.0 * month).abs() < 1e-9);
        assert!((h200.gpu_hours_per_month - 30.0 / 2.0 * month).abs() < 1e-9);
        assert_eq!(
            (h100.cloud_rate_per_hour, h200.cloud_rate_per_hour),
            (4.0, 6.0)
        );
        assert_eq!(
            (h100.purchase_total, h200.purchase_total),
            (60_000.0, 40_000.0)
        );
        let t = f.total.unwrap();
        assert_eq!(t.gpu_count, 3);
        assert_eq!(t.purchase_total, 100_000.0);
        assert!((t.cloud_per_month - h100.cloud_per_month - h200.cloud_per_month).abs() < 1e-9);
        let text = breakeven_text(&f, "USD");
        assert!(
            text.contains("NVIDIA H200: 1 GPU(s)") && text.contains("All 3 priced GPU(s)"),
            "{text}"
        );
        assert!(
            text.contains("2.0 days; the window --since chose"),
            "{text}"
        );
    }

    /// A GPU's MIG instances (unit indices 1001.., see `MIG_INDEX_BASE`), and the GPU itself
    /// before or after MIG mode, are one GPU to buy.
    #[test]
    fn issue_15_mig_instances_count_as_their_physical_gpu() {
        let gpus: Vec<GpuRecord> = [0, 1001, 1002, 1003, 1, 2001]
            .into_iter()
            .map(|i| GpuRecord {
                index: i,
                ..gpu(&format!("GPU-{i}"), "NVIDIA H100 80GB HBM3")
            })
            .collect();
        let f = run(&pricing(), &[], &gpus, Some(0.0), 86_400.0).unwrap();
        assert_eq!(f.models[0].result.as_ref().unwrap().gpu_count, 2);
    }

    /// A model without a price entry says so; the others still break even. A window of minutes
    /// is taken as an hour.
    #[test]
    fn an_unpriced_model_is_named_and_short_windows_have_a_floor() {
        let gpus = [
            gpu("a", "NVIDIA H100 80GB HBM3"),
            GpuRecord {
                index: 1,
                ..gpu("x", "NVIDIA L4")
            },
        ];
        let job = record(1000.0);
        let f = run(&pricing(), &[job], &gpus, None, 1060.0).unwrap();
        assert_eq!(f.window.days, 1.0 / 24.0);
        assert!(!f.window.chosen);
        let l4 = f.models.iter().find(|m| m.model == "NVIDIA L4").unwrap();
        assert!(
            l4.result.as_ref().unwrap_err().contains("no entry matches"),
            "{l4:?}"
        );
        assert_eq!(f.total.unwrap().gpu_count, 1);
        let text = breakeven_text(&f, "USD");
        assert!(text.contains("NVIDIA L4: no break-even"), "{text}");
        assert!(text.contains("--since chooses another"), "{text}");
        assert!(run(&pricing(), &[], &[], None, 0.0).is_err());
    }
}
