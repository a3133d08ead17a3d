//! The ledger as the node thread's [`Store`]: its history is read first, and only a ledger whose
//! history this agent has read is ever written to (PRODUCT.md: "a ledger that could not be loaded
//! is never written to"). Until it can be read (a state directory that appears later, a disk
//! that comes back) every load fails and every write is refused, so the agent starts and keeps
//! serving without it. A damaged file is moved aside, untouched, and a new ledger begins; a file
//! from a newer gpucost is neither moved nor written. It holds the state directory's lock
//! ([`StateLock`]) from the first load on, or from start-up when the agent could take it then.

use std::path::PathBuf;

use tracing::error;

use gpucost_core::clock::unix_now;
use gpucost_core::jobs::{GpuRecord, JobRecord};

use super::{set_aside, Ledger, StateLock, DB_FILE};
use crate::node::Store;

/// `<state_dir>/ledger.db`.
pub struct LedgerStore {
    state_dir: PathBuf,
    ledger: Option<Ledger>,
    /// Whether this agent has read the ledger's history: until then nothing is written to it.
    loaded: bool,
    /// The state directory's lock: no ledger is opened without it.
    lock: Option<StateLock>,
}

impl LedgerStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        LedgerStore {
            state_dir: state_dir.into(),
            ledger: None,
            loaded: false,
            lock: None,
        }
    }

    /// With the state directory's lock, taken at start-up.
    pub fn with_lock(mut self, lock: StateLock) -> Self {
        self.lock = Some(lock);
        self
    }

    /// The ledger, to write to: only once its history has been loaded; opened again after it
    /// was closed.
    fn writable(&mut self) -> Result<&mut Ledger, String> {
        if !self.loaded {
            return Err(format!(
                "the ledger {} has not been loaded: nothing is written to it until its history is read",
                self.location()
            ));
        }
        if self.ledger.is_none() {
            let l = Ledger::open(&self.state_dir).map_err(|e| e.to_string())?;
            self.ledger = Some(l);
        }
        Ok(self.ledger.as_mut().expect("opened above"))
    }
}

impl Store for LedgerStore {
    fn location(&self) -> String {
        self.state_dir.join(DB_FILE).display().to_string()
    }

    fn load(&mut self) -> Result<(Vec<JobRecord>, Vec<GpuRecord>), String> {
        self.ledger = None;
        if self.lock.is_none() {
            self.lock = Some(StateLock::acquire(&self.state_dir).map_err(|e| e.to_string())?);
        }
        let (ledger, jobs, gpus) = match Ledger::open_with_history(&self.state_dir) {
            Ok(opened) => opened,
            Err(e) if e.is_damaged() => {
                let path = self.location();
                let aside = set_aside(&self.state_dir, unix_now() as u64).map_err(|io| {
                    format!("{e}; it cannot be moved aside to begin a new ledger: {io}")
                })?;
                error!(
                    ledger = %path,
                    moved_to = %aside.display(),
                    "THE LEDGER {path} IS DAMAGED AND WAS MOVED ASIDE, UNTOUCHED, TO {} (with its \
                     -wal and -shm, if any): {e}. A new, empty ledger begins at {path}: totals \
                     start again from zero. Keep the moved file: `sqlite3 {} .recover` may get \
                     its history back",
                    aside.display(),
                    aside.display(),
                );
                Ledger::open_with_history(&self.state_dir).map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        self.ledger = Some(ledger);
        self.loaded = true;
        Ok((jobs, gpus))
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.writable()?
            .set_meta(key, value)
            .map_err(|e| e.to_string())
    }

    fn persist(&mut self, jobs: &[&JobRecord], gpus: &[GpuRecord]) -> Result<(), String> {
        self.writable()?
            .persist(jobs, gpus)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
