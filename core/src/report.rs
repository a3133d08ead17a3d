//! `gpucost report`: a per-job (or per-label-group) cost breakdown, rendered from ledger data as
//! an aligned table, JSON or CSV. Pure: no I/O, no clock.
//!
//! Every format carries the same facts per job: identity (id, name, user, scheduler), start and
//! end in UTC (ISO 8601, `2026-11-26T07:15:00Z`), outcome, number of GPUs, GPU-hours, kWh, cost
//! by component (`gpu_time`, `energy`, `overhead`) and in total, kg CO2e, idle share (idle
//! GPU-seconds / GPU-seconds) and wasted cost ([`JobRecord::wasted_cost`]: all of a failed run,
//! else its idle cost), followed by the total over all jobs.
//!
//! - **table**: for humans; two aligned tables sharing the JOB column (who and when; what it
//!   used and cost) so that each fits a 120-column terminal. Money has 2 decimals and the
//!   currency code in its column header.
//! - **json**: `{"currency", "jobs": [...], "total": {...}}`; quantities in base units
//!   (`gpu_seconds`, `energy_j`, `carbon_g`, money in the currency) plus the derived `gpu_hours`,
//!   `kwh`, `co2_kg`, `cost_total`, `idle_share`, `wasted_cost`.
//! - **csv**: one header row with the same columns as a JSON job (labels as a JSON object), one
//!   row per job, then a row whose `id` is `TOTAL`. Fields are quoted as RFC 4180 says (a field
//!   with a comma, quote or line break is enclosed in quotes, quotes doubled); lines end in `\n`.
//!
//! With `group_by = "label:KEY"` the rows are groups of jobs by the value of label KEY (jobs
//! without it form the group `(none)`), sorted by total cost, most expensive first; JSON then has
//! `"group_by"` and `"groups"` instead of `"jobs"`.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;

use crate::jobs::{JobRecord, Outcome, Usage};

/// The group of jobs that lack the `--group-by` label.
pub const NO_LABEL_GROUP: &str = "(none)";

/// How [`render`] writes the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

impl FromStr for Format {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(ReportError::UnknownFormat(s.to_string())),
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
pub enum ReportError {
    #[error("unknown report format {0:?}: expected table, json or csv")]
    UnknownFormat(String),
    #[error(
        "cannot group by {0:?}: expected label:KEY with a non-empty label key, e.g. \
         --group-by label:team"
    )]
    BadGroupBy(String),
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The label key of a `label:KEY` group-by, or why it is not one.
pub fn parse_group_by(spec: &str) -> Result<&str, ReportError> {
    match spec.strip_prefix("label:") {
        Some(key) if !key.trim().is_empty() => Ok(key),
        _ => Err(ReportError::BadGroupBy(spec.to_string())),
    }
}

/// Renders `jobs` (in the order given) as `opts` asks. The output ends with a newline.
pub fn render(jobs: &[JobRecord], opts: &ReportOptions) -> Result<String, ReportError> {
    let total = Acc::over(jobs.iter()).totals();
    match opts.group_by.as_deref() {
        None => {
            let rows: Vec<JobRow<'_>> = jobs.iter().map(JobRow::new).collect();
            match opts.format {
                Format::Table => Ok(jobs_table(&rows, &total, &opts.currency)),
                Format::Json => json(&JobsDoc {
                    currency: &opts.currency,
                    jobs: rows,
                    total,
                }),
                Format::Csv => Ok(jobs_csv(&rows, &total)),
            }
        }
        Some(spec) => {
            let key = parse_group_by(spec)?;
            let groups = group(jobs, key);
            match opts.format {
                Format::Table => Ok(groups_table(&groups, &total, spec, &opts.currency)),
                Format::Json => json(&GroupsDoc {
                    currency: &opts.currency,
                    group_by: spec,
                    groups,
                    total,
                }),
                Format::Csv => Ok(groups_csv(&groups, &total)),
            }
        }
    }
}

/// Unix seconds as UTC ISO 8601 with second precision (`2026-11-26T07:15:00Z`), rounded down.
/// Outside years 0000-9999, or not finite: `invalid time`.
pub fn format_utc(unix: f64) -> String {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN: f64 = -62_167_219_200.0;
    const MAX: f64 = 253_402_300_799.0;
    let secs = unix.floor();
    if !(MIN..=MAX).contains(&secs) {
        return "invalid time".to_string();
    }
    let secs = secs as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---- the numbers -------------------------------------------------------------------------------

const SECONDS_PER_HOUR: f64 = 3600.0;
const JOULES_PER_KWH: f64 = 3.6e6;

fn idle_share(u: &Usage) -> f64 {
    if u.gpu_seconds > 0.0 {
        u.idle_gpu_seconds / u.gpu_seconds
    } else {
        0.0
    }
}

/// Tokens a job reported, when it reported any.
fn tokens(j: &JobRecord) -> Option<u64> {
    j.progress.as_ref().map(|p| p.tokens).filter(|t| *t > 0)
}

/// One job, as JSON writes it; CSV writes the same fields in the same order ([`JOB_COLUMNS`]).
#[derive(Debug, Serialize)]
struct JobRow<'a> {
    id: &'a str,
    name: &'a str,
    user: &'a str,
    uid: Option<u32>,
    scheduler: &'static str,
    labels: &'a BTreeMap<String, String>,
    start: String,
    end: Option<String>,
    started_at: f64,
    ended_at: Option<f64>,
    outcome: &'static str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    gpus: usize,
    gpu_seconds: f64,
    energy_j: f64,
    carbon_g: f64,
    cost_gpu_time: f64,
    cost_energy: f64,
    cost_overhead: f64,
    idle_gpu_seconds: f64,
    idle_cost: f64,
    gpu_hours: f64,
    kwh: f64,
    co2_kg: f64,
    cost_total: f64,
    idle_share: f64,
    wasted_cost: f64,
    /// Cost of the FP32-bound time that mixed precision would have saved.
    fp32_saving: f64,
    /// Tokens the job reported, and what each million cost and each token took.
    tokens: Option<u64>,
    cost_per_million_tokens: Option<f64>,
    joules_per_token: Option<f64>,
}

const JOB_COLUMNS: [&str; 32] = [
    "id",
    "name",
    "user",
    "uid",
    "scheduler",
    "labels",
    "start",
    "end",
    "started_at",
    "ended_at",
    "outcome",
    "exit_code",
    "signal",
    "gpus",
    "gpu_seconds",
    "energy_j",
    "carbon_g",
    "cost_gpu_time",
    "cost_energy",
    "cost_overhead",
    "idle_gpu_seconds",
    "idle_cost",
    "gpu_hours",
    "kwh",
    "co2_kg",
    "cost_total",
    "idle_share",
    "wasted_cost",
    "fp32_saving",
    "tokens",
    "cost_per_million_tokens",
    "joules_per_token",
];

impl<'a> JobRow<'a> {
    fn new(j: &'a JobRecord) -> Self {
        let u = &j.usage;
        JobRow {
            id: &j.id,
            name: &j.name,
            user: &j.user,
            uid: j.uid,
            scheduler: j.scheduler.as_str(),
            labels: &j.labels,
            start: format_utc(j.started_at),
            end: j.ended_at.map(format_utc),
            started_at: j.started_at,
            ended_at: j.ended_at,
            outcome: j.outcome.as_str(),
            exit_code: j.exit_code,
            signal: j.signal,
            gpus: j.per_gpu.len(),
            gpu_seconds: u.gpu_seconds,
            energy_j: u.energy_j,
            carbon_g: u.carbon_g,
            cost_gpu_time: u.cost_gpu_time,
            cost_energy: u.cost_energy,
            cost_overhead: u.cost_overhead,
            idle_gpu_seconds: u.idle_gpu_seconds,
            idle_cost: u.idle_cost,
            gpu_hours: u.gpu_seconds / SECONDS_PER_HOUR,
            kwh: u.energy_j / JOULES_PER_KWH,
            co2_kg: u.carbon_g / 1000.0,
            cost_total: u.total_cost(),
            idle_share: idle_share(u),
            wasted_cost: j.wasted_cost(),
            fp32_saving: u.fp32_saving,
            tokens: tokens(j),
            cost_per_million_tokens: tokens(j).map(|t| u.total_cost() / t as f64 * 1e6),
            joules_per_token: tokens(j).map(|t| u.energy_j / t as f64),
        }
    }

    /// The fields in [`JOB_COLUMNS`] order, as CSV text.
    fn csv_fields(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.name.to_string(),
            self.user.to_string(),
            opt(self.uid),
            self.scheduler.to_string(),
            serde_json::to_string(self.labels).unwrap_or_default(),
            self.start.clone(),
            self.end.clone().unwrap_or_default(),
            self.started_at.to_string(),
            opt(self.ended_at),
            self.outcome.to_string(),
            opt(self.exit_code),
            opt(self.signal),
            self.gpus.to_string(),
            self.gpu_seconds.to_string(),
            self.energy_j.to_string(),
            self.carbon_g.to_string(),
            self.cost_gpu_time.to_string(),
            self.cost_energy.to_string(),
            self.cost_overhead.to_string(),
            self.idle_gpu_seconds.to_string(),
            self.idle_cost.to_string(),
            self.gpu_hours.to_string(),
            self.kwh.to_string(),
            self.co2_kg.to_string(),
            self.cost_total.to_string(),
            self.idle_share.to_string(),
            self.wasted_cost.to_string(),
            self.fp32_saving.to_string(),
            opt(self.tokens),
            opt(self.cost_per_million_tokens),
            opt(self.joules_per_token),
        ]
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Sums over a set of jobs (a group, or all of them).
#[derive(Debug, Default)]
struct Acc {
    jobs: usize,
    failed: usize,
    usage: Usage,
    wasted: f64,
}

impl Acc {
    fn over<'a>(jobs: impl Iterator<Item = &'a JobRecord>) -> Self {
        let mut acc = Acc::default();
        for j in jobs {
            acc.add(j);
        }
        acc
    }

    fn add(&mut self, j: &JobRecord) {
        self.jobs += 1;
        self.failed += usize::from(j.outcome == Outcome::Failed);
        self.usage.add(&j.usage);
        self.wasted += j.wasted_cost();
    }

    fn totals(&self) -> Totals {
        let u = &self.usage;
        Totals {
            jobs: self.jobs,
            failed: self.failed,
            gpu_seconds: u.gpu_seconds,
            energy_j: u.energy_j,
            carbon_g: u.carbon_g,
            cost_gpu_time: u.cost_gpu_time,
            cost_energy: u.cost_energy,
            cost_overhead: u.cost_overhead,
            idle_gpu_seconds: u.idle_gpu_seconds,
            idle_cost: u.idle_cost,
            gpu_hours: u.gpu_seconds / SECONDS_PER_HOUR,
            kwh: u.energy_j / JOULES_PER_KWH,
            co2_kg: u.carbon_g / 1000.0,
            cost_total: u.total_cost(),
            idle_share: idle_share(u),
            wasted_cost: self.wasted,
        }
    }
}

/// The sums of a group or of the whole report (the `total` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Totals {
    jobs: usize,
    /// Runs that failed (their whole cost is in `wasted_cost`).
    failed: usize,
    gpu_seconds: f64,
    energy_j: f64,
    carbon_g: f64,
    cost_gpu_time: f64,
    cost_energy: f64,
    cost_overhead: f64,
    idle_gpu_seconds: f64,
    idle_cost: f64,
    gpu_hours: f64,
    kwh: f64,
    co2_kg: f64,
    cost_total: f64,
    idle_share: f64,
    wasted_cost: f64,
}

const TOTALS_COLUMNS: [&str; 16] = [
    "jobs",
    "failed",
    "gpu_seconds",
    "energy_j",
    "carbon_g",
    "cost_gpu_time",
    "cost_energy",
    "cost_overhead",
    "idle_gpu_seconds",
    "idle_cost",
    "gpu_hours",
    "kwh",
    "co2_kg",
    "cost_total",
    "idle_share",
    "wasted_cost",
];

impl Totals {
    /// A field by its [`TOTALS_COLUMNS`] name, as CSV text.
    fn field(&self, name: &str) -> Option<String> {
        let v = match name {
            "jobs" => return Some(self.jobs.to_string()),
            "failed" => return Some(self.failed.to_string()),
            "gpu_seconds" => self.gpu_seconds,
            "energy_j" => self.energy_j,
            "carbon_g" => self.carbon_g,
            "cost_gpu_time" => self.cost_gpu_time,
            "cost_energy" => self.cost_energy,
            "cost_overhead" => self.cost_overhead,
            "idle_gpu_seconds" => self.idle_gpu_seconds,
            "idle_cost" => self.idle_cost,
            "gpu_hours" => self.gpu_hours,
            "kwh" => self.kwh,
            "co2_kg" => self.co2_kg,
            "cost_total" => self.cost_total,
            "idle_share" => self.idle_share,
            "wasted_cost" => self.wasted_cost,
            _ => return None,
        };
        Some(v.to_string())
    }
}

#[derive(Debug, Serialize)]
struct GroupRow {
    group: String,
    #[serde(flatten)]
    totals: Totals,
}

/// Groups by the value of label `key`, most expensive first (ties by name).
fn group(jobs: &[JobRecord], key: &str) -> Vec<GroupRow> {
    let mut by: BTreeMap<&str, Acc> = BTreeMap::new();
    for j in jobs {
        let value = j.labels.get(key).map_or(NO_LABEL_GROUP, String::as_str);
        by.entry(value).or_default().add(j);
    }
    let mut groups: Vec<GroupRow> = by
        .into_iter()
        .map(|(g, acc)| GroupRow {
            group: g.to_string(),
            totals: acc.totals(),
        })
        .collect();
    groups.sort_by(|a, b| {
        b.totals
            .cost_total
            .total_cmp(&a.totals.cost_total)
            .then_with(|| a.group.cmp(&b.group))
    });
    groups
}

#[derive(Serialize)]
struct JobsDoc<'a> {
    currency: &'a str,
    jobs: Vec<JobRow<'a>>,
    total: Totals,
}

#[derive(Serialize)]
struct GroupsDoc<'a> {
    currency: &'a str,
    group_by: &'a str,
    groups: Vec<GroupRow>,
    total: Totals,
}

fn json(doc: &impl Serialize) -> Result<String, ReportError> {
    let mut s = serde_json::to_string_pretty(doc)?;
    s.push('\n');
    Ok(s)
}

// ---- CSV ---------------------------------------------------------------------------------------

/// One CSV field, quoted when RFC 4180 requires it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(out: &mut String, fields: impl IntoIterator<Item = impl AsRef<str>>) {
    let mut first = true;
    for f in fields {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&csv_field(f.as_ref()));
    }
    out.push('\n');
}

fn jobs_csv(rows: &[JobRow<'_>], total: &Totals) -> String {
    let mut out = String::new();
    csv_line(&mut out, JOB_COLUMNS);
    for r in rows {
        csv_line(&mut out, r.csv_fields());
    }
    csv_line(
        &mut out,
        JOB_COLUMNS.iter().map(|&c| match c {
            "id" => "TOTAL".to_string(),
            // Not a sum: the GPUs of different jobs may be the same GPUs.
            "gpus" => String::new(),
            c => total.field(c).unwrap_or_default(),
        }),
    );
    out
}

fn groups_csv(groups: &[GroupRow], total: &Totals) -> String {
    let mut out = String::new();
    csv_line(&mut out, std::iter::once("group").chain(TOTALS_COLUMNS));
    for g in groups {
        csv_line(
            &mut out,
            std::iter::once(g.group.clone()).chain(
                TOTALS_COLUMNS
                    .iter()
                    .map(|c| g.totals.field(c).unwrap_or_default()),
            ),
        );
    }
    csv_line(
        &mut out,
        std::iter::once("TOTAL".to_string()).chain(
            TOTALS_COLUMNS
                .iter()
                .map(|c| total.field(c).unwrap_or_default()),
        ),
    );
    out
}

// ---- table -------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

/// A text table: columns as wide as their widest cell (text cells capped at `cap` characters,
/// cut with `…`), two spaces apart, an optional rule above the last row.
struct Table {
    columns: Vec<(String, Align, Option<usize>)>,
    rows: Vec<Vec<String>>,
    total_row: Option<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&str, Align, Option<usize>)]) -> Self {
        Table {
            columns: columns
                .iter()
                .map(|(h, a, c)| (h.to_string(), *a, *c))
                .collect(),
            rows: Vec::new(),
            total_row: None,
        }
    }

    fn cell(&self, i: usize, s: &str) -> String {
        // Control characters (a newline in a job name, a terminal escape) never reach the terminal.
        let clean: String = s
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        match self.columns[i].2 {
            Some(cap) if clean.chars().count() > cap => {
                let mut cut: String = clean.chars().take(cap.saturating_sub(1)).collect();
                cut.push('…');
                cut
            }
            _ => clean,
        }
    }

    fn render(&self, out: &mut String) {
        let all: Vec<Vec<String>> = std::iter::once(
            self.columns
                .iter()
                .map(|(h, ..)| h.clone())
                .collect::<Vec<_>>(),
        )
        .chain(self.rows.iter().cloned())
        .chain(self.total_row.iter().cloned())
        .map(|r| r.iter().enumerate().map(|(i, s)| self.cell(i, s)).collect())
        .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let line_width = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        let n = all.len();
        for (k, row) in all.iter().enumerate() {
            if self.total_row.is_some() && k == n - 1 {
                out.push_str(&"-".repeat(line_width));
                out.push('\n');
            }
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                if self.columns[i].1 == Align::Right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// `v` with `decimals` decimals, never `-0.00`.
fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn money(v: f64) -> String {
    fixed(v, 2)
}

fn percent(share: f64) -> String {
    format!("{}%", fixed(share * 100.0, 0))
}

const ID_CAP: Option<usize> = None; // ids are what `--job` takes: never cut
const NAME_CAP: Option<usize> = Some(20);
const USER_CAP: Option<usize> = Some(10);
const GROUP_CAP: Option<usize> = Some(24);

/// The money columns' headers: `GPU-TIME EUR`, ...
fn money_headers(currency: &str) -> [String; 5] {
    [
        format!("GPU-TIME {currency}"),
        format!("ENERGY {currency}"),
        format!("OVERHEAD {currency}"),
        format!("TOTAL {currency}"),
        format!("WASTED {currency}"),
    ]
}

fn jobs_table(rows: &[JobRow<'_>], total: &Totals, currency: &str) -> String {
    use Align::{Left as L, Right as R};
    if rows.is_empty() {
        return "no jobs\n".to_string();
    }
    let mut out = String::new();

    let mut who = Table::new(&[
        ("JOB", L, ID_CAP),
        ("NAME", L, NAME_CAP),
        ("USER", L, USER_CAP),
        ("SCHEDULER", L, None),
        ("START (UTC)", L, None),
        ("END (UTC)", L, None),
        ("OUTCOME", L, None),
    ]);
    for r in rows {
        who.rows.push(vec![
            r.id.to_string(),
            r.name.to_string(),
            r.user.to_string(),
            r.scheduler.to_string(),
            r.start.clone(),
            r.end.clone().unwrap_or_else(|| "-".to_string()),
            r.outcome.to_string(),
        ]);
    }
    who.render(&mut out);
    out.push('\n');

    let [gpu_time, energy, overhead, total_h, wasted] = money_headers(currency);
    let mut cost = Table::new(&[
        ("JOB", L, ID_CAP),
        ("GPUS", R, None),
        ("GPU-H", R, None),
        ("kWh", R, None),
        (&gpu_time, R, None),
        (&energy, R, None),
        (&overhead, R, None),
        (&total_h, R, None),
        ("CO2 kg", R, None),
        ("IDLE", R, None),
        (&wasted, R, None),
    ]);
    for r in rows {
        cost.rows.push(vec![
            r.id.to_string(),
            r.gpus.to_string(),
            fixed(r.gpu_hours, 2),
            fixed(r.kwh, 3),
            money(r.cost_gpu_time),
            money(r.cost_energy),
            money(r.cost_overhead),
            money(r.cost_total),
            fixed(r.co2_kg, 3),
            percent(r.idle_share),
            money(r.wasted_cost),
        ]);
    }
    cost.total_row = Some(vec![
        "TOTAL".to_string(),
        String::new(),
        fixed(total.gpu_hours, 2),
        fixed(total.kwh, 3),
        money(total.cost_gpu_time),
        money(total.cost_energy),
        money(total.cost_overhead),
        money(total.cost_total),
        fixed(total.co2_kg, 3),
        percent(total.idle_share),
        money(total.wasted_cost),
    ]);
    cost.render(&mut out);
    let with_tokens: Vec<&JobRow<'_>> = rows.iter().filter(|r| r.tokens.is_some()).collect();
    if !with_tokens.is_empty() {
        out.push('\n');
        let per_m = format!("{currency}/1M TOKENS");
        let mut eff = Table::new(&[
            ("JOB", L, ID_CAP),
            ("TOKENS", R, None),
            (&per_m, R, None),
            ("J/TOKEN", R, None),
        ]);
        for r in with_tokens {
            eff.rows.push(vec![
                r.id.to_string(),
                r.tokens.map_or_else(String::new, |t| t.to_string()),
                r.cost_per_million_tokens.map_or_else(String::new, money),
                r.joules_per_token.map_or_else(String::new, |j| fixed(j, 3)),
            ]);
        }
        eff.render(&mut out);
    }
    out.push_str(&format!(
        "{} job{}, {} failed\n",
        total.jobs,
        if total.jobs == 1 { "" } else { "s" },
        total.failed
    ));
    out
}

fn groups_table(groups: &[GroupRow], total: &Totals, spec: &str, currency: &str) -> String {
    use Align::{Left as L, Right as R};
    if groups.is_empty() {
        return "no jobs\n".to_string();
    }
    let [gpu_time, energy, overhead, total_h, wasted] = money_headers(currency);
    let mut t = Table::new(&[
        (spec, L, GROUP_CAP),
        ("JOBS", R, None),
        ("FAILED", R, None),
        ("GPU-H", R, None),
        ("kWh", R, None),
        (&gpu_time, R, None),
        (&energy, R, None),
        (&overhead, R, None),
        (&total_h, R, None),
        ("CO2 kg", R, None),
        (&wasted, R, None),
    ]);
    let row = |name: &str, t: &Totals| {
        vec![
            name.to_string(),
            t.jobs.to_string(),
            t.failed.to_string(),
            fixed(t.gpu_hours, 2),
            fixed(t.kwh, 3),
            money(t.cost_gpu_time),
            money(t.cost_energy),
            money(t.cost_overhead),
            money(t.cost_total),
            fixed(t.co2_kg, 3),
            money(t.wasted_cost),
        ]
    };
    for g in groups {
        t.rows.push(row(&g.group, &g.totals));
    }
    t.total_row = Some(row("TOTAL", total));
    let mut out = String::new();
    t.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::jobs::Scheduler;

    fn opts(format: Format, group_by: Option<&str>) -> ReportOptions {
        ReportOptions {
            format,
            group_by: group_by.map(str::to_string),
            currency: "EUR".to_string(),
        }
    }

    /// A 2-GPU job: 7200 GPU-s (2 GPU-h), 3.6e6 J (1 kWh), 400 g CO2, 10 + 0.5 + 1.5 = 12 EUR,
    /// 1800 idle GPU-s (25 %) costing 3 EUR.
    fn job(id: &str, outcome: Outcome, labels: &[(&str, &str)]) -> JobRecord {
        let usage = Usage {
            gpu_seconds: 7200.0,
            energy_j: 3.6e6,
            carbon_g: 400.0,
            cost_gpu_time: 10.0,
            cost_energy: 0.5,
            cost_overhead: 1.5,
            idle_gpu_seconds: 1800.0,
            idle_cost: 3.0,
            ..Usage::default()
        };
        let half = Usage {
            gpu_seconds: 3600.0,
            energy_j: 1.8e6,
            carbon_g: 200.0,
            cost_gpu_time: 5.0,
            cost_energy: 0.25,
            cost_overhead: 0.75,
            idle_gpu_seconds: 900.0,
            idle_cost: 1.5,
            ..Usage::default()
        };
        JobRecord {
            id: id.to_string(),
            name: format!("train-{id}"),
            user: "alice".to_string(),
            uid: Some(1000),
            scheduler: Scheduler::Slurm,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            started_at: 1_795_677_300.0, // 2026-11-26T07:15:00Z
            ended_at: (outcome != Outcome::Running).then_some(1_795_677_300.0 + 3600.0),
            outcome,
            exit_code: match outcome {
                Outcome::Succeeded => Some(0),
                Outcome::Failed => Some(1),
                _ => None,
            },
            signal: None,
            usage,
            per_gpu: [("GPU-a".to_string(), half), ("GPU-b".to_string(), half)]
                .into_iter()
                .collect(),
            registration: None,
            progress: None,
        }
    }

    fn render_json(jobs: &[JobRecord], group_by: Option<&str>) -> Value {
        serde_json::from_str(&render(jobs, &opts(Format::Json, group_by)).unwrap()).unwrap()
    }

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
            (253_402_300_800.0, "invalid time"),
            (f64::NAN, "invalid time"),
            (f64::INFINITY, "invalid time"),
        ] {
            assert_eq!(format_utc(unix), want, "{unix}");
        }
    }

    #[test]
    fn civil_from_days_matches_a_day_by_day_walk() {
        // Walk 1969-01-01 .. 2101-01-01 one day at a time with the plain calendar rules.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1969i64, 1u32, 1u32);
        for days in -365..48_213 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
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

    #[test]
    fn group_by_must_be_label_and_a_key() {
        assert_eq!(parse_group_by("label:team").unwrap(), "team");
        assert_eq!(parse_group_by("label:a:b").unwrap(), "a:b");
        for bad in ["team", "label:", "label: ", "user", "Label:team", ""] {
            let err = render(
                &[job("1", Outcome::Succeeded, &[])],
                &opts(Format::Table, Some(bad)),
            )
            .unwrap_err();
            assert!(matches!(err, ReportError::BadGroupBy(_)), "{bad}");
            assert!(err.to_string().contains("label:KEY"), "{err}");
        }
    }

    #[test]
    fn derived_numbers_by_hand() {
        // (outcome, gpu_hours, kwh, co2_kg, cost_total, idle_share, wasted_cost)
        let cases = [
            (Outcome::Succeeded, 2.0, 1.0, 0.4, 12.0, 0.25, 3.0),
            (Outcome::Running, 2.0, 1.0, 0.4, 12.0, 0.25, 3.0),
            // A failed run wastes all it cost.
            (Outcome::Failed, 2.0, 1.0, 0.4, 12.0, 0.25, 12.0),
        ];
        for (outcome, gpu_hours, kwh, co2_kg, cost_total, idle_share, wasted) in cases {
            let v = render_json(&[job("j", outcome, &[])], None);
            let j = &v["jobs"][0];
            assert_eq!(j["gpu_hours"], json!(gpu_hours), "{outcome:?}");
            assert_eq!(j["kwh"], json!(kwh));
            assert_eq!(j["co2_kg"], json!(co2_kg));
            assert_eq!(j["cost_total"], json!(cost_total));
            assert_eq!(j["idle_share"], json!(idle_share));
            assert_eq!(j["wasted_cost"], json!(wasted));
            assert_eq!(j["gpus"], json!(2));
            assert_eq!(j["gpu_seconds"], json!(7200.0));
            assert_eq!(j["energy_j"], json!(3.6e6));
            assert_eq!(v["total"]["wasted_cost"], json!(wasted));
        }
    }

    #[test]
    fn idle_share_is_zero_without_gpu_seconds() {
        let mut j = job("j", Outcome::Succeeded, &[]);
        j.usage = Usage::default();
        j.per_gpu.clear();
        let v = render_json(&[j], None);
        assert_eq!(v["jobs"][0]["idle_share"], json!(0.0));
        assert_eq!(v["jobs"][0]["gpus"], json!(0));
        assert_eq!(v["total"]["idle_share"], json!(0.0));
    }

    #[test]
    fn json_document_shape() {
        let mut running = job("r", Outcome::Running, &[("team", "nlp")]);
        running.uid = None;
        let v = render_json(&[job("s", Outcome::Succeeded, &[]), running], None);
        assert_eq!(v["currency"], "EUR");
        assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
        let s = &v["jobs"][0];
        assert_eq!(s["start"], "2026-11-26T07:15:00Z");
        assert_eq!(s["end"], "2026-11-26T08:15:00Z");
        assert_eq!(s["started_at"], json!(1_795_677_300.0));
        assert_eq!(s["outcome"], "succeeded");
        assert_eq!(s["scheduler"], "slurm");
        let r = &v["jobs"][1];
        assert_eq!(r["end"], Value::Null);
        assert_eq!(r["ended_at"], Value::Null);
        assert_eq!(r["uid"], Value::Null);
        assert_eq!(r["labels"], json!({"team": "nlp"}));
        let t = &v["total"];
        assert_eq!(t["jobs"], json!(2));
        assert_eq!(t["failed"], json!(0));
        assert_eq!(t["gpu_hours"], json!(4.0));
        assert_eq!(t["kwh"], json!(2.0));
        assert_eq!(t["cost_gpu_time"], json!(20.0));
        assert_eq!(t["cost_total"], json!(24.0));
        assert_eq!(t["co2_kg"], json!(0.8));
        assert_eq!(t["wasted_cost"], json!(6.0));
    }

    #[test]
    fn csv_has_the_json_job_columns_in_the_same_order() {
        let jobs = [job("j", Outcome::Succeeded, &[("team", "nlp")])];
        let json_text = render(&jobs, &opts(Format::Json, None)).unwrap();
        let v: Value = serde_json::from_str(&json_text).unwrap();
        let keys: Vec<&str> = v["jobs"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = JOB_COLUMNS.to_vec();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "JSON keys and CSV columns differ");
        // Same order: each column's key appears after the previous one in the JSON text.
        let job_text = &json_text[json_text.find("\"jobs\"").unwrap()..];
        let positions: Vec<usize> = JOB_COLUMNS
            .iter()
            .map(|c| job_text.find(&format!("\"{c}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

        let csv = render(&jobs, &opts(Format::Csv, None)).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], JOB_COLUMNS.join(","));
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "j,train-j,alice,1000,slurm,\"{\"\"team\"\":\"\"nlp\"\"}\",2026-11-26T07:15:00Z,\
             2026-11-26T08:15:00Z,1795677300,1795680900,succeeded,0,,2,7200,3600000,400,10,0.5,\
             1.5,1800,3,2,1,0.4,12,0.25,3,0,,,"
        );
        assert_eq!(
            lines[2],
            "TOTAL,,,,,,,,,,,,,,7200,3600000,400,10,0.5,1.5,1800,3,2,1,0.4,12,0.25,3,,,,"
        );
    }

    #[test]
    fn csv_quotes_commas_quotes_and_newlines() {
        for (field, want) in [
            ("plain", "plain"),
            ("a, b", "\"a, b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("llama, \"big\"", "\"llama, \"\"big\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\r", "\"cr\r\""),
            ("", ""),
        ] {
            assert_eq!(csv_field(field), want);
        }
        let mut j = job("j", Outcome::Succeeded, &[]);
        j.name = "llama, \"big\"".to_string();
        let csv = render(&[j], &opts(Format::Csv, None)).unwrap();
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("j,\"llama, \"\"big\"\"\",alice,"),
            "{csv}"
        );
    }

    #[test]
    fn table_numbers_headers_and_total() {
        let jobs = [
            job("slurm-4812", Outcome::Succeeded, &[]),
            job("slurm-4813", Outcome::Failed, &[]),
        ];
        let out = render(&jobs, &opts(Format::Table, None)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("JOB "), "{out}");
        assert!(lines[1].contains("2026-11-26T07:15:00Z  2026-11-26T08:15:00Z  succeeded"));
        assert!(lines[2].ends_with("failed"));
        assert_eq!(lines[3], "");
        for h in [
            "GPU-TIME EUR",
            "ENERGY EUR",
            "OVERHEAD EUR",
            "TOTAL EUR",
            "WASTED EUR",
        ] {
            assert!(lines[4].contains(h), "{h} in {}", lines[4]);
        }
        let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        // JOB GPUS GPU-H kWh GPU-TIME ENERGY OVERHEAD TOTAL CO2 IDLE WASTED
        assert_eq!(
            cells(lines[5]),
            [
                "slurm-4812",
                "2",
                "2.00",
                "1.000",
                "10.00",
                "0.50",
                "1.50",
                "12.00",
                "0.400",
                "25%",
                "3.00"
            ]
        );
        assert_eq!(
            cells(lines[6]),
            [
                "slurm-4813",
                "2",
                "2.00",
                "1.000",
                "10.00",
                "0.50",
                "1.50",
                "12.00",
                "0.400",
                "25%",
                "12.00"
            ]
        );
        assert!(lines[7].chars().all(|c| c == '-'));
        assert_eq!(
            cells(lines[8]),
            ["TOTAL", "4.00", "2.000", "20.00", "1.00", "3.00", "24.00", "0.800", "25%", "15.00"]
        );
        assert_eq!(lines[9], "2 jobs, 1 failed");
        assert_eq!(lines.len(), 10);
        // Numbers are right-aligned: every cost line has the same length.
        assert_eq!(lines[5].len(), lines[6].len());
        for l in &lines {
            assert!(l.chars().count() <= 120, "{} wide: {l}", l.chars().count());
        }
    }

    #[test]
    fn table_cuts_long_names_and_hides_control_characters() {
        let mut j = job("j", Outcome::Running, &[]);
        j.name = "a-very-long-training-run-name-indeed".to_string();
        j.user = "evil\u{1b}[2J".to_string();
        let out = render(&[j], &opts(Format::Table, None)).unwrap();
        assert!(out.contains("a-very-long-trainin… "), "{out}");
        assert!(!out.contains('\u{1b}'));
        assert!(out.contains("evil?[2J"));
        // Running: no end.
        assert!(out.lines().nth(1).unwrap().contains("Z  -  "), "{out}");
    }

    #[test]
    fn empty_input() {
        for group_by in [None, Some("label:team")] {
            assert_eq!(
                render(&[], &opts(Format::Table, group_by)).unwrap(),
                "no jobs\n"
            );
        }
        let v = render_json(&[], None);
        assert_eq!(v["jobs"], json!([]));
        assert_eq!(v["total"]["jobs"], json!(0));
        assert_eq!(v["total"]["cost_total"], json!(0.0));
        assert_eq!(v["total"]["idle_share"], json!(0.0));
        let v = render_json(&[], Some("label:team"));
        assert_eq!(v["groups"], json!([]));
        assert_eq!(v["total"]["gpu_hours"], json!(0.0));
        let csv = render(&[], &opts(Format::Csv, None)).unwrap();
        assert_eq!(csv.lines().count(), 2);
        assert!(csv.lines().nth(1).unwrap().starts_with("TOTAL,"));
    }

    fn grouped_jobs() -> Vec<JobRecord> {
        let mut cheap = job("c", Outcome::Succeeded, &[("team", "vision")]);
        cheap.usage.cost_gpu_time = 1.0; // total 3.0
        vec![
            job("a", Outcome::Succeeded, &[("team", "nlp")]),
            job("b", Outcome::Failed, &[("team", "nlp"), ("proj", "x")]),
            cheap,
            job("d", Outcome::Unknown, &[("proj", "y")]),
        ]
    }

    #[test]
    fn group_by_label_sums() {
        let v = render_json(&grouped_jobs(), Some("label:team"));
        assert_eq!(v["group_by"], "label:team");
        assert!(v.get("jobs").is_none());
        let groups = v["groups"].as_array().unwrap();
        // (group, jobs, failed, gpu_hours, kwh, cost_gpu_time, cost_total, co2_kg, wasted_cost)
        let want = [
            ("nlp", 2, 1, 4.0, 2.0, 20.0, 24.0, 0.8, 3.0 + 12.0),
            ("(none)", 1, 0, 2.0, 1.0, 10.0, 12.0, 0.4, 3.0),
            ("vision", 1, 0, 2.0, 1.0, 1.0, 3.0, 0.4, 3.0),
        ];
        assert_eq!(groups.len(), want.len());
        for (g, (name, jobs, failed, gpu_h, kwh, gpu_time, total, co2, wasted)) in
            groups.iter().zip(want)
        {
            assert_eq!(g["group"], name);
            assert_eq!(g["jobs"], json!(jobs), "{name}");
            assert_eq!(g["failed"], json!(failed), "{name}");
            assert_eq!(g["gpu_hours"], json!(gpu_h), "{name}");
            assert_eq!(g["kwh"], json!(kwh), "{name}");
            assert_eq!(g["cost_gpu_time"], json!(gpu_time), "{name}");
            assert_eq!(g["cost_energy"], json!(0.5 * jobs as f64), "{name}");
            assert_eq!(g["cost_overhead"], json!(1.5 * jobs as f64), "{name}");
            assert_eq!(g["cost_total"], json!(total), "{name}");
            assert_eq!(g["co2_kg"], json!(co2), "{name}");
            assert_eq!(g["wasted_cost"], json!(wasted), "{name}");
        }
        let t = &v["total"];
        assert_eq!(t["jobs"], json!(4));
        assert_eq!(t["failed"], json!(1));
        assert_eq!(t["gpu_hours"], json!(8.0));
        assert_eq!(t["cost_total"], json!(39.0));
        assert_eq!(t["wasted_cost"], json!(21.0));
    }

    #[test]
    fn group_by_table_and_csv() {
        let jobs = grouped_jobs();
        let out = render(&jobs, &opts(Format::Table, Some("label:proj"))).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("label:proj"), "{out}");
        assert!(lines[0].contains("TOTAL EUR") && lines[0].contains("FAILED"));
        let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        // group JOBS FAILED GPU-H kWh GPU-TIME ENERGY OVERHEAD TOTAL CO2 WASTED
        assert_eq!(
            cells(lines[1]),
            [
                "(none)", "2", "0", "4.00", "2.000", "11.00", "1.00", "3.00", "15.00", "0.800",
                "6.00"
            ]
        );
        assert_eq!(cells(lines[2])[0..3], ["x", "1", "1"]);
        assert_eq!(cells(lines[2])[10], "12.00");
        assert_eq!(cells(lines[3])[0], "y");
        assert!(lines[4].chars().all(|c| c == '-'));
        assert_eq!(
            cells(lines[5]),
            [
                "TOTAL", "4", "1", "8.00", "4.000", "31.00", "2.00", "6.00", "39.00", "1.600",
                "21.00"
            ]
        );

        let csv = render(&jobs, &opts(Format::Csv, Some("label:proj"))).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "group,jobs,failed,gpu_seconds,energy_j,carbon_g,cost_gpu_time,cost_energy,\
             cost_overhead,idle_gpu_seconds,idle_cost,gpu_hours,kwh,co2_kg,cost_total,\
             idle_share,wasted_cost"
        );
        assert!(lines[1].starts_with("(none),2,0,14400,"), "{csv}");
        assert!(lines[4].starts_with("TOTAL,4,1,28800,"), "{csv}");
        assert!(lines[4].ends_with(",39,0.25,21"), "{csv}");
    }
}
