//! A GPU's utilization over an interval, from the driver's utilization samples.
//!
//! `nvmlDeviceGetUtilizationRates` covers only the driver's last sample period, "between 1
//! second and 1/6 second, depending on the product" (nvml.h, `nvmlUtilization_t`), so one
//! reading per interval is a coin toss on a bursty job (mindprince/nvidia_gpu_prometheus_exporter#12).
//! The driver keeps the samples in a buffer (`nvmlDeviceGetSamples` with
//! `NVML_GPU_UTILIZATION_SAMPLES`, each "percent of time during which one or more kernels was
//! executing" over its period), and the samples since the last read cover the interval.
//!
//! Two things about that buffer shape the average: it "runs dry whenever the GPU sits idle"
//! (polarsignals/gpu-metrics-agent#37), so time between two samples longer than a period was
//! idle time; and its timestamps count microseconds on a clock of their own, not the unix epoch
//! (polarsignals/gpu-metrics-agent#36), so only their differences are used.

/// The driver's sample period is between these (nvml.h, `nvmlUtilization_t`).
pub const MIN_PERIOD_S: f64 = 1.0 / 6.0;
pub const MAX_PERIOD_S: f64 = 1.0;

/// The driver's sample period as the samples show it: the shortest gap between two consecutive
/// ones (`known` is the estimate so far), within nvml.h's range. `None` while no two samples
/// have been seen in a row.
pub fn sample_period_s(samples: &[(u64, f64)], known: Option<f64>) -> Option<f64> {
    samples
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0) as f64 / 1e6)
        .filter(|gap| *gap > 0.0)
        .chain(known)
        .reduce(f64::min)
        .map(|p| p.clamp(MIN_PERIOD_S, MAX_PERIOD_S))
}

/// The percent of time a kernel ran over the time the driver's samples since the last read
/// cover, and the sample-clock time (µs) up to which that accounts. `samples` are
/// `(timestamp µs, percent)`, oldest first, all new since the last read; `from_us` is what the
/// last call returned (`None` the first time); `elapsed_s` the time since the last read;
/// `period_s` the driver's sample period (without an estimate, the longest nvml.h allows).
///
/// Each sample covers its period. Time between samples beyond a period had no sample because
/// the GPU was idle, and counts as 0%: between two samples, before the first (back to `from_us`,
/// but no further than the interval), and after the last, where more than a period of the
/// interval passed without one (the last period may still be on its way: the next call counts
/// it). `None` without samples: the caller falls back to the driver's last period.
pub fn interval_pct(
    samples: &[(u64, f64)],
    from_us: Option<u64>,
    elapsed_s: f64,
    period_s: Option<f64>,
) -> Option<(f64, u64)> {
    let (first, last) = (samples.first()?, samples.last()?);
    let period = period_s
        .unwrap_or(MAX_PERIOD_S)
        .clamp(MIN_PERIOD_S, MAX_PERIOD_S);
    let elapsed = if elapsed_s.is_finite() {
        elapsed_s.max(0.0)
    } else {
        0.0
    };
    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
    let lo = from_us.unwrap_or(first.0.saturating_sub((period * 1e6) as u64));
    // Before the first sample, back to where the last call stopped, but within the interval.
    let head = secs(lo, first.0).min((elapsed - secs(first.0, last.0)).max(period));
    let gaps = std::iter::once(head).chain(samples.windows(2).map(|w| secs(w[0].0, w[1].0)));
    let (mut busy, mut span) = (0.0, 0.0);
    for (gap, (_, pct)) in gaps.zip(samples) {
        busy += pct.clamp(0.0, 100.0) * gap.min(period);
        span += gap;
    }
    // After the last sample: the part of the interval beyond one period had no sample.
    let tail_idle = (elapsed - head - secs(first.0, last.0) - period).max(0.0);
    span += tail_idle;
    let to_us = last.0.saturating_add((tail_idle * 1e6) as u64);
    if span <= 0.0 {
        // Samples at one instant: their plain mean.
        let n = samples.len() as f64;
        let mean = samples
            .iter()
            .map(|(_, p)| p.clamp(0.0, 100.0))
            .sum::<f64>()
            / n;
        return Some((mean, to_us));
    }
    Some(((busy / span).clamp(0.0, 100.0), to_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 166_667; // 1/6 s in µs

    /// Samples every `P` from `t0` (µs) with these percents; `None` is a period without a
    /// sample (the GPU idle).
    fn series(t0: u64, values: &[Option<f64>]) -> Vec<(u64, f64)> {
        values
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| (t0 + (k as u64 + 1) * P, v)))
            .collect()
    }

    #[test]
    fn the_period_is_the_shortest_gap_within_nvml_h_range() {
        assert_eq!(sample_period_s(&[], None), None);
        assert_eq!(sample_period_s(&[(5, 1.0)], None), None);
        let s = series(0, &[Some(1.0), Some(1.0), None, Some(1.0)]);
        assert!((sample_period_s(&s, None).unwrap() - 1.0 / 6.0).abs() < 1e-5);
        assert_eq!(
            sample_period_s(&[(0, 1.0), (10, 1.0)], None),
            Some(MIN_PERIOD_S)
        );
        assert_eq!(
            sample_period_s(&[(0, 1.0), (5_000_000, 1.0)], None),
            Some(1.0)
        );
        assert_eq!(
            sample_period_s(&[(0, 1.0), (900_000, 1.0)], Some(0.5)),
            Some(0.5)
        );
    }

    /// Issue 14, item 10: the interval's utilization from every sample in it, idle gaps as 0%.
    #[test]
    fn issue_14_utilization_is_averaged_over_the_interval() {
        let p = Some(1.0 / 6.0);
        let on = Some(100.0);
        // (samples, from µs, elapsed s, period) -> percent
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<(u64, f64)>,
            Option<u64>,
            f64,
            Option<f64>,
            Option<f64>,
        )> = vec![
            (
                "steady",
                series(0, &[Some(80.0); 6]),
                Some(0),
                1.0,
                p,
                Some(80.0),
            ),
            // Read more often than the driver samples: one sample, its own period.
            (
                "one sample",
                series(0, &[Some(80.0)]),
                Some(0),
                0.1,
                p,
                Some(80.0),
            ),
            // A job busy half of each second: the last period alone says 100 or 0 by chance.
            // Busy, then idle: what the samples cover so far (the last period may be on its way).
            (
                "busy, then idle",
                series(0, &[on, on, on, None, None, None]),
                Some(0),
                1.0,
                p,
                Some(60.0),
            ),
            (
                "idle, then busy",
                series(0, &[None, None, None, on, on, on]),
                Some(0),
                1.0,
                p,
                Some(50.0),
            ),
            (
                "bursts",
                series(0, &[on, None, on, None, on, None]),
                Some(0),
                1.0,
                p,
                Some(60.0),
            ),
            // The GPU was idle for ten minutes before: that time is not this interval's.
            (
                "after a long idle",
                series(600_000_000, &[on; 6]),
                Some(0),
                1.0,
                p,
                Some(100.0),
            ),
            // The first read: no previous sample, each sample covers one period.
            (
                "first read",
                series(0, &[Some(40.0), Some(60.0)]),
                None,
                0.0,
                p,
                Some(50.0),
            ),
            ("no samples", vec![], Some(0), 1.0, p, None),
            // No estimate of the period yet: the longest nvml.h allows.
            (
                "no period yet",
                vec![(1_000_000, 30.0)],
                Some(0),
                1.0,
                None,
                Some(30.0),
            ),
        ];
        for (what, samples, from, elapsed, period, want) in cases {
            let got = interval_pct(&samples, from, elapsed, period).map(|(pct, _)| pct);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 0.5, "{what}: {g} != {w}"),
                _ => assert_eq!(got, want, "{what}"),
            }
        }
    }

    /// Over many intervals, busy and idle time each count once: a job busy half of every
    /// second averages 50%, however the reads fall.
    #[test]
    fn consecutive_intervals_count_each_moment_once() {
        for offset in [0, 50_000, 120_000] {
            // Busy for the first half of each second, samples every 1/6 s while busy.
            let samples: Vec<(u64, f64)> = (1..=600u64)
                .map(|k| k * P)
                .filter(|t| t % 1_000_000 <= 500_000 && t % 1_000_000 != 0)
                .map(|t| (t, 100.0))
                .collect();
            let (mut from, mut busy, mut span) = (None, 0.0, 0.0);
            let mut read_at = offset;
            let mut taken = 0;
            while read_at + 1_000_000 <= 100 * 1_000_000 {
                read_at += 1_000_000;
                let new: Vec<_> = samples[taken..]
                    .iter()
                    .copied()
                    .take_while(|(t, _)| *t <= read_at)
                    .collect();
                taken += new.len();
                if let Some((pct, to)) = interval_pct(&new, from, 1.0, Some(1.0 / 6.0)) {
                    let covered = to.saturating_sub(from.unwrap_or(0)) as f64;
                    busy += pct * covered;
                    span += covered;
                    from = Some(to);
                }
            }
            let mean = busy / span;
            assert!((mean - 50.0).abs() < 1.5, "offset {offset}: {mean}");
        }
    }
}
