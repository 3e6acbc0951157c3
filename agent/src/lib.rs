//! schedlat: eBPF scheduling-latency (run-queue wait) observability.
//!
//! Library first: `main.rs` only parses flags and calls into these modules.
//!
//! - `cli/`: the commands and their output (`check`, `incidents`, duration parsing);
//! - `kernel/`: BTF layout, feature probes, loading and attaching programs, privileges, record
//!   decoding;
//! - `host/`: /proc, cgroups, names;
//! - `stats/`: histograms and the daemon's windowed aggregation (pure);
//! - `daemon/`: `schedlat run`'s loop, configuration, metrics and HTTP server;
//! - `incident/`: triggers, bundles, run-queue snapshots;
//! - `profile/`: the flight recorder, symbolization, flame graphs;
//! - `trace/`: `schedlat trace`;
//! - `top/`: `schedlat top`.

/// A line for people on stderr. Unlike `eprintln!`, a closed stderr (`2>&1 | head`) is no
/// panic: the line is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// One folder per responsibility (ARCHITECTURE.md walks the data path through them). All
// private: the binary needs only the command line, so code nothing uses is a compile warning.
mod cli;
mod daemon;
mod diagnosis;
mod host;
mod incident;
mod kernel;
mod profile;
mod stats;
mod top;
mod trace;

pub use cli::{Cli, args_with_negative_durations_joined, main_with};

/// Bad input from the user (unknown PID, nothing to trace): exit status 2, like clap's errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
