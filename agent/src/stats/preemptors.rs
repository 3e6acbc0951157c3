//! Long waits by who ran instead: the table behind `schedlat_preemptor_waits_total` and
//! `schedlat_preemptor_wait_seconds_total`. Cumulative (Prometheus counters) and bounded: past
//! `MAX_LABEL_SETS` label sets, new preemptors count under `preemptor="other"`.

use std::collections::BTreeMap;

use super::aggregate::{ClassWaits, OTHER};

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

    pub fn iter(&self) -> impl Iterator<Item = (&PreemptorKey, &ClassWaits)> {
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
