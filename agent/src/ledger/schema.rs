//! The ledger's schema as a list of migrations, keyed on `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes a database from version `i` to version `i + 1`; version 0 is an empty
//! file. To change the schema, append one entry (never edit a shipped one): `open` applies every
//! missing step in one transaction together with the new `user_version` and the reading of the
//! history, so that a file whose history cannot be read is not migrated either.
//!
//! Every REAL column of a [`Usage`](gpucost_core::jobs::Usage) (and `started_at`,
//! `unallocated_seconds`) may hold NULL: SQLite stores a NaN as NULL, and reading NULL back gives
//! NaN. A bad value upstream is then visible in reports instead of making every persist fail on a
//! NOT NULL constraint. `ended_at` NULL means the job has not ended.
//!
//! The usage columns of `jobs`, `job_gpus` and `gpus` are [`Usage::FIELDS`], in that order; the
//! statements that read and write them are built from that table. The schema text is written
//! out, as shipped (a migration is never edited), and a test checks that its usage columns are
//! still the field table.
//!
//! [`Usage::FIELDS`]: gpucost_core::jobs::Usage::FIELDS

/// Version 1: jobs, their per-GPU usage, GPUs, and key/value metadata.
const V1: &str = "
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    user             TEXT NOT NULL,
    uid              INTEGER,
    scheduler        TEXT NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',   -- JSON object of strings
    started_at       REAL,                         -- unix seconds
    ended_at         REAL,                         -- unix seconds; NULL while running
    outcome          TEXT NOT NULL,
    exit_code        INTEGER,
    signal           INTEGER,
    registration     TEXT,                         -- JSON {pid, gpus} of registered jobs
    progress         TEXT,                         -- JSON of what the job reported
    gpu_seconds      REAL,
    energy_j         REAL,
    carbon_g         REAL,
    cost_gpu_time    REAL,
    cost_energy      REAL,
    cost_overhead    REAL,
    idle_gpu_seconds REAL,
    idle_cost        REAL,
    flop             REAL,
    fp32_seconds     REAL,
    fp32_saving      REAL
);
CREATE INDEX jobs_started_at ON jobs(started_at);
CREATE INDEX jobs_ended_at ON jobs(ended_at);

CREATE TABLE job_gpus (
    job_id           TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    gpu_uuid         TEXT NOT NULL,
    gpu_seconds      REAL,
    energy_j         REAL,
    carbon_g         REAL,
    cost_gpu_time    REAL,
    cost_energy      REAL,
    cost_overhead    REAL,
    idle_gpu_seconds REAL,
    idle_cost        REAL,
    flop             REAL,
    fp32_seconds     REAL,
    fp32_saving      REAL,
    PRIMARY KEY (job_id, gpu_uuid)
) WITHOUT ROWID;

CREATE TABLE gpus (
    uuid                TEXT PRIMARY KEY NOT NULL,
    idx                 INTEGER NOT NULL,
    model               TEXT NOT NULL,
    gpu_seconds         REAL,
    energy_j            REAL,
    carbon_g            REAL,
    cost_gpu_time       REAL,
    cost_energy         REAL,
    cost_overhead       REAL,
    idle_gpu_seconds    REAL,
    idle_cost           REAL,
    flop                REAL,
    fp32_seconds        REAL,
    fp32_saving         REAL,
    unallocated_seconds REAL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
";

/// Version 2: each GPU's seconds with each clock-event reason active and its Xids by code, which
/// a restart used to reset (issue 13). JSON objects, keyed by the reason's name (the `reason`
/// label; a new reason needs no migration) and by the Xid code. NULL in a ledger written before:
/// none yet.
const V2: &str = "
ALTER TABLE gpus ADD COLUMN throttled_s TEXT;     -- JSON {reason: seconds}
ALTER TABLE gpus ADD COLUMN xids TEXT;            -- JSON {xid code: count}
";

/// Version 3: why a failed job failed (`time_limit`, `oom`, `signal`, ... : `EndReason`),
/// issue 16. NULL in a ledger written before: not known. (A checkpoint lives in the progress
/// JSON, which needs no migration.)
const V3: &str = "
ALTER TABLE jobs ADD COLUMN reason TEXT;          -- EndReason of a failed job, else NULL
";

/// `MIGRATIONS[i]` upgrades version `i` to `i + 1`. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
