//! Command-line interface: flags (clap), the commands' entry points, and the small commands
//! that live here (`check`, `incidents`); `units` parses the durations every command takes.

pub mod check;
pub mod docs;
pub mod incidents;
pub mod units;

use std::{
    io::{self, Write as _},
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::{UsageError, daemon, daemon::config, host, profile::flamegraph, top, trace};

/// Output format of the commands that print records (`trace`, `incidents`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people: aligned columns, names escaped.
    Text,
    /// For programs: one JSON object per line.
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "schedlat",
    version,
    about = "Measure how long tasks wait for a CPU (run-queue latency), and who made them wait",
    long_about = "schedlat attaches eBPF programs to the scheduler tracepoints sched_wakeup, \
        sched_wakeup_new, sched_switch and sched_migrate_task and measures, for every wakeup, \
        the time the task spent runnable on a run queue before it got a CPU, along with the task \
        that ran instead (preemptor), the task that woke it (waker) and whether it migrated.\n\n\
        Needs root, or CAP_BPF and CAP_PERFMON, and a kernel with BTF (Linux 5.8+)."
)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace (or set `RUST_LOG`).
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace the run-queue waits of the machine, a cgroup, processes or threads, then print
    /// histograms per process.
    #[command(
        long_about = "Trace the run-queue waits of every task on the machine (the default), of \
        the processes of a cgroup and its descendants (--cgroup, refreshed every second), or of \
        the given processes (all their threads, including threads created while tracing) or \
        threads. Prints one line per wait at or above --threshold while tracing; on exit \
        (--duration, Ctrl-C, SIGTERM, or when all traced tasks are gone) prints, per process, \
        a log2 histogram of ALL waits (also those below the threshold) and count, p50, p90, \
        p99, max and total wait. Machine-wide and --cgroup traces show the --top processes by \
        total wait and a total line with the histogram of every wait.\n\n\
        With --format json: one JSON object per line per event, then one \
        {\"summary\": {...}} object per process and, machine-wide or with --cgroup, one \
        {\"total\": {...}} object; with --interval, instead, one {\"interval\": {...}} object \
        per interval (fields documented in the README)."
    )]
    Trace(TraceArgs),
    /// Live view of run-queue latency per process and per cgroup, with the cause and the
    /// culprit of the long waits (like top).
    #[command(
        long_about = "Live view of the run-queue waits of every task on the machine, per process \
        or per cgroup, over the last --window (default 5s), refreshed every --refresh (default \
        1s): waits per second, long waits (at or above --threshold), total wait, p99 and \
        longest wait, and, from the long waits' diagnosis, the cause of most of their time \
        (throttled, affinity, rt, noisy_neighbour, self_contention, ...) and the task that held \
        the CPU for most of it.\n\n\
        Keys: q quit; Tab or v switch between processes and cgroups; t (total wait), 9 (p99), \
        m (max), w (waits), l (long waits), n (name) sort; r reverse; p or space pause (the \
        screen holds still, measuring goes on); Up/Down/PgUp/PgDn/Home/End scroll; h help.\n\n\
        --batch prints frames on stdout instead (no terminal needed, like top -b): text, or one \
        JSON object per refresh with --format json (fields: time, covered_seconds, \
        window_seconds, threshold_ns, diagnosis, machine, cgroup_filter {path, processes} (with \
        --cgroup), processes, cgroups; each row: waits, \
        total_wait_ns, p99_ns, max_ns, long_waits, cause, cause_share, culprit {pid, comm, \
        share, kernel_thread}, throttled_by (with throttled: the quota's cgroup and quota)).\n\n\
        MAX is exact at or above the threshold (each such wait is read one by one); below it, \
        the middle of the histogram slot (within 1.6 %). Needs root, or CAP_BPF and CAP_PERFMON."
    )]
    Top(TopArgs),
    /// Run the node daemon: aggregate every wait in windows and serve Prometheus metrics.
    #[command(
        long_about = "Run the node daemon. Every run-queue wait on the machine is counted in the \
        kernel (switch-only probes reading the scheduler's own sched_info stamps) and \
        aggregated per CPU, per process, per cgroup and per preemptor class (same cgroup, other \
        cgroup, kernel thread, idle CPU, migrated); the window quantiles slide (the last \
        --window, refreshed every `refresh`, 1 s by default). Prometheus metrics are \
        served on http://LISTEN/metrics, liveness on /healthz.\n\n\
        Settings come from --config FILE (TOML; see the README for every key) and the flags \
        below, which override the file. SIGHUP reloads the file (counters are kept); SIGINT \
        and SIGTERM finish the scrape in progress, detach and exit 0."
    )]
    Run(RunArgs),
    /// Sample what the CPUs run (kernel and user stacks) and write a flame graph (SVG).
    #[command(
        long_about = "Sample every CPU with a cpu-clock perf event (kernel and user stacks) for \
        --duration and write an inferno flame graph SVG; --folded also writes the folded stacks \
        (flamegraph.pl / speedscope format). Each process is a tower rooted at its name and \
        pid; kernel frames end in _[k]. User frames resolve with ELF symbols and DWARF where \
        present; frames that do not resolve show as module+offset. User stacks are only as deep \
        as frame pointers go."
    )]
    Flamegraph(FlamegraphArgs),
    /// List and show the incident bundles `schedlat run` captured.
    Incidents {
        #[command(subcommand)]
        action: IncidentsAction,
    },
    /// Check that this machine can run schedlat: kernel features, load and attach, detach.
    #[command(
        long_about = "Check that this machine can run schedlat: probes the kernel features, \
        then loads, attaches and detaches every program set for real (trace, daemon, the \
        daemon's fallback for kernels without CONFIG_SCHED_INFO, CPU sampler) and says what \
        works. A program the verifier refuses is reported with the verifier's deciding lines \
        (--verbose: the whole log).\n\nExit status: 0 when everything the default \
        configuration uses loads; 3 when some of it does not but `trace` or `run` can still \
        run (e.g. no CPU sampler: incidents without flame graphs); 1 when neither can."
    )]
    Check {
        /// Print the whole verifier log of a program that fails to load.
        #[arg(long)]
        verbose: bool,
    },
    /// Write the man pages (schedlat.1 and one page per subcommand) into DIR (for packagers).
    #[command(hide = true)]
    GenerateMan {
        /// Directory to write the pages into (created if missing).
        dir: std::path::PathBuf,
    },
    /// Print a shell completion script on stdout (for packagers).
    #[command(hide = true)]
    GenerateCompletions {
        /// Shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Flags of `schedlat trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// Process to trace (all its threads); repeat for several.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Single thread to trace; repeat for several.
    #[arg(long = "tid", value_name = "TID")]
    pub tids: Vec<u32>,
    /// Trace the processes of this cgroup and its descendants: a path under the cgroup2
    /// mount (as in /proc/PID/cgroup) or a cgroup directory (v1 or v2).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["pids", "tids"])]
    pub cgroup: Option<String>,
    /// Machine-wide and --cgroup traces: how many processes (and threads of each) the
    /// summaries show, most total wait first.
    #[arg(long, value_name = "N", default_value_t = 20, conflicts_with_all = ["pids", "tids"], value_parser = clap::value_parser!(u32).range(1..))]
    pub top: u32,
    /// Histograms per process (runqlat -P) or per thread as well (runqlat -L).
    #[arg(long, value_enum, default_value = "process")]
    pub per: trace::Per,
    /// Print the histograms and summaries of every interval of this length (e.g. 5s, like
    /// `runqlat -T 5`) instead of once at the end.
    #[arg(long, value_parser = units::parse_positive_duration)]
    pub interval: Option<Duration>,
    /// With --interval: stop after this many intervals.
    #[arg(long, value_name = "N", requires = "interval", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: Option<u32>,
    /// Print waits at or above this (e.g. 500us, 1ms, 0 for all). All waits count in the
    /// histogram and summary whatever the threshold.
    #[arg(long, default_value = "1ms", value_parser = units::parse_duration)]
    pub threshold: Duration,
    /// Stop after this long (e.g. 10s, 2m); default: until Ctrl-C or the tasks exit.
    #[arg(long, value_parser = units::parse_positive_duration)]
    pub duration: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Unit of the log2 histograms in text output (runqlat's default µs, or its -m).
    #[arg(long, value_enum, default_value = "us")]
    pub unit: crate::stats::hist::TimeUnit,
    /// Use the tid-keyed hash map instead of task storage (the path for kernels < 5.11).
    #[arg(long, hide = true)]
    pub force_pid_hash: bool,
    /// Do not diagnose long waits (no CULPRIT/CAUSE): every context switch on the machine
    /// then costs less (the diagnosis records who holds each CPU at every switch).
    #[arg(long)]
    pub no_diagnosis: bool,
}

/// Flags of `schedlat top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// The figures cover the last this-long (e.g. 5s, 30s, 1m).
    #[arg(long, default_value = "5s", value_parser = units::parse_positive_duration)]
    pub window: Duration,
    /// Refresh every this-long (top's -d).
    #[arg(short = 'd', long, default_value = "1s", value_parser = units::parse_positive_duration)]
    pub refresh: Duration,
    /// Column the rows are sorted by at start (keys change it).
    #[arg(long, value_enum, default_value = "total")]
    pub sort: crate::top::model::SortKey,
    /// Smallest first (names Z to A).
    #[arg(long)]
    pub reverse: bool,
    /// Rows per process or per cgroup at start (Tab switches).
    #[arg(long, value_enum, default_value = "process")]
    pub view: crate::top::model::View,
    /// Waits at or above this are long waits: read one by one and diagnosed (cause, culprit).
    #[arg(long, default_value = "1ms", value_parser = units::parse_duration)]
    pub threshold: Duration,
    /// Do not diagnose long waits (no CAUSE/CULPRIT): every context switch costs less.
    #[arg(long)]
    pub no_diagnosis: bool,
    /// Print frames on stdout instead of a live screen (no terminal needed; like top -b).
    #[arg(short = 'b', long)]
    pub batch: bool,
    /// Stop after this many refreshes (top's -n).
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,
    /// With --batch: text frames or one JSON object per refresh.
    #[arg(long, value_enum, default_value = "text", requires = "batch")]
    pub format: OutputFormat,
    /// With --batch: rows in each frame, of the --view shown (JSON: of each view; the live
    /// screen shows what fits, and scrolls).
    #[arg(long, value_name = "N", default_value_t = 20, requires = "batch", value_parser = clap::value_parser!(u32).range(1..))]
    pub top: u32,
    /// Only the processes of this cgroup and the cgroups below it: a cgroup directory (v1 or
    /// v2, e.g. /sys/fs/cgroup/cpu/batch) or a path under the cgroup2 mount as /proc/PID/cgroup
    /// shows it (e.g. /system.slice/nginx.service). Members are read every refresh; the
    /// machine line stays machine-wide.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
}

/// Flags of `schedlat run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Validate the configuration (file and flags), print it, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Address for /metrics and /healthz [default: 127.0.0.1:9747].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Aggregation window: the quantiles cover the last WINDOW, refreshed every `refresh`
    /// [default: 5s].
    #[arg(long, value_parser = units::parse_duration)]
    pub window: Option<Duration>,
    /// Processes (most wait in the sliding window) that keep their own series [default: 20].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Waits at or above this are read one by one [default: 1ms].
    #[arg(long, value_parser = units::parse_duration)]
    pub event_threshold: Option<Duration>,
    /// Incident trigger: a single wait above this [default: 10ms].
    #[arg(long, value_parser = units::parse_duration)]
    pub threshold: Option<Duration>,
    /// Where incident bundles go [default: /var/lib/schedlat/incidents].
    #[arg(long, value_name = "DIR")]
    pub incident_dir: Option<std::path::PathBuf>,
    /// Stamp enqueues with the wakeup programs instead of the kernel's `sched_info` stamps
    /// (the path for kernels without `CONFIG_SCHED_INFO`; for tests).
    #[arg(long, hide = true)]
    pub force_wakeup_probes: bool,
}

/// Flags of `schedlat flamegraph`.
#[derive(clap::Args, Debug)]
pub struct FlamegraphArgs {
    /// Only samples of this process; repeat for several [default: every process].
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// How long to sample.
    #[arg(long, default_value = "10s", value_parser = units::parse_positive_duration)]
    pub duration: Duration,
    /// SVG output file.
    #[arg(short, long, default_value = "schedlat-flamegraph.svg")]
    pub output: std::path::PathBuf,
    /// Also write the folded stacks here.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,
    /// Samples per second per CPU.
    #[arg(long, default_value_t = 99)]
    pub hz: u64,
}

#[derive(Subcommand, Debug)]
pub enum IncidentsAction {
    /// One line per incident, oldest first (JSON: one metadata object per line).
    List {
        /// Where the bundles are.
        #[arg(long, default_value = config::DEFAULT_INCIDENT_DIR)]
        incident_dir: std::path::PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// One incident: trigger, victim, preemptor, run queues, files.
    Show {
        /// The incident id (first column of `list`).
        id: String,
        #[arg(long, default_value = config::DEFAULT_INCIDENT_DIR)]
        incident_dir: std::path::PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
}

/// Options whose value is a duration.
const DURATION_OPTIONS: [&str; 7] = [
    "--duration",
    "--interval",
    "--threshold",
    "--window",
    "--event-threshold",
    "--refresh",
    "-d",
];

/// The command line as clap should see it: `--duration -5s` becomes `--duration=-5s`, so the
/// duration parser says that negative durations are not allowed (clap would take `-5s` for an
/// unknown flag `-5`). Only a value that starts like a number is joined: `--duration --pid 1`
/// still gets clap's "a value is required".
#[must_use]
pub fn args_with_negative_durations_joined(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let takes_duration = arg.to_str().is_some_and(|a| DURATION_OPTIONS.contains(&a));
        let negative_next = args.peek().and_then(|n| n.to_str()).is_some_and(|n| {
            n.strip_prefix('-')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
        });
        match args.next_if(|_| takes_duration && negative_next) {
            Some(value) => {
                let mut joined = arg;
                joined.push("=");
                joined.push(value);
                out.push(joined);
            }
            None => out.push(arg),
        }
    }
    out
}

/// Runs the CLI and maps errors to exit codes: 2 for bad input, 1 for everything else.
#[must_use]
pub fn main_with(cli: Cli) -> ExitCode {
    init_logging(&cli.log_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A program the verifier refused: its deciding lines, not a 20,000-line log.
            let message = check::short_error(&e);
            say!("schedlat: error: {}", host::names::escape(&message));
            if message.len() < format!("{e:#}").len() {
                say!("schedlat: `schedlat check --verbose` prints the whole verifier log");
            }
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// SIGINT and SIGTERM set the returned flag; loops check it and shut down cleanly.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .with_context(|| format!("installing the handler for signal {signal}"))?;
    }
    Ok(stop)
}

/// SIGHUP sets the returned flag; the daemon reloads its configuration.
fn reload_flag() -> Result<Arc<AtomicBool>> {
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing the SIGHUP handler")?;
    Ok(reload)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Trace(args) => trace_command(args),
        Command::Top(args) => top_command(&args),
        Command::Run(args) => run_command(args),
        Command::Flamegraph(args) => flamegraph_command(args),
        Command::Incidents { action } => incidents_command(action),
        Command::Check { verbose } => Ok(match check::run(&mut io::stdout().lock(), verbose)? {
            check::Verdict::AllLoaded => ExitCode::SUCCESS,
            check::Verdict::Partial => ExitCode::from(3),
            check::Verdict::Nothing => ExitCode::FAILURE,
        }),
        Command::GenerateMan { dir } => {
            for page in docs::write_man_pages(&dir)? {
                // A closed stdout (`| head`) is no panic.
                let _ = writeln!(io::stdout(), "{}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::GenerateCompletions { shell } => {
            docs::write_completions(shell, &mut io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn trace_command(args: TraceArgs) -> Result<ExitCode> {
    let stop = stop_flag()?;
    let options = trace::TraceOptions {
        pids: args.pids,
        tids: args.tids,
        cgroup: args.cgroup,
        top: args.top as usize,
        threshold_ns: args.threshold.as_nanos() as u64,
        duration: args.duration,
        format: args.format,
        unit: args.unit,
        force_pid_hash: args.force_pid_hash,
        diagnose: !args.no_diagnosis,
        per: args.per,
        interval: args.interval,
        count: args.count,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    trace::run(&options, &mut out, &stop)?;
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

fn top_command(args: &TopArgs) -> Result<ExitCode> {
    let stop = stop_flag()?;
    let options = top::TopOptions {
        window: args.window,
        refresh: args.refresh,
        threshold_ns: args.threshold.as_nanos() as u64,
        diagnose: !args.no_diagnosis,
        sort: args.sort,
        reverse: args.reverse,
        view: args.view,
        batch: args.batch,
        format: args.format,
        iterations: args.iterations,
        top: args.top as usize,
        cgroup: args.cgroup.clone(),
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    top::run(&options, &mut out, &stop)?;
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

fn run_command(args: RunArgs) -> Result<ExitCode> {
    let options = daemon::RunOptions {
        force_wakeup_probes: args.force_wakeup_probes,
        config_path: args.config,
        overrides: config::Overrides {
            listen: args.listen,
            window: args.window,
            top_k: args.top_k,
            event_threshold: args.event_threshold,
            threshold: args.threshold,
            incident_dir: args.incident_dir,
        },
    };
    if args.check_config {
        let report = daemon::check_config(&options).map_err(|e| UsageError(format!("{e:#}")))?;
        let _ = writeln!(io::stdout(), "{report}");
        return Ok(ExitCode::SUCCESS);
    }
    // A bad file is bad input (exit 2), found before anything is loaded.
    daemon::validate(&options).map_err(|e| UsageError(format!("{e:#}")))?;
    let signals = daemon::Signals {
        stop: stop_flag()?,
        reload: reload_flag()?,
    };
    daemon::run(&options, &signals)?;
    Ok(ExitCode::SUCCESS)
}

fn flamegraph_command(args: FlamegraphArgs) -> Result<ExitCode> {
    let stop = stop_flag()?;
    flamegraph::run(
        &flamegraph::FlamegraphOptions {
            pids: args.pids,
            duration: args.duration,
            output: args.output,
            folded: args.folded,
            hz: args.hz,
        },
        &stop,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn incidents_command(action: IncidentsAction) -> Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match action {
        IncidentsAction::List {
            incident_dir,
            format,
        } => incidents::list(&incident_dir, format, &mut out)?,
        IncidentsAction::Show {
            id,
            incident_dir,
            format,
        } => incidents::show(&incident_dir, &id, format, &mut out)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args_with_negative_durations_joined(
            args.iter().map(std::ffi::OsString::from),
        ))
    }

    #[test]
    fn duration_errors_say_what_is_wrong() {
        let err = parse(&["schedlat", "trace", "--pid", "1", "--duration", "-5s"])
            .expect_err("negative")
            .to_string();
        assert!(err.contains("negative durations are not allowed"), "{err}");
        let err = parse(&["schedlat", "trace", "--pid", "1", "--duration", "0"])
            .expect_err("zero")
            .to_string();
        assert!(err.contains("must be greater than 0"), "{err}");
        let err = parse(&["schedlat", "flamegraph", "--duration=0s"])
            .expect_err("zero")
            .to_string();
        assert!(err.contains("must be greater than 0"), "{err}");
        let err = parse(&["schedlat", "trace", "--duration", "--pid", "1"])
            .expect_err("missing value")
            .to_string();
        assert!(err.contains("a value is required"), "{err}");
        assert!(
            parse(&["schedlat", "trace", "--pid", "1", "--threshold", "0"]).is_ok(),
            "a 0 threshold prints every wait"
        );
        assert!(parse(&["schedlat", "trace", "--pid", "1", "--duration", "2s"]).is_ok());
    }

    #[test]
    fn trace_scope_flags_are_validated() {
        assert!(
            parse(&["schedlat", "trace"]).is_ok(),
            "no flag: the whole machine"
        );
        assert!(parse(&["schedlat", "trace", "--cgroup", "/x", "--top", "5"]).is_ok());
        let err = parse(&["schedlat", "trace", "--cgroup", "/x", "--pid", "1"])
            .expect_err("--cgroup with --pid");
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{err}"
        );
        let err = parse(&["schedlat", "trace", "--top", "0"]).expect_err("--top 0");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
        assert!(parse(&["schedlat", "trace", "--interval", "1s", "--count", "2"]).is_ok());
        // --top ranks the processes of a machine-wide or --cgroup trace: with --pid it would
        // be ignored, so it is refused; its default does not conflict.
        assert!(parse(&["schedlat", "trace", "--pid", "1", "--top", "5"]).is_err());
        assert!(parse(&["schedlat", "trace", "--tid", "1", "--top", "5"]).is_err());
        assert!(parse(&["schedlat", "trace", "--pid", "1"]).is_ok());
        let err = parse(&["schedlat", "trace", "--count", "2"]).expect_err("--count alone");
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{err}"
        );
        let err = parse(&["schedlat", "trace", "--interval", "0s"]).expect_err("zero interval");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
        let err = parse(&["schedlat", "trace", "--interval", "1s", "--count", "0"])
            .expect_err("--count 0");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
    }
}
