//! A controlled scheduling workload for schedlat's integration tests.
//!
//! A CPU hog thread and, on "go" from stdin, a periodically sleeping thread (created then, so
//! it is born while tracing), all pinned to one CPU with the main thread. The sleeper alternates a busy burst and a
//! sleep; after its iterations it reports and blocks. Once it is asleep for good, its kernel
//! `run_delay` (total run-queue wait, `/proc/<pid>/task/<tid>/schedstat`) is final and printed as
//! one JSON line: `{"hog_tid", "sleeper_tid", "run_delay_ns"}`. Then the workload waits for EOF
//! on stdin and exits.
//!
//! Usage: `schedlat-workload CPU ITERATIONS BURST_US SLEEP_US`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    io::BufRead as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use schedlat_integration_tests::{gettid, pin_to_cpu, run_delay_ns, task_state};

fn arg(index: usize, name: &str) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: schedlat-workload CPU ITERATIONS BURST_US SLEEP_US (missing {name})");
            std::process::exit(2)
        })
}

/// Busy work the compiler cannot remove.
fn spin_for(duration: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < duration {
        for i in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    std::hint::black_box(x);
}

/// The hog's work: pure arithmetic with no calls, so CPU samples of the hog land in this
/// function and flame graphs show it by name (the workspace builds with frame pointers).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn schedlat_workload_hog_spin(rounds: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// The hog thread's loop: a Rust function (mangled, unlike the hog's work), so flame graphs
/// show that user frames are demangled and that the caller of the hog's work is found.
#[inline(never)]
fn hog_until_stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::hint::black_box(schedlat_workload_hog_spin(2_000_000));
    }
}

fn main() {
    let cpu = arg(1, "CPU") as usize;
    let iterations = arg(2, "ITERATIONS");
    let burst = Duration::from_micros(arg(3, "BURST_US"));
    let sleep = Duration::from_micros(arg(4, "SLEEP_US"));
    // Every thread on the CPU from birth, the main thread too: when it wakes (on "go", when the
    // sleeper is done) it waits behind its own hog, never behind another process elsewhere (a
    // long wait there would be another cause, and an incident, in tests that expect none).
    pin_to_cpu(cpu);

    let stop = Arc::new(AtomicBool::new(false));
    let (hog_tid_tx, hog_tid_rx) = mpsc::channel();
    let hog_stop = Arc::clone(&stop);
    let hog = std::thread::Builder::new()
        .name("hog".into())
        .spawn(move || {
            pin_to_cpu(cpu);
            hog_tid_tx.send(gettid()).expect("send hog tid");
            hog_until_stopped(&hog_stop);
        })
        .expect("spawn hog");
    let hog_tid = hog_tid_rx.recv().expect("hog tid");
    println!("{{\"ready\": true, \"hog_tid\": {hog_tid}}}");

    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line).expect("read go");

    let (done_tx, done_rx) = mpsc::channel();
    let (_park_tx, park_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sleeper".into())
        .spawn(move || {
            pin_to_cpu(cpu);
            for _ in 0..iterations {
                spin_for(burst);
                std::thread::sleep(sleep);
            }
            done_tx.send(gettid()).expect("send done");
            // Block for good: from here on this thread never waits on a run queue.
            let _ = park_rx.recv();
        })
        .expect("spawn sleeper");
    let sleeper_tid = done_rx.recv().expect("sleeper done");
    // Wait until the sleeper is asleep, so its run_delay no longer changes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while task_state(std::process::id(), sleeper_tid) != Some('S') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(20));
    let run_delay = run_delay_ns(std::process::id(), sleeper_tid).expect("read schedstat");
    println!(
        "{{\"hog_tid\": {hog_tid}, \"sleeper_tid\": {sleeper_tid}, \"run_delay_ns\": {run_delay}}}"
    );

    // Wait for EOF (the test closes stdin), then stop.
    while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {}
    stop.store(true, Ordering::Relaxed);
    hog.join().expect("join hog");
}
