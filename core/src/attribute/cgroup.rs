//! The Slurm job id in a process's cgroup path.
//!
//! Slurm's cgroup plugins put every step of a job under a folder named after the job:
//! cgroup v2 `/system.slice/slurmstepd.scope/job_41871/step_0/user/task_0`, cgroup v1
//! `/slurm/uid_1001/job_41871/step_batch`. Sites rename the prefix (`job_` is the default of
//! the plugin, but `slurm_job_` and plain `job41871` have been seen), so the rule is: a path
//! segment under a Slurm root (`slurm`, `slurm_*`, `slurmstepd.scope`, `NODE_slurmstepd.scope`) that starts with `job`
//! and ends in the id. Pure string work; reading `/proc/PID/cgroup` is in `procfs`.

/// The job id in one line of `/proc/PID/cgroup` (`0::/path` on v2, `N:controllers:/path` on v1),
/// or in a bare path.
pub fn slurm_job_id(cgroup_line: &str) -> Option<String> {
    let path = match cgroup_line.splitn(3, ':').collect::<Vec<_>>().as_slice() {
        [_, _, p] => *p,
        _ => cgroup_line,
    };
    let mut under_slurm = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if under_slurm {
            if let Some(id) = job_segment_id(seg) {
                return Some(id);
            }
        }
        if seg == "slurm" || seg.starts_with("slurm_") || seg.contains("slurmstepd") {
            under_slurm = true;
        }
    }
    None
}

/// `job_41871` -> 41871; `slurm_job_41871`, `job41871`, `job_41871_0` (array task) too.
fn job_segment_id(seg: &str) -> Option<String> {
    let rest = seg.strip_prefix("slurm_").unwrap_or(seg);
    let rest = rest.strip_prefix("job")?;
    let id = rest.trim_start_matches(['_', '-']);
    let valid = !id.is_empty()
        && id.starts_with(|c: char| c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    valid.then(|| id.to_string())
}

/// The first Slurm job id in a whole `/proc/PID/cgroup` file.
pub fn slurm_job_id_in_file(text: &str) -> Option<String> {
    text.lines().find_map(slurm_job_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases = [
            (
                "0::/system.slice/slurmstepd.scope/job_41871/step_0/user/task_0",
                Some("41871"),
            ),
            (
                "0::/system.slice/node1_slurmstepd.scope/job_7/step_batch/user/task_0",
                Some("7"),
            ),
            (
                "11:devices:/slurm/uid_1001/job_41871/step_batch",
                Some("41871"),
            ),
            ("4:memory:/slurm/uid_0/job_12_3/step_0", Some("12_3")),
            ("0::/slurm_node7/uid_1001/job_99/step_0", Some("99")),
            (
                "0::/system.slice/slurmstepd.scope/slurm_job_5/step_0",
                Some("5"),
            ),
            ("0::/system.slice/slurmstepd.scope/job5/step_0", Some("5")),
            ("0::/user.slice/user-1001.slice/session-3.scope", None),
            ("0::/kubepods/burstable/pod1234/abcd", None),
            // A `job_` folder outside a Slurm tree is not a Slurm job.
            ("0::/user.slice/job_123", None),
            ("0::/system.slice/slurmstepd.scope/job_/step_0", None),
            ("0::/system.slice/slurmstepd.scope/jobs/step_0", None),
            ("0::/system.slice/slurmstepd.scope/job_abc/step_0", None),
            ("/slurm/uid_1/job_8/step_0", Some("8")),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(slurm_job_id(line).as_deref(), want, "{line}");
        }
    }

    #[test]
    fn whole_file() {
        let v1 = "12:pids:/user.slice\n11:devices:/slurm/uid_1001/job_300/step_0\n";
        assert_eq!(slurm_job_id_in_file(v1).as_deref(), Some("300"));
        assert_eq!(slurm_job_id_in_file("0::/init.scope\n"), None);
    }
}
