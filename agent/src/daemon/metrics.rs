//! Renders the daemon's state as Prometheus metric families (text format via the prometheus
//! crate). Names follow Prometheus conventions: base unit seconds, `_total` for counters.
//!
//! The central metric is `schedlat_runqueue_latency_seconds{cgroup,process}`, a cumulative
//! histogram with power-of-two bounds (see `aggregate::export_bucket_le_seconds`).

use agent_common::{COUNTER_COUNT, Counter};
use prometheus::{
    Encoder as _, TextEncoder,
    proto::{
        Bucket, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary,
    },
};

use crate::stats::aggregate::{
    CumulativeHistogram, EXPORT_BUCKETS, Exported, Quantiles, export_bucket_le_seconds, seconds,
};

/// Run time of one BPF program as the kernel reports it (with `kernel.bpf_stats_enabled`).
#[derive(Clone, Debug, Default)]
pub struct ProgramStats {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// The agent's own health.
#[derive(Clone, Debug, Default)]
pub struct SelfStats {
    /// Kernel counters summed over CPUs, indexed like `Counter::ALL`.
    pub kernel: [u64; COUNTER_COUNT as usize],
    /// Events read from the ring buffer.
    pub events_received: u64,
    /// `None` when the kernel does not collect BPF run-time statistics.
    pub programs: Option<Vec<ProgramStats>>,
    /// Entries in the kernel's per-process aggregation map (`None` before the first read),
    /// and its capacity.
    pub kernel_map_entries: Option<usize>,
    pub kernel_map_capacity: u32,
    /// Kernel release, for build info.
    pub kernel_release: String,
    /// Configured window length in seconds.
    pub window_seconds: f64,
    /// Unix time at which the last window closed (`None` before the first).
    pub last_window_unix: Option<f64>,
    /// Incident capture counters (all zero when incidents are off).
    pub incidents: crate::incident::capture::IncidentStats,
    /// Why incidents are off (`INCIDENTS_OFF_*` or a `DirReason` name); `None` when they are on.
    pub incidents_disabled: Option<&'static str>,
    /// Config reloads that succeeded / failed.
    pub reloads: u64,
    pub reload_failures: u64,
    /// The HTTP server's connection counters.
    pub http: crate::daemon::http::Counters,
}

/// `schedlat_incidents_disabled_info{reason}` when `incidents.enabled = false`.
pub const INCIDENTS_OFF_CONFIG: &str = "config";
/// ... when a reload turned them on but the agent started without them.
pub const INCIDENTS_OFF_RESTART_NEEDED: &str = "restart_needed";

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels(pairs));
    m
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = prometheus::proto::Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_counter(c);
    m.set_label(labels(pairs));
    m
}

fn histogram(pairs: &[(&str, &str)], h: &CumulativeHistogram) -> Metric {
    let cumulative = h.cumulative();
    let buckets: Vec<Bucket> = (0..EXPORT_BUCKETS)
        .map(|i| {
            let mut b = Bucket::default();
            b.set_upper_bound(export_bucket_le_seconds(i));
            b.set_cumulative_count(cumulative[i]);
            b
        })
        .collect();
    let mut hist = Histogram::default();
    hist.set_sample_count(h.count);
    hist.set_sample_sum(seconds(h.sum_ns));
    hist.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_histogram(hist);
    m.set_label(labels(pairs));
    m
}

/// A summary: this window's quantiles (the maximum is a gauge of its own) with the cumulative
/// count and sum, the way Prometheus client summaries pair sliding-window quantiles with
/// cumulative totals.
fn summary(pairs: &[(&str, &str)], values: &Quantiles, count: u64, sum_ns: u64) -> Metric {
    let quantiles: Vec<Quantile> = values
        .pairs()
        .iter()
        .map(|&(q, v)| {
            let mut quantile = Quantile::default();
            quantile.set_quantile(q);
            quantile.set_value(seconds(v));
            quantile
        })
        .collect();
    let mut sm = Summary::default();
    sm.set_sample_count(count);
    sm.set_sample_sum(seconds(sum_ns));
    sm.set_quantile(quantiles);
    let mut m = Metric::default();
    m.set_summary(sm);
    m.set_label(labels(pairs));
    m
}

/// The last window's summary (p50/p90/p99/p99.9, cumulative count and sum) and maximum of one
/// subject: `schedlat_<subject>_window_latency_seconds` and
/// `schedlat_<subject>_window_max_latency_seconds`.
fn window_pair(
    out: &mut Vec<MetricFamily>,
    subject: &str,
    what: &str,
    summaries: Vec<Metric>,
    maxima: Vec<Metric>,
) {
    out.push(family(
        &format!("schedlat_{subject}_window_latency_seconds"),
        &format!(
            "Run-queue latency quantiles over the last window {what}; count and sum are \
             cumulative."
        ),
        MetricType::SUMMARY,
        summaries,
    ));
    out.push(family(
        &format!("schedlat_{subject}_window_max_latency_seconds"),
        &format!(
            "Longest run-queue wait in the last window {what} (exact when it was at least \
             event_threshold, else the upper bound of its histogram slot)."
        ),
        MetricType::GAUGE,
        maxima,
    ));
}

/// Every schedlat metric family, grouped by subject.
#[must_use]
pub fn families(exported: &Exported, stats: &SelfStats) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    latency_families(exported, &mut out);
    window_families(exported, stats, &mut out);
    attribution_families(exported, &mut out);
    kernel_families(exported, stats, &mut out);
    preemptors_families(exported, &mut out);
    incidents_families(stats, &mut out);
    agent_families(stats, &mut out);
    out
}

/// The cumulative latency histograms: per (cgroup, process) series and per CPU.
fn latency_families(exported: &Exported, out: &mut Vec<MetricFamily>) {
    use MetricType::HISTOGRAM;
    let series: Vec<Metric> = exported
        .series
        .iter()
        .map(|(k, s)| histogram(&k.labels(), &s.hist))
        .collect();
    out.push(family(
        "schedlat_runqueue_latency_seconds",
        "Time tasks spent runnable on a run queue before getting a CPU (wakeup-to-run latency), \
         by cgroup and process. The top_k processes by total wait keep their own series; the \
         rest of a cgroup is process=\"other\".",
        HISTOGRAM,
        series,
    ));
    let cpus: Vec<Metric> = exported
        .cpus
        .iter()
        .map(|(cpu, h)| histogram(&[("cpu", &cpu.to_string())], h))
        .collect();
    out.push(family(
        "schedlat_cpu_runqueue_latency_seconds",
        "Run-queue latency of the waits that ended on each CPU.",
        HISTOGRAM,
        cpus,
    ));
}

/// How the window summaries' help says what they cover.
const SLIDING: &str = "(sliding: the last window, refreshed every refresh)";

/// The sliding window: quantiles per process, cgroup, CPU and node, run-queue lengths.
fn window_families(exported: &Exported, stats: &SelfStats, out: &mut Vec<MetricFamily>) {
    use MetricType::GAUGE;
    let w = &exported.window;
    let mut cgroup_totals: std::collections::BTreeMap<&str, (u64, u64)> =
        std::collections::BTreeMap::new();
    for (key, series) in &exported.series {
        let t = cgroup_totals.entry(&key.cgroup).or_default();
        t.0 += series.hist.count;
        t.1 += series.hist.sum_ns;
    }
    let (m, max): (Vec<Metric>, Vec<Metric>) = w
        .series
        .iter()
        .filter_map(|(key, q)| {
            let s = exported.series.get(key)?;
            let labels = key.labels();
            Some((
                summary(&labels, q, s.hist.count, s.hist.sum_ns),
                gauge(&labels, seconds(q.max)),
            ))
        })
        .unzip();
    let what = format!("per process series (cgroup, process) {SLIDING}");
    window_pair(out, "process", &what, m, max);
    let (m, max): (Vec<Metric>, Vec<Metric>) = w
        .cgroups
        .iter()
        .map(|(cg, q)| {
            let (count, sum) = cgroup_totals.get(cg.as_str()).copied().unwrap_or_default();
            let labels = [("cgroup", cg.as_str())];
            (
                summary(&labels, q, count, sum),
                gauge(&labels, seconds(q.max)),
            )
        })
        .unzip();
    window_pair(out, "cgroup", &format!("per cgroup {SLIDING}"), m, max);
    let (m, max): (Vec<Metric>, Vec<Metric>) = w
        .cpus
        .iter()
        .map(|(cpu, q)| {
            let h = exported.cpus.get(cpu).cloned().unwrap_or_default();
            let cpu = cpu.to_string();
            let labels = [("cpu", cpu.as_str())];
            (
                summary(&labels, q, h.count, h.sum_ns),
                gauge(&labels, seconds(q.max)),
            )
        })
        .unzip();
    window_pair(out, "cpu", &format!("per CPU {SLIDING}"), m, max);
    let (mut m, mut max) = (Vec::new(), Vec::new());
    if let Some(q) = &w.node {
        let (count, sum) = exported
            .cpus
            .values()
            .fold((0, 0), |(c, s), h| (c + h.count, s + h.sum_ns));
        m.push(summary(&[], q, count, sum));
        max.push(gauge(&[], seconds(q.max)));
    }
    window_pair(
        out,
        "node",
        &format!("for the whole node {SLIDING}"),
        m,
        max,
    );
    out.push(family(
        "schedlat_cpu_runqueue_length",
        "Mean number of tasks waiting on the CPU's run queue over the last window, sliding \
         (Little's law: total wait of the waits that ended there / window length).",
        GAUGE,
        w.runqueue_length
            .iter()
            .map(|(cpu, v)| gauge(&[("cpu", &cpu.to_string())], *v))
            .collect(),
    ));
    // Before the first window there is no last window: absent, not 0.
    out.push(family(
        "schedlat_window_folded_processes",
        "Processes that waited in the last window (sliding) but had no series of their own (folded into \
         process=\"other\").",
        GAUGE,
        stats
            .last_window_unix
            .map(|_| gauge(&[], w.folded_processes as f64))
            .into_iter()
            .collect(),
    ));
}

/// Who made tasks wait, by class of preemptor; migrations; what cgroup labels stand for.
fn attribution_families(exported: &Exported, out: &mut Vec<MetricFamily>) {
    use MetricType::{COUNTER, GAUGE};
    let mut waits = Vec::new();
    let mut wait_seconds = Vec::new();
    for ((cg, class), c) in &exported.classes {
        waits.push(counter(
            &[("cgroup", cg), ("class", class.name())],
            c.waits as f64,
        ));
        wait_seconds.push(counter(
            &[("cgroup", cg), ("class", class.name())],
            seconds(c.wait_ns),
        ));
    }
    out.push(family(
        "schedlat_preemptions_total",
        "Waits by what ran instead: a task of the same cgroup, another cgroup, a kernel \
         thread, nothing (idle CPU: wakeup latency), or the task migrated while waiting.",
        COUNTER,
        waits,
    ));
    out.push(family(
        "schedlat_preemption_wait_seconds_total",
        "Total run-queue wait by what ran instead (classes as in schedlat_preemptions_total).",
        COUNTER,
        wait_seconds,
    ));
    out.push(family(
        "schedlat_migrations_total",
        "Waits during which the task was moved to another CPU's run queue.",
        COUNTER,
        exported
            .series
            .iter()
            .map(|(k, s)| counter(&k.labels(), s.migrations as f64))
            .collect(),
    ));
    out.push(family(
        "schedlat_cgroup_info",
        "The cgroup path behind each cgroup label.",
        GAUGE,
        exported
            .cgroup_paths
            .iter()
            .map(|(label, path)| gauge(&[("cgroup", label), ("path", path)], 1.0))
            .collect(),
    ));
}

/// What the kernel programs counted and lost, the aggregation map, BPF run time.
fn kernel_families(exported: &Exported, stats: &SelfStats, out: &mut Vec<MetricFamily>) {
    use MetricType::{COUNTER, GAUGE};
    // Self-metrics.
    let k = |c: Counter| stats.kernel[c as usize] as f64;
    out.push(family(
        "schedlat_process_waits_total",
        "Waits counted by the kernel's per-process aggregation (every process, also those \
         folded into other or counted in the overflow entry); equals schedlat_events_total \
         unless waits went uncounted.",
        COUNTER,
        vec![counter(&[], exported.process_waits as f64)],
    ));
    out.push(family(
        "schedlat_events_total",
        "Wakeup-to-run waits measured by the kernel programs.",
        COUNTER,
        vec![counter(&[], k(Counter::Samples))],
    ));
    out.push(family(
        "schedlat_events_delivered_total",
        "Waits at or above event_threshold read from the ring buffer one by one.",
        COUNTER,
        vec![counter(&[], stats.events_received as f64)],
    ));
    let lost = [
        ("ringbuf_full", Counter::RingbufFull),
        ("hist_map_full", Counter::HistMapFull),
        ("enqueue_map_full", Counter::EnqueueMapFull),
        ("negative_delta", Counter::NegativeDelta),
        ("absurd_delta", Counter::AbsurdDelta),
        ("read_failed", Counter::ReadFailed),
        ("cpu_samples_lost", Counter::SamplesLost),
    ];
    out.push(family(
        "schedlat_events_lost_total",
        "What the kernel side could not count or deliver, by reason: ringbuf_full (an event \
         dropped, its wait still counted), hist_map_full (a wait not counted; only `schedlat \
         trace` counts it, the daemon folds instead: schedlat_kernel_map_folded_waits_total), \
         negative_delta/absurd_delta (clock anomalies), read_failed.",
        COUNTER,
        lost.iter()
            .map(|(reason, c)| counter(&[("reason", reason)], k(*c)))
            .collect(),
    ));
    out.push(family(
        "schedlat_kernel_map_folded_waits_total",
        "Waits counted in the node-wide overflow entry (cgroup=\"other\", process=\"other\") \
         because the kernel's per-process map was full: counted in every node and CPU total, \
         but not under their process or cgroup. Raise kernel_map_entries if it grows.",
        COUNTER,
        vec![counter(&[], k(Counter::ProcMapFolded))],
    ));
    out.push(family(
        "schedlat_kernel_map_entries",
        "Entries in the kernel's per-process aggregation map (capacity: kernel_map_entries).",
        GAUGE,
        stats
            .kernel_map_entries
            .map(|n| gauge(&[], n as f64))
            .into_iter()
            .collect(),
    ));
    out.push(family(
        "schedlat_kernel_map_capacity",
        "Capacity of the kernel's per-process aggregation map.",
        GAUGE,
        vec![gauge(&[], f64::from(stats.kernel_map_capacity))],
    ));
    if let Some(programs) = &stats.programs {
        out.push(family(
            "schedlat_bpf_program_run_seconds_total",
            "CPU time spent in schedlat's BPF programs, as the kernel accounts it \
             (kernel.bpf_stats_enabled=1).",
            COUNTER,
            programs
                .iter()
                .map(|p| counter(&[("program", &p.name)], seconds(p.run_time_ns)))
                .collect(),
        ));
        out.push(family(
            "schedlat_bpf_program_runs_total",
            "Runs of schedlat's BPF programs (kernel.bpf_stats_enabled=1).",
            COUNTER,
            programs
                .iter()
                .map(|p| counter(&[("program", &p.name)], p.run_count as f64))
                .collect(),
        ));
    }
    out.push(family(
        "schedlat_bpf_stats_enabled",
        "1 when the kernel accounts BPF program run time (sysctl kernel.bpf_stats_enabled), \
         so schedlat_bpf_program_run_seconds_total is exported.",
        GAUGE,
        vec![gauge(&[], f64::from(u8::from(stats.programs.is_some())))],
    ));
}

/// Long waits by the process that ran instead (bounded label sets).
fn preemptors_families(exported: &Exported, out: &mut Vec<MetricFamily>) {
    use MetricType::COUNTER;
    let mut waits = Vec::new();
    let mut wait_seconds = Vec::new();
    for (key, w) in exported.preemptors.iter() {
        let labels = [
            ("cgroup", key.cgroup.as_str()),
            ("preemptor_cgroup", key.preemptor_cgroup.as_str()),
            ("preemptor", key.preemptor.as_str()),
        ];
        waits.push(counter(&labels, w.waits as f64));
        wait_seconds.push(counter(&labels, seconds(w.wait_ns)));
    }
    out.push(family(
        "schedlat_preemptor_waits_total",
        "Waits of at least event_threshold by who ran instead: with diagnosis on, the task that \
         held the CPU longest during the wait (its process and cgroup; \"[idle]\" when the CPU \
         was idle most); off, the task that ran last. Bounded: label sets beyond 1000 count as \
         preemptor=\"other\".",
        COUNTER,
        waits,
    ));
    out.push(family(
        "schedlat_preemptor_wait_seconds_total",
        "Wait time of long waits by who held the CPU during them (with diagnosis on: each \
         task's time on the CPU within the wait, so one wait splits between its culprits; off: \
         the whole wait goes to the last task).",
        COUNTER,
        wait_seconds,
    ));
    let mut waits = Vec::new();
    let mut wait_seconds = Vec::new();
    for ((cgroup, cause), w) in exported.causes.iter() {
        let labels = [("cgroup", cgroup.as_str()), ("cause", cause.name())];
        waits.push(counter(&labels, w.waits as f64));
        wait_seconds.push(counter(&labels, seconds(w.wait_ns)));
    }
    out.push(family(
        "schedlat_wait_cause_waits_total",
        "Waits of at least event_threshold by the waiting task's cgroup and diagnosed cause \
         (throttled, affinity, rt, irq, stalled, noisy_neighbour, self_contention, kernel, \
         migration, unknown; see the README).",
        COUNTER,
        waits,
    ));
    out.push(family(
        "schedlat_wait_cause_seconds_total",
        "Total wait of the waits in schedlat_wait_cause_waits_total.",
        COUNTER,
        wait_seconds,
    ));
    out.push(family(
        "schedlat_undiagnosed_waits_total",
        "Long waits not diagnosed because the per-window diagnosis budget was spent (they are \
         in every other metric).",
        COUNTER,
        vec![counter(&[], exported.undiagnosed as f64)],
    ));
}

/// Incident capture and the flight recorder.
fn incidents_families(stats: &SelfStats, out: &mut Vec<MetricFamily>) {
    use MetricType::{COUNTER, GAUGE};
    let i = &stats.incidents;
    out.push(family(
        "schedlat_incidents_total",
        "Incident bundles written, by trigger: wait (one wait above incidents.threshold) or \
         window_p99 (a cgroup's window p99 above incidents.p99_threshold).",
        COUNTER,
        ["wait", "window_p99"]
            .iter()
            .map(|r| {
                counter(
                    &[("reason", r)],
                    i.captured.get(r).copied().unwrap_or(0) as f64,
                )
            })
            .collect(),
    ));
    out.push(family(
        "schedlat_incidents_suppressed_total",
        "Triggers not captured: cooldown (the same victim too recently) or rate_limit \
         (incidents.max_per_minute reached).",
        COUNTER,
        vec![
            counter(&[("why", "cooldown")], i.cooldown as f64),
            counter(&[("why", "rate_limit")], i.rate_limited as f64),
        ],
    ));
    out.push(family(
        "schedlat_incidents_enabled",
        "1 when incidents are captured, 0 when they are off (schedlat_incidents_disabled_info \
         says why).",
        GAUGE,
        vec![gauge(
            &[],
            f64::from(u8::from(stats.incidents_disabled.is_none())),
        )],
    ));
    out.push(family(
        "schedlat_incidents_disabled_info",
        "Present (1) while incidents are off, with the reason: config (incidents.enabled = \
         false), restart_needed (enabled by a reload; takes a restart), or why the incident \
         directory cannot be used: not_absolute, symlink, not_a_directory, wrong_owner, \
         permission_denied, read_only, io_error (the log has the details).",
        GAUGE,
        stats
            .incidents_disabled
            .map(|reason| gauge(&[("reason", reason)], 1.0))
            .into_iter()
            .collect(),
    ));
    out.push(family(
        "schedlat_incident_write_errors_total",
        "Incident bundles that could not be written (see the log).",
        COUNTER,
        vec![counter(&[], i.write_errors as f64)],
    ));
    out.push(family(
        "schedlat_flight_recorder_overflow_total",
        "CPU samples the flight recorder dropped because it was full before they aged out. \
         Should stay 0: it holds sample_hz x CPUs x the kept interval.",
        COUNTER,
        vec![counter(&[], i.recorder_overflow as f64)],
    ));
    out.push(family(
        "schedlat_cpu_samples_total",
        "CPU samples taken by the flight recorder.",
        COUNTER,
        vec![counter(&[], i.cpu_samples as f64)],
    ));
}

/// The agent itself: window, reloads, HTTP connections, build.
fn agent_families(stats: &SelfStats, out: &mut Vec<MetricFamily>) {
    use MetricType::{COUNTER, GAUGE};
    out.push(family(
        "schedlat_window_seconds",
        "Configured aggregation window.",
        GAUGE,
        vec![gauge(&[], stats.window_seconds)],
    ));
    out.push(family(
        "schedlat_last_window_timestamp_seconds",
        "Unix time at which the last window closed (absent before the first).",
        GAUGE,
        stats
            .last_window_unix
            .map(|t| gauge(&[], t))
            .into_iter()
            .collect(),
    ));
    out.push(family(
        "schedlat_config_reloads_total",
        "Configuration reloads (SIGHUP) by result.",
        COUNTER,
        vec![
            counter(&[("result", "success")], stats.reloads as f64),
            counter(&[("result", "failure")], stats.reload_failures as f64),
        ],
    ));
    out.push(family(
        "schedlat_http_connections_total",
        "Connections to this endpoint: accepted; refused (closed on arrival, the connection cap \
         was reached); timed_out (closed because headers did not arrive in time or the \
         connection outlived its maximum lifetime).",
        COUNTER,
        vec![
            counter(&[("result", "accepted")], stats.http.accepted as f64),
            counter(&[("result", "refused")], stats.http.refused as f64),
            counter(&[("result", "timed_out")], stats.http.timed_out as f64),
        ],
    ));
    out.push(family(
        "schedlat_build_info",
        "schedlat's version and the kernel it runs on.",
        GAUGE,
        vec![gauge(
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("kernel", &stats.kernel_release),
            ],
            1.0,
        )],
    ));
}

/// Prometheus's standard process metrics for the agent itself.
#[must_use]
pub fn process_families(p: &crate::daemon::selfstat::ProcessStats) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut out = vec![
        family(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            COUNTER,
            vec![counter(&[], p.cpu_seconds)],
        ),
        family(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            GAUGE,
            vec![gauge(&[], p.resident_bytes as f64)],
        ),
        family(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            GAUGE,
            vec![gauge(&[], p.virtual_bytes as f64)],
        ),
        family(
            "process_open_fds",
            "Number of open file descriptors.",
            GAUGE,
            vec![gauge(&[], p.open_fds as f64)],
        ),
        family(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            GAUGE,
            vec![gauge(&[], p.start_time_seconds)],
        ),
        family(
            "process_threads",
            "Number of OS threads in the process.",
            GAUGE,
            vec![gauge(&[], p.threads as f64)],
        ),
    ];
    if let Some(max) = p.max_fds {
        out.push(family(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            GAUGE,
            vec![gauge(&[], max as f64)],
        ));
    }
    out
}

/// The text exposition of `families` plus whatever `extra` holds (the process metrics).
#[must_use]
pub fn encode(mut families: Vec<MetricFamily>, extra: Vec<MetricFamily>) -> Vec<u8> {
    families.extend(extra);
    // Prometheus accepts families with no samples, but promtool flags them; leave them out.
    families.retain(|f| !f.get_metric().is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        log::error!("encoding metrics: {e}");
    }
    buf
}

#[cfg(test)]
mod tests {
    use agent_common::{PREEMPTOR_CLASS_COUNT, PreemptorClass, hist_slot, proc_hist_slot};

    use super::*;
    use crate::stats::aggregate::{
        Aggregator, AggregatorConfig, ClassWaits, Names, ProcDelta, SlotDelta, WindowInput,
    };

    struct N;
    impl Names for N {
        fn process(&mut self, tgid: u32) -> String {
            format!("app{tgid}")
        }
        fn cgroup_path(&mut self, _: u64) -> String {
            "/system.slice/app.service".into()
        }
        fn is_kernel_thread(&mut self, _: u32) -> bool {
            false
        }
    }

    #[test]
    fn before_the_first_window_only_what_is_known_is_exported() {
        let mut kernel = [0; COUNTER_COUNT as usize];
        kernel[Counter::ProcMapFolded as usize] = 7;
        let stats = SelfStats {
            kernel,
            kernel_release: "6.18.0".into(),
            kernel_map_capacity: 16384,
            window_seconds: 5.0,
            incidents_disabled: Some(crate::incident::store::DirReason::NotADirectory.name()),
            ..SelfStats::default()
        };
        let process = crate::daemon::selfstat::ProcessStats {
            cpu_seconds: 0.37,
            max_fds: None,
            ..crate::daemon::selfstat::ProcessStats::default()
        };
        let text = String::from_utf8(encode(
            families(&Exported::default(), &stats),
            process_families(&process),
        ))
        .unwrap();
        for needle in [
            "schedlat_build_info{version=\"",
            "kernel=\"6.18.0\"} 1",
            "schedlat_kernel_map_capacity 16384",
            "schedlat_window_seconds 5",
            "schedlat_kernel_map_folded_waits_total 7",
            "# TYPE schedlat_kernel_map_folded_waits_total counter",
            "schedlat_incidents_enabled 0",
            "schedlat_incidents_disabled_info{reason=\"not_a_directory\"} 1",
            "process_cpu_seconds_total 0.37",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        for absent in [
            "schedlat_last_window_timestamp_seconds",
            "schedlat_window_folded_processes",
            "schedlat_kernel_map_entries",
            "schedlat_node_window_latency_seconds",
            "process_max_fds",
        ] {
            assert!(
                !text.lines().any(|l| l.starts_with(absent)),
                "{absent} must be absent before it is known:\n{text}"
            );
        }
        let on = SelfStats {
            last_window_unix: Some(1.0),
            kernel_map_entries: Some(3),
            ..SelfStats::default()
        };
        let text = String::from_utf8(encode(families(&Exported::default(), &on), vec![])).unwrap();
        for needle in [
            "schedlat_incidents_enabled 1",
            "schedlat_kernel_map_entries 3",
            "schedlat_window_folded_processes 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("schedlat_incidents_disabled_info")),
            "{text}"
        );
    }

    #[test]
    fn text_exposition_has_the_histogram_and_self_metrics() {
        let mut agg = Aggregator::new(AggregatorConfig {
            top_k: 5,
            max_cgroups: 5,
            series_ttl_refreshes: 10,
            kernel_threads: true,
            cgroup_names: true,
            pid_label: false,
            sub_windows: 1,
        });
        agg.window(
            &WindowInput {
                procs: vec![ProcDelta {
                    cgroup_id: 9,
                    tgid: 42,
                    slots: vec![(proc_hist_slot(28_927), 1), (proc_hist_slot(3_000_000), 4)],
                    classes: {
                        let mut c = [ClassWaits::default(); PREEMPTOR_CLASS_COUNT];
                        c[PreemptorClass::SameCgroup as usize] = ClassWaits {
                            waits: 4,
                            wait_ns: 12_000_000,
                        };
                        // 28927 ns: as a product with 1e-9 it printed 0.000028927000000000003.
                        c[PreemptorClass::Idle as usize] = ClassWaits {
                            waits: 1,
                            wait_ns: 28_927,
                        };
                        c
                    },
                }],
                cpus: vec![vec![
                    SlotDelta {
                        slot: hist_slot(3_000_000),
                        waits: 4,
                        wait_ns: 12_000_000,
                    },
                    // 28927 ns: as a product with 1e-9 it printed 0.000028927000000000003.
                    SlotDelta {
                        slot: hist_slot(28_927),
                        waits: 1,
                        wait_ns: 28_927,
                    },
                ]],
                event_waits: vec![],
                duration_ns: 5_000_000_000,
            },
            &mut N,
        );
        let stats = SelfStats {
            kernel_release: "6.18".into(),
            ..SelfStats::default()
        };
        let text = String::from_utf8(encode(families(&agg.exported, &stats), vec![])).unwrap();
        for needle in [
            "# TYPE schedlat_runqueue_latency_seconds histogram",
            "schedlat_runqueue_latency_seconds_bucket{cgroup=\"app.service\",process=\"app42\",le=\"0.004194304\"} 5",
            "schedlat_runqueue_latency_seconds_bucket{cgroup=\"app.service\",process=\"app42\",le=\"0.002097152\"} 1",
            "schedlat_runqueue_latency_seconds_sum{cgroup=\"app.service\",process=\"app42\"} 0.012",
            "schedlat_runqueue_latency_seconds_count{cgroup=\"app.service\",process=\"app42\"} 5",
            "schedlat_preemptions_total{cgroup=\"app.service\",class=\"same_cgroup\"} 4",
            "schedlat_cpu_runqueue_length{cpu=\"0\"} 0.0024",
            "schedlat_cpu_runqueue_latency_seconds_sum{cpu=\"0\"} 0.012028927",
            "schedlat_preemption_wait_seconds_total{cgroup=\"app.service\",class=\"idle\"} 0.000028927\n",
            "# TYPE schedlat_node_window_max_latency_seconds gauge",
            "schedlat_process_window_max_latency_seconds{cgroup=\"app.service\",process=\"app42\"} 0.00",
            "schedlat_cgroup_window_latency_seconds{cgroup=\"app.service\",quantile=\"0.99\"} 0.00",
            "schedlat_events_lost_total{reason=\"ringbuf_full\"} 0",
            "schedlat_build_info{",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(
            !text.contains("quantile=\"1\""),
            "the maximum is its own gauge, not a quantile:\n{text}"
        );
        assert!(
            !text.contains("0000000000"),
            "float noise in the exposition:\n{text}"
        );
        assert!(
            !text.contains("# TYPE schedlat_bpf_program_run_seconds_total"),
            "run time must not be made up when the kernel does not account it"
        );
    }
}
