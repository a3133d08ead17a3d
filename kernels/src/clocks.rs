//! The SM clock a kernel ran at, from the stamps its blocks write (`clock_start` and
//! `clock_end` in `kernels/cuda/clocks.cuh`, put in front of each compute module): each
//! block's `%clock64` cycles over its `%globaltimer` nanoseconds. Pure: no GPU.
//!
//! NVML reads the clock at an instant, and the clock of a whole run averaged over every
//! kernel says little of any one of them; these stamps are the clock each launch had, taken by
//! the SMs that did its work (issue 18, item 2).

/// Stamps each block writes: cycles at start, cycles at end, ns at start, ns at end.
pub const STAMPS_PER_BLOCK: usize = 4;

/// A block shorter than this is not timed: `%globaltimer` ticks in steps of up to a
/// microsecond, which would be more than 2% of it.
pub const MIN_BLOCK_NS: u64 = 50_000;

/// Clocks outside this range (Hz) are not an SM clock: stamps from a block that did not write
/// them, or a timer that jumped.
const PLAUSIBLE_HZ: std::ops::RangeInclusive<f64> = 50e6..=5e9;

/// The clock of one launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaunchClock {
    /// All the blocks' cycles over all their nanoseconds: the clock weighted by each block's
    /// time, Hz.
    pub hz: f64,
    /// The slowest and the fastest block, Hz.
    pub min_hz: f64,
    pub max_hz: f64,
    /// Blocks that were timed.
    pub blocks: usize,
}

/// The clock of a launch of `blocks` blocks from the stamps they wrote. An error says why
/// there is none (too short to time, stamps that cannot be a clock); a block with
/// implausible stamps makes the whole launch's clock an error rather than be left out.
pub fn launch_clock(stamps: &[u64], blocks: usize) -> Result<LaunchClock, String> {
    let want = blocks * STAMPS_PER_BLOCK;
    if blocks == 0 || stamps.len() < want {
        return Err(format!(
            "{} clock stamps for {blocks} blocks, want {want}",
            stamps.len()
        ));
    }
    let (mut cycles, mut ns) = (0u128, 0u128);
    let (mut min_hz, mut max_hz, mut timed, mut short) = (f64::INFINITY, 0.0f64, 0, 0);
    for (b, s) in stamps[..want].chunks_exact(STAMPS_PER_BLOCK).enumerate() {
        let (c0, c1, t0, t1) = (s[0], s[1], s[2], s[3]);
        if c1 < c0 || t1 < t0 {
            return Err(format!(
                "block {b}: its stamps go backwards (cycles {c0} -> {c1}, ns {t0} -> {t1})"
            ));
        }
        let (dc, dt) = (c1 - c0, t1 - t0);
        if dt < MIN_BLOCK_NS {
            short += 1;
            continue;
        }
        let hz = dc as f64 / dt as f64 * 1e9;
        if !PLAUSIBLE_HZ.contains(&hz) {
            return Err(format!(
                "block {b}: {dc} cycles in {dt} ns is {:.0} MHz, not an SM clock",
                hz / 1e6
            ));
        }
        cycles += u128::from(dc);
        ns += u128::from(dt);
        min_hz = min_hz.min(hz);
        max_hz = max_hz.max(hz);
        timed += 1;
    }
    if timed == 0 {
        return Err(format!(
            "all {short} blocks ran less than {} us: too short to time",
            MIN_BLOCK_NS / 1000
        ));
    }
    Ok(LaunchClock {
        hz: cycles as f64 / ns as f64 * 1e9,
        min_hz,
        max_hz,
        blocks: timed,
    })
}

/// The launch whose clock is the median of `launches` (the lower middle of an even count):
/// a row's clock, one launch's as measured, not an average of several.
pub fn median_launch(launches: &[LaunchClock]) -> Option<LaunchClock> {
    let mut v: Vec<LaunchClock> = launches
        .iter()
        .copied()
        .filter(|c| c.hz.is_finite())
        .collect();
    v.sort_by(|a, b| a.hz.total_cmp(&b.hz));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cycles: u64, ns: u64) -> [u64; 4] {
        // Arbitrary starting points: only the differences count.
        [
            1_000_000 + 7,
            1_000_007 + cycles,
            5_000_000_000,
            5_000_000_000 + ns,
        ]
    }

    #[test]
    fn the_clock_is_cycles_over_nanoseconds() {
        // 10 ms at 1980 MHz and 10 ms at 1500 MHz: 1740 MHz, weighted by time.
        let stamps: Vec<u64> =
            [block(19_800_000, 10_000_000), block(15_000_000, 10_000_000)].concat();
        let c = launch_clock(&stamps, 2).unwrap();
        assert!((c.hz - 1740e6).abs() < 1.0, "{}", c.hz);
        assert!((c.min_hz - 1500e6).abs() < 1.0 && (c.max_hz - 1980e6).abs() < 1.0);
        assert_eq!(c.blocks, 2);
        // Weighted by time: 30 ms at 1500 MHz and 10 ms at 1980 MHz.
        let stamps: Vec<u64> =
            [block(45_000_000, 30_000_000), block(19_800_000, 10_000_000)].concat();
        let c = launch_clock(&stamps, 2).unwrap();
        assert!((c.hz - 1620e6).abs() < 1.0, "{}", c.hz);
        // Extra stamps past the blocks are not read.
        let mut more = stamps.clone();
        more.extend([0, 0, 0, 0]);
        assert_eq!(launch_clock(&more, 2).unwrap().hz, c.hz);
    }

    #[test]
    fn a_rows_clock_is_its_median_launch() {
        let at = |mhz: f64| LaunchClock {
            hz: mhz * 1e6,
            min_hz: mhz * 1e6,
            max_hz: mhz * 1e6,
            blocks: 1,
        };
        let launches = [at(1980.0), at(1410.0), at(1755.0), at(1830.0), at(1700.0)];
        assert_eq!(median_launch(&launches), Some(at(1755.0)));
        assert_eq!(median_launch(&launches[..2]), Some(at(1410.0)));
        assert_eq!(median_launch(&[]), None);
    }

    #[test]
    fn short_blocks_are_left_out_and_bad_stamps_refused() {
        // A block of 10 us does not count; the other carries the launch.
        let stamps: Vec<u64> = [block(19_800, 10_000), block(17_550_000, 10_000_000)].concat();
        let c = launch_clock(&stamps, 2).unwrap();
        assert_eq!(c.blocks, 1);
        assert!((c.hz - 1755e6).abs() < 1.0);
        let e = launch_clock(&block(19_800, 10_000), 1).unwrap_err();
        assert!(e.contains("too short"), "{e}");
        // Backwards, implausible, or too few stamps: no clock at all.
        let mut back = block(1000, 10_000_000);
        back.swap(0, 1);
        assert!(launch_clock(&back, 1).unwrap_err().contains("backwards"));
        let e = launch_clock(&block(90_000_000_000, 10_000_000), 1).unwrap_err();
        assert!(e.contains("not an SM clock"), "{e}");
        assert!(launch_clock(&block(100, 10_000_000), 1).is_err(), "10 kHz");
        assert!(launch_clock(&[0; 4], 2).unwrap_err().contains("want 8"));
        assert!(launch_clock(&[], 0).is_err());
    }
}
