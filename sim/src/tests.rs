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

fn node() -> Node {
    Node::new(Scenario::parse(TWO_GPUS, "test").unwrap())
}

/// Midpoint-rule integral of the instantaneous power, for comparison with the closed form.
fn numeric_energy(node: &Node, gpu: u32, t0: f64, t1: f64) -> f64 {
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
    let n = Node::new(s);
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
            TWO_GPUS.replace("memory_total_mib = 81559", "memory_total = 1"),
            "unknown field `memory_total`",
        ),
    ];
    for (text, want) in cases {
        let err = Scenario::parse(&text, "case.toml").unwrap_err().to_string();
        assert!(err.contains("case.toml"), "{err}");
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
}
