//! The programs of `schedlat trace`: per-event detail, including the waker, for filtered
//! ad-hoc tracing (and, with `Settings::daemon_own_stamps`, the daemon's enqueue stamps).
//!
//! A task is *enqueued* when it is woken (`sched_wakeup`, `sched_wakeup_new`) or when it is
//! switched out while still runnable (preempted); it is *dequeued* when `sched_switch` picks it.
//! The difference is its wait. Who woke it is the task current at wakeup; who ran instead is the
//! task switched out in favour of it; `sched_migrate_task` while it waits marks it migrated.

use agent_common::{
    Counter, EnqueueRecord, FLAG_MIGRATED, FLAG_NEW_TASK, HistKey, TASK_COMM_LEN, TaskStats,
    WaitEvent, hist_slot,
};
use aya_ebpf::{
    bindings::{BPF_NOEXIST, task_struct},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    config::{SETTINGS, cfg},
    helpers::{
        WaitSpan, count, enqueue, record_occupancy, record_of, stamp_if_preempted, submit_event,
        take_record, task_cgroup_id, task_comm, task_ids, throttled_total,
    },
    maps::{HIST, TASK_STATS},
};

#[inline(always)]
fn on_wakeup(ctx: &BtfTracePointContext, flags: u32) -> Result<(), ()> {
    let task: *mut task_struct = ctx.arg(0);
    let (tid, tgid) = task_ids(task)?;
    enqueue(task, tid, tgid, bpf_get_current_pid_tgid(), flags);
    Ok(())
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let _ = on_wakeup(&ctx, 0);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    let _ = on_wakeup(&ctx, FLAG_NEW_TASK);
    0
}

#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    let task: *mut task_struct = ctx.arg(0);
    if let Some(record) = record_of(task)
        && record.enqueue_ts != 0
    {
        record.flags |= FLAG_MIGRATED;
        // SAFETY: helper without preconditions.
        record.migrated_ns = unsafe { bpf_ktime_get_ns() };
    }
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_switch(&ctx);
    0
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let prev: *mut task_struct = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    // The tracepoint runs before the context switch, so `current` is still `prev`.
    let prev_pid_tgid = bpf_get_current_pid_tgid();
    let diagnose = cfg(&SETTINGS.diagnose) != 0;
    let switch_ns = if diagnose {
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: helper without preconditions.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        record_occupancy(prev, next, prev_pid_tgid, cgroup, now);
        now
    } else {
        0
    };
    stamp_if_preempted(ctx, prev, prev_pid_tgid)?;
    let Some(queued) = take_record(next) else {
        return Ok(());
    };

    let now = if diagnose {
        switch_ns
    } else {
        // SAFETY: helper without preconditions.
        unsafe { bpf_ktime_get_ns() }
    };
    if now < queued.enqueue_ts {
        count(Counter::NegativeDelta);
        return Ok(());
    }
    let wait_ns = now - queued.enqueue_ts;
    if wait_ns > cfg(&SETTINGS.max_wait_ns) {
        count(Counter::AbsurdDelta);
        return Ok(());
    }
    count(Counter::Samples);
    if cfg(&SETTINGS.task_stats) != 0 {
        account(next, &queued, wait_ns);
    }
    if wait_ns >= cfg(&SETTINGS.min_event_ns) {
        emit(next, &queued, prev_pid_tgid, now, wait_ns);
    }
    Ok(())
}

/// Adds one sample to the thread's exact totals and its process's histogram.
#[inline(always)]
fn account(task: *mut task_struct, queued: &EnqueueRecord, wait_ns: u64) {
    if let Some(stats) = TASK_STATS.get_ptr_mut(queued.tid) {
        // SAFETY: only this thread's switch-in updates its entry, and those are serialised.
        let stats = unsafe { &mut *stats };
        stats.count += 1;
        stats.total_wait_ns += wait_ns;
        if wait_ns > stats.max_wait_ns {
            stats.max_wait_ns = wait_ns;
        }
    } else {
        let mut stats = TaskStats {
            count: 1,
            total_wait_ns: wait_ns,
            max_wait_ns: wait_ns,
            tgid: queued.tgid,
            lost_events: 0,
            comm: [0; TASK_COMM_LEN],
        };
        task_comm(task, &mut stats.comm);
        if TASK_STATS
            .insert(queued.tid, stats, u64::from(BPF_NOEXIST))
            .is_err()
        {
            count(Counter::StatsMapFull);
        }
    }

    // Per-CPU buckets: threads of one process run on several CPUs at once, and the bpf target
    // has no stable atomic read-modify-write; user space sums the CPUs.
    let key = HistKey {
        tgid: if cfg(&SETTINGS.hist_per_thread) != 0 {
            queued.tid
        } else {
            queued.tgid
        },
        slot: hist_slot(wait_ns),
    };
    if let Some(bucket) = HIST.get_ptr_mut(key) {
        // SAFETY: this CPU's copy of a live value; programs do not migrate mid-run.
        unsafe { *bucket += 1 };
    } else if HIST.insert(key, 1, u64::from(BPF_NOEXIST)).is_err() {
        count(Counter::HistMapFull);
    }
}

#[inline(always)]
fn emit(
    task: *mut task_struct,
    queued: &EnqueueRecord,
    prev_pid_tgid: u64,
    now: u64,
    wait_ns: u64,
) {
    let mut event = WaitEvent {
        ts_ns: now,
        wait_ns,
        tid: queued.tid,
        tgid: queued.tgid,
        // SAFETY: helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        waker_tid: queued.waker_tid,
        waker_tgid: queued.waker_tgid,
        preemptor_tid: prev_pid_tgid as u32,
        preemptor_tgid: (prev_pid_tgid >> 32) as u32,
        flags: queued.flags,
        comm: [0; TASK_COMM_LEN],
        preemptor_comm: bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]),
    };
    task_comm(task, &mut event.comm);
    let span = WaitSpan {
        start_ns: queued.enqueue_ts,
        end_ns: now,
        migrated_ns: queued.migrated_ns,
        // Read here, not from /proc later: a short-lived task may be gone by then.
        cgroup_id: if cfg(&SETTINGS.diagnose) != 0 {
            task_cgroup_id(task)
        } else {
            0
        },
        // A move to another CPU changes the cfs_rq: the two readings no longer compare.
        throttled_start_ns: if queued.flags & FLAG_MIGRATED == 0 {
            queued.throttled_ns
        } else {
            agent_common::THROTTLED_UNKNOWN
        },
        throttled_end_ns: throttled_total(task),
    };
    if submit_event(&event, &span) {
        count(Counter::EventsSubmitted);
        return;
    }
    count(Counter::RingbufFull);
    if cfg(&SETTINGS.task_stats) != 0
        && let Some(stats) = TASK_STATS.get_ptr_mut(queued.tid)
    {
        // SAFETY: as in account().
        unsafe { (*stats).lost_events += 1 };
    }
}
