//! Per-CPU and node quantiles over a sliding window: the last `window`, refreshed every
//! `refresh`. Pure logic, fed with the per-CPU deltas the daemon reads every `refresh`.
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

use std::collections::{BTreeMap, VecDeque};

use super::aggregate::{EventWait, Quantiles, SlotDelta, WindowHistogram};

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
}
