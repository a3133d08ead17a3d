//! The report as JSON: `{"currency", "jobs": [...], "total": {...}}`, or `"group_by"` and
//! `"groups"` instead of `"jobs"`; each row an object of the model's columns, in order.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use gpucost_core::report::{Report, Rows, Value};

use super::format_utc;

/// The report as pretty-printed JSON, ending in a newline.
pub(super) fn render(report: &Report<'_>, currency: &str) -> Result<String, serde_json::Error> {
    let total = Object::new(report.total.values());
    let mut s = match &report.rows {
        Rows::Jobs(rows) => serde_json::to_string_pretty(&JobsDoc {
            currency,
            jobs: rows.iter().map(|r| Object::new(r.values())).collect(),
            total,
        })?,
        Rows::Groups { by, groups } => serde_json::to_string_pretty(&GroupsDoc {
            currency,
            group_by: by,
            groups: groups.iter().map(|g| Object::new(g.values())).collect(),
            total,
        })?,
    };
    s.push('\n');
    Ok(s)
}

#[derive(Serialize)]
struct JobsDoc<'a> {
    currency: &'a str,
    jobs: Vec<Object<'a>>,
    total: Object<'a>,
}

#[derive(Serialize)]
struct GroupsDoc<'a> {
    currency: &'a str,
    group_by: &'a str,
    groups: Vec<Object<'a>>,
    total: Object<'a>,
}

/// A row: an object with one member per column, in column order.
struct Object<'v>(Vec<(&'static str, Value<'v>)>);

impl<'v> Object<'v> {
    fn new(values: impl Iterator<Item = (&'static str, Value<'v>)>) -> Self {
        Object(values.collect())
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, &Member(*value))?;
        }
        map.end()
    }
}

/// A value as JSON: numbers as numbers (a NaN as null), times as UTC ISO 8601 text, a missing
/// value as null.
struct Member<'v>(Value<'v>);

impl Serialize for Member<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Text(t) => s.serialize_str(t),
            Value::Int(i) => s.serialize_i64(i),
            Value::Count(n) => s.serialize_u64(n),
            Value::Real(x) => s.serialize_f64(x),
            Value::Time(t) => s.serialize_str(&format_utc(t)),
            Value::Labels(labels) => labels.serialize(s),
            Value::Missing => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::fixtures::{grouped_jobs, job, render_json};
    use gpucost_core::jobs::{Outcome, Progress};

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
        assert_eq!(s["uid"], json!(1000));
        assert_eq!(s["exit_code"], json!(0));
        assert_eq!(s["gpus"], json!(2));
        assert_eq!(s["gpu_hours"], json!(2.0));
        assert_eq!(s["idle_share"], json!(0.25));
        assert_eq!(s["tokens"], Value::Null);
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
    fn a_nan_is_null_and_tokens_are_a_count() {
        let mut j = job("j", Outcome::Succeeded, &[]);
        j.usage.energy_j = f64::NAN;
        j.progress = Some(Progress {
            tokens: 4_000_000,
            ..Progress::default()
        });
        let v = render_json(&[j], None);
        assert_eq!(v["jobs"][0]["energy_j"], Value::Null);
        assert_eq!(v["jobs"][0]["tokens"], json!(4_000_000));
        assert_eq!(v["jobs"][0]["cost_per_million_tokens"], json!(3.0));
    }

    #[test]
    fn grouped_has_group_by_and_groups_instead_of_jobs() {
        let v = render_json(&grouped_jobs(), Some("label:team"));
        assert_eq!(v["group_by"], "label:team");
        assert!(v.get("jobs").is_none());
        let groups = v["groups"].as_array().unwrap();
        let names: Vec<&str> = groups
            .iter()
            .map(|g| g["group"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["nlp", "(none)", "vision"]);
        let nlp = &groups[0];
        assert_eq!(
            (nlp["jobs"].clone(), nlp["failed"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(nlp["cost_total"], json!(24.0));
        assert_eq!(nlp["wasted_cost"], json!(15.0));
        assert_eq!(v["total"]["cost_total"], json!(39.0));
    }

    #[test]
    fn empty_input() {
        let v = render_json(&[], None);
        assert_eq!(v["jobs"], json!([]));
        assert_eq!(v["total"]["jobs"], json!(0));
        assert_eq!(v["total"]["cost_total"], json!(0.0));
        assert_eq!(v["total"]["idle_share"], json!(0.0));
        let v = render_json(&[], Some("label:team"));
        assert_eq!(v["groups"], json!([]));
        assert_eq!(v["total"]["gpu_hours"], json!(0.0));
    }
}
