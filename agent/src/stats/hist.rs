//! Latency histograms in the kernel's log-linear layout (`agent_common::hist_slot`), their
//! percentiles, and runqlat-style log2 rendering. Pure logic, no I/O.

use std::{collections::BTreeMap, fmt::Write as _};

use agent_common::{HIST_SLOTS, hist_slot_bounds};

/// The one quantile rule for slotted histograms: the value at quantile `q` (0..=1) is the
/// midpoint of the slot holding the sample of rank ceil(q·n), so the error is at most half a
/// slot. `slots` are (lower bound, upper bound, count) in ascending order; `count` is their
/// total. `None` when empty.
#[must_use]
pub fn slot_quantile(
    slots: impl Iterator<Item = (u64, u64, u64)>,
    count: u64,
    q: f64,
) -> Option<u64> {
    if count == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
    let mut seen = 0;
    for (lo, hi, n) in slots {
        seen += n;
        if seen >= rank {
            return Some(lo + (hi - lo - 1) / 2);
        }
    }
    None
}

/// The exact value at quantile `q` of sorted samples, by the same rank rule as
/// `slot_quantile`: what the histogram tests compare against.
#[cfg(test)]
#[must_use]
pub fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Counts per log-linear slot, in nanoseconds. Sparse (only slots with samples are kept): a
/// machine-wide view holds one per process, and a process's waits fill a few dozen of the
/// 1152 slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Slot → count, never 0.
    counts: BTreeMap<u32, u64>,
}

impl LatencyHistogram {
    #[cfg(test)]
    pub fn record(&mut self, wait_ns: u64) {
        self.add_slot(agent_common::hist_slot(wait_ns), 1);
    }

    /// Adds `count` samples to `slot` (as read from the kernel map). Out-of-range slots are
    /// clamped into the last one rather than lost.
    pub fn add_slot(&mut self, slot: u32, count: u64) {
        if count > 0 {
            *self.counts.entry(slot.min(HIST_SLOTS - 1)).or_default() += count;
        }
    }

    /// Adds every sample of `other` (e.g. processes into a machine-wide histogram).
    pub fn merge(&mut self, other: &Self) {
        for (slot, n) in &other.counts {
            *self.counts.entry(*slot).or_default() += n;
        }
    }

    /// The samples added since `earlier` (a previous read of the same cumulative histogram).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            counts: self
                .counts
                .iter()
                .filter_map(|(slot, now)| {
                    let added = now.saturating_sub(earlier.counts.get(slot).copied().unwrap_or(0));
                    (added > 0).then_some((*slot, added))
                })
                .collect(),
        }
    }

    /// The slots that hold samples, as (slot, count), ascending.
    pub fn slots(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.counts.iter().map(|(slot, n)| (*slot, *n))
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Value at quantile `q` (0..=1), in ns: the midpoint of the slot holding the sample of
    /// rank ceil(q·n), so the error is at most half a slot (≤ 1.6 % above 32 ns). `None` when
    /// empty. Callers with the exact maximum should clamp to it.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let slots = self.counts.iter().map(|(slot, &n)| {
            let (lo, hi) = hist_slot_bounds(*slot);
            (lo, hi, n)
        });
        slot_quantile(slots, self.count(), q)
    }

    /// Counts folded into power-of-two buckets of `unit`, runqlat's layout: bucket `i` holds
    /// waits in [2^i, 2^(i+1)) units, bucket 0 also holds everything below one unit. Slots
    /// are powers of two in ns, so a slot straddling a unit boundary goes by its midpoint:
    /// bucket edges are right to within one slot (3 %).
    #[must_use]
    pub fn log2_buckets(&self, unit: TimeUnit) -> Vec<u64> {
        let mut buckets: Vec<u64> = Vec::new();
        for (slot, &n) in &self.counts {
            let (lo, hi) = hist_slot_bounds(*slot);
            let units = (lo + (hi - lo) / 2) / unit.ns();
            let index = if units == 0 {
                0
            } else {
                agent_common::log2_floor(units) as usize
            };
            if buckets.len() <= index {
                buckets.resize(index + 1, 0);
            }
            buckets[index] += n;
        }
        buckets
    }

    /// runqlat-style text rendering, in `unit` (runqlat: µs by default, `-m` for ms).
    #[must_use]
    pub fn render_log2(&self, unit: TimeUnit) -> String {
        let buckets = self.log2_buckets(unit);
        let max = buckets.iter().copied().max().unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "     {:>10} : {:<10}   {:<8} distribution",
            unit.label(),
            "",
            "count"
        );
        for (i, &n) in buckets.iter().enumerate() {
            let lo: u64 = if i == 0 { 0 } else { 1 << i };
            let hi: u64 = (1u64 << (i + 1)) - 1;
            let width = if max == 0 { 0 } else { (n * 40).div_ceil(max) };
            let _ = writeln!(
                out,
                "{lo:>15} -> {hi:<10} : {n:<8} |{:<40}|",
                "*".repeat(width as usize)
            );
        }
        out
    }
}

/// The unit of a log2 histogram's buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeUnit {
    /// Microseconds.
    #[default]
    Us,
    /// Milliseconds.
    Ms,
}

impl TimeUnit {
    #[must_use]
    pub const fn ns(self) -> u64 {
        match self {
            TimeUnit::Us => 1_000,
            TimeUnit::Ms => 1_000_000,
        }
    }

    /// The column header, as runqlat prints it.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            TimeUnit::Us => "usecs",
            TimeUnit::Ms => "msecs",
        }
    }
}

/// Summary statistics of a set of waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub count: u64,
    pub total_wait_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Summary {
    /// Percentiles from `hist`, exact count/total/max from the kernel's per-thread totals.
    #[must_use]
    pub fn new(hist: &LatencyHistogram, count: u64, total_wait_ns: u64, max_ns: u64) -> Self {
        let at = |q| hist.quantile(q).unwrap_or(0).min(max_ns);
        Self {
            count,
            total_wait_ns,
            p50_ns: at(0.50),
            p90_ns: at(0.90),
            p99_ns: at(0.99),
            max_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift so the test needs no dependency and is reproducible.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn quantiles_are_within_two_percent_of_exact() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        // Log-uniform waits from 1 µs to ~100 ms, like a run-queue latency distribution.
        let mut values: Vec<u64> = (0..200_000)
            .map(|_| {
                let r = (xorshift(&mut state) % 1_000_000) as f64 / 1_000_000.0;
                (1_000.0 * 100_000f64.powf(r)) as u64
            })
            .collect();
        let mut hist = LatencyHistogram::default();
        for &v in &values {
            hist.record(v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = exact_quantile(&values, q) as f64;
            let estimate = hist.quantile(q).expect("non-empty") as f64;
            let error = (estimate - exact).abs() / exact;
            assert!(
                error < 0.02,
                "q={q}: estimate {estimate} vs exact {exact} ({:.2} %)",
                error * 100.0
            );
        }
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
        let summary = Summary::new(&LatencyHistogram::default(), 0, 0, 0);
        assert_eq!(summary, Summary::default());
    }

    #[test]
    fn summary_clamps_to_exact_max() {
        let mut hist = LatencyHistogram::default();
        hist.record(1_000_000);
        let summary = Summary::new(&hist, 1, 1_000_000, 1_000_000);
        assert_eq!(summary.p99_ns, 1_000_000, "{summary:?}");
        assert_eq!(summary.p50_ns, 1_000_000);
    }

    #[test]
    fn log2_fold_matches_runqlat_buckets() {
        let mut hist = LatencyHistogram::default();
        for ns in [500, 900, 1_100, 1_900, 2_100, 3_900, 4_100, 1_000_000] {
            hist.record(ns);
        }
        let buckets = hist.log2_buckets(TimeUnit::Us);
        // <2 µs: 500, 900, 1100, 1900 ns; [2,4) µs: 2100, 3900; [4,8) µs: 4100; 1 ms -> [512,1024) µs
        assert_eq!(&buckets[..3], &[4, 2, 1]);
        assert_eq!(buckets[9], 1);
        assert_eq!(buckets.iter().sum::<u64>(), 8);
        let text = hist.render_log2(TimeUnit::Us);
        assert!(text.contains("512 -> 1023"), "{text}");
        assert!(text.contains("usecs"), "{text}");
        // In ms every wait here is below 2 ms: all in the first bucket, 0 -> 1 ms.
        assert_eq!(hist.log2_buckets(TimeUnit::Ms), vec![8]);
        let text = hist.render_log2(TimeUnit::Ms);
        assert!(text.contains("msecs") && text.contains("0 -> 1"), "{text}");
        hist.record(5_000_000);
        assert_eq!(
            hist.log2_buckets(TimeUnit::Ms),
            vec![8, 0, 1],
            "5 ms in [4, 8) ms"
        );
    }
}
