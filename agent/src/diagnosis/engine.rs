//! Gathers the evidence for one long wait (from the event, the kernel's throttle records, the
//! other CPUs' histories and /proc), classifies it and names the culprits.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use agent_common::{DiagEvent, OccupancyRing, THROTTLE_START, THROTTLED_UNKNOWN, ThrottleRecord};
use serde::{Deserialize, Serialize};

use super::{
    Affinity, Cause, Classification, Evidence, Holder, Occupation, TOP_CULPRITS, Throttle,
    ThrottleKnowledge, classify, cpu_list, idle_within, ms, occupation,
};
use crate::{
    host::{cache::TtlCache, cpulimits, procinfo},
    kernel::events::comm_str,
};

/// A task that held the CPU during a wait, with its share (the JSON form is stable).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    pub tid: u32,
    pub tgid: u32,
    /// The thread's name as the kernel has it (escaped like every name).
    pub comm: String,
    pub cgroup: String,
    /// Share of the wait, 0..1.
    pub share: f64,
    /// A kernel thread (`PF_KTHREAD`). Absent in bundles written before it existed, whose
    /// `comm` ends in ` (kernel thread)` instead.
    #[serde(default)]
    pub kernel_thread: bool,
}

impl Culprit {
    /// The name for people: `kswapd0 (kernel thread)` for a kernel thread.
    #[must_use]
    pub fn label(&self) -> String {
        if self.kernel_thread {
            format!("{} (kernel thread)", self.comm)
        } else {
            self.comm.clone()
        }
    }
}

/// The diagnosis of one long wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub cause: Cause,
    /// Share of the wait the cause explains, 0..1.
    pub cause_share: f64,
    /// Who held the CPU, largest share first (at most `TOP_CULPRITS`; the idle task is
    /// `[idle]`, tid 0).
    pub culprits: Vec<Culprit>,
    /// Share held by the holders not listed.
    pub rest_share: f64,
    /// Share of the wait the CPU's history did not cover.
    pub unrecorded_share: f64,
    /// The facts that decided the cause.
    pub evidence: Vec<String>,
    /// One sentence for people.
    pub verdict: String,
    /// With `throttled`: the cgroup whose CPU quota throttled it, and the quota
    /// (`/batch 20.00ms per 100.00ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_by: Option<String>,
}

impl Diagnosis {
    /// The culprit with the largest share, if any.
    #[must_use]
    pub fn culprit(&self) -> Option<&Culprit> {
        self.culprits.first()
    }

    /// "comm 63%" of the main culprit, or "-".
    #[must_use]
    pub fn culprit_label(&self) -> String {
        self.culprit().map_or_else(
            || "-".to_owned(),
            |c| format!("{} {:.0}%", c.label(), 100.0 * c.share),
        )
    }
}

/// Throttle intervals the kernel reported, kept for `KEEP_NS`.
#[derive(Debug, Default)]
pub struct ThrottleLog {
    /// (cpu, cgroup) → throttled since.
    open: HashMap<(u32, u64), u64>,
    /// (cpu, cgroup, start, end), oldest first.
    closed: VecDeque<(u32, u64, u64, u64)>,
    /// Records seen (for the self-metrics and tests).
    pub records: u64,
}

impl ThrottleLog {
    /// How long intervals are kept: longer than any wait worth diagnosing plus the reader's
    /// delay.
    pub const KEEP_NS: u64 = 30_000_000_000;
    /// Bound on kept intervals (a throttled cgroup on every CPU every period is 10 per second
    /// per CPU).
    pub const MAX_INTERVALS: usize = 65_536;

    pub fn on_record(&mut self, r: &ThrottleRecord) {
        self.records += 1;
        let key = (r.cpu, r.cgroup_id);
        if r.kind == THROTTLE_START {
            self.open.entry(key).or_insert(r.ts_ns);
        } else if let Some(start) = self.open.remove(&key) {
            self.closed.push_back((r.cpu, r.cgroup_id, start, r.ts_ns));
        }
        while self.closed.len() > Self::MAX_INTERVALS
            || self
                .closed
                .front()
                .is_some_and(|c| c.3 + Self::KEEP_NS < r.ts_ns)
        {
            self.closed.pop_front();
        }
        // A start without an end (missed record) must not grow the map forever.
        if self.open.len() > Self::MAX_INTERVALS {
            self.open.clear();
        }
    }

    /// Takes every record waiting in the kernel's throttle ring buffer.
    pub fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        while let Some(bytes) = ring.next() {
            if let Ok(record) = crate::kernel::events::decode_as::<ThrottleRecord>(&bytes) {
                self.on_record(&record);
            }
        }
    }

    /// Time within `[start, end)` that any of `cgroups` was throttled on `cpu` (the union of
    /// the intervals, so nested throttled ancestors are not counted twice).
    #[must_use]
    pub fn throttled_within(&self, cpu: u32, cgroups: &[u64], start: u64, end: u64) -> u64 {
        let mut spans: Vec<(u64, u64)> = self
            .closed
            .iter()
            .filter(|c| c.0 == cpu && cgroups.contains(&c.1))
            .map(|c| (c.2, c.3))
            .chain(
                self.open
                    .iter()
                    .filter(|((c, id), _)| *c == cpu && cgroups.contains(id))
                    .map(|(_, &s)| (s, end)),
            )
            .map(|(s, e)| (s.max(start), e.min(end)))
            .filter(|(s, e)| s < e)
            .collect();
        spans.sort_unstable();
        let mut total = 0;
        let mut reach = start;
        for (s, e) in spans {
            let s = s.max(reach);
            if e > s {
                total += e - s;
                reach = e;
            }
        }
        total
    }
}

/// How long facts read from /proc about a task are reused.
const TASK_TTL: Duration = Duration::from_secs(1);
/// Tasks whose facts are kept.
const MAX_TASKS: usize = 4096;

/// What /proc said about a task when it was last read.
struct TaskFacts {
    control: Option<cpulimits::CpuControl>,
    allowed: Option<Vec<u32>>,
    nice: Option<i32>,
    /// What `Diagnoser::host_facts` shows, worked out with the rest (a `cpu.stat` read).
    host_facts: Vec<String>,
}

/// The host facts of a task: its own real-time policy, limits out of sight, the throttling
/// counters of its tightest CPU quota.
fn host_facts_of(control: Option<&cpulimits::CpuControl>, realtime: Option<bool>) -> Vec<String> {
    let mut facts = Vec::new();
    if realtime == Some(true) {
        facts.push("the waiting task itself has a real-time policy".to_owned());
    }
    let Some(control) = control else {
        return facts;
    };
    if !control.reaches_root() {
        facts.push(format!(
            "cgroups above {} are out of sight: a CPU quota there cannot be read",
            control.hierarchy.mount().display()
        ));
    }
    if let Some(limit) = control.tightest()
        && let Some(index) = control.chain.iter().position(|l| std::ptr::eq(l, limit))
        && let Ok(Some(stat)) = cpulimits::throttle_stat(control, index)
    {
        facts.push(format!(
            "cgroup {} ({:.2} CPUs of quota): throttled in {} of {} periods since it was \
             created, {} in all",
            limit.display_path(),
            limit.cpus().unwrap_or(0.0),
            stat.nr_throttled,
            stat.nr_periods,
            ms(stat.throttled_ns)
        ));
    }
    facts
}

/// Turns long waits into diagnoses.
pub struct Diagnoser {
    pub throttles: ThrottleLog,
    /// `Err(reason)` when the kernel's throttle records are not available.
    throttle_observable: Result<(), String>,
    /// Whether long waits carry their `cfs_rq`'s throttled-time clock.
    throttle_clock: bool,
    /// (CPU, cgroup id) → (throttled-time clock, ktime) at the end of the last long wait
    /// seen there: the daemon's programs read the clock only at a wait's end, so the previous
    /// reading bounds the throttled time of the next wait from below.
    last_clock: HashMap<(u32, u64), (u64, u64)>,
    /// Recently read facts of tasks (see `task`).
    tasks: TtlCache<u32, TaskFacts>,
    irq_accounted: bool,
    online: Vec<u32>,
}

/// How the caller names cgroups (v2 ids) and reads the other CPUs' histories.
pub trait Host {
    /// The label of a cgroup v2 id.
    fn cgroup_label(&mut self, id: u64) -> String;
    /// The cgroup v2 id of a task's cgroup, if it still exists.
    fn cgroup_id_of(&mut self, tid: u32) -> Option<u64>;
    /// Every CPU's occupancy ring now, indexed by CPU.
    fn other_cpus(&mut self) -> Option<Vec<OccupancyRing>>;
}

impl Diagnoser {
    /// Reads what does not change while running (IRQ time accounting, online CPUs): call it
    /// before attaching the programs, so this work does not show in what they record.
    #[must_use]
    pub fn prepare() -> Self {
        Self {
            throttles: ThrottleLog::default(),
            throttle_observable: Err("programs not loaded yet".to_owned()),
            throttle_clock: false,
            last_clock: HashMap::new(),
            tasks: TtlCache::new(TASK_TTL, MAX_TASKS),
            irq_accounted: cpulimits::irq_time_accounting() == cpulimits::IrqAccounting::Accounted,
            online: cpulimits::online_cpus().unwrap_or_default(),
        }
    }

    /// How the loaded programs observe throttling (`Probes::throttle_observable`,
    /// `Probes::throttle_clock`).
    #[must_use]
    pub fn with_throttling(mut self, observable: Result<(), String>, clock: bool) -> Self {
        self.throttle_observable = observable;
        self.throttle_clock = clock;
        self
    }

    /// What /proc says about a task, read at most once per `TASK_TTL` (a victim waits again
    /// and again; the reads cost more than the rest of a diagnosis).
    fn task(&mut self, tid: u32) -> &TaskFacts {
        self.tasks.get_or_read(tid, Duration::ZERO, || {
            let control = cpulimits::cpu_control(tid).ok().flatten();
            let realtime = cpulimits::policy_is_realtime(tid).ok().flatten();
            TaskFacts {
                host_facts: host_facts_of(control.as_ref(), realtime),
                control,
                allowed: cpulimits::allowed_cpus(tid).ok().flatten(),
                nice: cpulimits::nice(tid).ok().flatten(),
            }
        })
    }

    /// What the host says about the victim that helps read any diagnosis: the throttling
    /// counters of its tightest CPU quota, limits out of sight, its own real-time policy.
    fn host_facts(&mut self, tid: u32) -> Vec<String> {
        self.task(tid).host_facts.clone()
    }

    /// Diagnoses one long wait.
    pub fn diagnose(&mut self, d: &DiagEvent, host: &mut dyn Host) -> Diagnosis {
        let e = &d.event;
        let migrated = (d.migrated_ns != 0).then_some(d.migrated_ns);
        let occ = occupation(&d.history, d.wait_start_ns, d.wait_end_ns, migrated, e.tid);
        let victim_cgroup_id = if d.cgroup_id != 0 {
            Some(d.cgroup_id)
        } else {
            host.cgroup_id_of(e.tid)
        };
        let evidence = Evidence {
            victim_cgroup_id,
            victim_tgid: e.tgid,
            throttle: self.throttle_knowledge(d, victim_cgroup_id, occ.idle_ns),
            affinity: self.affinity(d, host),
            irq_accounted: self.irq_accounted,
            victim_nice: self.task(e.tid).nice,
            holder_nice: occ.holders.first().and_then(|h| self.task(h.tid).nice),
            host_facts: self.host_facts(e.tid),
        };
        let class = classify(&occ, &evidence);
        let culprits = culprits(&occ, d, host);
        let listed: f64 = culprits.iter().map(|c| c.share).sum();
        let recorded = occ.share(
            occ.wait_ns
                .saturating_sub(occ.unrecorded_ns + occ.before_migration_ns),
        );
        let verdict = verdict(&class, &occ, &evidence, &culprits, e.cpu);
        let throttled_by =
            match (&class.cause, &evidence.throttle) {
                (Cause::Throttled, ThrottleKnowledge::Observed(t)) if t.period_ns > 0 => Some(
                    format!("{} {} per {}", t.cgroup, ms(t.quota_ns), ms(t.period_ns)),
                ),
                (Cause::Throttled, ThrottleKnowledge::Observed(t)) => Some(t.cgroup.clone()),
                _ => None,
            };
        Diagnosis {
            cause: class.cause,
            cause_share: class.share,
            rest_share: (recorded - listed).max(0.0),
            unrecorded_share: occ.share(occ.unrecorded_ns),
            culprits,
            evidence: class.facts,
            verdict,
            throttled_by,
        }
    }

    /// Throttled time within the wait, as the kernel tells it: exactly from the clock read
    /// at the wait's start and end (trace), at least the part the previous reading proves
    /// (daemon), or from the throttle programs' records. `idle_ns`: how long the victim's CPU
    /// was idle during the wait.
    fn throttled_within(
        &mut self,
        d: &DiagEvent,
        cgroup_id: Option<u64>,
        idle_ns: u64,
    ) -> Option<u64> {
        let wait = d.wait_end_ns.saturating_sub(d.wait_start_ns);
        if d.throttled_end_ns != THROTTLED_UNKNOWN {
            if d.throttled_start_ns != THROTTLED_UNKNOWN {
                return Some(
                    d.throttled_end_ns
                        .saturating_sub(d.throttled_start_ns)
                        .min(wait),
                );
            }
            let key = (
                d.event.cpu,
                cgroup_id.unwrap_or(u64::from(d.event.tid) << 32),
            );
            let previous = self.last_clock.get(&key).copied();
            if self.last_clock.len() >= ThrottleLog::MAX_INTERVALS {
                self.last_clock.clear();
            }
            self.last_clock
                .insert(key, (d.throttled_end_ns, d.wait_end_ns));
            let (clock, at) = previous?;
            if clock > d.throttled_end_ns {
                return None;
            }
            // Throttled time between the readings, minus the most of it that could fall
            // before the wait began (none when the previous reading is within the wait).
            let between = d.throttled_end_ns - clock;
            let proven = between.saturating_sub(d.wait_start_ns.saturating_sub(at));
            // A CPU does not sit idle while a task waits in its queue, unless that task's
            // group is throttled: the idle time within the wait is throttled time too, as far
            // as the clock shows throttling in that span at all.
            return Some(proven.max(idle_ns.min(between)).min(wait));
        }
        if self.throttle_observable.is_ok() {
            let ids: Vec<u64> = self
                .task(d.event.tid)
                .control
                .as_ref()
                .map(|c| c.chain.iter().map(|l| l.kernfs_id).collect())
                .unwrap_or_default();
            return Some(self.throttles.throttled_within(
                d.event.cpu,
                &ids,
                d.wait_start_ns,
                d.wait_end_ns,
            ));
        }
        None
    }

    fn throttle_knowledge(
        &mut self,
        d: &DiagEvent,
        cgroup_id: Option<u64>,
        idle_ns: u64,
    ) -> ThrottleKnowledge {
        let measured = self.throttled_within(d, cgroup_id, idle_ns);
        let limited = match &self.task(d.event.tid).control {
            Some(control) => control.tightest().cloned(),
            None => {
                return match measured {
                    Some(ns) if ns > 0 => ThrottleKnowledge::Observed(Throttle {
                        cgroup: "?".to_owned(),
                        quota_ns: 0,
                        period_ns: 0,
                        throttled_ns: ns,
                    }),
                    _ => ThrottleKnowledge::Unknown,
                };
            }
        };
        match (limited, measured) {
            (Some(limit), Some(ns)) => ThrottleKnowledge::Observed(Throttle {
                cgroup: limit.display_path(),
                quota_ns: limit.quota_ns.unwrap_or(0),
                period_ns: limit.period_ns,
                throttled_ns: ns,
            }),
            // The kernel says throttled although no quota is in sight (a limit above a
            // container's view of the hierarchy): still throttled.
            (None, Some(ns)) if ns > 0 => ThrottleKnowledge::Observed(Throttle {
                cgroup: "(not visible)".to_owned(),
                quota_ns: 0,
                period_ns: 0,
                throttled_ns: ns,
            }),
            (None, _) => ThrottleKnowledge::NoQuota,
            (Some(_), None) => ThrottleKnowledge::Unobservable(if self.throttle_clock {
                "no earlier reading of this cgroup's throttled time on this CPU".to_owned()
            } else {
                self.throttle_observable
                    .clone()
                    .err()
                    .unwrap_or_else(|| "not read".to_owned())
            }),
        }
    }

    fn affinity(&mut self, d: &DiagEvent, host: &mut dyn Host) -> Option<Affinity> {
        let allowed = self.task(d.event.tid).allowed.clone()?;
        let outside: Vec<u32> = self
            .online
            .iter()
            .copied()
            .filter(|c| !allowed.contains(c))
            .collect();
        if outside.is_empty() {
            return None;
        }
        let rings = host.other_cpus()?;
        let idle_outside = outside
            .iter()
            .filter_map(|&cpu| {
                let ring = rings.get(cpu as usize)?;
                Some((cpu, idle_within(ring, d.wait_start_ns, d.wait_end_ns).0))
            })
            .collect();
        Some(Affinity {
            allowed,
            idle_outside,
        })
    }
}

/// The top holders (the idle task included) with names and cgroup labels.
fn culprits(occ: &Occupation, d: &DiagEvent, host: &mut dyn Host) -> Vec<Culprit> {
    let mut all: Vec<(u64, Option<&Holder>)> =
        occ.holders.iter().map(|h| (h.held_ns, Some(h))).collect();
    if occ.idle_ns > 0 {
        all.push((occ.idle_ns, None));
    }
    all.sort_by_key(|a| std::cmp::Reverse(a.0));
    all.into_iter()
        .take(TOP_CULPRITS)
        .map(|(ns, holder)| match holder {
            None => Culprit {
                tid: 0,
                tgid: 0,
                comm: "[idle]".to_owned(),
                cgroup: "[idle]".to_owned(),
                share: occ.share(ns),
                kernel_thread: false,
            },
            Some(h) => Culprit {
                tid: h.tid,
                tgid: h.tgid,
                comm: holder_comm(h, d),
                cgroup: host.cgroup_label(h.cgroup_id),
                share: occ.share(ns),
                kernel_thread: h.kthread,
            },
        })
        .collect()
}

/// A holder's name: from /proc while it lives, else the event's preemptor name if it was the
/// last one, else `?`.
fn holder_comm(h: &Holder, d: &DiagEvent) -> String {
    procinfo::thread_comm(h.tgid, h.tid)
        .or_else(|| (d.event.preemptor_tid == h.tid).then(|| comm_str(&d.event.preemptor_comm)))
        .unwrap_or_else(|| "?".to_owned())
}

/// The one-sentence verdict.
fn verdict(
    class: &Classification,
    occ: &Occupation,
    ev: &Evidence,
    culprits: &[Culprit],
    cpu: u32,
) -> String {
    let wait = ms(occ.wait_ns);
    let in_root = ev.victim_cgroup_id == Some(super::ROOT_CGROUP_ID);
    let pct = |share: f64| format!("{:.0}%", 100.0 * share);
    let top = |pred: &dyn Fn(&Culprit) -> bool| {
        culprits
            .iter()
            .find(|c| pred(c))
            .map(|c| format!("{} ({}, {})", c.label(), c.cgroup, pct(c.share)))
    };
    let mostly = |pred: &dyn Fn(&Culprit) -> bool| {
        top(pred).map_or_else(String::new, |t| format!("; mostly {t}"))
    };
    match class.cause {
        Cause::Throttled => match &ev.throttle {
            ThrottleKnowledge::Observed(t) => format!(
                "throttled by its cgroup's CPU quota ({} per {}, cgroup {}) for {} of the {wait} \
                 wait",
                ms(t.quota_ns),
                ms(t.period_ns),
                t.cgroup,
                ms(t.throttled_ns)
            ),
            _ => format!("throttled by its cgroup's CPU quota during the {wait} wait"),
        },
        Cause::Affinity => {
            let (allowed, idle) =
                ev.affinity
                    .as_ref()
                    .map_or((String::new(), String::new()), |a| {
                        let idle = a
                            .idle_outside
                            .iter()
                            .max_by_key(|(_, ns)| *ns)
                            .map(|(c, ns)| format!("CPU {c} sat idle for {}", ms(*ns)))
                            .unwrap_or_default();
                        (cpu_list(&a.allowed), idle)
                    });
            format!(
                "may only run on CPU {allowed} (waited on CPU {cpu}) while {idle} of the {wait} \
                 wait{}",
                mostly(&|c: &Culprit| c.tid != 0)
            )
        }
        Cause::Rt => format!(
            "real-time tasks held the CPU for {} of the {wait} wait{}",
            pct(class.share),
            mostly(&|c: &Culprit| c.tid != 0)
        ),
        Cause::Irq => format!("interrupts took {} of the {wait} wait", pct(class.share)),
        Cause::Stalled => format!(
            "{} held the CPU without a break for {} of the {wait} wait",
            culprits
                .first()
                .map_or_else(|| "?".to_owned(), Culprit::label),
            ms(occ.holders.first().map_or(0, |h| h.longest_ns))
        ),
        Cause::NoisyNeighbour => format!(
            "{} held the CPU for {} of the {wait} wait{}",
            if in_root {
                "other processes (it is in the root cgroup)"
            } else {
                "tasks of other cgroups"
            },
            pct(class.share),
            mostly(&|c: &Culprit| c.tid != 0)
        ),
        Cause::SelfContention => format!(
            "{} held the CPU for {} of the {wait} wait{}",
            if in_root {
                "its own process's threads"
            } else {
                "its own cgroup's tasks"
            },
            pct(class.share),
            mostly(&|c: &Culprit| c.tid != 0)
        ),
        Cause::Kernel => format!(
            "kernel threads held the CPU for {} of the {wait} wait{}",
            pct(class.share),
            mostly(&|c: &Culprit| c.tid != 0)
        ),
        Cause::Migration => format!(
            "{} of the {wait} wait passed on another CPU before it was moved to CPU {cpu}",
            ms(occ.before_migration_ns)
        ),
        Cause::Unknown => format!(
            "no single cause explains most of the {wait} wait{}",
            culprits
                .first()
                .map(|c| format!(" (largest share: {} {})", c.label(), pct(c.share)))
                .unwrap_or_default()
        ),
    }
}
