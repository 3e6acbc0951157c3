//! A busy service for schedlat's busy-node test: forever (or `ROUNDS` times), spin for
//! `SPIN_US`, then sleep for `SLEEP_US` (many wakeups, little CPU). Exits when killed.
//!
//! Usage: `schedlat-busy SPIN_US SLEEP_US [ROUNDS]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::time::{Duration, Instant};

fn arg(index: usize, name: &str) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: schedlat-busy SPIN_US SLEEP_US (missing {name})");
            std::process::exit(2)
        })
}

fn main() {
    let spin = Duration::from_micros(arg(1, "SPIN_US"));
    let sleep = Duration::from_micros(arg(2, "SLEEP_US"));
    let rounds = std::env::args()
        .nth(3)
        .map_or(u64::MAX, |a| a.parse().expect("ROUNDS: a number"));
    let mut x = 0u64;
    for _ in 0..rounds {
        let start = Instant::now();
        while start.elapsed() < spin {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        std::thread::sleep(sleep);
    }
}
