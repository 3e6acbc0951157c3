//! `schedlat trace`: ad-hoc run-queue latency tracing of processes, threads, a cgroup or the
//! whole machine.
//!
//! The kernel filters by tgid/tid (or not at all: the whole machine), keeps exact per-thread
//! totals and a per-process histogram of every wait, and sends only waits at or above the
//! threshold as events. This loop prints those events and, at the end, the per-process
//! summaries (the top processes by total wait, and a total line, when tracing a cgroup or the
//! machine).

pub mod cgroup;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    io::{self, Write},
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::{Counter, TaskStats};
use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;

use crate::{
    UsageError,
    cli::OutputFormat,
    diagnosis::{
        Cause,
        engine::{Diagnoser, Diagnosis, Host},
    },
    host::{cache::TtlCache, cgroups::CgroupResolver, procinfo},
    kernel::events::{self, EventJson, comm_str},
    kernel::loader::{ProbeConfig, Probes, TaskFilter},
    stats::hist::{LatencyHistogram, Summary, TimeUnit},
};

/// How often the reader drains the ring buffer when the kernel has not woken it.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often to check whether the traced tasks still exist.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub pids: Vec<u32>,
    pub tids: Vec<u32>,
    /// `--cgroup`: a cgroup directory or a path under the cgroup2 mount.
    pub cgroup: Option<String>,
    /// How many processes (and threads per process) the summaries of a cgroup or machine-wide
    /// trace show, most total wait first.
    pub top: usize,
    pub threshold_ns: u64,
    pub duration: Option<Duration>,
    pub format: OutputFormat,
    /// Unit of the log2 histograms in text output.
    pub unit: TimeUnit,
    pub force_pid_hash: bool,
    /// Diagnose long waits (who held the CPU, why).
    pub diagnose: bool,
    /// Histograms per process or per thread.
    pub per: Per,
    /// Print the summaries of every interval of this length (and none at the end).
    pub interval: Option<Duration>,
    /// Stop after this many intervals.
    pub count: Option<u32>,
}

/// What one histogram covers (`--per`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Per {
    /// One histogram per process (runqlat -P).
    #[default]
    Process,
    /// One histogram per thread too (runqlat -L); the process's is their sum.
    Thread,
}

/// A process the user asked about, resolved at start (it may exit while traced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tgid: u32,
    pub comm: String,
    /// The tids asked for with `--tid` (empty: the whole process via `--pid`).
    pub tids: Vec<u32>,
}

/// Resolves `--pid` and `--tid` arguments against /proc; unknown ids are usage errors.
pub fn resolve_targets(pids: &[u32], tids: &[u32]) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    for &pid in pids {
        let info = procinfo::task_info(pid)?
            .ok_or_else(|| UsageError(format!("no such process: PID {pid}")))?;
        if info.tgid != pid {
            return Err(UsageError(format!(
                "PID {pid} is a thread of process {}: use --tid {pid} for that thread or \
                 --pid {} for the whole process",
                info.tgid, info.tgid
            ))
            .into());
        }
        if !targets.iter().any(|t| t.tgid == pid) {
            targets.push(Target {
                tgid: pid,
                comm: info.comm,
                tids: Vec::new(),
            });
        }
    }
    for &tid in tids {
        let info = procinfo::task_info(tid)?
            .ok_or_else(|| UsageError(format!("no such thread: TID {tid}")))?;
        match targets.iter_mut().find(|t| t.tgid == info.tgid) {
            // The whole process is already traced: the tid adds nothing.
            Some(target) if target.tids.is_empty() => {}
            Some(target) => target.tids.push(tid),
            None => {
                let comm = procinfo::task_info(info.tgid)?.map_or(info.comm, |leader| leader.comm);
                targets.push(Target {
                    tgid: info.tgid,
                    comm,
                    tids: vec![tid],
                });
            }
        }
    }
    if targets.is_empty() {
        return Err(UsageError("nothing to trace: give --pid PID or --tid TID".into()).into());
    }
    Ok(targets)
}

/// What a trace covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `--pid`/`--tid`: fixed processes and threads.
    Tasks(Vec<Target>),
    /// `--cgroup`: the processes of a cgroup and its descendants, refreshed every second.
    Cgroup {
        dir: PathBuf,
        members: BTreeSet<u32>,
        /// Members the filter map could not take at the last refresh (warned once per change).
        untraced: usize,
    },
    /// Neither: every task on the machine (no kernel filter).
    Machine,
}

/// Resolves what to trace from `--pid`/`--tid`/`--cgroup`; nothing given: the whole machine.
pub fn resolve_scope(options: &TraceOptions) -> Result<Scope> {
    let has_tasks = !options.pids.is_empty() || !options.tids.is_empty();
    match &options.cgroup {
        Some(_) if has_tasks => Err(UsageError(
            "--cgroup cannot be combined with --pid/--tid: trace either a cgroup or tasks".into(),
        )
        .into()),
        Some(arg) => {
            let dir = cgroup::resolve(arg)?;
            let members = cgroup::member_tgids(&dir).map_err(|e| {
                UsageError(format!(
                    "cannot read the processes of cgroup {}: {e}",
                    dir.display()
                ))
            })?;
            Ok(Scope::Cgroup {
                dir,
                members,
                untraced: 0,
            })
        }
        None if has_tasks => Ok(Scope::Tasks(resolve_targets(&options.pids, &options.tids)?)),
        None => Ok(Scope::Machine),
    }
}

/// The `top` processes by total wait in the kernel's per-thread totals, named from /proc
/// (or the kernel's name of their first waiting thread once they are gone).
#[must_use]
pub fn top_targets(stats: &[(u32, TaskStats)], top: usize) -> Vec<Target> {
    // tgid → (total wait, the kernel's name: the leader's when it waited, else any thread's).
    let mut per_process: HashMap<u32, (u64, String)> = HashMap::new();
    for (tid, s) in stats {
        let entry = per_process
            .entry(s.tgid)
            .or_insert_with(|| (0, comm_str(&s.comm)));
        entry.0 += s.total_wait_ns;
        if *tid == s.tgid {
            entry.1 = comm_str(&s.comm);
        }
    }
    let mut ranked: Vec<(u32, u64, String)> = per_process
        .into_iter()
        .map(|(tgid, (total, comm))| (tgid, total, comm))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(top);
    ranked
        .into_iter()
        .map(|(tgid, _, comm)| Target {
            tgid,
            comm: procinfo::process_comm(tgid).unwrap_or(comm),
            tids: Vec::new(),
        })
        .collect()
}

/// Every wait of a cgroup or machine-wide trace (the JSON `total` object).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TotalSummary {
    /// `machine`, or `cgroup PATH`.
    pub scope: String,
    pub processes: usize,
    pub threads: usize,
    /// `count`, `total_wait_ns`, `p50_ns`, `p90_ns`, `p99_ns`, `max_ns` (flattened in JSON).
    #[serde(flatten)]
    pub summary: Summary,
    /// Events the ring buffer could not take (the totals are still exact).
    pub lost: u64,
    /// Waits missing from these totals because the kernel's per-thread map (16384 threads)
    /// was full.
    pub stats_map_full: u64,
    /// Waits missing from the histograms because the kernel's histogram map was full.
    pub hist_map_full: u64,
    #[serde(skip)]
    pub histogram: LatencyHistogram,
}

/// Sums every thread and histogram the kernel kept. Pure.
#[must_use]
pub fn total_summary(
    scope: String,
    stats: &[(u32, TaskStats)],
    histograms: &HashMap<u32, LatencyHistogram>,
    counters: &[u64],
) -> TotalSummary {
    let mut histogram = LatencyHistogram::default();
    for h in histograms.values() {
        histogram.merge(h);
    }
    let processes: BTreeSet<u32> = stats.iter().map(|(_, s)| s.tgid).collect();
    let summary = Summary::new(
        &histogram,
        stats.iter().map(|(_, s)| s.count).sum(),
        stats.iter().map(|(_, s)| s.total_wait_ns).sum(),
        stats.iter().map(|(_, s)| s.max_wait_ns).max().unwrap_or(0),
    );
    let counter = |c: Counter| counters.get(c as usize).copied().unwrap_or(0);
    TotalSummary {
        scope,
        processes: processes.len(),
        threads: stats.len(),
        summary,
        lost: stats.iter().map(|(_, s)| u64::from(s.lost_events)).sum(),
        stats_map_full: counter(Counter::StatsMapFull),
        hist_map_full: counter(Counter::HistMapFull),
        histogram,
    }
}

fn render_text_total(t: &TotalSummary, shown: usize, unit: TimeUnit) -> String {
    use events::{count_of, human_ns};
    let mut out = format!(
        "\nAll traced tasks ({}): {} in {} ({}), total {}, p50 {}, p90 {}, p99 {}, max {}, \
         lost events {}{}\n",
        t.scope,
        count_of(t.summary.count, "wait", "waits"),
        count_of(t.processes as u64, "process", "processes"),
        count_of(t.threads as u64, "thread", "threads"),
        human_ns(t.summary.total_wait_ns),
        human_ns(t.summary.p50_ns),
        human_ns(t.summary.p90_ns),
        human_ns(t.summary.p99_ns),
        human_ns(t.summary.max_ns),
        t.lost,
        if shown < t.processes {
            format!(
                "; the {} above waited longest",
                count_of(shown as u64, "process", "processes")
            )
        } else {
            String::new()
        }
    );
    if t.stats_map_full > 0 || t.hist_map_full > 0 {
        let _ = writeln!(
            out,
            "INCOMPLETE: the kernel's maps were full: {} waits missing from the totals, {} from \
             the histograms",
            t.stats_map_full, t.hist_map_full
        );
    }
    if t.summary.count > 0 {
        out.push_str(&t.histogram.render_log2(unit));
    }
    out
}

/// Long waits of one cause (the JSON summary's `causes` entries).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CauseTotal {
    pub cause: Cause,
    pub waits: u64,
    pub wait_ns: u64,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    pub tid: u32,
    pub comm: String,
    pub count: u64,
    pub total_wait_ns: u64,
    pub max_ns: u64,
    /// Quantiles of the thread's own histogram (`--per thread` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ns: Option<u64>,
    #[serde(skip)]
    pub histogram: Option<LatencyHistogram>,
}

/// `--per thread`: the kernel kept one histogram per tid. Sums them per process (for the
/// process summaries) and returns both maps. Pure.
#[must_use]
pub fn split_thread_histograms(
    stats: &[(u32, TaskStats)],
    thread_histograms: HashMap<u32, LatencyHistogram>,
) -> (
    HashMap<u32, LatencyHistogram>,
    HashMap<u32, LatencyHistogram>,
) {
    let tgid_of: HashMap<u32, u32> = stats.iter().map(|(tid, s)| (*tid, s.tgid)).collect();
    let mut per_process: HashMap<u32, LatencyHistogram> = HashMap::new();
    for (tid, histogram) in &thread_histograms {
        // A thread the stats map could not take has no known process (counted as
        // stats_map_full): it stays in the machine-wide total only.
        let tgid = tgid_of.get(tid).copied().unwrap_or(*tid);
        per_process.entry(tgid).or_default().merge(histogram);
    }
    (per_process, thread_histograms)
}

/// Gives each thread of `summaries` its own histogram and quantiles.
pub fn attach_thread_histograms(
    summaries: &mut [ProcessSummary],
    thread_histograms: &HashMap<u32, LatencyHistogram>,
) {
    for thread in summaries.iter_mut().flat_map(|s| s.threads.iter_mut()) {
        let histogram = thread_histograms
            .get(&thread.tid)
            .cloned()
            .unwrap_or_default();
        let summary = Summary::new(
            &histogram,
            thread.count,
            thread.total_wait_ns,
            thread.max_ns,
        );
        thread.p50_ns = Some(summary.p50_ns);
        thread.p90_ns = Some(summary.p90_ns);
        thread.p99_ns = Some(summary.p99_ns);
        thread.histogram = Some(histogram);
    }
}

/// One traced process at the end of a trace (the JSON `summary` object).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProcessSummary {
    pub tgid: u32,
    pub comm: String,
    /// `count`, `total_wait_ns`, `p50_ns`, `p90_ns`, `p99_ns`, `max_ns` (flattened in JSON).
    #[serde(flatten)]
    pub summary: Summary,
    /// Events of this process the ring buffer could not take (its totals are still exact).
    pub lost: u64,
    pub threads: Vec<ThreadSummary>,
    /// Waits at or above the threshold by diagnosed cause, most wait time first.
    pub causes: Vec<CauseTotal>,
    #[serde(skip)]
    pub histogram: LatencyHistogram,
}

/// Builds per-process summaries from the kernel's per-thread totals and histograms. Pure.
#[must_use]
pub fn summarize(
    targets: &[Target],
    stats: &[(u32, TaskStats)],
    histograms: &HashMap<u32, LatencyHistogram>,
) -> Vec<ProcessSummary> {
    targets
        .iter()
        .map(|target| {
            let mut threads: Vec<ThreadSummary> = stats
                .iter()
                .filter(|(_, s)| s.tgid == target.tgid)
                .map(|(tid, s)| ThreadSummary {
                    tid: *tid,
                    // The kernel keeps the name from the thread's first wait, which for a new
                    // thread is often still its parent's; prefer the current one while it lives.
                    comm: procinfo::thread_comm(target.tgid, *tid)
                        .unwrap_or_else(|| comm_str(&s.comm)),
                    count: s.count,
                    total_wait_ns: s.total_wait_ns,
                    max_ns: s.max_wait_ns,
                    p50_ns: None,
                    p90_ns: None,
                    p99_ns: None,
                    histogram: None,
                })
                .collect();
            threads.sort_by_key(|t| std::cmp::Reverse(t.total_wait_ns));
            let lost = stats
                .iter()
                .filter(|(_, s)| s.tgid == target.tgid)
                .map(|(_, s)| u64::from(s.lost_events))
                .sum();
            let histogram = histograms.get(&target.tgid).cloned().unwrap_or_default();
            let summary = Summary::new(
                &histogram,
                threads.iter().map(|t| t.count).sum(),
                threads.iter().map(|t| t.total_wait_ns).sum(),
                threads.iter().map(|t| t.max_ns).max().unwrap_or(0),
            );
            ProcessSummary {
                tgid: target.tgid,
                comm: target.comm.clone(),
                summary,
                lost,
                threads,
                causes: Vec::new(),
                histogram,
            }
        })
        .collect()
}

fn render_text_summary(s: &ProcessSummary, unit: TimeUnit) -> String {
    use events::{count_of, human_ns};
    let mut out = format!(
        "\nPID {} ({}): {}, total {}, p50 {}, p90 {}, p99 {}, max {}, lost events {}\n",
        s.tgid,
        s.comm,
        count_of(s.summary.count, "wait", "waits"),
        human_ns(s.summary.total_wait_ns),
        human_ns(s.summary.p50_ns),
        human_ns(s.summary.p90_ns),
        human_ns(s.summary.p99_ns),
        human_ns(s.summary.max_ns),
        s.lost
    );
    if !s.causes.is_empty() {
        let causes: Vec<String> = s
            .causes
            .iter()
            .map(|c| format!("{} {} ({})", c.cause.name(), c.waits, human_ns(c.wait_ns)))
            .collect();
        let _ = writeln!(out, "Long waits by cause: {}", causes.join(", "));
    }
    if s.summary.count > 0 {
        out.push_str(&s.histogram.render_log2(unit));
        let _ = writeln!(
            out,
            "  {:<8} {:<16} {:>8} {:>10} {:>10}",
            "TID", "COMM", "WAITS", "TOTAL", "MAX"
        );
        for t in &s.threads {
            let _ = writeln!(
                out,
                "  {:<8} {:<16} {:>8} {:>10} {:>10}",
                t.tid,
                t.comm,
                t.count,
                human_ns(t.total_wait_ns),
                human_ns(t.max_ns)
            );
        }
        for t in s.threads.iter().filter(|t| t.count > 0) {
            if let (Some(histogram), Some(p50), Some(p90), Some(p99)) =
                (&t.histogram, t.p50_ns, t.p90_ns, t.p99_ns)
            {
                let _ = writeln!(
                    out,
                    "\n  TID {} ({}): {}, total {}, p50 {}, p90 {}, p99 {}, max {}",
                    t.tid,
                    t.comm,
                    count_of(t.count, "wait", "waits"),
                    human_ns(t.total_wait_ns),
                    human_ns(p50),
                    human_ns(p90),
                    human_ns(p99),
                    human_ns(t.max_ns)
                );
                out.push_str(&histogram.render_log2(unit));
            }
        }
    }
    out
}

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`, to show event times (monotonic) as wall-clock time.
fn realtime_offset_ns() -> u64 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into a valid timespec.
        unsafe { libc::clock_gettime(clock, &raw mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    now(libc::CLOCK_REALTIME).saturating_sub(now(libc::CLOCK_MONOTONIC))
}

/// Loads and attaches the trace programs for `scope` (a cgroup's members join the filter).
fn load_probes(options: &TraceOptions, scope: &mut Scope) -> Result<Probes> {
    let filter = match &*scope {
        Scope::Tasks(targets) => Some(kernel_filter(targets)),
        // Members are added right after load: the filter map holds 1024 processes and a
        // larger cgroup must not fail the load.
        Scope::Cgroup { .. } => Some(TaskFilter {
            dynamic: true,
            ..TaskFilter::default()
        }),
        Scope::Machine => None,
    };
    let mut probes = Probes::load(&ProbeConfig {
        filter,
        min_event_ns: Some(options.threshold_ns),
        task_stats: true,
        hist_per_thread: options.per == Per::Thread,
        force_pid_hash: options.force_pid_hash,
        diagnose: options.diagnose,
        ..ProbeConfig::default()
    })?;
    if let Scope::Cgroup {
        dir,
        members,
        untraced,
    } = scope
    {
        let all: Vec<u32> = members.iter().copied().collect();
        let refused = probes.update_filter_tgids(&all, &[])?;
        warn_refused(dir, &refused, untraced);
        members.retain(|m| !refused.contains(m));
    }
    Ok(probes)
}

/// Runs a trace until `stop` is set, the duration elapses, or every traced task is gone.
pub fn run(options: &TraceOptions, out: &mut dyn Write, stop: &Arc<AtomicBool>) -> Result<()> {
    let mut scope = resolve_scope(options)?;
    let prepared = WaitReader::prepare();
    let mut probes = load_probes(options, &mut scope)?;
    let mut ring = probes.take_events()?;
    announce(options, &scope);
    let mut printer = EventPrinter {
        out,
        format: options.format,
        realtime_offset_ns: realtime_offset_ns(),
        open: true,
        reader: prepared.attach(&mut probes),
        causes: HashMap::new(),
        waker_names: TtlCache::new(WAKER_NAME_TTL, WAKER_NAMES_MAX),
    };
    if options.format == OutputFormat::Text {
        printer.open = writeln_or_stop(printer.out, events::TEXT_HEADER)?;
    }
    let mut intervals = IntervalState::default();
    let last_boundary = follow(
        &mut ring,
        &mut printer,
        options,
        &mut scope,
        stop,
        &mut probes,
        &mut intervals,
    )?;
    if options.interval.is_some() {
        // Stopped before --count intervals (Ctrl-C, --duration, tasks gone): the part since
        // the last boundary is an interval of its own.
        if !intervals.done(options) {
            let length = last_boundary.elapsed();
            print_interval(
                &mut printer,
                options,
                &scope,
                &probes,
                &mut intervals,
                length,
            )?;
        }
        let counters = probes.counters()?;
        drop(ring);
        drop(probes);
        let _ = printer.out.flush();
        report_counters(&counters);
        return Ok(());
    }

    let stats = probes.task_stats()?;
    let (histograms, thread_histograms) = match options.per {
        Per::Process => (probes.histograms()?, HashMap::new()),
        Per::Thread => split_thread_histograms(&stats, probes.histograms()?),
    };
    let counters = probes.counters()?;
    let (mut summaries, total) = report(
        &scope,
        options.top,
        &stats,
        &histograms,
        &counters,
        &mut printer.causes,
    );
    if options.per == Per::Thread {
        attach_thread_histograms(&mut summaries, &thread_histograms);
    }
    drop(ring);
    drop(probes); // detach before printing, so a slow reader does not keep programs attached
    if printer.open {
        print_summaries(printer.out, options.format, options.unit, &summaries)?;
        if let Some(total) = &total {
            print_total(
                printer.out,
                options.format,
                options.unit,
                total,
                summaries.len(),
            )?;
        }
    }
    report_counters(&counters);
    Ok(())
}

/// The per-process summaries (the `top` processes by total wait when tracing a cgroup or the
/// machine) and, then, the total of every wait.
fn report(
    scope: &Scope,
    top: usize,
    stats: &[(u32, TaskStats)],
    histograms: &HashMap<u32, LatencyHistogram>,
    counters: &[u64],
    causes: &mut HashMap<u32, BTreeMap<Cause, (u64, u64)>>,
) -> (Vec<ProcessSummary>, Option<TotalSummary>) {
    let (targets, total) = match scope {
        Scope::Tasks(targets) => (targets.clone(), None),
        Scope::Cgroup { dir, .. } => (
            top_targets(stats, top),
            Some(total_summary(
                format!("cgroup {}", dir.display()),
                stats,
                histograms,
                counters,
            )),
        ),
        Scope::Machine => (
            top_targets(stats, top),
            Some(total_summary("machine".into(), stats, histograms, counters)),
        ),
    };
    let mut summaries = summarize(&targets, stats, histograms);
    for summary in &mut summaries {
        if total.is_some() {
            // A process may have thousands of threads: show the ones that waited longest.
            summary.threads.truncate(top);
        }
        if let Some(causes) = causes.remove(&summary.tgid) {
            summary.causes = causes
                .into_iter()
                .map(|(cause, (waits, wait_ns))| CauseTotal {
                    cause,
                    waits,
                    wait_ns,
                })
                .collect();
            summary.causes.sort_by_key(|c| std::cmp::Reverse(c.wait_ns));
        }
    }
    (summaries, total)
}

/// Says (once per change of their number) that some of a cgroup's processes are not traced.
fn warn_refused(dir: &std::path::Path, refused: &[u32], untraced: &mut usize) {
    let changed = refused.len() != *untraced;
    *untraced = refused.len();
    if changed && !refused.is_empty() {
        say!(
            "schedlat: the kernel's process filter (1024 processes) is full: {} processes of \
             cgroup {} are NOT traced (e.g. PID {})",
            refused.len(),
            dir.display(),
            refused[0]
        );
    }
}

fn print_total(
    out: &mut dyn Write,
    format: OutputFormat,
    unit: TimeUnit,
    total: &TotalSummary,
    shown: usize,
) -> Result<()> {
    let text = match format {
        OutputFormat::Text => render_text_total(total, shown, unit),
        OutputFormat::Json => serde_json::to_string(&serde_json::json!({ "total": total }))?,
    };
    writeln_or_stop(out, &text)?;
    let _ = out.flush();
    Ok(())
}

/// The kernel's cumulative maps at the previous interval boundary.
#[derive(Default)]
struct IntervalState {
    stats: HashMap<u32, TaskStats>,
    histograms: HashMap<u32, LatencyHistogram>,
    printed: u32,
}

impl IntervalState {
    fn done(&self, options: &TraceOptions) -> bool {
        options.count.is_some_and(|n| self.printed >= n)
    }
}

/// The waits between two reads of the kernel's cumulative per-thread totals. The maximum of
/// an interval is exact when it was a new all-time maximum of its thread; otherwise only the
/// interval's histogram bounds it (`None` here; the caller takes the histogram's top). Pure.
#[must_use]
pub fn stats_since(
    now: &[(u32, TaskStats)],
    earlier: &HashMap<u32, TaskStats>,
) -> Vec<(u32, TaskStats, bool)> {
    now.iter()
        .filter_map(|(tid, s)| {
            let before = earlier.get(tid).copied().unwrap_or_default();
            let count = s.count.saturating_sub(before.count);
            (count > 0).then(|| {
                let new_max = s.max_wait_ns > before.max_wait_ns;
                (
                    *tid,
                    TaskStats {
                        count,
                        total_wait_ns: s.total_wait_ns.saturating_sub(before.total_wait_ns),
                        lost_events: s.lost_events.saturating_sub(before.lost_events),
                        ..*s
                    },
                    new_max,
                )
            })
        })
        .collect()
}

/// Reads the kernel's maps and prints what happened since the previous interval.
fn print_interval(
    printer: &mut EventPrinter<'_>,
    options: &TraceOptions,
    scope: &Scope,
    probes: &Probes,
    state: &mut IntervalState,
    length: Duration,
) -> Result<()> {
    let stats_now = probes.task_stats()?;
    let histograms_now = probes.histograms()?;
    let counters = probes.counters()?;
    let histograms: HashMap<u32, LatencyHistogram> = histograms_now
        .iter()
        .map(|(key, h)| {
            let since = state
                .histograms
                .get(key)
                .map_or_else(|| h.clone(), |before| h.since(before));
            (*key, since)
        })
        .filter(|(_, h)| h.count() > 0)
        .collect();
    let delta = stats_since(&stats_now, &state.stats);
    let stats: Vec<(u32, TaskStats)> = delta
        .iter()
        .map(|(tid, s, new_max)| {
            let mut s = *s;
            if !new_max {
                // Not a new maximum: the top of this thread's (or its process's) histogram
                // of the interval, within one slot.
                let key = if options.per == Per::Thread {
                    *tid
                } else {
                    s.tgid
                };
                s.max_wait_ns = histograms
                    .get(&key)
                    .and_then(|h| h.quantile(1.0))
                    .unwrap_or(0)
                    .min(s.max_wait_ns);
            }
            (*tid, s)
        })
        .collect();
    let (process_histograms, thread_histograms) = match options.per {
        Per::Process => (histograms, HashMap::new()),
        Per::Thread => split_thread_histograms(&stats_now, histograms),
    };
    let (mut summaries, total) = report(
        scope,
        options.top,
        &stats,
        &process_histograms,
        &counters,
        &mut printer.causes,
    );
    // Causes of processes not shown must not carry over into the next interval.
    printer.causes.clear();
    if options.per == Per::Thread {
        attach_thread_histograms(&mut summaries, &thread_histograms);
    }
    state.stats = stats_now.into_iter().collect();
    state.histograms = histograms_now;
    state.printed += 1;
    if !printer.open {
        return Ok(());
    }
    let time = crate::host::clock::rfc3339(realtime_now_ns());
    let text = match options.format {
        OutputFormat::Text => {
            let mut text = format!(
                "\n{time}: interval {}{} ({})",
                state.printed,
                options
                    .count
                    .map(|n| format!(" of {n}"))
                    .unwrap_or_default(),
                events::human_ns(length.as_nanos() as u64)
            );
            for summary in &summaries {
                text.push_str(&render_text_summary(summary, options.unit));
            }
            if let Some(total) = &total {
                text.push_str(&render_text_total(total, summaries.len(), options.unit));
            }
            text
        }
        OutputFormat::Json => serde_json::to_string(&serde_json::json!({
            "interval": {
                "time": time,
                "index": state.printed,
                "seconds": length.as_secs_f64(),
                "summaries": summaries,
                "total": total,
            }
        }))?,
    };
    printer.open = writeln_or_stop(printer.out, &text)?;
    Ok(())
}

pub(crate) fn realtime_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the kernel filters on: whole processes by tgid, single threads by tid.
fn kernel_filter(targets: &[Target]) -> TaskFilter {
    TaskFilter {
        tgids: targets
            .iter()
            .filter(|t| t.tids.is_empty())
            .map(|t| t.tgid)
            .collect(),
        tids: targets.iter().flat_map(|t| t.tids.clone()).collect(),
        dynamic: false,
    }
}

/// Says on stderr what is traced, from which threshold, for how long.
fn announce(options: &TraceOptions, scope: &Scope) {
    let what = match scope {
        Scope::Tasks(targets) => targets
            .iter()
            .map(|t| {
                if t.tids.is_empty() {
                    format!("PID {} ({})", t.tgid, t.comm)
                } else {
                    let tids: Vec<String> = t.tids.iter().map(ToString::to_string).collect();
                    format!(
                        "{} {} of PID {} ({})",
                        if t.tids.len() == 1 { "TID" } else { "TIDs" },
                        tids.join(", "),
                        t.tgid,
                        t.comm
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        Scope::Cgroup { dir, members, .. } => format!(
            "the {} of cgroup {} and its descendants (refreshed every second)",
            events::count_of(members.len() as u64, "process", "processes"),
            dir.display()
        ),
        Scope::Machine => "every task on the machine".to_owned(),
    };
    say!(
        "Tracing run-queue waits of {what}; printing waits >= {}{}. Ctrl-C to stop.",
        events::human_ns(options.threshold_ns),
        options
            .duration
            .map(|d| format!(" for {}", events::human_ns(d.as_nanos() as u64)))
            .unwrap_or_default()
    );
}

/// What the diagnosis asks of the host.
struct TraceHost<'a> {
    cgroups: &'a mut CgroupResolver,
    probes: &'a Probes,
    /// tid → its cgroup id: a machine-wide trace diagnoses every long wait, and a task that
    /// waits often is read from /proc once per `WAKER_NAME_TTL`.
    cgroup_ids: &'a mut TtlCache<u32, Option<u64>>,
}

impl Host for TraceHost<'_> {
    fn cgroup_label(&mut self, id: u64) -> String {
        self.cgroups.path(id)
    }

    fn cgroup_id_of(&mut self, tid: u32) -> Option<u64> {
        let cgroups = &*self.cgroups;
        *self
            .cgroup_ids
            .get_or_read(tid, Duration::ZERO, || cgroups.id_of_task(tid))
    }

    fn other_cpus(&mut self) -> Option<Vec<agent_common::OccupancyRing>> {
        self.probes.occupancy().ok()
    }
}

/// The work of the diagnosis done before the programs are loaded, so they do not see it.
pub(crate) struct Prepared {
    diagnoser: Diagnoser,
    cgroups: CgroupResolver,
}

impl Prepared {
    /// The reader of the loaded programs' long waits (and throttle records).
    pub(crate) fn attach(self, probes: &mut Probes) -> WaitReader {
        WaitReader {
            diagnoser: self
                .diagnoser
                .with_throttling(probes.throttle_observable(), probes.throttle_clock()),
            throttle_ring: probes.take_throttles(),
            cgroups: self.cgroups,
            cgroup_ids: TtlCache::new(WAKER_NAME_TTL, WAKER_NAMES_MAX),
        }
    }
}

/// Reads the long waits from the ring buffer and diagnoses them (`trace` and `top`).
pub(crate) struct WaitReader {
    diagnoser: Diagnoser,
    throttle_ring: Option<RingBuf<MapData>>,
    pub(crate) cgroups: CgroupResolver,
    cgroup_ids: TtlCache<u32, Option<u64>>,
}

impl WaitReader {
    /// The diagnosis' one-off work and a first walk of the cgroup tree.
    pub(crate) fn prepare() -> Prepared {
        let mut cgroups = CgroupResolver::new();
        cgroups.warm();
        Prepared {
            diagnoser: Diagnoser::prepare(),
            cgroups,
        }
    }

    /// Hands every event waiting in the ring buffer to `each`, with its diagnosis when the
    /// programs sent its CPU's history (after taking the kernel's throttle records, which the
    /// waits they explain follow).
    pub(crate) fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        probes: &Probes,
        mut each: impl FnMut(&agent_common::WaitEvent, Option<&Diagnosis>) -> Result<()>,
    ) -> Result<()> {
        if let Some(throttles) = &mut self.throttle_ring {
            self.diagnoser.throttles.drain(throttles);
        }
        while let Some(bytes) = ring.next() {
            let record = events::decode_record(&bytes)?;
            drop(bytes);
            let diagnosis = record.diag().map(|d| {
                self.diagnoser.diagnose(
                    d,
                    &mut TraceHost {
                        cgroups: &mut self.cgroups,
                        probes,
                        cgroup_ids: &mut self.cgroup_ids,
                    },
                )
            });
            each(record.event(), diagnosis.as_ref())?;
        }
        Ok(())
    }
}

/// Where events go; `open` turns false once the reader has gone (a closed pipe).
struct EventPrinter<'a> {
    out: &'a mut dyn Write,
    format: OutputFormat,
    realtime_offset_ns: u64,
    open: bool,
    reader: WaitReader,
    /// tgid → cause → (waits, wait time).
    causes: HashMap<u32, BTreeMap<Cause, (u64, u64)>>,
    /// Waker tid → its name: one /proc read per waker and second, however many of its wakees
    /// wait long (a machine-wide trace may print thousands a second).
    waker_names: TtlCache<u32, String>,
}

/// How long a waker's name (or a waiting task's cgroup id) read from /proc is reused.
const WAKER_NAME_TTL: Duration = Duration::from_secs(1);
/// Names (cgroup ids) cached at most; the cache starts over beyond (bounded memory).
const WAKER_NAMES_MAX: usize = 4096;

impl EventPrinter<'_> {
    /// Prints every event waiting in the ring buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, probes: &Probes) -> Result<()> {
        let Self {
            out,
            format,
            realtime_offset_ns,
            open,
            reader,
            causes,
            waker_names,
        } = self;
        reader.drain(ring, probes, |event, diagnosis| {
            if let Some(d) = diagnosis {
                let total = causes
                    .entry(event.tgid)
                    .or_default()
                    .entry(d.cause)
                    .or_default();
                total.0 += 1;
                total.1 += event.wait_ns;
            }
            if *open {
                let waker_comm = waker_comm(waker_names, event);
                *open = print_event(
                    *out,
                    *format,
                    event,
                    diagnosis,
                    *realtime_offset_ns,
                    waker_comm,
                )?;
            }
            Ok(())
        })
    }
}

/// The waker thread's current name (escaped), empty when the task was preempted (no waker)
/// or the waker is gone.
fn waker_comm(names: &mut TtlCache<u32, String>, event: &agent_common::WaitEvent) -> String {
    if event.flags & agent_common::FLAG_PREEMPTED != 0 || event.waker_tid == 0 {
        return String::new();
    }
    names
        .get_or_read(event.waker_tid, Duration::ZERO, || {
            procinfo::thread_comm(event.waker_tgid, event.waker_tid).unwrap_or_default()
        })
        .clone()
}

/// Prints events until the duration ends, a signal stops the trace, the reader goes away or
/// every traced task has exited.
fn follow(
    ring: &mut RingBuf<MapData>,
    printer: &mut EventPrinter<'_>,
    options: &TraceOptions,
    scope: &mut Scope,
    stop: &Arc<AtomicBool>,
    probes: &mut Probes,
    intervals: &mut IntervalState,
) -> Result<Instant> {
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut next_liveness = started + LIVENESS_INTERVAL;
    let mut interval_start = started;
    loop {
        let mut timeout = POLL_INTERVAL;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        if let Some(length) = options.interval {
            timeout =
                timeout.min((interval_start + length).saturating_duration_since(Instant::now()));
        }
        wait_readable(ring.as_raw_fd(), timeout);
        printer.drain(ring, &*probes)?;
        if printer.open && printer.out.flush().is_err() {
            printer.open = false;
        }
        if !printer.open || stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if let Some(length) = options.interval
            && now >= interval_start + length
        {
            print_interval(printer, options, scope, probes, intervals, length)?;
            interval_start += length;
            if intervals.done(options) {
                break;
            }
        }
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_liveness {
            next_liveness = now + LIVENESS_INTERVAL;
            if !refresh(scope, probes)? {
                break;
            }
        }
    }
    // Events already in the ring buffer still belong to the trace.
    printer.drain(ring, probes)?;
    Ok(interval_start)
}

fn print_summaries(
    out: &mut dyn Write,
    format: OutputFormat,
    unit: TimeUnit,
    summaries: &[ProcessSummary],
) -> Result<()> {
    for summary in summaries {
        let text = match format {
            OutputFormat::Text => render_text_summary(summary, unit),
            OutputFormat::Json => {
                serde_json::to_string(&serde_json::json!({ "summary": summary }))?
            }
        };
        if !writeln_or_stop(out, &text)? {
            break;
        }
    }
    let _ = out.flush();
    Ok(())
}

/// Once a second: `false` when the trace should end (every traced task gone, the cgroup
/// removed); a cgroup's new processes join the kernel filter and those gone leave it.
fn refresh(scope: &mut Scope, probes: &mut Probes) -> Result<bool> {
    match scope {
        Scope::Tasks(targets) => {
            let alive = any_alive(&kernel_filter(targets))?;
            if !alive {
                say!("All traced tasks have exited.");
            }
            Ok(alive)
        }
        Scope::Cgroup {
            dir,
            members,
            untraced,
        } => {
            let now = match cgroup::member_tgids(dir) {
                Ok(now) => now,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    say!("Cgroup {} was removed.", dir.display());
                    return Ok(false);
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading the processes of {}", dir.display()));
                }
            };
            let added: Vec<u32> = now.difference(members).copied().collect();
            let gone: Vec<u32> = members.difference(&now).copied().collect();
            // Refused processes are retried at every refresh (others may have left).
            let refused = probes.update_filter_tgids(&added, &gone)?;
            warn_refused(dir, &refused, untraced);
            *members = now;
            members.retain(|m| !refused.contains(m));
            Ok(true)
        }
        Scope::Machine => Ok(true),
    }
}

fn any_alive(filter: &TaskFilter) -> Result<bool> {
    for &id in filter.tgids.iter().chain(&filter.tids) {
        if procinfo::task_info(id)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn report_counters(counters: &[u64]) {
    let dropped: Vec<String> = Counter::ALL
        .iter()
        .filter(|c| !matches!(c, Counter::Samples | Counter::EventsSubmitted))
        .filter(|c| counters[**c as usize] > 0)
        .map(|c| format!("{}={}", c.name(), counters[*c as usize]))
        .collect();
    say!(
        "schedlat: {} measured, {} delivered; {}",
        events::count_of(counters[Counter::Samples as usize], "wait", "waits"),
        events::count_of(
            counters[Counter::EventsSubmitted as usize],
            "event",
            "events",
        ),
        if dropped.is_empty() {
            "nothing dropped".to_owned()
        } else {
            format!("dropped: {}", dropped.join(" "))
        }
    );
}

/// Prints one event; `Ok(false)` when the reader went away (broken pipe).
fn print_event(
    out: &mut dyn Write,
    format: OutputFormat,
    event: &agent_common::WaitEvent,
    diagnosis: Option<&Diagnosis>,
    realtime_offset: u64,
    waker_comm: String,
) -> Result<bool> {
    let line = match format {
        OutputFormat::Text => {
            events::text_line(event, diagnosis, event.ts_ns + realtime_offset, &waker_comm)
        }
        OutputFormat::Json => {
            let mut json = EventJson::new(event, realtime_offset);
            json.waker_comm = waker_comm;
            let json = match diagnosis {
                Some(d) => json.with_diagnosis(d),
                None => json,
            };
            serde_json::to_string(&json)?
        }
    };
    writeln_or_stop(out, &line)
}

pub(crate) fn writeln_or_stop(out: &mut dyn Write, line: &str) -> Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing output"),
    }
}

/// Waits until the ring buffer fd is readable (the kernel forced a wakeup), `timeout`
/// elapses, or a signal arrives.
pub(crate) fn wait_readable(fd: i32, timeout: Duration) {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; EINTR (a signal) just returns early, which is what we want.
    unsafe { libc::poll(&raw mut pollfd, 1, timeout.as_millis() as i32) };
}

#[cfg(test)]
mod tests {
    use agent_common::TASK_COMM_LEN;

    use super::*;

    fn stats(tgid: u32, count: u64, total: u64, max: u64, comm: &str) -> TaskStats {
        let mut c = [0u8; TASK_COMM_LEN];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        TaskStats {
            count,
            total_wait_ns: total,
            max_wait_ns: max,
            tgid,
            lost_events: 1,
            comm: c,
        }
    }

    #[test]
    fn summaries_group_threads_by_process() {
        // Ids above pid_max (2^22), so no live thread's /proc name is picked up.
        let targets = vec![
            Target {
                tgid: 4_000_010,
                comm: "app".into(),
                tids: vec![],
            },
            Target {
                tgid: 4_000_020,
                comm: "idle".into(),
                tids: vec![],
            },
        ];
        let stats = vec![
            (4_000_010, stats(4_000_010, 3, 3_000, 2_000, "app")),
            (4_000_011, stats(4_000_010, 2, 9_000, 8_000, "worker")),
            (4_000_030, stats(4_000_030, 5, 1, 1, "other")),
        ];
        let mut hist = LatencyHistogram::default();
        for ns in [500, 500, 2_000, 1_000, 8_000] {
            hist.record(ns);
        }
        let histograms = HashMap::from([(4_000_010, hist)]);
        let summaries = summarize(&targets, &stats, &histograms);
        assert_eq!(summaries.len(), 2);
        let app = &summaries[0];
        assert_eq!(
            (
                app.summary.count,
                app.summary.total_wait_ns,
                app.summary.max_ns,
                app.lost
            ),
            (5, 12_000, 8_000, 2)
        );
        assert_eq!(
            app.threads[0].tid, 4_000_011,
            "threads sorted by total wait"
        );
        assert_eq!(app.threads[0].comm, "worker");
        assert!(
            app.summary.p50_ns >= 985 && app.summary.p50_ns <= 1_015,
            "{app:?}"
        );
        assert!(
            app.summary.p99_ns <= 8_000 && app.summary.p99_ns >= 8_000 - 8_000 / 32,
            "p99 within one slot below the exact max: {app:?}"
        );
        let idle = &summaries[1];
        assert_eq!(
            (idle.summary.count, idle.summary.p99_ns, idle.threads.len()),
            (0, 0, 0)
        );

        let json = serde_json::to_value(serde_json::json!({ "summary": app })).expect("json");
        for key in [
            "tgid",
            "comm",
            "count",
            "total_wait_ns",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "max_ns",
            "lost",
        ] {
            assert!(json["summary"].get(key).is_some(), "missing {key}: {json}");
        }
    }

    #[test]
    fn unknown_pid_is_a_usage_error() {
        // PIDs are below /proc/sys/kernel/pid_max (at most 2^22), so this one cannot exist.
        let err = resolve_targets(&[4_999_999], &[]).expect_err("no such pid");
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
        assert!(err.to_string().contains("no such process"), "{err}");
        let err = resolve_targets(&[], &[]).expect_err("nothing");
        assert!(err.downcast_ref::<UsageError>().is_some());
    }

    fn options() -> TraceOptions {
        TraceOptions {
            pids: Vec::new(),
            tids: Vec::new(),
            cgroup: None,
            top: 20,
            threshold_ns: 1_000_000,
            duration: None,
            format: OutputFormat::Text,
            unit: TimeUnit::Us,
            force_pid_hash: false,
            diagnose: true,
            per: Per::Process,
            interval: None,
            count: None,
        }
    }

    #[test]
    fn scope_is_the_machine_a_cgroup_or_tasks() {
        assert_eq!(resolve_scope(&options()).expect("machine"), Scope::Machine);
        let me = std::process::id();
        let tasks = resolve_scope(&TraceOptions {
            pids: vec![me],
            ..options()
        })
        .expect("tasks");
        assert!(
            matches!(&tasks, Scope::Tasks(t) if t[0].tgid == me),
            "{tasks:?}"
        );
        let err = resolve_scope(&TraceOptions {
            cgroup: Some("/no-such-cgroup-schedlat".into()),
            ..options()
        })
        .expect_err("unknown cgroup");
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
        assert!(err.to_string().contains("no such cgroup"), "{err}");
        let err = resolve_scope(&TraceOptions {
            pids: vec![me],
            cgroup: Some("/".into()),
            ..options()
        })
        .expect_err("both");
        assert!(err.to_string().contains("cannot be combined"), "{err}");
    }

    #[test]
    fn top_targets_rank_processes_by_total_wait() {
        let stats = vec![
            (4_000_010, stats(4_000_010, 3, 3_000, 2_000, "app")),
            (4_000_011, stats(4_000_010, 2, 9_000, 8_000, "worker")),
            (4_000_031, stats(4_000_030, 5, 20_000, 9_000, "thread")),
            (4_000_030, stats(4_000_030, 1, 1, 1, "leader")),
            (4_000_040, stats(4_000_040, 1, 5, 5, "small")),
        ];
        let top = top_targets(&stats, 2);
        let ranked: Vec<(u32, &str)> = top.iter().map(|t| (t.tgid, t.comm.as_str())).collect();
        assert_eq!(
            ranked,
            vec![(4_000_030, "leader"), (4_000_010, "app")],
            "most total wait first, named after the leader, bounded by --top"
        );

        let mut hist = LatencyHistogram::default();
        hist.record(1_000);
        let mut other = LatencyHistogram::default();
        other.record(8_000);
        let histograms = HashMap::from([(4_000_010, hist), (4_000_030, other)]);
        let mut counters = [0u64; agent_common::COUNTER_COUNT as usize];
        counters[Counter::StatsMapFull as usize] = 7;
        let total = total_summary("machine".into(), &stats, &histograms, &counters);
        assert_eq!(
            (
                total.processes,
                total.threads,
                total.summary.count,
                total.summary.total_wait_ns,
                total.summary.max_ns,
                total.lost,
                total.stats_map_full,
                total.histogram.count()
            ),
            (3, 5, 12, 32_006, 9_000, 5, 7, 2)
        );
        let text = render_text_total(&total, 2, TimeUnit::Us);
        assert!(
            text.contains("12 waits in 3 processes (5 threads)"),
            "{text}"
        );
        assert!(text.contains("the 2 processes above"), "{text}");
        assert!(
            text.contains("INCOMPLETE"),
            "map-full drops are never silent: {text}"
        );
    }

    #[test]
    fn thread_histograms_sum_into_their_process() {
        let stats = vec![
            (4_000_010, stats(4_000_010, 1, 1_000, 1_000, "app")),
            (4_000_011, stats(4_000_010, 1, 8_000, 8_000, "worker")),
        ];
        let mut leader = LatencyHistogram::default();
        leader.record(1_000);
        let mut worker = LatencyHistogram::default();
        worker.record(8_000);
        let threads = HashMap::from([(4_000_010, leader), (4_000_011, worker)]);
        let (processes, threads) = split_thread_histograms(&stats, threads);
        assert_eq!(processes.len(), 1, "{processes:?}");
        assert_eq!(processes[&4_000_010].count(), 2);
        let targets = vec![Target {
            tgid: 4_000_010,
            comm: "app".into(),
            tids: vec![],
        }];
        let mut summaries = summarize(&targets, &stats, &processes);
        attach_thread_histograms(&mut summaries, &threads);
        let worker = summaries[0]
            .threads
            .iter()
            .find(|t| t.tid == 4_000_011)
            .expect("worker");
        assert!(
            worker.p50_ns.is_some_and(|p| p > 7_000 && p <= 8_000),
            "the worker's own p50, not the process's: {worker:?}"
        );
        let text = render_text_summary(&summaries[0], TimeUnit::Us);
        assert!(text.contains("TID 4000011 (worker): 1 wait,"), "{text}");
    }

    #[test]
    fn intervals_difference_the_cumulative_totals() {
        let earlier = HashMap::from([
            (4_000_010, stats(4_000_010, 3, 3_000, 2_000, "app")),
            (4_000_011, stats(4_000_010, 2, 9_000, 8_000, "worker")),
        ]);
        let now = vec![
            (4_000_010, stats(4_000_010, 5, 8_000, 4_000, "app")),
            (4_000_011, stats(4_000_010, 2, 9_000, 8_000, "worker")),
            (4_000_012, stats(4_000_010, 1, 700, 700, "new")),
        ];
        let delta = stats_since(&now, &earlier);
        let summary: Vec<(u32, u64, u64, u64, bool)> = delta
            .iter()
            .map(|(tid, s, new_max)| (*tid, s.count, s.total_wait_ns, s.max_wait_ns, *new_max))
            .collect();
        assert_eq!(
            summary,
            vec![
                (4_000_010, 2, 5_000, 4_000, true),
                (4_000_012, 1, 700, 700, true),
            ],
            "idle threads drop out; a thread new since the last read counts whole"
        );
    }

    #[test]
    fn own_process_resolves() {
        let me = std::process::id();
        let targets = resolve_targets(&[me], &[me]).expect("self");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].tgid, me);
        assert!(targets[0].tids.is_empty(), "--pid covers the --tid");
    }
}
