//! Process facts from a `/proc` tree whose root is injectable (tests build fixture trees of real
//! files). A process that vanishes between two reads is simply absent: `None`, never an error.
//! The parsing is `gpucost_core::attribute::process`; this module only reads the files.

use std::path::{Path, PathBuf};

use gpucost_core::attribute::cgroup::{pod_uid_in_file, slurm_job_id_in_file};
use gpucost_core::attribute::process::{parse_environ, parse_stat, ProcInfo, ProcSource};

/// A `/proc` tree.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    fn read(&self, pid: u32, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(pid.to_string()).join(file)).ok()
    }
}

impl ProcSource for ProcFs {
    fn info(&self, pid: u32) -> Option<ProcInfo> {
        let stat = String::from_utf8_lossy(&self.read(pid, "stat")?).into_owned();
        let (comm, ppid, start_ticks) = parse_stat(&stat)?;
        let status = String::from_utf8_lossy(&self.read(pid, "status")?).into_owned();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|u| u.parse().ok())?;
        let cgroup = self
            .read(pid, "cgroup")
            .map(|c| String::from_utf8_lossy(&c).into_owned());
        let slurm_job = cgroup.as_deref().and_then(slurm_job_id_in_file);
        let pod_uid = cgroup.as_deref().and_then(pod_uid_in_file);
        // environ is readable only by the owner and root; without it we simply know less.
        let (env_job_id, env_labels) = self
            .read(pid, "environ")
            .map(|e| parse_environ(&e))
            .unwrap_or_default();
        Some(ProcInfo {
            pid,
            ppid,
            uid,
            user: None,
            comm,
            start_ticks,
            slurm_job,
            pod_uid,
            env_job_id,
            env_labels,
        })
    }
}

/// Writes a fixture process into a fake `/proc` tree (for tests of this module and others).
pub fn write_fixture(root: &Path, p: &ProcInfo, cgroup: &str, environ: &[&str]) {
    let dir = root.join(p.pid.to_string());
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let stat = format!(
        "{} ({}) S {} {} 0 0 -1 4194560 0 0 0 0 10 5 0 0 20 0 1 0 {} 1000 100 0",
        p.pid, p.comm, p.ppid, p.pid, p.start_ticks
    );
    std::fs::write(dir.join("stat"), stat).expect("stat");
    std::fs::write(
        dir.join("status"),
        format!(
            "Name:\t{}\nUid:\t{}\t{}\t{}\t{}\n",
            p.comm, p.uid, p.uid, p.uid, p.uid
        ),
    )
    .expect("status");
    std::fs::write(dir.join("cgroup"), cgroup).expect("cgroup");
    let mut env = environ.join("\0");
    env.push('\0');
    std::fs::write(dir.join("environ"), env).expect("environ");
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucost_core::attribute::process::ancestry;

    #[test]
    fn reads_a_fixture_tree_and_walks_ancestry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = |pid, ppid, uid, comm: &str| ProcInfo {
            pid,
            ppid,
            uid,
            comm: comm.into(),
            start_ticks: 1000 + pid as u64,
            ..ProcInfo::default()
        };
        write_fixture(root, &p(1, 0, 0, "init"), "0::/init.scope\n", &[]);
        write_fixture(
            root,
            &p(100, 1, 0, "slurmstepd"),
            "0::/system.slice/slurmstepd.scope/job_55/step_0\n",
            &[],
        );
        write_fixture(
            root,
            &p(200, 100, 1001, "python"),
            "0::/system.slice/slurmstepd.scope/job_55/step_0/user/task_0\n",
            &["HOME=/home/a", "GPUCOST_LABELS=team=vision"],
        );
        let fs = ProcFs::new(root);
        let info = fs.info(200).unwrap();
        assert_eq!(info.uid, 1001);
        assert_eq!(info.comm, "python");
        assert_eq!(info.slurm_job.as_deref(), Some("55"));
        assert_eq!(info.env_labels["team"], "vision");
        assert_eq!(info.pod_uid, None);
        assert_eq!(fs.info(999), None);
        write_fixture(
            root,
            &p(300, 1, 0, "python"),
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7c1d2e3f_4a5b_4c6d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-9e8d.scope\n",
            &[],
        );
        assert_eq!(
            fs.info(300).unwrap().pod_uid.as_deref(),
            Some("7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")
        );
        let chain: Vec<u32> = ancestry(&fs, 200, 64).iter().map(|p| p.pid).collect();
        assert_eq!(chain, vec![200, 100, 1]);
        assert_eq!(ancestry(&fs, 200, 2).len(), 2);
    }
}
