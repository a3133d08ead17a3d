//! `gpucost report`: per-job cost from the ledger, and `--breakeven`: renting vs buying.
//!
//! Reads the ledger read-only (works while the agent runs) and the `[pricing]` of the config
//! (for the currency and for the break-even prices).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;

use crate::ledger::{JobFilter, Ledger};
use gpucost_core::account::cost::{breakeven, Breakeven};
use gpucost_core::account::pricing::Pricing;
use gpucost_core::jobs::JobRecord;
use gpucost_core::report::{render, Format, ReportOptions};

pub struct ReportArgs {
    pub state_dir: PathBuf,
    pub since: Option<String>,
    pub job: Option<String>,
    pub group_by: Option<String>,
    pub format: Format,
    pub breakeven: bool,
    pub pricing: Pricing,
}

/// `7d`, `36h` (that long ago) or a date/time (`2026-11-01`, `2026-11-01T08:00:00Z`).
pub fn parse_since(s: &str, now: f64) -> anyhow::Result<f64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now - d.as_secs_f64());
    }
    let text = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&text)
        .with_context(|| format!("--since {s:?}: expected a duration (7d, 36h) or a UTC date/time (2026-11-01, 2026-11-01T08:00:00Z)"))?;
    Ok(t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64())
}

pub fn report(a: ReportArgs) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let since = a
        .since
        .as_deref()
        .map(|s| parse_since(s, now))
        .transpose()?;
    let ledger = Ledger::open_read_only(&a.state_dir)?;
    let jobs = ledger.query_jobs(&JobFilter {
        since,
        job_id: a.job.clone(),
    })?;
    if let Some(id) = &a.job {
        if jobs.is_empty() {
            bail!("no job {id:?} in the ledger {}", ledger.path().display());
        }
    }
    // The currency the agent counted in, else the one configured here.
    let currency = ledger
        .meta("currency")?
        .unwrap_or_else(|| a.pricing.currency.clone());
    let opts = ReportOptions {
        format: a.format,
        group_by: a.group_by.clone(),
        currency,
    };
    let mut out = render(&jobs, &opts)?;
    if a.breakeven {
        let models: Vec<(String, u32)> = ledger
            .load_gpus()?
            .into_iter()
            .map(|g| (g.model, g.index))
            .collect();
        let be = breakeven_from(&a.pricing, &jobs, &models, since, now)?;
        match a.format {
            Format::Json => {
                let mut doc: serde_json::Value = serde_json::from_str(&out)?;
                doc["breakeven"] = breakeven_json(&be);
                out = serde_json::to_string_pretty(&doc)? + "\n";
            }
            _ => out.push_str(&breakeven_text(&be, &a.pricing.currency)),
        }
    }
    Ok(out)
}

/// The break-even estimate from what the ledger observed: the node's most common GPU model,
/// its GPU count, the GPU-hours jobs held and their mean power, over the observed span.
fn breakeven_from(
    pricing: &Pricing,
    jobs: &[JobRecord],
    gpus: &[(String, u32)],
    since: Option<f64>,
    now: f64,
) -> anyhow::Result<Breakeven> {
    let mut by_model: BTreeMap<&str, u32> = BTreeMap::new();
    for (m, _) in gpus {
        *by_model.entry(m).or_default() += 1;
    }
    let Some((model, count)) = by_model.into_iter().max_by_key(|(_, n)| *n) else {
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

fn breakeven_json(b: &Breakeven) -> serde_json::Value {
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

fn breakeven_text(b: &Breakeven, currency: &str) -> String {
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

    #[test]
    fn since_accepts_durations_and_dates() {
        let now = 1_800_000_000.0;
        assert_eq!(parse_since("1d", now).unwrap(), now - 86_400.0);
        assert_eq!(parse_since("2026-11-01", now).unwrap(), 1_793_491_200.0);
        assert_eq!(
            parse_since("2026-11-01T08:00:00Z", now).unwrap(),
            1_793_520_000.0
        );
        let e = parse_since("last week", now).unwrap_err().to_string();
        assert!(e.contains("--since") && e.contains("7d"), "{e}");
    }
}
