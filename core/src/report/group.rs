//! Rows by the value of a job label (`--group-by label:KEY`).

use std::collections::BTreeMap;

use super::{ReportError, Totals};
use crate::jobs::JobRecord;

/// The group of jobs that lack the `--group-by` label.
pub const NO_LABEL_GROUP: &str = "(none)";

/// The jobs that share one value of the grouping label.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    /// The label's value, or [`NO_LABEL_GROUP`].
    pub group: String,
    pub totals: Totals,
}

/// The label key of a `label:KEY` group-by, or why it is not one.
pub fn parse_group_by(spec: &str) -> Result<&str, ReportError> {
    match spec.strip_prefix("label:") {
        Some(key) if !key.trim().is_empty() => Ok(key),
        _ => Err(ReportError::BadGroupBy(spec.to_string())),
    }
}

/// Groups by the value of label `key`, most expensive first (ties by name).
pub(super) fn group(jobs: &[JobRecord], key: &str) -> Vec<GroupRow> {
    let mut by: BTreeMap<&str, Totals> = BTreeMap::new();
    for j in jobs {
        let value = j.labels.get(key).map_or(NO_LABEL_GROUP, String::as_str);
        by.entry(value).or_default().add(j);
    }
    let mut groups: Vec<GroupRow> = by
        .into_iter()
        .map(|(g, totals)| GroupRow {
            group: g.to_string(),
            totals,
        })
        .collect();
    groups.sort_by(|a, b| {
        let cost = |g: &GroupRow| g.totals.figures.cost_total();
        cost(b)
            .total_cmp(&cost(a))
            .then_with(|| a.group.cmp(&b.group))
    });
    groups
}
