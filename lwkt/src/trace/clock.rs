//! The trace's timestamp: the cycle counter (`rdtsc`) on x86_64, a few
//! nanoseconds to read and constant-rate and synchronised across cores on
//! the processors this runs on; elsewhere nanoseconds since a process-wide
//! base `Instant`. Ticks become nanoseconds at export, from two anchors
//! (tick, `Instant`) taken at the start and the end of a capture: the
//! longer the capture, the finer the calibration, and nothing is measured
//! up front.

use std::time::Instant;

/// The current tick count.
#[inline(always)]
pub(crate) fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rdtsc` is part of the x86_64 baseline and has no
    // preconditions.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        base().elapsed().as_nanos() as u64
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// One reading of both clocks, taken together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Anchor {
    /// [`now`] at that moment.
    pub(crate) ticks: u64,
    /// `Instant::now()` at that moment.
    pub(crate) at: Instant,
}

impl Anchor {
    /// Both clocks now.
    pub(crate) fn take() -> Anchor {
        let at = Instant::now();
        Anchor { ticks: now(), at }
    }

    /// Nanoseconds per tick between two anchors. When they are less than
    /// a millisecond apart, a process-wide calibration (a 2 ms window,
    /// measured once) is used instead.
    pub(crate) fn ns_per_tick(a: Anchor, b: Anchor) -> f64 {
        match Self::ratio(a, b) {
            Some(r) if b.at.saturating_duration_since(a.at).as_micros() >= 1_000 => r,
            _ => calibrated(),
        }
    }

    fn ratio(a: Anchor, b: Anchor) -> Option<f64> {
        let ns = b.at.saturating_duration_since(a.at).as_nanos() as f64;
        let ticks = b.ticks.checked_sub(a.ticks)? as f64;
        (ns > 0.0 && ticks > 0.0).then(|| ns / ticks)
    }
}

/// Nanoseconds per tick measured once over a 2 ms busy window.
fn calibrated() -> f64 {
    static CAL: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *CAL.get_or_init(|| {
        let a = Anchor::take();
        while a.at.elapsed().as_micros() < 2_000 {
            std::hint::spin_loop();
        }
        Anchor::ratio(a, Anchor::take()).unwrap_or(1.0)
    })
}
