//! Time-of-use tariffs: which electricity price is in force at an instant.
//!
//! A `[[pricing.energy.window]]` is a span of local wall-clock time on given weekdays; this
//! module owns [`TariffWindow`], the conversion from a unix instant to the local weekday and time
//! of day, and the mean tariff that the break-even estimate uses. Nothing here parses or
//! validates (that is `parse`).

use super::EnergyPricing;

/// A time-of-use window of the energy tariff.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffWindow {
    /// Monday first. The days on which the window starts.
    pub days: [bool; 7],
    /// Minutes after local midnight, 0..1440.
    pub start_min: u32,
    /// Minutes after local midnight, 0..=1440; less than `start_min` when crossing midnight.
    pub end_min: u32,
    pub price_per_kwh: f64,
}

impl TariffWindow {
    /// Whether the window covers local second-of-day `sod` on weekday `wd` (0 = Monday).
    fn covers(&self, wd: usize, sod: f64) -> bool {
        let start = f64::from(self.start_min) * 60.0;
        let end = f64::from(self.end_min) * 60.0;
        if start < end {
            self.days[wd] && sod >= start && sod < end
        } else {
            (self.days[wd] && sod >= start) || (self.days[(wd + 6) % 7] && sod < end)
        }
    }
}

impl EnergyPricing {
    /// The electricity price per kWh at `unix_seconds`.
    pub fn tariff_at(&self, unix_seconds: f64) -> f64 {
        if !unix_seconds.is_finite() {
            return self.price_per_kwh;
        }
        let local = unix_seconds + f64::from(self.utc_offset_s);
        let day = (local / 86_400.0).floor();
        let sod = (local - day * 86_400.0).clamp(0.0, 86_399.999);
        // 1970-01-01 was a Thursday (Monday = 0).
        let wd = ((day as i64) + 3).rem_euclid(7) as usize;
        self.tariff_local(wd, sod)
    }

    fn tariff_local(&self, wd: usize, sod: f64) -> f64 {
        self.windows
            .iter()
            .find(|w| w.covers(wd, sod))
            .map_or(self.price_per_kwh, |w| w.price_per_kwh)
    }

    /// The time-weighted mean tariff over a week (exact: windows have minute boundaries).
    pub fn mean_tariff(&self) -> f64 {
        if self.windows.is_empty() {
            return self.price_per_kwh;
        }
        let mut sum = 0.0;
        for wd in 0..7 {
            for m in 0..1440 {
                sum += self.tariff_local(wd, f64::from(m) * 60.0 + 30.0);
            }
        }
        sum / (7.0 * 1440.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_text as parse;
    use super::super::Pricing;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// 2024-01-01 00:00 UTC, a Monday.
    const MON_2024_01_01: f64 = 1_704_067_200.0;

    /// Unix seconds of local `day` of January 2024 at `hh:mm:ss`, at `offset_h` hours east.
    fn jan2024(day: u32, hh: u32, mm: u32, ss: u32, offset_h: f64) -> f64 {
        MON_2024_01_01 + f64::from(day - 1) * 86_400.0 + f64::from(hh * 3600 + mm * 60 + ss)
            - offset_h * 3600.0
    }

    #[test]
    fn tariff_windows_cross_midnight_by_weekday_with_offset() {
        let p = parse(
            r#"
[pricing.energy]
price_per_kwh = 0.15
utc_offset = "+01:00"
[[pricing.energy.window]]   # weekday nights, belonging to the day they start
days = ["mon", "tue", "wed", "thu", "fri"]
start = "22:00"
end = "06:00"
price_per_kwh = 0.09
[[pricing.energy.window]]   # weekends all day
days = ["sat", "sun"]
start = "00:00"
end = "24:00"
price_per_kwh = 0.10
"#,
        )
        .unwrap();
        // (local day of January 2024 (1 = Monday), hh, mm, ss, expected price)
        let cases: &[(u32, u32, u32, u32, f64)] = &[
            (1, 3, 0, 0, 0.15),    // Mon 03:00: Sunday night is not a weekday night
            (1, 12, 0, 0, 0.15),   // Mon noon
            (1, 21, 59, 59, 0.15), // just before the window
            (1, 22, 0, 0, 0.09),   // start is inclusive
            (2, 5, 59, 59, 0.09),  // Tue early morning: Monday's night
            (2, 6, 0, 0, 0.15),    // end is exclusive
            (5, 23, 0, 0, 0.09),   // Fri night
            (6, 3, 0, 0, 0.09),    // Sat 03:00: Friday's night, first match beats the weekend
            (6, 6, 0, 0, 0.10),    // Sat 06:00: weekend
            (7, 23, 30, 0, 0.10),  // Sun night: weekend
            (8, 3, 0, 0, 0.15),    // Mon 03:00 again
        ];
        for &(day, hh, mm, ss, want) in cases {
            let t = jan2024(day, hh, mm, ss, 1.0);
            assert_eq!(
                p.tariff_at(t),
                want,
                "Jan {day} {hh:02}:{mm:02}:{ss:02} local"
            );
        }
        // The offset matters: Mon 21:30 UTC is 22:30 local (+01:00), in the night window.
        assert_eq!(p.tariff_at(jan2024(1, 21, 30, 0, 0.0)), 0.09);
        assert_eq!(p.tariff_at(f64::NAN), 0.15);
    }

    #[test]
    fn tariff_weekday_follows_a_negative_offset_and_the_epoch() {
        let fri = |offset: &str, day: &str| {
            parse(&format!(
                "[pricing.energy]\nutc_offset = {offset:?}\n[[pricing.energy.window]]\n\
                 days = [{day:?}]\nstart = \"00:00\"\nend = \"24:00\"\nprice_per_kwh = 0.5\n"
            ))
            .unwrap()
        };
        let p = fri("-05:00", "fri");
        // Sat 6 Jan 03:00 UTC is Fri 22:00 at -05:00.
        assert_eq!(p.tariff_at(jan2024(6, 3, 0, 0, 0.0)), 0.5);
        // Sat 06:00 UTC is Sat 01:00 local.
        assert_eq!(p.tariff_at(jan2024(6, 6, 0, 0, 0.0)), 0.15);
        // 1970-01-01 was a Thursday; the hour before it a Wednesday.
        assert_eq!(fri("+00:00", "thu").tariff_at(0.0), 0.5);
        assert_eq!(fri("+00:00", "thu").tariff_at(86_399.0), 0.5);
        assert_eq!(fri("+00:00", "thu").tariff_at(86_400.0), 0.15);
        assert_eq!(fri("+00:00", "wed").tariff_at(-3600.0), 0.5);
        // At +05:30 the epoch is already 05:30 Thursday; 18:30 UTC is Friday 00:00.
        assert_eq!(fri("+05:30", "fri").tariff_at(18.5 * 3600.0 - 1.0), 0.15);
        assert_eq!(fri("+05:30", "fri").tariff_at(18.5 * 3600.0), 0.5);
    }

    #[test]
    fn window_ending_at_midnight_and_mean_tariff() {
        let p = parse(
            "[[pricing.energy.window]]\nstart = \"22:00\"\nend = \"00:00\"\nprice_per_kwh = 0.05\n",
        )
        .unwrap();
        assert_eq!(p.tariff_at(jan2024(3, 23, 59, 59, 0.0)), 0.05);
        assert_eq!(p.tariff_at(jan2024(4, 0, 0, 0, 0.0)), 0.15);
        // 2 h at 0.05 and 22 h at 0.15: (0.10 + 3.30) / 24 = 0.141667.
        assert!(close(p.mean_tariff(), 3.4 / 24.0));

        let p = parse(
            "[[pricing.energy.window]]\nstart = \"22:00\"\nend = \"06:00\"\nprice_per_kwh = 0.09\n",
        )
        .unwrap();
        // 8 h at 0.09, 16 h at 0.15: (0.72 + 2.40) / 24 = 0.13.
        assert!(close(p.mean_tariff(), 0.13));
        assert_eq!(Pricing::default().mean_tariff(), 0.15);
    }
}
