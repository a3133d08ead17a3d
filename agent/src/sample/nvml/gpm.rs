//! Pipe activity from GPM (GPU Performance Monitoring, Hopper and newer): one GPM sample per
//! read, the metrics over the time since the sample kept from the previous read. Two sample
//! buffers per GPU are allocated once and used in turn (the kept one and the one being filled),
//! instead of an allocation and a free on every read.
//!
//! Each metric has its own return code (nvml.h, `nvmlGpmMetric_t.nvmlReturn`): one that fails
//! leaves its pipe unknown (`None`), and the others are still read. Where profiling is
//! restricted to administrators (the driver's `NVreg_RestrictProfilingToAdminUsers`, shown as
//! `RmProfilingAdminOnly: 1` in `/proc/driver/nvidia/params`), NVML answers
//! `NVML_ERROR_NO_PERMISSION` to a non-root caller's counter queries
//! (gpuopenanalytics/pynvml#19, NVIDIA/gpu-operator#1158); after a few such answers in a row
//! GPM is left alone for a while ([`Backoff`]), and the log says once why and how to fix it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::{Device, GpmSample, Nvml};
use nvml_wrapper_sys::bindings::nvmlGpmSample_t;

use gpucost_core::reading::{Field, FieldError, Pipes, SampleError};

/// GPM samples must be at least this far apart (NVML's rule) to give a metric.
const GPM_MIN_GAP: Duration = Duration::from_millis(100);

/// NO_PERMISSION answers in a row before GPM is left alone.
const DENIED_IN_A_ROW: u32 = 3;
/// How long GPM is left alone the first time; doubled each time it is still denied, up to
/// [`BACKOFF_MAX`] (a fix to the driver's setting needs a driver reload, so no hurry).
const BACKOFF_FIRST: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// The metrics' GPM names, in [`GPM_METRICS`] order, for log lines.
const GPM_METRIC_NAMES: [&str; 10] = [
    "SM_UTIL",
    "SM_OCCUPANCY",
    "ANY_TENSOR_UTIL",
    "HMMA_TENSOR_UTIL",
    "IMMA_TENSOR_UTIL",
    "DFMA_TENSOR_UTIL",
    "FP16_UTIL",
    "FP32_UTIL",
    "FP64_UTIL",
    "DRAM_BW_UTIL",
];

/// The GPM metrics read each interval, in the order [`pipes_from`] expects.
const GPM_METRICS: [GpmMetricId; 10] = [
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::HmmaTensorUtil,
    GpmMetricId::ImmaTensorUtil,
    GpmMetricId::DfmaTensorUtil,
    GpmMetricId::Fp16Util,
    GpmMetricId::Fp32Util,
    GpmMetricId::Fp64Util,
    GpmMetricId::DramBwUtil,
];

/// A GPM sample kept between reads, as NVML's raw handle (the wrapper's `GpmSample` borrows the
/// `Nvml` that this backend owns, so it cannot be stored beside it).
struct HeldSample(nvmlGpmSample_t);

// SAFETY: a GPM sample is a heap object NVML allocated for us; only its GPU's reads touch it,
// one call at a time under that GPU's lock (`GpuMemo`), or the backend's drop.
unsafe impl Send for HeldSample {}

/// Per GPU: whether GPM works, and the last sample with its time.
#[derive(Default)]
pub(super) struct GpmState {
    supported: Option<bool>,
    last: Option<(HeldSample, Instant)>,
    /// The other buffer, filled at the next read.
    spare: Option<HeldSample>,
    denied: Backoff,
    /// Metrics whose failure the log has told (by index in [`GPM_METRICS`]).
    said_failed: BTreeSet<usize>,
}

/// Backing off after repeated `NVML_ERROR_NO_PERMISSION`: pure, the caller passes the time.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Backoff {
    in_a_row: u32,
    /// GPM is left alone until then.
    until: Option<Instant>,
    /// The next pause (0 before the first).
    next: Duration,
    /// Whether the log has said why.
    pub(super) said: bool,
}

impl Backoff {
    /// Whether GPM may be tried at `now`.
    pub(super) fn may_try(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now >= u)
    }

    /// A call answered NO_PERMISSION at `now`; the pause that begins, if one does.
    pub(super) fn denied(&mut self, now: Instant) -> Option<Duration> {
        self.in_a_row += 1;
        if self.in_a_row < DENIED_IN_A_ROW {
            return None;
        }
        let pause = if self.next.is_zero() {
            BACKOFF_FIRST
        } else {
            self.next
        };
        self.until = Some(now + pause);
        self.next = (pause * 2).min(BACKOFF_MAX);
        // One more denial after the pause is enough to pause again.
        self.in_a_row = DENIED_IN_A_ROW - 1;
        Some(pause)
    }

    /// A call worked: permission is there (again).
    pub(super) fn allowed(&mut self) {
        *self = Backoff {
            said: self.said,
            ..Backoff::default()
        };
    }
}

impl GpmState {
    /// Frees the sample buffers (when the backend closes).
    pub(super) fn free(self, nvml: &Nvml) {
        let held = self.last.map(|(h, _)| h).into_iter().chain(self.spare);
        for h in held {
            // SAFETY: each handle came from `nvmlGpmSampleAlloc` (directly or through
            // `GpmSample::into_handle`) on this `Nvml` and is freed exactly once, here (dropping
            // the wrapper frees it).
            drop(unsafe { GpmSample::from_handle(nvml, h.0) });
        }
    }

    /// The buffer to fill: the spare one, else a new one.
    fn buffer(&mut self, nvml: &Nvml) -> Result<HeldSample, NvmlError> {
        if let Some(h) = self.spare.take() {
            return Ok(h);
        }
        let alloc = nvml
            .lib()
            .nvmlGpmSampleAlloc
            .as_ref()
            .map_err(|_| NvmlError::FunctionNotFound)?;
        let mut handle: nvmlGpmSample_t = std::ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer for the call's `nvmlGpmSample_t *`; on success
        // the library owns a buffer that `free` releases.
        nvml_result(unsafe { alloc(&mut handle) })?;
        Ok(HeldSample(handle))
    }
}

/// Fills `buffer` with GPU `d`'s counters now, or with those of its MIG GPU instance
/// `instance` (`nvmlGpmMigSampleGet`: "Read a sample of GPM metrics ... for a MIG GPU
/// Instance", nvml.h).
fn fill(
    nvml: &Nvml,
    d: &Device<'_>,
    instance: Option<u32>,
    buffer: &HeldSample,
) -> Result<(), NvmlError> {
    if let Some(gi) = instance {
        let get = nvml
            .lib()
            .nvmlGpmMigSampleGet
            .as_ref()
            .map_err(|_| NvmlError::FunctionNotFound)?;
        // SAFETY: as below; `gi` is a plain id the library checks.
        return nvml_result(unsafe { get(d.handle(), gi, buffer.0) });
    }
    let get = nvml
        .lib()
        .nvmlGpmSampleGet
        .as_ref()
        .map_err(|_| NvmlError::FunctionNotFound)?;
    // SAFETY: the device handle belongs to this `Nvml` and lives as long as `d`; the buffer was
    // allocated by this library's `nvmlGpmSampleAlloc` and not freed.
    nvml_result(unsafe { get(d.handle(), buffer.0) })
}

/// An NVML return code as a result.
fn nvml_result(code: nvml_wrapper_sys::bindings::nvmlReturn_t) -> Result<(), NvmlError> {
    nvml_wrapper::error::nvml_try(code)
}

/// GPM metric values (percent) in [`GPM_METRICS`] order -> ratios; a metric that failed (its
/// own return code, nvml.h's `nvmlGpmMetric_t.nvmlReturn`) is an unknown pipe, never a zero.
fn pipes_from(values: &[Option<f64>]) -> Pipes {
    let v = |i: usize| {
        values
            .get(i)
            .copied()
            .flatten()
            .filter(|p| p.is_finite())
            .map(|p| (p / 100.0).clamp(0.0, 1.0))
    };
    Pipes {
        sm_active: v(0),
        sm_occupancy: v(1),
        tensor_active: v(2),
        hmma_active: v(3),
        imma_active: v(4),
        dfma_tensor_active: v(5),
        fp16_active: v(6),
        fp32_active: v(7),
        fp64_active: v(8),
        dram_active: v(9),
    }
}

/// This read's pipe activity, where GPM works on this GPU and two samples are far enough apart.
/// For a MIG instance, `d` is its parent and `instance` its GPU instance id: the activity is
/// the instance's own.
pub(super) fn read_pipes(
    nvml: &Nvml,
    d: &Device<'_>,
    index: u32,
    instance: Option<u32>,
    gpm: &mut GpmState,
    e: &mut Vec<(Field, FieldError)>,
) -> Result<Option<Pipes>, SampleError> {
    let mut pipes = None;
    if gpm.supported.is_none() {
        let ok = matches!(d.gpm_support(), Ok(true));
        if !ok {
            e.push((Field::Pipes, FieldError::NotSupported));
        }
        gpm.supported = Some(ok);
    }
    let now = Instant::now();
    if gpm.supported != Some(true) || !gpm.denied.may_try(now) {
        return Ok(None);
    }
    let mut denied = false;
    // A buffer that could not be filled stays the spare one.
    let filled = gpm
        .buffer(nvml)
        .and_then(|buf| match fill(nvml, d, instance, &buf) {
            Ok(()) => Ok(buf),
            Err(err) => {
                gpm.spare = Some(buf);
                Err(err)
            }
        });
    match filled {
        Ok(new) => match gpm.last.take() {
            Some((old, at)) if now.duration_since(at) >= GPM_MIN_GAP => {
                // SAFETY: both handles came from this `Nvml`'s `nvmlGpmSampleAlloc` and are not
                // freed; the wrappers are turned back into handles below (`into_handle`), so
                // neither is freed here.
                let (old_s, new_s) = unsafe {
                    (
                        GpmSample::from_handle(nvml, old.0),
                        GpmSample::from_handle(nvml, new.0),
                    )
                };
                let got = gpm_metrics_get(nvml, &old_s, &new_s, &GPM_METRICS);
                // The old buffer is filled next time; the new one is kept.
                gpm.spare = Some(HeldSample(old_s.into_handle()));
                gpm.last = Some((HeldSample(new_s.into_handle()), now));
                match got {
                    Ok(results) => {
                        denied = !results.is_empty()
                            && results
                                .iter()
                                .all(|r| matches!(r, Err(NvmlError::NoPermission)));
                        if !denied {
                            for (i, r) in results.iter().enumerate() {
                                if let Err(err) = r {
                                    say_failed_metric(gpm, index, i, err);
                                }
                            }
                            let values: Vec<Option<f64>> = results
                                .iter()
                                .map(|r| r.as_ref().ok().map(|m| m.value))
                                .collect();
                            pipes = Some(pipes_from(&values));
                        }
                    }
                    Err(NvmlError::GpuLost) => {
                        return Err(SampleError::GpuLost("while reading GPM".into()))
                    }
                    Err(NvmlError::NoPermission) => denied = true,
                    Err(err) => e.push((Field::Pipes, FieldError::Failed(err.to_string()))),
                }
            }
            // Too soon after the last sample: keep that one; the new buffer waits.
            Some(kept) => {
                gpm.last = Some(kept);
                gpm.spare = Some(new);
            }
            None => gpm.last = Some((new, now)),
        },
        Err(NvmlError::GpuLost) => return Err(SampleError::GpuLost("while sampling GPM".into())),
        Err(NvmlError::NoPermission) => denied = true,
        Err(err) => e.push((Field::Pipes, FieldError::Failed(err.to_string()))),
    }
    if denied {
        e.push((
            Field::Pipes,
            FieldError::Failed(NvmlError::NoPermission.to_string()),
        ));
        if let Some(pause) = gpm.denied.denied(now) {
            if !std::mem::replace(&mut gpm.denied.said, true) {
                tracing::warn!(
                    gpu = index,
                    "GPU {index}: GPM profiling metrics answer NVML_ERROR_NO_PERMISSION: \
                     profiling is restricted to administrators on this node (the nvidia \
                     module's NVreg_RestrictProfilingToAdminUsers=1, shown as \
                     RmProfilingAdminOnly: 1 in /proc/driver/nvidia/params). Pipe activity, \
                     MFU and the FP32 waste verdict stay unknown. Fix: run the agent as root, \
                     or set `options nvidia NVreg_RestrictProfilingToAdminUsers=0` in a file \
                     under /etc/modprobe.d/ and reload the driver (reboot; rebuild the \
                     initramfs where it holds the module). Trying again in {}, then less \
                     often (said once)",
                    humantime::format_duration(pause)
                );
            }
        }
    } else if pipes.is_some() {
        gpm.denied.allowed();
    }
    Ok(pipes)
}

/// Says once per GPU and metric that a GPM metric failed and its pipe is unknown.
fn say_failed_metric(gpm: &mut GpmState, index: u32, i: usize, err: &NvmlError) {
    if gpm.said_failed.insert(i) {
        let name = GPM_METRIC_NAMES.get(i).copied().unwrap_or("?");
        tracing::info!(
            gpu = index,
            "GPU {index}: GPM metric {name} fails ({err}); its pipe is unknown, and no MFU and no \
             FP32 waste verdict come from it while it is (said once)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 7: repeated NO_PERMISSION answers leave GPM alone for a while, longer each
    /// time it is still denied; a success starts over.
    #[test]
    fn issue_14_no_permission_backs_off() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Backoff::default();
        assert!(b.may_try(at(0)));
        assert_eq!(b.denied(at(0)), None);
        assert_eq!(b.denied(at(1)), None);
        assert_eq!(b.denied(at(2)), Some(BACKOFF_FIRST));
        assert!(!b.may_try(at(3)));
        assert!(!b.may_try(at(61)));
        assert!(b.may_try(at(62)));
        // Still denied after the pause: a longer one at once.
        assert_eq!(b.denied(at(62)), Some(2 * BACKOFF_FIRST));
        assert!(!b.may_try(at(62 + 119)));
        assert!(b.may_try(at(62 + 120)));
        let mut long = b.clone();
        for k in 0..10 {
            long.denied(at(1000 * (k + 1)));
        }
        assert_eq!(long.next, BACKOFF_MAX);
        b.said = true;
        b.allowed();
        assert_eq!(
            b,
            Backoff {
                said: true,
                ..Backoff::default()
            }
        );
        assert_eq!(b.denied(at(500)), None);
    }

    #[test]
    fn failed_metrics_are_unknown_pipes_never_zeros() {
        let mut values = vec![Some(50.0); GPM_METRICS.len()];
        values[2] = None;
        values[3] = None;
        values[7] = Some(65.0);
        let p = pipes_from(&values);
        assert_eq!((p.tensor_active, p.hmma_active), (None, None));
        assert_eq!((p.fp32_active, p.sm_active), (Some(0.65), Some(0.5)));
        assert_eq!(pipes_from(&[]), Pipes::UNKNOWN);
        assert_eq!(GPM_METRIC_NAMES.len(), GPM_METRICS.len());
    }
}
