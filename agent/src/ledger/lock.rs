//! One agent per state directory: an exclusive lock on `<state_dir>/agent.lock`, taken at start
//! and held for as long as the agent runs, so that two agents never write one ledger.
//!
//! The lock is `flock(2)` with `LOCK_EX | LOCK_NB`: it belongs to the open file, so the kernel
//! releases it when the agent exits in any way (`kill -9` and the OOM killer included) and a
//! stale lock cannot outlive its agent; the file itself stays (removing it would let a third agent
//! lock a new file while a second still holds the old one). The holder writes its pid into it, for
//! the message of the agent that finds it taken.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::make_state_dir;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "agent.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another gpucost agent ({}) is using the state directory {} (it holds {}): stop it, or give \
         this agent its own --state-dir and --socket",
        .pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
        .dir.display(),
        .path.display()
    )]
    Held {
        dir: PathBuf,
        path: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot lock the state directory {} ({}): {source}", .dir.display(), .path.display())]
    Io {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StateLock {
    /// Takes the lock of `state_dir` (creating the directory, mode 0750, and the lock file where
    /// missing), without waiting: [`LockError::Held`] with the holder's pid when another process
    /// has it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io {
            dir: state_dir.to_owned(),
            path: path.clone(),
            source,
        };
        make_state_dir(state_dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&path)
            .map_err(io_err)?;
        // SAFETY: flock(2) on the descriptor of `file`, which is open for the whole call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            // flock(2): "EWOULDBLOCK: The file is locked and the LOCK_NB flag was selected."
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                // The holder may not have written its pid yet: then it is unknown.
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: state_dir.to_owned(),
                    path,
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(io_err(e));
        }
        // The pid is for the message above; a disk too full to write it takes nothing from the
        // lock itself.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_other_is_told_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = StateLock::acquire(&state).unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(state.join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        // flock locks belong to the open file, so a second open in the same process conflicts
        // as another process's would.
        let err = StateLock::acquire(&state).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, LockError::Held { pid: Some(p), .. } if p == pid),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("pid {pid}")) && msg.contains(&state.display().to_string()),
            "{msg}"
        );
        drop(held);
        let _again = StateLock::acquire(&state).unwrap();
    }

    #[test]
    fn a_state_dir_that_cannot_be_made_is_an_io_error_not_a_holder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = StateLock::acquire(&file.join("state")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err}");
    }
}
