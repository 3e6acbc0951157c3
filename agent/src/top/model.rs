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
    kernel::events::{comm_str, human_ns},
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
    /// Holder (tgid, name; `[idle]` is tgid 0) → time it held the CPU during the diagnosed
    /// waits, in ns (each culprit's share of a wait times the wait).
    pub holders: HashMap<(u32, String), f64>,
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
                *self.holders.entry((c.tgid, c.comm.clone())).or_default() +=
                    c.share * wait_ns as f64;
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
        for (holder, ns) in &other.holders {
            *self.holders.entry(holder.clone()).or_default() += ns;
        }
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
        let ((pid, comm), held) = self
            .holders
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))?;
        Some(Culprit {
            pid: *pid,
            comm: comm.clone(),
            share: (held / diagnosed as f64).min(1.0),
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
        let max_ns = self
            .exact_max_ns
            .max(self.long.max_ns)
            .max(top.min(threshold_ns.saturating_sub(1)));
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
    mut describe: impl FnMut(u32) -> (Option<String>, String),
) -> (Vec<ProcessRow>, Vec<CgroupRow>, MachineRow) {
    let processes = window.processes();
    let mut machine = Totals::default();
    let mut cgroups: BTreeMap<String, (usize, Totals)> = BTreeMap::new();
    let mut rows = Vec::with_capacity(processes.len());
    for (pid, comm, totals) in processes {
        machine.merge(&totals);
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
        processes: rows.len(),
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
    pub processes: Vec<ProcessRow>,
    pub cgroups: Vec<CgroupRow>,
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
}

/// Lines above the table (header, machine, drops, keys, blank); the table's header follows.
pub const HEADER_LINES: usize = 5;

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

/// `name[pid] share`; a kernel thread's name in brackets, as ps shows them (`[kswapd0][98]`).
fn culprit_cell(s: &RowStats) -> String {
    s.culprit.as_ref().map_or_else(
        || "-".into(),
        |c| {
            let share = 100.0 * c.share;
            match c.comm.strip_suffix(" (kernel thread)") {
                _ if c.pid == 0 => format!("{} {share:.0}%", c.comm),
                Some(kthread) => format!("[{kthread}][{}] {share:.0}%", c.pid),
                None => format!("{}[{}] {share:.0}%", c.comm, c.pid),
            }
        },
    )
}

/// `text` cut to `width` characters.
#[must_use]
pub fn fit(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

const KEYS: &str = "q quit  Tab/v processes|cgroups  sort: t total 9 p99 m max w waits l long \
                    n name  r reverse  Up/Down/PgUp/PgDn scroll  h help";

const HELP: [&str; 9] = [
    "WAITS/s  waits for a CPU per second over the window (every wakeup and preemption)",
    "LONG     waits at or above the threshold: each one diagnosed (who held the CPU, why)",
    "TOTAL    time spent runnable but waiting, summed over threads, in the window",
    "P99/MAX  99th percentile (within 1.6 %) and longest wait; MAX is exact at or above the",
    "         threshold, below it the histogram slot's middle",
    "CAUSE    the cause of most of the long-wait time, and its share of that time",
    "CULPRIT  the task that held the CPU for most of the long-wait time, and its share",
    "Causes: throttled affinity rt irq stalled noisy_neighbour self_contention kernel",
    "        migration unknown (see `schedlat trace --help` and the README)",
];

/// The text of a frame: header lines, then the table of the chosen view (rows from
/// `ui.scroll`, at most `max_rows`). Lines are not cut to the terminal's width.
#[must_use]
pub fn render(frame: &Frame, ui: &Ui, max_rows: usize) -> Vec<String> {
    let m = &frame.machine;
    let covered = frame.covered_seconds;
    let mut lines = Vec::new();
    lines.push(format!(
        "schedlat top - {}  window {} of {}  {} view, sorted by {}{}  long waits >= {}{}",
        frame.time,
        human_ns((covered * 1e9) as u64),
        human_ns((frame.window_seconds * 1e9) as u64),
        match ui.view {
            View::Process => "process",
            View::Cgroup => "cgroup",
        },
        ui.sort.label(),
        if ui.reverse { " (reversed)" } else { "" },
        human_ns(frame.threshold_ns),
        if frame.diagnosis {
            ""
        } else {
            " (no diagnosis)"
        },
    ));
    lines.push(format!(
        "machine: {} waits/s in {} processes, total wait {}/s, p99 {}, max {}, {} long waits{}",
        per_second(m.waits, covered),
        m.processes,
        human_ns(if covered > 0.0 {
            (m.stats.total_wait_ns as f64 / covered) as u64
        } else {
            0
        }),
        m.stats.p99_ns.map_or_else(|| "-".into(), human_ns),
        human_ns(m.stats.max_ns),
        m.stats.long_waits,
        m.stats
            .cause
            .map(|_| format!(": mostly {}", cause_cell(&m.stats, frame.diagnosis)))
            .unwrap_or_default(),
    ));
    lines.push(if m.drops.any() {
        let d = m.drops;
        format!(
            "INCOMPLETE in this window: {} long waits not delivered (ring buffer full), {} waits \
             missing from processes (thread map full), {} from histograms, {} wakeups not \
             measured",
            d.events_lost, d.stats_map_full, d.hist_map_full, d.enqueue_map_full
        )
    } else {
        "nothing dropped in this window".into()
    });
    lines.push(KEYS.into());
    lines.push(String::new());
    if ui.help {
        lines.extend(HELP.iter().map(|l| (*l).to_owned()));
        return lines;
    }
    let stats_cells = |s: &RowStats| {
        format!(
            "{:>8} {:>6} {:>9} {:>9} {:>9}  {:<21} {:<28}",
            per_second(s.waits, covered),
            s.long_waits,
            human_ns(s.total_wait_ns),
            s.p99_ns.map_or_else(|| "-".into(), human_ns),
            human_ns(s.max_ns),
            fit(&cause_cell(s, frame.diagnosis), 21),
            fit(&culprit_cell(s), 28),
        )
    };
    let columns = format!(
        "{:>8} {:>6} {:>9} {:>9} {:>9}  {:<21} {:<28}",
        "WAITS/s", "LONG", "TOTAL", "P99", "MAX", "CAUSE", "CULPRIT"
    );
    match ui.view {
        View::Process => {
            lines.push(format!("{:>7} {:<16}{columns} CGROUP", "PID", "COMMAND"));
            for row in frame.processes.iter().skip(ui.scroll).take(max_rows) {
                let mut line = format!(
                    "{:>7} {:<16}{}",
                    row.pid,
                    fit(&row.comm, 16),
                    stats_cells(&row.stats)
                );
                let _ = write!(line, " {}", row.cgroup);
                lines.push(line);
            }
        }
        View::Cgroup => {
            lines.push(format!("{:>5} {columns} CGROUP", "PROCS"));
            for row in frame.cgroups.iter().skip(ui.scroll).take(max_rows) {
                lines.push(format!(
                    "{:>5} {} {}",
                    row.processes,
                    stats_cells(&row.stats),
                    row.cgroup
                ));
            }
        }
    }
    lines
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
                })
                .collect(),
            rest_share: 0.0,
            unrecorded_share: 0.0,
            evidence: Vec::new(),
            verdict: String::new(),
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
        let (mut processes, mut cgroups, machine) = rows(&w, MS, |pid| {
            (None, if pid == 3 { "/b".into() } else { "/a".into() })
        });
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
    }

    #[test]
    fn frames_render_both_views() {
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
        let (processes, cgroups, machine) = rows(&w, MS, |_| (None, "/app".into()));
        let frame = Frame {
            time: "2026-11-26T15:00:00Z".into(),
            covered_seconds: 1.0,
            window_seconds: 5.0,
            threshold_ns: MS,
            diagnosis: true,
            machine,
            processes,
            cgroups,
        };
        let mut ui = Ui::default();
        let lines = render(&frame, &ui, 10);
        assert!(lines[0].contains("window 1.00s of 5.00s"), "{}", lines[0]);
        assert!(
            lines[0].contains("process view, sorted by total wait"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("5.0 waits/s in 1 processes"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("nothing dropped"), "{}", lines[2]);
        let header = &lines[HEADER_LINES];
        assert!(
            header.contains("PID") && header.contains("CULPRIT"),
            "{header}"
        );
        let row = &lines[HEADER_LINES + 1];
        assert!(row.contains("victim"), "{row}");
        assert!(row.contains("noisy_neighbour 100%"), "{row}");
        assert!(row.contains("hog[9] 75%"), "{row}");
        let mut kthread = frame.processes[0].stats.clone();
        kthread.culprit = Some(Culprit {
            pid: 98,
            comm: "kswapd0 (kernel thread)".into(),
            share: 0.5,
        });
        assert_eq!(culprit_cell(&kthread), "[kswapd0][98] 50%");
        assert!(row.ends_with(" /app"), "{row}");
        ui.view = View::Cgroup;
        let lines = render(&frame, &ui, 10);
        assert!(
            lines[HEADER_LINES].starts_with("PROCS"),
            "{}",
            lines[HEADER_LINES]
        );
        assert!(lines[HEADER_LINES + 1].contains("hog[9] 75%"));
        ui.scroll = 1;
        assert_eq!(
            render(&frame, &ui, 10).len(),
            HEADER_LINES + 1,
            "scrolled past the only row"
        );
        ui.help = true;
        assert!(
            render(&frame, &ui, 10)
                .iter()
                .any(|l| l.starts_with("CULPRIT"))
        );
    }
}
