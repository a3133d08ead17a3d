//! Any `/proc/PID/cgroup` content: a Slurm job id or none, a pod UID or none, never a panic; an
//! id found is a non-empty run of safe characters, a UID 32 or 36 characters of hex and dashes.
#![no_main]
use gpucost_core::attribute::cgroup::{pod_uid_in_file, slurm_job_id_in_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(id) = slurm_job_id_in_file(&text) {
        assert!(!id.is_empty());
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'));
    }
    if let Some(uid) = pod_uid_in_file(&text) {
        assert!(uid.len() == 32 || uid.len() == 36, "{uid}");
        assert!(uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
});
