//! `schedlat top`'s pure part: the sliding window of every process's waits, the rows of the
//! process and cgroup views, their order, and the text of a frame. No I/O: the loop in
//! `top/mod.rs` feeds it what it reads from the kernel and /proc.
//!
//! The window is a ring of ticks (one per refresh). A tick holds, per process, what the
//! kernel's cumulative per-thread totals and histograms gained since the previous tick (sparse
//! histogram slots), and the long waits (at or above the event threshold) that arrived as
//! events during the tick, with their diagnosis. A row is its process's ticks summed: exact
//! count and total wait; p99 from the histogram (within half a slot, ≤ 1.6 %); the maximum
//! exact where it is known (a long wait, or a new all-time maximum of its thread) and otherwise
//! the top of the histogram, which is below the event threshold (else it was a long wait).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, VecDeque},
    fmt::Write as _,
};

use agent_common::{Counter, TaskStats};
use serde::Serialize;

use crate::{
    diagnosis::{Cause, engine::Diagnosis},
    kernel::events::{comm_str, count_of, human_ns},
    stats::hist::LatencyHistogram,
};

/// Ticks a window may have (`window / refresh`).
pub const MAX_TICKS: usize = 600;

/// Long waits (at or above the event threshold) of a process or cgroup: their causes and who
/// held the CPU meanwhile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LongWaits {
    pub waits: u64,
    pub wait_ns: u64,
    pub max_ns: u64,
    /// Of these waits, the diagnosed ones: cause → (waits, wait time in ns).
    pub causes: BTreeMap<Cause, (u64, u64)>,
    /// Holding process (tgid; `[idle]` is 0) → time its threads held the CPU during the
    /// diagnosed waits, in ns (each culprit's share of a wait times the wait), and its name.
    /// Per process, not per thread: a neighbour with two busy threads holds 80 %, not two
    /// threads 40 % each.
    pub holders: HashMap<u32, Holder>,
    /// Of the `throttled` waits: the throttling cgroup and quota → wait time, in ns.
    pub quotas: HashMap<String, u64>,
}

/// A process that held the CPU during long waits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Holder {
    pub held_ns: f64,
    /// The process's name: its main thread's when that was a culprit, else the first seen
    /// thread's.
    pub comm: String,
    pub comm_is_leader: bool,
    pub kernel_thread: bool,
}

impl Holder {
    fn add(&mut self, held_ns: f64, comm: &str, leader: bool, kernel_thread: bool) {
        self.held_ns += held_ns;
        self.kernel_thread |= kernel_thread;
        if self.comm.is_empty() || (leader && !self.comm_is_leader) {
            comm.clone_into(&mut self.comm);
            self.comm_is_leader = leader;
        }
    }
}

impl LongWaits {
    pub fn record(&mut self, wait_ns: u64, diagnosis: Option<&Diagnosis>) {
        self.waits += 1;
        self.wait_ns += wait_ns;
        self.max_ns = self.max_ns.max(wait_ns);
        if let Some(d) = diagnosis {
            let cause = self.causes.entry(d.cause).or_default();
            cause.0 += 1;
            cause.1 += wait_ns;
            for c in &d.culprits {
                self.holders.entry(c.tgid).or_default().add(
                    c.share * wait_ns as f64,
                    &c.comm,
                    c.tid == c.tgid,
                    c.kernel_thread,
                );
            }
            if let Some(quota) = &d.throttled_by {
                *self.quotas.entry(quota.clone()).or_default() += wait_ns;
            }
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.waits += other.waits;
        self.wait_ns += other.wait_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
        for (cause, (n, ns)) in &other.causes {
            let mine = self.causes.entry(*cause).or_default();
            mine.0 += n;
            mine.1 += ns;
        }
        for (pid, holder) in &other.holders {
            self.holders.entry(*pid).or_default().add(
                holder.held_ns,
                &holder.comm,
                holder.comm_is_leader,
                holder.kernel_thread,
            );
        }
        for (quota, ns) in &other.quotas {
            *self.quotas.entry(quota.clone()).or_default() += ns;
        }
    }

    /// The quota that throttled the most of the `throttled` waits' time.
    #[must_use]
    pub fn main_quota(&self) -> Option<&str> {
        self.quotas
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(quota, _)| quota.as_str())
    }

    fn diagnosed_ns(&self) -> u64 {
        self.causes.values().map(|(_, ns)| ns).sum()
    }

    /// The cause of most of the diagnosed long-wait time and its share of that time (ties go
    /// to the cause first in precedence order).
    #[must_use]
    pub fn dominant_cause(&self) -> Option<(Cause, f64)> {
        let diagnosed = self.diagnosed_ns();
        if diagnosed == 0 {
            return None;
        }
        let (cause, (_, ns)) = self
            .causes
            .iter()
            .max_by_key(|(cause, (_, ns))| (*ns, Reverse(**cause)))?;
        Some((*cause, *ns as f64 / diagnosed as f64))
    }

    /// Who held the CPU for the largest part of the diagnosed long-wait time, and that part.
    #[must_use]
    pub fn main_culprit(&self) -> Option<Culprit> {
        let diagnosed = self.diagnosed_ns();
        if diagnosed == 0 {
            return None;
        }
        let (pid, holder) = self.holders.iter().max_by(|a, b| {
            a.1.held_ns
                .total_cmp(&b.1.held_ns)
                .then_with(|| b.0.cmp(a.0))
        })?;
        Some(Culprit {
            pid: *pid,
            comm: holder.comm.clone(),
            share: (holder.held_ns / diagnosed as f64).min(1.0),
            kernel_thread: holder.kernel_thread,
        })
    }
}

/// What the kernel counted during one tick besides the waits themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// Long waits the ring buffer could not take (counted in the totals, not diagnosed).
    pub events_lost: u64,
    /// Waits missing from the per-process totals: the kernel's per-thread map was full.
    pub stats_map_full: u64,
    /// Waits missing from the histograms: the kernel's histogram map was full.
    pub hist_map_full: u64,
    /// Wakeups not measured: the kernel could not record the enqueue.
    pub enqueue_map_full: u64,
}

impl Drops {
    /// The difference of two reads of the kernel's cumulative counters.
    #[must_use]
    pub fn between(earlier: &[u64], now: &[u64]) -> (u64, Self) {
        let delta = |c: Counter| {
            now[c as usize].saturating_sub(earlier.get(c as usize).copied().unwrap_or(0))
        };
        (
            delta(Counter::Samples),
            Self {
                events_lost: delta(Counter::RingbufFull),
                stats_map_full: delta(Counter::StatsMapFull),
                hist_map_full: delta(Counter::HistMapFull),
                enqueue_map_full: delta(Counter::EnqueueMapFull),
            },
        )
    }

    fn add(&mut self, other: &Self) {
        self.events_lost += other.events_lost;
        self.stats_map_full += other.stats_map_full;
        self.hist_map_full += other.hist_map_full;
        self.enqueue_map_full += other.enqueue_map_full;
    }

    fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// One process in one tick.
#[derive(Clone, Debug, Default)]
struct ProcessTick {
    waits: u64,
    total_ns: u64,
    /// The largest wait known exactly: a thread's new all-time maximum, or a long wait.
    exact_max_ns: u64,
    /// The tick's histogram, sparse: (slot, count).
    slots: Vec<(u32, u64)>,
    long: LongWaits,
    /// The kernel's name of the process (its leader's, else a thread's).
    comm: String,
}

#[derive(Clone, Debug, Default)]
struct Tick {
    duration_ns: u64,
    /// Every wait measured on the machine (the kernel's sample counter).
    samples: u64,
    drops: Drops,
    processes: HashMap<u32, ProcessTick>,
}

/// What one refresh read from the kernel: the per-thread totals gained since the previous
/// refresh (`trace::stats_since`: tid, delta, whether the thread's maximum is new) and the
/// per-process histograms gained.
pub struct TickInput<'a> {
    pub duration_ns: u64,
    pub stats: &'a [(u32, TaskStats, bool)],
    pub histograms: &'a HashMap<u32, LatencyHistogram>,
    pub samples: u64,
    pub drops: Drops,
}

/// The sliding window: the last `capacity` ticks.
#[derive(Clone, Debug)]
pub struct Window {
    ticks: VecDeque<Tick>,
    capacity: usize,
    /// Long waits that arrived since the last tick.
    pending: HashMap<u32, LongWaits>,
}

/// A process's (or cgroup's) waits over the window, before the row is worked out.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub waits: u64,
    pub total_ns: u64,
    exact_max_ns: u64,
    histogram: LatencyHistogram,
    pub long: LongWaits,
}

impl Totals {
    fn merge(&mut self, other: &Self) {
        self.waits += other.waits;
        self.total_ns += other.total_ns;
        self.exact_max_ns = self.exact_max_ns.max(other.exact_max_ns);
        self.histogram.merge(&other.histogram);
        self.long.merge(&other.long);
    }

    /// The row's figures. `threshold_ns`: the event threshold (waits at or above it are long
    /// waits, whose maximum is exact).
    #[must_use]
    pub fn stats(&self, threshold_ns: u64) -> RowStats {
        let top = self.histogram.quantile(1.0).unwrap_or(0);
        // The histogram's top is the wait's slot midpoint; a wait that reached the threshold
        // was a long wait and is in the exact maximum.
        // A single wait's slot middle may lie above the wait: never above the exact total.
        let max_ns = self
            .exact_max_ns
            .max(self.long.max_ns)
            .max(top.min(threshold_ns.saturating_sub(1)))
            .min(self.total_ns.max(self.exact_max_ns));
        let (cause, cause_share) = self
            .long
            .dominant_cause()
            .map_or((None, 0.0), |(c, s)| (Some(c), s));
        RowStats {
            waits: self.waits,
            total_wait_ns: self.total_ns,
            p99_ns: self.histogram.quantile(0.99).map(|p| p.min(max_ns)),
            max_ns,
            long_waits: self.long.waits,
            cause,
            cause_share,
            culprit: self.long.main_culprit(),
            throttled_by: (cause == Some(Cause::Throttled))
                .then(|| self.long.main_quota().map(str::to_owned))
                .flatten(),
        }
    }
}

impl Window {
    /// A window of `ticks` refreshes (at least 1, at most `MAX_TICKS`).
    #[must_use]
    pub fn new(ticks: usize) -> Self {
        let capacity = ticks.clamp(1, MAX_TICKS);
        Self {
            ticks: VecDeque::with_capacity(capacity),
            capacity,
            pending: HashMap::new(),
        }
    }

    /// A long wait of process `tgid` (an event), with its diagnosis if diagnosed.
    pub fn record_long_wait(&mut self, tgid: u32, wait_ns: u64, diagnosis: Option<&Diagnosis>) {
        self.pending
            .entry(tgid)
            .or_default()
            .record(wait_ns, diagnosis);
    }

    /// Closes a tick: what the kernel counted since the last one, with the long waits that
    /// arrived meanwhile. The oldest tick leaves the window when it is full.
    pub fn push_tick(&mut self, input: &TickInput<'_>) {
        let mut processes: HashMap<u32, ProcessTick> = HashMap::new();
        for (tid, s, new_max) in input.stats {
            let p = processes.entry(s.tgid).or_default();
            p.waits += s.count;
            p.total_ns += s.total_wait_ns;
            if *new_max {
                p.exact_max_ns = p.exact_max_ns.max(s.max_wait_ns);
            }
            if *tid == s.tgid || p.comm.is_empty() {
                p.comm = comm_str(&s.comm);
            }
        }
        for (tgid, h) in input.histograms {
            processes.entry(*tgid).or_default().slots = h.slots().collect();
        }
        for (tgid, long) in self.pending.drain() {
            processes.entry(tgid).or_default().long = long;
        }
        if self.ticks.len() == self.capacity {
            self.ticks.pop_front();
        }
        self.ticks.push_back(Tick {
            duration_ns: input.duration_ns,
            samples: input.samples,
            drops: input.drops,
            processes,
        });
    }

    /// How much time the window covers now (less than its length until it has filled).
    #[must_use]
    pub fn covered_ns(&self) -> u64 {
        self.ticks.iter().map(|t| t.duration_ns).sum()
    }

    /// Every wait on the machine in the window (the kernel's counter), and what was dropped.
    #[must_use]
    pub fn machine_counts(&self) -> (u64, Drops) {
        let mut drops = Drops::default();
        for t in &self.ticks {
            drops.add(&t.drops);
        }
        (self.ticks.iter().map(|t| t.samples).sum(), drops)
    }

    /// Each process that waited in the window: (pid, kernel name, totals).
    #[must_use]
    pub fn processes(&self) -> Vec<(u32, String, Totals)> {
        let mut out: HashMap<u32, (String, Totals)> = HashMap::new();
        for tick in &self.ticks {
            for (tgid, p) in &tick.processes {
                let (comm, totals) = out.entry(*tgid).or_default();
                if !p.comm.is_empty() {
                    comm.clone_from(&p.comm);
                }
                totals.waits += p.waits;
                totals.total_ns += p.total_ns;
                totals.exact_max_ns = totals.exact_max_ns.max(p.exact_max_ns);
                for (slot, n) in &p.slots {
                    totals.histogram.add_slot(*slot, *n);
                }
                totals.long.merge(&p.long);
            }
        }
        out.into_iter()
            .map(|(pid, (comm, totals))| (pid, comm, totals))
            .collect()
    }
}

/// The main culprit of a row's long waits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Culprit {
    /// Its process (0: the idle task, `[idle]`).
    pub pid: u32,
    pub comm: String,
    /// Its share of the row's diagnosed long-wait time, 0..1.
    pub share: f64,
    pub kernel_thread: bool,
}

/// The figures of one row over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RowStats {
    pub waits: u64,
    pub total_wait_ns: u64,
    /// `None` when the histogram map was full for this row's process(es) (`drops`).
    pub p99_ns: Option<u64>,
    pub max_ns: u64,
    /// Waits at or above the event threshold.
    pub long_waits: u64,
    /// The cause of most of the diagnosed long-wait time.
    pub cause: Option<Cause>,
    /// Its share of that time, 0..1.
    pub cause_share: f64,
    pub culprit: Option<Culprit>,
    /// With cause `throttled`: the cgroup whose CPU quota throttled most of it, and the
    /// quota (`/batch 20.00ms per 100.00ms`). The culprit is then the idle task: the quota,
    /// not a task, kept the CPU from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    #[serde(flatten)]
    pub stats: RowStats,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CgroupRow {
    pub cgroup: String,
    pub processes: usize,
    #[serde(flatten)]
    pub stats: RowStats,
}

/// The whole machine over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MachineRow {
    /// Every wait the kernel measured (also those of processes the maps could not take).
    pub waits: u64,
    pub processes: usize,
    #[serde(flatten)]
    pub stats: RowStats,
    pub drops: Drops,
}

/// The rows of both views (unsorted) and the machine's, from the window's processes and what
/// the host says of each: `describe(pid)` gives its current name (`None`: gone; the kernel's
/// name of its first wait is shown, which predates an exec) and its cgroup.
pub fn rows(
    window: &Window,
    threshold_ns: u64,
    include: impl Fn(u32) -> bool,
    mut describe: impl FnMut(u32) -> (Option<String>, String),
) -> (Vec<ProcessRow>, Vec<CgroupRow>, MachineRow) {
    let processes = window.processes();
    let all_processes = processes.len();
    let mut machine = Totals::default();
    let mut cgroups: BTreeMap<String, (usize, Totals)> = BTreeMap::new();
    let mut rows = Vec::with_capacity(processes.len());
    for (pid, comm, totals) in processes {
        machine.merge(&totals);
        if !include(pid) {
            continue;
        }
        let (name, cgroup) = describe(pid);
        let comm = name.unwrap_or(comm);
        let entry = cgroups.entry(cgroup.clone()).or_default();
        entry.0 += 1;
        entry.1.merge(&totals);
        rows.push(ProcessRow {
            pid,
            comm,
            cgroup,
            stats: totals.stats(threshold_ns),
        });
    }
    let cgroup_rows = cgroups
        .into_iter()
        .map(|(cgroup, (processes, totals))| CgroupRow {
            cgroup,
            processes,
            stats: totals.stats(threshold_ns),
        })
        .collect();
    let (waits, drops) = window.machine_counts();
    let machine = MachineRow {
        waits,
        processes: all_processes,
        stats: machine.stats(threshold_ns),
        drops,
    };
    (rows, cgroup_rows, machine)
}

/// Which rows the table shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// One row per process.
    #[default]
    Process,
    /// One row per cgroup (its processes summed).
    Cgroup,
}

impl View {
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::Process => Self::Cgroup,
            Self::Cgroup => Self::Process,
        }
    }
}

/// The column the rows are ordered by (largest first; names A to Z).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Total wait in the window.
    #[default]
    Total,
    /// 99th percentile wait.
    P99,
    /// Longest wait.
    Max,
    /// Number of waits.
    Waits,
    /// Number of long waits (at or above the threshold).
    Long,
    /// Process name (or cgroup path).
    Name,
}

impl SortKey {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "total wait",
            Self::P99 => "p99",
            Self::Max => "max",
            Self::Waits => "waits",
            Self::Long => "long waits",
            Self::Name => "name",
        }
    }

    /// The key a keypress selects.
    #[must_use]
    pub fn from_key(key: char) -> Option<Self> {
        match key {
            't' | 'T' => Some(Self::Total),
            '9' => Some(Self::P99),
            'm' | 'M' => Some(Self::Max),
            'w' | 'W' => Some(Self::Waits),
            'l' | 'L' => Some(Self::Long),
            'n' | 'N' => Some(Self::Name),
            _ => None,
        }
    }

    fn value(self, s: &RowStats) -> u64 {
        match self {
            Self::Total | Self::Name => s.total_wait_ns,
            Self::P99 => s.p99_ns.unwrap_or(0),
            Self::Max => s.max_ns,
            Self::Waits => s.waits,
            Self::Long => s.long_waits,
        }
    }
}

/// Orders process rows by `key` (ties: more total wait, then lower PID); `reverse` flips it.
pub fn sort_processes(rows: &mut [ProcessRow], key: SortKey, reverse: bool) {
    rows.sort_by(|a, b| {
        let order = if key == SortKey::Name {
            a.comm.cmp(&b.comm).then(a.pid.cmp(&b.pid))
        } else {
            key.value(&b.stats)
                .cmp(&key.value(&a.stats))
                .then(b.stats.total_wait_ns.cmp(&a.stats.total_wait_ns))
                .then(a.pid.cmp(&b.pid))
        };
        if reverse { order.reverse() } else { order }
    });
}

/// Orders cgroup rows by `key` (ties: more total wait, then path); `reverse` flips it.
pub fn sort_cgroups(rows: &mut [CgroupRow], key: SortKey, reverse: bool) {
    rows.sort_by(|a, b| {
        let order = if key == SortKey::Name {
            a.cgroup.cmp(&b.cgroup)
        } else {
            key.value(&b.stats)
                .cmp(&key.value(&a.stats))
                .then(b.stats.total_wait_ns.cmp(&a.stats.total_wait_ns))
                .then(a.cgroup.cmp(&b.cgroup))
        };
        if reverse { order.reverse() } else { order }
    });
}

/// What a frame shows, sorted.
#[derive(Clone, Debug, Serialize)]
pub struct Frame {
    /// Wall-clock time of the refresh (RFC 3339).
    pub time: String,
    /// Time the window covers (less than `window_seconds` until it has filled).
    pub covered_seconds: f64,
    pub window_seconds: f64,
    pub threshold_ns: u64,
    pub diagnosis: bool,
    pub machine: MachineRow,
    /// With `--cgroup`: the rows are the processes of this cgroup and those below it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_filter: Option<CgroupFilter>,
    pub processes: Vec<ProcessRow>,
    pub cgroups: Vec<CgroupRow>,
}

/// `--cgroup`: the cgroup as given and how many processes it and its descendants held at the
/// refresh.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupFilter {
    pub path: String,
    pub processes: usize,
}

/// How the user looks at the frame (changed by keys).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ui {
    pub view: View,
    pub sort: SortKey,
    pub reverse: bool,
    /// Rows scrolled past.
    pub scroll: usize,
    pub help: bool,
    /// A live screen: the key line and the rows shown (not in batch output).
    pub interactive: bool,
    /// The screen holds the last frame (measuring goes on).
    pub paused: bool,
}

fn per_second(count: u64, covered_seconds: f64) -> String {
    if covered_seconds <= 0.0 {
        return "-".into();
    }
    let rate = count as f64 / covered_seconds;
    if rate < 10.0 && rate > 0.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

fn cause_cell(s: &RowStats, diagnosis: bool) -> String {
    match s.cause {
        Some(cause) => format!("{} {:.0}%", cause.name(), 100.0 * s.cause_share),
        None if s.long_waits > 0 && !diagnosis => "(no diagnosis)".into(),
        None => "-".into(),
    }
}

/// `name[pid] share`; a kernel thread's name in brackets, as ps shows them (`[kswapd0][98]`);
/// for `throttled`, the quota that throttled it (`quota /batch 20.00ms/100.00ms`).
fn culprit_cell(s: &RowStats) -> String {
    if let Some(quota) = &s.throttled_by {
        return format!("quota {}", quota.replace(" per ", "/"));
    }
    s.culprit.as_ref().map_or_else(
        || "-".into(),
        |c| {
            let share = 100.0 * c.share;
            if c.pid == 0 {
                format!("{} {share:.0}%", c.comm)
            } else if c.kernel_thread {
                format!("[{}][{}] {share:.0}%", c.comm, c.pid)
            } else {
                format!("{}[{}] {share:.0}%", c.comm, c.pid)
            }
        },
    )
}

/// `text` cut to `width` characters.
#[must_use]
pub fn fit(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// `text` cut to its last `width` characters, marked with `…` (a cgroup path's leaf is what
/// tells it apart).
fn fit_tail(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width || width == 0 {
        return fit(text, width);
    }
    let tail: String = text.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

/// Segments joined by two spaces into lines of at most `width` characters (a segment longer
/// than that gets a line of its own).
fn wrap(segments: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for segment in segments {
        let len = line.chars().count();
        if !line.is_empty() && len + 2 + segment.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push_str("  ");
        }
        line.push_str(segment);
    }
    lines.push(line);
    lines
}

const KEYS: [&str; 7] = [
    "q quit",
    "Tab/v processes|cgroups",
    "sort: t total 9 p99 m max w waits l long n name",
    "r reverse",
    "p pause",
    "arrows PgUp/PgDn Home/End scroll",
    "h help",
];

const HELP: [&str; 10] = [
    "WAITS/s  waits for a CPU per second over the window (every wakeup and preemption)",
    "LONG     waits at or above the threshold in the window: each one diagnosed (who held the",
    "         CPU, why)",
    "TOTAL    time spent runnable but waiting, summed over threads, in the window",
    "P99/MAX  99th percentile (within 1.6 %) and longest wait; MAX is exact at or above the",
    "         threshold, below it the histogram slot's middle",
    "CAUSE    the cause of most of the long-wait time, and its share of that time",
    "CULPRIT  the task that held the CPU for most of the long-wait time (its process: the",
    "         threads summed), and its share; for throttled, the cgroup whose CPU quota did it",
    "Narrow terminal: LONG, WAITS/s, P99 and CGROUP are left out first. h again: back.",
];

/// A table column: title, width, right-aligned, and when it is left out on a narrow terminal
/// (higher first; 0: never).
struct Column {
    title: &'static str,
    width: usize,
    right: bool,
    drop_rank: u8,
}

const fn col(title: &'static str, width: usize, right: bool, drop_rank: u8) -> Column {
    Column {
        title,
        width,
        right,
        drop_rank,
    }
}

/// Room the last column (cgroup path, culprit) needs at least to stay.
const LAST_MIN: usize = 12;

/// Which columns fit in `width`: the lowest-ranked go first.
fn visible(columns: &[Column], width: usize) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    loop {
        let Some((last, rest)) = shown.split_last() else {
            return shown;
        };
        let used: usize = rest.iter().map(|&i| columns[i].width + 1).sum();
        let fits = used + LAST_MIN.min(columns[*last].width) <= width;
        let droppable = shown
            .iter()
            .enumerate()
            .filter(|(_, i)| columns[**i].drop_rank > 0)
            .max_by_key(|(_, i)| columns[**i].drop_rank);
        match droppable {
            Some((at, _)) if !fits => {
                shown.remove(at);
            }
            _ => return shown,
        }
    }
}

/// One table line: the visible cells padded to their column (the last one not).
fn table_line(columns: &[Column], shown: &[usize], cells: &[String]) -> String {
    let mut line = String::new();
    for (n, &i) in shown.iter().enumerate() {
        let c = &columns[i];
        if n > 0 {
            line.push(' ');
        }
        if n + 1 == shown.len() {
            line.push_str(&cells[i]);
        } else if c.right {
            let _ = write!(line, "{:>w$}", fit(&cells[i], c.width), w = c.width);
        } else {
            let _ = write!(line, "{:<w$}", fit(&cells[i], c.width), w = c.width);
        }
    }
    line
}

/// What a frame looks like: its lines, and which one is the table's header (none with help).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screen {
    pub lines: Vec<String>,
    pub table_header: Option<usize>,
}

/// The text of a frame for a terminal `width` characters wide (`usize::MAX`: no limit, every
/// column): header lines, then the table of the chosen view, rows from `ui.scroll`, at most
/// `max_rows`.
#[must_use]
pub fn render(frame: &Frame, ui: &Ui, width: usize, max_rows: usize) -> Screen {
    let covered = frame.covered_seconds;
    let mut lines = header(frame, ui, width, max_rows);
    lines.push(String::new());
    if ui.help {
        lines.extend(HELP.iter().map(|l| (*l).to_owned()));
        return Screen {
            lines,
            table_header: None,
        };
    }
    let stats_cells = |s: &RowStats| {
        [
            per_second(s.waits, covered),
            s.long_waits.to_string(),
            human_ns(s.total_wait_ns),
            s.p99_ns.map_or_else(|| "-".into(), human_ns),
            human_ns(s.max_ns),
            cause_cell(s, frame.diagnosis),
            culprit_cell(s),
        ]
    };
    let stats_columns = [
        col("WAITS/s", 8, true, 4),
        col("LONG", 6, true, 5),
        col("TOTAL", 9, true, 0),
        col("P99", 9, true, 3),
        col("MAX", 9, true, 0),
        col("CAUSE", 21, false, 0),
        col("CULPRIT", 34, false, 0),
    ];
    let table_header = lines.len();
    match ui.view {
        View::Process => {
            let mut columns = vec![col("PID", 7, true, 0), col("COMMAND", 16, false, 0)];
            columns.extend(stats_columns);
            columns.push(col("CGROUP", usize::MAX, false, 2));
            let shown = visible(&columns, width);
            let titles: Vec<String> = columns.iter().map(|c| c.title.to_owned()).collect();
            lines.push(table_line(&columns, &shown, &titles));
            for row in frame.processes.iter().skip(ui.scroll).take(max_rows) {
                let mut cells = vec![row.pid.to_string(), row.comm.clone()];
                cells.extend(stats_cells(&row.stats));
                cells.push(row.cgroup.clone());
                lines.push(table_line(&columns, &shown, &cells));
            }
        }
        View::Cgroup => {
            let mut columns = vec![col("CGROUP", 36, false, 0), col("PROCS", 5, true, 2)];
            columns.extend(stats_columns);
            let shown = visible(&columns, width);
            let titles: Vec<String> = columns.iter().map(|c| c.title.to_owned()).collect();
            lines.push(table_line(&columns, &shown, &titles));
            for row in frame.cgroups.iter().skip(ui.scroll).take(max_rows) {
                let mut cells = vec![fit_tail(&row.cgroup, 36), row.processes.to_string()];
                cells.extend(stats_cells(&row.stats));
                lines.push(table_line(&columns, &shown, &cells));
            }
        }
    }
    Screen {
        lines,
        table_header: Some(table_header),
    }
}

/// The lines above the table: the frame, the machine, what was dropped (and, live, the rows
/// shown and the keys), wrapped to `width`.
fn header(frame: &Frame, ui: &Ui, width: usize, max_rows: usize) -> Vec<String> {
    let m = &frame.machine;
    let covered = frame.covered_seconds;
    let mut first = vec![
        format!(
            "schedlat top - {}{}",
            frame.time,
            if ui.paused { " PAUSED (p resumes)" } else { "" }
        ),
        format!(
            "window {} of {}",
            human_ns((covered * 1e9) as u64),
            human_ns((frame.window_seconds * 1e9) as u64)
        ),
        format!(
            "{} view, sorted by {}{}",
            match ui.view {
                View::Process => "process",
                View::Cgroup => "cgroup",
            },
            ui.sort.label(),
            if ui.reverse { " (reversed)" } else { "" }
        ),
        format!(
            "long waits >= {}{}",
            human_ns(frame.threshold_ns),
            if frame.diagnosis {
                ""
            } else {
                " (no diagnosis)"
            }
        ),
    ];
    if let Some(filter) = &frame.cgroup_filter {
        first.push(format!(
            "only cgroup {} and below ({})",
            filter.path,
            count_of(filter.processes as u64, "process", "processes")
        ));
    }
    let mut lines = wrap(&first, width);
    let mut machine = vec![
        format!(
            "machine: {} waits/s in {}",
            per_second(m.waits, covered),
            count_of(m.processes as u64, "process", "processes")
        ),
        format!(
            "total wait {}/s",
            human_ns(if covered > 0.0 {
                (m.stats.total_wait_ns as f64 / covered) as u64
            } else {
                0
            })
        ),
        format!(
            "p99 {}",
            m.stats.p99_ns.map_or_else(|| "-".into(), human_ns)
        ),
        format!("max {}", human_ns(m.stats.max_ns)),
        count_of(m.stats.long_waits, "long wait", "long waits"),
    ];
    if m.stats.cause.is_some() {
        machine.push(format!("mostly {}", cause_cell(&m.stats, frame.diagnosis)));
    }
    lines.extend(wrap(&machine, width));
    let mut status = if m.drops.any() {
        let d = m.drops;
        vec![
            "INCOMPLETE in this window:".to_owned(),
            format!(
                "{} long waits not delivered (ring buffer full)",
                d.events_lost
            ),
            format!(
                "{} waits missing from processes (thread map full)",
                d.stats_map_full
            ),
            format!("{} from histograms (histogram map full)", d.hist_map_full),
            format!("{} wakeups not measured", d.enqueue_map_full),
        ]
    } else {
        vec!["nothing dropped in this window".to_owned()]
    };
    let rows = row_count(frame, ui.view);
    if ui.interactive && !ui.help {
        let first = ui.scroll.min(rows);
        let last = (ui.scroll + max_rows).min(rows);
        status.push(if rows == 0 {
            "no rows".to_owned()
        } else {
            format!("rows {}-{last} of {rows}", first + 1)
        });
    }
    lines.extend(wrap(&status, width));
    if ui.interactive {
        let keys: Vec<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
        lines.extend(wrap(&keys, width));
    }
    lines
}

/// Rows of a view.
#[must_use]
pub fn row_count(frame: &Frame, view: View) -> usize {
    match view {
        View::Process => frame.processes.len(),
        View::Cgroup => frame.cgroups.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::engine::Culprit as Held;

    fn stats(tgid: u32, count: u64, total: u64, max: u64, comm: &str) -> TaskStats {
        let mut s = TaskStats {
            count,
            total_wait_ns: total,
            max_wait_ns: max,
            tgid,
            ..TaskStats::default()
        };
        s.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        s
    }

    fn hist(waits: &[u64]) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        for w in waits {
            h.record(*w);
        }
        h
    }

    fn diagnosis(cause: Cause, culprits: &[(u32, &str, f64)]) -> Diagnosis {
        Diagnosis {
            cause,
            cause_share: 1.0,
            culprits: culprits
                .iter()
                .map(|(tgid, comm, share)| Held {
                    tid: *tgid,
                    tgid: *tgid,
                    comm: (*comm).to_owned(),
                    cgroup: String::new(),
                    share: *share,
                    kernel_thread: false,
                })
                .collect(),
            rest_share: 0.0,
            unrecorded_share: 0.0,
            evidence: Vec::new(),
            verdict: String::new(),
            throttled_by: (cause == Cause::Throttled).then(|| "/batch 20.00ms per 100.00ms".into()),
        }
    }

    fn tick(window: &mut Window, stats: &[(u32, TaskStats, bool)], hists: &[(u32, &[u64])]) {
        let histograms = hists.iter().map(|(t, w)| (*t, hist(w))).collect();
        window.push_tick(&TickInput {
            duration_ns: 1_000_000_000,
            stats,
            histograms: &histograms,
            samples: stats.iter().map(|(_, s, _)| s.count).sum(),
            drops: Drops::default(),
        });
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn the_window_slides_over_ticks() {
        let mut w = Window::new(2);
        tick(
            &mut w,
            &[(10, stats(10, 2, 8 * MS, 5 * MS, "a"), true)],
            &[(10, &[3 * MS, 5 * MS])],
        );
        tick(
            &mut w,
            &[(11, stats(10, 1, MS / 2, MS / 2, "a"), false)],
            &[(10, &[MS / 2])],
        );
        let rows = w.processes();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].2.waits, 3);
        assert_eq!(rows[0].2.total_ns, 8 * MS + MS / 2);
        assert_eq!(w.covered_ns(), 2_000_000_000);
        // A third tick pushes the first out: its waits (and its exact max) leave the window.
        tick(
            &mut w,
            &[(12, stats(20, 4, 4 * MS, MS, "b"), true)],
            &[(20, &[MS; 4])],
        );
        let mut rows = w.processes();
        rows.sort_by_key(|r| r.0);
        assert_eq!(rows[0].2.waits, 1);
        assert_eq!(rows[0].2.total_ns, MS / 2);
        let s = rows[0].2.stats(MS);
        // Not a new maximum, below the threshold: the histogram's slot, within 1.6 %.
        assert!(s.max_ns.abs_diff(MS / 2) * 100 <= MS / 2 * 2, "{s:?}");
        assert_eq!(rows[1].1, "b");
        assert_eq!(w.covered_ns(), 2_000_000_000);
    }

    #[test]
    fn the_maximum_is_exact_where_known_and_below_the_threshold_otherwise() {
        let mut w = Window::new(5);
        // A 7 ms wait that was not a new maximum of its thread (its older maximum is 9 ms),
        // delivered as a long wait: exact.
        w.record_long_wait(10, 7 * MS, None);
        tick(
            &mut w,
            &[(10, stats(10, 1, 7 * MS, 9 * MS, "a"), false)],
            &[(10, &[7 * MS])],
        );
        let (_, _, totals) = &w.processes()[0];
        assert_eq!(totals.stats(MS).max_ns, 7 * MS);
        // One wait of 38.0us: its slot's middle (38.4us) is above it; the exact total bounds
        // the maximum.
        let mut w = Window::new(5);
        tick(
            &mut w,
            &[(10, stats(10, 1, 38_000, 99 * MS, "a"), false)],
            &[(10, &[38_000])],
        );
        let (_, _, totals) = &w.processes()[0];
        assert_eq!(totals.stats(MS).max_ns, 38_000);
        // The same wait without its event (ring buffer full): the histogram's top, capped
        // below the threshold: never claims more than is known.
        let mut w = Window::new(5);
        tick(
            &mut w,
            &[(10, stats(10, 1, 7 * MS, 9 * MS, "a"), false)],
            &[(10, &[7 * MS])],
        );
        let (_, _, totals) = &w.processes()[0];
        assert_eq!(totals.stats(MS).max_ns, MS - 1);
        assert_eq!(totals.stats(MS).p99_ns, Some(MS - 1), "p99 never above max");
        // No histogram (its map was full): no p99 rather than a made-up one.
        let mut w = Window::new(5);
        tick(
            &mut w,
            &[(10, stats(10, 1, 7 * MS, 7 * MS, "a"), true)],
            &[],
        );
        let (_, _, totals) = &w.processes()[0];
        assert_eq!(totals.stats(MS).p99_ns, None);
        assert_eq!(totals.stats(MS).max_ns, 7 * MS);
        // One wait of 38.0us: its slot's middle (38.4us) is above it; the exact total bounds
        // the maximum.
        let mut w = Window::new(5);
        tick(
            &mut w,
            &[(10, stats(10, 1, 38_000, 99 * MS, "a"), false)],
            &[(10, &[38_000])],
        );
        let (_, _, totals) = &w.processes()[0];
        assert_eq!(totals.stats(MS).max_ns, 38_000);
    }

    #[test]
    fn causes_and_culprits_weigh_by_wait_time() {
        let mut long = LongWaits::default();
        // Three short noisy waits, one long throttled wait: time decides.
        for _ in 0..3 {
            long.record(
                2 * MS,
                Some(&diagnosis(Cause::NoisyNeighbour, &[(7, "hog", 1.0)])),
            );
        }
        long.record(
            20 * MS,
            Some(&diagnosis(
                Cause::Throttled,
                &[(0, "[idle]", 0.8), (7, "hog", 0.2)],
            )),
        );
        long.record(50 * MS, None); // not diagnosed (no diagnosis): not in the shares
        let (cause, share) = long.dominant_cause().expect("cause");
        assert_eq!(cause, Cause::Throttled);
        assert!((share - 20.0 / 26.0).abs() < 1e-9, "{share}");
        let culprit = long.main_culprit().expect("culprit");
        assert_eq!((culprit.pid, culprit.comm.as_str()), (0, "[idle]"));
        assert!((culprit.share - 16.0 / 26.0).abs() < 1e-9);
        assert_eq!(long.waits, 5);
        assert_eq!(long.max_ns, 50 * MS);
        // Equal time: the cause first in precedence order wins, whatever the insertion order.
        let mut tie = LongWaits::default();
        tie.record(MS, Some(&diagnosis(Cause::SelfContention, &[])));
        tie.record(MS, Some(&diagnosis(Cause::Affinity, &[])));
        assert_eq!(tie.dominant_cause().expect("cause").0, Cause::Affinity);
        assert_eq!(tie.main_culprit(), None, "no holder recorded");
    }

    #[test]
    fn the_culprit_is_the_process_its_threads_summed() {
        let held = |tid: u32, tgid: u32, comm: &str, share: f64| Held {
            tid,
            tgid,
            comm: comm.to_owned(),
            cgroup: String::new(),
            share,
            kernel_thread: false,
        };
        let mut d = diagnosis(Cause::NoisyNeighbour, &[]);
        // Two threads of process 20 (42 % and 40 %) against one of process 30 (18 %).
        d.culprits = vec![
            held(21, 20, "worker-1", 0.42),
            held(22, 20, "worker-2", 0.40),
            held(31, 30, "other", 0.18),
        ];
        let mut long = LongWaits::default();
        long.record(10 * MS, Some(&d));
        let culprit = long.main_culprit().expect("culprit");
        assert_eq!((culprit.pid, culprit.comm.as_str()), (20, "worker-1"));
        assert!((culprit.share - 0.82).abs() < 1e-9, "{}", culprit.share);
        // Once the main thread is seen, the process goes by its name.
        d.culprits = vec![held(20, 20, "neighbour", 0.5)];
        let mut later = LongWaits::default();
        later.record(10 * MS, Some(&d));
        long.merge(&later);
        let culprit = long.main_culprit().expect("culprit");
        assert_eq!((culprit.pid, culprit.comm.as_str()), (20, "neighbour"));
        assert!(
            (culprit.share - 1.32 / 2.0).abs() < 1e-9,
            "{}",
            culprit.share
        );
    }

    #[test]
    fn cgroup_rows_sum_their_processes() {
        let mut w = Window::new(5);
        w.record_long_wait(
            2,
            4 * MS,
            Some(&diagnosis(Cause::NoisyNeighbour, &[(9, "hog", 1.0)])),
        );
        tick(
            &mut w,
            &[
                (1, stats(1, 10, 10 * MS, 2 * MS, "one"), true),
                (2, stats(2, 5, 8 * MS, 4 * MS, "two"), true),
                (3, stats(3, 1, MS, MS, "three"), true),
            ],
            &[(1, &[MS; 10]), (2, &[MS, MS, MS, MS, 4 * MS]), (3, &[MS])],
        );
        let (mut processes, mut cgroups, machine) = rows(
            &w,
            MS,
            |_| true,
            |pid| (None, if pid == 3 { "/b".into() } else { "/a".into() }),
        );
        sort_processes(&mut processes, SortKey::Total, false);
        assert_eq!(
            processes.iter().map(|r| r.pid).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        sort_processes(&mut processes, SortKey::Max, false);
        assert_eq!(processes[0].pid, 2);
        assert_eq!(processes[0].stats.cause, Some(Cause::NoisyNeighbour));
        sort_processes(&mut processes, SortKey::Name, false);
        assert_eq!(
            processes
                .iter()
                .map(|r| r.comm.as_str())
                .collect::<Vec<_>>(),
            ["one", "three", "two"]
        );
        sort_processes(&mut processes, SortKey::Waits, true);
        assert_eq!(processes[0].pid, 3, "reversed: fewest waits first");
        sort_cgroups(&mut cgroups, SortKey::Total, false);
        assert_eq!(cgroups[0].cgroup, "/a");
        assert_eq!(cgroups[0].processes, 2);
        assert_eq!(cgroups[0].stats.waits, 15);
        assert_eq!(cgroups[0].stats.total_wait_ns, 18 * MS);
        assert_eq!(cgroups[0].stats.max_ns, 4 * MS);
        assert_eq!(cgroups[0].stats.long_waits, 1);
        let culprit = cgroups[0].stats.culprit.clone().expect("culprit");
        assert_eq!((culprit.pid, culprit.share), (9, 1.0));
        assert_eq!(cgroups[1].stats.waits, 1);
        assert_eq!(machine.waits, 16);
        assert_eq!(machine.processes, 3);
        assert_eq!(machine.stats.total_wait_ns, 19 * MS);

        // --cgroup: the rows of the members only; the machine line stays machine-wide.
        let (processes, cgroups, machine) = rows(
            &w,
            MS,
            |pid| pid == 3,
            |pid| (None, if pid == 3 { "/b".into() } else { "/a".into() }),
        );
        assert_eq!(processes.iter().map(|r| r.pid).collect::<Vec<_>>(), [3]);
        assert_eq!(
            cgroups
                .iter()
                .map(|c| c.cgroup.as_str())
                .collect::<Vec<_>>(),
            ["/b"]
        );
        assert_eq!((machine.processes, machine.waits), (3, 16));
        assert_eq!(machine.stats.total_wait_ns, 19 * MS);
    }

    #[test]
    fn the_header_names_the_cgroup_filter_and_a_pause() {
        let mut frame = one_victim_frame();
        frame.cgroup_filter = Some(CgroupFilter {
            path: "/system.slice/app.service".into(),
            processes: 1,
        });
        let ui = Ui {
            paused: true,
            interactive: true,
            ..Ui::default()
        };
        let text = render(&frame, &ui, usize::MAX, 10).lines.join("\n");
        assert!(text.contains("PAUSED (p resumes)"), "{text}");
        assert!(
            text.contains("only cgroup /system.slice/app.service and below (1 process)"),
            "{text}"
        );
        assert!(text.contains("p pause"), "{text}");
        let json = serde_json::to_value(&frame).expect("json");
        assert_eq!(json["cgroup_filter"]["processes"], 1);
        frame.cgroup_filter = None;
        let json = serde_json::to_value(&frame).expect("json");
        assert!(json.get("cgroup_filter").is_none(), "{json}");
    }

    fn one_victim_frame() -> Frame {
        let mut w = Window::new(5);
        w.record_long_wait(
            2,
            4 * MS,
            Some(&diagnosis(Cause::NoisyNeighbour, &[(9, "hog", 0.75)])),
        );
        tick(
            &mut w,
            &[(2, stats(2, 5, 8 * MS, 4 * MS, "victim"), true)],
            &[(2, &[MS, MS, MS, MS, 4 * MS])],
        );
        let (processes, cgroups, machine) = rows(&w, MS, |_| true, |_| (None, "/app".into()));
        Frame {
            time: "2026-11-26T15:00:00Z".into(),
            covered_seconds: 1.0,
            window_seconds: 5.0,
            threshold_ns: MS,
            diagnosis: true,
            machine,
            cgroup_filter: None,
            processes,
            cgroups,
        }
    }

    #[test]
    fn frames_render_both_views() {
        let frame = one_victim_frame();
        // Batch: every column, no key line.
        let mut ui = Ui::default();
        let screen = render(&frame, &ui, usize::MAX, 10);
        let lines = &screen.lines;
        assert!(lines[0].contains("window 1.00s of 5.00s"), "{}", lines[0]);
        assert!(
            lines[0].contains("process view, sorted by total wait"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("5.0 waits/s in 1 process "),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("nothing dropped"), "{}", lines[2]);
        assert!(
            !lines.iter().any(|l| l.contains("q quit")),
            "batch: no keys"
        );
        let header = &lines[screen.table_header.expect("a table")];
        for title in [
            "PID", "COMMAND", "WAITS/s", "LONG", "P99", "CULPRIT", "CGROUP",
        ] {
            assert!(header.contains(title), "{header}");
        }
        let row = &lines[screen.table_header.unwrap() + 1];
        assert!(row.contains("victim"), "{row}");
        assert!(row.contains("noisy_neighbour 100%"), "{row}");
        assert!(row.contains("hog[9] 75%"), "{row}");
        assert!(row.ends_with(" /app"), "{row}");

        // A live 80-column screen: the keys and rows shown; the header wraps, the least
        // needed columns go, the identity, cause and culprit stay.
        ui.interactive = true;
        let screen = render(&frame, &ui, 80, 10);
        assert!(
            screen.lines.iter().all(|l| l.chars().count() <= 80),
            "{:#?}",
            screen.lines
        );
        assert!(
            screen.lines.iter().any(|l| l.contains("rows 1-1 of 1")),
            "{:#?}",
            screen.lines
        );
        assert!(screen.lines.iter().any(|l| l.contains("q quit")));
        let header = &screen.lines[screen.table_header.unwrap()];
        assert!(
            header.contains("CULPRIT") && header.contains("CAUSE"),
            "{header}"
        );
        assert!(
            !header.contains("LONG") && !header.contains("CGROUP"),
            "{header}"
        );
        let row = &screen.lines[screen.table_header.unwrap() + 1];
        assert!(
            row.contains("victim") && row.contains("hog[9] 75%"),
            "{row}"
        );
    }

    #[test]
    fn the_cgroup_view_and_help() {
        let frame = one_victim_frame();
        let mut ui = Ui {
            view: View::Cgroup,
            ..Ui::default()
        };
        let screen = render(&frame, &ui, usize::MAX, 10);
        let at = screen.table_header.unwrap();
        assert!(
            screen.lines[at].starts_with("CGROUP"),
            "{}",
            screen.lines[at]
        );
        assert!(
            screen.lines[at + 1].starts_with("/app "),
            "{}",
            screen.lines[at + 1]
        );
        assert!(screen.lines[at + 1].contains("hog[9] 75%"));
        ui.scroll = 1;
        assert_eq!(
            render(&frame, &ui, usize::MAX, 10).lines.len(),
            at + 1,
            "scrolled past"
        );
        ui.help = true;
        let screen = render(&frame, &ui, 100, 10);
        assert_eq!(screen.table_header, None);
        assert!(screen.lines.iter().any(|l| l.starts_with("CULPRIT")));
        assert_eq!(fit_tail("/system.slice/nginx.service", 10), "…x.service");
    }

    #[test]
    fn culprit_cells() {
        let kthread = RowStats {
            culprit: Some(Culprit {
                pid: 98,
                comm: "kswapd0".into(),
                share: 0.5,
                kernel_thread: true,
            }),
            ..RowStats::default()
        };
        assert_eq!(culprit_cell(&kthread), "[kswapd0][98] 50%");
        let mut throttled = LongWaits::default();
        throttled.record(
            90 * MS,
            Some(&diagnosis(Cause::Throttled, &[(0, "[idle]", 0.99)])),
        );
        let totals = Totals {
            long: throttled,
            total_ns: 90 * MS,
            ..Totals::default()
        };
        let stats = totals.stats(MS);
        assert_eq!(
            stats.throttled_by.as_deref(),
            Some("/batch 20.00ms per 100.00ms")
        );
        assert_eq!(culprit_cell(&stats), "quota /batch 20.00ms/100.00ms");
    }
}
