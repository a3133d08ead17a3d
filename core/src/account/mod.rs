//! Turning readings into totals: energy that never goes backwards, throttled seconds, Xids.
//!
//! Pure code: nothing here does I/O or reads a clock; callers pass elapsed time in.

pub mod cost;
pub mod efficiency;
pub mod energy;
pub mod pricing;
pub mod throttle;
pub mod utilization;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::reading::{Reading, ThrottleReason};
use energy::{EnergyMeter, EnergyStep};
use throttle::ThrottleMeter;

/// What a MIG instance did over an interval, 0..1, for the idle test in place of the GPU
/// utilization NVML does not report on MIG (nvml.h: "On MIG-enabled GPUs, querying device
/// utilization rates is not currently supported"): its GPM SM activity where GPM gives one
/// (`nvmlGpmMigSampleGet`), else 0 when its process list is known and empty (nothing holds the
/// instance), else unknown (`None`: never idle). Memory is not a sign of work: a process that
/// holds memory and runs nothing is what idle means.
pub fn mig_activity(
    pipes: Option<&crate::reading::Pipes>,
    processes: Option<usize>,
) -> Option<f64> {
    if let Some(sm) = pipes.and_then(|p| p.sm_active) {
        return Some(sm.clamp(0.0, 1.0));
    }
    match processes {
        Some(0) => Some(0.0),
        _ => None,
    }
}

/// Power assumed as the ceiling for plausibility checks when a GPU does not report its limit.
const FALLBACK_MAX_POWER_W: f64 = 2000.0;

/// Running totals for one GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuTotals {
    pub energy: EnergyMeter,
    pub throttle: ThrottleMeter,
    pub events: GpuEvents,
}

/// What a GPU went through, counted: seconds its clocks were held down, by reason, and Xid
/// errors by code. Counters: the ledger keeps them with the GPU's other totals
/// ([`GpuRecord::events`](crate::jobs::GpuRecord::events)), as JSON by reason name, so they
/// continue across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuEvents {
    /// Seconds the clocks were held down for each reason, in [`ThrottleReason::ALL`] order
    /// (from NVML's violation counters where the GPU has them, else the clock-event bits).
    pub throttled_s: [f64; ThrottleReason::ALL.len()],
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
        ThrottleReason::ALL
            .iter()
            .zip(self.throttled_s)
            .filter(|(_, s)| *s > 0.0)
            .map(|(reason, s)| (reason.as_str(), s))
            .collect()
    }

    /// Sets the seconds of the reason named `reason`; false (and nothing set) for a name this
    /// build does not know (a newer gpucost's, or `gpu_idle`, which builds before issue 14
    /// counted and which is no throttling).
    pub fn set_throttled(&mut self, reason: &str, seconds: f64) -> bool {
        match ThrottleReason::from_name(reason) {
            Some(r) => {
                self.throttled_s[r.index()] = seconds;
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
        let throttled = self
            .throttle
            .update(&r.violation_ns, r.clock_event_reasons, dt_s, at);
        for (total, s) in self.events.throttled_s.iter_mut().zip(throttled) {
            *total += s;
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
    use crate::reading::Pipes;

    #[test]
    fn issue_15_a_mig_instance_is_idle_by_what_mig_reports() {
        let busy = Pipes {
            sm_active: Some(0.95),
            ..Pipes::IDLE
        };
        type Case<'a> = (&'a str, Option<&'a Pipes>, Option<usize>, Option<f64>);
        let cases: [Case; 6] = [
            (
                "GPM says busy, whatever the processes",
                Some(&busy),
                Some(0),
                Some(0.95),
            ),
            (
                "GPM says nothing ran",
                Some(&Pipes::IDLE),
                Some(2),
                Some(0.0),
            ),
            ("no GPM, nobody on it", None, Some(0), Some(0.0)),
            (
                "no GPM, a process on it: unknown, not idle",
                None,
                Some(1),
                None,
            ),
            (
                "a failed SM metric, nobody on it",
                Some(&Pipes::UNKNOWN),
                Some(0),
                Some(0.0),
            ),
            ("nothing known", None, None, None),
        ];
        for (name, pipes, procs, want) in cases {
            assert_eq!(mig_activity(pipes, procs), want, "{name}");
        }
    }

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
        // The idle bit is no throttling (issue 14, item 9).
        let power_cap = ThrottleReason::SwPowerCap.index();
        assert_eq!(t.events.throttled_s[power_cap], 2.5);
        assert_eq!(t.events.throttled_s.iter().sum::<f64>(), 2.5);
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
        b.set_throttled("low_utilization", 3.0);
        assert!(
            !b.set_throttled("gpu_idle", 3.0),
            "no reason since issue 14"
        );
        b.xids.extend([(79, 2), (13, 1)]);
        a.add(&b);
        assert_eq!(
            a.throttled_by_reason(),
            BTreeMap::from([("low_utilization", 3.0), ("sw_power_cap", 2.5)])
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
