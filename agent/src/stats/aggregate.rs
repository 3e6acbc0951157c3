//! The daemon's windowed aggregation: pure logic, no I/O, fed with plain structs so tests can
//! use synthetic data.
//!
//! Every `refresh` (1 s by default) the daemon hands over what the kernel counted since the
//! last refresh per cgroup, process, log-linear slot and preemptor class
//! (`Aggregator::refresh_processes`), what each CPU counted per slot (`Aggregator::refresh`),
//! and the exact waits of the events it received. The aggregator
//! - keeps cumulative Prometheus histograms per (cgroup, process) series, bounded: the `top_k`
//!   processes with the most total wait over the sliding window keep their own series, the
//!   rest of each cgroup folds into `process="other"`, and beyond `max_cgroups` cgroups into
//!   `cgroup="other"`; series idle for `series_ttl` are dropped, and at any moment at most
//!   `top_k` named-process series and `max_cgroups` cgroup labels are exposed (older first
//!   out), so the histogram has at most `top_k + max_cgroups + 1` series;
//! - computes p50/p90/p99/p99.9/max per series, cgroup, CPU and node over the sliding window
//!   (the last `window`, refreshed every `refresh`: `sliding`), from the log-linear histograms
//!   (error at most half a slot);
//! - derives each CPU's mean run-queue length by Little's law (total wait / window length).
//!
//! Why the per-process maps can be read every `refresh`: the daemon reads them with
//! `BPF_MAP_LOOKUP_BATCH` (`kernel::batch`), a few syscalls per thousand processes; key by key
//! (two syscalls per process, the only way on kernels before 5.6) a read of 3000 processes
//! took 23-32 ms. The numbers are in `kernel::daemon_maps` and the README.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    hist::slot_quantile,
    sliding::{ProcKey, ProcSum, SlidingCpus, SlidingProcesses},
};

use agent_common::{
    HIST_SLOTS, OVERFLOW_TGID, PREEMPTOR_CLASS_COUNT, PROC_HIST_SLOTS, PreemptorClass,
    hist_slot_bounds, proc_hist_slot_bounds,
};

/// Exported bucket upper bounds are 2^k ns for k in this range (1.024 µs .. 17.2 s).
pub const EXPORT_MIN_EXP: u32 = 10;
pub const EXPORT_MAX_EXP: u32 = 34;
pub const EXPORT_BUCKETS: usize = (EXPORT_MAX_EXP - EXPORT_MIN_EXP + 1) as usize;

/// Label value for folded series.
pub const OTHER: &str = "other";

/// cgroup id that goes with `OVERFLOW_TGID` (no real cgroup has it).
pub const OVERFLOW_CGROUP: u64 = u64::MAX;

/// The one conversion of a time in ns to the seconds Prometheus wants. A division (1e9 is
/// exact in binary, 1e-9 is not), so a value prints as its decimal: 28927 ns is 0.000028927,
/// not 0.000028927000000000003.
#[must_use]
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A window's quantiles of one histogram, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quantiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    /// The maximum: exact when a long-wait event told it, else its slot's upper bound.
    pub max: u64,
}

impl Quantiles {
    /// (quantile, value in ns) pairs as a Prometheus summary lists them (the maximum is a
    /// gauge of its own, not `quantile="1"`).
    #[must_use]
    pub fn pairs(&self) -> [(f64, u64); 4] {
        [
            (0.5, self.p50),
            (0.9, self.p90),
            (0.99, self.p99),
            (0.999, self.p999),
        ]
    }
}

/// Upper bound in seconds of exported bucket `i`. The one documented conversion: bucket `i`
/// counts waits shorter than 2^(`EXPORT_MIN_EXP` + i) ns.
#[must_use]
pub fn export_bucket_le_seconds(i: usize) -> f64 {
    seconds(1u64 << (EXPORT_MIN_EXP + i as u32))
}

/// Index of the first exported bucket whose bound is above every value of a kernel slot
/// starting at `lo` ns, `None` when the slot lies beyond the last bound (only `+Inf` holds it).
/// Kernel slots (both layouts) never straddle a power of two, so every value of the slot is
/// below 2^k iff its lower bound is.
#[must_use]
pub fn export_bucket_of(lo: u64) -> Option<usize> {
    (EXPORT_MIN_EXP..=EXPORT_MAX_EXP)
        .position(|k| lo < 1u64 << k)
        .map(|i| i.min(EXPORT_BUCKETS - 1))
        .filter(|_| lo < 1u64 << EXPORT_MAX_EXP)
}

/// A cumulative exported histogram (counts per bucket, not yet accumulated across buckets).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CumulativeHistogram {
    pub buckets: [u64; EXPORT_BUCKETS],
    pub count: u64,
    pub sum_ns: u64,
}

impl CumulativeHistogram {
    /// Adds `count` waits of a kernel slot starting at `lo` ns, totalling `total_ns`.
    pub fn add(&mut self, lo: u64, count: u64, total_ns: u64) {
        if let Some(i) = export_bucket_of(lo) {
            self.buckets[i] += count;
        }
        self.count += count;
        self.sum_ns += total_ns;
    }

    /// Bucket counts accumulated, as Prometheus expects (`le` buckets include all below).
    #[must_use]
    pub fn cumulative(&self) -> [u64; EXPORT_BUCKETS] {
        let mut out = self.buckets;
        for i in 1..EXPORT_BUCKETS {
            out[i] += out[i - 1];
        }
        out
    }
}

/// A window's histogram, sparse, in whichever kernel layout fed it: slots are kept by their
/// bounds, so the per-CPU (fine) and per-process (coarser) layouts share the quantile math.
/// One histogram is only ever fed, or merged with, slots of one layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowHistogram {
    /// Lower bound (ns) → (upper bound, waits).
    slots: BTreeMap<u64, (u64, u64)>,
    count: u64,
    total_ns: u64,
    /// Largest exact wait known (from events), if any.
    exact_max_ns: Option<u64>,
}

impl WindowHistogram {
    /// Adds waits of the fine (per-CPU, trace) layout's `slot`.
    pub fn add(&mut self, slot: u32, count: u64, total_ns: u64) {
        let (lo, hi) = hist_slot_bounds(slot.min(HIST_SLOTS - 1));
        self.add_range(lo, hi, count);
        self.add_total(total_ns);
    }

    /// Adds `count` waits in [lo, hi) ns; their total goes in with `add_total`.
    pub fn add_range(&mut self, lo: u64, hi: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.slots.entry(lo).or_insert((hi, 0)).1 += count;
        self.count += count;
    }

    pub fn add_total(&mut self, total_ns: u64) {
        self.total_ns += total_ns;
    }

    pub fn merge(&mut self, other: &WindowHistogram) {
        for (&lo, &(hi, n)) in &other.slots {
            self.slots.entry(lo).or_insert((hi, 0)).1 += n;
        }
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.note_exact(other.exact_max_ns);
    }

    pub fn note_exact(&mut self, wait_ns: Option<u64>) {
        if let Some(w) = wait_ns {
            self.exact_max_ns = Some(self.exact_max_ns.map_or(w, |m| m.max(w)));
        }
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    #[must_use]
    pub fn total_ns(&self) -> u64 {
        self.total_ns
    }

    /// (lower bound, upper bound, waits) of every non-empty slot, lowest first.
    pub fn slots(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.slots.iter().map(|(&lo, &(hi, n))| (lo, hi, n))
    }

    /// Value at quantile `q` in ns: the midpoint of the slot holding the sample of rank
    /// ceil(q·n). For q = 1 (the maximum): the exact maximum when an event in the top slot
    /// told it, else the top slot's last value (an upper bound).
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let (&lo, &(hi, _)) = self.slots.last_key_value()?;
        if q >= 1.0 {
            return Some(match self.exact_max_ns {
                Some(m) if m >= lo => m,
                _ => hi - 1,
            });
        }
        slot_quantile(self.slots(), self.count, q)
    }

    /// The window's quantiles (ns).
    #[must_use]
    pub fn quantiles(&self) -> Option<Quantiles> {
        Some(Quantiles {
            p50: self.quantile(0.5)?,
            p90: self.quantile(0.9)?,
            p99: self.quantile(0.99)?,
            p999: self.quantile(0.999)?,
            max: self.quantile(1.0)?,
        })
    }
}

/// Waits and wait time of one preemptor class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassWaits {
    pub waits: u64,
    pub wait_ns: u64,
}

/// What the kernel counted for one process since the last window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcDelta {
    pub cgroup_id: u64,
    /// `OVERFLOW_TGID`: the waits of processes that found the kernel map full (labelled
    /// `cgroup="other", process="other"`).
    pub tgid: u32,
    /// (per-process histogram slot, waits), non-zero only.
    pub slots: Vec<(u32, u64)>,
    /// Indexed by `PreemptorClass` wire value.
    pub classes: [ClassWaits; PREEMPTOR_CLASS_COUNT],
}

impl ProcDelta {
    #[must_use]
    pub fn total_ns(&self) -> u64 {
        self.classes.iter().map(|c| c.wait_ns).sum()
    }
}

/// Waits of one fine (per-CPU) histogram slot since the last window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotDelta {
    pub slot: u32,
    pub waits: u64,
    pub wait_ns: u64,
}

/// The exact wait of one long-wait event (its process and CPU), for exact maxima.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventWait {
    pub tgid: u32,
    pub cpu: u32,
    pub wait_ns: u64,
}

/// One window's input (tests feed whole windows at once).
#[cfg(test)]
#[derive(Clone, Debug, Default)]
pub struct WindowInput {
    pub procs: Vec<ProcDelta>,
    /// Per CPU (index = CPU number): (slot, count, `total_ns`) since the last window.
    pub cpus: Vec<Vec<SlotDelta>>,
    /// Exact waits of the events received this window: (tgid, cpu, wait ns).
    pub event_waits: Vec<EventWait>,
    /// Length of the window in ns (measured, not configured).
    pub duration_ns: u64,
}

/// Names for ids; the daemon reads /proc and the cgroup file system, tests use a table.
pub trait Names {
    /// The process's name (comm of its main thread).
    fn process(&mut self, tgid: u32) -> String;
    /// The cgroup's path ("/" for the root).
    fn cgroup_path(&mut self, cgroup_id: u64) -> String;
    /// Whether the process is a kernel thread.
    fn is_kernel_thread(&mut self, tgid: u32) -> bool;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregatorConfig {
    pub top_k: usize,
    pub max_cgroups: usize,
    /// Series idle for this many refreshes are dropped (`series_ttl / refresh`).
    pub series_ttl_refreshes: u64,
    pub kernel_threads: bool,
    /// Derive unit/container names from cgroup paths.
    pub cgroup_names: bool,
    /// Give the named per-process series a `pid` label (`other` gets `pid=""`), so that
    /// processes of the same name in one cgroup keep series of their own.
    pub pid_label: bool,
    /// Sub-windows of the sliding quantiles (`window / refresh`).
    pub sub_windows: u64,
}

/// The labels of one latency series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub cgroup: String,
    pub process: String,
    /// `None`: no `pid` label (the default); `Some("")` for `process="other"`.
    pub pid: Option<String>,
}

impl SeriesKey {
    #[cfg(test)]
    #[must_use]
    pub fn new(cgroup: &str, process: &str) -> Self {
        Self {
            cgroup: cgroup.to_owned(),
            process: process.to_owned(),
            pid: None,
        }
    }

    #[cfg(test)]
    #[must_use]
    pub fn with_pid(cgroup: &str, process: &str, pid: &str) -> Self {
        Self {
            pid: Some(pid.to_owned()),
            ..Self::new(cgroup, process)
        }
    }

    /// The series' labels as exported: cgroup, process, and pid when that label is on.
    #[must_use]
    pub fn labels(&self) -> Vec<(&str, &str)> {
        let mut labels = vec![
            ("cgroup", self.cgroup.as_str()),
            ("process", self.process.as_str()),
        ];
        if let Some(pid) = &self.pid {
            labels.push(("pid", pid.as_str()));
        }
        labels
    }
}

#[derive(Clone, Debug, Default)]
pub struct Series {
    pub hist: CumulativeHistogram,
    pub migrations: u64,
    pub last_refresh: u64,
}

/// The sliding window's gauges (the last `window`, updated every `refresh`). Per series and
/// cgroup from the per-process maps; per CPU and node from the per-CPU histograms, so the
/// node's includes kernel threads whatever `kernel_threads`.
#[derive(Clone, Debug, Default)]
pub struct WindowGauges {
    pub series: BTreeMap<SeriesKey, Quantiles>,
    pub cgroups: BTreeMap<String, Quantiles>,
    pub cpus: BTreeMap<u32, Quantiles>,
    pub node: Option<Quantiles>,
    /// Mean number of tasks waiting on each CPU's run queue over the sliding window.
    pub runqueue_length: BTreeMap<u32, f64>,
    /// Processes with waits in the sliding window that were folded into `other`.
    pub folded_processes: usize,
}

/// Everything exported, cumulative where Prometheus expects counters.
#[derive(Clone, Debug, Default)]
pub struct Exported {
    pub series: BTreeMap<SeriesKey, Series>,
    pub cpus: BTreeMap<u32, CumulativeHistogram>,
    /// (cgroup, class) → waits.
    pub classes: BTreeMap<(String, PreemptorClass), ClassWaits>,
    /// Display name → path, for `schedlat_cgroup_info`.
    pub cgroup_paths: BTreeMap<String, String>,
    pub window: WindowGauges,
    /// Process refreshes so far (the clock of `Series::last_refresh`).
    pub refreshes: u64,
    /// Long waits by preemptor (cumulative, bounded).
    pub preemptors: super::preemptors::PreemptorTable,
    /// Long waits by cgroup and diagnosed cause (cumulative, bounded).
    pub causes: super::preemptors::CauseTable,
    /// Long waits not diagnosed (over the per-window budget).
    pub undiagnosed: u64,
    /// Every wait the kernel counted per process since the start (all processes, before any
    /// folding or filtering, the overflow entry included).
    pub process_waits: u64,
}

pub struct Aggregator {
    config: AggregatorConfig,
    pub exported: Exported,
    /// The per-CPU and node quantiles' sliding window.
    sliding: SlidingCpus,
    /// The per-series and per-cgroup quantiles' sliding window.
    sliding_procs: SlidingProcesses,
}

/// A one-line account of a window, for the debug log.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSummary {
    pub waits: u64,
    pub total_wait_ns: u64,
    pub processes: usize,
    pub folded_processes: usize,
    pub node_p99_ns: Option<u64>,
    pub worst: Option<WorstSeries>,
}

/// The series whose process had the highest p99 in a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorstSeries {
    pub cgroup: String,
    pub process: String,
    pub p99_ns: u64,
}

impl Aggregator {
    #[must_use]
    pub fn new(config: AggregatorConfig) -> Self {
        Self {
            sliding: SlidingCpus::new(config.sub_windows),
            sliding_procs: SlidingProcesses::new(config.sub_windows),
            config,
            exported: Exported::default(),
        }
    }

    pub fn set_config(&mut self, config: AggregatorConfig) {
        self.sliding.resize(config.sub_windows);
        self.sliding_procs.resize(config.sub_windows);
        self.config = config;
    }

    /// Folds one refresh interval's per-CPU waits (every `refresh`): the cumulative per-CPU
    /// histograms, and the sliding window's per-CPU and node quantiles and run-queue lengths.
    pub fn refresh(
        &mut self,
        cpus: &[Vec<SlotDelta>],
        event_waits: &[EventWait],
        duration_ns: u64,
    ) {
        for (cpu, slots) in cpus.iter().enumerate() {
            let cum = self.exported.cpus.entry(cpu as u32).or_default();
            for d in slots {
                cum.add(hist_slot_bounds(d.slot).0, d.waits, d.wait_ns);
            }
        }
        self.sliding.push(cpus, event_waits, duration_ns);
        let gauges = self.sliding.gauges();
        let window = &mut self.exported.window;
        window.cpus = gauges.cpus;
        window.node = gauges.node;
        window.runqueue_length = gauges.runqueue_length;
    }

    /// Folds one window's input at once (the CPUs' refresh, then the processes'): with
    /// `sub_windows = 1`, a tumbling window. The daemon calls `refresh` and `refresh_processes`
    /// every `refresh` instead.
    #[cfg(test)]
    pub fn window(&mut self, input: &WindowInput, names: &mut dyn Names) -> WindowSummary {
        if !input.cpus.is_empty() {
            self.refresh(&input.cpus, &input.event_waits, input.duration_ns);
        }
        self.refresh_processes(input.procs.clone(), &input.event_waits, names)
    }

    /// (processes in the sliding window, per-process deltas held by its ring): its memory.
    #[must_use]
    pub fn sliding_processes(&self) -> (usize, usize) {
        (self.sliding_procs.sums().len(), self.sliding_procs.deltas())
    }

    /// Folds one refresh interval's per-process waits (every `refresh`): the sliding window's
    /// processes are labelled (the `top_k` processes and `max_cgroups` cgroups with the most
    /// wait over the sliding window keep their labels), this interval's waits go into the
    /// cumulative series under those labels, and the per-series and per-cgroup quantiles are
    /// those of the sliding window; then old series expire. Returns an account of the sliding
    /// window.
    ///
    /// Cost: one pass over the processes of the sliding window, adding their slots into dense
    /// per-label arrays (at most `top_k + 2 × (max_cgroups + 1) + 1` of them): no per-process
    /// histogram is built.
    pub fn refresh_processes(
        &mut self,
        procs: Vec<ProcDelta>,
        event_waits: &[EventWait],
        names: &mut dyn Names,
    ) -> WindowSummary {
        self.exported.refreshes += 1;
        let now = self.exported.refreshes;
        let cfg = self.config.clone();
        for d in &procs {
            self.exported.process_waits += d.slots.iter().map(|&(_, n)| n).sum::<u64>();
        }
        self.sliding_procs.push(procs, event_waits);
        let event_max = self.sliding_procs.event_max();
        // Kernel threads left out when so configured.
        let sliding: Vec<(ProcKey, &ProcSum)> = self
            .sliding_procs
            .sums()
            .iter()
            .filter(|(key, _)| {
                cfg.kernel_threads || key.tgid == OVERFLOW_TGID || !names.is_kernel_thread(key.tgid)
            })
            .map(|(&key, sum)| (key, sum))
            .collect();
        let cgroup_labels = label_cgroups(&sliding, names, &cfg, &mut self.exported.cgroup_paths);
        let top = top_processes(&sliding, cfg.top_k);
        let labels = ProcessLabels {
            cgroups: &cgroup_labels,
            top: &top,
        };
        let quantiles = window_quantiles(&sliding, &event_max, &labels, names, cfg.pid_label);
        let processes = sliding.len();
        for skey in &quantiles.series_keys {
            self.exported
                .series
                .entry(skey.clone())
                .or_default()
                .last_refresh = now;
        }
        export_interval(self.sliding_procs.newest(), &quantiles, &mut self.exported);
        let gauges = &mut self.exported.window;
        gauges.series = quantiles.series;
        gauges.cgroups = quantiles.cgroups;
        gauges.folded_processes = processes.saturating_sub(top.len());
        self.expire(now, &cfg);
        WindowSummary {
            waits: quantiles.node.count(),
            total_wait_ns: quantiles.node.total_ns(),
            processes,
            folded_processes: self.exported.window.folded_processes,
            node_p99_ns: quantiles.node.quantile(0.99),
            worst: quantiles.worst,
        }
    }

    /// Bounded state: drops series idle past the TTL (their counters restart if they come
    /// back, which Prometheus's `rate()` treats as a reset), applies the series bound, and
    /// forgets the cgroups no series has any more.
    fn expire(&mut self, now: u64, cfg: &AggregatorConfig) {
        let ttl = cfg.series_ttl_refreshes;
        self.exported
            .series
            .retain(|_, s| now.saturating_sub(s.last_refresh) < ttl);
        self.bound_series(cfg);
        let live: HashSet<&String> = self.exported.series.keys().map(|k| &k.cgroup).collect();
        self.exported.classes.retain(|(cg, _), _| live.contains(cg));
        self.exported
            .cgroup_paths
            .retain(|label, _| live.contains(label));
    }
}

/// How the window's processes are labelled: cgroup id → label, and the processes that keep
/// series of their own.
struct ProcessLabels<'a> {
    cgroups: &'a HashMap<u64, String>,
    top: &'a HashSet<ProcKey>,
}

/// Adds one refresh interval's waits to the cumulative series they are labelled with now,
/// and to the preemptor classes of their cgroups. Processes without a series (kernel threads
/// left out) are not exported.
fn export_interval(interval: &[ProcDelta], quantiles: &SlidingQuantiles, exported: &mut Exported) {
    for d in interval {
        let key = ProcKey {
            cgroup_id: d.cgroup_id,
            tgid: d.tgid,
        };
        let Some(skey) = quantiles
            .series_of
            .get(&key)
            .map(|&i| &quantiles.series_keys[i])
        else {
            continue;
        };
        let series = exported.series.entry(skey.clone()).or_default();
        for &(slot, n) in &d.slots {
            // Sums per slot are not kept apart here; the exact total goes in once below.
            series.hist.add(proc_hist_slot_bounds(slot).0, n, 0);
        }
        series.hist.sum_ns += d.total_ns();
        series.migrations += d.classes[PreemptorClass::Migrated as usize].waits;
        for class in PreemptorClass::ALL {
            let waits = d.classes[class as usize];
            if waits.waits > 0 {
                let c = exported
                    .classes
                    .entry((skey.cgroup.clone(), class))
                    .or_default();
                c.waits += waits.waits;
                c.wait_ns += waits.wait_ns;
            }
        }
    }
}

/// The `top_k` processes with the most wait in the window.
fn top_processes(procs: &[(ProcKey, &ProcSum)], top_k: usize) -> HashSet<ProcKey> {
    let mut ranked: Vec<(ProcKey, u64)> = procs
        .iter()
        .filter(|(k, _)| k.tgid != OVERFLOW_TGID)
        .map(|&(k, sum)| (k, sum.total_ns()))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.iter().take(top_k).map(|(k, _)| *k).collect()
}

/// Labels the `max_cgroups` cgroups with the most wait in the window; the rest are `other`.
/// Notes the path of each label kept.
fn label_cgroups(
    procs: &[(ProcKey, &ProcSum)],
    names: &mut dyn Names,
    cfg: &AggregatorConfig,
    cgroup_paths: &mut BTreeMap<String, String>,
) -> HashMap<u64, String> {
    let mut cgroup_totals: HashMap<u64, u64> = HashMap::new();
    for (key, sum) in procs {
        *cgroup_totals.entry(key.cgroup_id).or_default() += sum.total_ns();
    }
    // The overflow entry is `other` whatever its size: it takes no real cgroup's place.
    let mut labels = HashMap::new();
    if cgroup_totals.remove(&OVERFLOW_CGROUP).is_some() {
        labels.insert(OVERFLOW_CGROUP, OTHER.to_owned());
    }
    let mut ranked: Vec<(u64, u64)> = cgroup_totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (rank, &(cg, _)) in ranked.iter().enumerate() {
        let label = if rank < cfg.max_cgroups {
            let path = names.cgroup_path(cg);
            let label = crate::host::cgroups::label(&path, cfg.cgroup_names);
            cgroup_paths.insert(label.clone(), path);
            label
        } else {
            OTHER.to_owned()
        };
        labels.insert(cg, label);
    }
    labels
}

/// A histogram in the per-process layout, dense: adding a process's slots costs no allocation.
struct DenseHistogram {
    slots: Vec<u64>,
    total_ns: u64,
    exact_max_ns: Option<u64>,
}

impl Default for DenseHistogram {
    fn default() -> Self {
        Self {
            slots: vec![0; PROC_HIST_SLOTS as usize],
            total_ns: 0,
            exact_max_ns: None,
        }
    }
}

impl DenseHistogram {
    fn add(&mut self, sum: &ProcSum, exact_max_ns: Option<u64>) {
        for (&slot, &n) in &sum.slots {
            if let Some(waits) = self.slots.get_mut(slot as usize) {
                *waits += n;
            }
        }
        self.total_ns += sum.total_ns();
        if let Some(w) = exact_max_ns {
            self.exact_max_ns = Some(self.exact_max_ns.map_or(w, |m| m.max(w)));
        }
    }

    fn to_window(&self) -> WindowHistogram {
        let mut h = WindowHistogram::default();
        for (slot, &n) in (0..PROC_HIST_SLOTS).zip(&self.slots) {
            if n > 0 {
                let (lo, hi) = proc_hist_slot_bounds(slot);
                h.add_range(lo, hi, n);
            }
        }
        h.add_total(self.total_ns);
        h.note_exact(self.exact_max_ns);
        h
    }
}

/// The sliding window's quantiles and the series each process is labelled with.
struct SlidingQuantiles {
    /// Every series of the window (index: `series_of`'s values).
    series_keys: Vec<SeriesKey>,
    series_of: HashMap<ProcKey, usize>,
    series: BTreeMap<SeriesKey, Quantiles>,
    cgroups: BTreeMap<String, Quantiles>,
    node: WindowHistogram,
    worst: Option<WorstSeries>,
}

/// Labels the window's processes and computes the quantiles per series and cgroup, the
/// node's histogram and the series with the worst p99.
fn window_quantiles(
    procs: &[(ProcKey, &ProcSum)],
    event_max: &HashMap<u32, u64>,
    labels: &ProcessLabels<'_>,
    names: &mut dyn Names,
    pid_label: bool,
) -> SlidingQuantiles {
    let mut series_keys: Vec<SeriesKey> = Vec::new();
    let mut series_index: HashMap<SeriesKey, usize> = HashMap::new();
    // `process="other"` series by cgroup id, so folded processes cost no label built.
    let mut other_of: HashMap<u64, usize> = HashMap::new();
    let mut series_of = HashMap::with_capacity(procs.len());
    let mut series_hist: Vec<DenseHistogram> = Vec::new();
    let mut cgroup_hist: HashMap<&str, DenseHistogram> = HashMap::new();
    let mut node = DenseHistogram::default();
    let mut worst: Option<WorstSeries> = None;
    let mut index_of =
        |skey: SeriesKey, keys: &mut Vec<SeriesKey>, hists: &mut Vec<DenseHistogram>| {
            *series_index.entry(skey.clone()).or_insert_with(|| {
                keys.push(skey);
                hists.push(DenseHistogram::default());
                keys.len() - 1
            })
        };
    for &(key, sum) in procs {
        let cg = &labels.cgroups[&key.cgroup_id];
        let named = labels.top.contains(&key) && key.tgid != OVERFLOW_TGID;
        let i = if named {
            let skey = SeriesKey {
                cgroup: cg.clone(),
                process: names.process(key.tgid),
                pid: pid_label.then(|| key.tgid.to_string()),
            };
            index_of(skey, &mut series_keys, &mut series_hist)
        } else if let Some(&i) = other_of.get(&key.cgroup_id) {
            i
        } else {
            let skey = SeriesKey {
                cgroup: cg.clone(),
                process: OTHER.to_owned(),
                pid: pid_label.then(String::new),
            };
            let i = index_of(skey, &mut series_keys, &mut series_hist);
            other_of.insert(key.cgroup_id, i);
            i
        };
        let exact = event_max.get(&key.tgid).copied();
        series_hist[i].add(sum, exact);
        cgroup_hist.entry(cg.as_str()).or_default().add(sum, exact);
        node.add(sum, exact);
        if named {
            let mut own = DenseHistogram::default();
            own.add(sum, exact);
            let p99_ns = own.to_window().quantile(0.99).unwrap_or(0);
            if worst.as_ref().is_none_or(|w| p99_ns > w.p99_ns) {
                let skey = &series_keys[i];
                worst = Some(WorstSeries {
                    cgroup: skey.cgroup.clone(),
                    process: skey.process.clone(),
                    p99_ns,
                });
            }
        }
        series_of.insert(key, i);
    }
    let series = series_keys
        .iter()
        .zip(&series_hist)
        .filter_map(|(k, h)| Some((k.clone(), h.to_window().quantiles()?)))
        .collect();
    let cgroups = cgroup_hist
        .iter()
        .filter_map(|(&cg, h)| Some((cg.to_owned(), h.to_window().quantiles()?)))
        .collect();
    SlidingQuantiles {
        series_keys,
        series_of,
        series,
        cgroups,
        node: node.to_window(),
        worst,
    }
}

impl Aggregator {
    /// Caps what is exposed at any moment, whatever the TTL keeps: at most `max_cgroups`
    /// cgroup labels besides `other`, and at most `top_k` series of named processes, so
    /// `schedlat_runqueue_latency_seconds` has at most `top_k + max_cgroups + 1` series (each
    /// cgroup label has at most one `process="other"` series). The window just aggregated
    /// always fits (it was folded to those limits); older series go first, least wait first.
    fn bound_series(&mut self, cfg: &AggregatorConfig) {
        // Per cgroup label: (last window it was updated, cumulative wait).
        let mut cgroups: HashMap<&str, (u64, u64)> = HashMap::new();
        for (key, series) in &self.exported.series {
            if key.cgroup != OTHER {
                let e = cgroups.entry(key.cgroup.as_str()).or_default();
                e.0 = e.0.max(series.last_refresh);
                e.1 += series.hist.sum_ns;
            }
        }
        if cgroups.len() > cfg.max_cgroups {
            let mut ranked: Vec<(&str, (u64, u64))> = cgroups.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let evicted: HashSet<String> = ranked[cfg.max_cgroups..]
                .iter()
                .map(|(cg, _)| (*cg).to_owned())
                .collect();
            self.exported
                .series
                .retain(|key, _| !evicted.contains(&key.cgroup));
        }
        let named = self
            .exported
            .series
            .keys()
            .filter(|key| key.process != OTHER)
            .count();
        if named > cfg.top_k {
            let mut ranked: Vec<(&SeriesKey, (u64, u64))> = self
                .exported
                .series
                .iter()
                .filter(|(key, _)| key.process != OTHER)
                .map(|(key, s)| (key, (s.last_refresh, s.hist.sum_ns)))
                .collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let evicted: HashSet<SeriesKey> = ranked[cfg.top_k..]
                .iter()
                .map(|(key, _)| (*key).clone())
                .collect();
            self.exported.series.retain(|key, _| !evicted.contains(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{hist_slot, proc_hist_slot};

    use crate::stats::hist::exact_quantile;

    use super::*;

    struct Table;
    impl Names for Table {
        fn process(&mut self, tgid: u32) -> String {
            format!("p{tgid}")
        }
        fn cgroup_path(&mut self, id: u64) -> String {
            if id == 1 {
                "/".into()
            } else {
                format!("/system.slice/cg{id}.service")
            }
        }
        fn is_kernel_thread(&mut self, tgid: u32) -> bool {
            tgid < 10
        }
    }

    fn config() -> AggregatorConfig {
        AggregatorConfig {
            top_k: 2,
            max_cgroups: 2,
            series_ttl_refreshes: 3,
            kernel_threads: true,
            cgroup_names: true,
            pid_label: false,
            sub_windows: 1,
        }
    }

    fn delta(cgroup_id: u64, tgid: u32, wait_ns: u64, count: u64) -> ProcDelta {
        let mut classes = [ClassWaits::default(); PREEMPTOR_CLASS_COUNT];
        classes[PreemptorClass::OtherCgroup as usize] = ClassWaits {
            waits: count,
            wait_ns: wait_ns * count,
        };
        ProcDelta {
            cgroup_id,
            tgid,
            slots: vec![(proc_hist_slot(wait_ns), count)],
            classes,
        }
    }

    /// A deterministic heavy-tailed sample set (xorshift; log-uniform 1 µs .. 100 ms).
    fn samples(n: usize, seed: u64) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                (1e3 * (1e5f64).powf(u)) as u64
            })
            .collect()
    }

    #[test]
    fn window_quantiles_match_exact_percentiles() {
        for seed in [1, 7, 12345] {
            let mut values = samples(20_000, seed);
            let mut h = WindowHistogram::default();
            for &v in &values {
                h.add(hist_slot(v), 1, v);
            }
            values.sort_unstable();
            for q in [0.5, 0.9, 0.99, 0.999] {
                let exact = exact_quantile(&values, q) as f64;
                let got = h.quantile(q).unwrap() as f64;
                let err = (got - exact).abs() / exact;
                assert!(
                    err < 0.02,
                    "seed {seed} q {q}: histogram says {got}, exact {exact} ({:.2} % off)",
                    err * 100.0
                );
            }
            let max = *values.last().unwrap();
            let bound = h.quantile(1.0).unwrap();
            assert!(
                bound >= max && (bound - max) as f64 / max as f64 <= 1.0 / 32.0,
                "max bound {bound} vs exact {max}"
            );
            h.note_exact(Some(max));
            assert_eq!(h.quantile(1.0), Some(max), "exact max from an event");
        }
    }

    #[test]
    fn seconds_print_as_their_decimal() {
        // A product with 1e-9 printed 0.000028927000000000003.
        assert_eq!(seconds(28_927).to_string(), "0.000028927");
        assert_eq!(seconds(1_024).to_string(), "0.000001024");
        assert_eq!(seconds(17_179_869_184).to_string(), "17.179869184");
    }

    #[test]
    fn per_process_layout_quantiles_are_within_its_precision() {
        // The kernel's per-process slots are 1/8 of a power of two wide: the midpoint is at
        // most 6.25 % from any value of its slot.
        for seed in [3, 99] {
            let mut values = samples(20_000, seed);
            let mut h = WindowHistogram::default();
            for &v in &values {
                let (lo, hi) = proc_hist_slot_bounds(proc_hist_slot(v));
                h.add_range(lo, hi, 1);
                h.add_total(v);
            }
            values.sort_unstable();
            assert_eq!(h.total_ns(), values.iter().sum::<u64>());
            for q in [0.5, 0.9, 0.99, 0.999] {
                let exact = exact_quantile(&values, q) as f64;
                let got = h.quantile(q).unwrap() as f64;
                let err = (got - exact).abs() / exact;
                assert!(
                    err < 0.0625,
                    "seed {seed} q {q}: histogram says {got}, exact {exact} ({:.2} % off)",
                    err * 100.0
                );
            }
        }
    }

    #[test]
    fn overflow_entry_is_labelled_other() {
        let mut agg = Aggregator::new(config());
        let mut overflow = delta(OVERFLOW_CGROUP, OVERFLOW_TGID, 2_000_000, 7);
        overflow.classes[PreemptorClass::Idle as usize] = ClassWaits {
            waits: 1,
            wait_ns: 1_000,
        };
        let input = WindowInput {
            procs: vec![overflow, delta(5, 100, 1_000_000, 10)],
            duration_ns: 5_000_000_000,
            ..WindowInput::default()
        };
        let summary = agg.window(&input, &mut Table);
        assert_eq!(summary.waits, 17, "every wait counted, overflow included");
        let other = &agg.exported.series[&SeriesKey::new(OTHER, OTHER)];
        assert_eq!(other.hist.count, 7);
        assert_eq!(other.hist.sum_ns, 14_001_000);
        assert!(
            agg.exported
                .series
                .contains_key(&SeriesKey::new("cg5.service", "p100")),
            "{:?}",
            agg.exported.series.keys()
        );
    }

    #[test]
    fn churn_never_exposes_more_than_the_bound() {
        let cfg = AggregatorConfig {
            top_k: 4,
            max_cgroups: 3,
            series_ttl_refreshes: 24,
            kernel_threads: true,
            cgroup_names: true,
            pid_label: false,
            sub_windows: 1,
        };
        let mut agg = Aggregator::new(cfg.clone());
        let mut tgid = 1000;
        for window in 0..50u64 {
            // Every window: 30 new processes spread over 10 new cgroups.
            let procs = (0..30)
                .map(|i| {
                    tgid += 1;
                    delta(100 + window * 10 + i % 10, tgid, 1_000_000 + i, 3)
                })
                .collect();
            let input = WindowInput {
                procs,
                duration_ns: 1_000_000_000,
                ..WindowInput::default()
            };
            agg.window(&input, &mut Table);
            let series = agg.exported.series.len();
            let named = agg
                .exported
                .series
                .keys()
                .filter(|k| k.process != OTHER)
                .count();
            let cgroups: HashSet<&String> = agg.exported.series.keys().map(|k| &k.cgroup).collect();
            assert!(named <= cfg.top_k, "window {window}: {named} named series");
            assert!(
                cgroups.len() <= cfg.max_cgroups + 1,
                "window {window}: {} cgroup labels",
                cgroups.len()
            );
            assert!(
                series <= cfg.top_k + cfg.max_cgroups + 1,
                "window {window}: {series} series"
            );
            assert!(agg.exported.classes.len() <= (cfg.max_cgroups + 1) * PREEMPTOR_CLASS_COUNT);
            assert!(agg.exported.cgroup_paths.len() <= cfg.max_cgroups);
            // The window just aggregated keeps its own named series.
            assert_eq!(named, cfg.top_k, "window {window}");
        }
    }

    #[test]
    fn exported_buckets_are_powers_of_two_and_complete() {
        // Every slot below the last bound lands in the bucket whose bound is just above it.
        for slot in 0..HIST_SLOTS {
            let (lo, hi) = hist_slot_bounds(slot);
            match export_bucket_of(lo) {
                Some(i) => {
                    let le = 1u64 << (EXPORT_MIN_EXP + i as u32);
                    assert!(hi <= le, "slot {slot} [{lo},{hi}) above bucket {le}");
                    if i > 0 {
                        assert!(lo >= le / 2, "slot {slot} belongs in a lower bucket");
                    }
                }
                None => assert!(lo >= 1u64 << EXPORT_MAX_EXP, "slot {slot} lost"),
            }
        }
        let mut c = CumulativeHistogram::default();
        c.add(hist_slot_bounds(hist_slot(500)).0, 1, 500);
        c.add(hist_slot_bounds(hist_slot(1500)).0, 2, 3000);
        c.add(hist_slot_bounds(hist_slot(1 << 40)).0, 1, 1 << 40);
        let cum = c.cumulative();
        assert_eq!(cum[0], 1, "500 ns < 1.024 us");
        assert_eq!(cum[1], 3, "1.5 us < 2.048 us");
        assert_eq!(
            cum[EXPORT_BUCKETS - 1],
            3,
            "the 18 min wait is only in +Inf"
        );
        assert_eq!(c.count, 4);
        assert!((export_bucket_le_seconds(0) - 1.024e-6).abs() < 1e-15);
    }

    #[test]
    fn top_k_folds_the_rest_into_other_and_keeps_totals() {
        let mut agg = Aggregator::new(config());
        let input = WindowInput {
            procs: vec![
                delta(5, 100, 1_000_000, 10), // 10 ms total
                delta(5, 101, 2_000_000, 10), // 20 ms
                delta(5, 102, 100_000, 10),   // 1 ms -> other
                delta(6, 200, 500_000, 10),   // 5 ms -> other (cg6)
            ],
            cpus: vec![vec![SlotDelta {
                slot: hist_slot(1_000_000),
                waits: 40,
                wait_ns: 36_000_000,
            }]],
            event_waits: vec![],
            duration_ns: 1_000_000_000,
        };
        let s = agg.window(&input, &mut Table);
        assert_eq!(s.waits, 40);
        assert_eq!(s.total_wait_ns, 36_000_000);
        assert_eq!(s.folded_processes, 2);
        let keys: Vec<_> = agg.exported.series.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                SeriesKey::new("cg5.service", "other"),
                SeriesKey::new("cg5.service", "p100"),
                SeriesKey::new("cg5.service", "p101"),
                SeriesKey::new("cg6.service", "other"),
            ]
        );
        let total: u64 = agg.exported.series.values().map(|s| s.hist.sum_ns).sum();
        assert_eq!(total, 36_000_000, "folding loses no wait");
        let rq = agg.exported.window.runqueue_length[&0];
        assert!((rq - 0.036).abs() < 1e-9, "Little's law: {rq}");
        assert_eq!(
            agg.exported.cgroup_paths["cg5.service"],
            "/system.slice/cg5.service"
        );
    }

    #[test]
    fn cgroups_beyond_the_limit_fold_and_idle_series_expire() {
        let mut agg = Aggregator::new(AggregatorConfig {
            max_cgroups: 1,
            ..config()
        });
        let input = WindowInput {
            procs: vec![delta(5, 100, 1_000_000, 10), delta(6, 200, 10_000, 1)],
            cpus: vec![],
            event_waits: vec![],
            duration_ns: 1,
        };
        agg.window(&input, &mut Table);
        assert!(
            agg.exported
                .series
                .contains_key(&SeriesKey::new("other", "p200"))
        );
        let quiet = WindowInput::default();
        for _ in 0..2 {
            agg.window(&quiet, &mut Table);
        }
        assert_eq!(agg.exported.series.len(), 2, "still inside the TTL");
        agg.window(&quiet, &mut Table);
        assert!(
            agg.exported.series.is_empty(),
            "expired after 3 idle windows"
        );
        assert!(agg.exported.cgroup_paths.is_empty());
    }

    #[test]
    fn counters_only_grow_across_windows() {
        let mut agg = Aggregator::new(config());
        let input = WindowInput {
            procs: vec![delta(5, 100, 1_000_000, 10)],
            cpus: vec![vec![SlotDelta {
                slot: hist_slot(1_000_000),
                waits: 10,
                wait_ns: 10_000_000,
            }]],
            event_waits: vec![EventWait {
                tgid: 100,
                cpu: 0,
                wait_ns: 1_000_123,
            }],
            duration_ns: 5_000_000_000,
        };
        agg.window(&input, &mut Table);
        agg.window(&input, &mut Table);
        let s = &agg.exported.series[&SeriesKey::new("cg5.service", "p100")];
        assert_eq!(s.hist.count, 20);
        assert_eq!(s.hist.sum_ns, 20_000_000);
        assert_eq!(agg.exported.cpus[&0].count, 20);
        let q = agg.exported.window.series[&SeriesKey::new("cg5.service", "p100")];
        assert_eq!(q.max, 1_000_123, "exact max");
        let classes =
            agg.exported.classes[&("cg5.service".to_owned(), PreemptorClass::OtherCgroup)];
        assert_eq!(
            classes,
            ClassWaits {
                waits: 20,
                wait_ns: 20_000_000
            }
        );
    }

    /// Every process is called "worker".
    struct SameName;

    impl Names for SameName {
        fn process(&mut self, _: u32) -> String {
            "worker".into()
        }
        fn cgroup_path(&mut self, id: u64) -> String {
            Table.cgroup_path(id)
        }
        fn is_kernel_thread(&mut self, _: u32) -> bool {
            false
        }
    }

    #[test]
    fn same_named_processes_merge_unless_the_pid_label_is_on() {
        let input = WindowInput {
            // Two named (top_k = 2), the third folds into other.
            procs: vec![
                delta(5, 100, 1_000_000, 10),
                delta(5, 101, 2_000_000, 10),
                delta(5, 102, 1_000, 1),
            ],
            ..WindowInput::default()
        };
        let mut off = Aggregator::new(config());
        off.window(&input, &mut SameName);
        let keys: Vec<_> = off.exported.series.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                SeriesKey::new("cg5.service", "other"),
                SeriesKey::new("cg5.service", "worker"),
            ],
            "off: one series for both workers"
        );
        assert_eq!(off.exported.series[&keys[1]].hist.count, 20);
        let mut on = Aggregator::new(AggregatorConfig {
            pid_label: true,
            ..config()
        });
        on.window(&input, &mut SameName);
        let keys: Vec<_> = on.exported.series.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                SeriesKey::with_pid("cg5.service", "other", ""),
                SeriesKey::with_pid("cg5.service", "worker", "100"),
                SeriesKey::with_pid("cg5.service", "worker", "101"),
            ],
            "on: a series per process, other with pid=\"\""
        );
        assert_eq!(on.exported.series[&keys[1]].hist.count, 10);
        assert_eq!(on.exported.window.series.len(), 3);
        assert_eq!(
            keys[1].labels(),
            vec![
                ("cgroup", "cg5.service"),
                ("process", "worker"),
                ("pid", "100")
            ]
        );
    }

    #[test]
    fn refreshes_feed_the_cumulative_cpus_once_and_windows_keep_the_sliding_gauges() {
        let mut agg = Aggregator::new(AggregatorConfig {
            sub_windows: 2,
            ..config()
        });
        let cpus = |wait_ns: u64| {
            vec![vec![SlotDelta {
                slot: hist_slot(wait_ns),
                waits: 10,
                wait_ns: 10 * wait_ns,
            }]]
        };
        agg.refresh(&cpus(50_000_000), &[], 1_000_000_000);
        agg.refresh(&cpus(10_000), &[], 1_000_000_000);
        agg.window(
            &WindowInput {
                procs: vec![delta(5, 100, 10_000, 20)],
                ..WindowInput::default()
            },
            &mut Table,
        );
        assert_eq!(agg.exported.cpus[&0].count, 20, "each refresh counted once");
        let node = agg
            .exported
            .window
            .node
            .expect("node quantiles kept by the window");
        assert!(
            node.max > 40_000_000,
            "the 50 ms waits are in the window: {node:?}"
        );
        assert!(
            agg.exported
                .window
                .series
                .contains_key(&SeriesKey::new("cg5.service", "p100"))
        );
        agg.refresh(&cpus(10_000), &[], 1_000_000_000);
        let node = agg.exported.window.node.expect("node quantiles");
        assert!(node.max < 20_000, "the 50 ms waits slid out: {node:?}");
        assert_eq!(agg.exported.cpus[&0].count, 30);
        assert!(
            agg.exported
                .window
                .series
                .contains_key(&SeriesKey::new("cg5.service", "p100")),
            "a refresh leaves the per-process window alone"
        );
    }

    #[test]
    fn kernel_threads_can_be_left_out() {
        let mut agg = Aggregator::new(AggregatorConfig {
            kernel_threads: false,
            ..config()
        });
        let input = WindowInput {
            procs: vec![delta(1, 3, 1_000_000, 10), delta(5, 100, 1_000, 1)],
            ..WindowInput::default()
        };
        let s = agg.window(&input, &mut Table);
        assert_eq!(s.waits, 1);
        assert_eq!(agg.exported.series.len(), 1);
    }

    /// One refresh of process 100 in cgroup 5: 100 waits of 10 µs, plus `long` waits of 50 ms.
    fn background_and(long: u64) -> ProcDelta {
        let mut d = delta(5, 100, 10_000, 100);
        if long > 0 {
            d.slots.push((proc_hist_slot(50_000_000), long));
            let c = &mut d.classes[PreemptorClass::OtherCgroup as usize];
            c.waits += long;
            c.wait_ns += long * 50_000_000;
        }
        d
    }

    /// A burst shows in its process's and cgroup's quantiles at the refresh that read it, for
    /// exactly `sub_windows` refreshes (not up to a window late, as a tumbling window showed
    /// it), while the cumulative histogram counts each wait once.
    #[test]
    fn process_quantiles_slide_and_counters_count_each_wait_once() {
        let mut agg = Aggregator::new(AggregatorConfig {
            sub_windows: 5,
            series_ttl_refreshes: 20,
            ..config()
        });
        let key = SeriesKey::new("cg5.service", "p100");
        for _ in 0..6 {
            agg.refresh_processes(vec![background_and(0)], &[], &mut Table);
            assert!(agg.exported.window.series[&key].max < 20_000);
        }
        let exact = EventWait {
            tgid: 100,
            cpu: 1,
            wait_ns: 50_123_456,
        };
        agg.refresh_processes(vec![background_and(3)], &[exact], &mut Table);
        for refresh in 1..=5 {
            let w = &agg.exported.window;
            assert_eq!(
                w.series[&key].max, 50_123_456,
                "refresh {refresh}: exact max"
            );
            assert_eq!(
                w.cgroups["cg5.service"].max, 50_123_456,
                "refresh {refresh}"
            );
            // 3 of the window's 503 waits are 50 ms: above p99 (rank 498), so p99.9 shows them.
            assert!(w.series[&key].p999 > 40_000_000, "{:?}", w.series[&key]);
            assert!(w.series[&key].p99 < 20_000, "{:?}", w.series[&key]);
            agg.refresh_processes(vec![background_and(0)], &[], &mut Table);
        }
        let w = &agg.exported.window;
        assert!(
            w.series[&key].max < 20_000,
            "slid out: {:?}",
            w.series[&key]
        );
        assert!(w.cgroups["cg5.service"].max < 20_000);
        let series = &agg.exported.series[&key];
        assert_eq!(series.hist.count, 12 * 100 + 3, "each wait counted once");
        assert_eq!(series.hist.sum_ns, 12 * 100 * 10_000 + 3 * 50_000_000);
        assert_eq!(agg.exported.process_waits, 12 * 100 + 3);
    }

    /// The processes that keep their own series are the `top_k` of the sliding window: one
    /// with a burst keeps its series while the burst is in the window, then folds back.
    #[test]
    fn top_k_is_ranked_over_the_sliding_window() {
        let mut agg = Aggregator::new(AggregatorConfig {
            top_k: 1,
            sub_windows: 3,
            series_ttl_refreshes: 10,
            ..config()
        });
        let steady = || delta(5, 102, 1_000_000, 2);
        agg.refresh_processes(vec![steady(), delta(5, 101, 5_000_000, 2)], &[], &mut Table);
        let named = |agg: &Aggregator| -> Vec<String> {
            agg.exported
                .window
                .series
                .keys()
                .filter(|k| k.process != OTHER)
                .map(|k| k.process.clone())
                .collect()
        };
        assert_eq!(named(&agg), ["p101"]);
        // 101's 10 ms outweighs 102's 2 ms a refresh until it slides out.
        for _ in 0..2 {
            agg.refresh_processes(vec![steady()], &[], &mut Table);
            assert_eq!(named(&agg), ["p101"], "still the window's top process");
        }
        agg.refresh_processes(vec![steady()], &[], &mut Table);
        assert_eq!(named(&agg), ["p102"], "101 slid out");
        let other = &agg.exported.series[&SeriesKey::new("cg5.service", OTHER)];
        assert_eq!(
            other.hist.count, 6,
            "102's waits while 101 was on top, under other"
        );
        assert_eq!(
            agg.exported.series[&SeriesKey::new("cg5.service", "p102")]
                .hist
                .count,
            2
        );
        assert_eq!(agg.exported.window.folded_processes, 0);
    }
}
