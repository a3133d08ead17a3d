//! `gpucost bench`: what each GPU delivers per precision, now, with our own kernels and the
//! vendor libraries, beside the datasheet and the clock it actually ran at.
//!
//! The kernels run through `gpucost-kernels` (CUDA driver API, NVRTC or shipped PTX); while they
//! run, a thread reads the GPU's SM clock, power and temperature through NVML, so every figure
//! can be normalized to the clock the GPU really held.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gpucost_hw::peaks::{lookup, Precision};
use gpucost_kernels::bench::{self, BenchOptions, BenchReport, Method};
use serde_json::json;

use crate::sample::nvml::NvmlBackend;
use crate::sample::Backend;

pub struct BenchArgs {
    pub gpu: Option<usize>,
    pub json: bool,
    pub quick: bool,
    pub nvml_lib: Option<std::path::PathBuf>,
}

/// Clock, power and temperature while a benchmark ran (means of samples every 100 ms).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Conditions {
    pub sm_clock_hz: Option<f64>,
    pub power_w: Option<f64>,
    pub temperature_c: Option<f64>,
}

/// One precision's figures with their context.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub precision: Precision,
    pub method: Method,
    pub flops_per_s: f64,
    /// Share of the datasheet dense peak.
    pub of_datasheet: Option<f64>,
    /// Share of SMs x FLOP/clock/SM x the measured SM clock.
    pub of_clock_normalized: Option<f64>,
}

/// The benchmark of one GPU with its context.
#[derive(Debug, Clone)]
pub struct GpuBench {
    pub report: BenchReport,
    pub conditions: Conditions,
    pub rows: Vec<Row>,
    /// bf16, fp8, tf32 (kernel or library, whichever is faster) over fp32.
    pub speedups: Vec<(Precision, f64)>,
    /// Memory ops as (op, bytes/s, share of the datasheet bandwidth).
    pub memory: Vec<(&'static str, f64, Option<f64>)>,
}

/// Relates the raw results to the datasheet and the clock. Pure.
pub fn analyse(report: BenchReport, conditions: Conditions) -> GpuBench {
    let spec = lookup(&report.name);
    let rows: Vec<Row> = report
        .results
        .iter()
        .map(|r| Row {
            precision: r.precision,
            method: r.method,
            flops_per_s: r.flops_per_s,
            of_datasheet: spec
                .and_then(|s| s.peak(r.precision))
                .map(|p| r.flops_per_s / p),
            of_clock_normalized: spec
                .zip(conditions.sm_clock_hz)
                .and_then(|(s, clk)| s.clock_normalized_peak(r.precision, clk))
                .map(|p| r.flops_per_s / p),
        })
        .collect();
    let best = |p: Precision| {
        rows.iter()
            .filter(|r| r.precision == p)
            .map(|r| r.flops_per_s)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let speedups = match best(Precision::Fp32) {
        Some(fp32) if fp32 > 0.0 => [Precision::Bf16, Precision::Fp8, Precision::Tf32]
            .into_iter()
            .filter_map(|p| best(p).map(|v| (p, v / fp32)))
            .collect(),
        _ => Vec::new(),
    };
    let memory = report
        .memory
        .iter()
        .map(|m| {
            (
                m.op.as_str(),
                m.bytes_per_s,
                spec.map(|s| m.bytes_per_s / s.mem_bandwidth_bytes_per_s),
            )
        })
        .collect();
    GpuBench {
        report,
        conditions,
        rows,
        speedups,
        memory,
    }
}

/// Runs the benchmark on `device` while sampling its conditions through NVML (when available).
pub fn bench_gpu(
    device: usize,
    quick: bool,
    nvml_lib: Option<&std::path::Path>,
) -> Result<GpuBench, bench::BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let lib = nvml_lib.map(|p| p.to_path_buf());
    let watcher =
        std::thread::spawn(move || watch_conditions(device as u32, lib.as_deref(), &flag));
    let result = bench::run(&BenchOptions { device, quick });
    stop.store(true, Ordering::Relaxed);
    let conditions = watcher.join().unwrap_or_default();
    result.map(|r| analyse(r, conditions))
}

fn watch_conditions(index: u32, lib: Option<&std::path::Path>, stop: &AtomicBool) -> Conditions {
    let Ok(mut nvml) = NvmlBackend::open(lib) else {
        return Conditions::default();
    };
    let (mut clk, mut pw, mut temp) = (Vec::new(), Vec::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) {
        if let Ok(r) = nvml.read(index, false) {
            // Only samples taken while the GPU computes: idle clocks would drag the mean down.
            if r.utilization_pct.is_some_and(|u| u > 50) {
                clk.extend(r.sm_clock_mhz.map(|m| f64::from(m) * 1e6));
                pw.extend(r.power_mw.map(|m| f64::from(m) / 1e3));
                temp.extend(r.temperature_c.map(f64::from));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Conditions {
        sm_clock_hz: mean(&clk),
        power_w: mean(&pw),
        temperature_c: mean(&temp),
    }
}

/// `gpucost bench`; returns the exit code.
pub fn run(a: BenchArgs) -> i32 {
    let count = match bench::device_count() {
        Ok(0) => {
            eprintln!("gpucost bench: no GPU: the CUDA driver reports 0 devices");
            return 1;
        }
        Ok(n) => n,
        Err(e) => {
            eprintln!("gpucost bench: no GPU to benchmark: {e}");
            return 1;
        }
    };
    let devices: Vec<usize> = match a.gpu {
        Some(g) if g >= count => {
            eprintln!(
                "gpucost bench: --gpu {g}: this node has {count} GPU(s) (0 to {})",
                count - 1
            );
            return 2;
        }
        Some(g) => vec![g],
        None => (0..count).collect(),
    };
    let mut docs = Vec::new();
    let mut failed = false;
    for d in devices {
        if !a.json {
            eprintln!(
                "gpucost bench: GPU {d}: running ({} s at most)...",
                if a.quick { 3 } else { 10 }
            );
        }
        match bench_gpu(d, a.quick, a.nvml_lib.as_deref()) {
            Ok(b) => {
                if a.json {
                    docs.push(to_json(&b));
                } else {
                    print!("{}", to_table(&b));
                }
            }
            Err(e) => {
                eprintln!("gpucost bench: GPU {d}: {e}");
                failed = true;
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "gpus": docs })).unwrap_or_default()
        );
    }
    i32::from(failed)
}

pub fn to_json(b: &GpuBench) -> serde_json::Value {
    let r = &b.report;
    json!({
        "device": r.device,
        "name": r.name,
        "compute_capability": format!("{}.{}", r.compute_capability.0, r.compute_capability.1),
        "sm_count": r.sm_count,
        "elapsed_s": r.elapsed_s,
        "sm_clock_hz": b.conditions.sm_clock_hz,
        "power_w": b.conditions.power_w,
        "temperature_c": b.conditions.temperature_c,
        "results": b.rows.iter().map(|row| json!({
            "precision": row.precision.as_str(),
            "method": row.method.as_str(),
            "flops_per_s": row.flops_per_s,
            "of_datasheet": row.of_datasheet,
            "of_clock_normalized": row.of_clock_normalized,
        })).collect::<Vec<_>>(),
        "speedup_over_fp32": b.speedups.iter().map(|(p, s)| (p.as_str().to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
        "memory": b.memory.iter().map(|(op, bps, share)| json!({"op": op, "bytes_per_s": bps, "of_datasheet": share})).collect::<Vec<_>>(),
        "skipped": r.skipped.iter().map(|(w, why)| json!({"what": w, "why": why})).collect::<Vec<_>>(),
    })
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

pub fn to_table(b: &GpuBench) -> String {
    let r = &b.report;
    let c = &b.conditions;
    let mut out = format!(
        "GPU {} {} (sm_{}{}, {} SMs): SM clock {}, power {}, temperature {}\n",
        r.device,
        r.name,
        r.compute_capability.0,
        r.compute_capability.1,
        r.sm_count,
        c.sm_clock_hz
            .map_or("?".into(), |h| format!("{:.0} MHz", h / 1e6)),
        c.power_w.map_or("?".into(), |w| format!("{w:.0} W")),
        c.temperature_c.map_or("?".into(), |t| format!("{t:.0} C")),
    );
    out.push_str(&format!(
        "  {:<12} {:<8} {:>12} {:>11} {:>13}\n",
        "PRECISION", "METHOD", "TFLOP/s", "DATASHEET", "CLOCK-NORM"
    ));
    for row in &b.rows {
        out.push_str(&format!(
            "  {:<12} {:<8} {:>12.1} {:>11} {:>13}\n",
            row.precision.as_str(),
            row.method.as_str(),
            row.flops_per_s / 1e12,
            pct(row.of_datasheet),
            pct(row.of_clock_normalized)
        ));
    }
    for (op, bps, share) in &b.memory {
        out.push_str(&format!(
            "  memory {:<6} {:>10.2} TB/s {:>11}\n",
            op,
            bps / 1e12,
            pct(*share)
        ));
    }
    if !b.speedups.is_empty() {
        let s: Vec<String> = b
            .speedups
            .iter()
            .map(|(p, x)| format!("{} {x:.1}x", p.as_str()))
            .collect();
        out.push_str(&format!("  speedup over fp32: {}\n", s.join(", ")));
    }
    for (what, why) in &r.skipped {
        out.push_str(&format!("  skipped {what}: {why}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucost_kernels::bench::{KernelResult, MemOp, MemoryResult};

    fn report() -> BenchReport {
        let k = |precision, method, tflops: f64| KernelResult {
            precision,
            method,
            flops_per_s: tflops * 1e12,
            median_s: 0.01,
            repeats: 5,
        };
        BenchReport {
            device: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            results: vec![
                k(Precision::Fp32, Method::Kernel, 63.0),
                k(Precision::Bf16, Method::Kernel, 900.0),
                k(Precision::Bf16, Method::Library, 750.0),
                k(Precision::Fp8, Method::Library, 1400.0),
            ],
            memory: vec![MemoryResult {
                op: MemOp::Copy,
                bytes_per_s: 3.0e12,
            }],
            skipped: vec![("tf32 kernel".into(), "verification failed".into())],
            elapsed_s: 9.5,
        }
    }

    #[test]
    fn analysis_relates_results_to_the_datasheet_and_the_clock() {
        let b = analyse(
            report(),
            Conditions {
                sm_clock_hz: Some(1.98e9),
                power_w: Some(690.0),
                temperature_c: Some(61.0),
            },
        );
        let row = |p, m| {
            b.rows
                .iter()
                .find(|r| r.precision == p && r.method == m)
                .unwrap()
        };
        // FP32: 63 of 67 TFLOP/s; at 1980 MHz the clock-normalized peak is 132 x 256 x 1.98e9.
        let fp32 = row(Precision::Fp32, Method::Kernel);
        assert!((fp32.of_datasheet.unwrap() - 63.0 / 67.0).abs() < 0.01);
        let norm = 132.0 * 256.0 * 1.98e9;
        assert!((fp32.of_clock_normalized.unwrap() - 63e12 / norm).abs() < 1e-9);
        // Speedups over FP32 use the best method of each precision.
        let bf16 = b
            .speedups
            .iter()
            .find(|(p, _)| *p == Precision::Bf16)
            .unwrap()
            .1;
        assert!((bf16 - 900.0 / 63.0).abs() < 1e-9);
        let fp8 = b
            .speedups
            .iter()
            .find(|(p, _)| *p == Precision::Fp8)
            .unwrap()
            .1;
        assert!((fp8 - 1400.0 / 63.0).abs() < 1e-9);
        assert!(
            b.speedups.iter().all(|(p, _)| *p != Precision::Tf32),
            "no tf32 result, no tf32 speedup"
        );
        assert!((b.memory[0].2.unwrap() - 3.0 / 3.35).abs() < 0.01);
        let table = to_table(&b);
        assert!(
            table.contains("1980 MHz") && table.contains("skipped tf32 kernel"),
            "{table}"
        );
        let json = to_json(&b);
        assert_eq!(json["results"].as_array().unwrap().len(), 4);
        assert_eq!(json["compute_capability"], "9.0");
    }
}
