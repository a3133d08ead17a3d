//! The spool: what a scheduler hook (`gpucost job start|end`) could not tell the agent, kept as
//! files in `<state_dir>/spool/` for the agent to apply when it is back (issue 16, item 8), so
//! that a restart or a hang of the agent during a job loses neither its start nor its end.
//!
//! Each file is one request, with the moment the hook ran: a replayed start begins the job then,
//! a replayed end ends it then. Only root's hooks spool (the folder is root's, mode 0700), and
//! the agent applies a file only if the folder and the file belong to root (or to the agent's
//! own user) and nobody else may write to the folder: a spooled request is applied with root's
//! rights. Files are named by time, so they are applied in the order the hooks ran; each is
//! removed once applied or refused.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use gpucost_core::tracker::{EndRequest, RegisterRequest};

/// The folder under the state directory.
pub const DIR: &str = "spool";

/// One spooled request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Spooled {
    Register {
        /// Unix seconds when the hook ran.
        at: f64,
        req: RegisterRequest,
    },
    End {
        at: f64,
        id: String,
        req: EndRequest,
    },
}

impl Spooled {
    pub fn at(&self) -> f64 {
        match self {
            Spooled::Register { at, .. } | Spooled::End { at, .. } => *at,
        }
    }
}

/// Writes `s` into `dir` (created, mode 0700, when missing); the file's path. Written to a
/// temporary name and renamed, so the agent never reads half a file.
pub fn write(dir: &Path, s: &Spooled) -> std::io::Result<PathBuf> {
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let nanos = (s.at() * 1e9) as u128;
    let kind = match s {
        Spooled::Register { .. } => "start",
        Spooled::End { .. } => "end",
    };
    let name = format!("{nanos:020}-{}-{kind}.json", std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let text = serde_json::to_vec(s).map_err(std::io::Error::other)?;
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Why a spool folder or file is not trusted, if it is not.
fn untrusted(meta: &fs::Metadata, what: &Path, dir: bool) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Some(format!(
            "{} belongs to uid {}, not to root",
            what.display(),
            meta.uid()
        ));
    }
    if dir && meta.mode() & 0o022 != 0 {
        return Some(format!(
            "{} may be written by others (mode {:o})",
            what.display(),
            meta.mode() & 0o777
        ));
    }
    if !dir && !meta.is_file() {
        return Some(format!("{} is not a plain file", what.display()));
    }
    None
}

/// A spooled file and what it holds, or why it cannot be applied.
pub type Entry = (PathBuf, Result<Spooled, String>);

/// The spooled requests in `dir`, oldest first, and any problem with the folder itself (which
/// is then not read). A missing folder holds nothing.
pub fn read(dir: &Path) -> Result<Vec<Entry>, String> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    if let Some(why) = untrusted(&meta, dir, true) {
        return Err(format!("spool not applied: {why}"));
    }
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|p| {
            let r = fs::symlink_metadata(&p)
                .map_err(|e| e.to_string())
                .and_then(|m| untrusted(&m, &p, false).map_or(Ok(()), Err))
                .and_then(|()| fs::read(&p).map_err(|e| e.to_string()))
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            (p, r)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_requests_come_back_in_the_order_they_were_written() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join(DIR);
        let start = Spooled::Register {
            at: 1_780_000_000.25,
            req: RegisterRequest {
                id: Some("4812".into()),
                gpus: vec!["0".into()],
                ..RegisterRequest::default()
            },
        };
        let end = Spooled::End {
            at: 1_780_000_100.5,
            id: "4812".into(),
            req: EndRequest {
                exit_code: Some(0),
                ..EndRequest::default()
            },
        };
        // Written end first: the names order them by time.
        write(&dir, &end).unwrap();
        write(&dir, &start).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let got: Vec<Spooled> = read(&dir)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.unwrap())
            .collect();
        assert_eq!(got, [start, end]);
        // A file that is not a request is reported, not applied.
        fs::write(dir.join("00000000000000000001-1-end.json"), "{").unwrap();
        let first = read(&dir).unwrap().remove(0);
        assert!(first.1.is_err());
        // A folder others may write to is not trusted.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = read(&dir).unwrap_err();
        assert!(e.contains("written by others"), "{e}");
        assert_eq!(read(&state.path().join("none")).unwrap(), Vec::new());
    }
}
