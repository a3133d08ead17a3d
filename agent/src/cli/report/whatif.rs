//! `gpucost report --what-if`: each job's (or group's) actual cost next to what it would have
//! cost with each lever ([`gpucost_core::report::whatif`]), as a table, JSON or CSV. A lever
//! whose inputs are unknown shows `unknown` (JSON: `null`), never a number.

use std::collections::{BTreeMap, BTreeSet};

use comfy_table::CellAlignment;
use serde_json::json;

use gpucost_core::account::pricing::Pricing;
use gpucost_core::jobs::JobRecord;
use gpucost_core::report::whatif::{self, Lever, WhatIf, WhatIfOptions};
use gpucost_core::report::{parse_group_by, NO_LABEL_GROUP};

use super::Format;

/// The rows: one per job, or per value of the `--group-by` label (most expensive first), and
/// the total.
pub(super) struct WhatIfTable {
    /// `id` or `group`.
    pub key: &'static str,
    pub rows: Vec<(String, WhatIf)>,
    pub total: WhatIf,
    pub opts: WhatIfOptions,
}

/// `model_of` maps the keys of each job's `per_gpu` (GPU UUIDs, or nodes) to GPU models;
/// `pipes_measured`, where given, the jobs whose pipes were measured besides those whose usage
/// says so.
pub(super) fn what_if_table(
    jobs: &[JobRecord],
    model_of: &BTreeMap<String, String>,
    pricing: &Pricing,
    pipes_measured: Option<&BTreeSet<String>>,
    group_by: Option<&str>,
    opts: WhatIfOptions,
) -> anyhow::Result<WhatIfTable> {
    let each: Vec<(&JobRecord, WhatIf)> = jobs
        .iter()
        .map(|j| {
            let pipes = whatif::pipes_measured(&j.usage)
                || pipes_measured.is_some_and(|m| m.contains(&j.id));
            (
                j,
                whatif::what_if_measured(j, pipes, model_of, pricing, &opts),
            )
        })
        .collect();
    let total = WhatIf::sum(each.iter().map(|(_, w)| w));
    let (key, rows) = match group_by {
        None => (
            "id",
            each.into_iter().map(|(j, w)| (j.id.clone(), w)).collect(),
        ),
        Some(spec) => {
            let label = parse_group_by(spec)?;
            let mut by: BTreeMap<&str, Vec<&WhatIf>> = BTreeMap::new();
            for (j, w) in &each {
                let g = j.labels.get(label).map_or(NO_LABEL_GROUP, String::as_str);
                by.entry(g).or_default().push(w);
            }
            let mut rows: Vec<(String, WhatIf)> = by
                .into_iter()
                .map(|(g, ws)| (g.to_string(), WhatIf::sum(ws)))
                .collect();
            rows.sort_by(|a, b| b.1.actual.total_cmp(&a.1.actual).then(a.0.cmp(&b.0)));
            ("group", rows)
        }
    };
    Ok(WhatIfTable {
        key,
        rows,
        total,
        opts,
    })
}

pub(super) fn render(t: &WhatIfTable, format: Format, currency: &str) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => text(t, currency),
        Format::Json => serde_json::to_string_pretty(&json_value(t))? + "\n",
        Format::Csv => csv(t)?,
    })
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".to_string(), super::table::money)
}

fn text(t: &WhatIfTable, currency: &str) -> String {
    use CellAlignment::{Left as L, Right as R};
    let actual = format!("ACTUAL {currency}");
    let mut columns = vec![(if t.key == "id" { "JOB" } else { "GROUP" }, L, Some(40))];
    columns.push((actual.as_str(), R, None));
    let heads = [
        "SPOT",
        "RESERVED",
        "OFF-PEAK",
        "BF16",
        "NO-IDLE",
        "CHECKPOINT",
    ];
    for h in heads {
        columns.push((h, R, None));
    }
    let cells = |name: &str, w: &WhatIf| {
        let mut c = vec![name.to_string(), super::table::money(w.actual)];
        for lever in Lever::ALL {
            let mut s = cell(w.with(lever));
            if lever == Lever::OffPeak && !w.off_peak_fits {
                // It would not fit in one stretch of the cheapest tariff.
                s.push('*');
            }
            c.push(s);
        }
        c
    };
    let rows = t.rows.iter().map(|(n, w)| cells(n, w));
    let mut out = format!(
        "\nWhat if (the cost with each lever; unknown where it was not measured or priced; spot \
         with {:.0}% done again; * = longer than the cheapest tariff's stretch):\n",
        t.opts.spot_rerun * 100.0
    );
    out.push_str(&super::table::table(
        &columns,
        rows,
        Some(cells("TOTAL", &t.total)),
    ));
    out
}

fn json_row(w: &WhatIf) -> serde_json::Value {
    let mut v = json!({ "actual": w.actual, "off_peak_fits": w.off_peak_fits });
    for lever in Lever::ALL {
        v[lever.as_str()] = json!(w.with(lever));
    }
    v
}

pub(super) fn json_value(t: &WhatIfTable) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = t
        .rows
        .iter()
        .map(|(name, w)| {
            let mut v = json_row(w);
            v[t.key] = json!(name);
            v
        })
        .collect();
    json!({
        "spot_rerun": t.opts.spot_rerun,
        "rows": rows,
        "total": json_row(&t.total),
    })
}

fn csv(t: &WhatIfTable) -> anyhow::Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let mut header = vec![t.key, "actual"];
    header.extend(Lever::ALL.map(Lever::as_str));
    header.push("off_peak_fits");
    w.write_record(&header)?;
    let record = |name: String, x: &WhatIf| {
        let mut r = vec![name, x.actual.to_string()];
        r.extend(Lever::ALL.map(|l| {
            x.with(l)
                .map_or_else(|| "unknown".to_string(), |v| v.to_string())
        }));
        r.push(x.off_peak_fits.to_string());
        r
    };
    for (name, x) in &t.rows {
        w.write_record(record(super::csv::text(name), x))?;
    }
    w.write_record(record("TOTAL".into(), &t.total))?;
    Ok(String::from_utf8(
        w.into_inner().map_err(|e| e.into_error())?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::job;
    use super::*;
    use gpucost_core::jobs::{GpuRecord, Outcome, Usage};

    fn gpu(uuid: &str) -> GpuRecord {
        GpuRecord {
            uuid: uuid.into(),
            index: 0,
            model: "NVIDIA H100 80GB HBM3".into(),
            usage: Usage::default(),
            unallocated_seconds: 0.0,
            events: Default::default(),
        }
    }

    fn pricing(extra: &str) -> Pricing {
        let text = format!("[[gpu]]\nmatch = \"H100\"\non_demand_per_hour = 5.0\n{extra}");
        let v: toml::Value = toml::from_str(&text).unwrap();
        gpucost_core::account::pricing::from_toml_value(&v).unwrap()
    }

    /// The fixture's jobs hold 2 GPU-hours on GPU-a and GPU-b; at 2.5/h spot that is 5, plus
    /// energy 0.5 and overhead 1.5, plus 10% done again.
    #[test]
    fn per_job_and_grouped_in_every_format() {
        let jobs = [
            job("a", Outcome::Succeeded, &[("team", "nlp")]),
            job("b", Outcome::Failed, &[("team", "nlp")]),
            job("c", Outcome::Succeeded, &[]),
        ];
        let (_, gpus) = super::super::gpu_models(&[gpu("GPU-a"), gpu("GPU-b")]);
        let p = pricing("spot_per_hour = 2.5\n");
        let t = what_if_table(&jobs, &gpus, &p, None, None, WhatIfOptions::default()).unwrap();
        assert_eq!(t.rows.len(), 3);
        let spot = t.rows[0].1.with(Lever::Spot).unwrap();
        assert!((spot - 7.0 * 1.1).abs() < 1e-9, "{spot}");
        assert_eq!(t.rows[0].1.with(Lever::Reserved), None);
        assert_eq!(t.total.with(Lever::Reserved), None);
        assert!((t.total.with(Lever::Spot).unwrap() - 3.0 * 7.7).abs() < 1e-9);

        let table = render(&t, Format::Table, "USD").unwrap();
        assert!(
            table.contains("ACTUAL USD") && table.contains("unknown"),
            "{table}"
        );
        assert!(table.contains("7.70"), "{table}");
        let doc: serde_json::Value =
            serde_json::from_str(&render(&t, Format::Json, "USD").unwrap()).unwrap();
        assert_eq!(doc["rows"][0]["id"], "a");
        assert!(doc["rows"][0]["reserved"].is_null());
        assert_eq!(doc["spot_rerun"], 0.1);
        let csv = render(&t, Format::Csv, "USD").unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("id,actual,spot,reserved,off_peak,bf16,no_idle,checkpoint,off_peak_fits")
        );
        assert!(csv.contains(",unknown,"), "{csv}");
        assert!(csv.lines().last().unwrap().starts_with("TOTAL,"), "{csv}");

        let g = what_if_table(
            &jobs,
            &gpus,
            &p,
            None,
            Some("label:team"),
            WhatIfOptions::default(),
        )
        .unwrap();
        assert_eq!(g.key, "group");
        assert_eq!(g.rows[0].0, "nlp");
        assert!((g.rows[0].1.actual - 2.0 * jobs[0].usage.total_cost()).abs() < 1e-9);
        assert_eq!(g.rows[1].0, NO_LABEL_GROUP);
    }

    /// Issue 20, item 2: the agent's `gpucost_job_savings_potential` is the report's what-if,
    /// lever by lever, for the same jobs, GPUs and prices; a lever the report calls unknown has
    /// no series (never a 0).
    #[test]
    fn issue_20_the_exported_savings_are_the_reports_what_if() {
        use std::sync::Arc;

        use crate::snapshot::{Published, Snapshot, WhatIfPrices};
        use gpucost_core::reading::Source;

        // b failed after 10 FP32-bound minutes (its pipes were measured); u ended unknown.
        let mut failed = job("b", Outcome::Failed, &[("team", "nlp")]);
        failed.usage.fp32_seconds = 600.0;
        failed.usage.fp32_saving = 0.75;
        let jobs = [
            job("a", Outcome::Succeeded, &[]),
            failed,
            job("u", Outcome::Unknown, &[]),
        ];
        let gpus = [gpu("GPU-a"), gpu("GPU-b")];
        let p = pricing(
            "spot_per_hour = 2.5
",
        );
        let (_, model_of) = super::super::gpu_models(&gpus);
        let t = what_if_table(&jobs, &model_of, &p, None, None, WhatIfOptions::default()).unwrap();

        let mut snap = Snapshot::empty(Source::Nvml, None);
        snap.published = Published {
            jobs: Arc::new(jobs.iter().cloned().map(Arc::new).collect()),
            gpus: Arc::new(gpus.iter().map(|g| (g.uuid.clone(), g.clone())).collect()),
            ..Published::default()
        };
        snap.what_if = Arc::new(WhatIfPrices {
            pricing: p.clone(),
            model_of: whatif::models_by_uuid(&gpus),
            opts: WhatIfOptions::default(),
        });
        let text = crate::export::metrics::render(&snap);
        let mut exported: BTreeMap<(String, String), f64> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("gpucost_job_savings_potential{"))
        {
            let label = |k: &str| {
                let start = line.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
                line[start..].split('"').next().unwrap().to_string()
            };
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            exported.insert((label("job_id"), label("lever")), value);
        }
        let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (id, w) in &t.rows {
            for (lever, saving) in w.savings() {
                want.insert((id.clone(), lever.as_str().to_string()), saving);
            }
        }
        assert_eq!(
            exported.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{text}"
        );
        for (k, v) in &want {
            assert!(
                (exported[k] - v).abs() < 1e-9,
                "{k:?}: {} vs {v}",
                exported[k]
            );
        }
        let has = |id: &str, lever: &str| want.contains_key(&(id.to_string(), lever.to_string()));
        // No reserved rate: no series; no pipes measured: no bf16; an unknown end: no checkpoint.
        assert!(!has("a", "reserved") && has("a", "spot"));
        assert!(!has("a", "bf16") && has("b", "bf16"));
        assert!(has("a", "checkpoint") && !has("u", "checkpoint"));
        // What the failed run lost: its cost less its idle and FP32 parts.
        let lost = want[&("b".to_string(), "checkpoint".to_string())];
        assert!((lost - (12.0 - 3.0 - 0.75)).abs() < 1e-9, "{lost}");
    }
}
