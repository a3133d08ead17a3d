//! The kernels' own view of one GPU, for device checks: runs `suite::run_with_notes`, prints a
//! table with % of the datasheet peak, the notes (where each module came from, packed-half
//! SIMT rates), and last one JSON line (`{"gpu":..,"results":[..],"memory":[..]}`).
//!
//! Usage: `bench [--device N] [--quick]` (build: `cargo build --release -p gpucost-kernels
//! --example bench`). Exit code 1 when the benchmark fails or any verification failed.

use gpucost_hw::peaks;
use gpucost_kernels::suite::{self, BenchOptions, Pace};

fn main() {
    let mut opts = BenchOptions {
        device: 0,
        pace: Pace::Normal,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.pace = Pace::Quick,
            "--device" => {
                opts.device = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    eprintln!("--device needs a number");
                    std::process::exit(2)
                })
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: bench [--device N] [--quick]");
                std::process::exit(2)
            }
        }
    }
    let (report, notes) = match suite::run_with_notes(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1)
        }
    };
    let spec = peaks::lookup(&report.name);
    println!(
        "{} (sm_{}{}, {} SMs), {:.1} s",
        report.name,
        report.compute_capability.0,
        report.compute_capability.1,
        report.sm_count,
        report.elapsed_s
    );
    let mut json_results = Vec::new();
    for r in &report.results {
        let pct = spec
            .and_then(|s| s.peak(r.precision))
            .map_or(String::new(), |p| {
                format!("{:5.1}% of datasheet", 100.0 * r.flops_per_s / p)
            });
        // The clock the kernel's own blocks measured (none for library rows), and the ceiling
        // it sets: the device's SMs x FLOP/clock/SM at that clock.
        let mhz = r.sm_clock.map(|c| c.hz / 1e6);
        let ceiling = peaks::Arch::from_compute_capability(report.compute_capability)
            .zip(r.sm_clock)
            .and_then(|(arch, c)| {
                peaks::sm_peak(&report.name, arch, r.precision, report.sm_count, c.hz)
            });
        let shape = r.shape.map(|s| s.label());
        println!(
            "{:<12} {:<8} {:9.2} TFLOP/s  {pct}{}{}",
            r.precision.as_str(),
            r.method.as_str(),
            r.flops_per_s / 1e12,
            mhz.map_or(String::new(), |m| format!("  at {m:.0} MHz")),
            shape.as_deref().map_or(String::new(), |s| format!("  {s}"))
        );
        let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
        json_results.push(format!(
            r#"{{"precision":"{}","method":"{}","tflops":{:.3},"median_s":{:.6e},"sm_clock_mhz":{},"ceiling_tflops":{},"shape":{}}}"#,
            r.precision.as_str(),
            r.method.as_str(),
            r.flops_per_s / 1e12,
            r.median_s,
            num(mhz),
            num(ceiling.map(|c| c / 1e12)),
            shape.map_or("null".to_string(), |s| format!("\"{s}\""))
        ));
    }
    let mut json_memory = Vec::new();
    for m in &report.memory {
        println!(
            "{:<12} memory   {:9.3} TB/s",
            m.op.as_str(),
            m.bytes_per_s / 1e12
        );
        json_memory.push(format!(
            r#"{{"op":"{}","tbytes_per_s":{:.4}}}"#,
            m.op.as_str(),
            m.bytes_per_s / 1e12
        ));
    }
    for (what, why) in &report.skipped {
        println!("skipped {what}: {why}");
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!(
        r#"{{"gpu":"{}","elapsed_s":{:.2},"results":[{}],"memory":[{}]}}"#,
        report.name.replace('"', "'"),
        report.elapsed_s,
        json_results.join(","),
        json_memory.join(",")
    );
    if report
        .skipped
        .iter()
        .any(|(_, why)| why.contains("verification failed"))
    {
        std::process::exit(1);
    }
}
