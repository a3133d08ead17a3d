//! `gpucost bench`: what each GPU delivers per precision, now, with our own kernels and the
//! vendor libraries, beside the datasheet and the clock it actually ran at. The measuring is
//! `crate::sample::benchmark`; this is the command: which GPUs, and the table or JSON.

use gpucost_kernels::suite;
use serde_json::json;

use crate::sample::benchmark::{bench_gpu, watch_nvml, GpuBench};

pub struct BenchArgs {
    pub gpu: Option<usize>,
    pub json: bool,
    pub quick: bool,
    pub nvml_lib: Option<std::path::PathBuf>,
}

/// `gpucost bench`; returns the exit code.
pub fn run(a: BenchArgs) -> i32 {
    let count = match suite::device_count() {
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
        match bench_gpu(d, a.quick, watch_nvml(d as u32, a.nvml_lib.clone())) {
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
