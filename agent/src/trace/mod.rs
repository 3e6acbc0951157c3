//! `schedlat trace`: ad-hoc per-process run-queue latency tracing.
//!
//! The kernel filters by tgid/tid, keeps exact per-thread totals and a per-process histogram of
//! every wait, and sends only waits at or above the threshold as events. This loop prints those
//! events and, at the end, the per-process summaries.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::{self, Write},
    os::fd::AsRawFd as _,
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
    host::{cgroups::CgroupResolver, procinfo},
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
    pub threshold_ns: u64,
    pub duration: Option<Duration>,
    pub format: OutputFormat,
    /// Unit of the log2 histograms in text output.
    pub unit: TimeUnit,
    pub force_pid_hash: bool,
    /// Diagnose long waits (who held the CPU, why).
    pub diagnose: bool,
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
}

/// One traced process at the end of a trace (the JSON `summary` object).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProcessSummary {
    pub tgid: u32,
    pub comm: String,
    pub count: u64,
    pub total_wait_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
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
                count: summary.count,
                total_wait_ns: summary.total_wait_ns,
                p50_ns: summary.p50_ns,
                p90_ns: summary.p90_ns,
                p99_ns: summary.p99_ns,
                max_ns: summary.max_ns,
                lost,
                threads,
                causes: Vec::new(),
                histogram,
            }
        })
        .collect()
}

fn render_text_summary(s: &ProcessSummary, unit: TimeUnit) -> String {
    use events::human_ns;
    let mut out = format!(
        "\nPID {} ({}): {} waits, total {}, p50 {}, p90 {}, p99 {}, max {}, lost events {}\n",
        s.tgid,
        s.comm,
        s.count,
        human_ns(s.total_wait_ns),
        human_ns(s.p50_ns),
        human_ns(s.p90_ns),
        human_ns(s.p99_ns),
        human_ns(s.max_ns),
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
    if s.count > 0 {
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

/// Runs a trace until `stop` is set, the duration elapses, or every traced task is gone.
pub fn run(options: &TraceOptions, out: &mut dyn Write, stop: &Arc<AtomicBool>) -> Result<()> {
    let targets = resolve_targets(&options.pids, &options.tids)?;
    let filter = kernel_filter(&targets);
    // The diagnosis' one-off work before the programs see this process.
    let diagnoser = Diagnoser::prepare();
    let mut cgroups = CgroupResolver::new();
    cgroups.warm();
    let mut probes = Probes::load(&ProbeConfig {
        filter: Some(filter.clone()),
        min_event_ns: Some(options.threshold_ns),
        task_stats: true,
        force_pid_hash: options.force_pid_hash,
        diagnose: options.diagnose,
        ..ProbeConfig::default()
    })?;
    let mut ring = probes.take_events()?;
    announce(options, &targets);
    let mut printer = EventPrinter {
        out,
        format: options.format,
        realtime_offset_ns: realtime_offset_ns(),
        open: true,
        diagnoser: diagnoser.with_throttling(probes.throttle_observable(), probes.throttle_clock()),
        throttle_ring: probes.take_throttles(),
        cgroups,
        causes: HashMap::new(),
    };
    if options.format == OutputFormat::Text {
        printer.open = writeln_or_stop(printer.out, events::TEXT_HEADER)?;
    }
    follow(&mut ring, &mut printer, options, &filter, stop, &probes)?;

    let mut summaries = summarize(&targets, &probes.task_stats()?, &probes.histograms()?);
    for summary in &mut summaries {
        if let Some(causes) = printer.causes.remove(&summary.tgid) {
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
    let counters = probes.counters()?;
    drop(ring);
    drop(probes); // detach before printing, so a slow reader does not keep programs attached
    if printer.open {
        print_summaries(printer.out, options.format, options.unit, &summaries)?;
    }
    report_counters(&counters);
    Ok(())
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
    }
}

/// Says on stderr what is traced, from which threshold, for how long.
fn announce(options: &TraceOptions, targets: &[Target]) {
    let names: Vec<String> = targets
        .iter()
        .map(|t| format!("{} ({})", t.tgid, t.comm))
        .collect();
    eprintln!(
        "Tracing run-queue waits of {}; printing waits >= {}{}. Ctrl-C to stop.",
        names.join(", "),
        events::human_ns(options.threshold_ns),
        options
            .duration
            .map(|d| format!(" for {}", events::human_ns(d.as_nanos() as u64)))
            .unwrap_or_default()
    );
}

/// What the diagnosis asks of the host, for `trace`.
struct TraceHost<'a> {
    cgroups: &'a mut CgroupResolver,
    probes: &'a Probes,
}

impl Host for TraceHost<'_> {
    fn cgroup_label(&mut self, id: u64) -> String {
        self.cgroups.path(id)
    }

    fn cgroup_id_of(&mut self, tid: u32) -> Option<u64> {
        self.cgroups.id_of_task(tid)
    }

    fn other_cpus(&mut self) -> Option<Vec<agent_common::OccupancyRing>> {
        self.probes.occupancy().ok()
    }
}

/// Where events go; `open` turns false once the reader has gone (a closed pipe).
struct EventPrinter<'a> {
    out: &'a mut dyn Write,
    format: OutputFormat,
    realtime_offset_ns: u64,
    open: bool,
    diagnoser: Diagnoser,
    throttle_ring: Option<RingBuf<MapData>>,
    cgroups: CgroupResolver,
    /// tgid → cause → (waits, wait time).
    causes: HashMap<u32, BTreeMap<Cause, (u64, u64)>>,
}

impl EventPrinter<'_> {
    /// Prints every event waiting in the ring buffer (after taking the kernel's throttle
    /// records, which the waits they explain follow).
    fn drain(&mut self, ring: &mut RingBuf<MapData>, probes: &Probes) -> Result<()> {
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
                    },
                )
            });
            let event = record.event();
            if let Some(d) = &diagnosis {
                let total = self
                    .causes
                    .entry(event.tgid)
                    .or_default()
                    .entry(d.cause)
                    .or_default();
                total.0 += 1;
                total.1 += event.wait_ns;
            }
            if self.open {
                self.open = print_event(
                    self.out,
                    self.format,
                    event,
                    diagnosis.as_ref(),
                    self.realtime_offset_ns,
                )?;
            }
        }
        Ok(())
    }
}

/// Prints events until the duration ends, a signal stops the trace, the reader goes away or
/// every traced task has exited.
fn follow(
    ring: &mut RingBuf<MapData>,
    printer: &mut EventPrinter<'_>,
    options: &TraceOptions,
    filter: &TaskFilter,
    stop: &Arc<AtomicBool>,
    probes: &Probes,
) -> Result<()> {
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut next_liveness = started + LIVENESS_INTERVAL;
    loop {
        let mut timeout = POLL_INTERVAL;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        wait_readable(ring.as_raw_fd(), timeout);
        printer.drain(ring, probes)?;
        if printer.open && printer.out.flush().is_err() {
            printer.open = false;
        }
        if !printer.open || stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_liveness {
            next_liveness = now + LIVENESS_INTERVAL;
            if !any_alive(filter)? {
                eprintln!("All traced tasks have exited.");
                break;
            }
        }
    }
    // Events already in the ring buffer still belong to the trace.
    printer.drain(ring, probes)
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

fn any_alive(filter: &TaskFilter) -> Result<bool> {
    for &id in filter.tgids.iter().chain(&filter.tids) {
        if procinfo::task_info(id)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn report_counters(counters: &[u64]) {
    let dropped: Vec<String> = Counter::ALL
        .iter()
        .filter(|c| !matches!(c, Counter::Samples | Counter::EventsSubmitted))
        .filter(|c| counters[**c as usize] > 0)
        .map(|c| format!("{}={}", c.name(), counters[*c as usize]))
        .collect();
    eprintln!(
        "schedlat: {} waits measured, {} events delivered; {}",
        counters[Counter::Samples as usize],
        counters[Counter::EventsSubmitted as usize],
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
) -> Result<bool> {
    let line = match format {
        OutputFormat::Text => events::text_line(event, diagnosis, event.ts_ns + realtime_offset),
        OutputFormat::Json => {
            let json = EventJson::new(event, realtime_offset);
            let json = match diagnosis {
                Some(d) => json.with_diagnosis(d),
                None => json,
            };
            serde_json::to_string(&json)?
        }
    };
    writeln_or_stop(out, &line)
}

fn writeln_or_stop(out: &mut dyn Write, line: &str) -> Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing output"),
    }
}

/// Waits until the ring buffer fd is readable (the kernel forced a wakeup), `timeout`
/// elapses, or a signal arrives.
fn wait_readable(fd: i32, timeout: Duration) {
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
            (app.count, app.total_wait_ns, app.max_ns, app.lost),
            (5, 12_000, 8_000, 2)
        );
        assert_eq!(
            app.threads[0].tid, 4_000_011,
            "threads sorted by total wait"
        );
        assert_eq!(app.threads[0].comm, "worker");
        assert!(app.p50_ns >= 985 && app.p50_ns <= 1_015, "{app:?}");
        assert!(
            app.p99_ns <= 8_000 && app.p99_ns >= 8_000 - 8_000 / 32,
            "p99 within one slot below the exact max: {app:?}"
        );
        let idle = &summaries[1];
        assert_eq!((idle.count, idle.p99_ns, idle.threads.len()), (0, 0, 0));

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

    #[test]
    fn own_process_resolves() {
        let me = std::process::id();
        let targets = resolve_targets(&[me], &[me]).expect("self");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].tgid, me);
        assert!(targets[0].tids.is_empty(), "--pid covers the --tid");
    }
}
