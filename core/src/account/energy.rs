//! A GPU's energy as a total that never goes backwards.
//!
//! NVML's total-energy counter (millijoules since the driver loaded) is the best source: exact,
//! and immune to missed samples. It is not always there (older GPUs answer NotSupported), and it
//! restarts from zero when the driver reloads. So each interval takes the counter's delta when the
//! counter moved forward by a plausible amount, and otherwise integrates power over the interval.

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

/// Per-GPU energy accumulator. Pure: the caller supplies readings and elapsed time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyMeter {
    total_j: f64,
    last_counter_mj: Option<u64>,
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

    /// Folds in a reading taken `dt_s` seconds after the previous one.
    ///
    /// `max_power_w` bounds what a counter delta may imply; a larger jump is treated as a reset
    /// (garbage after a wrap or a driver bug must not become a huge bill).
    pub fn update(
        &mut self,
        counter_mj: Option<u64>,
        power_w: Option<f64>,
        dt_s: f64,
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
            match self.last_counter_mj {
                Some(prev) if now >= prev => {
                    let delta_j = (now - prev) as f64 / 1000.0;
                    // Allow slack for a late sample: the check is for garbage, not accuracy.
                    if delta_j <= max_power_w * dt_s * 2.0 + 1.0 {
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
        self.last_counter_mj = counter_mj;
        self.last_power_w = power_w;
        step
    }

    /// Forgets the last readings (the GPU was lost, unreadable, or not read): the next reading
    /// starts a new baseline, counter and power alike, and the total stays. The time the GPU was
    /// away is not measured: a counter delta across it would be judged against one interval
    /// and taken for a reset.
    pub fn interrupt(&mut self) {
        self.last_power_w = None;
        self.last_counter_mj = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_W: f64 = 1000.0;

    /// (counter mJ, power W, dt s) -> (expected total J, method, reset)
    fn check(steps: &[(Option<u64>, Option<f64>, f64)], expected: &[(f64, EnergyMethod, bool)]) {
        let mut m = EnergyMeter::default();
        for (i, ((c, p, dt), (total, method, reset))) in steps.iter().zip(expected).enumerate() {
            let s = m.update(*c, *p, *dt, MAX_W);
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

    /// Issue 14: a GPU away for long (stuck, lost, NVML released) comes back with a counter that
    /// moved on; its first reading starts a new baseline (power x one interval) instead of a
    /// delta judged against one interval, which would count as a reset.
    #[test]
    fn after_an_interruption_the_counter_starts_a_new_baseline() {
        let mut m = EnergyMeter::default();
        m.update(Some(1_000_000), Some(500.0), 0.0, MAX_W);
        m.update(Some(1_500_000), Some(500.0), 1.0, MAX_W);
        m.interrupt();
        // 60 s later: 30 kJ more on the counter, one interval since the last cycle.
        let s = m.update(Some(31_500_000), Some(400.0), 1.0, MAX_W);
        assert_eq!((s.method, s.counter_reset), (Power, false));
        assert!((m.total_j() - 900.0).abs() < 1e-9, "{}", m.total_j());
        assert_eq!(m.counter_resets(), 0);
        let s = m.update(Some(31_900_000), Some(400.0), 1.0, MAX_W);
        assert_eq!(s.method, Counter);
        assert!((m.total_j() - 1300.0).abs() < 1e-9);
    }

    #[test]
    fn restart_resumes_from_a_total() {
        let mut m = EnergyMeter::starting_at(1234.5);
        m.update(Some(10), Some(1.0), 0.0, MAX_W);
        m.update(Some(1010), Some(1.0), 1.0, MAX_W);
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
        for c in counters {
            for p in powers {
                for dt in dts {
                    m.update(c, p, dt, MAX_W);
                    assert!(m.total_j() >= last, "{c:?} {p:?} {dt}");
                    assert!(m.total_j().is_finite());
                    last = m.total_j();
                }
            }
        }
    }
}
