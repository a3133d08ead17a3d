//! `gpucost report`: per-job cost from the ledger, and `--breakeven`: renting vs buying.
//!
//! Reads the ledger read-only (works while the agent runs) and the `[pricing]` of the config
//! (for the currency and for the break-even prices). What a report holds is
//! [`gpucost_core::report`]'s model; [`render`] writes it out as a table, JSON or CSV.

mod breakeven;
mod csv;
#[cfg(test)]
mod fixtures;
mod json;
mod prometheus;
mod render;
mod table;
mod whatif;

pub use render::{format_utc, render, Format, RenderError, ReportOptions};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::ledger::{JobFilter, Ledger};
use breakeven::{breakeven_from, breakeven_json, breakeven_text};
use gpucost_core::account::pricing::{self, Pricing};
use gpucost_core::report::whatif::WhatIfOptions;

pub struct ReportArgs {
    pub state_dir: PathBuf,
    /// Report on the whole fleet from this Prometheus (`http://host:9090`) instead of the
    /// node's ledger.
    pub prometheus: Option<String>,
    pub since: Option<String>,
    pub job: Option<String>,
    pub group_by: Option<String>,
    pub format: Format,
    pub breakeven: bool,
    /// Add each job's cost with each savings lever (`--what-if`), spot with this share done
    /// again.
    pub what_if: Option<WhatIfOptions>,
    pub pricing: Pricing,
    /// The prices come from a config the user named (`--config`, `GPUCOST_CONFIG`): they win
    /// over the prices the agent recorded in the ledger.
    pub pricing_named: bool,
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

/// The window a fleet report covers when `--since` does not say.
const FLEET_DEFAULT_WINDOW_S: u64 = 30 * 86_400;

/// Where a report's jobs, GPUs and currency come from.
struct Source {
    jobs: Vec<gpucost_core::jobs::JobRecord>,
    /// One model per GPU.
    gpu_models: Vec<String>,
    /// Keys of the jobs' `per_gpu` (GPU UUIDs, or nodes) -> GPU model.
    model_of: BTreeMap<String, String>,
    currency: String,
    pricing: Pricing,
    /// The window's start for the break-even (`--since`, or the fleet's default window).
    since: Option<f64>,
    /// The jobs whose pipes some agent measured (it exported their `bf16` lever), where the
    /// jobs' usage cannot say (the fleet's); `None`: each job's usage says.
    pipes_measured: Option<BTreeSet<String>>,
}

/// The GPUs of a ledger as one model per physical GPU (a GPU's MIG instances, and the GPU
/// itself before or after MIG mode, are the one GPU there is to buy), and each unit's model by
/// UUID.
pub(super) fn gpu_models(
    gpus: &[gpucost_core::jobs::GpuRecord],
) -> (Vec<String>, BTreeMap<String, String>) {
    let physical: BTreeMap<u32, &str> = gpus
        .iter()
        .map(|g| {
            (
                gpucost_core::reading::physical_index(g.index),
                g.model.as_str(),
            )
        })
        .collect();
    (
        physical.into_values().map(str::to_string).collect(),
        gpucost_core::report::whatif::models_by_uuid(gpus),
    )
}

fn from_ledger(a: &ReportArgs, since: Option<f64>) -> anyhow::Result<Source> {
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
    let pricing = if a.pricing_named {
        a.pricing.clone()
    } else {
        recorded_pricing(&ledger)?.unwrap_or_else(|| a.pricing.clone())
    };
    // The currency the agent counted in, else the one configured here.
    let currency = ledger
        .meta("currency")?
        .unwrap_or_else(|| pricing.currency.clone());
    let (gpu_models, model_of) = gpu_models(&ledger.load_gpus()?);
    Ok(Source {
        jobs,
        gpu_models,
        model_of,
        currency,
        pricing,
        since,
        pipes_measured: None,
    })
}

fn from_prometheus(
    a: &ReportArgs,
    url: &str,
    since: Option<f64>,
    now: f64,
) -> anyhow::Result<Source> {
    let start = since.unwrap_or(now - FLEET_DEFAULT_WINDOW_S as f64);
    let window_s = (now - start).max(1.0).ceil() as u64;
    let p = prometheus::Prometheus::new(url)?;
    let mut fleet = prometheus::read_fleet(&p, now, window_s)?;
    if let Some(id) = &a.job {
        fleet.jobs.retain(|j| &j.id == id);
        if fleet.jobs.is_empty() {
            bail!("no job {id:?} in {url} over the window");
        }
    }
    Ok(Source {
        jobs: fleet.jobs,
        gpu_models: fleet.gpu_models,
        model_of: fleet.model_of,
        currency: fleet.currency.unwrap_or_else(|| a.pricing.currency.clone()),
        pricing: a.pricing.clone(),
        since: Some(start),
        pipes_measured: Some(fleet.pipes_measured),
    })
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
    let src = match &a.prometheus {
        Some(url) => from_prometheus(&a, url, since, now)?,
        None => from_ledger(&a, since)?,
    };
    let opts = ReportOptions {
        format: a.format,
        group_by: a.group_by.clone(),
        currency: src.currency.clone(),
    };
    let mut out = render(&src.jobs, &opts)?;
    if let Some(w) = a.what_if {
        let t = whatif::what_if_table(
            &src.jobs,
            &src.model_of,
            &src.pricing,
            src.pipes_measured.as_ref(),
            a.group_by.as_deref(),
            w,
        )?;
        match a.format {
            Format::Json => {
                let mut doc: serde_json::Value = serde_json::from_str(&out)?;
                doc["what_if"] = whatif::json_value(&t);
                out = serde_json::to_string_pretty(&doc)? + "\n";
            }
            // One table per CSV file: the what-if rows instead of the cost rows.
            Format::Csv => out = whatif::render(&t, Format::Csv, &opts.currency)?,
            Format::Table => out.push_str(&whatif::render(&t, Format::Table, &opts.currency)?),
        }
    }
    if a.breakeven {
        let be = breakeven_from(
            &src.pricing,
            &src.jobs,
            &src.gpu_models,
            &src.model_of,
            src.since,
            now,
        )?;
        match a.format {
            Format::Json => {
                let mut doc: serde_json::Value = serde_json::from_str(&out)?;
                doc["breakeven"] = breakeven_json(&be);
                out = serde_json::to_string_pretty(&doc)? + "\n";
            }
            _ => out.push_str(&breakeven_text(&be, &src.pricing.currency)),
        }
    }
    Ok(out)
}

/// The `[pricing]` the agent recorded in its ledger (the prices it counted with), if any.
fn recorded_pricing(ledger: &Ledger) -> anyhow::Result<Option<Pricing>> {
    let Some(text) = ledger.meta("pricing")? else {
        return Ok(None);
    };
    let parsed = toml::from_str::<toml::Value>(&text)
        .map_err(|e| e.to_string())
        .and_then(|v| pricing::from_toml_value(&v).map_err(|e| e.to_string()));
    match parsed {
        Ok(p) => Ok(Some(p)),
        // Written by another version, say: the configured prices still work.
        Err(e) => {
            eprintln!(
                "gpucost: the prices recorded in {} cannot be read ({e}); using the configured ones",
                ledger.path().display()
            );
            Ok(None)
        }
    }
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
