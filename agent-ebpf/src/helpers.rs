//! Helpers shared by the program families: counters, `task_struct` reads, the task filter,
//! enqueue records and ring-buffer submission.

use agent_common::{Counter, EnqueueRecord, TASK_COMM_LEN};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, task_struct},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        generated::bpf_ringbuf_query,
    },
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
