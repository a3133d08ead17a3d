//! Seconds a GPU's clocks were held down, by reason.
//!
//! NVML keeps violation-time counters (nanoseconds per perf policy since the driver loaded;
//! `nvmlViolationTime_t.violationTime`, and the `NVML_FI_DEV_PERF_POLICY_*` and
//! `NVML_FI_DEV_CLOCKS_EVENT_REASON_*` field values that replace `nvmlDeviceGetViolationStatus`
//! in CUDA 13; dcgm-exporter exports them as `DCGM_FI_DEV_*_VIOLATION`). Their deltas are
//! exact. The clock-event reason bits are a snapshot at the moment of the reading: counting a
//! whole interval for a bit that is set then is wrong both ways for a throttle shorter than
//! the interval. So a reason with a counter is counted from it, and the bits are the fallback
//! for reasons without one (and for the interval that starts a counter's baseline). The
//! `gpu_idle` bit is not throttling and is never counted.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::reading::ThrottleReason;

/// Per-GPU: the last value of each violation counter and when it was read. Pure: the caller
/// passes readings, elapsed time and the moment of each reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThrottleMeter {
    last: BTreeMap<ThrottleReason, (u64, Instant)>,
}

impl ThrottleMeter {
    /// Seconds each reason held the clocks down (in [`ThrottleReason::ALL`] order) over an
    /// interval of `dt_s` seconds closed by a reading at `at` with these counters and bits.
    ///
    /// A counter's delta is bounded by the time since that counter was last read (at least
    /// `dt_s`): after an outage the delta covers the outage, and those seconds go to the interval
    /// that closes it, as its energy does (`EnergyMeter::update`). A counter that went backwards
    /// (a driver reload) or appears for the first time counts by its bit for this interval.
    pub fn update(
        &mut self,
        violation_ns: &BTreeMap<ThrottleReason, u64>,
        bits: Option<u64>,
        dt_s: f64,
        at: Instant,
    ) -> [f64; ThrottleReason::ALL.len()] {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        let mut out = [0.0; ThrottleReason::ALL.len()];
        for r in ThrottleReason::ALL {
            let from_counter = match violation_ns.get(&r) {
                Some(&now) => {
                    let prev = self.last.insert(r, (now, at));
                    match prev {
                        Some((prev, prev_at)) if now >= prev => {
                            let since = at.saturating_duration_since(prev_at).as_secs_f64();
                            Some(((now - prev) as f64 / 1e9).min(since.max(dt_s)))
                        }
                        _ => None,
                    }
                }
                None => {
                    self.last.remove(&r);
                    None
                }
            };
            out[r.index()] = from_counter.unwrap_or_else(|| {
                let set = r.bit().zip(bits).is_some_and(|(bit, bits)| bits & bit != 0);
                if set {
                    dt_s
                } else {
                    0.0
                }
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;
    use crate::reading::GPU_IDLE_BIT;

    use ThrottleReason::{HwSlowdown, LowUtilization, SwPowerCap, SwThermalSlowdown};

    /// One reading: (seconds since the start, power-cap counter in ms, bits, dt) ->
    /// (sw_power_cap seconds, hw_slowdown seconds).
    #[allow(clippy::type_complexity)]
    fn check(steps: &[(f64, Option<u64>, u64, f64)], expected: &[(f64, f64)]) {
        let mut m = ThrottleMeter::default();
        for (i, ((t, power_ms, bits, dt), (power, hw))) in steps.iter().zip(expected).enumerate() {
            let counters: BTreeMap<_, _> = power_ms
                .map(|ms| (SwPowerCap, ms * 1_000_000))
                .into_iter()
                .collect();
            let s = m.update(&counters, Some(*bits), *dt, Now::at(*t).mono);
            assert!(
                (s[SwPowerCap.index()] - power).abs() < 1e-9,
                "step {i}: power cap {} s, not {power}",
                s[SwPowerCap.index()]
            );
            assert!((s[HwSlowdown.index()] - hw).abs() < 1e-9, "step {i}: hw");
        }
    }

    /// Issue 14, item 9: a 200 ms power cap inside a 1 s interval is 0.2 s, whether or not the
    /// bit happened to be set at the moment of the reading.
    #[test]
    fn issue_14_counters_count_short_throttles_exactly() {
        check(
            &[
                (0.0, Some(5_000), 0x0, 0.0),
                // Throttled for 200 ms, over by the time of the reading: the bit is clear.
                (1.0, Some(5_200), 0x0, 1.0),
                // Throttled for 300 ms, still on at the reading; hw slowdown has no counter.
                (2.0, Some(5_500), 0x4 | 0x8, 1.0),
                // Not throttled, though the bit is set at the reading (it just started).
                (3.0, Some(5_500), 0x4, 1.0),
            ],
            &[(0.0, 0.0), (0.2, 0.0), (0.3, 1.0), (0.0, 0.0)],
        );
    }

    #[test]
    fn without_a_counter_the_bits_count_the_interval() {
        check(
            &[
                (0.0, None, 0x4, 0.0),
                (1.0, None, 0x4, 1.0),
                (1.5, None, 0x0, 0.5),
                // The counter appears: its first value is a baseline, the bit counts.
                (2.5, Some(100), 0x4, 1.0),
                (3.5, Some(600), 0x4, 1.0),
                // The driver reloaded: the counter went back, the bit counts once.
                (4.5, Some(10), 0x0, 1.0),
                (5.5, Some(260), 0x0, 1.0),
            ],
            &[
                (0.0, 0.0),
                (1.0, 0.0),
                (0.0, 0.0),
                (1.0, 0.0),
                (0.5, 0.0),
                (0.0, 0.0),
                (0.25, 0.0),
            ],
        );
    }

    #[test]
    fn a_counter_cannot_count_more_than_the_time_since_it_was_read() {
        check(
            &[
                (0.0, Some(0), 0x0, 0.0),
                // 3 s in one second: garbage, bounded.
                (1.0, Some(3_000), 0x0, 1.0),
                // After 10 s away, an interval of 1 s: 8 s of the outage are kept.
                (12.0, Some(11_000), 0x0, 1.0),
            ],
            &[(0.0, 0.0), (1.0, 0.0), (8.0, 0.0)],
        );
    }

    /// Issue 14, item 9: an idle GPU is not throttled; low utilization has a counter only.
    #[test]
    fn issue_14_an_idle_gpu_is_not_throttled() {
        let mut m = ThrottleMeter::default();
        let none = BTreeMap::new();
        m.update(&none, Some(GPU_IDLE_BIT), 0.0, Now::at(0.0).mono);
        let s = m.update(&none, Some(GPU_IDLE_BIT | 0x20), 2.0, Now::at(2.0).mono);
        assert_eq!(s.iter().sum::<f64>(), 2.0, "{s:?}");
        assert_eq!(s[SwThermalSlowdown.index()], 2.0);
        assert_eq!(s[LowUtilization.index()], 0.0);
    }
}
