//! Time as an input.
//!
//! Two clocks, for two questions. Durations (sampling cadence, how long a found job has been
//! unseen, a finished job's grace period, progress rates, snapshot freshness) use the
//! monotonic clock, which never jumps. Timestamps that are written down or shown (a job's start
//! and end, a tariff window) use the wall clock, which NTP may step. Mixing them up is how one
//! clock step ends every running job: so the owner thread reads both through one [`Clock`],
//! passes them on as a [`Now`], and tests drive a [`ManualClock`] in virtual time.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One moment, on both clocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// Unix seconds (wall clock): for timestamps and tariffs.
    pub wall: f64,
    /// Monotonic: for durations.
    pub mono: Instant,
}

impl Now {
    /// The moment `t` seconds after a process-wide origin, on both clocks (wall time `t`), for
    /// tests and fuzzing that write times as plain numbers: `Now::at(5.0).since(Now::at(2.0)
    /// .mono)` is 3 seconds.
    pub fn at(t: f64) -> Now {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        Now {
            wall: t,
            mono: origin + Duration::from_secs_f64(t.max(0.0)),
        }
    }

    /// Seconds from `earlier` to this moment on the monotonic clock (0 when `earlier` is later).
    pub fn since(&self, earlier: Instant) -> f64 {
        self.mono.saturating_duration_since(earlier).as_secs_f64()
    }
}

/// Where the agent's time comes from.
pub trait Clock: Send + Sync {
    /// Monotonic time, for durations.
    fn mono(&self) -> Instant;
    /// Wall-clock time in unix seconds, for timestamps and tariffs.
    fn wall(&self) -> f64;
    /// Both at once.
    fn now(&self) -> Now {
        Now {
            wall: self.wall(),
            mono: self.mono(),
        }
    }
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn mono(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> f64 {
        unix_now()
    }
}

/// The wall clock in unix seconds (0 before 1970, which no real clock reads).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A clock that moves only when told to: for tests in virtual time. `advance` moves both clocks
/// (time passing); `step_wall` moves the wall clock alone (an NTP step, a hand-set clock).
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    /// (monotonic offset from `base`, wall seconds)
    state: Mutex<(Duration, f64)>,
}

impl ManualClock {
    /// Starts at the wall time `wall` (unix seconds).
    pub fn new(wall: f64) -> Self {
        ManualClock {
            base: Instant::now(),
            state: Mutex::new((Duration::ZERO, wall)),
        }
    }

    /// Time passes: both clocks move by `d`.
    pub fn advance(&self, d: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += d;
        s.1 += d.as_secs_f64();
    }

    /// The wall clock steps by `seconds` (negative: backwards); the monotonic clock does not.
    pub fn step_wall(&self, seconds: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += seconds;
    }
}

impl Clock for ManualClock {
    fn mono(&self) -> Instant {
        self.base + self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn wall(&self) -> f64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn mono(&self) -> Instant {
        (**self).mono()
    }
    fn wall(&self) -> f64 {
        (**self).wall()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_advances_both_and_steps_only_the_wall() {
        let c = ManualClock::new(1000.0);
        let t0 = c.now();
        c.advance(Duration::from_millis(1500));
        let t1 = c.now();
        assert_eq!(t1.since(t0.mono), 1.5);
        assert_eq!(t1.wall, 1001.5);
        c.step_wall(-3600.0);
        let t2 = c.now();
        assert_eq!(t2.mono, t1.mono);
        assert_eq!(t2.wall, 1001.5 - 3600.0);
        // An earlier instant than `earlier` is no negative duration.
        assert_eq!(t0.since(t2.mono), 0.0);
    }
}
