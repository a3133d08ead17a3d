//! Any request body on the job socket, registered, ended and reported on a job table: a
//! result or a refusal, never a panic, and a refused request changes nothing.
#![no_main]
use gpucost_core::clock::Now;
use gpucost_core::tracker::{EndRequest, ProgressRequest, RegisterRequest, Tracker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut t = Tracker::restore(Vec::new(), Vec::new(), Now::at(1000.0), 600.0, 15.0, "fuzz");
    if let Ok(req) = serde_json::from_slice::<RegisterRequest>(data) {
        let before = t.jobs().count();
        match t.register(req, 1001, "alice", Now::at(1000.0)) {
            Ok(j) => assert!(t.get(&j.id).is_some()),
            Err(_) => assert_eq!(t.jobs().count(), before),
        }
    }
    t.register(
        RegisterRequest {
            id: Some("j".into()),
            pid: Some(4242),
            ..RegisterRequest::default()
        },
        1001,
        "alice",
        Now::at(1000.0),
    )
    .unwrap();
    if let Ok(req) = serde_json::from_slice::<ProgressRequest>(data) {
        let _ = t.progress("j", req, 1001, Now::at(1001.0));
    }
    if let Ok(req) = serde_json::from_slice::<EndRequest>(data) {
        let _ = t.end("j", req, 1001, Now::at(1002.0));
    }
});
