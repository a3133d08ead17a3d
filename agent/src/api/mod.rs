//! The mutating API: register and end jobs over a unix socket, where the kernel tells us who is
//! calling (SO_PEERCRED) and the job table decides what they may change. Nothing here mutates
//! over TCP; the TCP server (`export::http`) is read-only.

pub mod client;
pub mod socket;

use tokio::sync::oneshot;

use crate::jobs::JobRecord;
use crate::tracker::{EndRequest, ProgressRequest, RegisterRequest, RequestError};

/// Messages to the owner of the job table (the sampler thread).
#[derive(Debug)]
pub enum Command {
    Register {
        req: RegisterRequest,
        uid: u32,
        reply: oneshot::Sender<Result<JobRecord, RequestError>>,
    },
    End {
        id: String,
        req: EndRequest,
        uid: u32,
        reply: oneshot::Sender<Result<JobRecord, RequestError>>,
    },
    Progress {
        id: String,
        req: ProgressRequest,
        uid: u32,
        reply: oneshot::Sender<Result<JobRecord, RequestError>>,
    },
    /// A benchmark of a GPU finished (from the benchmark thread).
    Benchmark {
        uuid: String,
        result: crate::bench::GpuBenchmark,
    },
    /// Stop the sampler (its sender being dropped does the same).
    Shutdown,
}

/// The user name of a uid, from the system's user database; the uid as text when unknown.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pwd` and `buf` (whose length we pass) and sets `result` to
    // `&pwd` on success or null; nothing outlives this call but the copied name.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    uid.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_has_a_name() {
        assert_eq!(super::user_name(0), "root");
        assert_eq!(super::user_name(4_000_000_000), "4000000000");
    }
}
