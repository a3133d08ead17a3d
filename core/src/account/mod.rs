//! Turning readings into totals: energy that never goes backwards, throttled seconds, Xids.
//!
//! Pure code: nothing here does I/O or reads a clock; callers pass elapsed time in.

pub mod cost;
pub mod efficiency;
pub mod energy;
pub mod pricing;

use std::collections::BTreeMap;

use crate::reading::{Reading, CLOCK_EVENT_REASONS};
use energy::{EnergyMeter, EnergyStep};

/// Power assumed as the ceiling for plausibility checks when a GPU does not report its limit.
const FALLBACK_MAX_POWER_W: f64 = 2000.0;

/// Running totals for one GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuTotals {
    pub energy: EnergyMeter,
    /// Seconds spent with each clock-event reason active, in [`CLOCK_EVENT_REASONS`] order.
    pub throttled_s: [f64; CLOCK_EVENT_REASONS.len()],
    /// Xid code -> how many times it was seen.
    pub xids: BTreeMap<u32, u64>,
}

impl GpuTotals {
    /// Folds in a reading that closes an interval of `dt_s` seconds. The reading's state is taken
    /// to hold over the whole interval (NVML's utilization and power are already averages).
    pub fn apply(&mut self, r: &Reading, dt_s: f64) -> EnergyStep {
        let max_w = r
            .power_limit_mw
            .map_or(FALLBACK_MAX_POWER_W, |mw| (mw as f64 / 1000.0).max(1.0));
        let power_w = r.power_mw.map(|mw| mw as f64 / 1000.0);
        let step = self.energy.update(r.energy_mj, power_w, dt_s, max_w);
        if let Some(bits) = r.clock_event_reasons {
            if dt_s.is_finite() && dt_s > 0.0 {
                for (i, (bit, _)) in CLOCK_EVENT_REASONS.iter().enumerate() {
                    if bits & bit != 0 {
                        self.throttled_s[i] += dt_s;
                    }
                }
            }
        }
        step
    }

    pub fn add_xid(&mut self, xid: u32) {
        *self.xids.entry(xid).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_seconds_and_xids_accumulate() {
        let mut t = GpuTotals::default();
        let r = Reading {
            clock_event_reasons: Some(0x1 | 0x4),
            ..Reading::default()
        };
        t.apply(&r, 2.0);
        for xid in [79, 79, 13] {
            t.add_xid(xid);
        }
        t.apply(
            &Reading {
                clock_event_reasons: Some(0x4),
                ..Reading::default()
            },
            0.5,
        );
        assert_eq!(t.throttled_s[0], 2.0); // gpu_idle
        assert_eq!(t.throttled_s[2], 2.5); // sw_power_cap
        assert_eq!(t.throttled_s.iter().sum::<f64>(), 4.5);
        assert_eq!(t.xids, BTreeMap::from([(13, 1), (79, 2)]));
    }

    #[test]
    fn energy_uses_the_power_limit_as_plausibility_bound() {
        let mut t = GpuTotals::default();
        let r = |mj| Reading {
            energy_mj: Some(mj),
            power_mw: Some(100_000),
            power_limit_mw: Some(300_000),
            ..Reading::default()
        };
        t.apply(&r(0), 0.0);
        // 700 J in one second on a 300 W GPU is beyond twice its limit: a reset.
        assert!(t.apply(&r(700_000), 1.0).counter_reset);
        assert!(!t.apply(&r(900_000), 1.0).counter_reset);
        assert!((t.energy.total_j() - 300.0).abs() < 1e-9);
    }
}
