//! The named columns of the report's JSON and CSV forms, defined once per kind of row.
//!
//! A column is a name (the JSON key and the CSV header) and how a row gives its [`Value`]. A job
//! row has its identity and times, then the [`FIGURES`], then its efficiency; a group row has
//! its label value, then the [`TOTALS`] counts and the figures; the report's total has the
//! counts and the figures. The renderers write the columns in this order, so JSON and CSV agree.

use std::collections::BTreeMap;

use super::{cost_per_million_tokens, joules_per_token, tokens, Figures, GroupRow, JobRow, Totals};
use crate::jobs::JobRecord;
use Value::{Count, Int, Labels, Missing, Real, Text, Time};

/// A value in a report, before any formatting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Text(&'a str),
    /// A signed integer: a uid, an exit code, a signal.
    Int(i64),
    /// A count: GPUs, jobs, tokens.
    Count(u64),
    /// A quantity in base units (seconds, joules, grams), or money in the report's currency.
    Real(f64),
    /// Unix seconds, for a renderer to write as a UTC date and time.
    Time(f64),
    Labels(&'a BTreeMap<String, String>),
    /// The row has no value here: a job still running has no end, one that reported no tokens
    /// has no cost per token.
    Missing,
}

/// A column over rows of type `R`.
pub struct Column<R: 'static> {
    pub name: &'static str,
    pub value: fn(&R) -> Value<'_>,
}

const fn col<R>(name: &'static str, value: fn(&R) -> Value<'_>) -> Column<R> {
    Column { name, value }
}

fn count(n: usize) -> Value<'static> {
    Count(n as u64)
}

/// Who a job is and when it ran: the columns of a job row before its figures.
pub const JOB: &[Column<JobRecord>] = &[
    col("id", |j| Text(&j.id)),
    col("name", |j| Text(&j.name)),
    col("user", |j| Text(&j.user)),
    col("uid", |j| j.uid.map_or(Missing, |u| Int(u.into()))),
    col("scheduler", |j| Text(j.scheduler.as_str())),
    col("labels", |j| Labels(&j.labels)),
    col("start", |j| Time(j.started_at)),
    col("end", |j| j.ended_at.map_or(Missing, Time)),
    col("started_at", |j| Real(j.started_at)),
    col("ended_at", |j| j.ended_at.map_or(Missing, Real)),
    col("outcome", |j| Text(j.outcome.as_str())),
    col("exit_code", |j| {
        j.exit_code.map_or(Missing, |c| Int(c.into()))
    }),
    col("signal", |j| j.signal.map_or(Missing, |s| Int(s.into()))),
    col("reason", |j| j.reason.map_or(Missing, |r| Text(r.as_str()))),
    col("gpus", |j| count(j.per_gpu.len())),
];

/// What a job, a group or the total used and cost, in base units and derived.
pub const FIGURES: &[Column<Figures>] = &[
    col("gpu_seconds", |f| Real(f.usage.gpu_seconds)),
    col("energy_j", |f| Real(f.usage.energy_j)),
    col("carbon_g", |f| Real(f.usage.carbon_g)),
    col("cost_gpu_time", |f| Real(f.usage.cost_gpu_time)),
    col("cost_energy", |f| Real(f.usage.cost_energy)),
    col("cost_overhead", |f| Real(f.usage.cost_overhead)),
    col("idle_gpu_seconds", |f| Real(f.usage.idle_gpu_seconds)),
    col("idle_cost", |f| Real(f.usage.idle_cost)),
    col("gpu_hours", |f| Real(f.gpu_hours())),
    col("kwh", |f| Real(f.kwh())),
    col("co2_kg", |f| Real(f.co2_kg())),
    col("cost_total", |f| Real(f.cost_total())),
    col("idle_share", |f| Real(f.idle_share())),
    col("wasted_cost", |f| Real(f.wasted_cost)),
];

/// A job's efficiency: the columns of a job row after its figures.
pub const JOB_EFFICIENCY: &[Column<JobRecord>] = &[
    // The cost of the FP32-bound time that mixed precision would have saved.
    col("fp32_saving", |j| Real(j.usage.fp32_saving)),
    col("tokens", |j| tokens(j).map_or(Missing, Count)),
    col("cost_per_million_tokens", |j| {
        cost_per_million_tokens(j).map_or(Missing, Real)
    }),
    col("joules_per_token", |j| {
        joules_per_token(j).map_or(Missing, Real)
    }),
];

/// How many jobs a group or the total covers: the columns before its figures.
pub const TOTALS: &[Column<Totals>] = &[
    col("jobs", |t| count(t.jobs)),
    col("failed", |t| count(t.failed)),
];

/// The first column of a group row.
pub const GROUP: Column<GroupRow> = col("group", |g| Text(&g.group));

fn names<R>(columns: &'static [Column<R>]) -> impl Iterator<Item = &'static str> {
    columns.iter().map(|c| c.name)
}

fn values<'r, R>(
    columns: &'static [Column<R>],
    row: &'r R,
) -> impl Iterator<Item = (&'static str, Value<'r>)> {
    columns.iter().map(move |c| (c.name, (c.value)(row)))
}

impl JobRow<'_> {
    /// The names of a job row's columns, in order.
    pub fn column_names() -> impl Iterator<Item = &'static str> {
        names(JOB)
            .chain(names(FIGURES))
            .chain(names(JOB_EFFICIENCY))
    }

    /// Each column's name and value, in [`JobRow::column_names`] order.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, Value<'_>)> {
        values(JOB, self.job)
            .chain(values(FIGURES, &self.figures))
            .chain(values(JOB_EFFICIENCY, self.job))
    }
}

impl Totals {
    /// The names of the total's columns, in order.
    pub fn column_names() -> impl Iterator<Item = &'static str> {
        names(TOTALS).chain(names(FIGURES))
    }

    /// Each column's name and value, in [`Totals::column_names`] order.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, Value<'_>)> {
        values(TOTALS, self).chain(values(FIGURES, &self.figures))
    }
}

impl GroupRow {
    /// The names of a group row's columns, in order: the group, then the totals'.
    pub fn column_names() -> impl Iterator<Item = &'static str> {
        std::iter::once(GROUP.name).chain(Totals::column_names())
    }

    /// Each column's name and value, in [`GroupRow::column_names`] order.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, Value<'_>)> {
        std::iter::once((GROUP.name, (GROUP.value)(self))).chain(self.totals.values())
    }
}
