//! The noisy neighbour: CPU-bound threads that share the feed's CPUs for a while.

use std::time::{Duration, Instant};

/// The noisy neighbour's work: arithmetic with no calls, so its CPU samples land here and flame
/// graphs show it by name (the workspace builds with frame pointers).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn noisy_neighbour_burn(rounds: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.rotate_left(5) ^ i.wrapping_mul(0xff51_afd7_ed55_8ccd));
    }
    x
}

/// Burns `threads` threads for `duration`.
pub fn run(name: &str, threads: usize, duration: Duration) -> std::io::Result<()> {
    let end = Instant::now() + duration;
    let workers: Vec<std::thread::JoinHandle<()>> = (0..threads.max(1))
        .map(|i| {
            std::thread::Builder::new()
                // Thread names are cut at 15 bytes: the first word of the process name.
                .name(format!("{}-{i}", name.split('-').next().unwrap_or(name)))
                .spawn(move || {
                    while Instant::now() < end {
                        std::hint::black_box(noisy_neighbour_burn(1_000_000));
                    }
                })
        })
        .collect::<std::io::Result<_>>()?;
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}
