//! A GPU's energy as a total that never goes backwards.
//!
//! NVML's total-energy counter (millijoules since the driver loaded) is the best source: exact,
//! and immune to missed samples. It is not always there (older GPUs answer NotSupported), and it
//! restarts from zero when the driver reloads. So each interval takes the counter's delta when the
//! counter moved forward by a plausible amount, and otherwise integrates power over the interval.
//!
//! "Plausible" is judged against the time since the counter was last read, not against the
//! interval: a GPU that could not be read for a while (fallen off the bus, a hung driver call)
//! comes back with a counter that kept counting ("since the driver was last reloaded", nvml.h's
//! `nvmlDeviceGetTotalEnergyConsumption`), and its delta covers the whole outage while the
//! interval that closes the outage is one cycle long. That energy is real and is kept: it goes
//! into the interval that closes the outage (see [`EnergyMeter::update`]).

use std::time::Instant;

use serde::Serialize;

/// How an interval's energy was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyMethod {
    /// The delta of NVML's energy counter.
    Counter,
    /// Power x time (trapezoid over the interval's two power readings).
    PowerIntegration,
}

impl EnergyMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            EnergyMethod::Counter => "counter",
            EnergyMethod::PowerIntegration => "power_integration",
        }
    }
}

/// What one update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyStep {
    pub delta_j: f64,
    pub method: EnergyMethod,
    /// The counter went backwards or jumped implausibly: it was reset or wrapped.
    pub counter_reset: bool,
}

/// Per-GPU energy accumulator. Pure: the caller supplies readings, elapsed time and the moment
/// of each reading (its monotonic clock; nothing here reads a clock).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyMeter {
    total_j: f64,
    /// The last counter value and when it was read: the baseline of the next delta.
    last_counter: Option<(u64, Instant)>,
    last_power_w: Option<f64>,
    resets: u64,
}

impl EnergyMeter {
    /// A meter that continues from an earlier total (a restart resumes from the ledger).
    pub fn starting_at(total_j: f64) -> Self {
        EnergyMeter {
            total_j: total_j.max(0.0),
            ..Self::default()
        }
    }

    pub fn total_j(&self) -> f64 {
        self.total_j
    }

    pub fn counter_resets(&self) -> u64 {
        self.resets
    }

    /// Folds in a reading taken at `at`, closing an interval of `dt_s` seconds.
    ///
    /// `max_power_w` bounds what a counter delta may imply over the time since the counter was
    /// last read (at least `dt_s`); a larger jump is treated as a reset (garbage after a wrap or
    /// a driver bug must not become a huge bill).
    ///
    /// Where energy used while the GPU could not be read is billed: the counter delta that
    /// covers an outage is this interval's energy, so it goes to the interval that closes the
    /// outage, at that interval's tariff, and to whoever holds the GPU in it: the owners the
    /// node attributed last (the job that held the GPU before the outage when no process list
    /// was read meanwhile; nobody, i.e. the unallocated bucket, when one was read while the GPU
    /// was down, until the next one). PRODUCT.md prices per interval `[t0, t1)` with that
    /// interval's owners; the agent cannot know who held a GPU it could not read, and dropping
    /// the energy would under-count the node. The time of the outage itself is not billed as
    /// GPU time (the sampler starts a new interval when the GPU answers again).
    pub fn update(
        &mut self,
        counter_mj: Option<u64>,
        power_w: Option<f64>,
        dt_s: f64,
        at: Instant,
        max_power_w: f64,
    ) -> EnergyStep {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        let integrated = match (self.last_power_w, power_w) {
            (Some(a), Some(b)) => (a + b) / 2.0 * dt_s,
            (None, Some(p)) | (Some(p), None) => p * dt_s,
            (None, None) => 0.0,
        };
        let mut step = EnergyStep {
            delta_j: integrated,
            method: EnergyMethod::PowerIntegration,
            counter_reset: false,
        };
        if let Some(now) = counter_mj {
            step.method = EnergyMethod::Counter;
            match self.last_counter {
                Some((prev, prev_at)) if now >= prev => {
                    let delta_j = (now - prev) as f64 / 1000.0;
                    // Over the time since that counter value, which is longer than the interval
                    // when the GPU was away in between.
                    let since_s = at
                        .saturating_duration_since(prev_at)
                        .as_secs_f64()
                        .max(dt_s);
                    // Allow slack for a late sample: the check is for garbage, not accuracy.
                    if delta_j <= max_power_w * since_s * 2.0 + 1.0 {
                        step.delta_j = delta_j;
                    } else {
                        step.counter_reset = true;
                    }
                }
                Some(_) => step.counter_reset = true,
                // First counter value (start-up, or the counter just came back): it is a
                // baseline; the interval before it is covered by power integration.
                None if dt_s > 0.0 => step.method = EnergyMethod::PowerIntegration,
                None => {}
            }
        }
        if step.counter_reset {
            step.method = EnergyMethod::PowerIntegration;
            self.resets += 1;
        }
        self.total_j += step.delta_j;
        self.last_counter = counter_mj.map(|c| (c, at));
        self.last_power_w = power_w;
        step
    }

    /// The last counter value and when it was read, the baseline of the next delta.
    pub fn baseline(&self) -> Option<(u64, Instant)> {
        self.last_counter
    }

    /// Takes `counter_mj`, read at `at`, as the baseline of the next delta: a unit that is new
    /// on a GPU that was measured until now (a MIG instance created, a GPU back out of MIG mode)
    /// continues from that GPU's last reading, so the energy between the two is neither lost
    /// nor counted twice.
    pub fn rebase(&mut self, counter_mj: u64, at: Instant) {
        self.last_counter = Some((counter_mj, at));
        self.last_power_w = None;
    }

    /// The GPU could not be read: its last power reading no longer describes the time since.
    /// The counter's baseline stays (with the moment it was read), because the counter keeps
    /// counting while the GPU cannot be read, and the total stays.
    pub fn interrupt(&mut self) {
        self.last_power_w = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;

    const MAX_W: f64 = 1000.0;

    /// (counter mJ, power W, dt s) -> (expected total J, method, reset); each reading `dt` after
    /// the one before.
    fn check(steps: &[(Option<u64>, Option<f64>, f64)], expected: &[(f64, EnergyMethod, bool)]) {
        let mut m = EnergyMeter::default();
        let mut t = 0.0;
        for (i, ((c, p, dt), (total, method, reset))) in steps.iter().zip(expected).enumerate() {
            t += dt.max(0.0);
            let s = m.update(*c, *p, *dt, Now::at(t).mono, MAX_W);
            assert!(
                (m.total_j() - total).abs() < 1e-9,
                "step {i}: total {} != {total}",
                m.total_j()
            );
            assert_eq!(s.method, *method, "step {i}");
            assert_eq!(s.counter_reset, *reset, "step {i}");
        }
    }

    use EnergyMethod::{Counter, PowerIntegration as Power};

    #[test]
    fn counter_deltas() {
        check(
            &[
                (Some(1_000_000), Some(300.0), 0.0),
                (Some(1_300_000), Some(300.0), 1.0),
                (Some(1_900_000), Some(600.0), 1.0),
            ],
            &[
                (0.0, Counter, false),
                (300.0, Counter, false),
                (900.0, Counter, false),
            ],
        );
    }

    #[test]
    fn reset_falls_back_to_power_for_that_interval() {
        check(
            &[
                (Some(5_000_000), Some(200.0), 0.0),
                (Some(5_200_000), Some(200.0), 1.0),
                // Driver reload: the counter restarts near zero.
                (Some(150_000), Some(300.0), 1.0),
                (Some(450_000), Some(300.0), 1.0),
            ],
            &[
                (0.0, Counter, false),
                (200.0, Counter, false),
                (450.0, Power, true),
                (750.0, Counter, false),
            ],
        );
    }

    #[test]
    fn implausible_jump_is_a_reset() {
        // 10 MJ in one second would be 10 MW.
        check(
            &[
                (Some(1_000), Some(100.0), 0.0),
                (Some(10_000_001_000), Some(100.0), 1.0),
                (Some(10_000_101_000), Some(100.0), 1.0),
            ],
            &[
                (0.0, Counter, false),
                (100.0, Power, true),
                (200.0, Counter, false),
            ],
        );
    }

    #[test]
    fn unsupported_counter_integrates_power() {
        check(
            &[
                (None, Some(100.0), 0.0),
                (None, Some(300.0), 2.0),
                (None, None, 1.0),
            ],
            &[
                (0.0, Power, false),
                (400.0, Power, false),
                (700.0, Power, false),
            ],
        );
    }

    #[test]
    fn counter_that_appears_late_starts_a_baseline() {
        check(
            &[
                (None, Some(100.0), 0.0),
                (Some(7_000_000), Some(100.0), 1.0),
                (Some(7_100_000), Some(100.0), 1.0),
            ],
            &[
                (0.0, Power, false),
                (100.0, Power, false),
                (200.0, Counter, false),
            ],
        );
    }

    /// Issue 14, item 6: the energy a GPU used while it could not be read is in the counter when
    /// it answers again; judged against one cycle it looked like a reset and was dropped.
    #[test]
    fn issue_14_energy_used_during_an_outage_is_kept() {
        // (seconds the GPU was away, counter delta on return in mJ) -> (joules kept, reset)
        let cases = [
            // 10 s away at 600 W: 6 kJ in the counter, the closing interval is 1 s long.
            (10.0, 6_600_000, 6_600.0, false),
            // Within the bound (2 x 1000 W x 11 s) but not within 2 x 1000 W x 1 s.
            (10.0, 21_000_000, 21_000.0, false),
            // Beyond what 1000 W could do in 11 s, twice over: garbage, as before.
            (10.0, 30_000_000, 300.0, true),
            // No outage: the interval is all there is.
            (0.0, 2_500_000, 300.0, true),
        ];
        for (away, delta, kept, reset) in cases {
            let mut m = EnergyMeter::default();
            m.update(Some(1_000), Some(300.0), 0.0, Now::at(0.0).mono, MAX_W);
            m.interrupt();
            // The closing interval: one cycle after the last failed read.
            let s = m.update(
                Some(1_000 + delta),
                Some(300.0),
                1.0,
                Now::at(1.0 + away).mono,
                MAX_W,
            );
            assert_eq!(s.counter_reset, reset, "away {away} s, delta {delta} mJ");
            assert!(
                (m.total_j() - kept).abs() < 1e-9,
                "away {away} s, delta {delta} mJ: kept {} J, not {kept}",
                m.total_j()
            );
            let method = if reset { Power } else { Counter };
            assert_eq!(s.method, method);
        }
    }

    #[test]
    fn restart_resumes_from_a_total() {
        let mut m = EnergyMeter::starting_at(1234.5);
        m.update(Some(10), Some(1.0), 0.0, Now::at(0.0).mono, MAX_W);
        m.update(Some(1010), Some(1.0), 1.0, Now::at(1.0).mono, MAX_W);
        assert!((m.total_j() - 1235.5).abs() < 1e-9);
    }

    #[test]
    fn never_decreases_on_any_input() {
        // A coarse sweep of odd inputs: the total must be monotonic.
        let counters = [None, Some(0), Some(5), Some(u64::MAX), Some(1_000_000)];
        let powers = [None, Some(0.0), Some(250.0)];
        let dts = [0.0, 0.5, f64::NAN, -1.0, 1e9];
        let mut m = EnergyMeter::default();
        let mut last = 0.0;
        for (k, c) in counters.into_iter().enumerate() {
            for p in powers {
                for dt in dts {
                    m.update(c, p, dt, Now::at(k as f64).mono, MAX_W);
                    assert!(m.total_j() >= last, "{c:?} {p:?} {dt}");
                    assert!(m.total_j().is_finite());
                    last = m.total_j();
                }
            }
        }
    }
}
