//! `gpucost report --breakeven`: what renting the node's GPUs costs against buying them, at the
//! use the ledger observed.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::json;

use gpucost_core::account::cost::{breakeven, Breakeven};
use gpucost_core::account::pricing::Pricing;
use gpucost_core::jobs::JobRecord;

/// The break-even estimate from what the ledger observed: the node's most common GPU model,
/// its GPU count, the GPU-hours jobs held and their mean power, over the observed span.
pub(super) fn breakeven_from(
    pricing: &Pricing,
    jobs: &[JobRecord],
    gpus: &[(String, u32)],
    since: Option<f64>,
    now: f64,
) -> anyhow::Result<Breakeven> {
    // Physical GPUs: the MIG instances of one GPU (and the GPU itself, before or after MIG
    // mode) are one GPU to buy.
    let mut by_model: BTreeMap<&str, std::collections::BTreeSet<u32>> = BTreeMap::new();
    for (m, index) in gpus {
        by_model
            .entry(m)
            .or_default()
            .insert(gpucost_core::reading::physical_index(*index));
    }
    let counted = by_model.into_iter().map(|(m, set)| (m, set.len() as u32));
    let Some((model, count)) = counted.max_by_key(|(_, n)| *n) else {
        bail!("--breakeven: the ledger has no GPUs yet");
    };
    let start = since
        .or_else(|| jobs.iter().map(|j| j.started_at).reduce(f64::min))
        .unwrap_or(now);
    let days = ((now - start) / 86_400.0).max(1.0 / 24.0);
    let gpu_s: f64 = jobs.iter().map(|j| j.usage.gpu_seconds).sum();
    let energy: f64 = jobs.iter().map(|j| j.usage.energy_j).sum();
    let mean_power = if gpu_s > 0.0 { energy / gpu_s } else { 0.0 };
    breakeven(pricing, model, count, gpu_s / 3600.0, days, mean_power)
        .map_err(|e| anyhow::anyhow!("--breakeven: {e}"))
}

pub(super) fn breakeven_json(b: &Breakeven) -> serde_json::Value {
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

pub(super) fn breakeven_text(b: &Breakeven, currency: &str) -> String {
    let verdict = match b.months_to_breakeven {
        Some(m) if m <= b.lifetime_months => format!("buying pays off after {m:.1} months (hardware lifetime {:.0} months)", b.lifetime_months),
        Some(m) => format!("buying would pay off only after {m:.1} months, beyond the hardware's {:.0}-month lifetime: keep renting", b.lifetime_months),
        None => "at this usage, owning costs more per month than renting: keep renting".to_string(),
    };
    format!(
        "\nBreak-even, {n} GPU(s) at the observed use ({h:.1} GPU-hours/month, {u:.0}% of owned capacity):\n  \
         rent ({market} at {rate:.2} {currency}/GPU-hour): {cloud:.2} {currency}/month\n  \
         own: {buy:.2} {currency} up front, then {run:.2} {currency}/month (energy {en:.2} at {p:.0} W, {t:.3} {currency}/kWh)\n  \
         {verdict}\n",
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: a GPU's MIG instances, and the GPU itself before its MIG mode, are one GPU to
    /// buy.
    #[test]
    fn issue_15_mig_instances_count_as_their_physical_gpu() {
        let pricing = gpucost_core::config::example_pricing();
        let h100 = "NVIDIA H100 80GB HBM3".to_string();
        let gpus: Vec<(String, u32)> = [0, 1001, 1002, 1003, 1, 2001]
            .into_iter()
            .map(|i| (h100.clone(), i))
            .collect();
        let b = breakeven_from(&pricing, &[], &gpus, Some(0.0), 86_400.0).unwrap();
        assert_eq!(b.gpu_count, 2);
    }
}
