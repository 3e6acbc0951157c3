//! A process whose name is chosen as bytes, for the tests of names that are not text.
//!
//! Usage: `schedlat-named [NAME]`. With NAME (the argument's raw bytes), the main thread names
//! itself with `prctl(PR_SET_NAME)`; without, its name is the file name it was exec'd as. Then
//! it prints `ready` and alternates a short busy burst with a 1 ms sleep, so it waits on a run
//! queue at every wakeup, until stdin is closed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    io::Read as _,
    os::unix::ffi::OsStrExt as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

fn main() {
    if let Some(name) = std::env::args_os().nth(1) {
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(0);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel keeps 15 bytes).
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) };
        assert_eq!(
            rc,
            0,
            "prctl(PR_SET_NAME): {}",
            std::io::Error::last_os_error()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stdin_closed = Arc::clone(&stop);
    // Created after the prctl, so this thread inherits the name.
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stdin_closed.store(true, Ordering::Relaxed);
    });
    println!("ready");
    while !stop.load(Ordering::Relaxed) {
        let burst = Instant::now();
        while burst.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
