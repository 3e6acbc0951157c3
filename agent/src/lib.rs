//! schedlat: eBPF scheduling-latency (run-queue wait) observability.
//!
//! Library first: `main.rs` only parses flags and calls into these modules.

pub mod aggregate;
pub mod btf;
pub mod capture;
pub mod cgroups;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod events;
pub mod flamegraph;
pub mod hist;
pub mod http;
pub mod incident;
pub mod incidents_cli;
pub mod loader;
pub mod metrics;
pub mod privileges;
pub mod procinfo;
pub mod recorder;
pub mod selfstat;
pub mod snapshot;
pub mod symbolize;
pub mod trace;
pub mod units;

/// Bad input from the user (unknown PID, nothing to trace): exit status 2, like clap's errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
