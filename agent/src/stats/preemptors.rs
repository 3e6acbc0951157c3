//! Long waits by who ran instead: the table behind `schedlat_preemptor_waits_total` and
//! `schedlat_preemptor_wait_seconds_total`. Cumulative (Prometheus counters) and bounded: past
//! `MAX_LABEL_SETS` label sets, new preemptors count under `preemptor="other"`.

use std::collections::BTreeMap;

use super::aggregate::{ClassWaits, OTHER};
use crate::diagnosis::Cause;

/// Label sets kept; beyond them a new preemptor counts as `other` (of the victim's cgroup).
pub const MAX_LABEL_SETS: usize = 1000;

/// Label set of the preemptor metrics: the waiting task's cgroup, and the process that ran
/// instead with its cgroup.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PreemptorKey {
    pub cgroup: String,
    pub preemptor_cgroup: String,
    pub preemptor: String,
}

/// Waits and wait time per label set.
#[derive(Clone, Debug, Default)]
pub struct PreemptorTable {
    sets: BTreeMap<PreemptorKey, ClassWaits>,
}

impl PreemptorTable {
    /// Counts one long wait under its preemptor.
    pub fn add(&mut self, mut key: PreemptorKey, wait_ns: u64) {
        if !self.sets.contains_key(&key) && self.sets.len() >= MAX_LABEL_SETS {
            OTHER.clone_into(&mut key.preemptor_cgroup);
            OTHER.clone_into(&mut key.preemptor);
        }
        let entry = self.sets.entry(key).or_default();
        entry.waits += 1;
        entry.wait_ns += wait_ns;
    }

    /// Counts a share of one long wait under a task that held the CPU during it (the
    /// diagnosis' occupancy): `waits` is 1 for the main culprit, 0 for the others, so the
    /// waits add up to the long waits and the seconds to their held time.
    pub fn add_share(&mut self, mut key: PreemptorKey, waits: u64, held_ns: u64) {
        if !self.sets.contains_key(&key) && self.sets.len() >= MAX_LABEL_SETS {
            OTHER.clone_into(&mut key.preemptor_cgroup);
            OTHER.clone_into(&mut key.preemptor);
        }
        let entry = self.sets.entry(key).or_default();
        entry.waits += waits;
        entry.wait_ns += held_ns;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PreemptorKey, &ClassWaits)> {
        self.sets.iter()
    }
}

/// Long waits by the waiting task's cgroup and diagnosed cause: the table behind
/// `schedlat_wait_cause_waits_total` and `schedlat_wait_cause_seconds_total`. Bounded like the
/// preemptor table: past `MAX_LABEL_SETS`, new cgroups count as `other`.
#[derive(Clone, Debug, Default)]
pub struct CauseTable {
    sets: BTreeMap<(String, Cause), ClassWaits>,
}

impl CauseTable {
    pub fn add(&mut self, cgroup: &str, cause: Cause, wait_ns: u64) {
        let mut key = (cgroup.to_owned(), cause);
        if !self.sets.contains_key(&key) && self.sets.len() >= MAX_LABEL_SETS {
            OTHER.clone_into(&mut key.0);
        }
        let entry = self.sets.entry(key).or_default();
        entry.waits += 1;
        entry.wait_ns += wait_ns;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(String, Cause), &ClassWaits)> {
        self.sets.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup: &str, preemptor: &str) -> PreemptorKey {
        PreemptorKey {
            cgroup: cgroup.to_owned(),
            preemptor_cgroup: "noisy.service".to_owned(),
            preemptor: preemptor.to_owned(),
        }
    }

    #[test]
    fn causes_count_per_cgroup_and_fold_beyond_the_bound() {
        let mut table = CauseTable::default();
        table.add("app", Cause::Throttled, 80);
        table.add("app", Cause::Throttled, 20);
        table.add("app", Cause::NoisyNeighbour, 5);
        for i in 0..MAX_LABEL_SETS + 10 {
            table.add(&format!("cg{i}"), Cause::Unknown, 1);
        }
        let app = table
            .iter()
            .find(|(k, _)| k.0 == "app" && k.1 == Cause::Throttled)
            .map(|(_, w)| (w.waits, w.wait_ns));
        assert_eq!(app, Some((2, 100)));
        assert_eq!(table.iter().count(), MAX_LABEL_SETS + 1);
        let other = table
            .iter()
            .find(|(k, _)| k.0 == OTHER)
            .map(|(_, w)| w.waits);
        assert_eq!(other, Some(12));
    }

    #[test]
    fn counts_and_folds_beyond_the_bound() {
        let mut table = PreemptorTable::default();
        for i in 0..MAX_LABEL_SETS + 50 {
            table.add(key("app.service", &format!("p{i}")), 1_000);
        }
        table.add(key("app.service", "p0"), 2_000);
        assert_eq!(
            table.iter().count(),
            MAX_LABEL_SETS + 1,
            "the bound plus other"
        );
        let other = table
            .iter()
            .find(|(k, _)| k.preemptor == OTHER)
            .map(|(_, w)| *w)
            .unwrap();
        assert_eq!((other.waits, other.wait_ns), (50, 50_000));
        let p0 = table
            .iter()
            .find(|(k, _)| k.preemptor == "p0")
            .map(|(_, w)| *w)
            .unwrap();
        assert_eq!(
            (p0.waits, p0.wait_ns),
            (2, 3_000),
            "known sets keep counting"
        );
    }
}
