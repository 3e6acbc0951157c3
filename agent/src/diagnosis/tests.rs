//! The share math and the classification on synthetic histories.

use agent_common::{
    OCC_KTHREAD, OCCUPANCY_LEN, Occupancy, OccupancyRing, THROTTLE_END, THROTTLE_START,
    ThrottleRecord,
};

use super::{engine::ThrottleLog, *};

const MS: u64 = 1_000_000;
const VICTIM_CGROUP: u64 = 100;
const OTHER_CGROUP: u64 = 200;

/// (start ms, end ms, tid, cgroup, prio, flags); tgid = tid.
fn ring(stretches: &[(u64, u64, u32, u64, i32, u32)]) -> OccupancyRing {
    let mut ring = OccupancyRing {
        head: 0,
        current_start_ns: 0,
        current_tid: 0,
        pad: 0,
        entries: [Occupancy::default(); OCCUPANCY_LEN],
    };
    for &(start, end, tid, cgroup_id, prio, flags) in stretches {
        ring.entries[ring.head as usize % OCCUPANCY_LEN] = Occupancy {
            start_ns: start * MS,
            end_ns: end * MS,
            pid_tgid: u64::from(tid) | (u64::from(tid) << 32),
            cgroup_id,
            prio,
            flags,
        };
        ring.head += 1;
        ring.current_start_ns = end * MS;
    }
    ring
}

fn evidence() -> Evidence {
    Evidence {
        victim_cgroup_id: Some(VICTIM_CGROUP),
        victim_tgid: 9,
        throttle: ThrottleKnowledge::NoQuota,
        affinity: None,
        irq_accounted: false,
        victim_nice: Some(0),
        // Unknown unless a test says otherwise: no stall is concluded without it.
        holder_nice: None,
        host_facts: Vec::new(),
    }
}

#[test]
fn shares_are_time_weighted_within_the_wait() {
    let r = ring(&[
        (0, 40, 7, OTHER_CGROUP, 120, 0),
        (40, 60, 0, 1, 120, 0),
        (60, 100, 8, VICTIM_CGROUP, 120, 0),
    ]);
    let occ = occupation(&r, 10 * MS, 90 * MS, None, 9);
    assert_eq!(occ.wait_ns, 80 * MS);
    assert_eq!(occ.idle_ns, 20 * MS);
    assert_eq!(occ.unrecorded_ns, 0);
    assert_eq!(
        occ.holders
            .iter()
            .map(|h| (h.tid, h.held_ns))
            .collect::<Vec<_>>(),
        vec![(7, 30 * MS), (8, 30 * MS)]
    );
    // Neither cgroup has a majority (37.5 % each): no confident answer.
    assert_eq!(classify(&occ, &evidence()).cause, Cause::Unknown);
}

#[test]
fn a_holder_seen_twice_adds_up_and_keeps_its_longest_stretch() {
    let r = ring(&[
        (0, 30, 7, OTHER_CGROUP, 120, 0),
        (30, 35, 8, VICTIM_CGROUP, 120, 0),
        (35, 100, 7, OTHER_CGROUP, 120, 0),
    ]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    assert_eq!(occ.holders[0].tid, 7);
    assert_eq!(occ.holders[0].held_ns, 95 * MS);
    assert_eq!(occ.holders[0].longest_ns, 65 * MS);
    let class = classify(&occ, &evidence());
    assert_eq!(class.cause, Cause::NoisyNeighbour);
    assert!((class.share - 0.95).abs() < 1e-9);
}

#[test]
fn history_that_does_not_cover_the_wait_is_unknown() {
    // 64 short stretches of the other cgroup cover only the last 64 ms of a 200 ms wait.
    let stretches: Vec<_> = (0..80)
        .map(|i| (100 + i, 101 + i, 7 + (i as u32 % 2), OTHER_CGROUP, 120, 0))
        .collect();
    let r = ring(&stretches);
    let occ = occupation(&r, 0, 180 * MS, None, 9);
    assert_eq!(occ.unrecorded_ns, 180 * MS - 64 * MS);
    assert_eq!(classify(&occ, &evidence()).cause, Cause::Unknown);
}

#[test]
fn own_cgroup_and_kernel_threads() {
    let r = ring(&[
        (0, 80, 8, VICTIM_CGROUP, 120, 0),
        (80, 100, 3, 1, 120, OCC_KTHREAD),
    ]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    assert_eq!(classify(&occ, &evidence()).cause, Cause::SelfContention);
    let r = ring(&[
        (0, 30, 8, VICTIM_CGROUP, 120, 0),
        (30, 100, 3, 1, 120, OCC_KTHREAD),
    ]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    assert_eq!(classify(&occ, &evidence()).cause, Cause::Kernel);
    // Without the victim's cgroup, same or other cannot be told.
    let r = ring(&[(0, 100, 8, VICTIM_CGROUP, 120, 0)]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    let mut ev = evidence();
    ev.victim_cgroup_id = None;
    ev.holder_nice = None;
    assert_eq!(classify(&occ, &ev).cause, Cause::Unknown);
}

#[test]
fn real_time_holders_come_before_who_they_are() {
    let r = ring(&[
        (0, 70, 7, OTHER_CGROUP, 49, 0),
        (70, 100, 8, OTHER_CGROUP, 120, 0),
    ]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    assert!(occ.holders[0].rt);
    assert_eq!(classify(&occ, &evidence()).cause, Cause::Rt);
}

#[test]
fn throttling_wins_over_who_held_the_cpu() {
    let r = ring(&[(0, 100, 7, OTHER_CGROUP, 120, 0)]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    let mut ev = evidence();
    ev.throttle = ThrottleKnowledge::Observed(Throttle {
        cgroup: "/limited".into(),
        quota_ns: 10 * MS,
        period_ns: 100 * MS,
        throttled_ns: 88 * MS,
    });
    let class = classify(&occ, &ev);
    assert_eq!(class.cause, Cause::Throttled);
    assert!((class.share - 0.88).abs() < 1e-9);
    // Throttled for a small part only: the holder decides.
    ev.throttle = ThrottleKnowledge::Observed(Throttle {
        cgroup: "/limited".into(),
        quota_ns: 10 * MS,
        period_ns: 100 * MS,
        throttled_ns: 20 * MS,
    });
    assert_eq!(classify(&occ, &ev).cause, Cause::NoisyNeighbour);
}

#[test]
fn an_idle_cpu_outside_the_mask_is_affinity() {
    let r = ring(&[(0, 100, 8, VICTIM_CGROUP, 120, 0)]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    let mut ev = evidence();
    ev.affinity = Some(Affinity {
        allowed: vec![0],
        idle_outside: vec![(1, 97 * MS)],
    });
    assert_eq!(classify(&occ, &ev).cause, Cause::Affinity);
    // The other CPU was busy: not affinity (the holder decides).
    ev.affinity = Some(Affinity {
        allowed: vec![0],
        idle_outside: vec![(1, 10 * MS)],
    });
    assert_eq!(classify(&occ, &ev).cause, Cause::SelfContention);
}

#[test]
fn other_cpus_idle_time_includes_the_current_idle_stretch() {
    let mut r = ring(&[(0, 20, 8, VICTIM_CGROUP, 120, 0)]);
    r.current_tid = 0; // idle since 20 ms
    assert_eq!(idle_within(&r, 10 * MS, 100 * MS), (80 * MS, true));
    r.current_tid = 8; // busy since 20 ms
    assert_eq!(idle_within(&r, 10 * MS, 100 * MS), (0, true));
}

#[test]
fn one_long_unbroken_stretch_is_a_stall_only_when_priorities_allow_no_excuse() {
    let r = ring(&[(0, 300, 7, OTHER_CGROUP, 120, 0)]);
    let occ = occupation(&r, 5 * MS, 300 * MS, None, 9);
    let mut ev = evidence();
    ev.holder_nice = Some(0);
    let class = classify(&occ, &ev);
    assert_eq!(class.cause, Cause::Stalled);
    // A nice 19 victim behind a nice 0 task is fair scheduling, not a stall.
    ev.victim_nice = Some(19);
    assert_eq!(classify(&occ, &ev).cause, Cause::NoisyNeighbour);
    // Unknown priorities: no stall claimed.
    ev.victim_nice = None;
    assert_eq!(classify(&occ, &ev).cause, Cause::NoisyNeighbour);
    // Short stretches never stall.
    let r = ring(&[(0, 50, 7, OTHER_CGROUP, 120, 0)]);
    let occ = occupation(&r, 0, 50 * MS, None, 9);
    ev.victim_nice = Some(0);
    assert_eq!(classify(&occ, &ev).cause, Cause::NoisyNeighbour);
}

#[test]
fn time_before_a_migration_is_not_this_cpus() {
    let r = ring(&[(0, 100, 7, OTHER_CGROUP, 120, 0)]);
    let occ = occupation(&r, 0, 100 * MS, Some(80 * MS), 9);
    assert_eq!(occ.before_migration_ns, 80 * MS);
    assert_eq!(occ.holders[0].held_ns, 20 * MS);
    assert_eq!(occ.unrecorded_ns, 0);
    assert_eq!(classify(&occ, &evidence()).cause, Cause::Migration);
}

#[test]
fn the_victims_own_stretches_are_not_culprits() {
    let r = ring(&[
        (0, 2, 9, VICTIM_CGROUP, 120, 0),
        (2, 100, 7, OTHER_CGROUP, 120, 0),
    ]);
    let occ = occupation(&r, MS, 100 * MS, None, 9);
    assert_eq!(occ.holders.len(), 1);
    assert_eq!(occ.unrecorded_ns, MS);
}

#[test]
fn throttle_log_unions_nested_intervals_per_cpu() {
    let mut log = ThrottleLog::default();
    let rec = |ts: u64, cgroup_id, cpu, kind| ThrottleRecord {
        ts_ns: ts * MS,
        cgroup_id,
        cpu,
        kind,
    };
    for r in [
        rec(10, 5, 0, THROTTLE_START),
        rec(20, 6, 0, THROTTLE_START),
        rec(50, 6, 0, THROTTLE_END),
        rec(60, 5, 0, THROTTLE_END),
        rec(10, 5, 1, THROTTLE_START),
        rec(90, 5, 1, THROTTLE_END),
        rec(80, 5, 0, THROTTLE_START),
    ] {
        log.on_record(&r);
    }
    // CPU 0: [10, 60) ∪ [20, 50) ∪ [80, open) within [0, 100): 50 + 20.
    assert_eq!(log.throttled_within(0, &[5, 6], 0, 100 * MS), 70 * MS);
    // Only cgroup 6 (a child): [20, 50).
    assert_eq!(log.throttled_within(0, &[6], 0, 100 * MS), 30 * MS);
    // Other CPU and other cgroups do not count.
    assert_eq!(log.throttled_within(1, &[6], 0, 100 * MS), 0);
    assert_eq!(log.throttled_within(1, &[5], 30 * MS, 40 * MS), 10 * MS);
}

#[test]
fn cpu_lists_are_compact() {
    assert_eq!(cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    assert_eq!(cpu_list(&[3]), "3");
    assert_eq!(cpu_list(&[]), "");
}

#[test]
fn cause_names_are_the_documented_label_values() {
    let names: Vec<&str> = Cause::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "throttled",
            "affinity",
            "rt",
            "irq",
            "stalled",
            "noisy_neighbour",
            "self_contention",
            "kernel",
            "migration",
            "unknown"
        ]
    );
    assert_eq!(
        serde_json::to_string(&Cause::NoisyNeighbour).unwrap(),
        "\"noisy_neighbour\""
    );
}

#[test]
fn the_root_cgroup_is_no_group_but_a_process_is() {
    // The victim (tid/tgid 9) in the root cgroup waits behind another process of the root
    // cgroup: a neighbour, not its own contention.
    let r = ring(&[(0, 100, 7, ROOT_CGROUP_ID, 120, 0)]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    let mut ev = evidence();
    ev.victim_cgroup_id = Some(ROOT_CGROUP_ID);
    let class = classify(&occ, &ev);
    assert_eq!(class.cause, Cause::NoisyNeighbour, "{:?}", class.facts);
    assert!(
        class
            .facts
            .iter()
            .any(|f| f.starts_with("in the root cgroup: other processes 100%")),
        "{:?}",
        class.facts
    );
    // Its own process's other thread (tid 8 of process 9) is its own contention, root or not.
    let mut r = ring(&[(0, 100, 8, ROOT_CGROUP_ID, 120, 0)]);
    r.entries[0].pid_tgid = 8 | (9 << 32);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    assert_eq!(classify(&occ, &ev).cause, Cause::SelfContention);
    // Elsewhere a sibling process of its cgroup is its own contention.
    let r = ring(&[(0, 100, 7, VICTIM_CGROUP, 120, 0)]);
    let occ = occupation(&r, 0, 100 * MS, None, 9);
    assert_eq!(classify(&occ, &evidence()).cause, Cause::SelfContention);
}

/// A culprit's `comm` is the name as is, `kernel_thread` says what it is; people read
/// `name (kernel thread)`. Bundles written before the field read as not a kernel thread (their
/// `comm` carries the words).
#[test]
fn culprits_say_kernel_thread_beside_the_name() {
    let c = engine::Culprit {
        tid: 15,
        tgid: 15,
        comm: "rcu_preempt".into(),
        cgroup: "/".into(),
        share: 0.5,
        kernel_thread: true,
    };
    assert_eq!(c.label(), "rcu_preempt (kernel thread)");
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(json["comm"], "rcu_preempt");
    assert_eq!(json["kernel_thread"], true);
    let old: engine::Culprit = serde_json::from_str(
        r#"{"tid":15,"tgid":15,"comm":"rcu_preempt (kernel thread)","cgroup":"/","share":0.5}"#,
    )
    .expect("an old bundle's culprit");
    assert!(!old.kernel_thread);
    assert_eq!(old.label(), "rcu_preempt (kernel thread)");
}
