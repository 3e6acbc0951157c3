//! Why a long wait happened: who held the CPU during it, by share of the wait, and the cause.
//!
//! The kernel programs keep, per CPU, the last stretches of who held it (`OccupancyRing`,
//! written at every context switch) and send a long wait together with its CPU's history
//! (`DiagEvent`). This module is the pure part: [`occupation`] turns the history into time
//! per holder within the wait, and [`classify`] picks the cause from it and from the evidence
//! the engine ([`engine`]) gathers about the host (CPU quota throttling seen by the kernel,
//! the victim's allowed CPUs and the other CPUs' idle time, priorities).
//!
//! The rule is "most of the wait": a cause holds when what it explains covers more than half
//! of the wait. The first that holds wins, in the order of [`Cause::ALL`]. When nothing covers
//! most of the wait, or the history does not cover it, the cause is `unknown`: a confident
//! wrong answer is worse.

pub mod engine;

use agent_common::{MAX_RT_PRIO, OCC_KTHREAD, OccupancyRing};
use serde::{Deserialize, Serialize};

/// Share of the wait a cause must explain.
pub const MAJORITY: f64 = 0.5;
/// A single uninterrupted stretch at least this long, covering nearly all of a wait, is a
/// stall: the scheduler's slices are a few milliseconds (EEVDF's base slice is 3 ms at most
/// on common machines; CFS's latency target 24 ms), so no fair task should keep a runnable
/// task of equal or higher priority waiting this long.
pub const STALL_MIN_NS: u64 = 100_000_000;
/// Share of the wait the stalling stretch must cover.
pub const STALL_SHARE: f64 = 0.95;
/// The id of the cgroup v2 root (its kernfs node id; the inode of the cgroup2 mount's root).
pub const ROOT_CGROUP_ID: u64 = 1;
/// Holders listed by name; the rest are summed.
pub const TOP_CULPRITS: usize = 3;

/// Why a task waited, in precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Its cgroup (or an ancestor) was CFS-bandwidth throttled (CPU quota) during the wait.
    Throttled,
    /// It may only run on some CPUs, and a CPU outside them was idle for most of the wait.
    Affinity,
    /// Real-time or deadline tasks held the CPU.
    Rt,
    /// Interrupts took the time (only where the kernel accounts IRQ time).
    Irq,
    /// One task held the CPU without a break for nearly the whole (long) wait.
    Stalled,
    /// Tasks of other cgroups held the CPU.
    NoisyNeighbour,
    /// Tasks of its own cgroup (its own threads or siblings) held the CPU. The root cgroup is
    /// no group (whatever no one placed is there): for a task in it, only its own process's
    /// threads count, other processes are neighbours.
    SelfContention,
    /// Kernel threads held the CPU.
    Kernel,
    /// Most of the wait passed on another CPU, before it was moved.
    Migration,
    /// Nothing explains most of the wait (or the history does not cover it).
    Unknown,
}

impl Cause {
    #[cfg(test)]
    pub const ALL: [Self; 10] = [
        Self::Throttled,
        Self::Affinity,
        Self::Rt,
        Self::Irq,
        Self::Stalled,
        Self::NoisyNeighbour,
        Self::SelfContention,
        Self::Kernel,
        Self::Migration,
        Self::Unknown,
    ];

    /// The label value (`cause="..."`, JSON `cause`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Affinity => "affinity",
            Self::Rt => "rt",
            Self::Irq => "irq",
            Self::Stalled => "stalled",
            Self::NoisyNeighbour => "noisy_neighbour",
            Self::SelfContention => "self_contention",
            Self::Kernel => "kernel",
            Self::Migration => "migration",
            Self::Unknown => "unknown",
        }
    }
}

/// A task that held the victim's CPU during the wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub tid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    pub rt: bool,
    pub kthread: bool,
    /// Time it held the CPU within the wait.
    pub held_ns: u64,
    /// Its longest single stretch within the wait.
    pub longest_ns: u64,
}

/// Who held the CPU during one wait, from the CPU's history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Occupation {
    pub wait_ns: u64,
    /// Holders other than the idle task, most time first.
    pub holders: Vec<Holder>,
    pub idle_ns: u64,
    /// Part of the wait the history does not cover (it had rolled over).
    pub unrecorded_ns: u64,
    /// Part of the wait before the task was moved to this CPU (spent on another CPU).
    pub before_migration_ns: u64,
}

impl Occupation {
    #[must_use]
    pub fn share(&self, ns: u64) -> f64 {
        if self.wait_ns == 0 {
            0.0
        } else {
            ns as f64 / self.wait_ns as f64
        }
    }

    /// Time held by holders matching `pred`.
    pub fn held_by(&self, pred: impl Fn(&Holder) -> bool) -> u64 {
        self.holders
            .iter()
            .filter(|h| pred(h))
            .map(|h| h.held_ns)
            .sum()
    }
}

/// Overlap of `[a0, a1)` with `[b0, b1)`.
fn overlap(a0: u64, a1: u64, b0: u64, b1: u64) -> u64 {
    a1.min(b1).saturating_sub(a0.max(b0))
}

/// Who held the CPU of `history` during `[start_ns, end_ns)`. `migrated_ns`: when the victim
/// (`victim_tid`) was moved to this CPU during the wait; the part before is not this CPU's.
#[must_use]
pub fn occupation(
    history: &OccupancyRing,
    start_ns: u64,
    end_ns: u64,
    migrated_ns: Option<u64>,
    victim_tid: u32,
) -> Occupation {
    let wait_ns = end_ns.saturating_sub(start_ns);
    let here_from = migrated_ns
        .filter(|&m| m > start_ns && m < end_ns)
        .unwrap_or(start_ns);
    let mut occ = Occupation {
        wait_ns,
        before_migration_ns: here_from - start_ns,
        ..Occupation::default()
    };
    let mut recorded = 0;
    let mut stretches: Vec<(u64, u64, u64, u64, i32, u32)> = history
        .in_order()
        .map(|e| {
            (
                e.start_ns,
                e.end_ns,
                e.pid_tgid,
                e.cgroup_id,
                e.prio,
                e.flags,
            )
        })
        .collect();
    // The stretch going on when the history was read (idle or not), up to the wait's end.
    if history.current_start_ns != 0 && history.current_start_ns < end_ns {
        let tid = u64::from(history.current_tid);
        stretches.push((history.current_start_ns, end_ns, tid, 0, MAX_RT_PRIO, 0));
    }
    for (start, end, pid_tgid, cgroup_id, prio, flags) in stretches {
        let ns = overlap(start, end, here_from, end_ns);
        if ns == 0 {
            continue;
        }
        let tid = pid_tgid as u32;
        if tid == victim_tid && tid != 0 {
            // The victim itself cannot hold the CPU while it waits on it: clock skew at the
            // edges. Left unrecorded.
            continue;
        }
        recorded += ns;
        if tid == 0 {
            occ.idle_ns += ns;
            continue;
        }
        if let Some(h) = occ.holders.iter_mut().find(|h| h.tid == tid) {
            h.held_ns += ns;
            h.longest_ns = h.longest_ns.max(ns);
        } else {
            occ.holders.push(Holder {
                tid,
                tgid: (pid_tgid >> 32) as u32,
                cgroup_id,
                rt: prio < MAX_RT_PRIO,
                kthread: flags & OCC_KTHREAD != 0,
                held_ns: ns,
                longest_ns: ns,
            });
        }
    }
    occ.holders
        .sort_by(|a, b| b.held_ns.cmp(&a.held_ns).then(a.tid.cmp(&b.tid)));
    occ.unrecorded_ns = (end_ns - here_from).saturating_sub(recorded);
    occ
}

/// Idle time of a CPU within `[start_ns, end_ns)` from its history, and whether the history
/// covers the whole window (else the idle time is a lower bound).
#[must_use]
pub fn idle_within(history: &OccupancyRing, start_ns: u64, end_ns: u64) -> (u64, bool) {
    let occ = occupation(history, start_ns, end_ns, None, 0);
    (occ.idle_ns, occ.unrecorded_ns == 0)
}

/// CFS bandwidth throttling of the victim's cgroup chain during the wait, as the kernel
/// reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// The throttled cgroup (the victim's or an ancestor), for display.
    pub cgroup: String,
    pub quota_ns: u64,
    pub period_ns: u64,
    /// Time within the wait that the cgroup was throttled on the victim's CPU.
    pub throttled_ns: u64,
}

/// What is known about CPU quota throttling for this wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThrottleKnowledge {
    /// No cgroup of the victim's chain has a CPU quota.
    NoQuota,
    /// A quota applies; the kernel's throttle events give the overlap (possibly 0).
    Observed(Throttle),
    /// A quota applies but throttling cannot be observed (the reason).
    Unobservable(String),
    /// The victim's cgroup could not be read (it exited).
    Unknown,
}

/// The victim's CPU affinity and the idle time of CPUs outside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub allowed: Vec<u32>,
    /// (CPU, idle time within the wait) of every online CPU outside the mask whose history
    /// could be read.
    pub idle_outside: Vec<(u32, u64)>,
}

/// Everything the classification uses besides the occupation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub victim_cgroup_id: Option<u64>,
    /// The waiting task's process (its own threads are its own contention, in any cgroup).
    pub victim_tgid: u32,
    pub throttle: ThrottleKnowledge,
    /// `None` when the victim may run on every online CPU (or its mask is unknown).
    pub affinity: Option<Affinity>,
    /// Whether the kernel accounts IRQ time (`CONFIG_IRQ_TIME_ACCOUNTING`); schedlat does not
    /// yet read it, so `irq` is never concluded (the evidence says so).
    pub irq_accounted: bool,
    /// Nice values of the victim and of the longest holder (for `stalled`).
    pub victim_nice: Option<i32>,
    pub holder_nice: Option<i32>,
    /// Facts about the host worth showing whatever the cause (the cgroup's throttling
    /// counters, the victim's own policy).
    pub host_facts: Vec<String>,
}

/// The cause and the facts that decided it.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    pub cause: Cause,
    /// Share of the wait the cause explains (0 for `unknown`).
    pub share: f64,
    /// Human-readable facts, each one line ("cgroup /x quota 10ms per 100ms").
    pub facts: Vec<String>,
}

/// Picks the cause of one wait (see the module docs).
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "the precedence reads top to bottom: one rule after the other"
)]
pub fn classify(occ: &Occupation, ev: &Evidence) -> Classification {
    let mut facts = ev.host_facts.clone();
    let wait = occ.wait_ns;
    let result = |cause, ns: u64, facts| Classification {
        cause,
        share: occ.share(ns),
        facts,
    };
    if wait == 0 {
        return result(Cause::Unknown, 0, facts);
    }
    facts.push(format!(
        "history: idle {:.0}%, not recorded {:.0}%, before migration {:.0}%",
        100.0 * occ.share(occ.idle_ns),
        100.0 * occ.share(occ.unrecorded_ns),
        100.0 * occ.share(occ.before_migration_ns)
    ));
    match &ev.throttle {
        ThrottleKnowledge::Observed(t) => {
            facts.push(if t.period_ns == 0 {
                format!(
                    "throttled (CFS bandwidth) for {} of the wait; the quota is set in cgroup {}",
                    ms(t.throttled_ns),
                    t.cgroup
                )
            } else {
                format!(
                    "cgroup {} has a CPU quota of {} per {}; throttled for {} of the wait",
                    t.cgroup,
                    ms(t.quota_ns),
                    ms(t.period_ns),
                    ms(t.throttled_ns)
                )
            });
            if occ.share(t.throttled_ns) > MAJORITY {
                return result(Cause::Throttled, t.throttled_ns.min(wait), facts);
            }
        }
        ThrottleKnowledge::Unobservable(why) => {
            facts.push(format!(
                "a CPU quota applies but throttling is not observable: {why}"
            ));
        }
        ThrottleKnowledge::NoQuota | ThrottleKnowledge::Unknown => {}
    }
    if let Some(a) = &ev.affinity
        && let Some(&(cpu, idle)) = a.idle_outside.iter().max_by_key(|(_, idle)| *idle)
    {
        facts.push(format!(
            "allowed CPUs {}; CPU {cpu} (not allowed) idle for {} of the wait",
            cpu_list(&a.allowed),
            ms(idle)
        ));
        if occ.share(idle) > MAJORITY {
            return result(Cause::Affinity, idle, facts);
        }
    }
    let rt_ns = occ.held_by(|h| h.rt);
    if occ.share(rt_ns) > MAJORITY {
        facts.push(format!("real-time tasks held the CPU for {}", ms(rt_ns)));
        return result(Cause::Rt, rt_ns, facts);
    }
    if !ev.irq_accounted {
        facts
            .push("IRQ time: not accounted by this kernel (CONFIG_IRQ_TIME_ACCOUNTING off)".into());
    }
    if let Some(top) = occ.holders.first()
        && top.longest_ns >= STALL_MIN_NS
        && occ.share(top.longest_ns) >= STALL_SHARE
        && !top.rt
    {
        match (ev.victim_nice, ev.holder_nice) {
            (Some(v), Some(h)) if v <= h => {
                facts.push(format!(
                    "tid {} held the CPU without a break for {} (nice {h}; the waiting task's \
                     nice {v})",
                    top.tid,
                    ms(top.longest_ns)
                ));
                return result(Cause::Stalled, top.longest_ns, facts);
            }
            _ => facts.push(format!(
                "tid {} held the CPU without a break for {}, but the priorities do not rule \
                 out a fair share",
                top.tid,
                ms(top.longest_ns)
            )),
        }
    }
    let victim_cgroup = ev.victim_cgroup_id;
    let in_root = victim_cgroup == Some(ROOT_CGROUP_ID);
    // Its own: its process's threads, and the tasks of its cgroup unless that is the root.
    let own =
        |h: &Holder| h.tgid == ev.victim_tgid || (!in_root && Some(h.cgroup_id) == victim_cgroup);
    let kernel_ns = occ.held_by(|h| h.kthread && !h.rt);
    let same_ns = victim_cgroup.map_or(0, |_| occ.held_by(|h| !h.kthread && !h.rt && own(h)));
    let other_ns = victim_cgroup.map_or(0, |_| occ.held_by(|h| !h.kthread && !h.rt && !own(h)));
    let by_holder = [
        (Cause::NoisyNeighbour, other_ns),
        (Cause::SelfContention, same_ns),
        (Cause::Kernel, kernel_ns),
    ];
    if victim_cgroup.is_none() {
        facts.push("the waiting task's cgroup is not known".into());
    }
    if let Some(&(cause, ns)) = by_holder.iter().max_by_key(|(_, ns)| *ns)
        && occ.share(ns) > MAJORITY
    {
        facts.push(if in_root {
            format!(
                "in the root cgroup: other processes {:.0}%, its own process {:.0}%, kernel \
                 threads {:.0}%",
                100.0 * occ.share(other_ns),
                100.0 * occ.share(same_ns),
                100.0 * occ.share(kernel_ns)
            )
        } else {
            format!(
                "other cgroups {:.0}%, own cgroup {:.0}%, kernel threads {:.0}%",
                100.0 * occ.share(other_ns),
                100.0 * occ.share(same_ns),
                100.0 * occ.share(kernel_ns)
            )
        });
        return result(cause, ns, facts);
    }
    if occ.share(occ.before_migration_ns) > MAJORITY {
        return result(Cause::Migration, occ.before_migration_ns, facts);
    }
    result(Cause::Unknown, 0, facts)
}

/// "12.3ms"-style duration.
#[must_use]
pub fn ms(ns: u64) -> String {
    crate::kernel::events::human_ns(ns)
}

/// "0-2,5" from a sorted list of CPUs.
#[must_use]
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests;
