//! The report as CSV (RFC 4180 through the `csv` crate; lines end in `\n`): a header of the
//! model's column names, one line per row, then the total, whose first field is `TOTAL`. Text
//! that a spreadsheet would run as a formula starts with a `'`.

use std::collections::HashMap;

use gpucost_core::report::{GroupRow, JobRow, Report, Rows, Value};

use super::format_utc;

/// The report as CSV text.
pub(super) fn render(report: &Report<'_>) -> Result<String, ::csv::Error> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let total = report.total.values();
    match &report.rows {
        Rows::Jobs(rows) => {
            w.write_record(JobRow::column_names())?;
            for r in rows {
                w.write_record(r.values().map(|(_, v)| field(v)))?;
            }
            // The total's figures under the jobs' columns of the same name; nothing under the
            // others (a sum of GPU counts would count a GPU that two jobs used twice).
            let total: HashMap<&str, Value<'_>> = total.collect();
            w.write_record(JobRow::column_names().enumerate().map(|(i, c)| {
                if i == 0 {
                    "TOTAL".to_string()
                } else {
                    total.get(c).map_or_else(String::new, |v| field(*v))
                }
            }))?;
        }
        Rows::Groups { groups, .. } => {
            w.write_record(GroupRow::column_names())?;
            for g in groups {
                w.write_record(g.values().map(|(_, v)| field(v)))?;
            }
            w.write_record(
                std::iter::once("TOTAL".to_string()).chain(total.map(|(_, v)| field(v))),
            )?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ::csv::Error::from(e.into_error()))?;
    // Every field was a `String`: the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A value as a CSV field: text that could start a formula with a `'` in front ([`text`]),
/// numbers as Rust prints them (`7200`, `0.25`, `-1`), times as UTC ISO 8601, labels as a JSON
/// object (which starts with `{`), a missing value as nothing.
fn field(v: Value<'_>) -> String {
    match v {
        Value::Text(t) => text(t),
        Value::Int(i) => i.to_string(),
        Value::Count(n) => n.to_string(),
        Value::Real(x) => x.to_string(),
        Value::Time(t) => format_utc(t),
        Value::Labels(labels) => serde_json::to_string(labels).unwrap_or_default(),
        Value::Missing => String::new(),
    }
}

/// Text from job data (ids, names, users, label values as group names) as a cell no spreadsheet
/// runs as a formula. A spreadsheet that opens a CSV file takes a cell starting with `=`, `+`,
/// `-` or `@` as a formula (which may run commands, `=cmd|' /C calc'!A0`, or send data away), and
/// a leading tab or carriage return can hide such a start; OWASP's "CSV Injection"
/// (https://owasp.org/www-community/attacks/CSV_Injection) says to put a single quote in front of
/// such cells, which spreadsheets show as text. The quote stays in the value a CSV parser reads.
pub(super) fn text(t: &str) -> String {
    if t.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{t}")
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value as Json;

    use super::super::fixtures::{grouped_jobs, job, opts};
    use super::super::{render, Format};
    use super::*;
    use gpucost_core::jobs::Outcome;

    #[test]
    fn csv_has_the_json_job_columns_in_the_same_order() {
        let jobs = [job("j", Outcome::Succeeded, &[("team", "nlp")])];
        let columns: Vec<&str> = JobRow::column_names().collect();
        let json_text = render(&jobs, &opts(Format::Json, None)).unwrap();
        let v: Json = serde_json::from_str(&json_text).unwrap();
        let keys: Vec<&str> = v["jobs"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = columns.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "JSON keys and CSV columns differ");
        // Same order: each column's key appears after the previous one in the JSON text.
        let job_text = &json_text[json_text.find("\"jobs\"").unwrap()..];
        let positions: Vec<usize> = columns
            .iter()
            .map(|c| job_text.find(&format!("\"{c}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

        let csv = render(&jobs, &opts(Format::Csv, None)).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], columns.join(","));
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "j,train-j,alice,1000,slurm,\"{\"\"team\"\":\"\"nlp\"\"}\",2026-11-26T07:15:00Z,\
             2026-11-26T08:15:00Z,1795677300,1795680900,succeeded,0,,,2,7200,3600000,400,10,0.5,\
             1.5,1800,3,2,1,0.4,12,0.25,3,0,,,"
        );
        assert_eq!(
            lines[2],
            "TOTAL,,,,,,,,,,,,,,,7200,3600000,400,10,0.5,1.5,1800,3,2,1,0.4,12,0.25,3,,,,"
        );
        assert!(csv.ends_with(",3,,,,\n") && !csv.contains('\r'), "{csv:?}");
    }

    #[test]
    fn csv_quotes_commas_quotes_and_newlines() {
        for (name, want) in [
            ("plain", "plain"),
            ("a, b", "\"a, b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("llama, \"big\"", "\"llama, \"\"big\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\r", "\"cr\r\""),
            ("", ""),
        ] {
            let mut j = job("j", Outcome::Succeeded, &[]);
            j.name = name.to_string();
            let csv = render(&[j], &opts(Format::Csv, None)).unwrap();
            let row = csv.split_once('\n').unwrap().1;
            assert!(
                row.starts_with(&format!("j,{want},alice,")),
                "{name:?}: {csv}"
            );
        }
    }

    /// Issue 13, item 10: cells from job data went out as written, so a job named
    /// `=cmd|' /C calc'!A0` became a formula in a spreadsheet that opened the report. Text that
    /// starts like a formula gets a `'` in front; numbers stay numbers.
    #[test]
    fn csv_text_that_starts_like_a_formula_is_quoted_with_an_apostrophe() {
        for (name, want) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1+2", "'+1+2"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "\"'\r=1\""),
            (
                "=HYPERLINK(\"http://x\", \"y\")",
                "\"'=HYPERLINK(\"\"http://x\"\", \"\"y\"\")\"",
            ),
            ("a=b", "a=b"),
            ("'quoted", "'quoted"),
            ("llama-7b", "llama-7b"),
        ] {
            let mut j = job("j", Outcome::Failed, &[("team", "=1+1")]);
            j.name = name.to_string();
            j.user = "@root".to_string();
            j.exit_code = Some(-1);
            let csv = render(&[j], &opts(Format::Csv, None)).unwrap();
            let row = csv.lines().nth(1).unwrap();
            assert!(
                row.starts_with(&format!("j,{want},'@root,1000,slurm,")),
                "{name:?}: {csv}"
            );
            // A label's value is inside its JSON object, which starts with `{`; the exit code
            // -1 is a number.
            assert!(row.contains(",\"{\"\"team\"\":\"\"=1+1\"\"}\","), "{row}");
            assert!(row.contains(",failed,-1,"), "{row}");
        }
        // A job id, and a group's name (a label's value).
        let jobs = [job("-1", Outcome::Succeeded, &[("team", "+nlp")])];
        let csv = render(&jobs, &opts(Format::Csv, None)).unwrap();
        assert!(
            csv.lines().nth(1).unwrap().starts_with("'-1,train--1,"),
            "{csv}"
        );
        let csv = render(&jobs, &opts(Format::Csv, Some("label:team"))).unwrap();
        assert!(
            csv.lines().nth(1).unwrap().starts_with("'+nlp,1,0,"),
            "{csv}"
        );
    }

    #[test]
    fn empty_input() {
        let csv = render(&[], &opts(Format::Csv, None)).unwrap();
        assert_eq!(csv.lines().count(), 2);
        assert!(csv.lines().nth(1).unwrap().starts_with("TOTAL,"));
    }

    #[test]
    fn grouped() {
        let csv = render(&grouped_jobs(), &opts(Format::Csv, Some("label:proj"))).unwrap();
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
