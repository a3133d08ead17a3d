//! The ledger: the agent's durable state, and the only code that writes it.
//!
//! One SQLite file, `<state_dir>/ledger.db` (rusqlite, bundled SQLite), holds every job the agent
//! has seen with its usage (in total and per GPU), each GPU's node-level totals, and a little
//! metadata (`agent_version`, `created_unix`, `last_persist_unix`). The agent keeps the live
//! totals in memory and calls [`Ledger::persist`] every so often with the jobs that changed; on
//! start it reloads them ([`Ledger::load_jobs`], [`Ledger::load_gpus`]) so that totals never go
//! backwards across restarts. `gpucost report` reads the same file through
//! [`Ledger::open_read_only`], also while the agent is running.
//!
//! # Crash safety
//!
//! The database runs in WAL mode with `synchronous=NORMAL`, and each [`Ledger::persist`] is one
//! transaction. If the agent is killed (`kill -9`, OOM killer, a panic) at any moment, the file
//! stays consistent and holds exactly the state of the last committed persist: a crash loses
//! at most what accrued since then, never a half-written job. A power loss or kernel crash can
//! additionally lose the last few commits that the OS had not yet flushed from the WAL (the price
//! of `synchronous=NORMAL`), still without corrupting anything. Errors (a full disk, a read-only
//! or vanished directory, a locked database) roll the transaction back and come back as a
//! [`LedgerError`]; the caller logs them and tries again at the next persist.
//!
//! # Schema
//!
//! Versioned with `PRAGMA user_version`; see [`schema`] for the tables and how to add a
//! migration. A file written by a newer gpucost is refused, never downgraded.

mod schema;
mod store;
#[cfg(test)]
mod tests;

pub use store::LedgerStore;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior,
};

use gpucost_core::clock::unix_now;
use gpucost_core::jobs::{GpuRecord, JobRecord, Outcome, Scheduler, Usage};

pub use schema::SCHEMA_VERSION;

/// The file name of the ledger inside the state directory.
pub const DB_FILE: &str = "ledger.db";

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the ledger could not be opened, read or written. Every message names the database file.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot create the state directory {dir} for the ledger {path}: {source}")]
    CreateDir {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no ledger at {path}: no gpucost agent has written to this state directory yet \
         (pass --state-dir to read the agent's state directory)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read the ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a gpucost ledger (it has no schema; schema version 0)")]
    NotALedger { path: PathBuf },
    #[error(
        "the ledger {path} has schema version {found}, but this gpucost understands versions up \
         to {supported}: it was written by a newer gpucost; upgrade gpucost (the file was left \
         untouched)"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "the ledger {path} has schema version {found}, older than version {supported} that this \
         gpucost reads; start the agent once (it migrates the file) or use the gpucost that \
         wrote it"
    )]
    TooOld {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("the ledger {path} is open read-only: cannot {action}")]
    ReadOnly { path: PathBuf, action: &'static str },
    #[error("ledger {path}: {context}: {source}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// Which jobs [`Ledger::query_jobs`] returns. The default returns all of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Unix seconds: only jobs that ended at or after it, are still running, or started after
    /// it (that is, jobs that overlap `[since, now)`).
    pub since: Option<f64>,
    /// Only the job with this id.
    pub job_id: Option<String>,
}

/// What one [`Ledger::persist`] wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersistStats {
    pub jobs: usize,
    /// Per-GPU rows of those jobs.
    pub job_gpus: usize,
    pub gpus: usize,
    /// Wall time of the whole transaction, commit included.
    pub elapsed: Duration,
}

/// An open ledger database; see the module documentation.
#[derive(Debug)]
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
}

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

const JOB_COLUMNS: [&str; 13] = [
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

fn upsert_job() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| upsert("jobs", "id", &JOB_COLUMNS, &[]))
}

fn upsert_job_gpu() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| upsert("job_gpus", "job_id, gpu_uuid", &["job_id", "gpu_uuid"], &[]))
}

fn upsert_gpu() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        upsert(
            "gpus",
            "uuid",
            &["uuid", "idx", "model"],
            &["unallocated_seconds"],
        )
    })
}

/// Removes per-GPU rows of a job that its record no longer has (`?2`: JSON array of UUIDs), so
/// that the ledger holds exactly the persisted record.
const PRUNE_JOB_GPUS: &str = "
DELETE FROM job_gpus
WHERE job_id = ?1 AND gpu_uuid NOT IN (SELECT value FROM json_each(?2))";

const UPSERT_META: &str = "
INSERT INTO meta (key, value) VALUES (?1, ?2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The filter of [`Ledger::query_jobs`] over `jobs AS j`; `?1` = since, `?2` = job id.
const JOB_FILTER: &str = "(?1 IS NULL OR j.ended_at IS NULL OR j.ended_at >= ?1 \
                          OR j.started_at >= ?1) AND (?2 IS NULL OR j.id = ?2)";

impl Ledger {
    /// Opens (creating it, and the state directory with mode 0750, if missing) the ledger for
    /// writing, and migrates its schema to [`SCHEMA_VERSION`].
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let path = state_dir.join(DB_FILE);
        create_state_dir(state_dir, &path)?;
        let mut conn = Connection::open(&path).map_err(sql(&path, "cannot open the database"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql(&path, "cannot set the busy timeout"))?;
        // Refuse a newer file before changing anything in it (journal_mode=WAL writes the header).
        let found = user_version(&conn, &path)?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql(&path, "cannot switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                ledger = %path.display(),
                journal_mode = %mode,
                "the ledger's file system does not support WAL mode; readers may block the agent"
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql(&path, "cannot set synchronous=NORMAL"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql(&path, "cannot enable foreign keys"))?;
        migrate(&mut conn, &path)?;

        let mut ledger = Ledger {
            conn,
            path,
            read_only: false,
        };
        let now = unix_now().to_string();
        ledger
            .conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_unix', ?1)",
                [&now],
            )
            .map_err(sql(&ledger.path, "cannot write metadata"))?;
        ledger.set_meta("agent_version", env!("CARGO_PKG_VERSION"))?;
        Ok(ledger)
    }

    /// Opens an existing ledger for reading only (`gpucost report`). Works while the agent has
    /// it open for writing, and, when the agent is stopped, also for a user who may read the
    /// state directory but not write to it.
    pub fn open_read_only(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let path = state_dir.join(DB_FILE);
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LedgerError::Missing { path });
            }
            Err(source) => return Err(LedgerError::Io { path, source }),
            Ok(m) if !m.is_file() => {
                return Err(LedgerError::Corrupt {
                    path,
                    detail: "not a regular file".into(),
                });
            }
            Ok(_) => {}
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .map_err(sql(&path, "cannot open the database"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql(&path, "cannot set the busy timeout"))?;
        let (conn, found) = match user_version(&conn, &path) {
            Ok(v) => (conn, v),
            // A WAL database needs its `-shm` index; a reader that may not create it can still
            // read a cleanly closed ledger (no `-wal` left) as an immutable file.
            Err(LedgerError::Sqlite { source, .. })
                if matches!(
                    source.sqlite_error_code(),
                    Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly)
                ) && !sidecar(&path, "-wal").exists() =>
            {
                drop(conn);
                let uri = format!("file:{}?immutable=1", uri_path(&path));
                let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                    .map_err(sql(&path, "cannot open the database"))?;
                let v = user_version(&conn, &path)?;
                (conn, v)
            }
            Err(e) => return Err(e),
        };
        match found {
            0 => return Err(LedgerError::NotALedger { path }),
            v if v > SCHEMA_VERSION => {
                return Err(LedgerError::TooNew {
                    path,
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            v if v < SCHEMA_VERSION => {
                return Err(LedgerError::TooOld {
                    path,
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            _ => {}
        }
        conn.pragma_update(None, "query_only", true)
            .map_err(sql(&path, "cannot set query_only"))?;
        Ok(Ledger {
            conn,
            path,
            read_only: true,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

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
                job_stmt
                    .execute(rusqlite::params_from_iter(
                        head.iter()
                            .copied()
                            .chain(usage.iter().map(|v| v as &dyn rusqlite::ToSql)),
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
                let tail: [&dyn rusqlite::ToSql; 1] = [&g.unallocated_seconds];
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
                        {usage}
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
                    usage: read_usage(row, 13)?,
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
                "SELECT uuid, idx, model, {usage}, unallocated_seconds FROM gpus
                 ORDER BY idx, uuid",
                usage = usage_columns(""),
            ))
            .map_err(sql(path, "cannot read GPUs"))?;
        stmt.query_map([], |row| {
            Ok(GpuRecord {
                uuid: row.get(0)?,
                index: row.get(1)?,
                model: row.get(2)?,
                usage: read_usage(row, 3)?,
                unallocated_seconds: nan_if_null(row, 3 + Usage::LEN)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(sql(path, "cannot read GPUs"))
    }

    /// A metadata value (`agent_version`, `created_unix`, `last_persist_unix`, or one set with
    /// [`Ledger::set_meta`]).
    pub fn meta(&self, key: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path, "cannot read metadata"))
    }

    /// Sets a metadata value (for example the pricing currency, so that reports label money
    /// with the currency it was accounted in).
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), LedgerError> {
        self.check_writable("write metadata")?;
        self.conn
            .prepare_cached(UPSERT_META)
            .and_then(|mut s| s.execute(params![key, value]))
            .map(drop)
            .map_err(sql(&self.path, "cannot write metadata"))
    }

    /// When the last [`Ledger::persist`] committed (unix seconds), if ever.
    pub fn last_persist_unix(&self) -> Result<Option<f64>, LedgerError> {
        Ok(self
            .meta("last_persist_unix")?
            .and_then(|v| v.parse::<f64>().ok()))
    }

    fn check_writable(&self, action: &'static str) -> Result<(), LedgerError> {
        if self.read_only {
            Err(LedgerError::ReadOnly {
                path: self.path.clone(),
                action,
            })
        } else {
            Ok(())
        }
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
            usage: self.usage,
            per_gpu: Default::default(),
            registration,
            progress,
        })
    }
}

/// Maps a rusqlite error to a [`LedgerError`] naming the file and what was being done.
fn sql<'a>(path: &'a Path, context: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError + 'a {
    move |source| LedgerError::Sqlite {
        path: path.to_owned(),
        context,
        source,
    }
}

fn create_state_dir(dir: &Path, path: &Path) -> Result<(), LedgerError> {
    let err = |source| LedgerError::CreateDir {
        dir: dir.to_owned(),
        path: path.to_owned(),
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        )));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(err)
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, LedgerError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql(path, "cannot read the schema version"))
}

/// Brings the schema up to [`SCHEMA_VERSION`], one migration per transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LedgerError> {
    loop {
        // IMMEDIATE takes the write lock first, so two processes never run the same step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "cannot begin the schema migration"))?;
        let found = user_version(&tx, path)?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let step = usize::try_from(found).map_err(|_| LedgerError::Corrupt {
            path: path.to_owned(),
            detail: format!("negative schema version {found}"),
        })?;
        tx.execute_batch(schema::MIGRATIONS[step])
            .map_err(sql(path, "cannot migrate the schema"))?;
        tx.pragma_update(None, "user_version", found + 1)
            .map_err(sql(path, "cannot record the schema version"))?;
        tx.commit()
            .map_err(sql(path, "cannot commit the schema migration"))?;
    }
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

/// `<path><suffix>`, e.g. the `-wal` file next to the database.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `path` percent-encoded for a `file:` URI.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
