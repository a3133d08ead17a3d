//! The ledger as the node thread's [`Store`]: opened on first use and again after it could not
//! be (a state directory that appears later, a disk that was full), so the agent starts and
//! keeps serving without it.

use std::path::PathBuf;

use gpucost_core::jobs::{GpuRecord, JobRecord};

use super::{Ledger, DB_FILE};
use crate::node::Store;

/// `<state_dir>/ledger.db`, opened lazily.
pub struct LedgerStore {
    state_dir: PathBuf,
    ledger: Option<Ledger>,
}

impl LedgerStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        LedgerStore {
            state_dir: state_dir.into(),
            ledger: None,
        }
    }

    fn open(&mut self) -> Result<&mut Ledger, String> {
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
        let l = self.open()?;
        match (l.load_jobs(), l.load_gpus()) {
            (Ok(j), Ok(g)) => Ok((j, g)),
            (Err(e), _) | (_, Err(e)) => {
                self.ledger = None;
                Err(format!("cannot load the ledger: {e}"))
            }
        }
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.open()?.set_meta(key, value).map_err(|e| e.to_string())
    }

    fn persist(&mut self, jobs: &[&JobRecord], gpus: &[GpuRecord]) -> Result<(), String> {
        self.open()?
            .persist(jobs, gpus)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
