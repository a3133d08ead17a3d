//! Turning readings into totals: energy that never goes backwards, throttled seconds, Xids.
//!
//! Pure code: nothing here does I/O or reads a clock; callers pass elapsed time in.

pub mod cost;
pub mod efficiency;
pub mod energy;
pub mod pricing;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::reading::{Reading, CLOCK_EVENT_REASONS};
use energy::{EnergyMeter, EnergyStep};

/// Power assumed as the ceiling for plausibility checks when a GPU does not report its limit.
const FALLBACK_MAX_POWER_W: f64 = 2000.0;

/// Running totals for one GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuTotals {
    pub energy: EnergyMeter,
    pub events: GpuEvents,
}

/// What a GPU went through, counted: seconds with each clock-event (throttle) reason active, and
/// Xid errors by code. Counters: the ledger keeps them with the GPU's other totals
/// ([`GpuRecord::events`](crate::jobs::GpuRecord::events)), so they continue across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuEvents {
    /// Seconds spent with each clock-event reason active, in [`CLOCK_EVENT_REASONS`] order.
    pub throttled_s: [f64; CLOCK_EVENT_REASONS.len()],
    /// Xid code -> how many times it was seen.
    pub xids: BTreeMap<u32, u64>,
}

impl GpuEvents {
    /// Adds `o`, reason by reason and Xid by Xid.
    pub fn add(&mut self, o: &GpuEvents) {
        for (s, t) in self.throttled_s.iter_mut().zip(o.throttled_s) {
            *s += t;
        }
        for (xid, n) in &o.xids {
            *self.xids.entry(*xid).or_default() += n;
        }
    }

    /// The throttled seconds by reason name (the `reason` label), for the reasons with time
    /// counted (a NaN is left out: it would not survive JSON).
    pub fn throttled_by_reason(&self) -> BTreeMap<&'static str, f64> {
        CLOCK_EVENT_REASONS
            .iter()
            .zip(self.throttled_s)
            .filter(|(_, s)| *s > 0.0)
            .map(|((_, reason), s)| (*reason, s))
            .collect()
    }

    /// Sets the seconds of the reason named `reason`; false (and nothing set) for a name this
    /// build does not know.
    pub fn set_throttled(&mut self, reason: &str, seconds: f64) -> bool {
        match CLOCK_EVENT_REASONS.iter().position(|(_, r)| *r == reason) {
            Some(i) => {
                self.throttled_s[i] = seconds;
                true
            }
            None => false,
        }
    }
}

impl GpuTotals {
    /// Folds in a reading taken at `at` (the caller's monotonic clock) that closes an interval
    /// of `dt_s` seconds. The reading's state is taken to hold over the whole interval (NVML's
    /// utilization and power are already averages). Counter deltas are judged against the time
    /// since the counter was last read, which is longer than `dt_s` after an outage.
    pub fn apply(&mut self, r: &Reading, dt_s: f64, at: Instant) -> EnergyStep {
        let max_w = r
            .power_limit_mw
            .map_or(FALLBACK_MAX_POWER_W, |mw| (mw as f64 / 1000.0).max(1.0));
        // Where power is integrated (no counter, or a reset), the one-second average.
        let power_w = r.power_mw().map(|mw| mw as f64 / 1000.0);
        let step = self.energy.update(r.energy_mj, power_w, dt_s, at, max_w);
        if let Some(bits) = r.clock_event_reasons {
            if dt_s.is_finite() && dt_s > 0.0 {
                for (i, (bit, _)) in CLOCK_EVENT_REASONS.iter().enumerate() {
                    if bits & bit != 0 {
                        self.events.throttled_s[i] += dt_s;
                    }
                }
            }
        }
        step
    }

    pub fn add_xid(&mut self, xid: u32) {
        *self.events.xids.entry(xid).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;

    #[test]
    fn throttle_seconds_and_xids_accumulate() {
        let mut t = GpuTotals::default();
        let r = Reading {
            clock_event_reasons: Some(0x1 | 0x4),
            ..Reading::default()
        };
        t.apply(&r, 2.0, Now::at(2.0).mono);
        for xid in [79, 79, 13] {
            t.add_xid(xid);
        }
        t.apply(
            &Reading {
                clock_event_reasons: Some(0x4),
                ..Reading::default()
            },
            0.5,
            Now::at(2.5).mono,
        );
        assert_eq!(t.events.throttled_s[0], 2.0); // gpu_idle
        assert_eq!(t.events.throttled_s[2], 2.5); // sw_power_cap
        assert_eq!(t.events.throttled_s.iter().sum::<f64>(), 4.5);
        assert_eq!(t.events.xids, BTreeMap::from([(13, 1), (79, 2)]));
    }

    #[test]
    fn events_add_up_and_go_by_reason_name() {
        let mut a = GpuEvents::default();
        assert!(a.set_throttled("sw_power_cap", 2.0));
        assert!(!a.set_throttled("no_such_reason", 1.0));
        a.xids.insert(79, 1);
        let mut b = GpuEvents::default();
        b.set_throttled("sw_power_cap", 0.5);
        b.set_throttled("gpu_idle", 3.0);
        b.xids.extend([(79, 2), (13, 1)]);
        a.add(&b);
        assert_eq!(
            a.throttled_by_reason(),
            BTreeMap::from([("gpu_idle", 3.0), ("sw_power_cap", 2.5)])
        );
        assert_eq!(a.xids, BTreeMap::from([(13, 1), (79, 3)]));
    }

    #[test]
    fn energy_uses_the_power_limit_as_plausibility_bound() {
        let mut t = GpuTotals::default();
        let r = |mj| Reading {
            energy_mj: Some(mj),
            power_average_mw: Some(100_000),
            power_limit_mw: Some(300_000),
            ..Reading::default()
        };
        t.apply(&r(0), 0.0, Now::at(0.0).mono);
        // 700 J in one second on a 300 W GPU is beyond twice its limit: a reset.
        assert!(t.apply(&r(700_000), 1.0, Now::at(1.0).mono).counter_reset);
        assert!(!t.apply(&r(900_000), 1.0, Now::at(2.0).mono).counter_reset);
        assert!((t.energy.total_j() - 300.0).abs() < 1e-9);
    }

    /// Issue 14, item 11: power x time integrates the one-second average where the GPU has
    /// one; an instant can catch a spike or a dip of a load that changes within the second.
    #[test]
    fn issue_14_power_integration_uses_the_average() {
        // (average W, instant W) -> joules over 2 s without an energy counter
        let cases = [
            (Some(300), Some(650), 600.0),
            (None, Some(650), 1300.0),
            (Some(300), None, 600.0),
            (None, None, 0.0),
        ];
        for (average, instant, joules) in cases {
            let mut t = GpuTotals::default();
            let r = Reading {
                power_average_mw: average.map(|w: u32| w * 1000),
                power_instant_mw: instant.map(|w: u32| w * 1000),
                ..Reading::default()
            };
            t.apply(&r, 0.0, Now::at(0.0).mono);
            t.apply(&r, 2.0, Now::at(2.0).mono);
            assert!(
                (t.energy.total_j() - joules).abs() < 1e-9,
                "{average:?} {instant:?}: {} J",
                t.energy.total_j()
            );
        }
    }
}
