//! Writing: [`Ledger::persist`], one transaction of changed jobs (with their per-GPU rows) and
//! every GPU, and the upserts it runs, derived from the column lists and [`Usage::FIELDS`].

use std::path::Path;
use std::time::Instant;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use gpucost_core::clock::unix_now;
use gpucost_core::jobs::{GpuRecord, JobRecord, Usage};

use super::{sql, Ledger, LedgerError, PersistStats, UPSERT_META};

/// An upsert of `table` keyed on `key`, over `cols` then the usage columns ([`Usage::FIELDS`])
/// then `tail`.
fn upsert(table: &str, key: &str, cols: &[&str], tail: &[&str]) -> String {
    let all: Vec<&str> = cols
        .iter()
        .copied()
        .chain(Usage::FIELDS.iter().map(|f| f.name))
        .chain(tail.iter().copied())
        .collect();
    let marks: Vec<String> = (1..=all.len()).map(|i| format!("?{i}")).collect();
    let keys: Vec<&str> = key.split(", ").collect();
    let updates: Vec<String> = all
        .iter()
        .filter(|c| !keys.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({key}) DO UPDATE SET {}",
        all.join(", "),
        marks.join(", "),
        updates.join(", ")
    )
}

pub(super) const JOB_COLUMNS: [&str; 13] = [
    "id",
    "name",
    "user",
    "uid",
    "scheduler",
    "labels",
    "started_at",
    "ended_at",
    "outcome",
    "exit_code",
    "signal",
    "registration",
    "progress",
];

/// The columns of `jobs` after the usage (added by migrations).
pub(super) const JOB_TAIL: [&str; 1] = ["reason"];

fn upsert_job() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| upsert("jobs", "id", &JOB_COLUMNS, &JOB_TAIL))
}

fn upsert_job_gpu() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| upsert("job_gpus", "job_id, gpu_uuid", &["job_id", "gpu_uuid"], &[]))
}

/// The columns of `gpus` after the usage.
pub(super) const GPU_TAIL: [&str; 3] = ["unallocated_seconds", "throttled_s", "xids"];

fn upsert_gpu() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| upsert("gpus", "uuid", &["uuid", "idx", "model"], &GPU_TAIL))
}

/// The start of the job the ledger has under an id (NULL: none, or a start it lost).
const STARTED_AT: &str = "SELECT started_at FROM jobs WHERE id = ?1";

/// Copies job `?1`, with its per-GPU rows, to the id `?2` (an earlier run whose id a new job
/// takes), unless `?2` is there already; the row `?1` is then the new job's to overwrite.
fn keep_earlier_run() -> &'static [String; 3] {
    static SQL: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let all: Vec<&str> = JOB_COLUMNS
            .iter()
            .copied()
            .chain(Usage::FIELDS.iter().map(|f| f.name))
            .chain(JOB_TAIL)
            .collect();
        let rest: Vec<&str> = all.iter().copied().filter(|c| *c != "id").collect();
        let gpu_cols: Vec<&str> = Usage::FIELDS.iter().map(|f| f.name).collect();
        [
            format!(
                "INSERT OR IGNORE INTO jobs (id, {rest}) SELECT ?2, {rest} FROM jobs WHERE id = ?1",
                rest = rest.join(", ")
            ),
            format!(
                "INSERT OR IGNORE INTO job_gpus (job_id, gpu_uuid, {cols})
                 SELECT ?2, gpu_uuid, {cols} FROM job_gpus WHERE job_id = ?1",
                cols = gpu_cols.join(", ")
            ),
            // (?2 only so that the three take the same parameters.)
            "DELETE FROM job_gpus WHERE job_id = ?1 AND ?2 IS NOT NULL".to_string(),
        ]
    })
}

/// Removes per-GPU rows of a job that its record no longer has (`?2`: JSON array of UUIDs), so
/// that the ledger holds exactly the persisted record.
const PRUNE_JOB_GPUS: &str = "
DELETE FROM job_gpus
WHERE job_id = ?1 AND gpu_uuid NOT IN (SELECT value FROM json_each(?2))";

impl Ledger {
    /// Writes `jobs` (each with all its per-GPU rows, replacing what the ledger had for it) and
    /// `gpus`, and `last_persist_unix`, in one transaction: all of it or, on error, nothing.
    /// Pass only the jobs that changed since the last persist.
    pub fn persist(
        &mut self,
        jobs: &[&JobRecord],
        gpus: &[GpuRecord],
    ) -> Result<PersistStats, LedgerError> {
        self.check_writable("persist")?;
        let start = Instant::now();
        let Ledger { conn, path, .. } = self;
        let path: &Path = path;
        let write = sql(path, "cannot persist");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "cannot begin the persist transaction"))?;
        let mut job_gpus = 0;
        {
            let mut job_stmt = tx.prepare_cached(upsert_job()).map_err(&write)?;
            let mut job_gpu_stmt = tx.prepare_cached(upsert_job_gpu()).map_err(&write)?;
            let mut prune_stmt = tx.prepare_cached(PRUNE_JOB_GPUS).map_err(&write)?;
            let mut gpu_stmt = tx.prepare_cached(upsert_gpu()).map_err(&write)?;
            for job in jobs {
                // A job whose id the ledger holds for a run that started at another time: the id
                // was reused (a controller reset, a requeue). The earlier run keeps its record.
                let earlier: Option<Option<f64>> = tx
                    .prepare_cached(STARTED_AT)
                    .and_then(|mut s| {
                        s.query_row(params![job.id], |r| r.get::<_, Option<f64>>(0))
                            .optional()
                    })
                    .map_err(sql(path, "cannot read a job's start"))?;
                if let Some(Some(started)) = earlier {
                    if !job.started_at.is_nan() && started != job.started_at {
                        let kept = JobRecord::earlier_run_id(&job.id, started);
                        for stmt in keep_earlier_run() {
                            tx.prepare_cached(stmt)
                                .and_then(|mut s| s.execute(params![job.id, kept]))
                                .map_err(sql(path, "cannot keep an earlier run's record"))?;
                        }
                    }
                }
                let labels =
                    serde_json::to_string(&job.labels).map_err(|e| LedgerError::Corrupt {
                        path: path.to_owned(),
                        detail: format!("cannot encode the labels of job {}: {e}", job.id),
                    })?;
                let encode = |what: &str, v: Option<String>| {
                    v.ok_or_else(|| LedgerError::Corrupt {
                        path: path.to_owned(),
                        detail: format!("cannot encode the {what} of job {}", job.id),
                    })
                };
                let registration = match &job.registration {
                    Some(r) => Some(encode("registration", serde_json::to_string(r).ok())?),
                    None => None,
                };
                let progress = match &job.progress {
                    Some(p) => Some(encode("progress", serde_json::to_string(p).ok())?),
                    None => None,
                };
                let head: [&dyn rusqlite::ToSql; 13] = [
                    &job.id,
                    &job.name,
                    &job.user,
                    &job.uid,
                    &job.scheduler.as_str(),
                    &labels,
                    &job.started_at,
                    &job.ended_at,
                    &job.outcome.as_str(),
                    &job.exit_code,
                    &job.signal,
                    &registration,
                    &progress,
                ];
                let usage = job.usage.to_array();
                let reason = job.reason.map(|r| r.as_str());
                let tail: [&dyn rusqlite::ToSql; 1] = [&reason];
                job_stmt
                    .execute(rusqlite::params_from_iter(
                        head.iter()
                            .copied()
                            .chain(usage.iter().map(|v| v as &dyn rusqlite::ToSql))
                            .chain(tail.iter().copied()),
                    ))
                    .map_err(sql(path, "cannot write a job"))?;
                for (uuid, u) in &job.per_gpu {
                    let head: [&dyn rusqlite::ToSql; 2] = [&job.id, uuid];
                    let usage = u.to_array();
                    job_gpu_stmt
                        .execute(rusqlite::params_from_iter(
                            head.iter()
                                .copied()
                                .chain(usage.iter().map(|v| v as &dyn rusqlite::ToSql)),
                        ))
                        .map_err(sql(path, "cannot write a job's GPU usage"))?;
                }
                job_gpus += job.per_gpu.len();
                let uuids = serde_json::to_string(&job.per_gpu.keys().collect::<Vec<_>>())
                    .map_err(|e| LedgerError::Corrupt {
                        path: path.to_owned(),
                        detail: format!("cannot encode the GPUs of job {}: {e}", job.id),
                    })?;
                prune_stmt
                    .execute(params![job.id, uuids])
                    .map_err(sql(path, "cannot prune a job's GPU usage"))?;
            }
            for g in gpus {
                let head: [&dyn rusqlite::ToSql; 3] = [&g.uuid, &g.index, &g.model];
                let usage = g.usage.to_array();
                let encode = |what: &str, v: serde_json::Result<String>| {
                    v.map_err(|e| LedgerError::Corrupt {
                        path: path.to_owned(),
                        detail: format!("cannot encode the {what} of GPU {}: {e}", g.uuid),
                    })
                };
                let throttled = encode(
                    "throttled seconds",
                    serde_json::to_string(&g.events.throttled_by_reason()),
                )?;
                let xids = encode("Xids", serde_json::to_string(&g.events.xids))?;
                let tail: [&dyn rusqlite::ToSql; 3] = [&g.unallocated_seconds, &throttled, &xids];
                gpu_stmt
                    .execute(rusqlite::params_from_iter(
                        head.iter()
                            .copied()
                            .chain(usage.iter().map(|v| v as &dyn rusqlite::ToSql))
                            .chain(tail.iter().copied()),
                    ))
                    .map_err(sql(path, "cannot write a GPU"))?;
            }
            tx.prepare_cached(UPSERT_META)
                .and_then(|mut s| s.execute(params!["last_persist_unix", unix_now().to_string()]))
                .map_err(sql(path, "cannot write metadata"))?;
        }
        tx.commit()
            .map_err(sql(path, "cannot commit the persist transaction"))?;
        Ok(PersistStats {
            jobs: jobs.len(),
            job_gpus,
            gpus: gpus.len(),
            elapsed: start.elapsed(),
        })
    }
}
