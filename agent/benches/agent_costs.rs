//! The agent's own costs, measured (not asserted): `/metrics` rendering at 100, 1,000 and 10,000
//! jobs, one ledger persist of 10,000 jobs on 2 GPUs each, and reading them back. Run by
//! `scripts/bench.sh`, or `cargo bench -p gpucost --bench agent_costs`. Prints one line per figure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpucost::export::metrics::{render, Renderer};
use gpucost::ledger::Ledger;
use gpucost::snapshot::{GpuSnapshot, Published, Snapshot};
use gpucost_core::jobs::{GpuRecord, JobRecord, Outcome, Scheduler, Usage};
use gpucost_core::reading::{GpuStatic, Source};

fn usage(k: f64) -> Usage {
    Usage {
        gpu_seconds: 3600.0 * k,
        energy_j: 1.8e6 * k,
        carbon_g: 250.0 * k,
        cost_gpu_time: 4.0 * k,
        cost_energy: 0.1 * k,
        cost_overhead: 0.1 * k,
        idle_gpu_seconds: 60.0 * k,
        idle_cost: 0.07 * k,
        ..Usage::default()
    }
}

fn job(i: usize) -> JobRecord {
    let per_gpu: BTreeMap<String, Usage> = (0..2)
        .map(|g| (format!("GPU-{:04}", (i + g) % 8), usage(0.5)))
        .collect();
    JobRecord {
        id: format!("job-{i}"),
        name: format!("train-{i}"),
        user: format!("user{}", i % 50),
        uid: Some(1000 + (i % 50) as u32),
        scheduler: Scheduler::Slurm,
        labels: BTreeMap::from([("team".to_string(), format!("team{}", i % 7))]),
        started_at: 1.79e9 + i as f64,
        ended_at: (i % 3 == 0).then_some(1.79e9 + i as f64 + 600.0),
        outcome: if i % 3 == 0 {
            Outcome::Succeeded
        } else {
            Outcome::Running
        },
        exit_code: None,
        signal: None,
        reason: None,
        usage: usage(1.0),
        per_gpu,
        registration: None,
        progress: None,
    }
}

fn snapshot(jobs: usize) -> Snapshot {
    let mut s = Snapshot::empty(Source::Nvml, None);
    s.backend_up = true;
    s.gpus = (0..8)
        .map(|i| GpuSnapshot {
            info: GpuStatic {
                index: i,
                uuid: format!("GPU-{i:04}"),
                model: "NVIDIA H100 80GB HBM3".into(),
                mig: None,
                compute_capability: None,
                sm_count: None,
            },
            up: true,
            reading: None,
            processes: Vec::new(),
            totals: Default::default(),
            energy_method: None,
            health: Default::default(),
        })
        .collect();
    s.published = Published {
        jobs: Arc::new((0..jobs).map(|i| Arc::new(job(i))).collect()),
        gpus: Arc::new(BTreeMap::new()),
        finished: BTreeMap::new(),
    };
    s.export_labels = Arc::new(vec!["team".to_string()]);
    s
}

fn percentile(d: &mut [Duration], q: f64) -> Duration {
    d.sort();
    d[((d.len() - 1) as f64 * q) as usize]
}

fn main() {
    for jobs in [100, 1_000, 10_000] {
        let mut snap = snapshot(jobs);
        let bytes = render(&snap).len();
        let runs = if jobs >= 10_000 { 30 } else { 200 };
        // Cold: every job encoded (the agent's first scrape).
        let mut cold: Vec<Duration> = (0..runs.min(30))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(render(&snap));
                t.elapsed()
            })
            .collect();
        // As the agent renders: one sample later, the running jobs (1% here; the rest are in
        // their grace period) have new totals and are encoded again, the others are reused.
        let mut r = Renderer::default();
        r.render(&snap);
        let running = (jobs / 100).max(1);
        let mut warm: Vec<Duration> = (0..runs)
            .map(|k| {
                // As the tracker does: a changed job is a new record, the others are shared.
                let mut all: Vec<Arc<JobRecord>> = snap.published.jobs.as_ref().clone();
                for j in all.iter_mut().take(running) {
                    Arc::make_mut(j).usage.gpu_seconds += 1.0 + k as f64;
                }
                snap.published.jobs = Arc::new(all);
                let t = Instant::now();
                std::hint::black_box(r.render(&snap));
                t.elapsed()
            })
            .collect();
        println!(
            "render {jobs} jobs ({bytes} bytes): every job encoded p50 {:.2} ms, p99 {:.2} ms; {running} changed since the last sample p50 {:.2} ms, p99 {:.2} ms",
            percentile(&mut cold, 0.5).as_secs_f64() * 1e3,
            percentile(&mut cold, 0.99).as_secs_f64() * 1e3,
            percentile(&mut warm, 0.5).as_secs_f64() * 1e3,
            percentile(&mut warm, 0.99).as_secs_f64() * 1e3
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::open(dir.path()).expect("ledger");
    let jobs: Vec<JobRecord> = (0..10_000).map(job).collect();
    let refs: Vec<&JobRecord> = jobs.iter().collect();
    let gpus: Vec<GpuRecord> = Vec::new();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        ledger.persist(&refs, &gpus).expect("persist");
        times.push(t.elapsed());
    }
    println!(
        "ledger persist 10000 jobs x 2 GPUs: first {:.0} ms, median of 5 {:.0} ms",
        times[0].as_secs_f64() * 1e3,
        percentile(&mut times, 0.5).as_secs_f64() * 1e3
    );
    // What a restart reads back.
    let t = Instant::now();
    let loaded = ledger.load_jobs().expect("load");
    println!(
        "ledger load of {} jobs (agent start): {:.0} ms",
        loaded.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
}
