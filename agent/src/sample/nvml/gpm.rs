//! Pipe activity from GPM (GPU Performance Monitoring, Hopper and newer): one GPM sample per
//! read, the metrics over the time since the sample kept from the previous read.

use std::time::{Duration, Instant};

use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::{Device, GpmSample, Nvml};
use nvml_wrapper_sys::bindings::nvmlGpmSample_t;

use gpucost_core::reading::{Field, FieldError, Pipes, SampleError};

/// GPM samples must be at least this far apart (NVML's rule) to give a metric.
const GPM_MIN_GAP: Duration = Duration::from_millis(100);

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
}

impl GpmState {
    /// Frees the sample kept for the next read (when the backend closes).
    pub(super) fn free(self, nvml: &Nvml) {
        if let Some((h, _)) = self.last {
            // SAFETY: the handle came from `GpmSample::into_handle` on this `Nvml` and is freed
            // exactly once, here (dropping the wrapper frees it).
            drop(unsafe { GpmSample::from_handle(nvml, h.0) });
        }
    }
}

/// GPM metric values (percent) in [`GPM_METRICS`] order -> ratios.
fn pipes_from(values: &[Option<f64>]) -> Pipes {
    let v = |i: usize| {
        values
            .get(i)
            .copied()
            .flatten()
            .map_or(0.0, |p| (p / 100.0).clamp(0.0, 1.0))
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
pub(super) fn read_pipes(
    nvml: &Nvml,
    d: &Device<'_>,
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
    if gpm.supported == Some(true) {
        match d.gpm_sample() {
            Ok(new) => {
                let now = Instant::now();
                match gpm.last.take() {
                    Some((old, at)) if now.duration_since(at) >= GPM_MIN_GAP => {
                        // SAFETY: `old` came from `into_handle` on this `Nvml`; rebuilding the
                        // wrapper hands ownership back, and it is freed when dropped below.
                        let old = unsafe { GpmSample::from_handle(nvml, old.0) };
                        match gpm_metrics_get(nvml, &old, &new, &GPM_METRICS) {
                            Ok(results) => {
                                let values: Vec<Option<f64>> = results
                                    .iter()
                                    .map(|r| r.as_ref().ok().map(|m| m.value))
                                    .collect();
                                pipes = Some(pipes_from(&values));
                            }
                            Err(NvmlError::GpuLost) => {
                                return Err(SampleError::GpuLost("while reading GPM".into()))
                            }
                            Err(err) => e.push((Field::Pipes, FieldError::Failed(err.to_string()))),
                        }
                        gpm.last = Some((HeldSample(new.into_handle()), now));
                    }
                    // Too soon after the last sample: keep that one, drop the new one.
                    Some(kept) => gpm.last = Some(kept),
                    None => gpm.last = Some((HeldSample(new.into_handle()), now)),
                }
            }
            Err(NvmlError::GpuLost) => {
                return Err(SampleError::GpuLost("while sampling GPM".into()))
            }
            Err(err) => e.push((Field::Pipes, FieldError::Failed(err.to_string()))),
        }
    }
    Ok(pipes)
}
