//! Reading: every job or those a report asks for, with their per-GPU usage, and the GPUs'
//! totals; rows decoded back into records.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::{params, Row};

use gpucost_core::account::GpuEvents;
use gpucost_core::jobs::{EndReason, GpuRecord, JobRecord, Outcome, Scheduler, Usage};

use super::{sql, JobFilter, Ledger, LedgerError};

/// The filter of [`Ledger::query_jobs`] over `jobs AS j`; `?1` = since, `?2` = job id.
const JOB_FILTER: &str = "(?1 IS NULL OR j.ended_at IS NULL OR j.ended_at >= ?1 \
                          OR j.started_at >= ?1) AND (?2 IS NULL OR j.id = ?2)";

impl Ledger {
    /// Every job, with its per-GPU usage, ordered by start time.
    pub fn load_jobs(&self) -> Result<Vec<JobRecord>, LedgerError> {
        self.query_jobs(&JobFilter::default())
    }

    /// The jobs that pass `filter`, with their per-GPU usage, ordered by start time (then id).
    pub fn query_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, LedgerError> {
        let path = &self.path;
        let read = sql(path, "cannot read jobs");
        let since = filter.since;
        let job_id = filter.job_id.as_deref();

        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT j.id, j.name, j.user, j.uid, j.scheduler, j.labels, j.started_at,
                        j.ended_at, j.outcome, j.exit_code, j.signal, j.registration, j.progress,
                        j.reason, {usage}
                 FROM jobs AS j WHERE {JOB_FILTER} ORDER BY j.started_at, j.id",
                usage = usage_columns("j."),
            ))
            .map_err(read)?;
        let raw = stmt
            .query_map(params![since, job_id], |row| {
                Ok(RawJob {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    user: row.get(2)?,
                    uid: row.get(3)?,
                    scheduler: row.get(4)?,
                    labels: row.get(5)?,
                    started_at: nan_if_null(row, 6)?,
                    ended_at: row.get(7)?,
                    outcome: row.get(8)?,
                    exit_code: row.get(9)?,
                    signal: row.get(10)?,
                    registration: row.get(11)?,
                    progress: row.get(12)?,
                    reason: row.get(13)?,
                    usage: read_usage(row, 14)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql(path, "cannot read jobs"))?;

        let mut jobs = Vec::with_capacity(raw.len());
        let mut by_id = HashMap::with_capacity(raw.len());
        for r in raw {
            by_id.insert(r.id.clone(), jobs.len());
            jobs.push(r.into_record(path)?);
        }

        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT g.job_id, g.gpu_uuid, {usage}
                 FROM job_gpus AS g JOIN jobs AS j ON j.id = g.job_id WHERE {JOB_FILTER}",
                usage = usage_columns("g."),
            ))
            .map_err(sql(path, "cannot read per-GPU usage"))?;
        let mut rows = stmt
            .query(params![since, job_id])
            .map_err(sql(path, "cannot read per-GPU usage"))?;
        while let Some(row) = rows
            .next()
            .map_err(sql(path, "cannot read per-GPU usage"))?
        {
            let (job_id, uuid, usage) = (|| -> rusqlite::Result<(String, String, Usage)> {
                Ok((row.get(0)?, row.get(1)?, read_usage(row, 2)?))
            })()
            .map_err(sql(path, "cannot read per-GPU usage"))?;
            // The join guarantees the job exists; a job filtered out is not selected here.
            if let Some(&i) = by_id.get(&job_id) {
                jobs[i].per_gpu.insert(uuid, usage);
            }
        }
        Ok(jobs)
    }

    /// Every GPU's node-level totals, ordered by index.
    pub fn load_gpus(&self) -> Result<Vec<GpuRecord>, LedgerError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT uuid, idx, model, {usage}, unallocated_seconds, throttled_s, xids
                 FROM gpus ORDER BY idx, uuid",
                usage = usage_columns(""),
            ))
            .map_err(sql(path, "cannot read GPUs"))?;
        let raw = stmt
            .query_map([], |row| {
                let tail = 3 + Usage::LEN;
                Ok((
                    GpuRecord {
                        uuid: row.get(0)?,
                        index: row.get(1)?,
                        model: row.get(2)?,
                        usage: read_usage(row, 3)?,
                        unallocated_seconds: nan_if_null(row, tail)?,
                        events: GpuEvents::default(),
                    },
                    row.get::<_, Option<String>>(tail + 1)?,
                    row.get::<_, Option<String>>(tail + 2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql(path, "cannot read GPUs"))?;
        raw.into_iter()
            .map(|(mut g, throttled, xids)| {
                g.events = read_events(path, &g.uuid, throttled, xids)?;
                Ok(g)
            })
            .collect()
    }
}

/// A `jobs` row before its strings are parsed.
struct RawJob {
    id: String,
    name: String,
    user: String,
    uid: Option<u32>,
    scheduler: String,
    labels: String,
    started_at: f64,
    ended_at: Option<f64>,
    outcome: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
    registration: Option<String>,
    progress: Option<String>,
    /// NULL: none, or a ledger from before schema version 3.
    reason: Option<String>,
    usage: Usage,
}

impl RawJob {
    fn into_record(self, path: &Path) -> Result<JobRecord, LedgerError> {
        let corrupt = |detail: String| LedgerError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let scheduler = Scheduler::parse(&self.scheduler).ok_or_else(|| {
            corrupt(format!(
                "job {}: unknown scheduler {:?}",
                self.id, self.scheduler
            ))
        })?;
        let outcome = Outcome::parse(&self.outcome).ok_or_else(|| {
            corrupt(format!(
                "job {}: unknown outcome {:?}",
                self.id, self.outcome
            ))
        })?;
        // A reason this build does not know (a newer gpucost's) is left out, not an error.
        let reason = self.reason.as_deref().and_then(EndReason::parse);
        let labels = serde_json::from_str(&self.labels)
            .map_err(|e| corrupt(format!("job {}: bad labels JSON: {e}", self.id)))?;
        let registration = match &self.registration {
            Some(text) => Some(
                serde_json::from_str(text)
                    .map_err(|e| corrupt(format!("job {}: bad registration JSON: {e}", self.id)))?,
            ),
            None => None,
        };
        let progress = match &self.progress {
            Some(text) => Some(
                serde_json::from_str(text)
                    .map_err(|e| corrupt(format!("job {}: bad progress JSON: {e}", self.id)))?,
            ),
            None => None,
        };
        Ok(JobRecord {
            id: self.id,
            name: self.name,
            user: self.user,
            uid: self.uid,
            scheduler,
            labels,
            started_at: self.started_at,
            ended_at: self.ended_at,
            outcome,
            exit_code: self.exit_code,
            signal: self.signal,
            reason,
            usage: self.usage,
            per_gpu: Default::default(),
            registration,
            progress,
        })
    }
}

/// A GPU's throttled seconds and Xids from their JSON columns (NULL: none yet, a ledger from
/// before schema version 2).
fn read_events(
    path: &Path,
    uuid: &str,
    throttled: Option<String>,
    xids: Option<String>,
) -> Result<GpuEvents, LedgerError> {
    let corrupt = |what: &str, e: serde_json::Error| LedgerError::Corrupt {
        path: path.to_owned(),
        detail: format!("GPU {uuid}: bad {what} JSON: {e}"),
    };
    let mut events = GpuEvents::default();
    if let Some(text) = throttled {
        let by_reason: BTreeMap<String, Option<f64>> =
            serde_json::from_str(&text).map_err(|e| corrupt("throttled seconds", e))?;
        for (reason, seconds) in by_reason {
            // A reason this build does not know (a newer gpucost's) is left out.
            if let Some(s) = seconds {
                events.set_throttled(&reason, s);
            }
        }
    }
    if let Some(text) = xids {
        events.xids = serde_json::from_str(&text).map_err(|e| corrupt("Xids", e))?;
    }
    Ok(events)
}

/// The usage columns, comma-separated, each name prefixed with `prefix` (a table alias).
fn usage_columns(prefix: &str) -> String {
    Usage::FIELDS
        .iter()
        .map(|f| format!("{prefix}{}", f.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A REAL that SQLite may have stored as NULL because it was NaN.
fn nan_if_null(row: &Row<'_>, i: usize) -> rusqlite::Result<f64> {
    Ok(row.get::<_, Option<f64>>(i)?.unwrap_or(f64::NAN))
}

/// The usage columns starting at `i`, in [`Usage::FIELDS`] order.
fn read_usage(row: &Row<'_>, i: usize) -> rusqlite::Result<Usage> {
    let mut a = [0.0; Usage::LEN];
    for (k, v) in a.iter_mut().enumerate() {
        *v = nan_if_null(row, i + k)?;
    }
    Ok(Usage::from_array(a))
}
