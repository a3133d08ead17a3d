//! How long each of NVML's violation-time counters has counted: the time each throttle reason
//! held a simulated GPU's clocks down, in the model's own terms.
//!
//! NVML counts, per perf policy, the time the clocks were held below what the GPU could run at
//! (`nvmlViolationTime_t.violationTime`, nanoseconds; nvml.h's `nvmlPerfPolicyType_t`). The
//! model's clock-event reasons follow its load (see [`crate::GpuState::throttle_reasons`]):
//! - power (`NVML_PERF_POLICY_POWER`): the power at or above 98% of the limit, the same moments
//!   the `sw_power_cap` bit is set; with ripple, the exact share of each phase the sine spends
//!   above that line;
//! - thermal (`NVML_PERF_POLICY_THERMAL`, "SW thermal slowdown"): the temperature at 85 °C or
//!   more;
//! - low utilization (`NVML_PERF_POLICY_LOW_UTILIZATION`, "How long did low utilization cause
//!   the GPU to be below application clocks"): the time nothing ran, when the model drops the
//!   SM clock to its idle clock;
//! - sync boost, board limit, reliability, HW thermal and HW power brake: never, on a GPU that
//!   runs phases (the model has no such limiter).
//!
//! A traced GPU counts its recorded bits instead, interval by interval (the `gpu_idle` bit as
//! low utilization).

/// Seconds each counter has counted, by perf policy or clock-event reason.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ViolationSeconds {
    pub power: f64,
    pub thermal: f64,
    pub sync_boost: f64,
    pub board_limit: f64,
    pub low_utilization: f64,
    pub reliability: f64,
    pub hw_thermal: f64,
    pub hw_power_brake: f64,
}

impl ViolationSeconds {
    fn zip(self, o: ViolationSeconds, f: impl Fn(f64, f64) -> f64) -> ViolationSeconds {
        ViolationSeconds {
            power: f(self.power, o.power),
            thermal: f(self.thermal, o.thermal),
            sync_boost: f(self.sync_boost, o.sync_boost),
            board_limit: f(self.board_limit, o.board_limit),
            low_utilization: f(self.low_utilization, o.low_utilization),
            reliability: f(self.reliability, o.reliability),
            hw_thermal: f(self.hw_thermal, o.hw_thermal),
            hw_power_brake: f(self.hw_power_brake, o.hw_power_brake),
        }
    }

    pub fn plus(self, o: ViolationSeconds) -> ViolationSeconds {
        self.zip(o, |a, b| a + b)
    }

    pub fn scaled(self, k: f64) -> ViolationSeconds {
        self.zip(self, |a, _| a * k)
    }

    /// What a stretch of `seconds` with these clock-event reason bits counts.
    pub(crate) fn of_bits(bits: u64, seconds: f64) -> ViolationSeconds {
        let on = |bit: u64| if bits & bit != 0 { seconds } else { 0.0 };
        ViolationSeconds {
            power: on(0x4),
            thermal: on(0x20),
            sync_boost: on(0x10),
            low_utilization: on(0x1),
            hw_thermal: on(0x40),
            hw_power_brake: on(0x80),
            ..ViolationSeconds::default()
        }
    }
}

/// Time within `[a, b]` (seconds) during which `sin(omega t + phi) >= c`, exactly.
pub(crate) fn time_sine_at_least(a: f64, b: f64, omega: f64, phi: f64, c: f64) -> f64 {
    if b <= a {
        return 0.0;
    }
    if c <= -1.0 {
        return b - a;
    }
    if c > 1.0 {
        return 0.0;
    }
    use std::f64::consts::{PI, TAU};
    // Within each period, sin(x) >= c for x in [alpha, pi - alpha] + 2k pi.
    let alpha = c.asin();
    let on = PI - 2.0 * alpha;
    let measure = |x: f64| {
        let y = x - alpha;
        (y / TAU).floor() * on + y.rem_euclid(TAU).min(on)
    };
    (measure(omega * b + phi) - measure(omega * a + phi)) / omega
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_above_a_line_matches_counting() {
        let (omega, phi) = (std::f64::consts::TAU / 7.3, 1.7);
        for (a, b, c) in [
            (0.0, 100.0, 0.3),
            (3.1, 4.2, -0.5),
            (10.0, 30.0, 0.99),
            (0.0, 7.3, 0.0),
            (5.0, 6.0, 1.5),
            (5.0, 6.0, -1.5),
        ] {
            let steps = 1_000_000;
            let h = (b - a) / steps as f64;
            let counted = (0..steps)
                .filter(|i| (omega * (a + (*i as f64 + 0.5) * h) + phi).sin() >= c)
                .count() as f64
                * h;
            let exact = time_sine_at_least(a, b, omega, phi, c);
            assert!(
                (exact - counted).abs() < 1e-4,
                "[{a}, {b}] c {c}: {exact} vs {counted}"
            );
        }
    }
}
