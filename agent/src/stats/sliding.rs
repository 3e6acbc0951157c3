//! Quantiles over a sliding window: the last `window`, refreshed every `refresh`. Pure logic,
//! fed with the deltas the daemon reads every `refresh`: per CPU (`SlidingCpus`) and per
//! process (`SlidingProcesses`, from which the per-series and per-cgroup quantiles come).
//!
//! A ring of `window / refresh` sub-windows keeps each sub-window's per-CPU histogram (fine
//! layout); the gauges are those of the ring merged. So a wait is in the gauges from the first
//! refresh after it ended for exactly `window`, and a scrape at any moment sees the last
//! `window`, not a tumbling window that may be most of a window old.
//!
//! Memory: at most `sub_windows × CPUs × HIST_SLOTS` (1152) slot entries, each a `BTreeMap`
//! entry of three u64 (~50 bytes with the tree's overhead); only slots that had waits are kept,
//! typically a few hundred per CPU: with the default 5 sub-windows and 200 slots per CPU, about
//! 50 KB per CPU. The configuration bounds `window / refresh` (`MAX_SUB_WINDOWS`).
//!
//! Per process, the ring keeps each sub-window's `ProcDelta`s as the kernel reader made them
//! (sparse: about 130 bytes plus 16 per non-empty slot) and their sum per process, updated as
//! sub-windows come and go rather than merged again at every refresh. Memory: at most one
//! delta per process with an entry in the kernel map (`kernel_map_entries`, 16384 by default)
//! per sub-window, plus one sum per process that waited in the window; with 3000 processes
//! waking every 200 ms and 5 sub-windows, 15,000 deltas: ~2.5 MB by the structs' sizes (the
//! daemon's RSS was 39.6 MB with this ring and without it, the allocator reusing the memory the
//! tumbling window's aggregation used). Labels (the `top_k` processes
//! and `max_cgroups` cgroups of the sliding window) are decided by the aggregator from the sums,
//! so what is exported stays bounded by those limits whatever the ring holds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use agent_common::PREEMPTOR_CLASS_COUNT;

use super::aggregate::{ClassWaits, EventWait, ProcDelta, Quantiles, SlotDelta, WindowHistogram};

/// Most sub-windows a sliding window may have (`window / refresh`).
pub const MAX_SUB_WINDOWS: u64 = 60;

/// One refresh interval's waits.
#[derive(Clone, Debug, Default)]
struct SubWindow {
    /// Per CPU (index = CPU number).
    cpus: Vec<WindowHistogram>,
    duration_ns: u64,
}

/// The sliding window's gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlidingGauges {
    pub cpus: BTreeMap<u32, Quantiles>,
    pub node: Option<Quantiles>,
    /// Mean number of tasks waiting on each CPU's run queue over the sliding window.
    pub runqueue_length: BTreeMap<u32, f64>,
}

/// The ring of sub-windows.
#[derive(Clone, Debug)]
pub struct SlidingCpus {
    ring: VecDeque<SubWindow>,
    sub_windows: usize,
}

impl SlidingCpus {
    /// A sliding window of `sub_windows` refresh intervals (at least 1, at most
    /// `MAX_SUB_WINDOWS`).
    #[must_use]
    pub fn new(sub_windows: u64) -> Self {
        let sub_windows = sub_windows.clamp(1, MAX_SUB_WINDOWS) as usize;
        Self {
            ring: VecDeque::with_capacity(sub_windows),
            sub_windows,
        }
    }

    /// Sub-windows in the ring at most.
    #[cfg(test)]
    #[must_use]
    pub fn sub_windows(&self) -> usize {
        self.sub_windows
    }

    /// A new length (after a reload): the oldest sub-windows go if it is shorter.
    pub fn resize(&mut self, sub_windows: u64) {
        self.sub_windows = sub_windows.clamp(1, MAX_SUB_WINDOWS) as usize;
        while self.ring.len() > self.sub_windows {
            self.ring.pop_front();
        }
    }

    /// Adds one refresh interval: per CPU, its slots' waits since the last refresh, the exact
    /// waits of the events received meanwhile, and its length; the oldest interval drops out.
    pub fn push(&mut self, cpus: &[Vec<SlotDelta>], event_waits: &[EventWait], duration_ns: u64) {
        let mut sub = SubWindow {
            cpus: vec![WindowHistogram::default(); cpus.len()],
            duration_ns,
        };
        for (h, slots) in sub.cpus.iter_mut().zip(cpus) {
            for d in slots {
                h.add(d.slot, d.waits, d.wait_ns);
            }
        }
        for e in event_waits {
            if let Some(h) = sub.cpus.get_mut(e.cpu as usize) {
                h.note_exact(Some(e.wait_ns));
            }
        }
        if self.ring.len() == self.sub_windows {
            self.ring.pop_front();
        }
        self.ring.push_back(sub);
    }

    /// Quantiles per CPU and for the node, and run-queue lengths, over the ring.
    #[must_use]
    pub fn gauges(&self) -> SlidingGauges {
        let cpus = self.ring.iter().map(|s| s.cpus.len()).max().unwrap_or(0);
        let duration_ns: u64 = self.ring.iter().map(|s| s.duration_ns).sum();
        let mut merged = vec![WindowHistogram::default(); cpus];
        for sub in &self.ring {
            for (m, h) in merged.iter_mut().zip(&sub.cpus) {
                m.merge(h);
            }
        }
        let mut gauges = SlidingGauges::default();
        let mut node = WindowHistogram::default();
        for (cpu, h) in merged.iter().enumerate() {
            let cpu = cpu as u32;
            if let Some(q) = h.quantiles() {
                gauges.cpus.insert(cpu, q);
            }
            if duration_ns > 0 {
                gauges
                    .runqueue_length
                    .insert(cpu, h.total_ns() as f64 / duration_ns as f64);
            }
            node.merge(h);
        }
        gauges.node = node.quantiles();
        gauges
    }
}

/// A process of a window, in the cgroup it waited in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub cgroup_id: u64,
    pub tgid: u32,
}

/// A process's waits summed over the sliding window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcSum {
    /// Per-process histogram slot → waits (non-zero only).
    pub slots: BTreeMap<u32, u64>,
    /// Indexed by `PreemptorClass` wire value.
    pub classes: [ClassWaits; PREEMPTOR_CLASS_COUNT],
}

impl ProcSum {
    fn add(&mut self, d: &ProcDelta) {
        for &(slot, n) in &d.slots {
            *self.slots.entry(slot).or_default() += n;
        }
        for (sum, c) in self.classes.iter_mut().zip(&d.classes) {
            sum.waits += c.waits;
            sum.wait_ns += c.wait_ns;
        }
    }

    /// Takes out a delta added earlier; true when nothing is left.
    fn sub(&mut self, d: &ProcDelta) -> bool {
        for &(slot, n) in &d.slots {
            if let Some(waits) = self.slots.get_mut(&slot) {
                *waits = waits.saturating_sub(n);
                if *waits == 0 {
                    self.slots.remove(&slot);
                }
            }
        }
        for (sum, c) in self.classes.iter_mut().zip(&d.classes) {
            sum.waits = sum.waits.saturating_sub(c.waits);
            sum.wait_ns = sum.wait_ns.saturating_sub(c.wait_ns);
        }
        self.slots.is_empty() && self.classes.iter().all(|c| *c == ClassWaits::default())
    }

    /// Total wait (ns) over the window.
    #[must_use]
    pub fn total_ns(&self) -> u64 {
        self.classes.iter().map(|c| c.wait_ns).sum()
    }
}

/// One refresh interval's per-process waits.
#[derive(Clone, Debug, Default)]
struct ProcSubWindow {
    procs: Vec<ProcDelta>,
    /// Longest exact wait (from events) per process.
    event_max: HashMap<u32, u64>,
}

/// The ring of per-process sub-windows and their running sums.
#[derive(Clone, Debug)]
pub struct SlidingProcesses {
    ring: VecDeque<ProcSubWindow>,
    sub_windows: usize,
    sums: HashMap<ProcKey, ProcSum>,
}

impl SlidingProcesses {
    /// A sliding window of `sub_windows` refresh intervals (at least 1, at most
    /// `MAX_SUB_WINDOWS`).
    #[must_use]
    pub fn new(sub_windows: u64) -> Self {
        Self {
            ring: VecDeque::new(),
            sub_windows: sub_windows.clamp(1, MAX_SUB_WINDOWS) as usize,
            sums: HashMap::new(),
        }
    }

    /// A new length (after a reload): the oldest sub-windows go if it is shorter.
    pub fn resize(&mut self, sub_windows: u64) {
        self.sub_windows = sub_windows.clamp(1, MAX_SUB_WINDOWS) as usize;
        while self.ring.len() > self.sub_windows {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some(old) = self.ring.pop_front() else {
            return;
        };
        for d in &old.procs {
            let key = ProcKey {
                cgroup_id: d.cgroup_id,
                tgid: d.tgid,
            };
            if let Some(sum) = self.sums.get_mut(&key)
                && sum.sub(d)
            {
                self.sums.remove(&key);
            }
        }
    }

    /// Adds one refresh interval: what each process waited since the last refresh and the
    /// exact waits of the events received meanwhile; the oldest interval drops out.
    pub fn push(&mut self, procs: Vec<ProcDelta>, event_waits: &[EventWait]) {
        if self.ring.len() == self.sub_windows {
            self.pop_oldest();
        }
        for d in &procs {
            self.sums
                .entry(ProcKey {
                    cgroup_id: d.cgroup_id,
                    tgid: d.tgid,
                })
                .or_default()
                .add(d);
        }
        let mut event_max: HashMap<u32, u64> = HashMap::new();
        for e in event_waits {
            let m = event_max.entry(e.tgid).or_default();
            *m = (*m).max(e.wait_ns);
        }
        self.ring.push_back(ProcSubWindow { procs, event_max });
    }

    /// Every process that waited in the window, with its waits summed over it.
    #[must_use]
    pub fn sums(&self) -> &HashMap<ProcKey, ProcSum> {
        &self.sums
    }

    /// The longest exact wait (from events) of each process in the window.
    #[must_use]
    pub fn event_max(&self) -> HashMap<u32, u64> {
        let mut max: HashMap<u32, u64> = HashMap::new();
        for sub in &self.ring {
            for (&tgid, &w) in &sub.event_max {
                let m = max.entry(tgid).or_default();
                *m = (*m).max(w);
            }
        }
        max
    }

    /// The newest refresh interval's deltas.
    #[must_use]
    pub fn newest(&self) -> &[ProcDelta] {
        self.ring.back().map_or(&[], |s| s.procs.as_slice())
    }

    /// Deltas held in the ring (for the memory bound's debug line).
    #[must_use]
    pub fn deltas(&self) -> usize {
        self.ring.iter().map(|s| s.procs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use agent_common::hist_slot;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn slot(wait_ns: u64, waits: u64) -> SlotDelta {
        SlotDelta {
            slot: hist_slot(wait_ns),
            waits,
            wait_ns: wait_ns * waits,
        }
    }

    /// Background waits of ~10 µs on both CPUs every second, and one second with a burst of
    /// 300 ms waits on CPU 1: the burst is in the gauges for exactly `sub_windows` refreshes.
    #[test]
    fn a_burst_is_visible_for_exactly_the_window_then_gone() {
        let mut sliding = SlidingCpus::new(5);
        let background = || vec![vec![slot(10_000, 100)], vec![slot(10_000, 100)]];
        for _ in 0..7 {
            sliding.push(&background(), &[], SECOND);
            let g = sliding.gauges();
            assert!(g.node.is_some_and(|q| q.max < 20_000), "{g:?}");
        }
        let mut burst = background();
        burst[1].push(slot(300_000_000, 10));
        let exact = EventWait {
            tgid: 42,
            cpu: 1,
            wait_ns: 301_234_567,
        };
        sliding.push(&burst, &[exact], SECOND);
        for refresh in 1..=5 {
            let g = sliding.gauges();
            assert_eq!(
                g.cpus[&1].max, 301_234_567,
                "refresh {refresh} after the burst: exact max"
            );
            assert_eq!(g.node.map(|q| q.max), Some(301_234_567));
            assert!(
                g.cpus[&0].max < 20_000,
                "CPU 0 had no burst: {:?}",
                g.cpus[&0]
            );
            // 10 of 510 waits on CPU 1 are 300 ms: above p99 (rank 505), below p99.9.
            assert!(g.cpus[&1].p999 > 250_000_000, "{:?}", g.cpus[&1]);
            assert!(g.cpus[&1].p90 < 20_000, "{:?}", g.cpus[&1]);
            let rq = g.runqueue_length[&1];
            let expected = (3.0 + 5.0 * 0.001) / 5.0;
            assert!(
                (rq - expected).abs() < 1e-9,
                "Little's law: {rq} vs {expected}"
            );
            sliding.push(&background(), &[], SECOND);
        }
        let g = sliding.gauges();
        assert!(
            g.cpus[&1].max < 20_000,
            "gone after the window: {:?}",
            g.cpus[&1]
        );
        assert!(g.node.is_some_and(|q| q.max < 20_000));
    }

    #[test]
    fn empty_and_quiet_windows_have_no_quantiles() {
        let mut sliding = SlidingCpus::new(3);
        assert_eq!(sliding.gauges(), SlidingGauges::default());
        sliding.push(&[vec![slot(5_000, 1)]], &[], SECOND);
        assert!(sliding.gauges().node.is_some());
        for _ in 0..3 {
            sliding.push(&[vec![]], &[], SECOND);
        }
        let g = sliding.gauges();
        assert_eq!(g.node, None, "the wait slid out");
        assert!(g.cpus.is_empty());
        assert!(g.runqueue_length[&0].abs() < f64::EPSILON);
    }

    #[test]
    fn resizing_drops_the_oldest() {
        let mut sliding = SlidingCpus::new(4);
        sliding.push(&[vec![slot(1_000_000, 1)]], &[], SECOND);
        for _ in 0..2 {
            sliding.push(&[vec![slot(5_000, 1)]], &[], SECOND);
        }
        assert!(sliding.gauges().node.is_some_and(|q| q.max > 900_000));
        sliding.resize(2);
        assert!(sliding.gauges().node.is_some_and(|q| q.max < 10_000));
        assert_eq!(
            SlidingCpus::new(1000).sub_windows(),
            MAX_SUB_WINDOWS as usize
        );
    }

    fn proc_delta(cgroup_id: u64, tgid: u32, wait_ns: u64, waits: u64) -> ProcDelta {
        let mut classes = [ClassWaits::default(); PREEMPTOR_CLASS_COUNT];
        classes[0] = ClassWaits {
            waits,
            wait_ns: wait_ns * waits,
        };
        ProcDelta {
            cgroup_id,
            tgid,
            slots: vec![(agent_common::proc_hist_slot(wait_ns), waits)],
            classes,
        }
    }

    /// A process's sum is the ring's deltas added up, kept exact as sub-windows drop out, and
    /// gone with its last delta; an event's exact maximum slides out with its sub-window.
    #[test]
    fn process_sums_follow_the_ring_and_processes_leave_with_their_last_delta() {
        let mut sliding = SlidingProcesses::new(3);
        let key = |tgid| ProcKey { cgroup_id: 7, tgid };
        let burst = EventWait {
            tgid: 100,
            cpu: 0,
            wait_ns: 123_456_789,
        };
        sliding.push(
            vec![
                proc_delta(7, 100, 100_000_000, 2),
                proc_delta(7, 200, 1_000, 5),
            ],
            &[burst],
        );
        sliding.push(vec![proc_delta(7, 100, 1_000, 10)], &[]);
        let sums = sliding.sums();
        assert_eq!(sums[&key(100)].total_ns(), 200_000_000 + 10_000);
        assert_eq!(sums[&key(100)].slots.values().sum::<u64>(), 12);
        assert_eq!(sums[&key(200)].slots.values().sum::<u64>(), 5);
        assert_eq!(sliding.event_max().get(&100), Some(&123_456_789));
        assert_eq!(sliding.newest(), &[proc_delta(7, 100, 1_000, 10)]);
        sliding.push(vec![proc_delta(7, 100, 1_000, 1)], &[]);
        // The fourth push drops the first sub-window: process 200's only delta, the 100 ms
        // waits and the event.
        sliding.push(vec![proc_delta(7, 100, 1_000, 1)], &[]);
        let sums = sliding.sums();
        assert!(!sums.contains_key(&key(200)), "left with its last delta");
        assert_eq!(sums[&key(100)].total_ns(), 12_000);
        assert_eq!(sums[&key(100)].slots.values().sum::<u64>(), 12);
        assert!(sliding.event_max().is_empty(), "the event slid out");
        assert_eq!(sliding.deltas(), 3);
        for _ in 0..3 {
            sliding.push(Vec::new(), &[]);
        }
        assert!(sliding.sums().is_empty(), "a quiet window holds nothing");
        assert_eq!(sliding.deltas(), 0);
    }

    #[test]
    fn resizing_the_process_ring_takes_the_oldest_out_of_the_sums() {
        let mut sliding = SlidingProcesses::new(4);
        sliding.push(vec![proc_delta(1, 10, 5_000_000, 1)], &[]);
        sliding.push(vec![proc_delta(1, 10, 1_000, 1)], &[]);
        sliding.resize(1);
        let sum = &sliding.sums()[&ProcKey {
            cgroup_id: 1,
            tgid: 10,
        }];
        assert_eq!(sum.total_ns(), 1_000);
        assert_eq!(sum.slots.len(), 1);
    }
}
