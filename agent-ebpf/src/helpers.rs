//! Helpers shared by the program families: counters, `task_struct` reads, the task filter,
//! enqueue records and ring-buffer submission.

use agent_common::{
    Counter, DiagEvent, EnqueueRecord, FLAG_PREEMPTED, OCC_KTHREAD, OCCUPANCY_LEN, OccupancyRing,
    PER_CPU_SLOT, PF_KTHREAD, TASK_COMM_LEN, THROTTLED_UNKNOWN, WaitEvent,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, task_struct},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        generated::bpf_ringbuf_query,
    },
    programs::BtfTracePointContext,
};

use crate::{
    config::{CGROUP_OFFSETS, SETTINGS, TASK_OFFSETS, cfg},
    maps::{COUNTERS, EVENTS, FILTER_TGIDS, FILTER_TIDS, OCCUPANCY, TASK_ENQUEUE, TID_ENQUEUE},
};

/// Adds one to a counter of this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot of a preallocated array; programs do not migrate mid-run.
        unsafe { *slot += 1 };
    }
}

/// Reads a `T` at `offset` bytes into `task` (any task pointer: the read faults safely).
#[inline(always)]
pub fn read_field<T>(task: *const task_struct, offset: u32) -> Result<T, ()> {
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address; it never dereferences here.
    unsafe { bpf_probe_read_kernel(task.cast::<u8>().add(offset as usize).cast::<T>()) }.map_err(
        |_| {
            count(Counter::ReadFailed);
        },
    )
}

/// Reads a field of a task the tracepoint handed over. Those are trusted BTF pointers, so a
/// plain load works: the verifier checks it against `task_struct`'s BTF (the offset is a
/// constant to it, from the frozen read-only globals) and the JIT guards it against faults.
/// That is several times cheaper than a `bpf_probe_read_kernel` call.
#[inline(always)]
pub fn field<T: Copy>(task: *const task_struct, offset: u32) -> T {
    load(task.cast::<u8>(), offset)
}

/// A direct load of a `T` at `offset` bytes into any BTF-typed kernel pointer (a task's, or
/// one loaded from its fields), as in [`field`].
#[inline(always)]
pub fn load<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: see `field`; the verifier rejects the program if the access is not a field.
    unsafe { core::ptr::read_volatile(base.add(offset as usize).cast::<T>()) }
}

/// Reads a `T` at `base + offset` of kernel memory with `bpf_probe_read_kernel` (any address:
/// a fault is safe); the default on a fault.
#[inline(always)]
pub fn kread<T: Copy + Default>(base: u64, offset: u32) -> T {
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.unwrap_or_default()
}

/// The task's cgroup v2 id (`task_struct.cgroups->dfl_cgrp->kn->id`, what
/// `bpf_get_current_cgroup_id` gives for the current task); 0 when the layout is not known.
/// Four probe reads: for long waits only, not every switch.
#[inline(always)]
pub fn task_cgroup_id(task: *const task_struct) -> u64 {
    let kn_id = cfg(&TASK_OFFSETS.kn_id);
    if kn_id == 0 {
        return 0;
    }
    let css_set: u64 = kread(task as u64, cfg(&TASK_OFFSETS.cgroups));
    if css_set == 0 {
        return 0;
    }
    let cgroup: u64 = kread(css_set, cfg(&TASK_OFFSETS.css_set_dfl_cgrp));
    if cgroup == 0 {
        return 0;
    }
    let kn: u64 = kread(cgroup, cfg(&TASK_OFFSETS.cgroup_kn));
    if kn == 0 {
        return 0;
    }
    kread(kn, kn_id)
}

/// The task's (tid, tgid).
#[inline(always)]
pub fn task_ids(task: *const task_struct) -> Result<(u32, u32), ()> {
    let tid: u32 = read_field(task, cfg(&TASK_OFFSETS.pid))?;
    let tgid: u32 = read_field(task, cfg(&TASK_OFFSETS.tgid))?;
    Ok((tid, tgid))
}

/// Copies the task's `comm` into `comm` (left as is on a fault, which is counted).
#[inline(always)]
pub fn task_comm(task: *const task_struct, comm: &mut [u8; TASK_COMM_LEN]) {
    // SAFETY: as in read_field; the destination is a stack buffer of the copied length.
    let read = unsafe {
        bpf_probe_read_kernel_buf(
            task.cast::<u8>().add(cfg(&TASK_OFFSETS.comm) as usize),
            comm,
        )
    };
    if read.is_err() {
        count(Counter::ReadFailed);
    }
}

/// Whether the task is measured (always, unless `Settings::filter` is on).
#[inline(always)]
pub fn traced(tid: u32, tgid: u32) -> bool {
    cfg(&SETTINGS.filter) == 0
        || FILTER_TGIDS.get_ptr(tgid).is_some()
        || FILTER_TIDS.get_ptr(tid).is_some()
}

/// This task's record, if it has one (without creating it).
#[inline(always)]
pub fn record_of(task: *mut task_struct) -> Option<&'static mut EnqueueRecord> {
    if cfg(&SETTINGS.use_task_storage) != 0 {
        TASK_ENQUEUE.get(task, false)
    } else {
        let (tid, _) = task_ids(task).ok()?;
        // SAFETY: only this task's own scheduler events touch its entry, and they are serialised.
        TID_ENQUEUE.get_ptr_mut(tid).map(|ptr| unsafe { &mut *ptr })
    }
}

/// Stamps the task's enqueue (now), if it is traced.
#[inline(always)]
pub fn enqueue(task: *mut task_struct, tid: u32, tgid: u32, waker_pid_tgid: u64, flags: u32) {
    if tid == 0 || !traced(tid, tgid) {
        return;
    }
    let record = EnqueueRecord {
        // SAFETY: helper without preconditions.
        enqueue_ts: unsafe { bpf_ktime_get_ns() },
        tid,
        tgid,
        waker_tid: waker_pid_tgid as u32,
        waker_tgid: (waker_pid_tgid >> 32) as u32,
        flags,
        pad: 0,
        migrated_ns: 0,
        throttled_ns: if cfg(&SETTINGS.diagnose) != 0 {
            throttled_total(task)
        } else {
            THROTTLED_UNKNOWN
        },
    };
    let stored = if cfg(&SETTINGS.use_task_storage) != 0 {
        TASK_ENQUEUE
            .get(task, true)
            .map(|slot| *slot = record)
            .is_some()
    } else {
        TID_ENQUEUE.insert(tid, record, 0).is_ok()
    };
    if !stored {
        count(Counter::EnqueueMapFull);
    }
}

/// Flags for submitting a ring buffer entry. Waking the reader per event costs more than the
/// probes themselves (DESIGN.md); the reader polls on a timer and is only woken when a backlog
/// builds up.
#[inline(always)]
pub fn submit_flags() -> u64 {
    // SAFETY: EVENTS is a ring buffer map; the pointer is the map definition, as aya passes it.
    let pending = unsafe {
        bpf_ringbuf_query(
            core::ptr::from_ref(&EVENTS).cast_mut().cast(),
            BPF_RB_AVAIL_DATA.into(),
        )
    };
    let wakeup = if pending >= cfg(&SETTINGS.wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    wakeup.into()
}

/// At `sched_switch`: `prev` (still `current`, ids `prev_pid_tgid`) starts waiting when it is
/// switched out while runnable. A preempted task stays on the run queue even if it had begun
/// to sleep (state set, not yet dequeued), so it waits like a runnable one.
#[inline(always)]
pub fn stamp_if_preempted(
    ctx: &BtfTracePointContext,
    prev: *mut task_struct,
    prev_pid_tgid: u64,
) -> Result<(), ()> {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next
    //          [, unsigned int prev_state  -- since v5.18, commit fa2c3254d7cf])
    let preempt: u64 = ctx.arg(0);
    let prev_state: u32 = if cfg(&SETTINGS.switch_has_prev_state) != 0 {
        ctx.arg::<u64>(3) as u32
    } else {
        read_field(prev, cfg(&TASK_OFFSETS.state))?
    };
    if prev_state == 0 || preempt & 0xff != 0 {
        enqueue(
            prev,
            prev_pid_tgid as u32,
            (prev_pid_tgid >> 32) as u32,
            0,
            FLAG_PREEMPTED,
        );
    }
    Ok(())
}

/// At `sched_switch`: the enqueue record of `next`, if it was waiting; the record is cleared
/// (and its tid-hash slot freed).
#[inline(always)]
pub fn take_record(next: *mut task_struct) -> Option<EnqueueRecord> {
    let record = record_of(next)?;
    if record.enqueue_ts == 0 {
        return None;
    }
    let queued = *record;
    record.enqueue_ts = 0;
    if cfg(&SETTINGS.use_task_storage) == 0 {
        // Free the slot: a bounded hash must not fill up with threads that exited.
        let _ = TID_ENQUEUE.remove(queued.tid);
    }
    Some(queued)
}

/// At `sched_switch` (with `Settings::diagnose`): `prev` (ids `prev_pid_tgid`, cgroup
/// `cgroup`) hands this CPU over to `next` at `now`; its stretch goes into the CPU's occupancy
/// ring. One lookup of a per-CPU array (inlined by the verifier), three field loads and a
/// 40-byte store: no helper calls beyond the caller's clock read.
#[inline(always)]
pub fn record_occupancy(
    prev: *const task_struct,
    next: *const task_struct,
    prev_pid_tgid: u64,
    cgroup: u64,
    now: u64,
) {
    let Some(ring) = OCCUPANCY.get_ptr_mut(PER_CPU_SLOT) else {
        return;
    };
    // SAFETY: this CPU's slot of a preallocated per-CPU array; sched_switch does not nest on a
    // CPU. User space and other CPUs only read it (a torn read costs one stretch's accuracy).
    let ring = unsafe { &mut *ring };
    let start = ring.current_start_ns;
    ring.current_start_ns = now;
    ring.current_tid = field(next, cfg(&TASK_OFFSETS.pid));
    if start == 0 {
        return;
    }
    let task_flags: u32 = field(prev, cfg(&TASK_OFFSETS.flags));
    let entry = &mut ring.entries[(ring.head as usize) & (OCCUPANCY_LEN - 1)];
    entry.start_ns = start;
    entry.end_ns = now;
    entry.pid_tgid = prev_pid_tgid;
    entry.cgroup_id = cgroup;
    entry.prio = field(prev, cfg(&TASK_OFFSETS.prio));
    entry.flags = if task_flags & PF_KTHREAD != 0 {
        OCC_KTHREAD
    } else {
        0
    };
    ring.head = ring.head.wrapping_add(1);
}

/// What a long wait's event carries besides the `WaitEvent`.
pub struct WaitSpan {
    pub start_ns: u64,
    pub end_ns: u64,
    pub migrated_ns: u64,
    pub cgroup_id: u64,
    pub throttled_start_ns: u64,
    pub throttled_end_ns: u64,
}

/// Sends `event` with its CPU's occupancy history (`Settings::diagnose`), or bare. Returns
/// whether it was sent (the caller counts losses its own way).
#[inline(always)]
pub fn submit_event(event: &WaitEvent, span: &WaitSpan) -> bool {
    if cfg(&SETTINGS.diagnose) == 0 {
        let Some(mut entry) = EVENTS.reserve_untyped::<WaitEvent>(0) else {
            return false;
        };
        entry.write(*event);
        entry.submit(submit_flags());
        return true;
    }
    let Some(mut entry) = EVENTS.reserve_untyped::<DiagEvent>(0) else {
        return false;
    };
    let out = entry.as_mut_ptr();
    // SAFETY: `out` points to reserved ring-buffer memory of a whole `DiagEvent`; every field
    // is written before the submit (the history by the copy below, or zeroed).
    unsafe {
        (*out).event = *event;
        (*out).wait_start_ns = span.start_ns;
        (*out).wait_end_ns = span.end_ns;
        (*out).migrated_ns = span.migrated_ns;
        (*out).cgroup_id = span.cgroup_id;
        (*out).throttled_start_ns = span.throttled_start_ns;
        (*out).throttled_end_ns = span.throttled_end_ns;
        let history = core::slice::from_raw_parts_mut(
            (&raw mut (*out).history).cast::<u8>(),
            core::mem::size_of::<OccupancyRing>(),
        );
        let copied = OCCUPANCY
            .get_ptr(PER_CPU_SLOT)
            .is_some_and(|ring| bpf_probe_read_kernel_buf(ring.cast::<u8>(), history).is_ok());
        if !copied {
            (*out).history.head = 0;
            (*out).history.current_start_ns = 0;
            (*out).history.current_tid = 0;
        }
    }
    entry.submit(submit_flags());
    true
}

/// Cumulative time the task's `cfs_rq` on its CPU has been throttled, by its own cgroup's CPU
/// quota or an ancestor's (`throttled_clock_self_time`, 6.8+, plus the throttle going on), in
/// rq clock ns; `THROTTLED_UNKNOWN` without `Settings::throttle_clock`. A few reads: only for
/// traced tasks' enqueues and long waits.
#[inline(always)]
pub fn throttled_total(task: *const task_struct) -> u64 {
    if cfg(&SETTINGS.throttle_clock) == 0 {
        return THROTTLED_UNKNOWN;
    }
    let Ok(cfs_rq) = read_field::<u64>(task, cfg(&CGROUP_OFFSETS.task_cfs_rq)) else {
        return THROTTLED_UNKNOWN;
    };
    let kread = |base: u64, offset: u32| -> Option<u64> {
        // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
        unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u64) }.ok()
    };
    let (Some(total), Some(since)) = (
        kread(cfs_rq, cfg(&CGROUP_OFFSETS.cfs_rq_self_time)),
        kread(cfs_rq, cfg(&CGROUP_OFFSETS.cfs_rq_self_clock)),
    ) else {
        return THROTTLED_UNKNOWN;
    };
    if since == 0 {
        return total;
    }
    let clock = kread(cfs_rq, cfg(&CGROUP_OFFSETS.cfs_rq_rq))
        .and_then(|rq| kread(rq, cfg(&CGROUP_OFFSETS.rq_clock)))
        .unwrap_or(since);
    total + clock.saturating_sub(since)
}
