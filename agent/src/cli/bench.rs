//! `gpucost bench`: what each GPU delivers per precision, now, with our own kernels and the
//! vendor libraries, beside the datasheet and the clock it actually ran at. The measuring is
//! `crate::sample::benchmark`; this is the command: which GPUs, and the table or JSON.

use std::time::Duration;

use gpucost_kernels::suite::{self, Method, Pace};
use serde_json::json;

use crate::sample::benchmark::{
    bench_gpu, bench_nvml_gpu, watch_nvml, ClockSource, Conditions, GpuBench, SpeedupBasis,
};
use crate::sample::nvml::NvmlBackend;
use crate::sample::Backend;

pub struct BenchArgs {
    /// NVML's index or a UUID.
    pub gpu: Option<String>,
    pub json: bool,
    pub pace: Pace,
    pub nvml_lib: Option<std::path::PathBuf>,
}

/// The shortest and longest `--duration`: below 10 s no row holds its load long enough to
/// settle; above an hour is a burn-in, not a benchmark.
pub const DURATION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(10)..=Duration::from_secs(3600);

/// `--duration`'s value: a duration such as `60s` or `5m`, within [`DURATION_RANGE`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 60s or 5m: {e}"))?;
    if !DURATION_RANGE.contains(&d) {
        return Err(format!(
            "{text:?} is outside {} to {}",
            humantime::format_duration(*DURATION_RANGE.start()),
            humantime::format_duration(*DURATION_RANGE.end())
        ));
    }
    Ok(d)
}

/// One GPU's benchmark, to run.
type Run = Box<dyn FnOnce() -> Result<GpuBench, suite::BenchError>>;

/// What to benchmark: GPUs as NVML names them (index, UUID), each found among the CUDA devices
/// by its UUID; or, where NVML cannot be read, CUDA's own devices by ordinal.
enum Targets {
    Nvml(Vec<(u32, String)>),
    Cuda(Vec<usize>),
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
    let targets = match nvml_gpus(a.nvml_lib.as_deref()) {
        Ok(gpus) => match pick(&gpus, a.gpu.as_deref()) {
            Ok(t) => Targets::Nvml(t),
            Err(msg) => {
                eprintln!("gpucost bench: {msg}");
                return 2;
            }
        },
        Err(e) => {
            eprintln!(
                "gpucost bench: NVML cannot be read ({e}): GPUs are numbered as CUDA \
                 enumerates them, which may not be the agent's `gpu` label, and clocks and \
                 power are not watched"
            );
            let ordinals: Vec<usize> = (0..count).collect();
            match a.gpu.as_deref().map(str::parse::<usize>) {
                None => Targets::Cuda(ordinals),
                Some(Ok(g)) if g < count => Targets::Cuda(vec![g]),
                Some(_) => {
                    eprintln!(
                        "gpucost bench: --gpu {}: CUDA sees {count} GPU(s) (0 to {})",
                        a.gpu.unwrap_or_default(),
                        count - 1
                    );
                    return 2;
                }
            }
        }
    };
    let seconds = match a.pace {
        Pace::Quick => 3,
        Pace::Normal => 10,
        // The duration, plus the time to open the GPU and check every kernel.
        Pace::Sustained(d) => (d.as_secs_f64() * 1.1 + 10.0).ceil() as u64,
    };
    let runs: Vec<(String, Run)> = match targets {
        Targets::Nvml(gpus) => gpus
            .into_iter()
            .map(|(index, uuid)| {
                let lib = a.nvml_lib.clone();
                let pace = a.pace;
                let label = format!("GPU {index} ({uuid})");
                let run: Run =
                    Box::new(move || bench_nvml_gpu(index, &uuid, pace, watch_nvml(index, lib)));
                (label, run)
            })
            .collect(),
        Targets::Cuda(ordinals) => ordinals
            .into_iter()
            .map(|d| {
                let pace = a.pace;
                let run: Run = Box::new(move || bench_gpu(d, pace, |_| Conditions::default()));
                (format!("CUDA device {d}"), run)
            })
            .collect(),
    };
    let mut docs = Vec::new();
    let mut failed = false;
    for (label, run) in runs {
        if !a.json {
            eprintln!("gpucost bench: {label}: running ({seconds} s at most)...");
        }
        match run() {
            Ok(b) => {
                if a.json {
                    docs.push(to_json(&b));
                } else {
                    print!("{}", to_table(&b));
                }
            }
            Err(e @ suite::BenchError::NoMatch(_)) => {
                eprintln!("gpucost bench: {label}: skipped: {e}");
                failed = true;
            }
            Err(e) => {
                eprintln!("gpucost bench: {label}: {e}");
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

/// NVML's GPUs: (index, UUID).
fn nvml_gpus(lib: Option<&std::path::Path>) -> Result<Vec<(u32, String)>, String> {
    let mut nvml = NvmlBackend::open(lib).map_err(|e| e.to_string())?;
    let gpus = nvml.gpus().map_err(|e| e.to_string())?;
    Ok(gpus.into_iter().map(|g| (g.index, g.uuid)).collect())
}

/// The GPUs `--gpu` names (all without it): by NVML index or by UUID. An error names the choice
/// there was.
fn pick(gpus: &[(u32, String)], wanted: Option<&str>) -> Result<Vec<(u32, String)>, String> {
    let Some(w) = wanted else {
        return Ok(gpus.to_vec());
    };
    let found = match w.parse::<u32>() {
        Ok(i) => gpus.iter().find(|(index, _)| *index == i),
        Err(_) => gpus.iter().find(|(_, uuid)| uuid.eq_ignore_ascii_case(w)),
    };
    found.map(|g| vec![g.clone()]).ok_or_else(|| {
        let have: Vec<String> = gpus.iter().map(|(i, u)| format!("{i} ({u})")).collect();
        format!(
            "--gpu {w}: no such GPU; NVML lists {}",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )
    })
}

pub fn to_json(b: &GpuBench) -> serde_json::Value {
    let r = &b.report;
    json!({
        "gpu": b.nvml.as_ref().map(|(i, _)| i),
        "uuid": b.nvml.as_ref().map(|(_, u)| u),
        "device": r.device,
        "name": r.name,
        "compute_capability": format!("{}.{}", r.compute_capability.0, r.compute_capability.1),
        "sm_count": r.sm_count,
        "elapsed_s": r.elapsed_s,
        "sustained_s": match r.pace {
            Pace::Sustained(d) => Some(d.as_secs_f64()),
            _ => None,
        },
        "sm_clock_hz": b.conditions.sm_clock_hz,
        "power_w": b.conditions.power_w,
        "temperature_c": b.conditions.temperature_c,
        "results": b.rows.iter().map(|row| json!({
            "precision": row.precision.as_str(),
            "method": row.method.as_str(),
            // Our kernels are the ceiling; the libraries' GEMMs what a job gets.
            "role": if row.method == Method::Kernel { "ceiling" } else { "delivered" },
            "shape": row.shape.map(|s| json!({"m": s.m, "n": s.n, "k": s.k})),
            "flops_per_s": row.flops_per_s,
            "of_datasheet": row.of_datasheet,
            "of_clock_normalized": row.of_clock_normalized,
            "sm_clock_hz": row.sm_clock_hz,
            "sm_clock_source": row.clock_source.map(|c| c.as_str()),
            "clock_note": row.clock_note,
            "power_w": row.power_w,
            "throttle_reasons": row.throttle,
            "launches": row.launches,
            "p10_flops_per_s": row.p10_flops_per_s,
            "p90_flops_per_s": row.p90_flops_per_s,
            "settled_sm_clock_hz": row.settled_clock_hz,
            "settled_power_w": row.settled_power_w,
        })).collect::<Vec<_>>(),
        "speedup_over_fp32": b.speedups.iter().map(|(p, s)| (p.as_str().to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
        "speedup_basis": b.speedup_basis.as_str(),
        "memory": b.memory.iter().map(|(op, bps, share)| json!({"op": op, "bytes_per_s": bps, "of_datasheet": share})).collect::<Vec<_>>(),
        "skipped": r.skipped.iter().map(|(w, why)| json!({"what": w, "why": why})).collect::<Vec<_>>(),
    })
}

/// "kernel" (our kernel: the ceiling), or "library 8192^3" (a library GEMM of that shape:
/// what a job gets).
fn method(row: &crate::sample::benchmark::Row) -> String {
    match row.shape {
        Some(s) => format!("{} {}", row.method.as_str(), s.label()),
        None => row.method.as_str().to_string(),
    }
}

/// The 10th-90th percentile range of a row's launches, relative to its median: "±1.2%".
fn spread(row: &crate::sample::benchmark::Row) -> String {
    match (row.p10_flops_per_s, row.p90_flops_per_s) {
        (Some(lo), Some(hi)) if row.flops_per_s > 0.0 => {
            format!("±{:.1}%", 50.0 * (hi - lo) / row.flops_per_s)
        }
        _ => "-".to_string(),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

pub fn to_table(b: &GpuBench) -> String {
    let r = &b.report;
    let c = &b.conditions;
    let who = match &b.nvml {
        Some((index, uuid)) => format!("GPU {index} {} ({uuid}, CUDA device {}", r.name, r.device),
        None => format!("CUDA device {} {} (", r.device, r.name),
    };
    let mut out = format!(
        "{who}, sm_{}{}, {} SMs): SM clock {}, power {}, temperature {}\n",
        r.compute_capability.0,
        r.compute_capability.1,
        r.sm_count,
        c.sm_clock_hz
            .map_or("?".into(), |h| format!("{:.0} MHz", h / 1e6)),
        c.power_w.map_or("?".into(), |w| format!("{w:.0} W")),
        c.temperature_c.map_or("?".into(), |t| format!("{t:.0} C")),
    );
    let sustained = matches!(r.pace, Pace::Sustained(_));
    if let Pace::Sustained(d) = r.pace {
        out.push_str(&format!(
            "  sustained {}: each row held for its share; SETTLED is its last third of launches\n",
            humantime::format_duration(d)
        ));
    }
    out.push_str(&format!(
        "  {:<12} {:<18} {:>9} {:>7} {:>10} {:>11} {:>13} {:>7}{}  {}\n",
        "PRECISION",
        "METHOD",
        "TFLOP/s",
        "SPREAD",
        "DATASHEET",
        "CLOCK-NORM",
        "MHz",
        "POWER",
        if sustained {
            format!(" {:>16}", "SETTLED")
        } else {
            String::new()
        },
        "THROTTLE"
    ));
    for row in &b.rows {
        let clock = match (row.sm_clock_hz, row.clock_source) {
            (Some(hz), Some(src)) => format!("{:.0} {}", hz / 1e6, src.as_str()),
            _ => "-".to_string(),
        };
        let settled = if sustained {
            format!(
                " {:>16}",
                format!(
                    "{} MHz {} W",
                    row.settled_clock_hz
                        .map_or("?".into(), |h| format!("{:.0}", h / 1e6)),
                    row.settled_power_w
                        .map_or("?".into(), |w| format!("{w:.0}"))
                )
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {:<12} {:<18} {:>9.1} {:>7} {:>10} {:>11} {:>13} {:>7}{settled}  {}\n",
            row.precision.as_str(),
            method(row),
            row.flops_per_s / 1e12,
            spread(row),
            pct(row.of_datasheet),
            pct(row.of_clock_normalized),
            clock,
            row.power_w.map_or("-".into(), |w| format!("{w:.0} W")),
            if row.throttle.is_empty() {
                "-".to_string()
            } else {
                row.throttle.join(",")
            },
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
        out.push_str(&format!(
            "  speedup over fp32 ({}): {}\n",
            match b.speedup_basis {
                SpeedupBasis::Delivered => "delivered: the libraries' GEMMs at one shape",
                SpeedupBasis::Ceiling => "ceiling: our kernels, no library FP32 GEMM measured",
            },
            s.join(", ")
        ));
    }
    for (what, why) in &r.skipped {
        out.push_str(&format!("  skipped {what}: {why}\n"));
    }
    for row in b
        .rows
        .iter()
        .filter(|r| r.clock_source != Some(ClockSource::Kernel))
    {
        if let Some(note) = &row.clock_note {
            out.push_str(&format!(
                "  {} {}: no clock from the kernel's own blocks: {note}\n",
                row.precision.as_str(),
                row.method.as_str()
            ));
        }
    }
    out.push_str(
        "  kernel rows: our kernels, the ceiling; library rows: cuBLAS/cuBLASLt GEMMs of the \
         shape shown, what a training job is delivered. MHz: each row's SM clock, from its \
         kernel's own blocks (kernel) or NVML while it ran (nvml); CLOCK-NORM: of the device's \
         SMs x FLOP/clock/SM at that clock; SPREAD: half the 10th-90th percentile range of its \
         launches, of the median; timed on random data\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::pick;

    /// Issue 18, item 4: `--duration`'s values.
    #[test]
    fn issue_18_bench_duration() {
        use super::parse_duration;
        use std::time::Duration;
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["5s", "0s", "2h", "60", "sixty", ""] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(parse_duration("5s")
            .unwrap_err()
            .contains("outside 10s to 1h"));
    }

    #[test]
    fn gpu_is_chosen_by_nvml_index_or_uuid() {
        let gpus = vec![(0, "GPU-aaaa".to_string()), (1, "GPU-bbbb".to_string())];
        assert_eq!(pick(&gpus, None).unwrap(), gpus);
        assert_eq!(pick(&gpus, Some("1")).unwrap(), [gpus[1].clone()]);
        assert_eq!(pick(&gpus, Some("gpu-AAAA")).unwrap(), [gpus[0].clone()]);
        let err = pick(&gpus, Some("2")).unwrap_err();
        assert_eq!(
            err,
            "--gpu 2: no such GPU; NVML lists 0 (GPU-aaaa), 1 (GPU-bbbb)"
        );
        assert!(pick(&[], Some("GPU-x"))
            .unwrap_err()
            .ends_with("lists none"));
    }
}
