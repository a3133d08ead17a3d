use super::*;

const TWO_GPUS: &str = r#"
name = "t"
duration_s = 100
repeat = true
ripple = 0.05
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu]]
model = "NVIDIA A100-SXM4-40GB"
memory_total_mib = 40960
power_limit_w = 400
idle_power_w = 50
energy_counter = false
[[job]]
name = "a"
pid = 10
gpus = [0, 1]
start_s = 10
[[job.phase]]
seconds = 30
utilization = 0.9
power_w = 500
memory_mib = 1000
[[job.phase]]
seconds = 20
utilization = 0.0
power_w = 80
memory_mib = 1000
[[job]]
name = "b"
pid = 11
gpus = [0]
start_s = 20
[[job.phase]]
seconds = 10
utilization = 0.5
power_w = 700
memory_mib = 2000
[[event]]
at_s = 70
gpu = 0
kind = "energy_reset"
[[event]]
at_s = 80
gpu = 1
kind = "gpu_lost"
[[event]]
at_s = 90
gpu = 1
kind = "gpu_recovered"
[[event]]
at_s = 80
gpu = 1
kind = "xid"
xid = 79
"#;

fn node() -> SimulatedNode {
    SimulatedNode::new(Scenario::parse(TWO_GPUS, "test").unwrap())
}

/// Midpoint-rule integral of the instantaneous power, for comparison with the closed form.
fn numeric_energy(node: &SimulatedNode, gpu: u32, t0: f64, t1: f64) -> f64 {
    let steps = 200_000;
    let h = (t1 - t0) / steps as f64;
    (0..steps)
        .map(|i| node.state(gpu, t0 + (i as f64 + 0.5) * h).power_w * h)
        .sum()
}

#[test]
fn energy_is_the_integral_of_power() {
    let n = node();
    for (gpu, t0, t1) in [
        (0, 0.0, 100.0),
        (0, 12.5, 47.25),
        (1, 5.0, 250.0),
        (0, 95.0, 215.0),
    ] {
        let closed = n.energy_j(gpu, t1) - n.energy_j(gpu, t0);
        let numeric = numeric_energy(&n, gpu, t0, t1);
        assert!(
            (closed - numeric).abs() < 1e-3 * numeric,
            "gpu {gpu} [{t0},{t1}): closed {closed} vs numeric {numeric}"
        );
    }
}

/// The one-second power average is the energy of the last wall second: between the ripple's
/// extremes while the instant value follows the wave, and equal to it with no ripple.
#[test]
fn power_average_is_the_energy_of_the_last_second() {
    let n = node();
    for t in [12.0, 13.7, 20.25, 39.9] {
        let avg = n.power_average_w(0, t);
        let numeric = numeric_energy(&n, 0, t - 1.0, t);
        assert!((avg - numeric).abs() < 1e-3, "{t}: {avg} vs {numeric}");
    }
    // At scenario time 0 there is no second before: the power then.
    assert_eq!(n.power_average_w(0, 0.0), n.state(0, 0.0).power_w);
    let flat = one_phase("utilization = 0.5").unwrap();
    assert!((flat.power_average_w(0, 50.0) - 500.0).abs() < 1e-9);
}

#[test]
fn shared_gpu_loads_add_up_and_cap_at_the_limit() {
    let n = node();
    // Job a (430 W above idle) and b (630 W above idle) overlap on GPU 0 during [20, 30):
    // 1060 W above idle is capped at 700 - 70.
    let s = n.state(0, 25.0);
    assert!(
        s.power_w <= 700.0 * 1.05 && s.power_w >= 700.0 * 0.95,
        "{}",
        s.power_w
    );
    assert_eq!(s.utilization, 1.0);
    assert_eq!(s.processes.len(), 2);
    assert_eq!(s.memory_used_bytes, (512 + 3000) * 1024 * 1024);
    assert_ne!(s.throttle_reasons & reason::SW_POWER_CAP, 0);
    let idle = n.state(0, 5.0);
    assert_eq!(idle.power_w, 70.0);
    assert_eq!(idle.throttle_reasons, reason::GPU_IDLE);
    assert!(idle.processes.is_empty());
    // The allocated-but-idle phase keeps its process and memory.
    let held = n.state(0, 45.0);
    assert_eq!(held.utilization, 0.0);
    assert_eq!(held.processes.len(), 1);
}

#[test]
fn energy_counter_resets_and_unsupported() {
    let n = node();
    let before = n.state(0, 69.9).energy_mj.unwrap();
    let after = n.state(0, 70.5).energy_mj.unwrap();
    assert!(after < before, "the counter restarts at the reset");
    assert!(after < 70 * 1000, "0.5 s of idle power: {after} mJ");
    // Next repetition: the counter keeps counting from the last reset.
    let next = n.state(0, 110.0).energy_mj.unwrap();
    let expected = (n.energy_j(0, 110.0) - n.energy_j(0, 70.0)) * 1000.0;
    assert!((next as f64 - expected).abs() < 1.0);
    assert_eq!(n.state(1, 50.0).energy_mj, None);
}

#[test]
fn lost_gpus_and_xids_follow_the_timeline() {
    let n = node();
    assert!(n.is_present(1, 79.9));
    assert!(!n.is_present(1, 80.0));
    assert!(!n.is_present(1, 89.0));
    assert!(n.is_present(1, 90.0));
    assert!(
        !n.is_present(1, 185.0),
        "the loss repeats with the timeline"
    );
    assert!(n.is_present(0, 85.0));
    assert_eq!(n.xids_between(1, 0.0, 80.0), vec![(80.0, 79)]);
    assert_eq!(n.xids_between(1, 80.0, 179.0), vec![]);
    assert_eq!(n.xids_between(1, 50.0, 300.0).len(), 3);
}

#[test]
fn demo_scenario_is_valid() {
    let s = Scenario::load("demo").unwrap();
    let n = SimulatedNode::new(s);
    assert_eq!(n.gpu_count(), 4);
    // The counter of every GPU grows over a whole timeline but for GPU 1's reset.
    for g in [0, 2, 3] {
        let a = n.state(g, 1.0).energy_mj.unwrap();
        let b = n.state(g, 599.0).energy_mj.unwrap();
        assert!(b > a);
    }
}

#[test]
fn bad_scenarios_name_the_problem() {
    let cases = [
        (
            TWO_GPUS.replace("gpus = [0, 1]", "gpus = [0, 7]"),
            "job 'a': gpus: GPU 7 does not exist",
        ),
        (
            TWO_GPUS.replace("utilization = 0.9", "utilization = 1.5"),
            "job 'a': phase 0: utilization",
        ),
        (
            TWO_GPUS.replace("duration_s = 100", "duration_s = 50"),
            "after the scenario's duration_s",
        ),
        (
            TWO_GPUS.replace("xid = 79", ""),
            "an xid event needs its code",
        ),
        (
            TWO_GPUS.replace("idle_power_w = 70", "idle_power_w = 900"),
            "gpu 0 (NVIDIA H100 80GB HBM3): idle_power_w",
        ),
        (
            TWO_GPUS.replace("pid = 11", "pid = 10"),
            "pid 10 is zero or used by another job",
        ),
        (
            TWO_GPUS.replace(
                "duration_s = 100",
                "duration_s = 100\ndriver_upgrade_at_s = 100",
            ),
            "driver_upgrade_at_s: must be in [0, duration_s), got 100",
        ),
        (
            TWO_GPUS.replace("memory_total_mib = 81559", "memory_total = 1"),
            "unknown field `memory_total`",
        ),
        (
            TWO_GPUS.replace(
                "idle_power_w = 70",
                "idle_power_w = 70\n[gpu.nvml]\nprocess_info_v3_bytes = 20",
            ),
            "gpu 0 (NVIDIA H100 80GB HBM3): nvml.process_info_v3_bytes: must be 16, 24 or 32",
        ),
        (
            TWO_GPUS.replace("kind = \"energy_reset\"", "kind = \"event_wait_error\""),
            "event 0 (EventWaitError): seconds: this event needs a positive number of seconds",
        ),
        (
            TWO_GPUS.replace(
                "kind = \"energy_reset\"",
                "kind = \"energy_reset\"\nseconds = 2",
            ),
            "only hang and event_wait_error events last seconds",
        ),
    ];
    for (text, want) in cases {
        let err = Scenario::parse(&text, "case.toml").unwrap_err().to_string();
        assert!(err.contains("case.toml"), "{err}");
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Pipe activity (GPM)

/// One GPU, one job whose single phase is `phase` (TOML lines), from 0 to 100 s.
fn one_phase(phase: &str) -> Result<SimulatedNode, ScenarioError> {
    let text = format!(
        r#"
name = "pipes"
duration_s = 100
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "j"
pid = 10
gpus = [0]
[[job.phase]]
seconds = 100
power_w = 500
memory_mib = 1000
{phase}
"#
    );
    Scenario::parse(&text, "pipes.toml").map(SimulatedNode::new)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A known pipe close to `b`.
fn known(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| close(a, b))
}

fn assert_pipes(got: Pipes, want: Pipes, what: &str) {
    let fields = |p: Pipes| {
        [
            ("sm_active", p.sm_active),
            ("sm_occupancy", p.sm_occupancy),
            ("tensor_active", p.tensor_active),
            ("hmma_active", p.hmma_active),
            ("imma_active", p.imma_active),
            ("dfma_tensor_active", p.dfma_tensor_active),
            ("fp16_active", p.fp16_active),
            ("fp32_active", p.fp32_active),
            ("fp64_active", p.fp64_active),
            ("dram_active", p.dram_active),
        ]
    };
    for ((name, g), (_, w)) in fields(got).into_iter().zip(fields(want)) {
        let same = match (g, w) {
            (Some(g), Some(w)) => close(g, w),
            (g, w) => g == w,
        };
        assert!(same, "{what}: {name} is {g:?}, want {w:?}");
    }
}

#[test]
fn pipes_follow_the_precision_table() {
    // (precision, utilization, [tensor, hmma, imma, dfma, fp16, fp32, fp64, dram] per util)
    #[rustfmt::skip]
    let table: [(&str, f64, [f64; 8]); 11] = [
        ("bf16", 0.8, [0.55, 0.55, 0.0, 0.0, 0.10, 0.10, 0.0, 0.45]),
        ("fp16", 0.5, [0.55, 0.55, 0.0, 0.0, 0.10, 0.10, 0.0, 0.45]),
        ("BF16", 1.0, [0.55, 0.55, 0.0, 0.0, 0.10, 0.10, 0.0, 0.45]),
        ("tf32", 0.9, [0.45, 0.45, 0.0, 0.0, 0.0, 0.15, 0.0, 0.50]),
        ("fp8", 0.9, [0.50, 0.0, 0.0, 0.0, 0.10, 0.08, 0.0, 0.40]),
        ("int8", 0.7, [0.50, 0.0, 0.50, 0.0, 0.0, 0.05, 0.0, 0.40]),
        ("fp32", 0.99, [0.0, 0.0, 0.0, 0.0, 0.0, 0.65, 0.0, 0.50]),
        ("fp64", 0.6, [0.50, 0.0, 0.0, 0.50, 0.0, 0.0, 0.60, 0.40]),
        // Unknown tags: the SMs are busy, no pipe is known.
        ("dataloader-stall", 0.4, [0.0; 8]),
        ("bf16", 0.0, [0.0; 8]),
        ("idle", 0.7, [0.0; 8]),
    ];
    for (precision, u, k) in table {
        let node = one_phase(&format!("utilization = {u}\nprecision = \"{precision}\"")).unwrap();
        let busy = if precision == "idle" { 0.0 } else { u };
        let want = Pipes {
            sm_active: Some(0.95 * busy),
            sm_occupancy: Some(0.6 * busy),
            tensor_active: Some(k[0] * u),
            hmma_active: Some(k[1] * u),
            imma_active: Some(k[2] * u),
            dfma_tensor_active: Some(k[3] * u),
            fp16_active: Some(k[4] * u),
            fp32_active: Some(k[5] * u),
            fp64_active: Some(k[6] * u),
            dram_active: Some(k[7] * u),
        };
        let what = format!("{precision} at {u}");
        assert_pipes(node.state(0, 50.0).pipes, want, &what);
        assert_pipes(node.scenario().jobs[0].phases[0].pipes(), want, &what);
        assert_pipes(coefficients(Some(precision)).scaled(u), want, &what);
    }
    // No tag at all: as an unknown one.
    let node = one_phase("utilization = 0.5").unwrap();
    assert_pipes(
        node.state(0, 50.0).pipes,
        Pipes {
            sm_active: Some(0.475),
            sm_occupancy: Some(0.3),
            ..Pipes::IDLE
        },
        "untagged",
    );
    // Nothing runs before or after the job (a timeline that does not repeat).
    assert_eq!(node.state(0, 150.0).pipes, Pipes::IDLE);
}

#[test]
fn explicit_pipes_override_the_table() {
    let node = one_phase(
        "utilization = 0.8\nprecision = \"bf16\"\nsm_active = 0.5\ntensor_active = 0.2\n\
         fp16_active = 0.3\nfp32_active = 0.4\nfp64_active = 0.05\ndram_active = 0.9",
    )
    .unwrap();
    assert_pipes(
        node.state(0, 10.0).pipes,
        Pipes {
            sm_active: Some(0.5),
            sm_occupancy: Some(0.5 * 0.6 / 0.95),
            tensor_active: Some(0.2),
            hmma_active: Some(0.2),
            imma_active: Some(0.0),
            dfma_tensor_active: Some(0.0),
            fp16_active: Some(0.3),
            fp32_active: Some(0.4),
            fp64_active: Some(0.05),
            dram_active: Some(0.9),
        },
        "bf16 with overrides",
    );
    // A tensor override keeps the precision's split, or goes to HMMA where there is none.
    let int8 = one_phase("utilization = 0.8\nprecision = \"int8\"\ntensor_active = 0.3").unwrap();
    let p = int8.state(0, 10.0).pipes;
    assert!(
        known(p.imma_active, 0.3) && known(p.hmma_active, 0.0),
        "{p:?}"
    );
    let fp32 = one_phase("utilization = 0.8\nprecision = \"fp32\"\ntensor_active = 0.1").unwrap();
    let p = fp32.state(0, 10.0).pipes;
    assert!(
        known(p.hmma_active, 0.1) && known(p.fp32_active, 0.52),
        "{p:?}"
    );
    // Only the overridden pipe changes.
    let dram = one_phase("utilization = 1.0\nprecision = \"fp32\"\ndram_active = 0.2").unwrap();
    let p = dram.state(0, 10.0).pipes;
    assert!(
        known(p.dram_active, 0.2) && known(p.fp32_active, 0.65),
        "{p:?}"
    );
}

#[test]
fn bad_pipe_overrides_name_the_item() {
    for field in [
        "sm_active",
        "tensor_active",
        "fp16_active",
        "fp32_active",
        "fp64_active",
        "dram_active",
    ] {
        for bad in ["1.5", "-0.1", "nan"] {
            let err = one_phase(&format!("utilization = 0.5\n{field} = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("pipes.toml"), "{err}");
            assert!(
                err.contains(&format!(
                    "job 'j': phase 0: {field}: must be in [0, 1], got"
                )),
                "{err}"
            );
        }
    }
    let err = one_phase("utilization = 0.5\ntensor = 0.5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `tensor`"), "{err}");
}

const SHARED: &str = r#"
name = "shared"
duration_s = 100
repeat = true
ripple = 0.05
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu]]
model = "NVIDIA A100-SXM4-80GB"
memory_total_mib = 81920
power_limit_w = 400
idle_power_w = 50
[[gpu]]
model = "NVIDIA A100-SXM4-80GB"
memory_total_mib = 81920
power_limit_w = 400
idle_power_w = 50
gpm = true
[[gpu]]
model = "NVIDIA H200"
memory_total_mib = 143771
power_limit_w = 700
idle_power_w = 70
gpm = false
[[job]]
name = "a"
pid = 10
gpus = [0, 1]
start_s = 10
[[job.phase]]
seconds = 40
utilization = 0.6
power_w = 400
memory_mib = 1000
precision = "bf16"
[[job.phase]]
seconds = 20
utilization = 0.2
power_w = 200
memory_mib = 1000
precision = "fp32"
[[job]]
name = "b"
pid = 11
gpus = [0]
start_s = 30
[[job.phase]]
seconds = 10
utilization = 0.7
power_w = 500
memory_mib = 1000
precision = "bf16"
dram_active = 0.8
"#;

fn shared() -> SimulatedNode {
    SimulatedNode::new(Scenario::parse(SHARED, "shared.toml").unwrap())
}

#[test]
fn shared_gpus_add_pipes_and_cap_at_one() {
    let n = shared();
    let a = n.scenario().jobs[0].phases[0].pipes();
    let b = n.scenario().jobs[1].phases[0].pipes();
    // Alone, then together: sums, each pipe capped at 1.
    assert_pipes(n.state(0, 20.0).pipes, a, "a alone");
    let both = n.state(0, 35.0).pipes;
    assert!(known(both.tensor_active, 0.55 * 1.3), "{both:?}");
    assert!(known(both.hmma_active, 0.55 * 1.3), "{both:?}");
    assert!(known(both.fp32_active, 0.10 * 1.3), "{both:?}");
    assert_eq!(both.sm_active, Some(1.0), "0.95 x 1.3 is capped");
    assert_eq!(both.dram_active, Some(1.0), "0.27 + 0.8 is capped");
    assert!(known(both.sm_occupancy, 0.6 * 1.3), "{both:?}");
    assert!(a.sm_active.unwrap() + b.sm_active.unwrap() > 1.0);
    // The second phase of `a`: FP32, tensors idle.
    let fp32 = n.state(0, 55.0).pipes;
    assert!(known(fp32.fp32_active, 0.13) && fp32.tensor_active == Some(0.0));
    assert_eq!(n.state(0, 5.0).pipes, Pipes::IDLE);
    // The ripple moves power and utilization, never the pipes.
    assert_eq!(n.state(0, 12.0).pipes, n.state(0, 17.3).pipes);
}

/// The utilization alone is the state's.
#[test]
fn utilization_is_the_states() {
    for n in [
        shared(),
        SimulatedNode::new(Scenario::parse(TRACED, "traced.toml").unwrap()),
    ] {
        for t in [0.0, 0.7, 2.0, 12.5, 31.0, 55.5, 140.0] {
            assert_eq!(n.utilization(0, t), n.state(0, t).utilization, "{t}");
        }
    }
    let bad = TWO_GPUS.replacen(
        "idle_power_w = 70",
        "idle_power_w = 70\nutilization_period_s = 0.1",
        1,
    );
    let err = Scenario::parse(&bad, "bad.toml").unwrap_err().to_string();
    assert!(
        err.contains("utilization_period_s: must be in [1/6, 1]"),
        "{err}"
    );
}

/// Each violation counter counts the time its reason's bit is set in the model's readings
/// (the idle bit as low utilization), exactly, ripple included.
#[test]
fn violation_counters_count_the_time_their_bit_is_set() {
    let n = shared();
    let counted = |gpu: u32, t0: f64, t1: f64, bit: u64| {
        let steps = 200_000;
        let h = (t1 - t0) / steps as f64;
        (0..steps)
            .filter(|i| n.state(gpu, t0 + (*i as f64 + 0.5) * h).throttle_reasons & bit != 0)
            .count() as f64
            * h
    };
    for (gpu, t0, t1) in [
        (0, 0.0, 100.0),
        (0, 28.0, 41.0),
        (1, 5.0, 250.0),
        (0, 95.0, 215.0),
    ] {
        let (a, b) = (n.violation_s(gpu, t0), n.violation_s(gpu, t1));
        for (what, got, bit) in [
            ("power", b.power - a.power, 0x4),
            ("thermal", b.thermal - a.thermal, 0x20),
            (
                "low utilization",
                b.low_utilization - a.low_utilization,
                0x1,
            ),
        ] {
            let want = counted(gpu, t0, t1, bit);
            assert!(
                (got - want).abs() < 1e-3,
                "gpu {gpu} [{t0}, {t1}) {what}: {got} s, counted {want} s"
            );
        }
    }
    // The shared phase on GPU 0 is capped part of the time only, by the ripple.
    let (a, b) = (n.violation_s(0, 30.0), n.violation_s(0, 40.0));
    assert!(
        b.power - a.power > 1.0 && b.power - a.power < 9.0,
        "{a:?} {b:?}"
    );
    assert_eq!(b.sync_boost + b.board_limit + b.reliability, 0.0);
}

#[test]
fn pipe_averages_are_the_integral_of_the_activity() {
    let n = shared();
    // Numeric midpoint-rule average of the instantaneous activity.
    let numeric = |gpu: u32, t0: f64, t1: f64| {
        let steps = 100_000;
        let h = (t1 - t0) / steps as f64;
        (0..steps)
            .map(|i| n.state(gpu, t0 + (i as f64 + 0.5) * h).pipes)
            .fold(Pipes::IDLE, |acc, p| acc.plus(p.scaled(h / (t1 - t0))))
    };
    for (gpu, t0, t1) in [
        (0, 0.0, 100.0),
        (0, 25.0, 45.0),
        (0, 34.0, 34.5),
        (1, 5.0, 250.0),
        (0, 95.0, 215.0),
        (0, 1234.5, 1240.0),
    ] {
        let exact = n.pipes_between(gpu, t0, t1);
        let approx = numeric(gpu, t0, t1);
        for (e, a) in [
            (exact.sm_active, approx.sm_active),
            (exact.tensor_active, approx.tensor_active),
            (exact.fp32_active, approx.fp32_active),
            (exact.dram_active, approx.dram_active),
        ] {
            assert!(
                (e.unwrap() - a.unwrap()).abs() < 1e-4,
                "gpu {gpu} [{t0},{t1}): {exact:?} vs {approx:?}"
            );
        }
    }
    // Within one phase, the average is the phase's activity.
    assert_pipes(
        n.pipes_between(0, 12.0, 19.0),
        n.state(0, 15.0).pipes,
        "one phase",
    );
    // A zero-length window gives the activity at that moment.
    assert_eq!(n.pipes_between(0, 35.0, 35.0), n.state(0, 35.0).pipes);
    // Pipe-seconds over a whole timeline repeat with it.
    let one = n.pipe_seconds(0, 100.0).value.tensor_active.unwrap();
    assert!(known(
        n.pipe_seconds(0, 300.0).value.tensor_active,
        3.0 * one
    ));
    assert!(close(one, 0.55 * 0.6 * 40.0 + 0.55 * 0.7 * 10.0));
}

/// Issue 14, item 7: a pipe whose GPM metric fails is unknown, not idle, in the model (and so
/// through the fake library and the simulated backend alike); an average over a window that was
/// unknown for any part of it is unknown.
#[test]
fn issue_14_failing_gpm_metrics_make_their_pipes_unknown() {
    let text = TWO_GPUS.replacen(
        "idle_power_w = 70",
        "idle_power_w = 70\ngpm_unknown_pipes = [\"tensor_active\", \"hmma_active\"]",
        1,
    );
    let n = SimulatedNode::new(Scenario::parse(&text, "unknown.toml").unwrap());
    let p = n.state(0, 5.0).pipes;
    assert_eq!((p.tensor_active, p.hmma_active), (None, None), "{p:?}");
    assert!(p.fp32_active.is_some() && p.sm_active.is_some(), "{p:?}");
    let avg = n.pipes_between(0, 1.0, 9.0);
    assert_eq!(avg.tensor_active, None);
    assert!(avg.fp32_active.is_some());
    // The other GPU is untouched.
    assert!(n.state(1, 5.0).pipes.all_known());
    // A recording with an unknown value replays it as unknown, for the windows that cover it.
    let nan = TRACED.replace(
        "tensor_active = [0, 0, 0.6, 0]",
        "tensor_active = [0, nan, 0.6, 0]",
    );
    let n = SimulatedNode::new(Scenario::parse(&nan, "nan.toml").unwrap());
    assert_eq!(n.state(0, 1.0).pipes.tensor_active, None);
    assert_eq!(n.pipes_between(0, 0.5, 2.5).tensor_active, None);
    assert!(known(n.pipes_between(0, 1.5, 2.5).tensor_active, 0.6));
    assert!(known(n.pipes_between(0, 0.5, 2.5).fp32_active, 0.4));
    // A name that is no pipe is an error that says which names there are.
    let bad = TWO_GPUS.replacen(
        "idle_power_w = 70",
        "idle_power_w = 70\ngpm_unknown_pipes = [\"tensor\"]",
        1,
    );
    let err = Scenario::parse(&bad, "bad.toml").unwrap_err().to_string();
    assert!(
        err.contains("gpm_unknown_pipes: no pipe is called \"tensor\" (sm_active,"),
        "{err}"
    );
}

#[test]
fn gpm_support_follows_the_model_or_the_flag() {
    let n = shared();
    assert!(n.gpm_supported(0), "H100: by name");
    assert!(!n.gpm_supported(1), "A100: by name");
    assert!(n.gpm_supported(2), "A100 with gpm = true");
    assert!(!n.gpm_supported(3), "H200 with gpm = false");
    for (model, gpm) in [
        ("NVIDIA H100 PCIe", true),
        ("NVIDIA H200", true),
        ("NVIDIA GH200 480GB", true),
        ("NVIDIA B200", true),
        ("NVIDIA B100", true),
        ("NVIDIA L40S", false),
        ("NVIDIA A10", false),
        ("Tesla V100-SXM2-32GB", false),
    ] {
        let spec: GpuSpec = toml::from_str(&format!(
            "model = \"{model}\"\nmemory_total_mib = 1\npower_limit_w = 2\nidle_power_w = 1"
        ))
        .unwrap();
        assert_eq!(spec.gpm_supported(), gpm, "{model}");
    }
}

#[test]
fn demo_shows_each_pipe_signal() {
    let n = SimulatedNode::new(Scenario::load("demo").unwrap());
    assert!((0..4).all(|g| n.gpm_supported(g)));
    // The bf16 pretrain: tensor cores busy.
    let pretrain = n.state(0, 100.0).pipes;
    assert!(
        pretrain.tensor_active > Some(0.5) && pretrain.hmma_active > Some(0.5),
        "{pretrain:?}"
    );
    assert_eq!(n.state(1, 100.0).pipes, pretrain);
    // resnet50-fp32: the FP32 pipe busy, tensor cores idle (the waste signal).
    let resnet = n.state(3, 100.0).pipes;
    assert!(resnet.fp32_active > Some(0.6), "{resnet:?}");
    assert_eq!(resnet.tensor_active, Some(0.0));
    // The notebook's idle phase, alone on GPU 2 (the eval sweep ended at 340 s): nothing.
    assert_eq!(n.state(2, 400.0).pipes, Pipes::IDLE);
    // The notebook's bf16 phase with the eval sweep, whose DRAM activity is explicit.
    let gpu2 = n.state(2, 150.0).pipes;
    assert!(gpu2.tensor_active > Some(0.0));
    assert!(known(gpu2.dram_active, 0.45 * 0.35 + 0.55), "{gpu2:?}");
    // The fine-tune on GPU 3 is bf16 again.
    assert!(n.state(3, 400.0).pipes.tensor_active > Some(0.4));
    // Averages over a sampling window agree with the instantaneous values within a phase.
    assert_pipes(n.pipes_between(3, 100.0, 100.25), resnet, "resnet window");
}

// ---------------------------------------------------------------------------------------------
// Traces: recorded readings of a real GPU

const TRACED: &str = r#"
name = "traced"
duration_s = 10
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
initial_energy_j = 1000
[gpu.trace]
t_s = [0.5, 1.5, 2.5, 3.5]
energy_j = [0, 410, 1020, 1100]
power_w = [71, 405, 612, 80]
utilization = [0, 0.97, 1, 0]
memory_used_mib = [512, 20000, 20480, 20480]
sm_clock_mhz = [345, 1980, 1755, 345]
temperature_c = [31, 44, 58, 50]
clock_event_reasons = [1, 0, 4, 1]
[gpu.trace.pipes]
sm_active = [0, 0.9, 0.95, 0]
sm_occupancy = [0, 0.5, 0.6, 0]
tensor_active = [0, 0, 0.6, 0]
hmma_active = [0, 0, 0.6, 0]
imma_active = [0, 0, 0, 0]
dfma_tensor_active = [0, 0, 0, 0]
fp16_active = [0, 0, 0.1, 0]
fp32_active = [0, 0.7, 0.1, 0]
fp64_active = [0, 0, 0, 0]
dram_active = [0, 0.4, 0.5, 0]
[[job]]
name = "recorded"
id = "gt-1"
pid = 4242
gpus = [0]
start_s = 0.5
exit_code = 1
[[job.phase]]
seconds = 3.0
utilization = 0
power_w = 0
memory_mib = 0
"#;

/// A traced GPU reads what was recorded, interval by interval: its energy counter advances by the
/// recorded joules, GPM averages are the recorded ones, and after the trace it follows its jobs.
#[test]
fn traced_gpus_replay_the_recording() {
    let node = SimulatedNode::new(Scenario::parse(TRACED, "traced.toml").unwrap());
    let e = |t: f64| node.state(0, t).energy_mj.unwrap() as f64 / 1000.0;
    assert!((e(0.5) - 1000.0 - 0.5 * 71.0).abs() < 1e-3, "{}", e(0.5));
    for (k, want) in [(1, 410.0), (2, 610.0), (3, 80.0)] {
        let (t0, t1) = (k as f64 - 0.5, k as f64 + 0.5);
        assert!(
            (e(t1) - e(t0) - want).abs() < 2e-3,
            "interval {k}: {}",
            e(t1) - e(t0)
        );
    }
    let s = node.state(0, 2.0);
    assert_eq!(
        (
            s.power_w,
            s.utilization,
            s.memory_used_bytes,
            s.sm_clock_mhz,
            s.throttle_reasons
        ),
        (612.0, 1.0, 20480 * 1024 * 1024, 1755, 4)
    );
    assert_eq!(s.processes.len(), 1);
    assert_eq!(s.processes[0].pid, 4242);
    assert_eq!(s.processes[0].sm_util_pct, 100);
    assert_eq!(
        s.processes[0].used_memory_bytes,
        (20480 - 512) * 1024 * 1024
    );
    let p = node.pipes_between(0, 0.5, 1.5);
    assert!(
        known(p.fp32_active, 0.7) && known(p.tensor_active, 0.0),
        "{p:?}"
    );
    let p = node.pipes_between(0, 0.5, 2.5);
    assert!(
        known(p.fp32_active, 0.4) && known(p.hmma_active, 0.3),
        "{p:?}"
    );
    // After the trace and the job: idle, at the GPU's idle power.
    let after = node.state(0, 5.0);
    assert_eq!((after.utilization, after.power_w), (0.0, 70.0));
    assert!(after.processes.is_empty());
    assert!((e(6.0) - e(5.0) - 70.0).abs() < 2e-3);
}

/// A scenario written out (as `gpucost agent --record` does) reads back the same.
#[test]
fn traced_scenarios_round_trip_through_toml() {
    let s = Scenario::parse(TRACED, "traced.toml").unwrap();
    let text = toml::to_string(&s).unwrap();
    let back = Scenario::parse(&text, "written.toml").unwrap();
    assert_eq!(back.gpus[0].trace, s.gpus[0].trace);
    let (a, b) = (SimulatedNode::new(s), SimulatedNode::new(back));
    for t in [0.0, 1.0, 2.2, 3.4, 7.0] {
        assert_eq!(a.state(0, t), b.state(0, t), "t = {t}");
    }
}

#[test]
fn bad_traces_name_the_column() {
    let cases = [
        (
            TRACED.replace("power_w = [71, 405, 612, 80]", "power_w = [71, 405, 612]"),
            "gpu 0 (NVIDIA H100 80GB HBM3): trace.power_w: has 3 values, t_s has 4",
        ),
        (
            TRACED.replace("t_s = [0.5, 1.5, 2.5, 3.5]", "t_s = [0.5, 1.5, 1.5, 3.5]"),
            "trace.t_s: must be >= 0 and strictly increasing (sample 2)",
        ),
        (
            TRACED.replace(
                "energy_j = [0, 410, 1020, 1100]",
                "energy_j = [0, 410, 400, 1100]",
            ),
            "trace.energy_j: must be >= 0 and never decrease (sample 2)",
        ),
        (
            TRACED.replace(
                "fp32_active = [0, 0.7, 0.1, 0]",
                "fp32_active = [0, 70, 0.1, 0]",
            ),
            "trace.fp32_active: must be in [0, 1] (or nan: unknown), got 70 (sample 1)",
        ),
        (
            TRACED.replace("duration_s = 10", "duration_s = 3"),
            "trace.t_s: ends at 3.5s, after duration_s (3s)",
        ),
        (
            TRACED.replace("memory_used_mib = [512,", "memory_used_mib = [90000,"),
            "trace.memory_used_mib: 90000 MiB is more than the GPU has (sample 0)",
        ),
    ];
    for (text, want) in cases {
        let err = Scenario::parse(&text, "case.toml").unwrap_err().to_string();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
}

#[test]
fn nvml_quirks_contexts_and_driver_events_parse_with_their_defaults() {
    let node = node();
    let quirks = &node.scenario().gpus[0].nvml;
    assert!(quirks.is_default());
    assert_eq!(quirks.process_info_v3_bytes, 24);
    assert_eq!(quirks.events, [DriverEventKind::Xid]);
    // The process detail list answers on Hopper and newer unless the scenario says otherwise.
    assert!(node.scenario().gpus[0].process_detail_list());
    assert!(!node.scenario().gpus[1].process_detail_list());
    assert!(node
        .state(0, 25.0)
        .processes
        .iter()
        .all(|p| p.context == Context::Compute));

    let text = TWO_GPUS
        .replace(
            "energy_counter = false",
            "energy_counter = false\n[gpu.nvml]\nprocess_info_v3_bytes = 32\nprocess_detail_list = true\n\
             events = [\"xid\", \"ecc_double_bit\"]\nregister_events_error = \"unknown\"",
        )
        .replace("pid = 11", "pid = 11\ncontext = \"mps\"")
        + "[[event]]\nat_s = 50\ngpu = 0\nkind = \"event_wait_error\"\nseconds = 5\n\
           [[event]]\nat_s = 60\ngpu = 1\nkind = \"ecc_double_bit\"\n";
    let node = SimulatedNode::new(Scenario::parse(&text, "quirks.toml").unwrap());
    let quirks = &node.scenario().gpus[1].nvml;
    assert_eq!(quirks.process_info_v3_bytes, 32);
    assert!(node.scenario().gpus[1].process_detail_list());
    assert_eq!(
        quirks.events,
        [DriverEventKind::Xid, DriverEventKind::EccDoubleBit]
    );
    assert_eq!(
        quirks.register_events_error,
        Some(RegisterEventsError::Unknown)
    );
    let contexts: Vec<(u32, Context)> = node
        .state(0, 25.0)
        .processes
        .iter()
        .map(|p| (p.pid, p.context))
        .collect();
    assert_eq!(contexts, [(10, Context::Compute), (11, Context::Mps)]);
    assert!(!node.event_wait_fails(0, 49.9));
    assert!(node.event_wait_fails(0, 52.0));
    assert!(!node.event_wait_fails(0, 55.0));
    assert!(node.event_wait_fails(0, 152.0), "every repetition");
    let events = node.events_between(1, 0.0, 100.0, |k| k.driver_event().is_some());
    assert_eq!(
        events,
        [
            (60.0, EventKind::EccDoubleBit, 0),
            (80.0, EventKind::Xid, 79)
        ]
    );
    assert_eq!(node.xids_between(1, 0.0, 100.0), [(80.0, 79)]);
}

/// Issue 15: the shipped MIG scenario, MIG instances in the model, and switching MIG mode.
#[test]
fn issue_15_mig_instances_and_mode_switches() {
    let text = include_str!("../scenarios/mig.toml");
    let s = Scenario::parse(text, "mig.toml").unwrap();
    let node = SimulatedNode::new(s);
    assert!(node.mig_on(0, 10.0));
    assert_eq!(node.scenario().gpus[0].mig_instance_ids(), [1, 2, 3]);
    let busy = node.mig_instance_state(0, 1, 10.0).unwrap();
    assert_eq!(busy.memory_used_bytes, 30000 << 20);
    assert_eq!(busy.memory_total_bytes, 40 << 30);
    assert!(busy.pipes.sm_active.unwrap() > 0.8);
    let unused = node.mig_instance_state(0, 3, 10.0).unwrap();
    assert_eq!(
        (unused.memory_used_bytes, unused.pipes.sm_active),
        (0, Some(0.0))
    );
    assert!(node.mig_instance_state(0, 4, 10.0).is_none());
    // Processes carry their instance; the board's power is the jobs' together, constant.
    let st = node.state(0, 10.0);
    let mut gi: Vec<_> = st
        .processes
        .iter()
        .map(|p| (p.pid, p.gpu_instance))
        .collect();
    gi.sort();
    assert_eq!(gi, [(61001, Some(1)), (61002, Some(2))]);
    assert!((st.power_w - 450.0).abs() < 1e-9, "{}", st.power_w);
    // An instance's GPM integral is its jobs' activity over time.
    let a = node
        .mig_pipe_seconds(0, 1, 100.0)
        .minus(node.mig_pipe_seconds(0, 1, 0.0));
    assert!((a.mean_over(100.0).sm_active.unwrap() - busy.pipes.sm_active.unwrap()).abs() < 1e-9);

    let switching = r#"
name = "s"
duration_s = 100
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu.mig_instance]]
profile = "4g.40gb"
[[job]]
name = "j"
pid = 5
gpus = [0]
gpu_instance = 1
start_s = 40
[[job.phase]]
seconds = 10
utilization = 1.0
power_w = 300
memory_mib = 100
[[event]]
at_s = 30
gpu = 0
kind = "mig_enable"
[[event]]
at_s = 60
gpu = 0
kind = "mig_disable"
"#;
    let node = SimulatedNode::new(Scenario::parse(switching, "s").unwrap());
    assert!(!node.mig_on(0, 29.0) && node.mig_on(0, 30.0) && !node.mig_on(0, 60.0));
    assert_eq!(node.state(0, 45.0).processes[0].gpu_instance, Some(1));

    for (bad, problem) in [
        (
            switching.replace("4g.40gb", "4 slices"),
            "is not a MIG profile name",
        ),
        (
            switching.replace(
                "profile = \"4g.40gb\"",
                "profile = \"4g.40gb\"\n[[gpu.mig_instance]]\nprofile = \"4g.40gb\"",
            ),
            "the instances hold 8 slices",
        ),
        (
            switching.replace("gpu_instance = 1", "gpu_instance = 9"),
            "GPU 0 has no MIG instance with gpu_instance_id 9",
        ),
    ] {
        let err = Scenario::parse(&bad, "s").unwrap_err().to_string();
        assert!(err.contains(problem), "{err}");
    }
}

/// Issue 15: GPU instances created and destroyed while the GPU stays in MIG mode.
#[test]
fn issue_15_mig_instances_come_and_go() {
    let text = r#"
name = "r"
duration_s = 100
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
mig = true
[[gpu.mig_instance]]
profile = "4g.40gb"
destroyed_at_s = 50
[[gpu.mig_instance]]
profile = "4g.40gb"
created_at_s = 50
"#;
    let node = SimulatedNode::new(Scenario::parse(text, "r").unwrap());
    assert!(node.mig_instance_exists(0, 0, 49.0) && !node.mig_instance_exists(0, 0, 50.0));
    assert!(!node.mig_instance_exists(0, 1, 49.0) && node.mig_instance_exists(0, 1, 50.0));
    // Both at once would hold 8 of 7 slices.
    let overlap = text.replace("created_at_s = 50", "created_at_s = 40");
    let err = Scenario::parse(&overlap, "r").unwrap_err().to_string();
    assert!(err.contains("the instances hold 8 slices"), "{err}");
    let backwards = text.replace(
        "created_at_s = 50",
        "created_at_s = 50\ndestroyed_at_s = 20",
    );
    let err = Scenario::parse(&backwards, "r").unwrap_err().to_string();
    assert!(err.contains("created_at_s"), "{err}");
}
