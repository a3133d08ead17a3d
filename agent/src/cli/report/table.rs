//! The report as text tables for a terminal, laid out by comfy-table with no borders: columns
//! two spaces apart, numbers right-aligned, long names cut with `…`, a rule above the TOTAL row.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ColumnConstraint, Row, Table, Width};

use gpucost_core::report::{Figures, GroupRow, JobRow, Report, Rows, Totals};
use unicode_width::UnicodeWidthStr;

use super::format_utc;

use CellAlignment::{Left as L, Right as R};

/// ids are what `--job` takes: never cut.
const ID_CAP: Option<u16> = None;
const NAME_CAP: Option<u16> = Some(20);
const USER_CAP: Option<u16> = Some(10);
const GROUP_CAP: Option<u16> = Some(24);

/// The report as text; `no jobs` when it has no rows.
pub(super) fn render(report: &Report<'_>, currency: &str) -> String {
    if report.is_empty() {
        return "no jobs\n".to_string();
    }
    match &report.rows {
        Rows::Jobs(rows) => jobs_table(rows, &report.total, currency),
        Rows::Groups { by, groups } => groups_table(by, groups, &report.total, currency),
    }
}

fn groups_table(by: &str, groups: &[GroupRow], total: &Totals, currency: &str) -> String {
    let money_h = money_headers(currency);
    let mut columns = vec![(by, L, GROUP_CAP)];
    columns.extend([("JOBS", R, None), ("FAILED", R, None)]);
    columns.extend(usage_columns(&money_h));
    columns.push((&money_h.wasted, R, None));
    let row = |name: &str, t: &Totals| {
        let mut cells = vec![name.to_string(), t.jobs.to_string(), t.failed.to_string()];
        cells.extend(usage_cells(&t.figures));
        cells.push(money(t.figures.wasted_cost));
        cells
    };
    let rows = groups.iter().map(|g| row(&g.group, &g.totals));
    table(&columns, rows, Some(row("TOTAL", total)))
}

fn jobs_table(rows: &[JobRow<'_>], total: &Totals, currency: &str) -> String {
    let who = table(
        &[
            ("JOB", L, ID_CAP),
            ("NAME", L, NAME_CAP),
            ("USER", L, USER_CAP),
            ("SCHEDULER", L, None),
            ("START (UTC)", L, None),
            ("END (UTC)", L, None),
            ("OUTCOME", L, None),
        ],
        rows.iter().map(|r| {
            let j = r.job;
            vec![
                j.id.clone(),
                j.name.clone(),
                j.user.clone(),
                j.scheduler.as_str().to_string(),
                format_utc(j.started_at),
                j.ended_at.map_or_else(|| "-".to_string(), format_utc),
                j.outcome.as_str().to_string(),
            ]
        }),
        None,
    );

    let money_h = money_headers(currency);
    let mut columns = vec![("JOB", L, ID_CAP), ("GPUS", R, None)];
    columns.extend(usage_columns(&money_h));
    columns.extend([("IDLE", R, None), (&money_h.wasted, R, None)]);
    let cost_row = |id: &str, gpus: String, f: &Figures| {
        let mut cells = vec![id.to_string(), gpus];
        cells.extend(usage_cells(f));
        cells.extend([percent(f.idle_share()), money(f.wasted_cost)]);
        cells
    };
    let cost = table(
        &columns,
        rows.iter()
            .map(|r| cost_row(&r.job.id, r.gpus().to_string(), &r.figures)),
        // No GPU count: the GPUs of different jobs may be the same GPUs.
        Some(cost_row("TOTAL", String::new(), &total.figures)),
    );

    let mut out = who + "\n" + &cost;
    if rows.iter().any(|r| r.tokens().is_some()) {
        let per_m = format!("{currency}/1M TOKENS");
        out.push('\n');
        out += &table(
            &[
                ("JOB", L, ID_CAP),
                ("TOKENS", R, None),
                (&per_m, R, None),
                ("J/TOKEN", R, None),
            ],
            rows.iter().filter_map(|r| {
                let tokens = r.tokens()?;
                Some(vec![
                    r.job.id.clone(),
                    tokens.to_string(),
                    r.cost_per_million_tokens().map_or_else(String::new, money),
                    r.joules_per_token()
                        .map_or_else(String::new, |j| fixed(j, 3)),
                ])
            }),
            None,
        );
    }
    out += &format!(
        "{} job{}, {} failed\n",
        total.jobs,
        if total.jobs == 1 { "" } else { "s" },
        total.failed
    );
    out
}

/// The money columns' headers: `GPU-TIME EUR`, ...
struct MoneyHeaders {
    gpu_time: String,
    energy: String,
    overhead: String,
    total: String,
    wasted: String,
}

fn money_headers(currency: &str) -> MoneyHeaders {
    MoneyHeaders {
        gpu_time: format!("GPU-TIME {currency}"),
        energy: format!("ENERGY {currency}"),
        overhead: format!("OVERHEAD {currency}"),
        total: format!("TOTAL {currency}"),
        wasted: format!("WASTED {currency}"),
    }
}

/// The columns that jobs and groups share: GPU-hours, energy, the cost by component and in
/// total, and carbon.
fn usage_columns(h: &MoneyHeaders) -> [(&str, CellAlignment, Option<u16>); 7] {
    [
        ("GPU-H", R, None),
        ("kWh", R, None),
        (&h.gpu_time, R, None),
        (&h.energy, R, None),
        (&h.overhead, R, None),
        (&h.total, R, None),
        ("CO2 kg", R, None),
    ]
}

/// The cells of [`usage_columns`].
fn usage_cells(f: &Figures) -> [String; 7] {
    [
        fixed(f.gpu_hours(), 2),
        fixed(f.kwh(), 3),
        money(f.usage.cost_gpu_time),
        money(f.usage.cost_energy),
        money(f.usage.cost_overhead),
        money(f.cost_total()),
        fixed(f.co2_kg(), 3),
    ]
}

/// A table of `columns` (header, alignment, the most characters a cell shows), then `rows`,
/// then `total` under a rule of dashes as wide as the table. Each line ends in `\n`, without
/// trailing spaces.
pub(super) fn table(
    columns: &[(&str, CellAlignment, Option<u16>)],
    rows: impl IntoIterator<Item = Vec<String>>,
    total: Option<Vec<String>>,
) -> String {
    // One line per row: a cell longer than its cap is cut, and ends in `…`.
    let row = |cells: Vec<String>| {
        let mut row = Row::from(cells.iter().map(|c| clean(c)));
        row.max_height(1);
        row
    };
    let mut t = Table::new();
    t.load_preset(NOTHING).set_truncation_indicator("…");
    t.set_header(row(columns.iter().map(|c| c.0.to_string()).collect()));
    for cells in rows {
        t.add_row(row(cells));
    }
    let has_total = total.is_some();
    if let Some(cells) = total {
        t.add_row(row(cells));
    }
    let last = columns.len() - 1;
    for (i, (column, &(_, align, cap))) in t.column_iter_mut().zip(columns).enumerate() {
        // Two spaces between columns, none before the first or after the last.
        column.set_padding((u16::from(i > 0), u16::from(i < last)));
        column.set_cell_alignment(align);
        if let Some(cap) = cap {
            let width = Width::Fixed(cap + column.padding_width());
            column.set_constraint(ColumnConstraint::UpperBoundary(width));
            // Cut at the cap, not at a word: comfy-table wraps at its delimiter, and no cell
            // holds NUL (`clean` turned every control character into `?`).
            column.set_delimiter('\0');
        }
    }
    let mut lines: Vec<String> = t.lines().collect();
    if has_total {
        // Every line is as wide as the table before its trailing spaces go.
        let width = lines.first().map_or(0, |l| l.width());
        lines.insert(lines.len() - 1, "-".repeat(width));
    }
    lines
        .iter()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

/// Control characters (a newline in a job name, a terminal escape) never reach the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `v` with `decimals` decimals, never `-0.00`.
fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(abs) if abs.chars().all(|c| c == '0' || c == '.') => abs.to_string(),
        _ => s,
    }
}

pub(super) fn money(v: f64) -> String {
    fixed(v, 2)
}

fn percent(share: f64) -> String {
    format!("{}%", fixed(share * 100.0, 0))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{grouped_jobs, job, opts};
    use super::super::{render, Format};
    use gpucost_core::jobs::{Outcome, Progress};

    fn cells(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn table_text() {
        // The whole text of a small report: two tables and the count, as a terminal shows it.
        let mut j = job("slurm-4812", Outcome::Succeeded, &[]);
        j.progress = Some(Progress {
            tokens: 4_000_000,
            ..Progress::default()
        });
        let jobs = [j, job("slurm-4813", Outcome::Failed, &[])];
        let out = render(&jobs, &opts(Format::Table, None)).unwrap();
        let want = "\
JOB         NAME              USER   SCHEDULER  START (UTC)           END (UTC)             OUTCOME
slurm-4812  train-slurm-4812  alice  slurm      2026-11-26T07:15:00Z  2026-11-26T08:15:00Z  succeeded
slurm-4813  train-slurm-4813  alice  slurm      2026-11-26T07:15:00Z  2026-11-26T08:15:00Z  failed

JOB         GPUS  GPU-H    kWh  GPU-TIME EUR  ENERGY EUR  OVERHEAD EUR  TOTAL EUR  CO2 kg  IDLE  WASTED EUR
slurm-4812     2   2.00  1.000         10.00        0.50          1.50      12.00   0.400   25%        3.00
slurm-4813     2   2.00  1.000         10.00        0.50          1.50      12.00   0.400   25%       12.00
-----------------------------------------------------------------------------------------------------------
TOTAL              4.00  2.000         20.00        1.00          3.00      24.00   0.800   25%       15.00

JOB          TOKENS  EUR/1M TOKENS  J/TOKEN
slurm-4812  4000000           3.00    0.900
2 jobs, 1 failed
";
        assert_eq!(out, want);
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
        assert_eq!(lines[7].len(), lines[5].len());
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
            assert_eq!(l.trim_end(), *l, "trailing spaces");
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
        // A name with spaces is cut at the cap too, not at a word.
        let mut j = job("j", Outcome::Running, &[]);
        j.name = "llama 70b pretraining run".to_string();
        let out = render(&[j], &opts(Format::Table, None)).unwrap();
        assert!(out.contains("llama 70b pretraini… "), "{out}");
        // The cap is in terminal columns: wide characters count twice.
        let mut j = job("j", Outcome::Running, &[]);
        j.name = "日本語の長いトレーニングジョブ名です".to_string();
        let out = render(&[j], &opts(Format::Table, None)).unwrap();
        assert!(out.contains("  日本語の長いトレー…   alice"), "{out}");
    }

    #[test]
    fn empty_input() {
        for group_by in [None, Some("label:team")] {
            assert_eq!(
                render(&[], &opts(Format::Table, group_by)).unwrap(),
                "no jobs\n"
            );
        }
    }

    #[test]
    fn group_by_table() {
        let out = render(&grouped_jobs(), &opts(Format::Table, Some("label:proj"))).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("label:proj"), "{out}");
        assert!(lines[0].contains("TOTAL EUR") && lines[0].contains("FAILED"));
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
    }
}
