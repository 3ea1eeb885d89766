//! The node's default speed, measured at start by timing a fixed CPU-bound loop.
//!
//! MOSIX rates a node's CPU against a standard one: speed 10000 (`MOSIX_STD_SPEED`) is the
//! standard, and gossimon's Linux fallback sets `speed = 10 × MHz`, so a 1 GHz CPU is 10000
//! (reference §2.3, §5.2). Clock rates say little across CPU generations, so we time work
//! instead: a chain of dependent integer steps (multiply, add, shift, xor) that no CPU can run
//! in parallel, whose length is set by latency, about 6 cycles a step on x86-64 cores of the last
//! decade. The standard CPU runs one step per 6 ns, a 1 GHz core of that kind, so a node's
//! speed is 10 × its effective MHz, as gossimon rates it. The lab's VM (a Xeon that
//! `/proc/cpuinfo` calls 2.6 GHz) measures 41900 every run: its vCPU runs at 4.19 GHz turbo.
//!
//! The time is the thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), so a CPU quota or other
//! busy processes do not make the CPU look slower: the quota counts in the node's CPUs, not
//! its speed. The fastest of several short chunks is kept, which drops interrupts and
//! preemptions. `mosctl setspeed` replaces the result ([`crate::Gauge::set_speed`]).

use std::hint::black_box;
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

use crate::GaugeError;
use crate::smooth::STANDARD_SPEED;

/// Steps per timed chunk: 1.5 ms on the lab's CPU, long against the clock's resolution.
const CHUNK: u64 = 1 << 20;
/// Nanoseconds a standard CPU takes for one chunk: 6 ns a step (see the module doc).
const STANDARD_CHUNK_NS: f64 = 6.0 * CHUNK as f64;
/// CPU time spent measuring, about 50 ms.
const BUDGET: Duration = Duration::from_millis(50);

/// Measures this CPU's speed in MOSIX units (10000 = standard). Takes about 50 ms of CPU.
pub fn measure_speed() -> Result<u32, GaugeError> {
    let clock = || clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_err(GaugeError::Clock);
    let start = Duration::from(clock()?);
    let mut fastest = Duration::MAX;
    let mut x = black_box(0x2545_f491_4f6c_dd1d_u64);
    loop {
        let before = Duration::from(clock()?);
        x = chunk(x);
        let after = Duration::from(clock()?);
        fastest = fastest.min(after.saturating_sub(before));
        if after.saturating_sub(start) >= BUDGET {
            break;
        }
    }
    black_box(x);
    Ok(speed_of(fastest))
}

/// The speed of a CPU that runs a chunk in `took`.
fn speed_of(took: Duration) -> u32 {
    let ns = took.as_nanos().max(1) as f64;
    (f64::from(STANDARD_SPEED) * STANDARD_CHUNK_NS / ns)
        .round()
        .clamp(1.0, f64::from(u32::MAX)) as u32
}

/// One chunk of dependent steps (Knuth's MMIX LCG with an xorshift, so that no closed form
/// lets the compiler skip the loop).
fn chunk(mut x: u64) -> u64 {
    for _ in 0..CHUNK {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_time_is_standard_speed() {
        assert_eq!(
            speed_of(Duration::from_nanos(STANDARD_CHUNK_NS as u64)),
            STANDARD_SPEED
        );
        assert_eq!(
            speed_of(Duration::from_nanos(STANDARD_CHUNK_NS as u64 / 2)),
            2 * STANDARD_SPEED
        );
        assert_eq!(speed_of(Duration::ZERO), u32::MAX);
    }

    #[test]
    fn this_cpu_has_a_plausible_speed() {
        let speed = measure_speed().unwrap();
        println!("measured speed: {speed} (standard {STANDARD_SPEED})");
        // From a 250 MHz core to a 20 GHz one: anything else means the loop or clock is wrong.
        assert!((2_500..200_000).contains(&speed), "speed {speed}");
    }
}
