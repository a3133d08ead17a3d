//! GPM pipe metrics and Xid events of the fake library, through the real `nvml-wrapper`.
//!
//! One process, one library state: the scenario below is loaded once (see [`fixture`]) with
//! `GPUCOST_FAKE_NVML_START_UNIX` set, so the tests know the scenario clock. It runs at 100
//! scenario seconds per wall second and repeats every 60 scenario seconds (0.6 s of wall time),
//! so a test sees whole timelines go by.

mod common;

use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gpucost_sim::{Pipes, Scenario, SimulatedNode};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::{Device, EventSet, Nvml};
use nvml_wrapper_sys::bindings::{nvmlDevice_t, nvmlGpmMetricsGet_t, nvmlGpmSupport_t};

use common::{fake_lib, unix_now, SCENARIO_ENV, START_ENV};

/// GPU 0: an H100 whose job changes precision every 5 s for 35 s (a second job shares it from
///        2 s to 22 s), then idles; Xid 13 and Xid 31 at 10 s, Xid 94 at 55 s.
/// GPU 1: an A100 (no GPM, by its name) running bf16; no Xid.
/// GPU 2: an H100 with `gpm = false` running bf16; Xid 48 at 20 s.
/// GPU 3: an H100 with GPM, lost from 40 s to 50 s with Xid 79 at 40 s.
/// No Xid falls in [0, 10) or [25, 35): the tests register and stop there.
const SCENARIO: &str = r#"
name = "gpm-and-events"
duration_s = 60
repeat = true
speed = 100
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
gpm = false

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70

[[job]]
name = "mixed"
pid = 100
gpus = [0]
[[job.phase]]
seconds = 5
utilization = 0.9
power_w = 600
memory_mib = 1000
precision = "bf16"
[[job.phase]]
seconds = 5
utilization = 0.5
power_w = 400
memory_mib = 1000
precision = "fp32"
[[job.phase]]
seconds = 5
utilization = 0.0
power_w = 80
memory_mib = 1000
precision = "idle"
[[job.phase]]
seconds = 5
utilization = 0.8
power_w = 500
memory_mib = 1000
precision = "int8"
[[job.phase]]
seconds = 5
utilization = 0.7
power_w = 500
memory_mib = 1000
precision = "fp64"
[[job.phase]]
seconds = 5
utilization = 1.0
power_w = 650
memory_mib = 1000
precision = "tf32"
[[job.phase]]
seconds = 5
utilization = 0.6
power_w = 500
memory_mib = 1000
precision = "fp8"
dram_active = 0.9

[[job]]
name = "shared"
pid = 101
gpus = [0, 3]
start_s = 2
[[job.phase]]
seconds = 20
utilization = 0.5
power_w = 400
memory_mib = 1000
precision = "bf16"

[[job]]
name = "other"
pid = 102
gpus = [1, 2]
[[job.phase]]
seconds = 60
utilization = 0.9
power_w = 350
memory_mib = 1000
precision = "bf16"

[[event]]
at_s = 10
gpu = 0
kind = "xid"
xid = 13

[[event]]
at_s = 10
gpu = 0
kind = "xid"
xid = 31

[[event]]
at_s = 20
gpu = 2
kind = "xid"
xid = 48

[[event]]
at_s = 40
gpu = 3
kind = "gpu_lost"

[[event]]
at_s = 40
gpu = 3
kind = "xid"
xid = 79

[[event]]
at_s = 50
gpu = 3
kind = "gpu_recovered"

[[event]]
at_s = 55
gpu = 0
kind = "xid"
xid = 94
"#;

const SPEED: f64 = 100.0;
const DURATION: f64 = 60.0;

const NVML_SUCCESS: u32 = 0;
const NVML_ERROR_INVALID_ARGUMENT: u32 = 2;
const NVML_ERROR_ARGUMENT_VERSION_MISMATCH: u32 = 25;

/// Reads one pipe of the model (every pipe is known in this scenario).
type PipeOf = fn(&Pipes) -> f64;

/// The pipe metrics the library answers, with the model's pipe each one reports.
const METRICS: [(GpmMetricId, PipeOf); 12] = [
    (GpmMetricId::GraphicsUtil, |p| p.sm_active.unwrap()),
    (GpmMetricId::SmUtil, |p| p.sm_active.unwrap()),
    (GpmMetricId::SmOccupancy, |p| p.sm_occupancy.unwrap()),
    (GpmMetricId::IntegerUtil, |_| 0.0),
    (GpmMetricId::AnyTensorUtil, |p| p.tensor_active.unwrap()),
    (GpmMetricId::DfmaTensorUtil, |p| {
        p.dfma_tensor_active.unwrap()
    }),
    (GpmMetricId::HmmaTensorUtil, |p| p.hmma_active.unwrap()),
    (GpmMetricId::ImmaTensorUtil, |p| p.imma_active.unwrap()),
    (GpmMetricId::DramBwUtil, |p| p.dram_active.unwrap()),
    (GpmMetricId::Fp64Util, |p| p.fp64_active.unwrap()),
    (GpmMetricId::Fp32Util, |p| p.fp32_active.unwrap()),
    (GpmMetricId::Fp16Util, |p| p.fp16_active.unwrap()),
];

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

    /// Sleeps until the time within the current timeline is in `[from, to)`; returns the
    /// scenario time then.
    fn wait_for_phase(&self, from: f64, to: f64) -> f64 {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.now();
            if (from..to).contains(&(t % DURATION)) {
                return t;
            }
            assert!(
                Instant::now() < give_up,
                "the clock never reached [{from}, {to})"
            );
            std::thread::sleep(Duration::from_millis(2));
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
        let path = dir.path().join("gpm-and-events.toml");
        std::fs::write(&path, SCENARIO).expect("write scenario");
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

/// Which GPU a raw handle is (an event's device may be lost, so `index()` cannot be used).
fn index_of(f: &Fixture, handle: nvmlDevice_t) -> u32 {
    (0..4)
        // SAFETY: handles are only compared.
        .find(|i| unsafe { f.device(*i).handle() } == handle)
        .expect("an event names one of the scenario's GPUs")
}

#[test]
fn gpm_support_follows_the_scenario() {
    let f = fixture();
    f.wait_for_phase(0.0, 35.0);
    assert!(f.device(0).gpm_support().unwrap(), "H100");
    assert!(!f.device(1).gpm_support().unwrap(), "A100");
    assert!(!f.device(2).gpm_support().unwrap(), "H100 with gpm = false");
    assert!(f.device(3).gpm_support().unwrap(), "H100");
    for i in [1, 2] {
        assert!(
            matches!(f.device(i).gpm_sample(), Err(NvmlError::NotSupported)),
            "GPU {i}"
        );
    }
    assert!(matches!(
        f.device(0).gpm_streaming_enabled(),
        Err(NvmlError::NotSupported)
    ));
}

#[test]
fn gpm_metrics_are_the_model_average_between_samples() {
    let f = fixture();
    let d = f.device(0);
    let ids: Vec<GpmMetricId> = METRICS.iter().map(|m| m.0).collect();
    for gap_ms in [100, 170, 240, 300] {
        let (a0, s1, a1) = (f.now(), d.gpm_sample().unwrap(), f.now());
        std::thread::sleep(Duration::from_millis(gap_ms));
        let (b0, s2, b1) = (f.now(), d.gpm_sample().unwrap(), f.now());
        let results = gpm_metrics_get(&f.nvml, &s1, &s2, &ids).unwrap();
        assert_eq!(results.len(), METRICS.len());

        // The model's average between the middles of the two brackets. Moving either end of a
        // window of length w by d moves an average of ratios by at most 2d/w.
        let want = f.node.pipes_between(0, (a0 + a1) / 2.0, (b0 + b1) / 2.0);
        let slack = 100.0 * 2.0 * ((a1 - a0) + (b1 - b0)) / (b0 - a1) + 1e-6;
        for ((id, pipe), result) in METRICS.iter().zip(results) {
            let r = result.unwrap_or_else(|e| panic!("{id:?}: {e}"));
            assert_eq!(r.metric_id, *id);
            let expected = 100.0 * pipe(&want);
            assert!(
                (r.value - expected).abs() <= slack,
                "{id:?} over {gap_ms} ms: {} %, model {expected} % (slack {slack})",
                r.value
            );
            assert!((0.0..=100.0).contains(&r.value));
            assert_eq!(r.metric_info.unit, "%");
            assert!(!r.metric_info.short_name.is_empty());
        }
    }

    // One window with known content: the tf32 phase alone, [25, 30) of a timeline.
    let t = f.wait_for_phase(25.5, 27.0);
    let s1 = d.gpm_sample().unwrap();
    while f.now() < t + 1.5 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let s2 = d.gpm_sample().unwrap();
    if f.now() % DURATION < 30.0 {
        let r = gpm_metrics_get(
            &f.nvml,
            &s1,
            &s2,
            &[GpmMetricId::HmmaTensorUtil, GpmMetricId::Fp32Util],
        )
        .unwrap();
        assert!((r[0].as_ref().unwrap().value - 45.0).abs() < 1e-6);
        assert!((r[1].as_ref().unwrap().value - 15.0).abs() < 1e-6);
    }
}

#[test]
fn gpm_errors() {
    let f = fixture();
    let d = f.device(0);
    f.wait_for_phase(0.0, 30.0);
    let s1 = d.gpm_sample().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let s2 = d.gpm_sample().unwrap();
    let other = f.device(3).gpm_sample().unwrap();

    // Metrics not simulated answer NOT_SUPPORTED one by one.
    let r = gpm_metrics_get(
        &f.nvml,
        &s1,
        &s2,
        &[
            GpmMetricId::SmUtil,
            GpmMetricId::PcieTxPerSec,
            GpmMetricId::NvlinkL0RxPerSec,
        ],
    )
    .unwrap();
    assert!(r[0].is_ok());
    assert!(matches!(r[1], Err(NvmlError::NotSupported)));
    assert!(matches!(r[2], Err(NvmlError::NotSupported)));

    // Samples in the wrong order, or of two GPUs.
    let sm = [GpmMetricId::SmUtil];
    assert!(matches!(
        gpm_metrics_get(&f.nvml, &s2, &s1, &sm),
        Err(NvmlError::InvalidArg)
    ));
    assert!(matches!(
        gpm_metrics_get(&f.nvml, &s1, &other, &sm),
        Err(NvmlError::InvalidArg)
    ));
    // One sample twice: the activity at that moment.
    let same = gpm_metrics_get(&f.nvml, &s1, &s1, &sm).unwrap();
    assert!((0.0..=100.0).contains(&same[0].as_ref().unwrap().value));

    // Below the wrapper: struct versions, and freed samples.
    let lib = f.nvml.lib();
    // SAFETY: the structs are valid for their types, the handles come from the library.
    unsafe {
        let mut request: Box<nvmlGpmMetricsGet_t> = Box::new(mem::zeroed());
        request.version = 2;
        request.numMetrics = 1;
        request.sample1 = s1.handle();
        request.sample2 = s2.handle();
        request.metrics[0].metricId = 2;
        assert_eq!(
            lib.nvmlGpmMetricsGet(&mut *request),
            NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        request.version = 1;
        assert_eq!(lib.nvmlGpmMetricsGet(&mut *request), NVML_SUCCESS);
        assert_eq!(request.metrics[0].nvmlReturn, NVML_SUCCESS);
        request.numMetrics = 211;
        assert_eq!(
            lib.nvmlGpmMetricsGet(&mut *request),
            NVML_ERROR_INVALID_ARGUMENT
        );

        let mut support: nvmlGpmSupport_t = mem::zeroed();
        assert_eq!(
            lib.nvmlGpmQueryDeviceSupport(d.handle(), &mut support),
            NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        support.version = 1;
        assert_eq!(
            lib.nvmlGpmQueryDeviceSupport(d.handle(), &mut support),
            NVML_SUCCESS
        );
        assert_eq!(support.isSupportedDevice, 1);

        let mut raw = ptr::null_mut();
        assert_eq!(lib.nvmlGpmSampleAlloc(&mut raw), NVML_SUCCESS);
        assert!(!raw.is_null());
        // An allocated sample that was never filled cannot be used.
        request.numMetrics = 1;
        request.sample2 = raw;
        assert_eq!(
            lib.nvmlGpmMetricsGet(&mut *request),
            NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(lib.nvmlGpmSampleGet(d.handle(), raw), NVML_SUCCESS);
        assert_eq!(lib.nvmlGpmMetricsGet(&mut *request), NVML_SUCCESS);
        assert_eq!(lib.nvmlGpmSampleFree(raw), NVML_SUCCESS);
        assert_eq!(lib.nvmlGpmSampleFree(raw), NVML_ERROR_INVALID_ARGUMENT);
        assert_eq!(
            lib.nvmlGpmSampleGet(d.handle(), raw),
            NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(
            lib.nvmlGpmMetricsGet(&mut *request),
            NVML_ERROR_INVALID_ARGUMENT
        );
    }
}

#[test]
fn gpm_on_a_lost_gpu_answers_gpu_lost() {
    let f = fixture();
    let d = f.device(3);
    f.wait_for_phase(30.0, 38.0);
    let before = d.gpm_sample().unwrap();
    f.wait_for_phase(42.0, 48.0);
    assert!(matches!(d.gpm_sample(), Err(NvmlError::GpuLost)));
    assert!(matches!(d.gpm_support(), Err(NvmlError::GpuLost)));
    assert!(matches!(
        gpm_metrics_get(&f.nvml, &before, &before, &[GpmMetricId::SmUtil]),
        Err(NvmlError::GpuLost)
    ));
    f.wait_for_phase(51.0, 58.0);
    assert!(d.gpm_sample().is_ok(), "back after gpu_recovered");
}

#[test]
fn xid_events_arrive_once_each_with_their_gpu() {
    let f = fixture();
    let devices: Vec<Device<'_>> = (0..4).map(|i| f.device(i)).collect();

    // Register every GPU in a quiet stretch of the timeline (no Xid in [0, 10)).
    let r0 = f.wait_for_phase(1.0, 4.0);
    let mut set = f.nvml.create_event_set().unwrap();
    for d in &devices {
        assert!(d
            .supported_event_types()
            .unwrap()
            .contains(EventTypes::CRITICAL_XID_ERROR));
        set = d
            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
            .unwrap();
    }
    let r1 = f.now();
    assert!(r1 - r0 < 5.0, "registration took {} scenario s", r1 - r0);

    // The first wait blocks until the first Xid, 10 s into the timeline.
    let first = set.wait(5_000).unwrap();
    let timeline = (r0 / DURATION).floor() * DURATION;
    assert!(f.now() >= timeline + 10.0, "delivered before it happened");
    let mut got = vec![(
        index_of(f, unsafe { first.device.handle() }),
        first.event_data,
    )];
    assert_eq!(first.event_type, EventTypes::CRITICAL_XID_ERROR);

    // Another thread collects the rest over two more timelines, and stops in a quiet stretch.
    let stop = AtomicBool::new(false);
    let rest = std::thread::scope(|s| {
        let collector = s.spawn(|| collect(set, &stop));
        while f.now() < r1 + 2.0 * DURATION {
            std::thread::sleep(Duration::from_millis(10));
        }
        f.wait_for_phase(26.0, 29.0);
        stop.store(true, Ordering::SeqCst);
        collector.join().unwrap()
    });
    let end = f.now();
    assert!(
        (25.0..35.0).contains(&(end % DURATION)),
        "stopped at {end} s, outside the quiet stretch (a very slow machine?)"
    );
    let (rest, lost_answers) = rest;
    assert!(
        lost_answers > 0,
        "while GPU 3 was lost, waits answered GPU_IS_LOST"
    );
    got.extend(
        rest.into_iter()
            .map(|(handle, xid)| (index_of(f, handle as nvmlDevice_t), xid)),
    );

    // Exactly the model's Xids between registration and the end, in time order.
    let mut want: Vec<(f64, u32, u32)> = (0..4)
        .flat_map(|gpu| {
            f.node
                .xids_between(gpu, r1, end)
                .into_iter()
                .map(move |(t, xid)| (t, gpu, xid))
        })
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let want: Vec<(u32, Option<XidError>)> = want
        .into_iter()
        .map(|(_, gpu, xid)| (gpu, Some(XidError::Value(xid.into()))))
        .collect();
    assert!(want.len() >= 10, "{want:?}");
    assert_eq!(got, want);
    assert!(
        got.contains(&(3, Some(XidError::Value(79)))),
        "the lost GPU's Xid 79 is delivered"
    );
}

/// Waits for events until `stop`, then takes what is pending; as (raw device handle as an
/// address, Xid), and how often a wait answered GPU_IS_LOST (it does at once, every time, while a
/// registered GPU is lost and has nothing left to deliver; the caller has to slow down itself).
fn collect(set: EventSet<'_>, stop: &AtomicBool) -> (Vec<(usize, Option<XidError>)>, usize) {
    let mut got = Vec::new();
    let mut lost = 0;
    let mut push = |ev: nvml_wrapper::struct_wrappers::event::EventData<'_>| {
        assert_eq!(ev.event_type, EventTypes::CRITICAL_XID_ERROR);
        // SAFETY: the handle is only compared.
        got.push((unsafe { ev.device.handle() } as usize, ev.event_data));
    };
    while !stop.load(Ordering::SeqCst) {
        match set.wait(20) {
            Ok(ev) => push(ev),
            Err(NvmlError::Timeout) => {}
            Err(NvmlError::GpuLost) => {
                lost += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("wait: {e}"),
        }
    }
    loop {
        match set.wait(0) {
            Ok(ev) => push(ev),
            Err(NvmlError::Timeout) => break,
            Err(e) => panic!("wait: {e}"),
        }
    }
    set.release_events().unwrap();
    (got, lost)
}

#[test]
fn a_wait_without_events_times_out_and_blocks_nobody() {
    let f = fixture();
    let quiet = f.device(1);
    f.wait_for_phase(0.0, 35.0);
    // GPU 1 has no Xid; an empty set has nothing at all.
    let set = quiet
        .register_events(
            EventTypes::CRITICAL_XID_ERROR,
            f.nvml.create_event_set().unwrap(),
        )
        .unwrap();
    let empty = f.nvml.create_event_set().unwrap();
    let started = Instant::now();
    assert!(matches!(empty.wait(50), Err(NvmlError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(matches!(empty.wait(0), Err(NvmlError::Timeout)));

    // While one thread waits, another reads the GPUs without delay.
    let started = Instant::now();
    let slowest = std::thread::scope(|s| {
        let waiter = s.spawn(move || set.wait(700).map(|_| ()));
        let mut slowest = Duration::ZERO;
        while started.elapsed() < Duration::from_millis(400) {
            let t = Instant::now();
            f.device(0).power_usage().unwrap();
            let sample = f.device(0).gpm_sample().unwrap();
            drop(sample);
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(waiter.join().unwrap(), Err(NvmlError::Timeout)));
        slowest
    });
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(
        slowest < Duration::from_millis(100),
        "a read took {slowest:?} during a wait"
    );

    // Asking for an event type the GPUs do not raise: NOT_SUPPORTED (and the wrapper frees the
    // set it was given).
    let err = f
        .device(0)
        .register_events(
            EventTypes::PSTATE_CHANGE,
            f.nvml.create_event_set().unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err.error, NvmlError::NotSupported), "{err:?}");
}
