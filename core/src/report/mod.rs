//! What `gpucost report` shows, as data: one row per job, or per group of jobs that share a
//! label's value; the figures derived from each row's usage ([`Figures`]: GPU-hours, kWh, kg
//! CO2e, total cost, idle share, wasted cost); the totals over all jobs ([`Totals`]); and the
//! named columns that the JSON and CSV forms write ([`columns`]).
//!
//! Pure: no I/O, no clock, and no formatting. The agent renders a [`Report`] as a table, JSON or
//! CSV (`gpucost::cli::report`), and decides how numbers and times look.
//!
//! With `group_by = "label:KEY"` the rows are groups of jobs by the value of label KEY (jobs
//! without it form the group [`NO_LABEL_GROUP`]), most expensive first.

pub mod columns;
mod figures;
mod group;
pub mod whatif;

pub use columns::Value;
pub use figures::{Figures, Totals};
pub use group::{parse_group_by, GroupRow, NO_LABEL_GROUP};

use crate::jobs::JobRecord;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "cannot group by {0:?}: expected label:KEY with a non-empty label key, e.g. \
         --group-by label:team"
    )]
    BadGroupBy(String),
}

/// A report over a set of jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<'a> {
    pub rows: Rows<'a>,
    /// Over all jobs, grouped or not.
    pub total: Totals,
}

/// The rows of a [`Report`].
#[derive(Debug, Clone, PartialEq)]
pub enum Rows<'a> {
    /// One per job, in the order given.
    Jobs(Vec<JobRow<'a>>),
    /// One per value of a label, most expensive first.
    Groups {
        /// What the rows are grouped by, as asked (`label:team`).
        by: String,
        groups: Vec<GroupRow>,
    },
}

impl<'a> Report<'a> {
    /// The report over `jobs`, one row per job, or per group when `group_by` (`label:KEY`) is
    /// given.
    pub fn new(jobs: &'a [JobRecord], group_by: Option<&str>) -> Result<Self, ReportError> {
        let total = Totals::over(jobs);
        let rows = match group_by {
            None => Rows::Jobs(jobs.iter().map(JobRow::new).collect()),
            Some(spec) => Rows::Groups {
                by: spec.to_string(),
                groups: group::group(jobs, parse_group_by(spec)?),
            },
        };
        Ok(Report { rows, total })
    }

    /// Whether the report has no rows (it covers no job).
    pub fn is_empty(&self) -> bool {
        match &self.rows {
            Rows::Jobs(rows) => rows.is_empty(),
            Rows::Groups { groups, .. } => groups.is_empty(),
        }
    }
}

/// One job's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobRow<'a> {
    pub job: &'a JobRecord,
    pub figures: Figures,
}

impl<'a> JobRow<'a> {
    pub fn new(job: &'a JobRecord) -> Self {
        JobRow {
            job,
            figures: Figures::of(job),
        }
    }

    /// How many GPUs the job used.
    pub fn gpus(&self) -> usize {
        self.job.per_gpu.len()
    }

    /// Tokens the job reported, when it reported any.
    pub fn tokens(&self) -> Option<u64> {
        tokens(self.job)
    }

    /// What each million of the job's tokens cost, when it reported tokens.
    pub fn cost_per_million_tokens(&self) -> Option<f64> {
        cost_per_million_tokens(self.job)
    }

    /// The energy each token took (J), when the job reported tokens.
    pub fn joules_per_token(&self) -> Option<f64> {
        joules_per_token(self.job)
    }
}

fn tokens(j: &JobRecord) -> Option<u64> {
    j.progress.as_ref().map(|p| p.tokens).filter(|t| *t > 0)
}

fn cost_per_million_tokens(j: &JobRecord) -> Option<f64> {
    tokens(j).map(|t| j.usage.total_cost() / t as f64 * 1e6)
}

fn joules_per_token(j: &JobRecord) -> Option<f64> {
    tokens(j).map(|t| j.usage.energy_j / t as f64)
}

#[cfg(test)]
mod tests;
