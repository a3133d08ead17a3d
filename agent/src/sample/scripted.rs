//! A backend whose GPUs say what a test tells them to, for unit tests of the sampler and the
//! node thread in virtual time. The test holds a [`Script`] (shared) and changes it between
//! ticks: power and utilization, processes, a GPU that falls off the bus, a library that is not
//! there yet, a read that hangs (it moves the test's clock on), Xid events.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gpucost_core::clock::ManualClock;
use gpucost_core::reading::{GpuStatic, ProcessUse, Reading, SampleError, Source};

use super::{Backend, BackendFactory};

/// One scripted GPU.
#[derive(Debug, Clone)]
pub struct ScriptGpu {
    pub info: GpuStatic,
    pub lost: bool,
    /// The energy counter (millijoules); [`Script::run`] advances it by power x time.
    pub energy_mj: u64,
    pub power_w: f64,
    /// The enforced power limit; `None` where the GPU does not report one.
    pub power_limit_w: Option<f64>,
    pub utilization_pct: u32,
    pub processes: Vec<ProcessUse>,
    /// NVML's clock-event (throttle) reason bits.
    pub clock_event_reasons: u64,
}

/// What the scripted GPUs answer.
#[derive(Debug, Default)]
pub struct Script {
    /// `open` fails this many more times (no library yet).
    pub failing_opens: u32,
    pub opens: u32,
    pub gpus: Vec<ScriptGpu>,
    /// Each `read` takes this long (the clock moves on by it).
    pub read_takes: Duration,
    /// Xids to report at the next `take_xids`, as (GPU index, Xid).
    pub xids: Vec<(u32, u32)>,
}

impl Script {
    /// `n` idle H100s with UUIDs `GPU-0`, `GPU-1`, ...
    pub fn h100s(n: u32) -> Self {
        Script {
            gpus: (0..n)
                .map(|i| ScriptGpu {
                    info: GpuStatic {
                        index: i,
                        uuid: format!("GPU-{i}"),
                        model: "NVIDIA H100 80GB HBM3".into(),
                    },
                    lost: false,
                    energy_mj: 1_000_000,
                    power_w: 100.0,
                    power_limit_w: None,
                    utilization_pct: 0,
                    processes: Vec::new(),
                    clock_event_reasons: 0,
                })
                .collect(),
            ..Script::default()
        }
    }

    /// Time passes: each GPU's energy counter grows by its power over `d`.
    pub fn run(&mut self, d: Duration) {
        for g in &mut self.gpus {
            g.energy_mj += (g.power_w * d.as_secs_f64() * 1000.0).round() as u64;
        }
    }
}

/// The script, shared between a test and the backends it opens.
#[derive(Clone)]
pub struct Scripted {
    script: Arc<Mutex<Script>>,
    clock: Arc<ManualClock>,
}

impl Scripted {
    pub fn new(script: Script, clock: Arc<ManualClock>) -> Self {
        Scripted {
            script: Arc::new(Mutex::new(script)),
            clock,
        }
    }

    pub fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time passes on the clock and in the GPUs' energy counters.
    pub fn advance(&self, d: Duration) {
        self.script().run(d);
        self.clock.advance(d);
    }
}

impl BackendFactory for Scripted {
    fn source(&self) -> Source {
        Source::Nvml
    }
    fn library(&self) -> &'static str {
        "the scripted GPU library"
    }
    fn unavailable_hint(&self) -> String {
        "scripted".into()
    }
    fn open(&mut self) -> Result<Box<dyn Backend>, SampleError> {
        let mut s = self.script();
        s.opens += 1;
        if s.failing_opens > 0 {
            s.failing_opens -= 1;
            return Err(SampleError::Unavailable("not loaded yet (scripted)".into()));
        }
        drop(s);
        Ok(Box::new(self.clone()))
    }
}

impl Backend for Scripted {
    fn source(&self) -> Source {
        Source::Nvml
    }
    fn driver_version(&self) -> Option<String> {
        Some("580.00 (scripted)".into())
    }
    fn gpus(&mut self) -> Result<Vec<GpuStatic>, SampleError> {
        Ok(self.script().gpus.iter().map(|g| g.info.clone()).collect())
    }
    fn read(&mut self, index: u32, with_processes: bool) -> Result<Reading, SampleError> {
        let takes = self.script().read_takes;
        if !takes.is_zero() {
            self.advance(takes);
        }
        let s = self.script();
        let g = s
            .gpus
            .iter()
            .find(|g| g.info.index == index)
            .ok_or_else(|| SampleError::Failed(format!("no GPU {index}")))?;
        if g.lost {
            return Err(SampleError::GpuLost("scripted".into()));
        }
        Ok(Reading {
            energy_mj: Some(g.energy_mj),
            power_average_mw: Some((g.power_w * 1000.0) as u32),
            power_limit_mw: g.power_limit_w.map(|w| (w * 1000.0) as u32),
            utilization_pct: Some(f64::from(g.utilization_pct)),
            processes: with_processes.then(|| g.processes.clone()),
            clock_event_reasons: Some(g.clock_event_reasons),
            ..Reading::default()
        })
    }
    fn take_xids(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.script().xids)
    }
}
