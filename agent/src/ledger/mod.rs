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
//!
//! # History first
//!
//! Nothing is written to a file before its history has been read ([`Ledger::open_with_history`]):
//! SQLite's `quick_check` runs on it first, and the migrations and metadata go in one transaction
//! with the reading of every job and GPU, committed only when all of it could be read. A damaged
//! file ([`LedgerError::is_damaged`]) is thus left as it was, for [`set_aside`] to move out of
//! the way; [`LedgerStore`] then begins a new ledger, and refuses to write to one whose history
//! it has not read.

mod lock;
mod read;
mod schema;
mod store;
#[cfg(test)]
mod tests;
mod write;

pub use lock::{LockError, StateLock, LOCK_FILE};
pub use store::LedgerStore;

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use gpucost_core::clock::unix_now;
use gpucost_core::jobs::{GpuRecord, JobRecord};

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
    #[error("the ledger {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
}

impl LedgerError {
    /// Whether the file itself is damaged, so that reading it again will not help: SQLite says
    /// SQLITE_CORRUPT ("the database file has been corrupted") or SQLITE_NOTADB ("the file being
    /// opened does not appear to be an SQLite database file"; both in
    /// <https://www.sqlite.org/rescode.html>), its `quick_check` finds it malformed, or its tables
    /// are not those of its schema version ([`LedgerError::Damaged`]). Not damaged: a file that is
    /// busy, missing, not readable or writable for lack of permission or disk space, one written
    /// by a newer gpucost, or one with a row this gpucost cannot decode (the file is sound; the
    /// error names the row).
    pub fn is_damaged(&self) -> bool {
        match self {
            LedgerError::Damaged { .. } => true,
            LedgerError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
            ),
            _ => false,
        }
    }
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

const UPSERT_META: &str = "
INSERT INTO meta (key, value) VALUES (?1, ?2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value";

impl Ledger {
    /// Opens (creating it, and the state directory with mode 0750, if missing) the ledger for
    /// writing, and migrates its schema to [`SCHEMA_VERSION`]; nothing is written to a file that
    /// SQLite finds damaged (see [`Ledger::open_with_history`]).
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_and_read(state_dir, |_| Ok(())).map(|(ledger, ())| ledger)
    }

    /// Opens the ledger for writing like [`Ledger::open`], reading its whole history (every job
    /// and GPU) before anything is written to the file: the schema migration and the metadata
    /// are committed in one transaction with that reading, or, when any of it fails, not at all.
    /// An error leaves the file as it was.
    pub fn open_with_history(
        state_dir: &Path,
    ) -> Result<(Ledger, Vec<JobRecord>, Vec<GpuRecord>), LedgerError> {
        let (ledger, (jobs, gpus)) = Ledger::open_and_read(state_dir, |l| {
            Ok((
                l.load_jobs().map_err(tables_not_of_version)?,
                l.load_gpus().map_err(tables_not_of_version)?,
            ))
        })?;
        Ok((ledger, jobs, gpus))
    }

    /// Opens for writing; checks, migrates and runs `read` in one transaction, then sets the
    /// metadata and switches to WAL mode.
    fn open_and_read<T>(
        state_dir: &Path,
        read: impl FnOnce(&Ledger) -> Result<T, LedgerError>,
    ) -> Result<(Ledger, T), LedgerError> {
        let path = state_dir.join(DB_FILE);
        create_state_dir(state_dir, &path)?;
        let conn = Connection::open(&path).map_err(sql(&path, "cannot open the database"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql(&path, "cannot set the busy timeout"))?;
        // Until the history is read, SQLite itself must not write either: the last connection to
        // a WAL database checkpoints the WAL into the file when it closes, unless told not to
        // (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, https://www.sqlite.org/c3ref/c_dbconfig_defensive.html).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(sql(&path, "cannot configure the connection"))?;
        // Refuse a newer file before changing anything in it. A file that is not a database at
        // all fails here, with SQLITE_NOTADB.
        let found = user_version(&conn, &path)?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found > 0 {
            quick_check(&conn, &path)?;
        } else if has_tables(&conn, &path)? {
            // Someone else's database: not ours to add tables to.
            return Err(LedgerError::NotALedger { path });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql(&path, "cannot set synchronous=NORMAL"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql(&path, "cannot enable foreign keys"))?;

        let ledger = Ledger {
            conn,
            path,
            read_only: false,
        };
        let path = &ledger.path;
        let value = {
            // IMMEDIATE takes the write lock first, so two processes never run the same step.
            let tx = Transaction::new_unchecked(&ledger.conn, TransactionBehavior::Immediate)
                .map_err(sql(path, "cannot begin opening the ledger"))?;
            migrate(&tx, path)?;
            let value = read(&ledger)?;
            let now = unix_now().to_string();
            tx.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_unix', ?1)",
                [&now],
            )
            .and_then(|_| {
                tx.execute(
                    UPSERT_META,
                    params!["agent_version", env!("CARGO_PKG_VERSION")],
                )
            })
            .map_err(sql(path, "cannot write metadata"))?;
            tx.commit()
                .map_err(sql(path, "cannot commit opening the ledger"))?;
            value
        };
        // Read and sound: from now on the usual WAL mode, checkpoints on close included. (A
        // ledger is in WAL mode from its first open on, so this changes the file only then.)
        let mode: String = ledger
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql(path, "cannot switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                ledger = %path.display(),
                journal_mode = %mode,
                "the ledger's file system does not support WAL mode; readers may block the agent"
            );
        }
        ledger
            .conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
            .map_err(sql(path, "cannot configure the connection"))?;
        Ok((ledger, value))
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

fn sql<'a>(path: &'a Path, context: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError + 'a {
    move |source| LedgerError::Sqlite {
        path: path.to_owned(),
        context,
        source,
    }
}

fn create_state_dir(dir: &Path, path: &Path) -> Result<(), LedgerError> {
    make_state_dir(dir).map_err(|source| LedgerError::CreateDir {
        dir: dir.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// Creates the state directory (mode 0750) and its parents where missing.
fn make_state_dir(dir: &Path) -> io::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, LedgerError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql(path, "cannot read the schema version"))
}

/// Brings the schema up to [`SCHEMA_VERSION`] inside the caller's transaction (so that every
/// step, or none, is applied together with the new `user_version`).
fn migrate(tx: &Transaction<'_>, path: &Path) -> Result<(), LedgerError> {
    // Read again under the write lock: another process may have migrated since.
    let found = user_version(tx, path)?;
    if found > SCHEMA_VERSION {
        return Err(LedgerError::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let first = usize::try_from(found).map_err(|_| LedgerError::Damaged {
        path: path.to_owned(),
        detail: format!("negative schema version {found}"),
    })?;
    if first == schema::MIGRATIONS.len() {
        return Ok(());
    }
    for step in &schema::MIGRATIONS[first..] {
        tx.execute_batch(step)
            .map_err(sql(path, "cannot migrate the schema"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql(path, "cannot record the schema version"))
}

/// SQLite's own check of the file's structure (<https://www.sqlite.org/pragma.html#pragma_quick_check>):
/// one row, `ok`, or a row for each problem found. It only reads.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let rows: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql(path, "cannot check the database"))?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    let shown: Vec<&str> = rows.iter().take(3).map(String::as_str).collect();
    Err(LedgerError::Damaged {
        path: path.to_owned(),
        detail: format!(
            "SQLite's quick_check finds {} problem(s): {}",
            rows.len(),
            shown.join("; ")
        ),
    })
}

/// Whether the database has any table, index or view (a file of version 0 without: an empty one).
fn has_tables(conn: &Connection, path: &Path) -> Result<bool, LedgerError> {
    conn.query_row("SELECT count(*) > 0 FROM sqlite_master", [], |r| r.get(0))
        .map_err(sql(path, "cannot read the schema"))
}

/// A read of a file whose schema version this gpucost knows that fails with SQLITE_ERROR (`no
/// such table`, `no such column`) means its tables are not those of that version: its schema
/// cannot be read, the file is damaged.
fn tables_not_of_version(e: LedgerError) -> LedgerError {
    match e {
        LedgerError::Sqlite { path, source, .. }
            if matches!(&source, rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_ERROR) =>
        {
            LedgerError::Damaged {
                path,
                detail: format!(
                    "its tables are not those of schema version {SCHEMA_VERSION}: {source}"
                ),
            }
        }
        e => e,
    }
}

/// Moves a damaged ledger out of the way, untouched, to `ledger.db.corrupt-<unix>` in the same
/// directory, with its `-wal` and `-shm` files (if any) beside it under the names SQLite gives
/// them, so that the moved file opens with its last commits (`sqlite3 ledger.db.corrupt-<unix>
/// .recover`). The sidecars go first: a new ledger must never find an old WAL next to it. Returns
/// where the database went.
pub fn set_aside(state_dir: &Path, unix: u64) -> io::Result<PathBuf> {
    let path = state_dir.join(DB_FILE);
    let mut aside = state_dir.join(format!("{DB_FILE}.corrupt-{unix}"));
    let mut n = 1;
    while aside.exists() || sidecar(&aside, "-wal").exists() {
        n += 1;
        aside = state_dir.join(format!("{DB_FILE}.corrupt-{unix}.{n}"));
    }
    for suffix in ["-wal", "-shm"] {
        match fs::rename(sidecar(&path, suffix), sidecar(&aside, suffix)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(&path, &aside)?;
    Ok(aside)
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
