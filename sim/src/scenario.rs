//! The scenario format: a TOML file that describes a simulated GPU node over time.
//!
//! The same file drives `gpucost agent --simulate FILE` and the fake `libnvidia-ml.so` used in
//! tests, so a scenario written for a demo is also a test fixture. The format is documented in
//! `sim/README.md`; `scenarios/demo.toml` is a worked example.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pipes::Pipes;
use crate::trace::Trace;

/// The built-in demo scenario, used by `--simulate demo`.
pub const DEMO: &str = include_str!("../scenarios/demo.toml");

/// Why a scenario could not be loaded. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("scenario {origin}: {what}: {problem}")]
    Invalid {
        origin: String,
        what: String,
        problem: String,
    },
}

/// A whole scenario, as written in the file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in logs and in `gpucost_gpu_info`-adjacent output.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Length of the timeline in scenario seconds. With `repeat = true` the timeline starts
    /// over after this long (jobs run again, events happen again, energy keeps counting up).
    pub duration_s: f64,
    #[serde(default)]
    pub repeat: bool,
    /// Scenario seconds per wall-clock second (10 makes a 10-minute scenario last one minute).
    /// Energy still accrues at the power shown per wall second, so counters and power agree.
    #[serde(default = "one")]
    pub speed: f64,
    #[serde(default = "default_driver")]
    pub driver_version: String,
    /// Amplitude of the deterministic ripple added to busy GPUs' power and utilization (0..0.2).
    #[serde(default = "default_ripple")]
    pub ripple: f64,
    /// Scenario time at which the driver is upgraded under a running client (fake NVML only):
    /// from then on a library initialised before answers `NVML_ERROR_LIB_RM_VERSION_MISMATCH`
    /// to every call until every init was shut down and the library is initialised again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_upgrade_at_s: Option<f64>,
    /// The fake library answers `NVML_ERROR_FUNCTION_NOT_FOUND` to the replacements nvml.h
    /// names for calls it deprecates in CUDA 13 (`nvmlDeviceGetCurrentClocksEventReasons`,
    /// `nvmlDeviceGetTemperatureV`), as a driver from before them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated_calls_only: bool,
    #[serde(default, rename = "gpu")]
    pub gpus: Vec<GpuSpec>,
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobSpec>,
    #[serde(default, rename = "event")]
    pub events: Vec<EventSpec>,
}

/// One GPU of the node: what it is and how it behaves when nothing runs on it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Product name as NVML reports it, e.g. "NVIDIA H100 80GB HBM3".
    pub model: String,
    /// Defaults to a stable made-up UUID derived from the GPU's index.
    pub uuid: Option<String>,
    pub memory_total_mib: u64,
    pub power_limit_w: f64,
    pub idle_power_w: f64,
    #[serde(default = "default_max_clock")]
    pub max_sm_clock_mhz: u32,
    #[serde(default = "default_idle_clock")]
    pub idle_sm_clock_mhz: u32,
    #[serde(default = "default_idle_temp")]
    pub idle_temperature_c: f64,
    /// Whether NVML's total-energy counter works on this GPU (false: NOT_SUPPORTED).
    #[serde(default = "yes")]
    pub energy_counter: bool,
    /// Whether the GPU reports power averaged over a second (`NVML_FI_DEV_POWER_AVERAGE`, and
    /// the legacy `nvmlDeviceGetPowerUsage` then answers that average) or only the instant
    /// value. Absent: by product in the fake library (Ampere except GA100, and newer: nvml.h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_average: Option<bool>,
    /// The driver's utilization sample period, in wall-clock seconds: "between 1 second and 1/6
    /// second, depending on the product" (nvml.h, `nvmlUtilization_t`). Default 1/6 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_period_s: Option<f64>,
    /// Whether the driver keeps utilization samples (`nvmlDeviceGetSamples` with
    /// `NVML_GPU_UTILIZATION_SAMPLES`); false: `NOT_SUPPORTED`, as on MIG-enabled GPUs (nvml.h).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub utilization_samples: bool,
    /// Whether `nvmlDeviceGetFieldValues` answers the violation-time counters
    /// (`NVML_FI_DEV_PERF_POLICY_*`, `NVML_FI_DEV_CLOCKS_EVENT_REASON_*`); false: a driver
    /// without them, `NOT_SUPPORTED`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub violation_fields: bool,
    /// Whether the deprecated `nvmlDeviceGetViolationStatus` answers; false: `NOT_SUPPORTED`
    /// (nvml.h: "This API will be removed in CUDA 14.0").
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub violation_status: bool,
    /// Value of the energy counter at the start of the timeline, in joules.
    #[serde(default)]
    pub initial_energy_j: f64,
    /// Whether the GPU supports GPM (pipe activity metrics). Absent: by model name, see
    /// [`GpuSpec::gpm_supported`].
    #[serde(default)]
    pub gpm: Option<bool>,
    /// Pipes whose GPM metric fails on this GPU (names as in `[gpu.trace.pipes]`): their
    /// activity is unknown, in the model and through the fake library (nvml.h gives each GPM
    /// metric its own return code, `nvmlGpmMetric_t.nvmlReturn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpm_unknown_pipes: Vec<String>,
    /// The fake library answers `NVML_ERROR_NO_PERMISSION` to GPM samples on this GPU, as NVML
    /// does to a non-root caller's counter queries where profiling is restricted to
    /// administrators (`NVreg_RestrictProfilingToAdminUsers=1`; gpuopenanalytics/pynvml#19).
    /// The simulated backend, which has no permissions, ignores it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpm_no_permission: bool,
    /// What `gpucost bench` would measure on this GPU, as a share of its datasheet peaks
    /// (0..1; the simulated node reports it as its benchmark). Default 0.92.
    #[serde(default = "default_bench_efficiency")]
    pub bench_efficiency: f64,
    /// Whether the simulated node reports a benchmark for this GPU at all (a recording of a GPU
    /// that was never benchmarked says false).
    #[serde(default = "yes")]
    pub benchmarked: bool,
    /// Recorded readings of a real GPU, replayed instead of the jobs' phases (see
    /// [`crate::Trace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// How this GPU's NVML driver answers where real drivers differ (`[gpu.nvml]`); only the
    /// fake NVML library reads it.
    #[serde(default, skip_serializing_if = "NvmlQuirks::is_default")]
    pub nvml: NvmlQuirks,
    /// Whether the GPU is in MIG mode at scenario time 0 (`mig_enable`/`mig_disable` events
    /// switch it while the timeline runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mig: bool,
    /// Compute slices the GPU has in MIG mode (7 on A100, H100 and H200; 4 on A30).
    #[serde(default = "default_mig_slices")]
    pub mig_slices: u32,
    /// The GPU instances that exist while the GPU is in MIG mode (`[[gpu.mig_instance]]`).
    #[serde(
        default,
        rename = "mig_instance",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mig_instances: Vec<MigInstanceSpec>,
}

/// A MIG GPU instance (with one compute instance spanning it) of a GPU in MIG mode.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MigInstanceSpec {
    /// The profile's name, `<slices>g.<memory>gb` (`3g.40gb`; a suffix such as `+me` is kept).
    pub profile: String,
    /// NVML's GPU instance id; default 1 + the instance's position in the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance_id: Option<u32>,
    /// Its `MIG-...` UUID; default derived from the GPU's index and the instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// When it is created (`nvidia-smi mig -cgi`), in `[0, duration_s)`; default: it exists
    /// whenever the GPU is in MIG mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_s: Option<f64>,
    /// When it is destroyed (`nvidia-smi mig -dgi`), after `created_at_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed_at_s: Option<f64>,
}

impl MigInstanceSpec {
    /// Compute slices and memory in GiB of a profile name `<N>g.<M>gb[+...]`, the names
    /// `nvidia-smi mig -lgip` lists.
    pub fn parse_profile(profile: &str) -> Option<(u32, u32)> {
        let (g, rest) = profile.split_once("g.")?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !rest[digits.len()..].starts_with("gb") {
            return None;
        }
        let slices = g.parse::<u32>().ok().filter(|s| *s > 0)?;
        Some((slices, digits.parse().ok()?))
    }
}

/// Driver behaviours of one GPU that the fake NVML library reproduces, each as a real driver
/// answers (`sim/README.md` names the source of each). The default is a current driver (R550)
/// answering as nvml.h documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NvmlQuirks {
    /// Bytes per entry the `nvmlDevice{Compute,Graphics,MPSCompute}RunningProcesses_v3` calls
    /// write: 24 (`nvmlProcessInfo_v2_t`, what nvml.h declares), 32 (`nvmlProcessInfo_v3_t`, as
    /// R535.54 drivers wrote without a version bump) or 16 (`nvmlProcessInfo_v1_t`, as reported
    /// for one driver).
    #[serde(default = "default_process_info_bytes")]
    pub process_info_v3_bytes: u32,
    /// Whether `nvmlDeviceGetRunningProcessDetailList` answers for this GPU (`false`:
    /// NOT_SUPPORTED). Absent: as nvml.h says, Hopper and newer (the models that have GPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_detail_list: Option<bool>,
    /// A per-process utilization sample is taken between a size query (a NULL buffer) and the
    /// read that follows it, so a buffer of exactly the size answered is too small.
    #[serde(default)]
    pub process_utilization_race: bool,
    /// The event types `nvmlDeviceGetSupportedEventTypes` reports.
    #[serde(default = "default_events")]
    pub events: Vec<DriverEventKind>,
    /// How `nvmlDeviceRegisterEvents` fails for this GPU, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_events_error: Option<RegisterEventsError>,
}

impl Default for NvmlQuirks {
    fn default() -> Self {
        NvmlQuirks {
            process_info_v3_bytes: default_process_info_bytes(),
            process_detail_list: None,
            process_utilization_race: false,
            events: default_events(),
            register_events_error: None,
        }
    }
}

impl NvmlQuirks {
    pub fn is_default(&self) -> bool {
        *self == NvmlQuirks::default()
    }
}

/// An NVML event type a GPU may support (`nvmlEventType*` in nvml.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverEventKind {
    /// `nvmlEventTypeXidCriticalError`.
    Xid,
    /// `nvmlEventTypeSingleBitEccError`.
    EccSingleBit,
    /// `nvmlEventTypeDoubleBitEccError`.
    EccDoubleBit,
    /// `nvmlEventTypeGpuUnavailableError`.
    GpuUnavailable,
}

/// How a registration for events fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterEventsError {
    /// NVML_ERROR_NOT_SUPPORTED: nothing is registered; the set can still be used.
    NotSupported,
    /// NVML_ERROR_UNKNOWN: the set is in an undefined state and must be freed.
    Unknown,
}

fn default_mig_slices() -> u32 {
    7
}

fn default_process_info_bytes() -> u32 {
    24
}

fn default_events() -> Vec<DriverEventKind> {
    vec![DriverEventKind::Xid]
}

fn default_bench_efficiency() -> f64 {
    0.92
}

/// Model-name parts of the GPUs that have GPM: Hopper and newer.
const GPM_MODELS: [&str; 5] = ["H100", "H200", "GH200", "B100", "B200"];

/// The shortest and longest utilization sample periods nvml.h gives (`nvmlUtilization_t`).
pub const UTILIZATION_PERIODS_S: (f64, f64) = (1.0 / 6.0, 1.0);

impl GpuSpec {
    /// The driver's utilization sample period in wall-clock seconds (default 1/6 s).
    pub fn utilization_period_s(&self) -> f64 {
        self.utilization_period_s.unwrap_or(UTILIZATION_PERIODS_S.0)
    }

    /// Whether the GPU supports GPM: the scenario's `gpm`, or else true for Hopper and newer
    /// (a model name containing H100, H200, GH200, B100 or B200).
    pub fn gpm_supported(&self) -> bool {
        self.gpm.unwrap_or_else(|| self.hopper_or_newer())
    }

    /// Whether `nvmlDeviceGetRunningProcessDetailList` answers: the scenario's
    /// `nvml.process_detail_list`, or else true for Hopper and newer (nvml.h: "For Hopper or
    /// newer fully supported devices").
    pub fn process_detail_list(&self) -> bool {
        self.nvml
            .process_detail_list
            .unwrap_or_else(|| self.hopper_or_newer())
    }

    fn hopper_or_newer(&self) -> bool {
        GPM_MODELS.iter().any(|m| self.model.contains(m))
    }

    /// The MIG instance with GPU instance id `gi`, with its position in the list.
    pub fn mig_instance(&self, gi: u32) -> Option<(usize, &MigInstanceSpec)> {
        self.mig_instances
            .iter()
            .enumerate()
            .find(|(k, m)| m.gpu_instance_id.unwrap_or(*k as u32 + 1) == gi)
    }

    /// The GPU instance ids of its MIG instances, in list order.
    pub fn mig_instance_ids(&self) -> Vec<u32> {
        self.mig_instances
            .iter()
            .enumerate()
            .map(|(k, m)| m.gpu_instance_id.unwrap_or(k as u32 + 1))
            .collect()
    }

    /// `pipes` with the pipes of `gpm_unknown_pipes` unknown.
    pub fn without_unknown_pipes(&self, mut pipes: Pipes) -> Pipes {
        for name in &self.gpm_unknown_pipes {
            if let Some(pipe) = pipe_mut(&mut pipes, name) {
                *pipe = None;
            }
        }
        pipes
    }
}

/// The pipe of `pipes` named as in `[gpu.trace.pipes]` (`tensor_active`, ...).
pub(crate) fn pipe_mut<'a>(pipes: &'a mut Pipes, name: &str) -> Option<&'a mut Option<f64>> {
    Some(match name {
        "sm_active" => &mut pipes.sm_active,
        "sm_occupancy" => &mut pipes.sm_occupancy,
        "tensor_active" => &mut pipes.tensor_active,
        "hmma_active" => &mut pipes.hmma_active,
        "imma_active" => &mut pipes.imma_active,
        "dfma_tensor_active" => &mut pipes.dfma_tensor_active,
        "fp16_active" => &mut pipes.fp16_active,
        "fp32_active" => &mut pipes.fp32_active,
        "fp64_active" => &mut pipes.fp64_active,
        "dram_active" => &mut pipes.dram_active,
        _ => return None,
    })
}

/// A job: one process (plus optional extra worker pids) that loads some GPUs in phases.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    /// The job id a scheduler would give it; read by attribution, not by the GPU model.
    pub id: Option<String>,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_uid")]
    pub uid: u32,
    pub pid: u32,
    #[serde(default)]
    pub worker_pids: Vec<u32>,
    #[serde(default)]
    pub command: String,
    /// Indices of the GPUs the job runs on.
    pub gpus: Vec<u32>,
    /// When the first phase starts, in scenario seconds.
    #[serde(default)]
    pub start_s: f64,
    /// Exit code when the last phase ends (non-zero: the run failed).
    #[serde(default)]
    pub exit_code: i32,
    /// The contexts the job's processes hold, which decide the NVML lists they appear in.
    #[serde(default, skip_serializing_if = "Context::is_compute")]
    pub context: Context,
    /// The MIG GPU instance (its `gpu_instance_id`) the job runs in on each of its GPUs, which
    /// must be in MIG mode while it runs; `None` for a whole GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance: Option<u32>,
    #[serde(rename = "phase")]
    pub phases: Vec<PhaseSpec>,
}

/// The GPU contexts a process holds, and so the NVML process lists that show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    /// A CUDA context: `nvmlDeviceGetComputeRunningProcesses`.
    #[default]
    Compute,
    /// A graphics context (OpenGL, Vulkan): `nvmlDeviceGetGraphicsRunningProcesses`.
    Graphics,
    /// Both (nvidia-smi's "C+G"): listed by both calls, each with the process's whole memory.
    ComputeGraphics,
    /// An MPS client: `nvmlDeviceGetMPSComputeRunningProcesses`.
    Mps,
}

impl Context {
    pub fn is_compute(&self) -> bool {
        *self == Context::Compute
    }

    /// Whether the compute list shows the process.
    pub fn compute(self) -> bool {
        matches!(self, Context::Compute | Context::ComputeGraphics)
    }

    /// Whether the graphics list shows the process.
    pub fn graphics(self) -> bool {
        matches!(self, Context::Graphics | Context::ComputeGraphics)
    }

    /// Whether the MPS list shows the process.
    pub fn mps(self) -> bool {
        self == Context::Mps
    }
}

/// A stretch of a job's life with a constant load on each of its GPUs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub seconds: f64,
    /// 0..1, the share of time a kernel was running (NVML's "GPU utilization").
    pub utilization: f64,
    /// Board power while this phase runs alone on the GPU, in watts.
    pub power_w: f64,
    /// GPU memory held by the job's process on each GPU.
    pub memory_mib: u64,
    /// Free-form tag ("bf16", "fp32", "idle", "dataloader-stall"). Known tags set the pipe
    /// activity (see [`PhaseSpec::pipes`] and `sim/README.md`).
    #[serde(default)]
    pub precision: Option<String>,
    /// Explicit pipe activity (0..1) on each of the job's GPUs, instead of the precision
    /// table's value for that pipe.
    #[serde(default)]
    pub sm_active: Option<f64>,
    #[serde(default)]
    pub tensor_active: Option<f64>,
    #[serde(default)]
    pub fp16_active: Option<f64>,
    #[serde(default)]
    pub fp32_active: Option<f64>,
    #[serde(default)]
    pub fp64_active: Option<f64>,
    #[serde(default)]
    pub dram_active: Option<f64>,
}

/// Something that happens to a GPU at a moment of the timeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub at_s: f64,
    pub gpu: u32,
    pub kind: EventKind,
    /// Xid code, for `kind = "xid"`.
    pub xid: Option<u32>,
    /// How long, for `kind = "hang"` and `kind = "event_wait_error"`.
    #[serde(default)]
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Every NVML call for the GPU answers GPU_IS_LOST until `gpu_recovered`.
    GpuLost,
    GpuRecovered,
    /// The energy counter starts again from zero (a driver reload does this).
    EnergyReset,
    /// An Xid error is logged by the driver for this GPU.
    Xid,
    /// Every NVML call for the GPU blocks until `seconds` after `at_s` (a driver stuck in a
    /// long operation); the fake library sleeps, the simulated backend does not.
    Hang,
    /// For `seconds` after `at_s`, a wait on an NVML event set in which this GPU is registered
    /// fails at once with NVML_ERROR_UNKNOWN (fake library only).
    EventWaitError,
    /// A corrected (single-bit) ECC error: an `nvmlEventTypeSingleBitEccError` event.
    EccSingleBit,
    /// An uncorrected (double-bit) ECC error: an `nvmlEventTypeDoubleBitEccError` event.
    EccDoubleBit,
    /// The GPU became unavailable: an `nvmlEventTypeGpuUnavailableError` event.
    GpuUnavailable,
    /// The GPU is switched into MIG mode (`nvidia-smi -i N -mig 1`, then its instances
    /// created): from now on its `[[gpu.mig_instance]]`s exist.
    MigEnable,
    /// The GPU is switched out of MIG mode: a whole GPU again.
    MigDisable,
}

impl EventKind {
    /// The NVML event type an event of this kind raises, if it raises one.
    pub fn driver_event(self) -> Option<DriverEventKind> {
        match self {
            EventKind::Xid => Some(DriverEventKind::Xid),
            EventKind::EccSingleBit => Some(DriverEventKind::EccSingleBit),
            EventKind::EccDoubleBit => Some(DriverEventKind::EccDoubleBit),
            EventKind::GpuUnavailable => Some(DriverEventKind::GpuUnavailable),
            _ => None,
        }
    }
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn default_driver() -> String {
    "550.90.07".to_string()
}
fn default_ripple() -> f64 {
    0.03
}
fn default_max_clock() -> u32 {
    1980
}
fn default_idle_clock() -> u32 {
    345
}
fn default_idle_temp() -> f64 {
    32.0
}
fn default_user() -> String {
    "root".to_string()
}
fn default_uid() -> u32 {
    0
}

impl Scenario {
    /// Parses and validates a scenario. `origin` names it in errors (a path, or "demo").
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        scenario.validate(origin)?;
        Ok(scenario)
    }

    /// Loads `demo` (the built-in scenario) or a scenario file.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if name_or_path == "demo" {
            return Self::parse(DEMO, "demo (built in)");
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Scenario seconds when the job's last phase ends (first run of the timeline).
    pub fn job_end_s(job: &JobSpec) -> f64 {
        job.start_s + job.phases.iter().map(|p| p.seconds).sum::<f64>()
    }

    fn validate(&self, origin: &str) -> Result<(), ScenarioError> {
        let bad = |what: String, problem: String| ScenarioError::Invalid {
            origin: origin.to_string(),
            what,
            problem,
        };
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return Err(bad(
                "duration_s".into(),
                format!(
                    "must be a positive number of seconds, got {}",
                    self.duration_s
                ),
            ));
        }
        if !(self.speed.is_finite() && self.speed > 0.0 && self.speed <= 10_000.0) {
            return Err(bad(
                "speed".into(),
                format!("must be in (0, 10000], got {}", self.speed),
            ));
        }
        if !(0.0..=0.2).contains(&self.ripple) {
            return Err(bad(
                "ripple".into(),
                format!("must be in [0, 0.2], got {}", self.ripple),
            ));
        }
        if let Some(at) = self
            .driver_upgrade_at_s
            .filter(|at| !(*at >= 0.0 && *at < self.duration_s))
        {
            return Err(bad(
                "driver_upgrade_at_s".into(),
                format!("must be in [0, duration_s), got {at}"),
            ));
        }
        if self.gpus.is_empty() {
            return Err(bad(
                "gpu".into(),
                "a scenario needs at least one [[gpu]]".into(),
            ));
        }
        let mut uuids = BTreeSet::new();
        for (i, g) in self.gpus.iter().enumerate() {
            let what = |field: &str| format!("gpu {i} ({}): {field}", g.model);
            if g.memory_total_mib == 0 {
                return Err(bad(what("memory_total_mib"), "must be positive".into()));
            }
            if !(g.power_limit_w > 0.0 && g.power_limit_w.is_finite()) {
                return Err(bad(what("power_limit_w"), "must be positive".into()));
            }
            if !(g.idle_power_w >= 0.0 && g.idle_power_w < g.power_limit_w) {
                return Err(bad(
                    what("idle_power_w"),
                    format!("must be in [0, power_limit_w), got {}", g.idle_power_w),
                ));
            }
            if g.idle_sm_clock_mhz > g.max_sm_clock_mhz {
                return Err(bad(
                    what("idle_sm_clock_mhz"),
                    "must not exceed max_sm_clock_mhz".into(),
                ));
            }
            if !(g.initial_energy_j >= 0.0 && g.initial_energy_j.is_finite()) {
                return Err(bad(what("initial_energy_j"), "must be >= 0".into()));
            }
            if !(g.bench_efficiency > 0.0 && g.bench_efficiency <= 1.0) {
                return Err(bad(
                    what("bench_efficiency"),
                    format!("must be in (0, 1], got {}", g.bench_efficiency),
                ));
            }
            if let Some(p) = g.utilization_period_s {
                let (lo, hi) = UTILIZATION_PERIODS_S;
                if !(p >= lo - 1e-9 && p <= hi) {
                    return Err(bad(
                        what("utilization_period_s"),
                        format!("must be in [1/6, 1] (nvml.h's range), got {p}"),
                    ));
                }
            }
            let mut probe = Pipes::IDLE;
            if let Some(name) = g
                .gpm_unknown_pipes
                .iter()
                .find(|n| pipe_mut(&mut probe, n).is_none())
            {
                return Err(bad(
                    what("gpm_unknown_pipes"),
                    format!(
                        "no pipe is called {name:?} (sm_active, sm_occupancy, tensor_active, \
                         hmma_active, imma_active, dfma_tensor_active, fp16_active, fp32_active, \
                         fp64_active, dram_active)"
                    ),
                ));
            }
            if let Some(t) = &g.trace {
                t.check(self.duration_s, g.memory_total_mib)
                    .map_err(|(column, problem)| bad(what(&format!("trace.{column}")), problem))?;
            }
            if ![16, 24, 32].contains(&g.nvml.process_info_v3_bytes) {
                return Err(bad(
                    what("nvml.process_info_v3_bytes"),
                    format!("must be 16, 24 or 32, got {}", g.nvml.process_info_v3_bytes),
                ));
            }
            if !(1..=8).contains(&g.mig_slices) {
                return Err(bad(
                    what("mig_slices"),
                    format!("must be in [1, 8], got {}", g.mig_slices),
                ));
            }
            let mut ids = BTreeSet::new();
            // (created, destroyed, slices) of each instance: at no moment may they hold more
            // slices than the GPU has.
            let mut spans = Vec::new();
            for (k, m) in g.mig_instances.iter().enumerate() {
                let what = |field: &str| what(&format!("mig_instance {k}: {field}"));
                let Some((n, _)) = MigInstanceSpec::parse_profile(&m.profile) else {
                    return Err(bad(
                        what("profile"),
                        format!("{:?} is not a MIG profile name like \"3g.40gb\"", m.profile),
                    ));
                };
                let from = m.created_at_s.unwrap_or(0.0);
                let until = m.destroyed_at_s.unwrap_or(self.duration_s);
                spans.push((from, until, n));
                if !(from >= 0.0 && from < until && until <= self.duration_s) {
                    return Err(bad(
                        what("created_at_s"),
                        format!(
                            "created at {from} s and destroyed at {until} s: must be 0 <= \
                             created < destroyed <= duration_s"
                        ),
                    ));
                }
                let id = m.gpu_instance_id.unwrap_or(k as u32 + 1);
                if !ids.insert(id) {
                    return Err(bad(what("gpu_instance_id"), format!("{id} is used twice")));
                }
                if let Some(u) = &m.uuid {
                    if !u.starts_with("MIG-") || !uuids.insert(u.clone()) {
                        return Err(bad(
                            what("uuid"),
                            format!("{u} does not start with MIG- or is used twice"),
                        ));
                    }
                }
            }
            let slices = spans
                .iter()
                .map(|(at, _, _)| {
                    spans
                        .iter()
                        .filter(|(from, until, _)| from <= at && at < until)
                        .map(|(_, _, n)| n)
                        .sum::<u32>()
                })
                .max()
                .unwrap_or(0);
            if slices > g.mig_slices {
                return Err(bad(
                    what("mig_instance"),
                    format!(
                        "the instances hold {slices} slices, more than the GPU's {} (mig_slices)",
                        g.mig_slices
                    ),
                ));
            }
            if let Some(u) = &g.uuid {
                if !uuids.insert(u.clone()) {
                    return Err(bad(what("uuid"), format!("{u} is used twice")));
                }
            }
        }
        let n = self.gpus.len() as u32;
        let mut pids = BTreeSet::new();
        for j in &self.jobs {
            let what = |field: &str| format!("job '{}': {field}", j.name);
            if j.gpus.is_empty() {
                return Err(bad(what("gpus"), "lists no GPU".into()));
            }
            if let Some(g) = j.gpus.iter().find(|g| **g >= n) {
                return Err(bad(
                    what("gpus"),
                    format!("GPU {g} does not exist (the scenario has {n} GPUs)"),
                ));
            }
            if j.phases.is_empty() {
                return Err(bad(
                    what("phase"),
                    "needs at least one [[job.phase]]".into(),
                ));
            }
            if !(j.start_s >= 0.0 && j.start_s.is_finite()) {
                return Err(bad(what("start_s"), "must be >= 0".into()));
            }
            if Self::job_end_s(j) > self.duration_s + 1e-9 {
                return Err(bad(
                    what("phase"),
                    format!(
                        "the job ends at {}s, after the scenario's duration_s ({}s)",
                        Self::job_end_s(j),
                        self.duration_s
                    ),
                ));
            }
            if let Some(gi) = j.gpu_instance {
                if let Some(g) = j.gpus.iter().find(|g| {
                    let spec = &self.gpus[**g as usize];
                    spec.mig_instance(gi).is_none()
                }) {
                    return Err(bad(
                        what("gpu_instance"),
                        format!("GPU {g} has no MIG instance with gpu_instance_id {gi}"),
                    ));
                }
            }
            for pid in std::iter::once(&j.pid).chain(&j.worker_pids) {
                if *pid == 0 || !pids.insert(*pid) {
                    return Err(bad(
                        what("pid"),
                        format!("pid {pid} is zero or used by another job"),
                    ));
                }
            }
            for (k, p) in j.phases.iter().enumerate() {
                let what = |field: &str| format!("job '{}': phase {k}: {field}", j.name);
                if !(p.seconds > 0.0 && p.seconds.is_finite()) {
                    return Err(bad(what("seconds"), "must be positive".into()));
                }
                if !(0.0..=1.0).contains(&p.utilization) {
                    return Err(bad(
                        what("utilization"),
                        format!("must be in [0, 1], got {}", p.utilization),
                    ));
                }
                if !(p.power_w >= 0.0 && p.power_w.is_finite()) {
                    return Err(bad(what("power_w"), "must be >= 0".into()));
                }
                for (name, value) in [
                    ("sm_active", p.sm_active),
                    ("tensor_active", p.tensor_active),
                    ("fp16_active", p.fp16_active),
                    ("fp32_active", p.fp32_active),
                    ("fp64_active", p.fp64_active),
                    ("dram_active", p.dram_active),
                ] {
                    if let Some(v) = value.filter(|v| !(0.0..=1.0).contains(v)) {
                        return Err(bad(what(name), format!("must be in [0, 1], got {v}")));
                    }
                }
                for g in &j.gpus {
                    let spec = &self.gpus[*g as usize];
                    if p.memory_mib > spec.memory_total_mib {
                        return Err(bad(
                            what("memory_mib"),
                            format!(
                                "{} MiB is more than GPU {g} has ({} MiB)",
                                p.memory_mib, spec.memory_total_mib
                            ),
                        ));
                    }
                }
            }
        }
        for (k, e) in self.events.iter().enumerate() {
            let what = |field: &str| format!("event {k} ({:?}): {field}", e.kind);
            if e.gpu >= n {
                return Err(bad(
                    what("gpu"),
                    format!("GPU {} does not exist (the scenario has {n} GPUs)", e.gpu),
                ));
            }
            if !(e.at_s >= 0.0 && e.at_s < self.duration_s) {
                return Err(bad(
                    what("at_s"),
                    format!("must be in [0, duration_s), got {}", e.at_s),
                ));
            }
            match (e.kind, e.xid) {
                (EventKind::Xid, None) => {
                    return Err(bad(what("xid"), "an xid event needs its code".into()))
                }
                (k, Some(_)) if k != EventKind::Xid => {
                    return Err(bad(what("xid"), "only xid events carry a code".into()))
                }
                _ => {}
            }
            let lasts = matches!(e.kind, EventKind::Hang | EventKind::EventWaitError);
            match (lasts, e.seconds) {
                (true, Some(secs)) if secs > 0.0 && secs.is_finite() => {}
                (true, _) => {
                    return Err(bad(
                        what("seconds"),
                        "this event needs a positive number of seconds".into(),
                    ))
                }
                (false, Some(_)) => {
                    return Err(bad(
                        what("seconds"),
                        "only hang and event_wait_error events last seconds".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
