//! Load: 1,000 `gpucost run` registrations from 50 at a time, while /metrics is scraped 100 times
//! a second until they are done (30 s at most). Every command must run tracked (no warning), every scrape must answer 200;
//! the latencies are printed (run with --nocapture to see them; `scripts/bench.sh` has figures).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpucost_integration_tests::{agent_bin, http_get, Agent};

#[test]
fn a_thousand_runs_and_a_hundred_scrapes_a_second() {
    let agent = Agent::start(
        &["--simulate", "demo"],
        &[
            ("GPUCOST_SAMPLING_INTERVAL", "1s"),
            ("GPUCOST_SOCKET_MODE", "0660"),
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let scraper = {
        let (stop, latencies, addr) = (stop.clone(), latencies.clone(), agent.addr.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut n = 0u32;
            // Until the runs are done and at least 100 scrapes were made (30 s at most).
            while start.elapsed() < Duration::from_secs(30)
                && !(stop.load(Ordering::Relaxed) && n >= 100)
            {
                let t = Instant::now();
                let (status, _) = http_get(&addr, "/metrics");
                assert_eq!(status, 200, "scrape {n}");
                latencies.lock().unwrap().push(t.elapsed());
                n += 1;
                // 100 a second.
                let due = start + Duration::from_millis(10 * u64::from(n));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let done = Arc::new(AtomicUsize::new(0));
    let warned = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..50)
        .map(|w| {
            let (done, warned, socket) = (done.clone(), warned.clone(), agent.socket.clone());
            std::thread::spawn(move || {
                for k in 0..20 {
                    let out = Command::new(agent_bin())
                        .args(["run", "--name", &format!("load-{w}-{k}"), "--", "true"])
                        .env("GPUCOST_SOCKET", &socket)
                        .env_remove("GPUCOST_JOB_ID")
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert!(out.status.success());
                    if !out.stderr.is_empty() {
                        warned.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    for w in workers {
        w.join().unwrap();
    }
    let runs_took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    scraper.join().unwrap();
    assert_eq!(done.load(Ordering::Relaxed), 1000);
    assert_eq!(
        warned.load(Ordering::Relaxed),
        0,
        "every run was registered and ended"
    );
    let m = agent.wait_for_metrics("all endings counted", Duration::from_secs(20), |m| {
        m.get("gpucost_jobs_finished_total", &[("outcome", "succeeded")]) == Some(1000.0)
    });
    assert_eq!(
        m.find("gpucost_job_info", &[])
            .iter()
            .filter(|s| s.labels["name"].starts_with("load-"))
            .count(),
        1000
    );
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let p = |q: f64| l[((l.len() - 1) as f64 * q) as usize];
    eprintln!(
        "1000 runs in {runs_took:?}; {} scrapes: p50 {:?}, p99 {:?}, max {:?}",
        l.len(),
        p(0.5),
        p(0.99),
        l[l.len() - 1]
    );
    // Up to 100 a second while the runs lasted (each waits for the one before), and at least 100
    // in all; every one of them answered 200.
    assert!(
        l.len() >= 100,
        "the scraper kept going: {} scrapes in {runs_took:?}",
        l.len()
    );
}
