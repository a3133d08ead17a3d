//! Writes a [`Report`] out. Every format carries the same facts per job: identity (id, name,
//! user, scheduler), start and end in UTC (ISO 8601, `2026-11-26T07:15:00Z`), outcome, number
//! of GPUs, GPU-hours, kWh, cost by component (`gpu_time`, `energy`, `overhead`) and in total,
//! kg CO2e, idle share (idle GPU-seconds / GPU-seconds) and wasted cost (all of a failed run,
//! else its idle cost and what mixed precision would have saved), followed by the total over all
//! jobs.
//!
//! - **table** ([`super::table`]): for humans; two tables sharing the JOB column (who and when;
//!   what it used and cost), and a third for jobs that reported tokens, so that each fits a
//!   120-column terminal. Money has 2 decimals and the currency code in its column header.
//! - **json** ([`super::json`]): `{"currency", "jobs": [...], "total": {...}}`; quantities in
//!   base units (`gpu_seconds`, `energy_j`, `carbon_g`, money in the currency) plus the derived
//!   `gpu_hours`, `kwh`, `co2_kg`, `cost_total`, `idle_share`, `wasted_cost`.
//! - **csv** ([`super::csv`]): one header row with the same columns as a JSON job (labels as a
//!   JSON object), one row per job, then a row whose `id` is `TOTAL`; RFC 4180 quoting, lines
//!   end in `\n`.
//!
//! JSON and CSV write the model's named columns ([`gpucost_core::report::columns`]) in order.
//! Grouped by a label, JSON has `"group_by"` and `"groups"` instead of `"jobs"`.

use std::str::FromStr;

use gpucost_core::jobs::JobRecord;
use gpucost_core::report::{Report, ReportError};
use jiff::civil::DateTime;
use jiff::SignedDuration;

/// How [`render`] writes the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

impl FromStr for Format {
    type Err = RenderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(RenderError::UnknownFormat(s.to_string())),
        }
    }
}

/// What [`render`] shows and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    pub format: Format,
    /// `label:KEY`: one row per value of label KEY instead of one per job.
    pub group_by: Option<String>,
    /// The currency code money is in (`EUR`, `USD`, ...), shown in headers and in JSON.
    pub currency: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown report format {0:?}: expected table, json or csv")]
    UnknownFormat(String),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode the report as CSV: {0}")]
    Csv(#[from] ::csv::Error),
}

/// Renders `jobs` (in the order given) as `opts` asks. The output ends with a newline.
pub fn render(jobs: &[JobRecord], opts: &ReportOptions) -> Result<String, RenderError> {
    let report = Report::new(jobs, opts.group_by.as_deref())?;
    Ok(match opts.format {
        Format::Table => super::table::render(&report, &opts.currency),
        Format::Json => super::json::render(&report, &opts.currency)?,
        Format::Csv => super::csv::render(&report)?,
    })
}

/// Unix seconds as UTC ISO 8601 with second precision (`2026-11-26T07:15:00Z`), rounded down.
/// Outside years 0000-9999, or not finite: `invalid time`.
pub fn format_utc(unix: f64) -> String {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN: f64 = -62_167_219_200.0;
    const MAX: f64 = 253_402_300_799.0;
    const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
    let secs = unix.floor();
    if !(MIN..=MAX).contains(&secs) {
        return "invalid time".to_string();
    }
    // Civil date-time arithmetic rather than a `Timestamp`, whose range stops a day short of
    // 9999-12-31 (it leaves room for any time zone's offset).
    match EPOCH.checked_add(SignedDuration::from_secs(secs as i64)) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "invalid time".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_utc_cases() {
        for (unix, want) in [
            (0.0, "1970-01-01T00:00:00Z"),
            (1_795_677_300.0, "2026-11-26T07:15:00Z"),
            (1_795_677_300.999, "2026-11-26T07:15:00Z"),
            (951_782_400.0, "2000-02-29T00:00:00Z"),
            (1_735_689_599.0, "2024-12-31T23:59:59Z"),
            (4_107_542_400.0, "2100-03-01T00:00:00Z"),
            (-1.0, "1969-12-31T23:59:59Z"),
            (-0.5, "1969-12-31T23:59:59Z"),
            (-2_203_934_400.0, "1900-02-28T12:00:00Z"),
            (-62_135_596_800.0, "0001-01-01T00:00:00Z"),
            (-62_167_219_200.0, "0000-01-01T00:00:00Z"),
            (253_402_300_799.0, "9999-12-31T23:59:59Z"),
            (-62_167_219_201.0, "invalid time"),
            (253_402_300_800.0, "invalid time"),
            (f64::NAN, "invalid time"),
            (f64::INFINITY, "invalid time"),
            (f64::NEG_INFINITY, "invalid time"),
        ] {
            assert_eq!(format_utc(unix), want, "{unix}");
        }
    }

    #[test]
    fn format_utc_agrees_with_jiffs_timestamps_day_by_day() {
        // Every day from 1969 to 2100 at 13:14:15: the civil arithmetic above and jiff's own
        // timestamp formatting agree (the hand-written calendar this replaced had such a walk).
        for day in -365..48_213_i64 {
            let secs = day * 86_400 + 13 * 3600 + 14 * 60 + 15;
            let want = jiff::Timestamp::from_second(secs)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            assert_eq!(format_utc(secs as f64), want, "day {day}");
        }
    }

    #[test]
    fn format_parses_and_rejects_with_the_accepted_values() {
        assert_eq!("table".parse::<Format>().unwrap(), Format::Table);
        assert_eq!("JSON".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
        let err = "xml".parse::<Format>().unwrap_err().to_string();
        assert!(
            err.contains("\"xml\"") && err.contains("table, json or csv"),
            "{err}"
        );
    }
}
