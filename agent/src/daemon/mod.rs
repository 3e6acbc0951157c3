//! `schedlat run`: the node daemon.
//!
//! The kernel side (agent-ebpf/src/daemon.rs) counts every wait into per-CPU maps; this loop
//! reads what changed once per window, folds it into bounded Prometheus series
//! (`aggregate`), serves them over HTTP (`metrics`, `http`), reads the ring buffer of long
//! waits every 100 ms, and frees the kernel state of processes that exited.

pub mod config;
pub mod http;
pub mod metrics;
pub mod selfstat;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agent_common::{
    COUNTER_COUNT, Counter, HIST_SLOTS, OVERFLOW_TGID, PREEMPTOR_CLASS_COUNT, PROC_HIST_SLOTS,
    ProcInfo, ProcWaits, SPARE_OVERFLOW, WaitBucket, WaitEvent,
};
use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use log::{debug, info, warn};

use crate::{
    daemon::config::{Config, Overrides},
    daemon::http::Response,
    daemon::metrics::{ProgramStats, SelfStats},
    host::cgroups::CgroupResolver,
    host::procinfo,
    incident::capture::Capture,
    incident::store::{self, DirStatus},
    kernel::events::{self, comm_str},
    kernel::loader::{Mode, ProbeConfig, Probes},
    kernel::privileges,
    stats::aggregate::{
        Aggregator, AggregatorConfig, ClassWaits, Exported, Names, OVERFLOW_CGROUP, ProcDelta,
        WindowInput,
    },
};

/// How often the ring buffer is drained (the kernel wakes the reader only on a backlog).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    /// Use the wakeup programs' own stamps even where `sched_info` exists (tests the fallback).
    pub force_wakeup_probes: bool,
}

/// What the HTTP thread reads.
#[derive(Default)]
struct Shared {
    exported: Exported,
    stats: SelfStats,
}

/// Signals the loop reacts to.
pub struct Signals {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

fn aggregator_config(config: &Config) -> AggregatorConfig {
    let windows = config.series_ttl.0.as_nanos() / config.window.0.as_nanos().max(1);
    AggregatorConfig {
        top_k: config.top_k,
        max_cgroups: config.max_cgroups,
        series_ttl_windows: (windows as u64).max(1),
        kernel_threads: config.labels.kernel_threads,
        cgroup_names: config.labels.cgroup_names,
    }
}

/// Loads and validates the configuration (file and flags); changes nothing.
pub fn validate(options: &RunOptions) -> Result<Config> {
    Config::load(options.config_path.as_deref(), &options.overrides)
}

/// `--check-config`: validates and prints the effective configuration. Also fails when
/// incidents are on and their directory cannot be used (the daemon would run without them);
/// a directory that does not exist yet is not created, only checked that it can be.
pub fn check_config(options: &RunOptions) -> Result<String> {
    let config = validate(options)?;
    let dir = &config.incidents.dir;
    let dir_state = if config.incidents.enabled {
        match store::check_dir(dir) {
            Ok(DirStatus::Exists { .. }) => "usable".to_owned(),
            Ok(DirStatus::Missing { parent }) => {
                format!("does not exist; will be created in {}", parent.display())
            }
            Err(e) => anyhow::bail!(
                "{e}; the daemon would run without incidents (fix the directory, choose another \
                 with --incident-dir, or set incidents.enabled = false)"
            ),
        }
    } else {
        "not used".to_owned()
    };
    Ok(format!(
        "configuration OK: listen {}, window {:?}, top_k {}, max_cgroups {}, event_threshold \
         {:?}, series_ttl {:?}, kernel_map_entries {}, cgroup_names {}, kernel_threads {}, \
         incidents {} (threshold {:?}, dir {}: {dir_state})",
        config.listen,
        config.window.0,
        config.top_k,
        config.max_cgroups,
        config.event_threshold.0,
        config.series_ttl.0,
        config.kernel_map_entries,
        config.labels.cgroup_names,
        config.labels.kernel_threads,
        if config.incidents.enabled {
            "on"
        } else {
            "off"
        },
        config.incidents.threshold.0,
        dir.display(),
    ))
}

#[expect(
    clippy::too_many_lines,
    reason = "the daemon's life cycle, start to detach, reads best in one place"
)]
pub fn run(options: &RunOptions, signals: &Signals) -> Result<()> {
    let mut config = validate(options)?;
    // Before dropping privileges: the incident directory and the kernel's symbols. First, so
    // that the CPU sampler only runs when there is somewhere to put its flame graphs.
    let (mut capture, mut incidents_disabled) = open_capture(&config);
    let probe_config = ProbeConfig {
        mode: Mode::Daemon,
        min_event_ns: Some(min_event_ns(&config)),
        proc_map_entries: config.kernel_map_entries,
        force_own_stamps: options.force_wakeup_probes,
        sampler_hz: capture.as_ref().map(|c| c.config().sample_hz),
        ..ProbeConfig::default()
    };
    let mut probes = match Probes::load(&probe_config) {
        Ok(probes) => probes,
        Err(e) if probe_config.sampler_hz.is_some() => {
            warn!(
                "CPU sampler unavailable ({}); incidents will have no flame graph or run-queue \
                 snapshot, everything else runs (`schedlat check --verbose` shows the whole \
                 verifier log)",
                crate::cli::check::short_error(&e)
            );
            Probes::load(&ProbeConfig {
                sampler_hz: None,
                ..probe_config.clone()
            })?
        }
        Err(e) => return Err(e),
    };
    let mut ring = probes.take_events()?;
    let mut sample_ring = probes.take_samples()?;
    let mut aggregator = Aggregator::new(aggregator_config(&config));
    let mut reader = KernelReader::default();
    let mut names = ProcNames::default();
    // Complete before the first scrape: what is known now is exported now, what only a window
    // tells (quantiles, map use) is absent until the first window closes.
    let mut stats = SelfStats {
        kernel_release: probes.features.kernel_release.clone(),
        kernel_map_capacity: config.kernel_map_entries,
        window_seconds: config.window.0.as_secs_f64(),
        incidents: capture.as_ref().map(Capture::stats).unwrap_or_default(),
        incidents_disabled,
        programs: program_stats(&probes),
        ..SelfStats::default()
    };
    let mut last_lost = [0u64; COUNTER_COUNT as usize];
    if let Ok(mut kernel) = probes.counters() {
        // Samples are counted from CPU_WAITS at each window (see below): none read yet.
        kernel[Counter::Samples as usize] = 0;
        last_lost = kernel;
        stats.kernel = kernel;
    }
    let shared = Arc::new(Mutex::new(Shared {
        exported: aggregator.exported.clone(),
        stats: stats.clone(),
    }));
    let handler_shared = Arc::clone(&shared);
    let handler: http::Handler = Arc::new(move |path: &str| match path {
        "/metrics" => {
            let process = match selfstat::read_self() {
                Ok(p) => metrics::process_families(&p),
                Err(e) => {
                    debug!("own process metrics: {e:#}");
                    Vec::new()
                }
            };
            let families = {
                let mut s = handler_shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Live, not as of the last window: they move between windows.
                s.stats.http = http::counters();
                metrics::families(&s.exported, &s.stats)
            };
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics::encode(families, process),
            }
        }
        "/healthz" => Response {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: b"ok\n".to_vec(),
        },
        _ => Response {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: b"not found: try /metrics or /healthz\n".to_vec(),
        },
    });
    let mut server = http::Server::start(config.listen, Arc::clone(&handler))?;
    // Everything privileged is done: the fds held are all that reading the maps needs.
    // Symbolizing other users' processes for incidents reads /proc/<pid>/maps and map_files.
    let keep: &[u32] = if capture.is_some() {
        &[
            privileges::CAP_DAC_READ_SEARCH,
            privileges::CAP_SYS_PTRACE,
            privileges::CAP_CHECKPOINT_RESTORE,
        ]
    } else {
        &[]
    };
    if let Err(e) = privileges::drop_capabilities(keep) {
        warn!("could not drop capabilities: {e:#}");
    }
    info!(
        "schedlat run: serving /metrics on http://{}/metrics, window {:?}",
        server.local_addr(),
        config.window.0
    );
    eprintln!(
        "schedlat: serving http://{}/metrics (window {:?}); stop with Ctrl-C or SIGTERM",
        server.local_addr(),
        config.window.0
    );

    let mut event_waits: Vec<(u32, u32, u64)> = Vec::new();
    let mut events: Vec<WaitEvent> = Vec::new();
    let mut window_start = Instant::now();
    let mut last_poll = Instant::now();
    let max_events_per_window = 100_000;

    loop {
        let stopping = signals.stop.load(Ordering::Relaxed);
        // Samples first: a trigger's run-queue snapshot wants the latest ones.
        if let Some(capture) = capture.as_mut() {
            capture.drain_samples(&mut sample_ring);
        } else {
            // Incidents turned off by a reload: the sampler runs on until a restart; its
            // samples go nowhere rather than count as lost.
            while sample_ring.next().is_some() {}
        }
        drain_events(&mut ring, &mut events, &mut stats);
        for e in events.drain(..) {
            let lookup = Lookup {
                reader: &reader,
                probes: &probes,
                config: &config,
            };
            account_preemptor(&e, &mut stats, &mut names, &lookup);
            // Only the per-window maxima matter here; the cap bounds memory in a storm.
            if event_waits.len() < max_events_per_window {
                event_waits.push((e.tgid, e.cpu, e.wait_ns));
            }
            if let Some(capture) = capture.as_mut()
                && e.wait_ns >= capture.config().threshold.0.as_nanos() as u64
                && !names.is_kernel_thread(e.tgid)
                && e.tgid != std::process::id()
            {
                let cgroup = lookup.cgroup(&mut names, e.tgid);
                let process = names.process(e.tgid);
                if capture.config().watches(&process, cgroup.as_deref()) {
                    capture.on_wait(&e, cgroup.as_deref(), &aggregator.exported);
                }
            }
        }
        if let Some(capture) = capture.as_mut() {
            capture.flush_due(stopping);
        }

        if signals.reload.swap(false, Ordering::Relaxed) {
            match reload(options, &config, &mut probes, &mut server, &handler).and_then(|new| {
                if let Some(capture) = capture.as_mut()
                    && new.incidents.enabled
                {
                    capture.reconfigure(&new.incidents)?;
                }
                Ok(new)
            }) {
                Ok(new) => {
                    match (&mut capture, new.incidents.enabled) {
                        (Some(c), false) => {
                            c.flush_due(true);
                            capture = None;
                            incidents_disabled = Some(metrics::INCIDENTS_OFF_CONFIG);
                            info!("incidents turned off by the reload");
                        }
                        (None, true) => {
                            warn!(
                                "incidents stay off until a restart (off since the start: {})",
                                incidents_disabled.unwrap_or(metrics::INCIDENTS_OFF_CONFIG)
                            );
                            // An unusable directory stays the reason: a restart alone may not do.
                            if incidents_disabled == Some(metrics::INCIDENTS_OFF_CONFIG) {
                                incidents_disabled = Some(metrics::INCIDENTS_OFF_RESTART_NEEDED);
                            }
                        }
                        (None, false) => incidents_disabled = Some(metrics::INCIDENTS_OFF_CONFIG),
                        (Some(_), true) => {}
                    }
                    stats.incidents_disabled = incidents_disabled;
                    config = new;
                    aggregator.set_config(aggregator_config(&config));
                    stats.window_seconds = config.window.0.as_secs_f64();
                    stats.reloads += 1;
                    info!("configuration reloaded");
                }
                Err(e) => {
                    stats.reload_failures += 1;
                    warn!("configuration reload failed, keeping the old one: {e:#}");
                }
            }
        }

        if window_start.elapsed() >= config.window.0 || stopping {
            let duration_ns = window_start.elapsed().as_nanos() as u64;
            window_start = Instant::now();
            match reader.read(&mut probes, &mut names) {
                Ok((procs, cpus)) => {
                    let input = WindowInput {
                        procs,
                        cpus,
                        event_waits: std::mem::take(&mut event_waits),
                        duration_ns,
                    };
                    let summary = aggregator.window(&input, &mut names);
                    names.forget_gone();
                    if let Some(capture) = capture.as_mut() {
                        capture.on_window(&aggregator.exported);
                    }
                    debug!(
                        "window {:.1}s: {} waits, total {}, p99 {}, {} processes ({} folded \
                         into other), worst p99 {}",
                        duration_ns as f64 * 1e-9,
                        summary.waits,
                        events::human_ns(summary.total_wait_ns),
                        summary.node_p99_ns.map_or("-".into(), events::human_ns),
                        summary.processes,
                        summary.folded_processes,
                        summary.worst.as_ref().map_or("-".into(), |w| format!(
                            "{} ({} in {})",
                            events::human_ns(w.p99_ns),
                            w.process,
                            w.cgroup
                        )),
                    );
                }
                Err(e) => warn!("reading the kernel maps: {e:#}"),
            }
            if let Ok(mut kernel) = probes.counters() {
                // The daemon's programs do not count samples separately (one less update per
                // switch): every sample is in CPU_WAITS.
                kernel[Counter::Samples as usize] = reader.total_samples();
                warn_on_loss(&last_lost, &kernel, config.kernel_map_entries);
                last_lost = kernel;
                stats.kernel = kernel;
            }
            stats.kernel_map_entries = Some(reader.entries);
            if let Some(capture) = capture.as_ref() {
                stats.incidents = capture.stats();
            }
            stats.programs = program_stats(&probes);
            stats.last_window_unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64());
            let mut s = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.exported = aggregator.exported.clone();
            s.stats = stats.clone();
        }
        if stopping {
            break;
        }
        let next = last_poll + POLL_INTERVAL;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        last_poll = Instant::now();
    }
    // Let a scrape in progress finish, then detach.
    server.stop();
    drop(probes);
    eprintln!("schedlat: stopped; programs detached");
    Ok(())
}

fn reload(
    options: &RunOptions,
    current: &Config,
    probes: &mut Probes,
    server: &mut http::Server,
    handler: &http::Handler,
) -> Result<Config> {
    let new = Config::load(options.config_path.as_deref(), &options.overrides)?;
    if new.kernel_map_entries != current.kernel_map_entries {
        warn!(
            "kernel_map_entries changed to {} but the kernel map keeps {} until a restart",
            new.kernel_map_entries, current.kernel_map_entries
        );
    }
    if min_event_ns(&new) != min_event_ns(current) {
        probes.set_min_event_ns(min_event_ns(&new))?;
    }
    if new.listen != current.listen {
        let replacement = http::Server::start(new.listen, Arc::clone(handler))?;
        let old = std::mem::replace(server, replacement);
        old.stop();
        info!("now serving on http://{}/metrics", server.local_addr());
    }
    let mut new = new;
    new.kernel_map_entries = current.kernel_map_entries;
    Ok(new)
}

/// Reads the long-wait events out of the ring buffer.
fn drain_events(ring: &mut RingBuf<MapData>, out: &mut Vec<WaitEvent>, stats: &mut SelfStats) {
    while let Some(item) = ring.next() {
        stats.events_received += 1;
        match events::decode(&item) {
            Ok(e) => {
                log::trace!(
                    "long wait: {} {}/{} on cpu {} behind {}/{}",
                    events::human_ns(e.wait_ns),
                    e.tid,
                    comm_str(&e.comm),
                    e.cpu,
                    e.preemptor_tid,
                    comm_str(&e.preemptor_comm)
                );
                out.push(e);
            }
            Err(e) => debug!("undecodable event: {e:#}"),
        }
    }
}

/// The cgroup label of a task whose cgroup could not be found.
pub const UNKNOWN: &str = "unknown";
/// The process and cgroup labels of the idle task (the CPU was idle: wakeup latency).
pub const IDLE: &str = "[idle]";

/// Opens the incident capture if incidents are on; otherwise, or when the directory cannot be
/// used, `None` and the reason for `schedlat_incidents_disabled_info`.
fn open_capture(config: &Config) -> (Option<Capture>, Option<&'static str>) {
    if !config.incidents.enabled {
        info!("incidents off (incidents.enabled = false)");
        return (None, Some(metrics::INCIDENTS_OFF_CONFIG));
    }
    match Capture::new(&config.incidents) {
        Ok(capture) => (Some(capture), None),
        Err(e) => {
            warn!(
                "incidents disabled (reason {}): {e}; everything else runs (`schedlat run \
                 --check-config` checks the directory)",
                e.reason.name()
            );
            (None, Some(e.reason.name()))
        }
    }
}

/// Where the labels of a long wait's processes come from between two reads of the maps.
struct Lookup<'a> {
    reader: &'a KernelReader,
    probes: &'a Probes,
    config: &'a Config,
}

impl Lookup<'_> {
    /// What the kernel recorded of a process (at its first wait): it outlives the process until
    /// the next read frees it, so it names processes that exited since their wait.
    fn kernel_info(&self, tgid: u32) -> Option<ProcInfo> {
        let map: BpfHashMap<_, u32, ProcInfo> =
            BpfHashMap::try_from(self.probes.map("PROC_INFO")?).ok()?;
        map.get(&tgid, 0).ok()
    }

    /// A process's cgroup label: as the kernel recorded it (last read, else now), else from
    /// /proc (a preemptor that has not waited since the agent started); `None` when the process
    /// exited unrecorded.
    fn cgroup(&self, names: &mut ProcNames, tgid: u32) -> Option<String> {
        let id = self.reader.cgroup_of.get(&tgid).copied().or_else(|| {
            self.kernel_info(tgid)
                .map(|info| info.cgroup_id)
                .filter(|&id| id != 0)
        });
        match id {
            Some(id) => Some(cgroup_label(names, id, self.config)),
            None => names
                .proc_cgroup_path(tgid)
                .map(|path| crate::host::cgroups::label(&path, self.config.labels.cgroup_names)),
        }
    }
}

/// Counts a long wait under its preemptor (bounded: see `schedlat_preemptor_waits_total`).
fn account_preemptor(e: &WaitEvent, stats: &mut SelfStats, names: &mut ProcNames, lookup: &Lookup) {
    const MAX_SETS: usize = 1000;
    let victim_cgroup = lookup
        .cgroup(names, e.tgid)
        .unwrap_or_else(|| UNKNOWN.to_owned());
    let (preemptor_cgroup, preemptor) = if e.preemptor_tid == 0 {
        (IDLE.to_owned(), IDLE.to_owned())
    } else {
        let cgroup = lookup
            .cgroup(names, e.preemptor_tgid)
            .unwrap_or_else(|| UNKNOWN.to_owned());
        // A preemptor gone before its name was read: the kernel's record, else the name of
        // its thread that ran (in the event), rather than `pid-N`.
        let name = names
            .known_process(e.preemptor_tgid)
            .or_else(|| {
                lookup
                    .kernel_info(e.preemptor_tgid)
                    .map(|info| comm_str(&info.comm))
            })
            .unwrap_or_else(|| comm_str(&e.preemptor_comm));
        (cgroup, name)
    };
    let mut key = (victim_cgroup, preemptor_cgroup, preemptor);
    if !stats.preemptors.contains_key(&key) && stats.preemptors.len() >= MAX_SETS {
        key = (key.0, "other".to_owned(), "other".to_owned());
    }
    let entry = stats.preemptors.entry(key).or_default();
    entry.0 += 1;
    entry.1 += e.wait_ns;
}

/// The label the metrics use for a cgroup id.
fn cgroup_label(names: &mut ProcNames, id: u64, config: &Config) -> String {
    crate::host::cgroups::label(&names.cgroup_path(id), config.labels.cgroup_names)
}

/// Events must reach user space for every wait that could trigger an incident.
fn min_event_ns(config: &Config) -> u64 {
    let events = config.event_threshold.0.as_nanos() as u64;
    if config.incidents.enabled {
        events.min(config.incidents.threshold.0.as_nanos() as u64)
    } else {
        events
    }
}

fn warn_on_loss(
    before: &[u64; COUNTER_COUNT as usize],
    now: &[u64; COUNTER_COUNT as usize],
    capacity: u32,
) {
    let delta = |c: Counter| now[c as usize].saturating_sub(before[c as usize]);
    let ring = delta(Counter::RingbufFull);
    if ring > 0 {
        warn!(
            "{ring} long-wait events dropped (ring buffer full); their waits are still counted \
             in the histograms"
        );
    }
    let map = delta(Counter::HistMapFull);
    if map > 0 {
        warn!(
            "{map} waits not counted: the kernel aggregation map is full ({capacity} entries); \
             raise kernel_map_entries"
        );
    }
    let anomalies = delta(Counter::NegativeDelta) + delta(Counter::AbsurdDelta);
    if anomalies > 0 {
        warn!("{anomalies} waits discarded as clock anomalies");
    }
}

/// BPF run time per program from /proc/self/fdinfo, when the kernel accounts it.
fn program_stats(probes: &Probes) -> Option<Vec<ProgramStats>> {
    let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .is_ok_and(|v| v.trim() == "1");
    if !enabled {
        return None;
    }
    let mut out = Vec::new();
    for (name, fd) in probes.program_fds() {
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        let field = |key: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        out.push(ProgramStats {
            name,
            run_time_ns: field("run_time_ns:"),
            run_count: field("run_cnt:"),
        });
    }
    Some(out)
}

/// Reads the kernel maps and turns their cumulative counts into deltas since the last read.
#[derive(Default)]
struct KernelReader {
    /// Each process's entry as last read (the kernel's values are cumulative).
    procs: HashMap<u32, Box<ProcWaits>>,
    /// The overflow entry as last read.
    overflow: ProcWaits,
    /// Each process's cgroup as the kernel last recorded it; exited ones until the read after
    /// the one that freed them (their last long waits may still be in the ring buffer).
    cgroup_of: HashMap<u32, u64>,
    /// Processes whose kernel entries the last read freed.
    freed_last: HashSet<u32>,
    cpus: Vec<Vec<(u64, u64)>>,
    entries: usize,
}

/// What the kernel added to a `ProcWaits` since `before`, or `None` when nothing.
fn proc_delta(cgroup_id: u64, tgid: u32, now: &ProcWaits, before: &ProcWaits) -> Option<ProcDelta> {
    let mut classes = [ClassWaits::default(); PREEMPTOR_CLASS_COUNT];
    for (i, class) in classes.iter_mut().enumerate() {
        class.waits = now.class_count[i].wrapping_sub(before.class_count[i]);
        class.wait_ns = now.class_total_ns[i].wrapping_sub(before.class_total_ns[i]);
    }
    let slots: Vec<(u32, u64)> = (0..PROC_HIST_SLOTS)
        .filter_map(|slot| {
            let i = slot as usize;
            let n = now.slots[i].wrapping_sub(before.slots[i]);
            (n > 0).then_some((slot, u64::from(n)))
        })
        .collect();
    (!slots.is_empty()).then_some(ProcDelta {
        cgroup_id,
        tgid,
        slots,
        classes,
    })
}

/// Per CPU (index = CPU number): (fine slot, waits, wait ns) since the last read.
type CpuDeltas = Vec<Vec<(u32, u64, u64)>>;

impl KernelReader {
    fn read(
        &mut self,
        probes: &mut Probes,
        names: &mut ProcNames,
    ) -> Result<(Vec<ProcDelta>, CpuDeltas)> {
        let mut procs = Vec::new();
        for tgid in std::mem::take(&mut self.freed_last) {
            self.cgroup_of.remove(&tgid);
        }
        let info: BpfHashMap<_, u32, ProcInfo> =
            BpfHashMap::try_from(probes.map("PROC_INFO").context("map PROC_INFO")?)?;
        for item in &info {
            let (tgid, info) = item.context("reading PROC_INFO")?;
            self.cgroup_of.insert(tgid, info.cgroup_id);
            names.kernel_comms.insert(tgid, comm_str(&info.comm));
        }
        let map: BpfHashMap<_, u32, ProcWaits> =
            BpfHashMap::try_from(probes.map("PROC_WAITS").context("map PROC_WAITS")?)?;
        let mut seen_tgids = HashSet::new();
        let zero = ProcWaits::default();
        for item in &map {
            let (tgid, now) = item.context("reading PROC_WAITS")?;
            seen_tgids.insert(tgid);
            let before = self.procs.entry(tgid).or_insert_with(|| Box::new(zero));
            // Where its last wait was counted (processes move between cgroups); the record
            // made when its entry was created, should the entry not have been written since.
            let cgroup_id = if now.cgroup_id != 0 {
                now.cgroup_id
            } else {
                self.cgroup_of.get(&tgid).copied().unwrap_or(0)
            };
            self.cgroup_of.insert(tgid, cgroup_id);
            procs.extend(proc_delta(cgroup_id, tgid, &now, before));
            **before = now;
        }
        self.entries = seen_tgids.len();
        let spare: Array<_, ProcWaits> = Array::try_from(
            probes
                .map("PROC_WAITS_SPARE")
                .context("map PROC_WAITS_SPARE")?,
        )?;
        let overflow = spare
            .get(&SPARE_OVERFLOW, 0)
            .context("reading the overflow entry")?;
        procs.extend(proc_delta(
            OVERFLOW_CGROUP,
            OVERFLOW_TGID,
            &overflow,
            &self.overflow,
        ));
        self.overflow = overflow;

        let gone: HashSet<u32> = seen_tgids
            .iter()
            .copied()
            .filter(|&tgid| !procinfo::process_exists(tgid))
            .collect();
        // Entries the kernel no longer has (deleted with their process) need no snapshot.
        self.procs.retain(|tgid, _| seen_tgids.contains(tgid));
        if !gone.is_empty() {
            let mut map: BpfHashMap<_, u32, ProcWaits> =
                BpfHashMap::try_from(probes.map_mut("PROC_WAITS").context("map PROC_WAITS")?)?;
            for tgid in &gone {
                let _ = map.remove(tgid);
                self.procs.remove(tgid);
            }
            let mut info: BpfHashMap<_, u32, ProcInfo> =
                BpfHashMap::try_from(probes.map_mut("PROC_INFO").context("map PROC_INFO")?)?;
            for tgid in &gone {
                let _ = info.remove(tgid);
            }
            debug!(
                "freed the kernel entries of {} exited processes",
                gone.len()
            );
            // Their names are forgotten after this window is labelled (`ProcNames::forget_gone`).
            names.gone.extend(gone.iter().copied());
            self.freed_last = gone;
        }

        let cpu_map: PerCpuArray<_, WaitBucket> =
            PerCpuArray::try_from(probes.map("CPU_WAITS").context("map CPU_WAITS")?)?;
        let mut cpus: CpuDeltas = Vec::new();
        for slot in 0..HIST_SLOTS {
            let per_cpu = cpu_map.get(&slot, 0).context("reading CPU_WAITS")?;
            for (cpu, bucket) in per_cpu.iter().enumerate() {
                if self.cpus.len() <= cpu {
                    self.cpus.resize(cpu + 1, vec![(0, 0); HIST_SLOTS as usize]);
                }
                if cpus.len() <= cpu {
                    cpus.resize(cpu + 1, Vec::new());
                }
                let prev = &mut self.cpus[cpu][slot as usize];
                let dc = bucket.count.wrapping_sub(prev.0);
                if dc > 0 {
                    cpus[cpu].push((slot, dc, bucket.total_ns.wrapping_sub(prev.1)));
                }
                *prev = (bucket.count, bucket.total_ns);
            }
        }
        Ok((procs, cpus))
    }
}

impl KernelReader {
    /// Samples counted in `CPU_WAITS` since the start.
    fn total_samples(&self) -> u64 {
        self.cpus.iter().flatten().map(|&(count, _)| count).sum()
    }
}

/// `pid-N`: the name of a process that exited before its name was read (its pid).
const EXITED_PREFIX: &str = "pid-";

/// Process and cgroup names: the kernel's record of each process's name (kept even after it
/// exits), else /proc; cgroup paths from the cgroup2 file system.
#[derive(Default)]
struct ProcNames {
    /// Windows labelled so far: /proc reads are cached for the current one.
    window: u64,
    /// Names read from /proc, with the window they were read in.
    comms: HashMap<u32, (u64, String)>,
    /// cgroup v2 paths read from /proc (for preemptors), with the window they were read in.
    proc_cgroups: HashMap<u32, (u64, Option<String>)>,
    kthreads: HashMap<u32, bool>,
    /// Names the kernel recorded (they outlive the process).
    kernel_comms: HashMap<u32, String>,
    cgroups: CgroupResolver,
    /// Exited processes whose names are still needed for the window being labelled.
    gone: HashSet<u32>,
}

impl ProcNames {
    /// The current name while the process lives (it changes at exec; /proc is read at most
    /// once per window), else the last one known: read from /proc earlier, or recorded by the
    /// kernel at its first wait; `None` when it exited before either.
    fn known_process(&mut self, tgid: u32) -> Option<String> {
        if let Some((window, comm)) = self.comms.get(&tgid)
            && *window == self.window
        {
            return Some(comm.clone());
        }
        if let Some(comm) = procinfo::process_comm(tgid) {
            self.comms.insert(tgid, (self.window, comm.clone()));
            return Some(comm);
        }
        self.kernel_comms
            .get(&tgid)
            .or_else(|| self.comms.get(&tgid).map(|(_, comm)| comm))
            .cloned()
    }

    /// Forgets the processes found exited in the last read, once their last window is out.
    fn forget_gone(&mut self) {
        self.window += 1;
        let gone = std::mem::take(&mut self.gone);
        self.comms.retain(|tgid, _| !gone.contains(tgid));
        // Re-read next time they are needed; bounded by the processes seen in one window.
        self.proc_cgroups.clear();
        self.kernel_comms.retain(|tgid, _| !gone.contains(tgid));
        self.kthreads.retain(|tgid, _| !gone.contains(tgid));
    }

    /// A process's cgroup v2 path from /proc, read at most once per window.
    fn proc_cgroup_path(&mut self, tgid: u32) -> Option<String> {
        let window = self.window;
        self.proc_cgroups
            .entry(tgid)
            .or_insert_with(|| (window, procinfo::cgroup_v2_path(tgid)))
            .1
            .clone()
    }
}

impl Names for ProcNames {
    /// `known_process`, else `pid-N`.
    fn process(&mut self, tgid: u32) -> String {
        self.known_process(tgid)
            .unwrap_or_else(|| format!("{EXITED_PREFIX}{tgid}"))
    }

    fn cgroup_path(&mut self, cgroup_id: u64) -> String {
        self.cgroups.path(cgroup_id)
    }

    fn is_kernel_thread(&mut self, tgid: u32) -> bool {
        *self
            .kthreads
            .entry(tgid)
            .or_insert_with(|| procinfo::is_kernel_thread(tgid))
    }
}
