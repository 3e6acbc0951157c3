//! `schedlat run`: the node daemon.
//!
//! The kernel side (agent-ebpf/src/daemon.rs) counts every wait into maps; this loop
//! reads what changed every `refresh`, folds it into bounded Prometheus series and sliding
//! window quantiles (`aggregate`, `sliding`), serves them over HTTP (`metrics`, `http`), reads
//! the ring buffer of long waits every 100 ms, and once per window frees the kernel state of
//! processes that exited.

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

use agent_common::{COUNTER_COUNT, Counter, ProcInfo, WaitEvent};
use anyhow::Result;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use log::{debug, info, warn};

use crate::{
    daemon::config::{Config, Overrides},
    daemon::http::Response,
    daemon::metrics::{ProgramStats, SelfStats},
    diagnosis::engine::{Diagnoser, Diagnosis, Host},
    host::cgroups::CgroupResolver,
    host::procinfo,
    incident::capture::Capture,
    incident::store::{self, DirStatus},
    kernel::daemon_maps::KernelReader,
    kernel::events::{self, Record, comm_str},
    kernel::loader::{Mode, ProbeConfig, Probes},
    kernel::privileges,
    stats::aggregate::{Aggregator, AggregatorConfig, EventWait, Exported, Names, WindowSummary},
    stats::preemptors::{PreemptorKey, PreemptorTable},
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
    let refreshes = config.series_ttl.0.as_nanos() / config.refresh.0.as_nanos().max(1);
    AggregatorConfig {
        top_k: config.top_k,
        max_cgroups: config.max_cgroups,
        series_ttl_refreshes: (refreshes as u64).max(1),
        kernel_threads: config.labels.kernel_threads,
        cgroup_names: config.labels.cgroup_names,
        pid_label: config.labels.pid,
        sub_windows: config.sub_windows(),
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
        "configuration OK: listen {}, window {:?}, refresh {:?}, top_k {}, max_cgroups {}, \
         event_threshold {:?}, series_ttl {:?}, kernel_map_entries {}, cgroup_names {}, \
         kernel_threads {}, pid {}, incidents {} (threshold {:?}, dir {}: {dir_state})",
        config.listen,
        config.window.0,
        config.refresh.0,
        config.top_k,
        config.max_cgroups,
        config.event_threshold.0,
        config.series_ttl.0,
        config.kernel_map_entries,
        config.labels.cgroup_names,
        config.labels.kernel_threads,
        config.labels.pid,
        if config.incidents.enabled {
            "on"
        } else {
            "off"
        },
        config.incidents.threshold.0,
        dir.display(),
    ))
}

/// Runs the daemon until SIGINT/SIGTERM: start, then poll every 100 ms, reload on SIGHUP,
/// read the maps every `refresh` and close a window every `window / refresh` refreshes;
/// at the end let a scrape finish and detach.
pub fn run(options: &RunOptions, signals: &Signals) -> Result<()> {
    let mut daemon = Daemon::start(options)?;
    let mut last_poll = Instant::now();
    loop {
        let stopping = signals.stop.load(Ordering::Relaxed);
        daemon.poll(stopping);
        if signals.reload.swap(false, Ordering::Relaxed) {
            daemon.reload(options);
        }
        if stopping || daemon.refresh_start.elapsed() >= daemon.config.refresh.0 {
            daemon.refresh();
            if stopping || daemon.refreshes >= daemon.config.sub_windows() {
                daemon.close_window();
            }
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
    daemon.stop();
    Ok(())
}

/// Everything the running daemon holds.
struct Daemon {
    config: Config,
    probes: Probes,
    /// Long-wait events and the flight recorder's CPU samples.
    events_ring: RingBuf<MapData>,
    samples_ring: RingBuf<MapData>,
    capture: Option<Capture>,
    /// Why incidents are off (`None` when on).
    incidents_disabled: Option<&'static str>,
    aggregator: Aggregator,
    reader: KernelReader,
    names: ProcNames,
    stats: SelfStats,
    /// Kernel counters at the last window, for the loss warnings.
    last_counters: [u64; COUNTER_COUNT as usize],
    /// What the HTTP handler renders: a copy made at each window.
    shared: Arc<Mutex<Shared>>,
    server: http::Server,
    handler: http::Handler,
    /// (tgid, cpu, wait ns) of this window's events: their exact maxima.
    event_waits: Vec<EventWait>,
    events: Vec<Record>,
    window_start: Instant,
    refresh_start: Instant,
    /// Refreshes since the window started (a window closes after `window / refresh`).
    refreshes: u64,
    /// How many of `event_waits` went into a refresh already.
    refreshed_events: usize,
    diagnoser: Diagnoser,
    /// The kernel's CFS throttle records (`None`: throttling not observable).
    throttle_ring: Option<RingBuf<MapData>>,
    /// Waits diagnosed this window (bounded by `MAX_DIAGNOSES_PER_WINDOW`).
    diagnosed: usize,
    /// The last refresh's account of the sliding window, for the window's debug line.
    summary: Option<WindowSummary>,
}

/// Events kept per window for their exact maxima; the cap bounds memory in a storm.
const MAX_EVENTS_PER_WINDOW: usize = 100_000;
/// Waits diagnosed per window: each reads a few /proc files; past this, a storm of long waits
/// is counted (`schedlat_undiagnosed_waits_total`) rather than diagnosed.
const MAX_DIAGNOSES_PER_WINDOW: usize = 5_000;

impl Daemon {
    /// Loads and attaches the programs, serves /metrics, drops privileges.
    fn start(options: &RunOptions) -> Result<Self> {
        let config = validate(options)?;
        // Before dropping privileges: the incident directory and the kernel's symbols. First,
        // so that the CPU sampler only runs when there is somewhere to put its flame graphs.
        let (capture, incidents_disabled) = open_capture(&config);
        let mut probes = load_probes(options, &config, capture.as_ref())?;
        let events_ring = probes.take_events()?;
        let samples_ring = probes.take_samples()?;
        let diagnoser = Diagnoser::prepare()
            .with_throttling(probes.throttle_observable(), probes.throttle_clock());
        let throttle_ring = probes.take_throttles();
        let aggregator = Aggregator::new(aggregator_config(&config));
        // Complete before the first scrape: what is known now is exported now, what only a
        // window tells (quantiles, map use) is absent until the first window closes.
        let mut stats = SelfStats {
            kernel_release: probes.features.kernel_release.clone(),
            kernel_map_capacity: config.kernel_map_entries,
            window_seconds: config.window.0.as_secs_f64(),
            incidents: capture.as_ref().map(Capture::stats).unwrap_or_default(),
            incidents_disabled,
            programs: program_stats(&probes),
            ..SelfStats::default()
        };
        let mut last_counters = [0u64; COUNTER_COUNT as usize];
        if let Ok(mut kernel) = probes.counters() {
            // Samples are counted from CPU_WAITS at each window (see below): none read yet.
            kernel[Counter::Samples as usize] = 0;
            last_counters = kernel;
            stats.kernel = kernel;
        }
        let shared = Arc::new(Mutex::new(Shared {
            exported: aggregator.exported.clone(),
            stats: stats.clone(),
        }));
        let handler = http_handler(Arc::clone(&shared));
        let server = http::Server::start(config.listen, Arc::clone(&handler))?;
        drop_privileges(capture.is_some());
        info!(
            "schedlat run: serving /metrics on http://{}/metrics, window {:?}",
            server.local_addr(),
            config.window.0
        );
        say!(
            "schedlat: serving http://{}/metrics (window {:?}); stop with Ctrl-C or SIGTERM",
            server.local_addr(),
            config.window.0
        );
        Ok(Self {
            config,
            probes,
            events_ring,
            samples_ring,
            capture,
            incidents_disabled,
            aggregator,
            reader: KernelReader::default(),
            names: ProcNames::default(),
            stats,
            last_counters,
            shared,
            server,
            handler,
            event_waits: Vec::new(),
            events: Vec::new(),
            window_start: Instant::now(),
            refresh_start: Instant::now(),
            refreshes: 0,
            refreshed_events: 0,
            diagnoser,
            throttle_ring,
            diagnosed: 0,
            summary: None,
        })
    }

    /// Reads the CPU samples and the long-wait events: preemptor metrics, exact maxima,
    /// incident triggers; writes the bundles that are due.
    fn poll(&mut self, stopping: bool) {
        // Samples first: a trigger's run-queue snapshot wants the latest ones.
        if let Some(capture) = self.capture.as_mut() {
            capture.drain_samples(&mut self.samples_ring);
        } else {
            // Incidents turned off by a reload: the sampler runs on until a restart; its
            // samples go nowhere rather than count as lost.
            while self.samples_ring.next().is_some() {}
        }
        if let Some(throttles) = self.throttle_ring.as_mut() {
            self.diagnoser.throttles.drain(throttles);
        }
        drain_events(&mut self.events_ring, &mut self.events, &mut self.stats);
        let event_threshold_ns = self.config.event_threshold.0.as_nanos() as u64;
        for record in std::mem::take(&mut self.events) {
            let e = *record.event();
            let diagnosis = match record.diag() {
                Some(d) if self.diagnosed < MAX_DIAGNOSES_PER_WINDOW => {
                    self.diagnosed += 1;
                    Some(self.diagnoser.diagnose(
                        d,
                        &mut DaemonHost {
                            names: &mut self.names,
                            config: &self.config,
                            probes: &self.probes,
                        },
                    ))
                }
                Some(_) => {
                    self.aggregator.exported.undiagnosed += 1;
                    None
                }
                None => None,
            };
            let lookup = Lookup {
                reader: &self.reader,
                probes: &self.probes,
                config: &self.config,
            };
            // Labelled once, for the preemptor table and the incident trigger alike.
            let cgroup = match record.diag() {
                Some(d) if d.cgroup_id != 0 => {
                    Some(cgroup_label(&mut self.names, d.cgroup_id, &self.config))
                }
                _ => lookup.cgroup(&mut self.names, e.tgid),
            };
            let in_metrics = e.wait_ns >= event_threshold_ns;
            match &diagnosis {
                Some(diagnosis) if in_metrics => {
                    self.aggregator.exported.causes.add(
                        cgroup.as_deref().unwrap_or(UNKNOWN),
                        diagnosis.cause,
                        e.wait_ns,
                    );
                    account_culprits(
                        &e,
                        diagnosis,
                        cgroup.as_deref(),
                        &mut self.aggregator.exported.preemptors,
                        &mut self.names,
                    );
                }
                None if in_metrics => account_preemptor(
                    &e,
                    cgroup.as_deref(),
                    &mut self.aggregator.exported.preemptors,
                    &mut self.names,
                    &lookup,
                ),
                _ => {}
            }
            if self.event_waits.len() < MAX_EVENTS_PER_WINDOW {
                self.event_waits.push(EventWait {
                    tgid: e.tgid,
                    cpu: e.cpu,
                    wait_ns: e.wait_ns,
                });
            }
            if let Some(capture) = self.capture.as_mut()
                && e.wait_ns >= capture.config().threshold.0.as_nanos() as u64
                && !self.names.is_kernel_thread(e.tgid)
                && e.tgid != std::process::id()
                && (capture.config().trigger_on_self_contention
                    || diagnosis
                        .as_ref()
                        .is_none_or(|d| d.cause != crate::diagnosis::Cause::SelfContention))
            {
                let process = self.names.process(e.tgid);
                if capture.config().watches(&process, cgroup.as_deref()) {
                    capture.on_wait(
                        &e,
                        cgroup.as_deref(),
                        diagnosis.as_ref(),
                        &self.aggregator.exported,
                    );
                }
            }
        }
        if let Some(capture) = self.capture.as_mut() {
            capture.flush_due(stopping);
        }
    }

    /// SIGHUP: reads the configuration again and applies what can change while running.
    fn reload(&mut self, options: &RunOptions) {
        let reloaded = reload(
            options,
            &self.config,
            &mut self.probes,
            &mut self.server,
            &self.handler,
        )
        .and_then(|new| {
            if let Some(capture) = self.capture.as_mut()
                && new.incidents.enabled
            {
                capture.reconfigure(&new.incidents)?;
            }
            Ok(new)
        });
        match reloaded {
            Ok(new) => {
                self.apply_incidents_switch(new.incidents.enabled);
                self.config = new;
                self.aggregator.set_config(aggregator_config(&self.config));
                self.stats.window_seconds = self.config.window.0.as_secs_f64();
                self.stats.reloads += 1;
                info!("configuration reloaded");
            }
            Err(e) => {
                self.stats.reload_failures += 1;
                warn!("configuration reload failed, keeping the old one: {e:#}");
            }
        }
    }

    /// Incidents turned off by a reload stop at once; turned on, they need a restart (the
    /// sampler and the directory are set up before privileges are dropped).
    fn apply_incidents_switch(&mut self, enabled: bool) {
        match (&mut self.capture, enabled) {
            (Some(c), false) => {
                c.flush_due(true);
                self.capture = None;
                self.incidents_disabled = Some(metrics::INCIDENTS_OFF_CONFIG);
                info!("incidents turned off by the reload");
            }
            (None, true) => {
                warn!(
                    "incidents stay off until a restart (off since the start: {})",
                    self.incidents_disabled
                        .unwrap_or(metrics::INCIDENTS_OFF_CONFIG)
                );
                // An unusable directory stays the reason: a restart alone may not do.
                if self.incidents_disabled == Some(metrics::INCIDENTS_OFF_CONFIG) {
                    self.incidents_disabled = Some(metrics::INCIDENTS_OFF_RESTART_NEEDED);
                }
            }
            (None, false) => self.incidents_disabled = Some(metrics::INCIDENTS_OFF_CONFIG),
            (Some(_), true) => {}
        }
        self.stats.incidents_disabled = self.incidents_disabled;
    }

    /// Every `refresh`: reads what each CPU and each process counted since the last refresh
    /// into the sliding window, and publishes the result to the HTTP handler.
    fn refresh(&mut self) {
        let duration_ns = self.refresh_start.elapsed().as_nanos() as u64;
        self.refresh_start = Instant::now();
        self.refreshes += 1;
        let events = self
            .event_waits
            .get(self.refreshed_events..)
            .unwrap_or_default();
        let started = Instant::now();
        match self.reader.read_cpus(&self.probes) {
            Ok(cpus) => self.aggregator.refresh(&cpus, events, duration_ns),
            Err(e) => warn!("reading the per-CPU map: {e:#}"),
        }
        debug!(
            "refresh: CPU_WAITS read and folded in {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        match self.reader.read(&self.probes) {
            Ok(read) => {
                let read_in = started.elapsed();
                self.names.kernel_comms.extend(read.kernel_comms);
                let folding = Instant::now();
                let processes = read.procs.len();
                self.summary = Some(self.aggregator.refresh_processes(
                    read.procs,
                    events,
                    &mut self.names,
                ));
                let (sliding, deltas) = self.aggregator.sliding_processes();
                debug!(
                    "refresh: PROC_WAITS and PROC_INFO ({} entries, {}) read in {read_in:?}, \
                     {processes} processes' deltas folded in {:?} (sliding window: {sliding} \
                     processes, {deltas} deltas)",
                    self.reader.entries,
                    if self.reader.batch == Some(false) {
                        "key by key"
                    } else {
                        "batched"
                    },
                    folding.elapsed()
                );
            }
            Err(e) => warn!("reading the per-process maps: {e:#}"),
        }
        self.refreshed_events = self.event_waits.len();
        let mut s = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.exported.clone_from(&self.aggregator.exported);
    }

    /// Once per window: frees the kernel entries of processes that exited, checks the kernel's
    /// loss counters, feeds the incident trigger, and publishes the agent's own statistics.
    fn close_window(&mut self) {
        let duration_ns = self.window_start.elapsed().as_nanos() as u64;
        self.window_start = Instant::now();
        self.refreshes = 0;
        self.event_waits.clear();
        self.refreshed_events = 0;
        // The diagnosis budget is per window: without this, diagnosis stops for good after
        // the agent's first MAX_DIAGNOSES_PER_WINDOW long waits.
        self.diagnosed = 0;
        let started = Instant::now();
        // The names of the processes freed a window ago go now: their waits have slid out of
        // the sliding window since (their last wait was read before they were found exited).
        self.names.forget_gone();
        match self.reader.free_exited(&mut self.probes) {
            Ok(freed) => {
                debug!(
                    "window: exited processes checked ({} entries) and freed in {:?}",
                    self.reader.entries,
                    started.elapsed()
                );
                self.names.gone.extend(freed);
            }
            Err(e) => warn!("freeing the kernel entries of exited processes: {e:#}"),
        }
        if let Some(capture) = self.capture.as_mut() {
            capture.on_window(&self.aggregator.exported);
        }
        if let Some(summary) = &self.summary {
            log_window(duration_ns, summary);
        }
        if let Ok(mut kernel) = self.probes.counters() {
            // The daemon's programs do not count samples separately (one less update per
            // switch): every sample is in CPU_WAITS.
            kernel[Counter::Samples as usize] = self.reader.total_samples();
            warn_on_loss(&self.last_counters, &kernel, self.config.kernel_map_entries);
            self.last_counters = kernel;
            self.stats.kernel = kernel;
        }
        self.stats.kernel_map_entries = Some(self.reader.entries);
        if let Some(capture) = self.capture.as_ref() {
            self.stats.incidents = capture.stats();
        }
        self.stats.programs = program_stats(&self.probes);
        self.stats.last_window_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        let mut s = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.exported.clone_from(&self.aggregator.exported);
        s.stats = self.stats.clone();
    }

    /// Lets a scrape in progress finish, then detaches.
    fn stop(self) {
        self.server.stop();
        drop(self.probes);
        say!("schedlat: stopped; programs detached");
    }
}

/// The daemon's program set; without the CPU sampler if it cannot load (incidents then have
/// no flame graphs, everything else runs).
fn load_probes(options: &RunOptions, config: &Config, capture: Option<&Capture>) -> Result<Probes> {
    let wanted = ProbeConfig {
        mode: Mode::Daemon,
        min_event_ns: Some(min_event_ns(config)),
        proc_map_entries: config.kernel_map_entries,
        force_own_stamps: options.force_wakeup_probes,
        sampler_hz: capture.map(|c| c.config().sample_hz),
        diagnose: config.diagnosis,
        throttle_probes: config.diagnosis_throttle_probes,
        ..ProbeConfig::default()
    };
    let first = match Probes::load(&wanted) {
        Ok(probes) => return Ok(probes),
        Err(e) => e,
    };
    // Degrade step by step, keeping what loads: first without the CPU sampler (incidents lose
    // their flame graphs), then with the wakeup-stamp fallback set instead of the switch-only
    // one (it needs fewer of the kernel's fields).
    let without_sampler = ProbeConfig {
        sampler_hz: None,
        ..wanted.clone()
    };
    if wanted.sampler_hz.is_some()
        && let Ok(probes) = Probes::load(&without_sampler)
    {
        warn!(
            "CPU sampler unavailable ({}); incidents will have no flame graph or run-queue \
             snapshot, everything else runs (`schedlat check --verbose` shows the whole \
             verifier log)",
            crate::cli::check::short_error(&first)
        );
        return Ok(probes);
    }
    if !wanted.force_own_stamps {
        let fallback = ProbeConfig {
            force_own_stamps: true,
            ..without_sampler
        };
        if let Ok(probes) = Probes::load(&fallback) {
            warn!(
                "the daemon's switch-only programs did not load ({}); running the wakeup-stamp \
                 fallback without the CPU sampler",
                crate::cli::check::short_error(&first)
            );
            return Ok(probes);
        }
    }
    Err(first)
}

/// `/metrics` (the last window's state, the agent's own process metrics and live HTTP
/// counters) and `/healthz`.
fn http_handler(shared: Arc<Mutex<Shared>>) -> http::Handler {
    Arc::new(move |path: &str| match path {
        "/metrics" => {
            let process = match selfstat::read_self() {
                Ok(p) => metrics::process_families(&p),
                Err(e) => {
                    debug!("own process metrics: {e:#}");
                    Vec::new()
                }
            };
            let families = {
                let mut s = shared
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
    })
}

/// Everything privileged is done: the fds held are all that reading the maps needs.
/// Symbolizing other users' processes for incidents reads /proc/<pid>/maps and `map_files`.
fn drop_privileges(incidents: bool) {
    let keep: &[u32] = if incidents {
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
}

/// One debug line per window.
fn log_window(duration_ns: u64, summary: &WindowSummary) {
    debug!(
        "window {:.1}s: {} waits, total {}, p99 {}, {} processes ({} folded into other), \
         worst p99 {}",
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
fn drain_events(ring: &mut RingBuf<MapData>, out: &mut Vec<Record>, stats: &mut SelfStats) {
    while let Some(item) = ring.next() {
        stats.events_received += 1;
        match events::decode_record(&item) {
            Ok(record) => {
                let e = record.event();
                log::trace!(
                    "long wait: {} {}/{} on cpu {} behind {}/{}",
                    events::human_ns(e.wait_ns),
                    e.tid,
                    comm_str(&e.comm),
                    e.cpu,
                    e.preemptor_tid,
                    comm_str(&e.preemptor_comm)
                );
                out.push(record);
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
            BpfHashMap::try_from(self.probes.map(agent_common::names::map::PROC_INFO)?).ok()?;
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

/// What the diagnosis asks of the host, for the daemon.
struct DaemonHost<'a> {
    names: &'a mut ProcNames,
    config: &'a Config,
    probes: &'a Probes,
}

impl Host for DaemonHost<'_> {
    fn cgroup_label(&mut self, id: u64) -> String {
        cgroup_label(self.names, id, self.config)
    }

    fn cgroup_id_of(&mut self, _tid: u32) -> Option<u64> {
        // The daemon's events carry the waiting task's cgroup id.
        None
    }

    fn other_cpus(&mut self) -> Option<Vec<agent_common::OccupancyRing>> {
        self.probes.occupancy().ok()
    }
}

/// Counts a long wait under the tasks that held the CPU during it, each with its held time;
/// the wait itself under its main culprit.
fn account_culprits(
    e: &WaitEvent,
    diagnosis: &Diagnosis,
    victim_cgroup: Option<&str>,
    table: &mut PreemptorTable,
    names: &mut ProcNames,
) {
    let victim_cgroup = victim_cgroup.unwrap_or(UNKNOWN);
    for (i, culprit) in diagnosis.culprits.iter().enumerate() {
        let (preemptor_cgroup, preemptor) = if culprit.tid == 0 {
            (IDLE.to_owned(), IDLE.to_owned())
        } else {
            // The process's name now (a cached one may predate an exec), else as known.
            let process = crate::host::procinfo::process_comm(culprit.tgid)
                .or_else(|| names.known_process(culprit.tgid))
                .unwrap_or_else(|| culprit.comm.clone());
            (culprit.cgroup.clone(), process)
        };
        table.add_share(
            PreemptorKey {
                cgroup: victim_cgroup.to_owned(),
                preemptor_cgroup,
                preemptor,
            },
            u64::from(i == 0),
            (culprit.share * e.wait_ns as f64) as u64,
        );
    }
}

/// Counts a long wait under its preemptor, labelled (bounded: `stats::preemptors`).
fn account_preemptor(
    e: &WaitEvent,
    victim_cgroup: Option<&str>,
    table: &mut PreemptorTable,
    names: &mut ProcNames,
    lookup: &Lookup,
) {
    let victim_cgroup = victim_cgroup.unwrap_or(UNKNOWN).to_owned();
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
    table.add(
        PreemptorKey {
            cgroup: victim_cgroup,
            preemptor_cgroup,
            preemptor,
        },
        e.wait_ns,
    );
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
    let folded = delta(Counter::ProcMapFolded);
    if folded > 0 {
        warn!(
            "{folded} waits counted node-wide only (cgroup and process \"other\"): the kernel \
             map is full ({capacity} processes); raise kernel_map_entries"
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

/// `pid-N`: the name of a process that exited before its name was read (its pid).
const EXITED_PREFIX: &str = "pid-";

/// Windows a name read from /proc stays cached without being read again.
const NAME_CACHE_WINDOWS: u64 = 12;

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

    /// Forgets the processes freed a window ago, once their waits have slid out.
    fn forget_gone(&mut self) {
        self.window += 1;
        let gone = std::mem::take(&mut self.gone);
        // Names not needed for a while go too: processes that never had a kernel entry (their
        // waits were folded into the overflow entry) are never in `gone`, and the cache must
        // not grow with them. A live process is simply read again when needed.
        let window = self.window;
        self.comms.retain(|tgid, (read_in, _)| {
            !gone.contains(tgid) && window.saturating_sub(*read_in) <= NAME_CACHE_WINDOWS
        });
        // Re-read next time they are needed; bounded by the processes seen in one window.
        self.proc_cgroups.clear();
        self.kernel_comms.retain(|tgid, _| !gone.contains(tgid));
        if window.is_multiple_of(NAME_CACHE_WINDOWS) {
            self.kthreads.clear();
        } else {
            self.kthreads.retain(|tgid, _| !gone.contains(tgid));
        }
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
