//! What issue 14 taught the fake library to answer like the real one, through the real
//! `nvml-wrapper`: power as the one-second average and the instant value (field values, and
//! the legacy call by product); the violation-time counters (field values, and the deprecated
//! `nvmlDeviceGetViolationStatus`); the utilization sample buffer; the CUDA 13 replacements of
//! deprecated calls.
//!
//! One process, one library state: the scenario below is loaded once (see [`fixture`]) with
//! `GPUCOST_FAKE_NVML_START_UNIX` set, so the tests know the scenario clock. It runs at 10
//! scenario seconds per wall second, without ripple.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gpucost_sim::{Scenario, SimulatedNode};
use nvml_wrapper::enum_wrappers::device::{PerformancePolicy, Sampling};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::field_id::{
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN, NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION,
    NVML_FI_DEV_PERF_POLICY_POWER, NVML_FI_DEV_PERF_POLICY_RELIABILITY, NVML_FI_DEV_POWER_AVERAGE,
    NVML_FI_DEV_POWER_INSTANT,
};

use common::{fake_lib, unix_now, SCENARIO_ENV, START_ENV};

/// GPU 0: an H100 (a one-second power average, by product) whose job draws 300 W for 20 s,
///        then its 700 W limit.
/// GPU 1: an A100 (GA100: instant power only) with a job of the same shape, 200 W then 400 W.
/// GPU 2: an idle H100 whose driver has no violation counters in field values, only the
///        deprecated call.
/// GPU 3: an idle H100 with no violation counters at all.
/// GPU 4: an H100 sampling utilization every 0.2 s (wall) whose job is busy for one period and
///        idle for the next, over and over (phases appended by [`scenario`]); it keeps no
///        utilization samples on GPU 2.
const SCENARIO: &str = r#"
name = "measurements"
duration_s = 3600
speed = 10
ripple = 0.0

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
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
violation_fields = false
utilization_samples = false

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
violation_fields = false
violation_status = false

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
utilization_period_s = 0.2

[[job]]
name = "step"
pid = 100
gpus = [0]
[[job.phase]]
seconds = 20
utilization = 0.5
power_w = 300
memory_mib = 1000
[[job.phase]]
seconds = 3580
utilization = 1.0
power_w = 700
memory_mib = 1000

[[job]]
name = "step-a100"
pid = 101
gpus = [1]
[[job.phase]]
seconds = 20
utilization = 0.5
power_w = 200
memory_mib = 1000
[[job.phase]]
seconds = 3580
utilization = 1.0
power_w = 400
memory_mib = 1000
"#;

const SPEED: f64 = 10.0;

/// The scenario, with GPU 4's bursty job: 2 scenario seconds (one 0.2 s period of wall time)
/// busy, 2 idle.
fn scenario() -> String {
    let mut text = SCENARIO.to_string();
    text.push_str("\n[[job]]\nname = \"bursty\"\npid = 104\ngpus = [4]\n");
    for _ in 0..900 {
        for utilization in [1.0, 0.0] {
            text.push_str(&format!(
                "[[job.phase]]\nseconds = 2\nutilization = {utilization}\npower_w = 400\nmemory_mib = 1000\n"
            ));
        }
    }
    text
}

struct Fixture {
    nvml: Nvml,
    node: SimulatedNode,
    /// Unix time of scenario time 0.
    start_unix: f64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Scenario time now, on the library's clock.
    fn now(&self) -> f64 {
        (unix_now() - self.start_unix) * SPEED
    }

    /// Sleeps until scenario time `t`.
    fn wait_until(&self, t: f64) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while self.now() < t {
            assert!(Instant::now() < give_up, "the clock never reached {t}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn device(&self, index: u32) -> Device<'_> {
        self.nvml.device_by_index(index).expect("device_by_index")
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("measurements.toml");
        std::fs::write(&path, scenario()).expect("write scenario");
        let start_unix = unix_now();
        // Only this function sets the environment, once, before the library reads it.
        std::env::set_var(SCENARIO_ENV, &path);
        std::env::set_var(START_ENV, format!("{start_unix:.6}"));
        let nvml = Nvml::builder()
            .lib_path(fake_lib().as_os_str())
            .init()
            .expect("init the fake NVML");
        let node =
            SimulatedNode::new(Scenario::load(path.to_str().unwrap()).expect("load scenario"));
        Fixture {
            nvml,
            node,
            start_unix,
            _dir: dir,
        }
    })
}

/// The values of some fields, in milliwatts or nanoseconds.
fn fields(d: &Device<'_>, ids: &[u32]) -> Vec<Result<u64, NvmlError>> {
    let ids: Vec<FieldId> = ids.iter().map(|i| FieldId(*i)).collect();
    d.field_values_for(&ids)
        .expect("the call answers")
        .into_iter()
        .map(|v| {
            v.and_then(|s| s.value).map(|v| match v {
                SampleValue::U32(x) => u64::from(x),
                SampleValue::U64(x) => x,
                other => panic!("unexpected value type {other:?}"),
            })
        })
        .collect()
}

/// Issue 14, item 11: the one-second average and the instant value, apart. Five scenario
/// seconds after a step from 300 W to 700 W at speed 10, the last wall second holds five
/// scenario seconds of each: the average is 500 W, the instant 700 W. An A100 (GA100) has no
/// average, and its legacy call answers the instant value (nvml.h:6538-6540).
#[test]
fn issue_14_power_average_and_instant() {
    let f = fixture();
    f.wait_until(25.0);
    let h100 = f.device(0);
    let (t0, v, t1) = (
        f.now(),
        fields(
            &h100,
            &[NVML_FI_DEV_POWER_AVERAGE, NVML_FI_DEV_POWER_INSTANT],
        ),
        f.now(),
    );
    let average = *v[0].as_ref().unwrap() as f64 / 1000.0;
    let want = |t: f64| f.node.power_average_w(0, t);
    assert!(
        average >= want(t0).min(want(t1)) - 1.0 && average <= want(t0).max(want(t1)) + 1.0,
        "average {average} W, model {} .. {} W",
        want(t0),
        want(t1)
    );
    if f.now() < 29.0 {
        assert!((400.0..=650.0).contains(&average), "average {average} W");
    }
    assert_eq!(*v[1].as_ref().unwrap(), 700_000);
    // The legacy call answers the average on this product.
    let legacy = h100.power_usage().unwrap() as f64 / 1000.0;
    assert!(legacy < 700.0 || f.now() >= 30.0, "legacy {legacy} W");

    let a100 = f.device(1);
    let v = fields(
        &a100,
        &[NVML_FI_DEV_POWER_AVERAGE, NVML_FI_DEV_POWER_INSTANT],
    );
    assert!(matches!(v[0], Err(NvmlError::NotSupported)), "{v:?}");
    assert_eq!(*v[1].as_ref().unwrap(), 400_000);
    assert_eq!(a100.power_usage().unwrap(), 400_000);
    // A field this library does not answer says so on its own; the others are read.
    let v = fields(&a100, &[9999, NVML_FI_DEV_POWER_INSTANT]);
    assert!(matches!(v[0], Err(NvmlError::NotSupported)));
    assert!(v[1].is_ok());
}

/// Issue 14, item 9: the violation-time counters, in nanoseconds of wall time. GPU 0 has been at
/// its power cap since scenario time 20 (2 wall seconds in), and never idle; the idle GPUs have
/// been held at low clocks for low utilization all along. Where the field values do not answer,
/// the deprecated call does, and where neither does, both say so.
#[test]
fn issue_14_violation_counters() {
    let f = fixture();
    f.wait_until(25.0);
    let wall = |t: f64| t / SPEED * 1e9;
    let h100 = f.device(0);
    let ids = [
        NVML_FI_DEV_PERF_POLICY_POWER,
        NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION,
        NVML_FI_DEV_PERF_POLICY_RELIABILITY,
        NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN,
        NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN,
    ];
    let (t0, v, t1) = (f.now(), fields(&h100, &ids), f.now());
    let power = *v[0].as_ref().unwrap() as f64;
    assert!(
        power >= wall(t0 - 20.0) - 1e6 && power <= wall(t1 - 20.0) + 1e6,
        "power cap {power} ns at scenario {t0}..{t1}"
    );
    for (i, v) in v.iter().enumerate().skip(1) {
        assert_eq!(*v.as_ref().unwrap(), 0, "field {}", ids[i]);
    }
    // The deprecated call counts the same.
    let (t0, status, t1) = (
        f.now(),
        h100.violation_status(PerformancePolicy::Power).unwrap(),
        f.now(),
    );
    let ns = status.violation_time as f64;
    assert!(ns >= wall(t0 - 20.0) - 1e6 && ns <= wall(t1 - 20.0) + 1e6);
    let now_us = unix_now() * 1e6;
    assert!((status.reference_time as f64 - now_us).abs() < 1e6);

    let status_only = f.device(2);
    let v = fields(&status_only, &ids);
    assert!(
        v.iter().all(|v| matches!(v, Err(NvmlError::NotSupported))),
        "{v:?}"
    );
    let (t0, status, t1) = (
        f.now(),
        status_only
            .violation_status(PerformancePolicy::LowUtilization)
            .unwrap(),
        f.now(),
    );
    let ns = status.violation_time as f64;
    assert!(
        ns >= wall(t0) - 1e6 && ns <= wall(t1) + 1e6,
        "low utilization {ns} ns"
    );
    assert_eq!(
        status_only
            .violation_status(PerformancePolicy::Thermal)
            .unwrap()
            .violation_time,
        0
    );
    assert!(matches!(
        status_only.violation_status(PerformancePolicy::TotalBaseClocks),
        Err(NvmlError::NotSupported)
    ));

    let none = f.device(3);
    assert!(fields(&none, &ids)
        .iter()
        .all(|v| matches!(v, Err(NvmlError::NotSupported))));
    assert!(matches!(
        none.violation_status(PerformancePolicy::LowUtilization),
        Err(NvmlError::NotSupported)
    ));
}

/// Issue 14, item 10: the driver's utilization buffer. One sample per 0.2 s period, each the
/// share of its period a kernel ran (0% for a period the job's process held the GPU without
/// running a kernel); none while nothing is on the GPU; microseconds on a clock that is not the
/// unix epoch; only samples newer than the last seen; `NOT_FOUND` when there is none; and
/// `nvmlDeviceGetUtilizationRates` says only what the newest period was.
#[test]
fn issue_14_utilization_samples() {
    let f = fixture();
    f.wait_until(30.0);
    let bursty = f.device(4);
    let samples = bursty.samples(Sampling::GpuUtilization, None).unwrap();
    assert!(samples.len() >= 12, "{} samples", samples.len());
    let values: Vec<SampleValue> = samples.iter().map(|s| s.value.clone()).collect();
    for w in values.windows(2) {
        assert!(
            matches!(
                (&w[0], &w[1]),
                (SampleValue::U32(100), SampleValue::U32(0))
                    | (SampleValue::U32(0), SampleValue::U32(100))
            ),
            "busy and idle periods alternate: {values:?}"
        );
    }
    let gaps: Vec<u64> = samples
        .windows(2)
        .map(|w| w[1].timestamp - w[0].timestamp)
        .collect();
    assert!(
        gaps.iter().all(|g| *g == 200_000),
        "one per 0.2 s period: {gaps:?}"
    );
    let newest = samples.last().unwrap().timestamp;
    let unix_us = unix_now() * 1e6;
    assert!(
        (newest as f64 - unix_us).abs() > 1e12,
        "a clock of its own, not the unix epoch: {newest}"
    );
    // Only newer samples; none yet right after the newest.
    let again = bursty.samples(Sampling::GpuUtilization, newest);
    match again {
        Err(NvmlError::NotFound) => {}
        Ok(newer) => assert!(newer.iter().all(|s| s.timestamp > newest)),
        Err(e) => panic!("{e}"),
    }
    let older = bursty
        .samples(Sampling::GpuUtilization, samples[2].timestamp)
        .unwrap();
    assert_eq!(older[0].timestamp, samples[3].timestamp);
    // The last period alone: all or nothing.
    let rates = bursty.utilization_rates().unwrap().gpu;
    assert!(rates == 0 || rates == 100, "{rates}");

    // An idle GPU has no samples; GPU 2 keeps none at all.
    assert!(matches!(
        f.device(3).samples(Sampling::GpuUtilization, None),
        Err(NvmlError::NotFound)
    ));
    assert_eq!(f.device(3).utilization_rates().unwrap().gpu, 0);
    assert!(matches!(
        f.device(2).samples(Sampling::GpuUtilization, None),
        Err(NvmlError::NotSupported)
    ));
    // The busy H100: every period sampled.
    let busy = f.device(0).samples(Sampling::GpuUtilization, None).unwrap();
    assert!(busy
        .windows(2)
        .all(|w| (166_666..=166_667).contains(&(w[1].timestamp - w[0].timestamp))));
}

/// The replacements nvml.h names for calls it deprecates in CUDA 13 answer as the old calls do:
/// `nvmlDeviceGetTemperatureV` (a versioned struct) and `nvmlDeviceGetCurrentClocksEventReasons`.
#[test]
fn replacements_of_deprecated_calls() {
    use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
    use nvml_wrapper_sys::bindings::nvmlTemperature_t;
    let f = fixture();
    let d = f.device(0);
    let lib = f.nvml.lib();
    let call = lib.nvmlDeviceGetTemperatureV.as_ref().expect("exported");
    let v1 = std::mem::size_of::<nvmlTemperature_t>() as u32 | (1 << 24);
    let mut t = nvmlTemperature_t {
        version: v1,
        sensorType: 0,
        temperature: -1,
    };
    // SAFETY: a handle of this library and a valid struct to fill.
    assert_eq!(unsafe { call(d.handle(), &mut t) }, 0);
    let legacy = d.temperature(TemperatureSensor::Gpu).unwrap();
    assert!(
        (i64::from(t.temperature) - i64::from(legacy)).abs() <= 1,
        "{t:?} vs {legacy}"
    );
    t.version = 1;
    // SAFETY: as above.
    assert_eq!(unsafe { call(d.handle(), &mut t) }, 25, "version mismatch");
    let events = lib
        .nvmlDeviceGetCurrentClocksEventReasons
        .as_ref()
        .expect("exported");
    let mut bits = 0u64;
    // SAFETY: as above.
    assert_eq!(unsafe { events(d.handle(), &mut bits) }, 0);
    assert_eq!(bits & !0x1ff, 0);
}
