//! CFS bandwidth throttling as the kernel does it: when a cgroup's CPU quota runs out on a CPU
//! (`throttle_cfs_rq`) and when it is refilled (`unthrottle_cfs_rq`). The diagnosis matches
//! these intervals against a long wait's CPU and the waiting task's cgroup chain. They fire a
//! few times per quota period per throttled cgroup and CPU, never per context switch.

use agent_common::{THROTTLE_END, THROTTLE_START, ThrottleRecord};
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::{
    config::{CGROUP_OFFSETS, SETTINGS, cfg},
    helpers::kread,
    maps::THROTTLES,
};

/// Sends one record for `cfs_rq` if it is throttled.
#[inline(always)]
fn record(cfs_rq: u64, kind: u32) {
    let state: i32 = kread(cfs_rq, cfg(&CGROUP_OFFSETS.cfs_rq_throttled));
    if state == 0 {
        // throttle_cfs_rq found runtime after all, or unthrottle of a group not throttled.
        return;
    }
    let tg: u64 = kread(cfs_rq, cfg(&CGROUP_OFFSETS.cfs_rq_tg));
    let cgroup: u64 = kread(tg, cfg(&CGROUP_OFFSETS.tg_cgroup));
    let kn: u64 = kread(cgroup, cfg(&CGROUP_OFFSETS.cgroup_kn));
    let rq: u64 = kread(cfs_rq, cfg(&CGROUP_OFFSETS.cfs_rq_rq));
    let record = ThrottleRecord {
        // In the clock of the daemon's occupancy history (and its wait spans).
        ts_ns: if cfg(&SETTINGS.occupancy_rq_clock) != 0 {
            kread(rq, cfg(&CGROUP_OFFSETS.rq_clock))
        } else {
            // SAFETY: helper without preconditions.
            unsafe { bpf_ktime_get_ns() }
        },
        cgroup_id: kread(kn, cfg(&CGROUP_OFFSETS.kn_id)),
        cpu: kread(rq, cfg(&CGROUP_OFFSETS.rq_cpu)),
        kind,
    };
    // A full ring loses the record; the diagnosis then sees no throttling (rare: the ring
    // holds ten thousand records and is read every 100 ms).
    let _ = THROTTLES.output(record, 0);
}

/// After `throttle_cfs_rq(cfs_rq)`: throttled unless it found runtime after all.
#[fexit(function = "throttle_cfs_rq")]
pub fn throttle_start(ctx: FExitContext) -> i32 {
    record(ctx.arg(0), THROTTLE_START);
    0
}

/// Before `unthrottle_cfs_rq(cfs_rq)`: the end of a throttled interval.
#[fentry(function = "unthrottle_cfs_rq")]
pub fn throttle_end(ctx: FEntryContext) -> i32 {
    record(ctx.arg(0), THROTTLE_END);
    0
}
