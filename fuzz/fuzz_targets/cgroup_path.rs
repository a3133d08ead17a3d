//! Any `/proc/PID/cgroup` content: a Slurm job id or none, never a panic; an id found is a
//! non-empty run of safe characters.
#![no_main]
use gpucost_core::attribute::cgroup::slurm_job_id_in_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(id) = slurm_job_id_in_file(&text) {
        assert!(!id.is_empty());
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'));
    }
});
