//! Helpers shared by the program families: counters, `task_struct` reads, the task filter,
//! enqueue records and ring-buffer submission.

use agent_common::{Counter, EnqueueRecord, FLAG_PREEMPTED, TASK_COMM_LEN};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, task_struct},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        generated::bpf_ringbuf_query,
    },
    programs::BtfTracePointContext,
};

use crate::{
    config::{SETTINGS, TASK_OFFSETS, cfg},
    maps::{COUNTERS, EVENTS, FILTER_TGIDS, FILTER_TIDS, TASK_ENQUEUE, TID_ENQUEUE},
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
    // SAFETY: see above; the verifier rejects the program if the access is not a field.
    unsafe { core::ptr::read_volatile(task.cast::<u8>().add(offset as usize).cast::<T>()) }
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
