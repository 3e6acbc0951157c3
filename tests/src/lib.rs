//! Helpers shared by schedlat's privileged integration tests and their workload binary.

use std::fs;

/// The calling thread's id.
#[must_use]
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    assert_eq!(
        ok,
        0,
        "sched_setaffinity to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

/// Kernel's total run-queue wait of a thread (schedstat field 2, ns).
#[must_use]
pub fn run_delay_ns(pid: u32, tid: u32) -> Option<u64> {
    let path = format!("/proc/{pid}/task/{tid}/schedstat");
    Some(schedlat_test_support::Schedstat::read(std::path::Path::new(&path))?.run_delay_ns)
}

/// Scheduler state letter of a thread (R, S, D, ...).
#[must_use]
pub fn task_state(pid: u32, tid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // Field 3, after the parenthesised comm (which may contain spaces).
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}
