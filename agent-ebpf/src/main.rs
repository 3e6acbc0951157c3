//! schedlat's kernel side: wakeup-to-run (run-queue) latency per task.
//!
//! Where things are: `config.rs` holds every configuration global (the read-only settings and
//! offsets user space sets at load), `maps.rs` every map, `helpers.rs` what the program
//! families share; one file per family: `trace.rs` (`schedlat trace`: wakeup + switch programs
//! with their own enqueue stamps), `daemon.rs` (the node daemon's switch-only programs on the
//! kernel's `sched_info` stamps, aggregating in the kernel), `sampler.rs` (the flight
//! recorder's CPU samples). The types that cross to user space are in `agent-common`.
//!
//! Cost is the design constraint: per switch the hot path is one task-storage lookup and no
//! `task_struct` reads for untraced tasks; events go to user space only above a threshold and
//! without waking the reader (it polls), except when the ring buffer fills up.
#![no_std]
#![no_main]
// Atomic adds (daemon.rs): the crate is built with RUSTC_BOOTSTRAP for build-std anyway.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics::atomic_xadd, see daemon.rs"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros take the context by value"
)]

mod config;
mod daemon;
mod helpers;
mod maps;
mod sampler;
mod throttle;
mod trace;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
