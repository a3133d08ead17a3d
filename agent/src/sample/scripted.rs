//! A backend whose GPUs say what a test tells them to, for unit tests of the sampler and the
//! node thread in virtual time. The test holds a [`Script`] (shared) and changes it between
//! ticks: power and utilization, processes, a GPU that falls off the bus, a library that is not
//! there yet or whose opening never returns until the test lets it ([`Scripted::hang_open`]), a
//! slow read (it moves the test's clock on), a read that never returns until the test lets it
//! ([`Scripted::hang`]), every field failing, a driver upgraded under the open
//! library ([`Scripted::upgrade_driver`]), Xid events.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use gpucost_core::clock::ManualClock;
use gpucost_core::reading::{
    Field, FieldError, GpuStatic, ProcessUse, Reading, SampleError, Source,
};

use super::{Backend, BackendFactory};

/// One scripted GPU.
#[derive(Debug, Clone)]
pub struct ScriptGpu {
    pub info: GpuStatic,
    pub lost: bool,
    /// Every read blocks while this is set (a wedged GPU): see [`Scripted::hang`].
    pub hung: bool,
    /// Every field of a read fails with this message (NVML answering `UNKNOWN` to each call).
    pub fields_fail: Option<String>,
    /// Reads started on this GPU.
    pub reads: u32,
    /// The energy counter (millijoules); [`Script::run`] advances it by power x time.
    pub energy_mj: u64,
    pub power_w: f64,
    /// The enforced power limit; `None` where the GPU does not report one.
    pub power_limit_w: Option<f64>,
    pub utilization_pct: u32,
    pub processes: Vec<ProcessUse>,
    /// NVML's clock-event (throttle) reason bits.
    pub clock_event_reasons: u64,
    pub sm_clock_mhz: Option<u32>,
    /// GPM pipe activity; `None`: the GPU has no GPM.
    pub pipes: Option<gpucost_core::reading::Pipes>,
}

/// What the scripted GPUs answer.
#[derive(Debug, Default)]
pub struct Script {
    /// `open` fails this many more times (no library yet).
    pub failing_opens: u32,
    /// `open` blocks while this is set (`nvmlInit` stuck on a wedged GPU): see
    /// [`Scripted::hang_open`].
    pub open_hung: bool,
    pub opens: u32,
    /// Backends opened and not yet dropped (NVML handles held).
    pub open_handles: u32,
    /// Backends opened up to this many opens answer every field with a version mismatch (the
    /// driver was upgraded under them); see [`Scripted::upgrade_driver`].
    pub outdated_up_to: Option<u32>,
    pub gpus: Vec<ScriptGpu>,
    /// Each `read` takes this long (the clock moves on by it).
    pub read_takes: Duration,
    /// Xids to report at the next `take_xids`, as (GPU index, Xid).
    pub xids: Vec<(u32, u32)>,
    /// Physical GPUs in MIG mode, not listed themselves: their MIG instances in `gpus` (with
    /// `info.mig` naming them as the parent) read their share of the board's counter and power.
    pub boards: Vec<ScriptGpu>,
    /// What the backend's `layout_changed` answers (a GPU switched MIG mode).
    pub layout_changed: bool,
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
                        mig: None,
                        compute_capability: None,
                        sm_count: None,
                    },
                    lost: false,
                    hung: false,
                    fields_fail: None,
                    reads: 0,
                    energy_mj: 1_000_000,
                    power_w: 100.0,
                    power_limit_w: None,
                    utilization_pct: 0,
                    processes: Vec::new(),
                    clock_event_reasons: 0,
                    sm_clock_mhz: None,
                    pipes: None,
                })
                .collect(),
            ..Script::default()
        }
    }

    /// Time passes: each GPU's energy counter grows by its power over `d`.
    pub fn run(&mut self, d: Duration) {
        for g in self.gpus.iter_mut().chain(&mut self.boards) {
            if g.info.mig.is_some() {
                continue;
            }
            g.energy_mj += (g.power_w * d.as_secs_f64() * 1000.0).round() as u64;
        }
    }
}

/// The script, shared between a test and the backends it opens.
#[derive(Clone)]
pub struct Scripted {
    shared: Arc<(Mutex<Script>, Condvar)>,
    clock: Arc<ManualClock>,
}

impl Scripted {
    pub fn new(script: Script, clock: Arc<ManualClock>) -> Self {
        Scripted {
            shared: Arc::new((Mutex::new(script), Condvar::new())),
            clock,
        }
    }

    pub fn script(&self) -> MutexGuard<'_, Script> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time passes on the clock and in the GPUs' energy counters.
    pub fn advance(&self, d: Duration) {
        self.script().run(d);
        self.clock.advance(d);
    }

    /// GPU `gpu`'s reads block from now on (`true`), as calls on a wedged GPU do, or the ones
    /// blocked return (`false`).
    pub fn hang(&self, gpu: usize, hung: bool) {
        self.script().gpus[gpu].hung = hung;
        self.shared.1.notify_all();
    }

    /// `open` blocks from now on (`true`), or the one blocked returns (`false`).
    pub fn hang_open(&self, hung: bool) {
        self.script().open_hung = hung;
        self.shared.1.notify_all();
    }

    /// The driver is upgraded under the backends open now: each of their reads answers every
    /// field with a version mismatch, until the library is opened again.
    pub fn upgrade_driver(&self) {
        let mut s = self.script();
        s.outdated_up_to = Some(s.opens);
    }
}

/// A backend the scripted factory opened: its generation (which open it was) and a count of the
/// handles held.
struct ScriptedBackend {
    script: Scripted,
    generation: u32,
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.script.script().open_handles -= 1;
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
        let (lock, hung) = &*self.shared;
        let mut s = hung
            .wait_while(lock.lock().unwrap_or_else(|e| e.into_inner()), |s| {
                s.open_hung
            })
            .unwrap_or_else(|e| e.into_inner());
        s.opens += 1;
        if s.failing_opens > 0 {
            s.failing_opens -= 1;
            return Err(SampleError::Unavailable("not loaded yet (scripted)".into()));
        }
        s.open_handles += 1;
        let generation = s.opens;
        drop(s);
        Ok(Box::new(ScriptedBackend {
            script: self.clone(),
            generation,
        }))
    }
}

impl Backend for ScriptedBackend {
    fn source(&self) -> Source {
        Source::Nvml
    }
    fn driver_version(&self) -> Option<String> {
        Some("580.00 (scripted)".into())
    }
    fn gpus(&mut self) -> Result<Vec<GpuStatic>, SampleError> {
        Ok(self
            .script
            .script()
            .gpus
            .iter()
            .map(|g| g.info.clone())
            .collect())
    }
    fn read(&self, index: u32, with_processes: bool) -> Result<Reading, SampleError> {
        let takes = {
            let mut s = self.script.script();
            if let Some(g) = s.gpus.iter_mut().find(|g| g.info.index == index) {
                g.reads += 1;
            }
            s.read_takes
        };
        if !takes.is_zero() {
            self.script.advance(takes);
        }
        let (lock, hung) = &*self.script.shared;
        let s = hung
            .wait_while(lock.lock().unwrap_or_else(|e| e.into_inner()), |s| {
                s.gpus.iter().any(|g| g.info.index == index && g.hung)
            })
            .unwrap_or_else(|e| e.into_inner());
        let g = s
            .gpus
            .iter()
            .find(|g| g.info.index == index)
            .ok_or_else(|| SampleError::Failed(format!("no GPU {index}")))?;
        if g.lost {
            return Err(SampleError::GpuLost("scripted".into()));
        }
        let outdated = s.outdated_up_to.is_some_and(|n| self.generation <= n);
        let fail = match (&g.fields_fail, outdated) {
            (Some(msg), _) => Some(msg.clone()),
            (None, true) => Some("RM has detected an NVML/RM version mismatch (scripted)".into()),
            (None, false) => None,
        };
        if let Some(msg) = fail {
            let mut fields = vec![Field::Energy, Field::Power, Field::Utilization];
            if with_processes {
                fields.push(Field::Processes);
            }
            return Ok(Reading {
                field_errors: fields
                    .into_iter()
                    .map(|f| (f, FieldError::Failed(msg.clone())))
                    .collect(),
                ..Reading::default()
            });
        }
        if let Some(m) = &g.info.mig {
            let board = s.boards.iter().find(|b| b.info.uuid == m.parent_uuid);
            return Ok(Reading {
                energy_mj: board.map(|b| m.share_of(b.energy_mj)),
                power_average_mw: board.map(|b| m.share_of((b.power_w * 1000.0) as u64) as u32),
                processes: with_processes.then(|| g.processes.clone()),
                ..Reading::default()
            });
        }
        Ok(Reading {
            energy_mj: Some(g.energy_mj),
            power_average_mw: Some((g.power_w * 1000.0) as u32),
            power_limit_mw: g.power_limit_w.map(|w| (w * 1000.0) as u32),
            utilization_pct: Some(f64::from(g.utilization_pct)),
            processes: with_processes.then(|| g.processes.clone()),
            clock_event_reasons: Some(g.clock_event_reasons),
            sm_clock_mhz: g.sm_clock_mhz,
            pipes: g.pipes,
            ..Reading::default()
        })
    }
    fn take_xids(&self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.script.script().xids)
    }
    fn layout_changed(&self) -> bool {
        self.script.script().layout_changed
    }
}
