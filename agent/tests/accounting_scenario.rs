//! The cost model end to end, in process and deterministic: attribution over a fixture /proc,
//! accounting of one hour in 60 one-minute intervals, the ledger, and `gpucost report`'s JSON,
//! compared with the same totals computed by hand from PRODUCT.md's formulas.
//!
//! The node: four H100s at 4.00/GPU-hour, PUE 1.25, 0.20/kWh flat, 400 g CO2e/kWh, 0.10/GPU-hour
//! overhead, idle below 5% utilization.
//! - GPU 0: job A (GPUCOST_JOB_ID) and Slurm job 555 (its cgroup) share it; their processes keep the SMs busy 60% and 20% of the time -> weights 0.75 / 0.25.
//!   500 W for an hour (1.8e6 J), 90% busy.
//! - GPUs 1 and 2: job C, 600 W each (2.16e6 J each), 95% busy. C then fails (exit 1).
//! - GPU 3: allocated to job D (registered with `gpus = ["3"]`), no process, 100 W, 0% busy.

use std::collections::BTreeMap;

use gpucost::cli::report::{render, Format, ReportOptions};
use gpucost::identity::procfs::{write_fixture, ProcFs};
use gpucost::ledger::{JobFilter, Ledger};
use gpucost_core::account::cost::Interval;
use gpucost_core::account::pricing::from_toml_value;
use gpucost_core::attribute::process::ProcInfo;
use gpucost_core::attribute::{attribute, GpuInput};
use gpucost_core::clock::Now;
use gpucost_core::jobs::Outcome;
use gpucost_core::reading::ProcessUse;
use gpucost_core::tracker::{EndRequest, GpuRates, RegisterRequest, Tracker};

const PRICING: &str = r#"
currency = "EUR"
market = "on_demand"
pue = 1.25
carbon_intensity_g_per_kwh = 400
overhead_per_gpu_hour = 0.10
idle_threshold = 0.05
[energy]
price_per_kwh = 0.20
[[gpu]]
match = "H100"
on_demand_per_hour = 4.00
"#;

const T0: f64 = 1_795_000_000.0;
const GIB: u64 = 1 << 30;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn report_totals_equal_the_hand_computation() {
    let pricing = from_toml_value(&toml::from_str::<toml::Value>(PRICING).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    let p = |pid, ppid, uid| ProcInfo {
        pid,
        ppid,
        uid,
        comm: "python".into(),
        ..ProcInfo::default()
    };
    write_fixture(&proc_root, &p(1, 0, 0), "0::/init.scope\n", &[]);
    write_fixture(
        &proc_root,
        &p(10, 1, 1001),
        "0::/user.slice\n",
        &["GPUCOST_JOB_ID=A"],
    );
    write_fixture(
        &proc_root,
        &p(20, 1, 1002),
        "0::/system.slice/slurmstepd.scope/job_555/step_0\n",
        &[],
    );
    write_fixture(&proc_root, &p(30, 1, 1003), "0::/user.slice\n", &[]);
    write_fixture(&proc_root, &p(31, 30, 1003), "0::/user.slice\n", &[]);
    let procs = ProcFs::new(&proc_root);

    let mut t = Tracker::restore(Vec::new(), Vec::new(), Now::at(T0), 600.0, 15.0, "node");
    // C is `gpucost run` (pid 30, its worker 31 on GPU 2); D was registered by a prolog.
    let reg = |id: &str, pid, gpus: &[&str]| RegisterRequest {
        id: Some(id.into()),
        pid,
        gpus: gpus.iter().map(|s| s.to_string()).collect(),
        ..RegisterRequest::default()
    };
    t.register(reg("C", Some(30), &[]), 1003, "carol", Now::at(T0))
        .unwrap();
    let prolog = RegisterRequest {
        uid: Some(1004),
        user: Some("dave".into()),
        ..reg("D", None, &["3"])
    };
    t.register(prolog, 0, "root", Now::at(T0)).unwrap();

    // Shares by SM utilization: A's process 60%, 555's 20% -> 0.75 / 0.25 (memory would say
    // the opposite: 1 GiB vs 3 GiB).
    let use_ = |pid, mem, sm| ProcessUse {
        pid,
        used_memory_bytes: Some(mem),
        sm_util_pct: Some(sm),
    };
    let g0 = [use_(10, GIB, 60), use_(20, 3 * GIB, 20)];
    let g1 = [use_(30, GIB, 95)];
    let g2 = [use_(31, GIB, 95)];
    let none: [ProcessUse; 0] = [];
    let uuids = ["GPU-0", "GPU-1", "GPU-2", "GPU-3"];
    let inputs = [
        GpuInput {
            index: 0,
            uuid: uuids[0],
            processes: &g0,
        },
        GpuInput {
            index: 1,
            uuid: uuids[1],
            processes: &g1,
        },
        GpuInput {
            index: 2,
            uuid: uuids[2],
            processes: &g2,
        },
        GpuInput {
            index: 3,
            uuid: uuids[3],
            processes: &none,
        },
    ];
    let att = attribute(
        &inputs,
        &procs,
        &t.registrations(),
        &t.owners(),
        &[],
        &BTreeMap::new(),
    );
    let owners = |g: usize| {
        att.owners[g]
            .iter()
            .map(|(id, w)| (id.as_str(), *w))
            .collect::<Vec<_>>()
    };
    assert_eq!(owners(0), vec![("555", 0.25), ("A", 0.75)]);
    assert_eq!(owners(1), vec![("C", 1.0)]);
    assert_eq!(owners(2), vec![("C", 1.0)]);
    assert_eq!(owners(3), vec![("D", 1.0)]);
    t.observe(&att, |_| true, |u| u.to_string(), Now::at(T0));

    // One hour, 60 intervals of 60 s: (power W, utilization) per GPU.
    let load = [(500.0, 0.90), (600.0, 0.95), (600.0, 0.95), (100.0, 0.0)];
    let model = "NVIDIA H100 80GB HBM3";
    for k in 0..60 {
        for (g, (w, util)) in load.iter().enumerate() {
            let iv = Interval {
                t0: T0 + 60.0 * k as f64,
                dt: 60.0,
                energy_j: w * 60.0,
                utilization: Some(*util),
                model,
                flop: 0.0,
                fp32_bound_speedup: None,
                slice_share: 1.0,
            };
            let gpu = (uuids[g], g as u32, model);
            t.account(&pricing, gpu, &att.owners[g], &iv, GpuRates::default());
        }
    }
    t.end(
        "C",
        EndRequest {
            exit_code: Some(1),
            ..EndRequest::default()
        },
        1003,
        Now::at(T0 + 3600.0),
    )
    .unwrap();

    let state = dir.path().join("state");
    let mut ledger = Ledger::open(&state).unwrap();
    let gpus: Vec<_> = t.gpus().cloned().collect();
    ledger.persist(&t.dirty(), &gpus).unwrap();
    drop(ledger);
    let jobs = Ledger::open_read_only(&state)
        .unwrap()
        .query_jobs(&JobFilter::default())
        .unwrap();
    assert_eq!(jobs.len(), 4);
    let opts = ReportOptions {
        format: Format::Json,
        group_by: None,
        currency: "EUR".into(),
    };
    let doc: serde_json::Value = serde_json::from_str(&render(&jobs, &opts).unwrap()).unwrap();

    // By hand, per job: gpu_time = w x 4.00 x 1 h; energy = w x kWh x 1.25 x 0.20;
    // overhead = w x 0.10 x 1 h; carbon = w x kWh x 1.25 x 400 g.
    //            gpu_h   kWh   gpu_time  energy    overhead  carbon_g  idle_s  wasted
    let want = [
        ("A", 0.75, 0.375, 3.00, 0.09375, 0.075, 187.5, 0.0, 0.0),
        ("555", 0.25, 0.125, 1.00, 0.03125, 0.025, 62.5, 0.0, 0.0),
        // C: two GPUs of 0.6 kWh; it failed, so its whole cost (8.00 + 0.30 + 0.20) is wasted.
        ("C", 2.00, 1.200, 8.00, 0.30, 0.20, 600.0, 0.0, 8.50),
        // D: held GPU 3 idle for the hour: all of its cost is idle waste.
        ("D", 1.00, 0.100, 4.00, 0.025, 0.10, 50.0, 3600.0, 4.125),
    ];
    for (id, gpu_h, kwh, gpu_time, energy, overhead, carbon, idle_s, wasted) in want {
        let j = doc["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap();
        let f = |k: &str| j[k].as_f64().unwrap();
        for (k, v) in [
            ("gpu_hours", gpu_h),
            ("kwh", kwh),
            ("cost_gpu_time", gpu_time),
            ("cost_energy", energy),
            ("cost_overhead", overhead),
            ("carbon_g", carbon),
            ("idle_gpu_seconds", idle_s),
            ("cost_total", gpu_time + energy + overhead),
            ("wasted_cost", wasted),
        ] {
            assert!(close(f(k), v), "job {id} {k}: report {} vs hand {v}", f(k));
        }
    }
    assert_eq!(
        doc["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == "C")
            .unwrap()["outcome"],
        "failed"
    );
    // Totals (A, 555, C, D): 3.16875 + 1.05625 + 8.50 + 4.125 = 16.85; 4 GPU-hours; 1.8 kWh; 900 g.
    let total = &doc["total"];
    for (k, v) in [
        ("cost_total", 16.85),
        ("gpu_hours", 4.0),
        ("kwh", 1.8),
        ("carbon_g", 900.0),
        ("wasted_cost", 12.625),
    ] {
        assert!(
            close(total[k].as_f64().unwrap(), v),
            "total {k}: {} vs {v}",
            total[k]
        );
    }
    // The GPUs saw all of it, and nothing was unallocated.
    let gpu_cost: f64 = gpus.iter().map(|g| g.usage.total_cost()).sum();
    assert!(close(gpu_cost, 16.85), "{gpu_cost}");
    assert!(gpus.iter().all(|g| g.unallocated_seconds == 0.0));
    assert_eq!(t.finished_counts()[&Outcome::Failed], 1);
}
