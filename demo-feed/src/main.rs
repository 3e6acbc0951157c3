//! `demo-feed`: a short-video feed service and its demo scenario for schedlat.
//!
//! `serve` runs the service, `load` an open-loop load generator, `noisy` a noisy neighbour,
//! and `scenario` all of them under `schedlat run` (what `cargo xtask demo` calls).

mod feed;
mod load;
mod noisy;
mod report;
mod scenario;
mod server;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "demo-feed",
    about = "A short-video feed service and its schedlat demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

fn duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("`{text}`: give a unit (ms, s, m)"));
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("`{text}` must be positive"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the feed service.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 5000)]
        users: usize,
        #[arg(long, default_value_t = 50_000)]
        videos: usize,
    },
    /// Open-loop load: a fixed request rate, latency measured from when each request was due.
    Load {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value_t = 5000)]
        users: usize,
    },
    /// CPU-bound threads (function `noisy_neighbour_burn`) for a while.
    Noisy {
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Process name (as ps and schedlat show it).
        #[arg(long, default_value = "noisy-neighbour")]
        name: String,
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
    },
    /// Three stories of a slow feed under `schedlat run` (noisy neighbour, CPU quota, bad
    /// pinning), each after a baseline or recovery; prints and writes a report.
    Scenario {
        /// The schedlat binary.
        #[arg(long)]
        schedlat: PathBuf,
        /// Length of each of the seven phases (baseline, three stories, three recoveries).
        #[arg(long, default_value = "18s", value_parser = duration)]
        phase: Duration,
        /// Feed requests per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Where the report, the summary and the incidents go.
        #[arg(long, default_value = "target/demo")]
        out: PathBuf,
    },
}

/// Names this process (its main thread), as ps and schedlat show it.
fn set_process_name(name: &str) {
    let mut bytes = [0u8; 16];
    for (b, c) in bytes.iter_mut().zip(name.bytes().take(15)) {
        *b = c;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) };
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Serve {
            listen,
            threads,
            users,
            videos,
        } => server::serve(listen, threads, users, videos),
        Cmd::Load {
            target,
            rate,
            duration,
            users,
        } => {
            set_process_name("feed-load");
            load::run(target, rate, duration, users)
        }
        Cmd::Noisy {
            threads,
            name,
            duration,
        } => {
            set_process_name(&name);
            anyhow::Context::context(
                noisy::run(&name, threads, duration),
                "starting the noisy threads",
            )
        }
        Cmd::Scenario {
            schedlat,
            phase,
            rate,
            out,
        } => {
            set_process_name("schedlat-demo");
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                    eprintln!("demo-feed: cannot handle signal {signal}: {e}");
                }
            }
            scenario::run(
                &scenario::Options {
                    schedlat,
                    phase,
                    rate,
                    out,
                },
                &stop,
            )
            .map(|summary| print!("{}", scenario::render(&summary)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-feed: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
