//! The Slurm job id and the Kubernetes pod UID in a process's cgroup path.
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
    let path = cgroup_path(cgroup_line);
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

/// The UID of the Kubernetes pod whose cgroup holds the process, from one line of
/// `/proc/PID/cgroup` (or a bare path).
///
/// The kubelet puts each pod in a cgroup named after its UID under the `kubepods` hierarchy,
/// below the pod's QoS class unless it is Guaranteed
/// (<https://kubernetes.io/docs/concepts/architecture/cgroups/>; the kubelet's
/// `pod_container_manager_linux.go` names it `pod` + UID). With the `cgroupfs` driver the path
/// reads `/kubepods/burstable/pod<uid>/<container>`; with the `systemd` driver each level is a
/// slice named after all the levels above it, and the dashes of the UID become underscores
/// (systemd reserves `-` for nesting): `/kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`. A kubelet
/// with its own `--cgroup-root` adds a prefix (`kubelet.slice/kubelet-kubepods.slice/...`).
/// UIDs are 36 characters with four dashes, or 32 hex digits for static pods (a hash of the
/// manifest), and are returned with dashes.
///
/// An agent in a pod has a cgroup namespace of its own (the default with cgroup v2), and reads
/// other processes' paths relative to its own cgroup, climbing with `..` (cgroup_namespaces(7):
/// "the pathname will show ../ entries for each ancestor level"): `/../../burstable/pod<uid>/…`
/// need not name `kubepods`, so a path that climbs counts as inside it.
pub fn pod_uid(cgroup_line: &str) -> Option<String> {
    let mut under_kubepods = false;
    for seg in cgroup_path(cgroup_line)
        .split('/')
        .filter(|s| !s.is_empty())
    {
        if seg.contains("kubepods") || seg == ".." {
            under_kubepods = true;
        }
        if !under_kubepods {
            continue;
        }
        let name = seg.strip_suffix(".slice").unwrap_or(seg);
        let uid = name
            .rsplit_once("-pod")
            .map(|(_, uid)| uid)
            .or_else(|| name.strip_prefix("pod"));
        if let Some(uid) = uid.filter(|u| is_pod_uid(u)) {
            return Some(uid.replace('_', "-"));
        }
    }
    None
}

/// The first pod UID in a whole `/proc/PID/cgroup` file.
pub fn pod_uid_in_file(text: &str) -> Option<String> {
    text.lines().find_map(pod_uid)
}

/// The path of a `/proc/PID/cgroup` line (`0::/path` on v2, `N:controllers:/path` on v1), or
/// the text itself when it is a bare path.
fn cgroup_path(line: &str) -> &str {
    match line.splitn(3, ':').collect::<Vec<_>>().as_slice() {
        [_, _, p] => p,
        _ => line,
    }
}

fn is_pod_uid(text: &str) -> bool {
    let hex = |c: char| c.is_ascii_hexdigit();
    match text.len() {
        32 => text.chars().all(hex),
        36 => text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-' || c == '_',
            _ => hex(c),
        }),
        _ => false,
    }
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

    /// The pod cgroup of each driver and QoS class, as the kubelet names it (see [`pod_uid`]).
    #[test]
    fn pod_uids() {
        let uid = "0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f";
        let cases = [
            // cgroup v2, systemd driver, Burstable and BestEffort pods.
            (
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f9a2c4e_5b1d_4c3a_9e8f_7a6b5c4d3e2f.slice/cri-containerd-4c1f9e.scope",
                Some(uid),
            ),
            (
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f9a2c4e_5b1d_4c3a_9e8f_7a6b5c4d3e2f.slice/docker-4c1f9e.scope",
                Some(uid),
            ),
            // Guaranteed pods sit directly under kubepods.
            (
                "0::/kubepods.slice/kubepods-pod0f9a2c4e_5b1d_4c3a_9e8f_7a6b5c4d3e2f.slice/crio-4c1f9e.scope",
                Some(uid),
            ),
            // cgroup v1, cgroupfs driver.
            (
                "11:devices:/kubepods/burstable/pod0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f/4c1f9e0d",
                Some(uid),
            ),
            (
                "4:memory:/kubepods/pod0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f/4c1f9e0d",
                Some(uid),
            ),
            // A kubelet with its own cgroup root.
            (
                "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0f9a2c4e_5b1d_4c3a_9e8f_7a6b5c4d3e2f.slice/cri-containerd-1.scope",
                Some(uid),
            ),
            // A static pod: its UID is a 32-digit hash.
            (
                "0::/kubepods/burstable/pod8d2e5b7c1a9f4e3d6b0c2a1f9e8d7c6b/abc",
                Some("8d2e5b7c1a9f4e3d6b0c2a1f9e8d7c6b"),
            ),
            // Read from inside an agent's own cgroup namespace: relative, climbing with `..`.
            (
                "0::/../../../kubepods-burstable.slice/kubepods-burstable-pod0f9a2c4e_5b1d_4c3a_9e8f_7a6b5c4d3e2f.slice/cri-containerd-4c1f9e.scope",
                Some(uid),
            ),
            (
                "0::/../../burstable/pod0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f/4c1f9e0d",
                Some(uid),
            ),
            // The QoS level alone, a process outside Kubernetes, a `pod` folder elsewhere.
            ("0::/kubepods.slice/kubepods-burstable.slice", None),
            ("0::/user.slice/user-1001.slice/session-3.scope", None),
            ("0::/system.slice/pod0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f", None),
            ("0::/kubepods/burstable/podnot-a-uid/abc", None),
            ("0::/", None),
        ];
        for (line, want) in cases {
            assert_eq!(pod_uid(line).as_deref(), want, "{line}");
        }
        let v1 = "12:pids:/kubepods/burstable/pod0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f/c1\n1:name=systemd:/kubepods/burstable/pod0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f/c1\n";
        assert_eq!(pod_uid_in_file(v1).as_deref(), Some(uid));
        assert_eq!(pod_uid_in_file("0::/init.scope\n"), None);
    }

    #[test]
    fn whole_file() {
        let v1 = "12:pids:/user.slice\n11:devices:/slurm/uid_1001/job_300/step_0\n";
        assert_eq!(slurm_job_id_in_file(v1).as_deref(), Some("300"));
        assert_eq!(slurm_job_id_in_file("0::/init.scope\n"), None);
    }
}
