//! The GPU -> job mapping directory that a Slurm prolog writes (and an epilog clears).
//!
//! One file per GPU, named by its UUID (`GPU-...`, `MIG-...`: exact) or its NVML index (`0`,
//! `1`, ...: Slurm's `SLURM_JOB_GPUS` follow gres.conf's order, which need not be NVML's), holding
//! the id(s) of the job(s) allocated that GPU, one per line. This is the layout dcgm-exporter
//! reads for its HPC job mapping, so one prolog can feed both. Example prolog line:
//! `for g in ${SLURM_JOB_GPUS//,/ }; do echo "$SLURM_JOB_ID" > /run/gpucost/job-map/$g; done`.
//! A GPU listed here counts as allocated even with no process on it (allocated-but-idle).

use std::path::Path;

pub use gpucost_core::attribute::JobMap;

/// Reads the mapping directory. A missing directory is an empty map; unreadable files are
/// skipped (a prolog may be writing them right now).
pub fn read_job_map(dir: &Path) -> JobMap {
    let mut map = JobMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return map;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let jobs: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if !jobs.is_empty() {
            map.insert(name, jobs);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucost_core::attribute::jobs_for;

    #[test]
    fn reads_index_and_uuid_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0"), "41871\n").unwrap();
        std::fs::write(dir.path().join("GPU-abc"), "7\n8\n\n").unwrap();
        std::fs::write(dir.path().join("2"), "\n").unwrap();
        std::fs::write(dir.path().join(".tmp"), "9\n").unwrap();
        let map = read_job_map(dir.path());
        assert_eq!(jobs_for(&map, 0, "GPU-x"), ["41871"]);
        assert_eq!(jobs_for(&map, 1, "GPU-abc"), ["7", "8"]);
        assert!(jobs_for(&map, 2, "GPU-y").is_empty());
        assert_eq!(map.len(), 2);
        assert!(read_job_map(&dir.path().join("missing")).is_empty());
    }
}
