//! Time-of-use tariffs: which electricity price is in force at an instant.
//!
//! A `[[pricing.energy.window]]` is a span of local wall-clock time on given weekdays. This
//! module owns [`TariffWindow`], the [`LocalClock`] its times are read on, the step from a unix
//! instant to a local weekday and time of day, and the mean tariff that the break-even estimate
//! uses. Nothing here parses or validates (that is `parse.rs`).
//!
//! # Local time and daylight saving
//!
//! The clock is a fixed `utc_offset` or an IANA `timezone`. An instant is priced by the local
//! weekday and wall-clock time that the clocks of that place show at that instant, that is with
//! the UTC offset in force then. On the days the clocks change this means (Europe/Berlin in
//! 2026 as the example):
//!
//! - Spring forward (29 March, 02:00 CET -> 03:00 CEST): local 02:00 to 02:59 never shows. A
//!   window boundary in that hour takes effect at the first instant after the gap, 03:00 local:
//!   a window from 02:30 starts at 03:00, one until 02:30 ends at 03:00. A 22:00-06:00 night
//!   lasts 7 hours. (This is not jiff's "compatible" reading of a civil time in a gap, which
//!   would put 02:30 at 03:30: nothing is resolved here, the clock simply never shows 02:30.)
//! - Fall back (25 October, 03:00 CEST -> 02:00 CET): local 02:00 to 02:59 shows twice, and is
//!   priced by the local time it shows both times: a window covering 02:00-02:30 applies twice,
//!   and a 22:00-06:00 night lasts 9 hours.
//!
//! The zone's rules come from the time zone database bundled with gpucost (jiff's
//! `tzdb-bundle-always`), never from the node's `/usr/share/zoneinfo`: every node prices alike
//! and no file is read.

use jiff::tz::TimeZone;
use jiff::Timestamp;

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

/// The local clock that the windows' times of day are read on.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalClock {
    /// `utc_offset`: always this many seconds east of UTC, no daylight-saving switch.
    FixedOffset(i32),
    /// `timezone`: an IANA time zone, whose offset follows its rules (daylight saving included).
    Zone(TimeZone),
}

impl LocalClock {
    /// UTC, the default (`utc_offset = "+00:00"`).
    pub const UTC: LocalClock = LocalClock::FixedOffset(0);

    /// Seconds east of UTC that the local clock is at `unix_seconds`.
    pub fn utc_offset_at(&self, unix_seconds: f64) -> i32 {
        match self {
            LocalClock::FixedOffset(s) => *s,
            LocalClock::Zone(tz) => {
                // Offsets change on whole seconds, so the second holding the instant has its
                // offset. Beyond jiff's range (years -9999 to 9999) the range's end stands in.
                let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
                let s = (unix_seconds.floor() as i64).clamp(min, max);
                Timestamp::from_second(s).map_or(0, |t| tz.to_offset(t).seconds())
            }
        }
    }
}

impl EnergyPricing {
    /// The electricity price per kWh at `unix_seconds`: that of the first window covering the
    /// local weekday and time the clock shows then (see the module's header for the days the
    /// clocks change), else `price_per_kwh`.
    pub fn tariff_at(&self, unix_seconds: f64) -> f64 {
        if !unix_seconds.is_finite() {
            return self.price_per_kwh;
        }
        let local = unix_seconds + f64::from(self.clock.utc_offset_at(unix_seconds));
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

    /// The cheapest price of the local week and the longest stretch (seconds, wrapping from
    /// Sunday into Monday) it holds without a break: what a job moved entirely off-peak pays,
    /// and whether it fits in one such stretch. Minute resolution, like the windows.
    pub fn cheapest(&self) -> (f64, f64) {
        const WEEK: usize = 7 * 1440;
        let price = |i: usize| self.tariff_local(i / 1440, (i % 1440) as f64 * 60.0 + 30.0);
        let min = (0..WEEK).map(price).fold(f64::INFINITY, f64::min);
        let (mut best, mut run) = (0usize, 0usize);
        // Twice round the week, so a stretch across its end counts whole.
        for i in 0..2 * WEEK {
            run = if price(i % WEEK) == min { run + 1 } else { 0 };
            best = best.max(run.min(WEEK));
        }
        (min, best as f64 * 60.0)
    }

    /// The time-weighted mean tariff over a local week (exact: windows have minute
    /// boundaries). The break-even estimate takes it as the price of energy over months.
    ///
    /// With a fixed `utc_offset` a local week is a real week, so this is the mean over any whole
    /// number of weeks. With a `timezone`, 52 weeks of real time spanning both switches show the
    /// same local times as 52 local weeks except the hour skipped in spring (never priced) and
    /// the hour repeated in autumn (priced twice). Where these are the same local hour of the
    /// same weekday, as in the EU (in Berlin Sunday 02:00-03:00 both times), they cancel and this
    /// is the exact mean over those 52 weeks. Elsewhere the real mean differs from it by (mean
    /// price of the repeated hour - mean price of the skipped hour) / 8736 hours; in the US
    /// (Sunday 02:00-03:00 skipped, 01:00-02:00 repeated) that is at most 1/8736 (0.0115%) of
    /// the range between the highest and the lowest price, which the estimate ignores.
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

    // ---- time zones ----
    //
    // The switch days, from the rules the zones follow:
    // - EU: summer time begins and ends at 01:00 UTC on the last Sunday of March and of October
    //   (Directive 2000/84/EC, Articles 1 and 2). In 2026: 29 March (Berlin 02:00 CET -> 03:00
    //   CEST) and 25 October (03:00 CEST -> 02:00 CET).
    // - US: at 02:00 local time on the second Sunday of March and the first Sunday of November
    //   (15 U.S.C. 260a, as amended by the Energy Policy Act of 2005, section 110). In 2026:
    //   8 March (New York 02:00 EST -> 03:00 EDT) and 1 November (02:00 EDT -> 01:00 EST).
    // The unix seconds in the tables were computed apart from this code and from jiff, with GNU
    // date and the system's zoneinfo (`date -u -d 2026-03-29T01:00:00Z +%s`; the local time in
    // each comment from `TZ=Europe/Berlin date -d @1774746000`); `check` also verifies that
    // each UTC text and its number agree.

    /// A `[pricing.energy]` with the `clock` line (`timezone = ...` or `utc_offset = ...`), the
    /// `base` price and `windows`: (days line or "" for every day, start, end, price).
    fn zoned(clock: &str, base: f64, windows: &[(&str, &str, &str, f64)]) -> Pricing {
        let mut text = format!("[pricing.energy]\n{clock}\nprice_per_kwh = {base}\n");
        for (days, start, end, price) in windows {
            text.push_str(&format!(
                "[[pricing.energy.window]]\n{days}\nstart = {start:?}\nend = {end:?}\n\
                 price_per_kwh = {price}\n"
            ));
        }
        parse(&text).unwrap()
    }

    /// The cheapest price and its longest stretch: a nightly window 22:00-06:00 is 8 hours; on
    /// weekends too it joins Friday night to Monday morning; no window is the base all week.
    #[test]
    fn cheapest_stretch_of_the_week() {
        let nightly = zoned("", 0.30, &[("", "22:00", "06:00", 0.10)]);
        assert_eq!(nightly.energy.cheapest(), (0.10, 8.0 * 3600.0));
        let weekend = zoned(
            "",
            0.30,
            &[
                ("", "22:00", "06:00", 0.10),
                ("days = [\"sat\", \"sun\"]", "00:00", "24:00", 0.10),
            ],
        );
        // Friday 22:00 to Monday 06:00.
        assert_eq!(weekend.energy.cheapest(), (0.10, 56.0 * 3600.0));
        let flat = zoned("", 0.2, &[]);
        assert_eq!(flat.energy.cheapest(), (0.2, 7.0 * 86_400.0));
    }

    /// (instant in UTC, the same in unix seconds, the price expected then)
    fn check(p: &Pricing, cases: &[(&str, i64, f64)]) {
        for &(utc, unix, want) in cases {
            let parsed: jiff::Timestamp = utc.parse().unwrap();
            assert_eq!(parsed.as_second(), unix, "the table's {utc} is not {unix}");
            assert_eq!(p.tariff_at(unix as f64), want, "at {utc}");
        }
    }

    #[test]
    fn berlin_night_lasts_7_hours_in_spring_and_9_in_autumn() {
        let every_night = [("", "22:00", "06:00", 0.10)];
        let p = zoned("timezone = \"Europe/Berlin\"", 0.30, &every_night);
        check(
            &p,
            &[
                ("2026-03-28T20:59:59Z", 1_774_731_599, 0.30), // Sat 21:59:59 CET
                ("2026-03-28T21:00:00Z", 1_774_731_600, 0.10), // Sat 22:00 CET
                ("2026-03-29T00:59:59Z", 1_774_745_999, 0.10), // Sun 01:59:59 CET
                ("2026-03-29T01:00:00Z", 1_774_746_000, 0.10), // Sun 03:00 CEST
                ("2026-03-29T03:59:59Z", 1_774_756_799, 0.10), // Sun 05:59:59 CEST
                ("2026-03-29T04:00:00Z", 1_774_756_800, 0.30), // Sun 06:00 CEST: 7 h
                ("2026-10-24T19:59:59Z", 1_792_871_999, 0.30), // Sat 21:59:59 CEST
                ("2026-10-24T20:00:00Z", 1_792_872_000, 0.10), // Sat 22:00 CEST
                ("2026-10-25T04:59:59Z", 1_792_904_399, 0.10), // Sun 05:59:59 CET
                ("2026-10-25T05:00:00Z", 1_792_904_400, 0.30), // Sun 06:00 CET: 9 h
            ],
        );
        // A fixed +01:00 is an hour off all summer: 04:00 UTC is still 05:00 there.
        let fixed = zoned("utc_offset = \"+01:00\"", 0.30, &every_night);
        check(&fixed, &[("2026-03-29T04:00:00Z", 1_774_756_800, 0.10)]);
    }

    #[test]
    fn berlin_window_boundaries_in_the_skipped_and_the_repeated_hour() {
        let p = zoned(
            "timezone = \"Europe/Berlin\"",
            0.30,
            &[
                ("days = [\"sat\"]", "20:00", "02:15", 0.20),
                ("days = [\"sun\"]", "02:30", "05:00", 0.10),
            ],
        );
        check(
            &p,
            &[
                // Spring: 02:15 and 02:30 never show; both boundaries take effect at 03:00.
                ("2026-03-28T19:00:00Z", 1_774_724_400, 0.20), // Sat 20:00 CET
                ("2026-03-29T00:59:59Z", 1_774_745_999, 0.20), // Sun 01:59:59 CET
                ("2026-03-29T01:00:00Z", 1_774_746_000, 0.10), // Sun 03:00 CEST
                ("2026-03-29T02:59:59Z", 1_774_753_199, 0.10), // Sun 04:59:59 CEST
                ("2026-03-29T03:00:00Z", 1_774_753_200, 0.30), // Sun 05:00 CEST
                // Autumn: 02:00-02:59 shows twice and is priced by what it shows both times.
                ("2026-10-25T00:14:59Z", 1_792_887_299, 0.20), // Sun 02:14:59 CEST
                ("2026-10-25T00:15:00Z", 1_792_887_300, 0.30), // Sun 02:15 CEST
                ("2026-10-25T00:30:00Z", 1_792_888_200, 0.10), // Sun 02:30 CEST
                ("2026-10-25T00:59:59Z", 1_792_889_999, 0.10), // Sun 02:59:59 CEST
                ("2026-10-25T01:00:00Z", 1_792_890_000, 0.20), // Sun 02:00 CET, again
                ("2026-10-25T01:14:59Z", 1_792_890_899, 0.20), // Sun 02:14:59 CET
                ("2026-10-25T01:15:00Z", 1_792_890_900, 0.30), // Sun 02:15 CET
                ("2026-10-25T01:30:00Z", 1_792_891_800, 0.10), // Sun 02:30 CET
                ("2026-10-25T03:59:59Z", 1_792_900_799, 0.10), // Sun 04:59:59 CET
                ("2026-10-25T04:00:00Z", 1_792_900_800, 0.30), // Sun 05:00 CET
            ],
        );
    }

    /// New York: base 0.20, 22:00-01:30 at 0.08 and 02:15-06:00 at 0.10 every day. In spring
    /// 02:00-02:59 is skipped (02:15 falls in it); in autumn 01:00-01:59 repeats (01:30 in it).
    fn new_york() -> Pricing {
        zoned(
            "timezone = \"America/New_York\"",
            0.20,
            &[("", "22:00", "01:30", 0.08), ("", "02:15", "06:00", 0.10)],
        )
    }

    #[test]
    fn new_york_switch_days_2026() {
        check(
            &new_york(),
            &[
                ("2026-03-08T03:00:00Z", 1_772_938_800, 0.08), // Sat 22:00 EST
                ("2026-03-08T06:29:59Z", 1_772_951_399, 0.08), // Sun 01:29:59 EST
                ("2026-03-08T06:30:00Z", 1_772_951_400, 0.20), // Sun 01:30 EST
                ("2026-03-08T06:59:59Z", 1_772_953_199, 0.20), // Sun 01:59:59 EST
                ("2026-03-08T07:00:00Z", 1_772_953_200, 0.10), // Sun 03:00 EDT: 02:15 skipped
                ("2026-03-08T09:59:59Z", 1_772_963_999, 0.10), // Sun 05:59:59 EDT
                ("2026-03-08T10:00:00Z", 1_772_964_000, 0.20), // Sun 06:00 EDT
                ("2026-11-01T02:00:00Z", 1_793_498_400, 0.08), // Sat 31 Oct 22:00 EDT
                ("2026-11-01T05:29:59Z", 1_793_510_999, 0.08), // Sun 01:29:59 EDT
                ("2026-11-01T05:30:00Z", 1_793_511_000, 0.20), // Sun 01:30 EDT
                ("2026-11-01T05:59:59Z", 1_793_512_799, 0.20), // Sun 01:59:59 EDT
                ("2026-11-01T06:00:00Z", 1_793_512_800, 0.08), // Sun 01:00 EST, again
                ("2026-11-01T06:29:59Z", 1_793_514_599, 0.08), // Sun 01:29:59 EST
                ("2026-11-01T06:30:00Z", 1_793_514_600, 0.20), // Sun 01:30 EST
                ("2026-11-01T07:14:59Z", 1_793_517_299, 0.20), // Sun 02:14:59 EST
                ("2026-11-01T07:15:00Z", 1_793_517_300, 0.10), // Sun 02:15 EST
                ("2026-11-01T10:59:59Z", 1_793_530_799, 0.10), // Sun 05:59:59 EST
                ("2026-11-01T11:00:00Z", 1_793_530_800, 0.20), // Sun 06:00 EST
            ],
        );
    }

    #[test]
    fn zone_far_from_any_switch_uses_the_season_offset() {
        let weekday_nights_and_weekends = [
            (
                "days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
                "22:00",
                "06:00",
                0.09,
            ),
            ("days = [\"sat\", \"sun\"]", "00:00", "24:00", 0.10),
        ];
        let berlin = zoned(
            "timezone = \"Europe/Berlin\"",
            0.15,
            &weekday_nights_and_weekends,
        );
        check(
            &berlin,
            &[
                ("2026-01-15T20:59:59Z", 1_768_510_799, 0.15), // Thu 21:59:59 CET
                ("2026-01-15T21:00:00Z", 1_768_510_800, 0.09), // Thu 22:00 CET
                ("2026-07-15T19:59:59Z", 1_784_145_599, 0.15), // Wed 21:59:59 CEST
                ("2026-07-15T20:00:00Z", 1_784_145_600, 0.09), // Wed 22:00 CEST
                ("2026-07-16T03:59:59Z", 1_784_174_399, 0.09), // Thu 05:59:59 CEST
                ("2026-07-16T04:00:00Z", 1_784_174_400, 0.15), // Thu 06:00 CEST
                ("2026-07-18T10:00:00Z", 1_784_368_800, 0.10), // Sat 12:00 CEST
            ],
        );
        // Half a second before 22:00 CEST is still before the window.
        assert_eq!(berlin.tariff_at(1_784_145_599.5), 0.15);
        let new_york = zoned(
            "timezone = \"America/New_York\"",
            0.15,
            &weekday_nights_and_weekends,
        );
        check(
            &new_york,
            &[
                ("2026-07-15T01:59:59Z", 1_784_080_799, 0.15), // Tue 14 Jul 21:59:59 EDT
                ("2026-07-15T02:00:00Z", 1_784_080_800, 0.09), // Tue 14 Jul 22:00 EDT
            ],
        );
    }

    /// The time-weighted mean of the tariff over 52 weeks of real time from `start`, exact
    /// for windows with minute boundaries and offsets changing on the hour.
    fn mean_over_52_weeks(p: &Pricing, start: i64) -> f64 {
        let minutes = 52 * 7 * 1440;
        let sum: f64 = (0..minutes)
            .map(|m| p.tariff_at((start + m * 60) as f64 + 30.0))
            .sum();
        sum / minutes as f64
    }

    #[test]
    fn mean_tariff_is_the_mean_over_a_real_year_in_a_zone() {
        // Berlin skips and repeats the same local hour (Sunday 02:00-03:00): they cancel, even
        // with window boundaries inside it.
        let berlin = zoned(
            "timezone = \"Europe/Berlin\"",
            0.30,
            &[
                ("days = [\"sat\"]", "20:00", "02:15", 0.20),
                ("days = [\"sun\"]", "02:30", "05:00", 0.10),
            ],
        );
        // 2026-01-04T23:00:00Z is Monday 5 January 2026 00:00 CET.
        let real = mean_over_52_weeks(&berlin, 1_767_567_600);
        assert!(
            close(real, berlin.mean_tariff()),
            "{real} vs {}",
            berlin.mean_tariff()
        );

        // New York skips Sunday 02:00-03:00, 15 min at 0.20 and 45 at 0.10 (mean 0.125), and
        // repeats Sunday 01:00-02:00, 30 min at 0.08 and 30 at 0.20 (mean 0.14): over 52 weeks
        // (8736 h) the real mean is higher by (0.14 - 0.125) / 8736.
        let ny = new_york();
        // 2026-01-05T05:00:00Z is Monday 5 January 2026 00:00 EST.
        let real = mean_over_52_weeks(&ny, 1_767_589_200);
        let want = ny.mean_tariff() + (0.14 - 0.125) / 8736.0;
        assert!(close(real, want), "{real} vs {want}");
        assert!(!close(real, ny.mean_tariff()));
    }
}
