use std::collections::BTreeMap;

use super::*;
use crate::attribute::Found;
use crate::clock::Now;

fn tracker() -> Tracker {
    Tracker::restore(
        Vec::new(),
        Vec::new(),
        Now::at(1000.0),
        600.0,
        15.0,
        "node1",
    )
}

fn req(id: &str) -> RegisterRequest {
    RegisterRequest {
        id: Some(id.into()),
        pid: Some(4242),
        ..RegisterRequest::default()
    }
}

#[test]
fn a_user_may_end_only_their_own_jobs() {
    let mut t = tracker();
    let j = t
        .register(req("a"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    assert_eq!(
        (j.uid, j.user.as_str(), j.outcome),
        (Some(1001), "alice", Outcome::Running)
    );
    let end = EndRequest {
        exit_code: Some(0),
        ..EndRequest::default()
    };
    assert!(matches!(
        t.end("a", end.clone(), 1002, Now::at(1001.0)),
        Err(RequestError::Forbidden(_))
    ));
    assert_eq!(
        t.get("a").unwrap().outcome,
        Outcome::Running,
        "a refusal changes nothing"
    );
    assert!(matches!(
        t.end("nope", end.clone(), 0, Now::at(1001.0)),
        Err(RequestError::NotFound(_))
    ));
    let j = t.end("a", end.clone(), 1001, Now::at(1002.0)).unwrap();
    assert_eq!((j.outcome, j.ended_at), (Outcome::Succeeded, Some(1002.0)));
    assert!(matches!(
        t.end("a", end, 0, Now::at(1003.0)),
        Err(RequestError::Conflict(_))
    ));
    // Root may end anyone's job.
    t.register(req("b"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    let j = t
        .end(
            "b",
            EndRequest {
                signal: Some(9),
                ..EndRequest::default()
            },
            0,
            Now::at(1004.0),
        )
        .unwrap();
    assert_eq!(j.outcome, Outcome::Failed);
    assert_eq!(t.finished_counts()[&Outcome::Succeeded], 1);
    assert_eq!(t.finished_counts()[&Outcome::Failed], 1);
}

#[test]
fn registration_input_is_checked() {
    let mut t = tracker();
    let cases: Vec<(RegisterRequest, u32, &str)> = vec![
        (
            RegisterRequest {
                uid: Some(0),
                ..req("x")
            },
            1001,
            "another user",
        ),
        (
            RegisterRequest {
                user: Some("bob".into()),
                ..req("x")
            },
            1001,
            "another user",
        ),
        (req(&"x".repeat(300)), 0, "job id must be"),
        (req("a\nb"), 0, "job id must be"),
        // Issue 13, item 10: root's `user` field took NUL and newlines (into log lines, the
        // ledger and the report) and any length.
        (
            RegisterRequest {
                user: Some("alice\0".into()),
                ..req("x")
            },
            0,
            "user must be",
        ),
        (
            RegisterRequest {
                user: Some("alice\nFAKE LOG LINE".into()),
                ..req("x")
            },
            0,
            "user must be",
        ),
        (
            RegisterRequest {
                user: Some("a".repeat(MAX_TEXT + 1)),
                ..req("x")
            },
            0,
            "user must be",
        ),
        (
            RegisterRequest {
                user: Some(String::new()),
                ..req("x")
            },
            0,
            "user must be",
        ),
        (
            RegisterRequest {
                labels: BTreeMap::from([("bad key".into(), "v".into())]),
                ..req("x")
            },
            0,
            "label key",
        ),
    ];
    for (r, uid, want) in cases {
        let e = t
            .register(r, uid, "u", Now::at(1000.0))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    assert_eq!(t.jobs().count(), 0);
    // Root registers for a user (a Slurm prolog).
    let j = t
        .register(
            RegisterRequest {
                uid: Some(1001),
                user: Some("alice".into()),
                ..req("55")
            },
            0,
            "root",
            Now::at(1000.0),
        )
        .unwrap();
    assert_eq!((j.uid, j.user.as_str()), (Some(1001), "alice"));
    // Without an id the agent makes one.
    let j = t
        .register(
            RegisterRequest {
                pid: Some(4242),
                ..RegisterRequest::default()
            },
            1001,
            "alice",
            Now::at(1000.0),
        )
        .unwrap();
    assert_eq!(j.id, "node1-1000-1");
}

fn found(id: &str, scheduler: Scheduler) -> Found {
    Found {
        id: id.into(),
        scheduler,
        name: id.into(),
        uid: Some(1001),
        user: Some("alice".into()),
        labels: BTreeMap::new(),
    }
}

#[test]
fn found_jobs_appear_and_vanish_as_unknown() {
    let mut t = tracker();
    let att = Attribution {
        owners: vec![vec![("41".into(), 1.0)]],
        found: BTreeMap::from([("41".into(), found("41", Scheduler::Slurm))]),
    };
    t.observe(&att, |_| true, |u| u.to_string(), Now::at(1000.0));
    assert_eq!(t.get("41").unwrap().scheduler, Scheduler::Slurm);
    let empty = Attribution {
        owners: vec![vec![]],
        found: BTreeMap::new(),
    };
    t.observe(&empty, |_| true, |u| u.to_string(), Now::at(1010.0));
    assert_eq!(
        t.get("41").unwrap().outcome,
        Outcome::Running,
        "within the vanish time"
    );
    t.observe(&empty, |_| true, |u| u.to_string(), Now::at(1016.0));
    let j = t.get("41").unwrap();
    assert_eq!((j.outcome, j.ended_at), (Outcome::Unknown, Some(1000.0)));

    // A registered job whose root process died without a word ends unknown too.
    t.register(req("r"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    t.observe(
        &empty,
        |pid| pid != 4242,
        |u| u.to_string(),
        Now::at(1020.0),
    );
    assert_eq!(t.get("r").unwrap().outcome, Outcome::Unknown);
    assert_eq!(t.finished_counts()[&Outcome::Unknown], 2);
}

#[test]
fn accounting_goes_to_running_owners_and_the_gpu() {
    let mut t = tracker();
    let pricing = crate::config::example_pricing();
    t.register(req("a"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    t.register(req("b"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    let iv = Interval {
        t0: 1000.0,
        dt: 3600.0,
        energy_j: 3.6e6,
        utilization: Some(0.9),
        model: "NVIDIA H100 80GB HBM3",
        flop: 0.0,
        fp32_bound_speedup: None,
        slice_share: 1.0,
    };
    let owners = vec![("a".to_string(), 0.75), ("b".to_string(), 0.25)];
    t.account(
        &pricing,
        ("GPU-0", 0, "NVIDIA H100 80GB HBM3"),
        &owners,
        &iv,
        GpuRates::default(),
    );
    let a = t.get("a").unwrap();
    assert!((a.usage.gpu_seconds - 2700.0).abs() < 1e-9);
    assert!(
        (a.usage.cost_gpu_time - 3.0).abs() < 1e-9,
        "0.75 x 4.00/h x 1 h"
    );
    assert!((a.per_gpu["GPU-0"].energy_j - 2.7e6).abs() < 1e-6);
    let gpu = t.gpus().next().unwrap();
    assert!((gpu.usage.cost_gpu_time - 4.0).abs() < 1e-9);
    assert_eq!(gpu.unallocated_seconds, 0.0);
    // An ended job gets nothing more; its share goes unallocated.
    t.end(
        "b",
        EndRequest {
            exit_code: Some(0),
            ..EndRequest::default()
        },
        1001,
        Now::at(4600.0),
    )
    .unwrap();
    t.account(
        &pricing,
        ("GPU-0", 0, "NVIDIA H100 80GB HBM3"),
        &[("b".to_string(), 1.0)],
        &iv,
        GpuRates::default(),
    );
    assert!((t.get("b").unwrap().usage.gpu_seconds - 900.0).abs() < 1e-9);
    assert_eq!(t.gpus().next().unwrap().unallocated_seconds, 3600.0);
    assert_eq!(t.dirty().len(), 2);
    t.mark_clean();
    assert!(t.dirty().is_empty());
}

#[test]
fn restore_continues_running_jobs_and_counts_finished_ones() {
    let mut t = tracker();
    // A prolog (root) registers job a for alice with GPU 0.
    t.register(
        RegisterRequest {
            gpus: vec!["0".into()],
            uid: Some(1001),
            ..req("a")
        },
        0,
        "root",
        Now::at(1000.0),
    )
    .unwrap();
    t.register(req("b"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    t.end(
        "b",
        EndRequest {
            exit_code: Some(3),
            ..EndRequest::default()
        },
        1001,
        Now::at(1100.0),
    )
    .unwrap();
    let jobs: Vec<JobRecord> = t.jobs().cloned().collect();
    let r = Tracker::restore(
        jobs.clone(),
        Vec::new(),
        Now::at(1200.0),
        600.0,
        15.0,
        "node1",
    );
    assert_eq!(r.get("a").unwrap().outcome, Outcome::Running);
    assert_eq!(
        r.registrations(),
        vec![Registration {
            job_id: "a".into(),
            root_pid: Some(4242),
            gpus: vec!["0".into()],
            uid: None,
        }]
    );
    assert_eq!(r.finished_counts()[&Outcome::Failed], 1);
    // Past the grace period a finished job is not loaded, but still counted.
    let r = Tracker::restore(jobs, Vec::new(), Now::at(5000.0), 600.0, 15.0, "node1");
    assert!(r.get("b").is_none());
    assert_eq!(r.finished_counts()[&Outcome::Failed], 1);
}

#[test]
fn finished_jobs_expire_after_the_grace_period_once_persisted() {
    let mut t = tracker();
    t.register(req("a"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    t.end("a", EndRequest::default(), 1001, Now::at(1000.0))
        .unwrap();
    t.expire(Now::at(2000.0));
    assert!(t.get("a").is_some(), "not yet persisted");
    t.mark_clean();
    t.expire(Now::at(1500.0));
    assert!(t.get("a").is_some(), "within the grace period");
    t.expire(Now::at(1601.0));
    assert!(t.get("a").is_none());
}

#[test]
fn a_found_job_seen_again_after_it_ended_runs_again_under_its_id() {
    let mut t = tracker();
    let att = Attribution {
        owners: vec![vec![("unattributed:7".into(), 1.0)]],
        found: BTreeMap::from([(
            "unattributed:7".into(),
            found("unattributed:7", Scheduler::Unattributed),
        )]),
    };
    t.observe(&att, |_| true, |u| u.to_string(), Now::at(1000.0));
    t.end(
        "unattributed:7",
        EndRequest {
            exit_code: Some(1),
            ..EndRequest::default()
        },
        0,
        Now::at(1010.0),
    )
    .unwrap();
    t.observe(&att, |_| true, |u| u.to_string(), Now::at(1020.0));
    let j = t.get("unattributed:7").unwrap();
    assert_eq!((j.outcome, j.ended_at), (Outcome::Running, None));
    // A registered job is not reopened by attribution.
    t.register(req("r"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    t.end("r", EndRequest::default(), 1001, Now::at(1001.0))
        .unwrap();
    let att = Attribution {
        owners: vec![vec![("r".into(), 1.0)]],
        found: BTreeMap::from([("r".into(), found("r", Scheduler::Env))]),
    };
    t.observe(&att, |_| true, |u| u.to_string(), Now::at(1030.0));
    assert_eq!(t.get("r").unwrap().outcome, Outcome::Unknown);
}

#[test]
fn progress_reports_are_cumulative_and_owned() {
    let mut t = tracker();
    t.register(req("p"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    let rep = |tokens, fpt| ProgressRequest {
        tokens: Some(tokens),
        flops_per_token: fpt,
        ..ProgressRequest::default()
    };
    let j = t
        .progress("p", rep(1000, Some(6e9)), 1001, Now::at(1010.0))
        .unwrap();
    let p = j.progress.unwrap();
    assert_eq!((p.tokens, p.model_flop, p.flop_rate), (1000, 6e12, None));
    // 9000 more tokens in 10 s at 6e9 FLOPs each: 5.4e12 FLOP/s.
    let p = t
        .progress("p", rep(10_000, None), 1001, Now::at(1020.0))
        .unwrap()
        .progress
        .unwrap();
    assert_eq!(p.model_flop, 6e13);
    assert_eq!(p.flop_rate, Some(5.4e12));
    let cases = [
        (rep(9_000, None), 1001, "went backwards"),
        (rep(20_000, Some(-1.0)), 1001, "flops_per_token"),
        (rep(20_000, None), 1002, "another user"),
    ];
    for (r, uid, want) in cases {
        let e = t
            .progress("p", r, uid, Now::at(1030.0))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    assert_eq!(
        t.get("p").unwrap().progress.as_ref().unwrap().tokens,
        10_000
    );
    assert!(matches!(
        t.progress("nope", rep(1, None), 0, Now::at(1.0)),
        Err(RequestError::NotFound(_))
    ));
}

/// Issue 13: what a user (not root) may put in a registration.
#[test]
fn a_user_registers_only_their_own_process_tree() {
    let mut t = tracker();
    let cases = [
        (
            RegisterRequest {
                gpus: vec!["0".into()],
                ..req("a")
            },
            "gpus: only root",
        ),
        (
            RegisterRequest {
                scheduler: Some(Scheduler::Slurm),
                ..req("a")
            },
            "scheduler: only root",
        ),
        (
            RegisterRequest {
                pid: None,
                ..req("a")
            },
            "pid: a user's registration names",
        ),
        (
            RegisterRequest {
                pid: Some(0),
                ..req("a")
            },
            "pid 0",
        ),
    ];
    for (r, want) in cases {
        let e = t.register(r, 1002, "mallory", Now::at(1000.0)).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    assert_eq!(t.jobs().count(), 0, "a refusal changes nothing");
    // Its own process, as `gpucost run` sends it: claims only the user's processes.
    t.register(req("mine"), 1002, "mallory", Now::at(1000.0))
        .unwrap();
    assert_eq!(t.registrations()[0].uid, Some(1002));
    // pid 0 is refused for root too.
    let e = t
        .register(
            RegisterRequest {
                pid: Some(0),
                ..req("r")
            },
            0,
            "root",
            Now::at(1000.0),
        )
        .unwrap_err();
    assert!(matches!(e, RequestError::Invalid(_)), "{e}");
}

/// Issue 13: a user who registers a Slurm job's id before its prolog does gets nothing from it:
/// root's registration takes the name, labels, owner and scheduler.
#[test]
fn roots_registration_takes_over_a_squatted_id() {
    let mut t = tracker();
    t.register(
        RegisterRequest {
            name: Some("mine now".into()),
            labels: BTreeMap::from([("team".into(), "evil".into())]),
            ..req("55")
        },
        1002,
        "mallory",
        Now::at(1000.0),
    )
    .unwrap();
    let j = t
        .register(
            RegisterRequest {
                id: Some("55".into()),
                uid: Some(1001),
                user: Some("alice".into()),
                scheduler: Some(Scheduler::Slurm),
                labels: BTreeMap::from([("team".into(), "nlp".into())]),
                ..RegisterRequest::default()
            },
            0,
            "root",
            Now::at(1001.0),
        )
        .unwrap();
    assert_eq!(
        (j.name.as_str(), j.user.as_str(), j.uid, j.scheduler),
        ("55", "alice", Some(1001), Scheduler::Slurm)
    );
    assert_eq!(j.labels, BTreeMap::from([("team".into(), "nlp".into())]));
    assert_eq!(t.registrations()[0].uid, None, "root's registration");
    // The squatter can no longer touch it.
    let e = t
        .end("55", EndRequest::default(), 1002, Now::at(1002.0))
        .unwrap_err();
    assert!(matches!(e, RequestError::Forbidden(_)), "{e}");
}

/// Issue 13: users' running registrations are capped per user and per node; root is not.
#[test]
fn running_registrations_are_capped_per_user_and_per_node() {
    let mut t = tracker();
    t.set_limits(JobLimits {
        max_running_per_user: 2,
        max_running: 3,
    });
    let reg = |t: &mut Tracker, id: &str, uid: u32| t.register(req(id), uid, "u", Now::at(1000.0));
    reg(&mut t, "a1", 1001).unwrap();
    reg(&mut t, "a2", 1001).unwrap();
    let e = reg(&mut t, "a3", 1001).unwrap_err();
    assert!(
        matches!(&e, RequestError::TooMany(m) if m.contains("max_running_per_user")),
        "{e}"
    );
    reg(&mut t, "b1", 1002).unwrap();
    let e = reg(&mut t, "b2", 1002).unwrap_err();
    assert!(
        matches!(&e, RequestError::TooMany(m) if m.contains("jobs.max_running =")),
        "{e}"
    );
    // Root (a prolog) is not capped; an ended job frees its place.
    reg(&mut t, "slurm-1", 0).unwrap();
    t.end("a1", EndRequest::default(), 1001, Now::at(1001.0))
        .unwrap();
    reg(&mut t, "a3", 1001).unwrap();
}

/// A node of two GPUs with a dense BF16 peak of 1e15 FLOP/s each, after one tick: job `gpu`
/// holds GPU-0 whole, job `none` holds no GPU, GPU-1 is nobody's.
fn two_gpu_node() -> Tracker {
    let mut t = tracker();
    for id in ["gpu", "none"] {
        t.register(req(id), 1001, "alice", Now::at(1000.0)).unwrap();
    }
    let pricing = crate::config::example_pricing();
    let iv = Interval {
        t0: 1000.0,
        dt: 1.0,
        energy_j: 500.0,
        utilization: Some(0.9),
        model: "NVIDIA H100 80GB HBM3",
        flop: 0.0,
        fp32_bound_speedup: None,
        slice_share: 1.0,
    };
    let rates = GpuRates {
        flop_rate: None,
        flop_rate_unknown: false,
        bf16_peak: Some(1e15),
    };
    t.begin_tick();
    for (uuid, index, owners) in [
        ("GPU-0", 0, vec![("gpu".to_string(), 1.0)]),
        ("GPU-1", 1, vec![]),
    ] {
        let gpu = (uuid, index, "NVIDIA H100 80GB HBM3");
        t.account(&pricing, gpu, &owners, &iv, rates);
    }
    t
}

/// Issue 13, item 9: `tokens = 2^64-1, flops_per_token = 1e20` gave `mfu_ratio 4.6e23`. A
/// reported rate is bounded by the peak of the job's GPUs here (else the node's) times
/// [`MAX_REPORTED_PEAKS`], so that a job reporting its global progress on one of up to 1,024
/// such nodes is believed; beyond that, and for counts f64 cannot hold, the answer is 422.
#[test]
fn progress_beyond_what_the_hardware_can_do_is_unprocessable() {
    let tokens = |n: u64, f: f64| ProgressRequest {
        tokens: Some(n),
        flops_per_token: Some(f),
        ..ProgressRequest::default()
    };
    // Each job first reports 1000 tokens at 1e10 FLOPs each, then this, 10 s later; `Ok` with
    // the rate it records, or `Err` with a piece of the refusal.
    let cases: Vec<(&str, &str, ProgressRequest, Result<f64, &str>)> = vec![
        ("one GPU's worth", "gpu", tokens(801_000, 1e10), Ok(8e14)),
        (
            "a 1,000-node job's global progress, on one of its nodes",
            "gpu",
            tokens(1_000_001_000, 1e10),
            Ok(1e18),
        ),
        (
            "more than 1,024 times the job's GPU",
            "gpu",
            tokens(1_100_001_000, 1e10),
            Err("1024 times the dense BF16 peak of the job's GPUs"),
        ),
        (
            "the issue's report",
            "gpu",
            tokens(u64::MAX, 1e20),
            Err("tokens 18446744073709551615 is more than 2^53"),
        ),
        (
            "a job holding no GPU, up to 1,024 times the node's two",
            "none",
            tokens(2_000_001_000, 1e10),
            Ok(2e18),
        ),
        (
            "a job holding no GPU, beyond the node's",
            "none",
            tokens(2_100_001_000, 1e10),
            Err("1024 times the dense BF16 peak of this node's GPUs"),
        ),
        (
            "samples beyond f64 precision",
            "gpu",
            ProgressRequest {
                samples: Some((1 << 53) + 1),
                ..ProgressRequest::default()
            },
            Err("samples 9007199254740993 is more than 2^53"),
        ),
        (
            "samples at 2^53",
            "gpu",
            ProgressRequest {
                samples: Some(1 << 53),
                ..ProgressRequest::default()
            },
            Ok(0.0),
        ),
    ];
    for (what, job, report, want) in cases {
        let mut t = two_gpu_node();
        let first = ProgressRequest {
            steps: Some(1),
            ..tokens(1000, 1e10)
        };
        t.progress(job, first, 1001, Now::at(1010.0)).unwrap();
        let before = t.get(job).unwrap().clone();
        let got = t.progress(job, report, 1001, Now::at(1020.0));
        match (got, want) {
            (Ok(j), Ok(rate)) => {
                let p = j.progress.unwrap();
                let recorded = p.flop_rate.unwrap_or(0.0);
                assert!(
                    (recorded - rate).abs() <= rate * 1e-9,
                    "{what}: rate {recorded:e}, expected {rate:e}"
                );
            }
            (Err(e), Err(piece)) => {
                assert!(matches!(e, RequestError::Unprocessable(_)), "{what}: {e:?}");
                assert!(e.to_string().contains(piece), "{what}: {e}");
                assert_eq!(
                    t.get(job).unwrap(),
                    &before,
                    "{what}: a refusal changes nothing"
                );
            }
            (got, want) => panic!("{what}: got {got:?}, expected {want:?}"),
        }
    }
    // Per step: 10 steps of 1.2e18 FLOPs in 10 s.
    let mut t = two_gpu_node();
    let steps = |n: u64| ProgressRequest {
        steps: Some(n),
        flops_per_step: Some(1.2e18),
        ..ProgressRequest::default()
    };
    t.progress("gpu", steps(1), 1001, Now::at(1010.0)).unwrap();
    let e = t
        .progress("gpu", steps(11), 1001, Now::at(1020.0))
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Unprocessable(m) if m.contains("1.200e18 FLOP/s")),
        "{e:?}"
    );
}

/// Model FLOPs that are no longer a finite number are refused rather than carried on. (Within
/// [`MAX_COUNT`] and the per-token limit one report adds at most about 1e37, so only a total
/// restored from the ledger can get there.)
#[test]
fn progress_whose_model_flops_are_not_finite_is_unprocessable() {
    let mut rec = tracker()
        .register(req("big"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    rec.progress = Some(Progress {
        tokens: 1000,
        flops_per_token: Some(1e20),
        model_flop: f64::INFINITY,
        updated_at: 1000.0,
        ..Progress::default()
    });
    let mut t = Tracker::restore(vec![rec], Vec::new(), Now::at(1000.0), 600.0, 15.0, "node1");
    let e = t
        .progress(
            "big",
            ProgressRequest {
                tokens: Some(2000),
                ..ProgressRequest::default()
            },
            1001,
            Now::at(1010.0),
        )
        .unwrap_err();
    assert!(matches!(e, RequestError::Unprocessable(_)), "{e:?}");
    assert!(e.to_string().contains("model FLOPs"), "{e}");
}

/// A job with `gpu_s` GPU-seconds and `joules` on GPU-0, started at `start` and, unless running,
/// ended 100 s later.
fn rec(id: &str, start: f64, gpu_s: f64, joules: f64, outcome: Outcome) -> JobRecord {
    let usage = Usage {
        gpu_seconds: gpu_s,
        energy_j: joules,
        ..Usage::default()
    };
    JobRecord {
        id: id.into(),
        name: id.into(),
        user: "alice".into(),
        uid: Some(1001),
        scheduler: Scheduler::Slurm,
        labels: BTreeMap::new(),
        started_at: start,
        ended_at: (outcome != Outcome::Running).then_some(start + 100.0),
        outcome,
        exit_code: None,
        signal: None,
        reason: None,
        usage,
        per_gpu: BTreeMap::from([("GPU-0".to_string(), usage)]),
        registration: None,
        progress: None,
    }
}

/// A table that counted `jobs` itself (new to it, so to be persisted).
fn counted_in_memory(jobs: &[JobRecord], now: Now) -> Tracker {
    let mut t = Tracker::new(600.0, 15.0, "node1");
    for j in jobs {
        if j.outcome != Outcome::Running {
            *t.finished.entry(j.outcome).or_default() += 1;
        }
        t.jobs
            .insert(j.id.clone(), Tracked::new(j.clone(), now, true));
    }
    t
}

#[test]
fn merge_history_adds_the_ledger_to_what_was_counted_in_memory() {
    use Outcome::{Running, Succeeded};
    let now = Now::at(10_000.0);
    // (case, counted in memory, in the ledger, the job after: (GPU-s, J, start, outcome), or
    // None when it is only counted, and whether it is to be persisted)
    type Case = (
        &'static str,
        Option<JobRecord>,
        Option<JobRecord>,
        Option<(f64, f64, f64, Outcome)>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "in both (issue 13: 40 GPU-s / 24,451 J in the ledger, 15 / 9,151 counted since): summed, earliest start",
            Some(rec("a", 9_000.0, 15.0, 9_151.0, Running)),
            Some(rec("a", 5_000.0, 40.0, 24_451.0, Running)),
            Some((55.0, 33_602.0, 5_000.0, Running)),
            true,
        ),
        (
            "in both, ended since: the table's outcome (newer)",
            Some(rec("a", 9_000.0, 15.0, 9_151.0, Succeeded)),
            Some(rec("a", 5_000.0, 40.0, 24_451.0, Running)),
            Some((55.0, 33_602.0, 5_000.0, Succeeded)),
            true,
        ),
        (
            "in both, the ledger lost the start (NaN): the table's",
            Some(rec("a", 9_000.0, 15.0, 9_151.0, Running)),
            Some(rec("a", f64::NAN, 40.0, 24_451.0, Running)),
            Some((55.0, 33_602.0, 9_000.0, Running)),
            true,
        ),
        (
            "only in the ledger, running: restored",
            None,
            Some(rec("b", 5_000.0, 40.0, 24_451.0, Running)),
            Some((40.0, 24_451.0, 5_000.0, Running)),
            false,
        ),
        (
            "only in the ledger, ended within its grace period: restored",
            None,
            Some(rec("b", 9_700.0, 40.0, 24_451.0, Succeeded)),
            Some((40.0, 24_451.0, 9_700.0, Succeeded)),
            false,
        ),
        (
            "only in the ledger, ended long ago: only counted",
            None,
            Some(rec("b", 1_000.0, 40.0, 24_451.0, Succeeded)),
            None,
            false,
        ),
        (
            "only in memory: as it was",
            Some(rec("c", 9_000.0, 15.0, 9_151.0, Running)),
            None,
            Some((15.0, 9_151.0, 9_000.0, Running)),
            true,
        ),
    ];
    for (case, memory, ledger, want, dirty) in cases {
        let mut t = counted_in_memory(memory.as_slice(), now);
        let before: Vec<JobRecord> = t.jobs().cloned().collect();
        let id = memory.as_ref().or(ledger.as_ref()).unwrap().id.clone();
        t.merge_history(ledger.clone().into_iter().collect(), Vec::new(), now);
        let got = t.get(&id).map(|j| {
            (
                j.usage.gpu_seconds,
                j.usage.energy_j,
                j.started_at,
                j.outcome,
            )
        });
        assert_eq!(got, want, "{case}");
        assert_eq!(
            t.dirty().iter().any(|j| j.id == id),
            dirty && want.is_some(),
            "{case}: to be persisted"
        );
        if let Some(j) = t.get(&id) {
            assert_eq!(
                j.per_gpu["GPU-0"].gpu_seconds, j.usage.gpu_seconds,
                "{case}: per GPU too"
            );
        }
        // Nothing that was exported goes down.
        for b in &before {
            let a = t.get(&b.id).unwrap();
            for f in &Usage::FIELDS {
                assert!((f.get)(&a.usage) >= (f.get)(&b.usage), "{case}: {}", f.name);
            }
        }
        // A job only in the ledger comes back exactly as restore brings it.
        if memory.is_none() {
            let r = Tracker::restore(
                ledger.into_iter().collect(),
                Vec::new(),
                now,
                600.0,
                15.0,
                "node1",
            );
            assert_eq!(t.get(&id), r.get(&id), "{case}");
        }
    }
}

#[test]
fn merge_history_keeps_the_newer_facts_and_fills_in_the_older_ones() {
    let now = Now::at(10_000.0);
    let mut memory = rec("a", 9_000.0, 15.0, 9_151.0, Outcome::Running);
    memory.labels = BTreeMap::from([("team".into(), "vision".into())]);
    let mut ledger = rec("a", 5_000.0, 40.0, 24_451.0, Outcome::Running);
    ledger.labels = BTreeMap::from([("team".into(), "nlp".into()), ("sweep".into(), "s1".into())]);
    ledger.registration = Some(Registered {
        pid: Some(4242),
        gpus: vec!["0".into()],
        by_root: true,
    });
    ledger.per_gpu.insert("GPU-1".into(), Usage::default());
    let mut t = counted_in_memory(&[memory], now);
    t.merge_history(vec![ledger.clone()], Vec::new(), now);
    let j = t.get("a").unwrap();
    assert_eq!(j.labels["team"], "vision", "the table's label wins");
    assert_eq!(j.labels["sweep"], "s1", "the ledger's fills in");
    assert_eq!(j.registration, ledger.registration);
    assert_eq!(
        j.per_gpu.keys().collect::<Vec<_>>(),
        ["GPU-0", "GPU-1"],
        "per-GPU rows of both"
    );
}

#[test]
fn merge_history_adds_up_finished_counts_and_gpu_totals() {
    use Outcome::{Failed, Running, Succeeded, Unknown};
    let now = Now::at(10_000.0);
    let mut t = counted_in_memory(
        &[
            rec("m1", 9_000.0, 1.0, 1.0, Failed),
            rec("m2", 9_000.0, 1.0, 1.0, Running),
        ],
        now,
    );
    let gpu = |uuid: &str, k: f64, xid: u64| {
        let mut events = GpuEvents::default();
        events.set_throttled("sw_power_cap", k);
        events.xids.insert(79, xid);
        GpuRecord {
            uuid: uuid.into(),
            index: 0,
            model: "NVIDIA H100 80GB HBM3".into(),
            usage: Usage {
                energy_j: 1000.0 * k,
                ..Usage::default()
            },
            unallocated_seconds: 10.0 * k,
            events,
        }
    };
    t.gpus.insert("GPU-0".into(), gpu("GPU-0", 1.0, 1));
    t.merge_history(
        vec![
            rec("l1", 1_000.0, 1.0, 1.0, Succeeded),
            rec("l2", 9_800.0, 1.0, 1.0, Succeeded),
            rec("l3", 1_000.0, 1.0, 1.0, Failed),
            rec("l4", 1_000.0, 1.0, 1.0, Unknown),
            rec("m2", 1_000.0, 1.0, 1.0, Running),
        ],
        vec![gpu("GPU-0", 4.0, 2), gpu("GPU-1", 2.0, 5)],
        now,
    );
    assert_eq!(
        t.finished_counts(),
        &BTreeMap::from([(Succeeded, 2), (Failed, 2), (Unknown, 1)])
    );
    let g0 = t.gpus().find(|g| g.uuid == "GPU-0").unwrap();
    assert_eq!(g0.usage.energy_j, 5000.0);
    assert_eq!(g0.unallocated_seconds, 50.0);
    assert_eq!(g0.events.throttled_by_reason()["sw_power_cap"], 5.0);
    assert_eq!(g0.events.xids[&79], 3);
    let g1 = t.gpus().find(|g| g.uuid == "GPU-1").unwrap();
    assert_eq!(g1, &gpu("GPU-1", 2.0, 5), "a GPU only in the ledger");
}

/// Issue 14, item 7: a job on two GPUs, one of whose pipes are unknown this tick, has no
/// counter-based FLOP rate (and so no MFU), rather than one GPU's rate over two GPUs' peak.
#[test]
fn issue_14_a_gpu_with_unknown_pipes_leaves_its_owners_rate_unknown() {
    let mut t = tracker();
    t.register(req("job"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    let pricing = crate::config::example_pricing();
    let iv = Interval {
        t0: 1000.0,
        dt: 1.0,
        energy_j: 500.0,
        utilization: Some(0.9),
        model: "NVIDIA H100 80GB HBM3",
        flop: 4e14,
        fp32_bound_speedup: None,
        slice_share: 1.0,
    };
    let owners = [("job".to_string(), 1.0)];
    let tick = |t: &mut Tracker, second: GpuRates| {
        t.begin_tick();
        let known = GpuRates {
            flop_rate: Some(4e14),
            flop_rate_unknown: false,
            bf16_peak: Some(1e15),
        };
        t.account(
            &pricing,
            ("GPU-0", 0, "NVIDIA H100 80GB HBM3"),
            &owners,
            &iv,
            known,
        );
        t.account(
            &pricing,
            ("GPU-1", 1, "NVIDIA H100 80GB HBM3"),
            &owners,
            &iv,
            second,
        );
        t.rates()["job"]
    };
    let both = tick(
        &mut t,
        GpuRates {
            flop_rate: Some(2e14),
            flop_rate_unknown: false,
            bf16_peak: Some(1e15),
        },
    );
    assert_eq!((both.achieved_flops, both.peak_flops), (Some(6e14), 2e15));
    let one_unknown = tick(
        &mut t,
        GpuRates {
            flop_rate: None,
            flop_rate_unknown: true,
            bf16_peak: Some(1e15),
        },
    );
    assert_eq!(one_unknown.achieved_flops, None);
    assert_eq!(one_unknown.peak_flops, 2e15);
}

/// An hour of one H100 to job `id`, busy or idle; what it cost.
fn an_hour(t: &mut Tracker, id: &str, utilization: f64) {
    let iv = Interval {
        t0: 1000.0,
        dt: 3600.0,
        energy_j: 0.0,
        utilization: Some(utilization),
        model: "NVIDIA H100 80GB HBM3",
        flop: 0.0,
        fp32_bound_speedup: None,
        slice_share: 1.0,
    };
    t.account(
        &crate::config::example_pricing(),
        ("GPU-0", 0, "NVIDIA H100 80GB HBM3"),
        &[(id.to_string(), 1.0)],
        &iv,
        GpuRates::default(),
    );
    // GPU time and overhead at the example prices (no energy in this interval).
    let h = t.get(id).unwrap().usage;
    assert!(h.total_cost() > 0.0);
}

/// What an hour of [`an_hour`] costs.
fn hour_cost() -> f64 {
    let mut t = tracker();
    t.register(req("h"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    an_hour(&mut t, "h", 0.0);
    t.get("h").unwrap().usage.total_cost()
}

fn ending(outcome: Option<Outcome>, reason: Option<EndReason>) -> EndRequest {
    EndRequest {
        outcome,
        reason,
        ..EndRequest::default()
    }
}

#[test]
fn issue_16_outcomes_and_reasons_of_an_ending() {
    use EndReason::*;
    use Outcome::*;
    // (what the ending says, the outcome and reason recorded)
    let cases: [(EndRequest, Outcome, Option<EndReason>); 8] = [
        (ending(Some(Cancelled), None), Cancelled, None),
        (ending(Some(Preempted), None), Preempted, None),
        (
            ending(Some(Failed), Some(TimeLimit)),
            Failed,
            Some(TimeLimit),
        ),
        // A reason alone means failed.
        (ending(None, Some(Oom)), Failed, Some(Oom)),
        (
            EndRequest {
                exit_code: Some(3),
                ..EndRequest::default()
            },
            Failed,
            Some(ExitCode),
        ),
        (
            EndRequest {
                signal: Some(9),
                ..EndRequest::default()
            },
            Failed,
            Some(Signal),
        ),
        // Failed from an exit code with an outcome given: the reason from the status.
        (
            EndRequest {
                outcome: Some(Failed),
                exit_code: Some(1),
                ..EndRequest::default()
            },
            Failed,
            Some(ExitCode),
        ),
        (ending(Some(Unknown), None), Unknown, None),
    ];
    let mut t = tracker();
    for (i, (req_, outcome, reason)) in cases.into_iter().enumerate() {
        let id = format!("j{i}");
        t.register(req(&id), 1001, "alice", Now::at(1000.0))
            .unwrap();
        let j = t.end(&id, req_.clone(), 0, Now::at(1010.0)).unwrap();
        assert_eq!((j.outcome, j.reason), (outcome, reason), "{req_:?}");
    }
    assert_eq!(t.finished_counts()[&Cancelled], 1);
    assert_eq!(t.finished_counts()[&Preempted], 1);
    assert_eq!(t.finished_counts()[&Failed], 5);
    // A reason on an outcome that is not a failure is refused, naming both.
    t.register(req("x"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    let e = t
        .end("x", ending(Some(Cancelled), Some(Oom)), 0, Now::at(1010.0))
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Invalid(m) if m.contains("oom") && m.contains("cancelled")),
        "{e:?}"
    );
    assert_eq!(
        t.get("x").unwrap().outcome,
        Running,
        "a refusal changes nothing"
    );
    // As JSON, the names are the metric's.
    let r: EndRequest =
        serde_json::from_str(r#"{"outcome": "failed", "reason": "time_limit"}"#).unwrap();
    assert_eq!(r.reason, Some(TimeLimit));
}

#[test]
fn issue_16_waste_of_each_outcome_counts_the_cost_since_the_last_checkpoint_once() {
    // Each job: an idle hour, a checkpoint (or none), a busy hour, then its ending. Costs in
    // hours of one GPU.
    let h = hour_cost();
    let mut t = tracker();
    let cases = [
        // (outcome, checkpoint after the first hour, wasted: idle + lost)
        (Outcome::Succeeded, false, 1.0),
        (Outcome::Cancelled, false, 1.0),
        (Outcome::Unknown, false, 1.0),
        // The whole run: its idle hour (as idle) and its busy hour (as failed).
        (Outcome::Failed, false, 2.0),
        (Outcome::Preempted, false, 2.0),
        // Only the busy hour after the checkpoint is lost; the idle hour stays idle.
        (Outcome::Failed, true, 2.0),
        (Outcome::Preempted, true, 2.0),
    ];
    for (i, (outcome, checkpoint, wasted)) in cases.into_iter().enumerate() {
        let id = format!("j{i}");
        t.register(req(&id), 1001, "alice", Now::at(1000.0))
            .unwrap();
        an_hour(&mut t, &id, 0.0);
        let p = ProgressRequest {
            steps: Some(10),
            checkpoint,
            ..ProgressRequest::default()
        };
        t.progress(&id, p, 1001, Now::at(4600.0)).unwrap();
        an_hour(&mut t, &id, 0.9);
        let j = t
            .end(&id, ending(Some(outcome), None), 0, Now::at(8200.0))
            .unwrap();
        let w = j.waste();
        assert!(
            (j.wasted_cost() - wasted * h).abs() < 1e-9,
            "{outcome:?} {checkpoint}: {w:?}"
        );
        assert!((w.idle - h).abs() < 1e-9);
        assert!((w.idle + w.fp32 + w.lost - j.wasted_cost()).abs() < 1e-12);
        if checkpoint {
            let c = j.progress.as_ref().unwrap().checkpoint.unwrap();
            assert_eq!((c.at, c.cost, c.idle_cost), (4600.0, h, h));
        }
    }
    // A checkpoint after idle time: the idle hour before it is not lost work, and the busy
    // hour after it is; one more idle hour after it is idle, not counted twice.
    t.register(req("k"), 1001, "alice", Now::at(1000.0))
        .unwrap();
    an_hour(&mut t, "k", 0.9);
    let p = ProgressRequest {
        checkpoint: true,
        ..ProgressRequest::default()
    };
    t.progress("k", p, 1001, Now::at(4600.0)).unwrap();
    an_hour(&mut t, "k", 0.9);
    an_hour(&mut t, "k", 0.0);
    // A later report without a checkpoint keeps the last one.
    t.progress("k", ProgressRequest::default(), 1001, Now::at(11800.0))
        .unwrap();
    let j = t
        .end(
            "k",
            ending(Some(Outcome::Failed), None),
            0,
            Now::at(11800.0),
        )
        .unwrap();
    let w = j.waste();
    assert!((w.idle - h).abs() < 1e-9, "{w:?}");
    assert!((w.lost - h).abs() < 1e-9, "{w:?}");
    assert!(
        (j.wasted_cost() - 2.0 * h).abs() < 1e-9,
        "of three hours, the first is kept"
    );
}

#[test]
fn issue_16_a_scheduler_reusing_an_ended_jobs_id_starts_a_new_job() {
    let mut t = tracker();
    let prolog = || RegisterRequest {
        id: Some("4812".into()),
        gpus: vec!["0".into()],
        uid: Some(1001),
        scheduler: Some(Scheduler::Slurm),
        ..RegisterRequest::default()
    };
    t.register(prolog(), 0, "root", Now::at(1000.0)).unwrap();
    t.end(
        "4812",
        ending(Some(Outcome::Cancelled), None),
        0,
        Now::at(1100.0),
    )
    .unwrap();
    // A prolog from before that end (spooled, replayed late) is the same run: refused.
    let e = t
        .register(prolog(), 0, "root", Now::at(1050.0))
        .unwrap_err();
    assert!(matches!(e, RequestError::Conflict(_)), "{e:?}");
    // A user may not take the id either.
    let mine = RegisterRequest {
        id: Some("4812".into()),
        pid: Some(4242),
        ..RegisterRequest::default()
    };
    assert!(t.register(mine, 1001, "alice", Now::at(1200.0)).is_err());
    // The controller was reset and gives 4812 to a new job: accepted.
    let j = t.register(prolog(), 0, "root", Now::at(1300.0)).unwrap();
    assert_eq!((j.outcome, j.started_at), (Outcome::Running, 1300.0));
    let old = t.get("4812@1000").unwrap();
    assert_eq!(
        (old.outcome, old.ended_at),
        (Outcome::Cancelled, Some(1100.0))
    );
    let dirty: Vec<&str> = t.dirty().iter().map(|j| j.id.as_str()).collect();
    assert!(
        dirty.contains(&"4812") && dirty.contains(&"4812@1000"),
        "{dirty:?}"
    );
    assert_eq!(t.finished_counts()[&Outcome::Cancelled], 1);
}
