//! schedlat's kernel side: wakeup-to-run (run-queue) latency per task.
//!
//! A task is *enqueued* when it is woken (`sched_wakeup`, `sched_wakeup_new`) or when it is
//! switched out while still runnable (preempted); it is *dequeued* when `sched_switch` picks it.
//! The difference is its wait. Who woke it is the task current at wakeup; who ran instead is the
//! task switched out in favour of it; `sched_migrate_task` while it waits marks it migrated.
//!
//! Cost is the design constraint: per switch the hot path is one task-storage lookup and no
//! `task_struct` reads for untraced tasks; events go to user space only above a threshold and
//! without waking the reader (it polls), except when the ring buffer fills up.
#![no_std]
#![no_main]
// Atomic adds (daemon.rs): the crate is built with RUSTC_BOOTSTRAP for build-std anyway.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics::atomic_xadd, see daemon.rs"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros take the context by value"
)]

mod daemon;
mod maps;
mod sampler;

use agent_common::{
    Counter, EnqueueRecord, FLAG_MIGRATED, FLAG_NEW_TASK, FLAG_PREEMPTED, HistKey, TASK_COMM_LEN,
    TaskStats, WaitEvent, hist_slot,
};
use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, task_struct,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf, generated::bpf_ringbuf_query,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use maps::{
    COUNTERS, EVENTS, FILTER_TGIDS, FILTER_TIDS, HIST, TASK_ENQUEUE, TASK_STATS, TID_ENQUEUE,
};

// Configuration: read-only globals set by the loader (`EbpfLoader::override_global`), like
// libbpf's `const volatile`. The verifier sees their values, so disabled branches are pruned.

/// 1: only tasks in `FILTER_TGIDS` / `FILTER_TIDS` are measured.
#[unsafe(no_mangle)]
static CFG_FILTER: u32 = 0;
/// Waits at or above this go to the ring buffer as events.
#[unsafe(no_mangle)]
static CFG_MIN_EVENT_NS: u64 = u64::MAX;
/// Waits above this are counted as absurd and dropped.
#[unsafe(no_mangle)]
static CFG_MAX_WAIT_NS: u64 = 100_000_000_000;
/// 1: maintain `TASK_STATS` and `HIST`.
#[unsafe(no_mangle)]
static CFG_TASK_STATS: u32 = 0;
/// 1: use task storage; 0: the tid-keyed hash (kernels < 5.11).
#[unsafe(no_mangle)]
static CFG_USE_TASK_STORAGE: u32 = 1;
/// 1: `sched_switch` has the `prev_state` argument (Linux 5.18+); else read `task_struct`.
#[unsafe(no_mangle)]
static CFG_SWITCH_HAS_PREV_STATE: u32 = 1;
/// Wake the reader once this many bytes are pending in the ring buffer.
#[unsafe(no_mangle)]
static CFG_WAKEUP_BYTES: u64 = 512 * 1024;
/// `task_struct` field offsets, read from vmlinux BTF by the loader (aya has no CO-RE for Rust).
#[unsafe(no_mangle)]
static CFG_OFF_PID: u32 = 0;
#[unsafe(no_mangle)]
static CFG_OFF_TGID: u32 = 0;
#[unsafe(no_mangle)]
static CFG_OFF_COMM: u32 = 0;
/// Offset of `__state` (5.14+) or `state`; only read when `CFG_SWITCH_HAS_PREV_STATE` is 0.
#[unsafe(no_mangle)]
static CFG_OFF_STATE: u32 = 0;

#[inline(always)]
fn cfg<T: Copy>(value: &'static T) -> T {
    // SAFETY: a valid static; the volatile read keeps the compiler from folding the default.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot of a preallocated array; programs do not migrate mid-run.
        unsafe { *slot += 1 };
    }
}

/// Reads a `T` at `offset` bytes into `task`.
#[inline(always)]
fn read_field<T>(task: *const task_struct, offset: u32) -> Result<T, ()> {
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address; it never dereferences here.
    unsafe { bpf_probe_read_kernel(task.cast::<u8>().add(offset as usize).cast::<T>()) }.map_err(
        |_| {
            count(Counter::ReadFailed);
        },
    )
}

#[inline(always)]
fn task_ids(task: *const task_struct) -> Result<(u32, u32), ()> {
    let tid: u32 = read_field(task, cfg(&CFG_OFF_PID))?;
    let tgid: u32 = read_field(task, cfg(&CFG_OFF_TGID))?;
    Ok((tid, tgid))
}

#[inline(always)]
fn task_comm(task: *const task_struct, comm: &mut [u8; TASK_COMM_LEN]) {
    // SAFETY: as in read_field; the destination is a stack buffer of the copied length.
    let read = unsafe {
        bpf_probe_read_kernel_buf(task.cast::<u8>().add(cfg(&CFG_OFF_COMM) as usize), comm)
    };
    if read.is_err() {
        count(Counter::ReadFailed);
    }
}

#[inline(always)]
fn traced(tid: u32, tgid: u32) -> bool {
    cfg(&CFG_FILTER) == 0
        || FILTER_TGIDS.get_ptr(tgid).is_some()
        || FILTER_TIDS.get_ptr(tid).is_some()
}

/// This task's record, if it has one (without creating it).
#[inline(always)]
fn record_of(task: *mut task_struct) -> Option<&'static mut EnqueueRecord> {
    if cfg(&CFG_USE_TASK_STORAGE) != 0 {
        TASK_ENQUEUE.get(task, false)
    } else {
        let (tid, _) = task_ids(task).ok()?;
        // SAFETY: only this task's own scheduler events touch its entry, and they are serialised.
        TID_ENQUEUE.get_ptr_mut(tid).map(|ptr| unsafe { &mut *ptr })
    }
}

#[inline(always)]
fn enqueue(task: *mut task_struct, tid: u32, tgid: u32, waker_pid_tgid: u64, flags: u32) {
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
    let stored = if cfg(&CFG_USE_TASK_STORAGE) != 0 {
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
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next
    //          [, unsigned int prev_state  -- since v5.18, commit fa2c3254d7cf])
    let preempt: u64 = ctx.arg(0);
    let prev: *mut task_struct = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    let prev_state: u32 = if cfg(&CFG_SWITCH_HAS_PREV_STATE) != 0 {
        ctx.arg::<u64>(3) as u32
    } else {
        read_field(prev, cfg(&CFG_OFF_STATE))?
    };
    // The tracepoint runs before the context switch, so `current` is still `prev`.
    let prev_pid_tgid = bpf_get_current_pid_tgid();
    // A preempted task stays on the run queue even if it had begun to sleep (state set, not yet
    // dequeued), so it waits like a runnable one.
    if prev_state == 0 || preempt & 0xff != 0 {
        enqueue(
            prev,
            prev_pid_tgid as u32,
            (prev_pid_tgid >> 32) as u32,
            0,
            FLAG_PREEMPTED,
        );
    }

    let Some(record) = record_of(next) else {
        return Ok(());
    };
    if record.enqueue_ts == 0 {
        return Ok(());
    }
    let queued = *record;
    record.enqueue_ts = 0;
    if cfg(&CFG_USE_TASK_STORAGE) == 0 {
        // Free the slot: a bounded hash must not fill up with threads that exited.
        let _ = TID_ENQUEUE.remove(queued.tid);
    }

    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now < queued.enqueue_ts {
        count(Counter::NegativeDelta);
        return Ok(());
    }
    let wait_ns = now - queued.enqueue_ts;
    if wait_ns > cfg(&CFG_MAX_WAIT_NS) {
        count(Counter::AbsurdDelta);
        return Ok(());
    }
    count(Counter::Samples);
    if cfg(&CFG_TASK_STATS) != 0 {
        account(next, &queued, wait_ns);
    }
    if wait_ns >= cfg(&CFG_MIN_EVENT_NS) {
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
        tgid: queued.tgid,
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
    let Some(mut entry) = EVENTS.reserve(0) else {
        count(Counter::RingbufFull);
        if cfg(&CFG_TASK_STATS) != 0
            && let Some(stats) = TASK_STATS.get_ptr_mut(queued.tid)
        {
            // SAFETY: as in account().
            unsafe { (*stats).lost_events += 1 };
        }
        return;
    };
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
    entry.write(event);
    count(Counter::EventsSubmitted);
    entry.submit(submit_flags());
}

/// Flags for submitting a ring buffer entry. Waking the reader per event costs more than the
/// probes themselves (DESIGN.md); the reader polls on a timer and is only woken when a backlog
/// builds up.
#[inline(always)]
fn submit_flags() -> u64 {
    // SAFETY: EVENTS is a ring buffer map; the pointer is the map definition, as aya passes it.
    let pending = unsafe {
        bpf_ringbuf_query(
            core::ptr::from_ref(&EVENTS).cast_mut().cast(),
            BPF_RB_AVAIL_DATA.into(),
        )
    };
    let wakeup = if pending >= cfg(&CFG_WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    wakeup.into()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
