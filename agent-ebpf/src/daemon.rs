//! The node daemon's programs: run-queue latency of every task from `sched_switch` alone.
//!
//! The trace programs (trace.rs) stamp each wakeup themselves, which costs a program run and a
//! task-storage write per wakeup. The kernel already keeps the same stamps when it is built with
//! `CONFIG_SCHED_INFO` (every distribution kernel: `TASK_DELAY_ACCT`/`SCHEDSTATS` select it):
//! `sched_info.last_queued` is the rq clock at enqueue (wakeup, or switch-out while runnable)
//! and `sched_info.last_arrival` the rq clock when the task got the CPU; the wait between them
//! is exactly what `/proc/<pid>/schedstat`'s `run_delay` adds up (kernel/sched/stats.h,
//! `sched_info_arrive`).
//!
//! `sched_switch` fires before `sched_info_arrive` runs for `next`, so at switch-in the program
//! saves `next`'s `last_queued` in a per-CPU slot, and at that task's switch-out (it is then
//! `current`, so its ids and cgroup come from cheap helpers) reads `last_arrival` and accounts
//! the wait. The preemptor is what ran before it on the CPU, saved at switch-in.
//!
//! Migrations: `sched_migrate_task` of a queued task records it in the destination CPU's
//! list, and the switch-in there takes the mark.
//!
//! Known limit: when a waiting task is migrated, the kernel ends its `sched_info` wait on the
//! old CPU and starts a new one on the new CPU, so the wait counted here is the part spent on
//! the CPU it finally ran on; such waits are marked (class `migrated`).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use agent_common::{
    Counter, DAEMON_CFG_MIN_EVENT_NS, FLAG_MIGRATED, FLAG_PREEMPTOR_KTHREAD, FLAG_WAKER_UNKNOWN,
    PER_CPU_SLOT, PF_KTHREAD, PROC_CLASS_SLOTS, PROC_HIST_SLOTS, PreemptorClass, ProcInfo,
    ProcWaits, SPARE_OVERFLOW, SPARE_ZERO, TASK_COMM_LEN, THROTTLED_UNKNOWN, WaitEvent, hist_slot,
    proc_hist_slot,
};
use aya_ebpf::{
    bindings::{BPF_NOEXIST, task_struct},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    config::{RQ_OFFSETS, SETTINGS, TASK_OFFSETS, cfg},
    helpers::{
        WaitSpan, count, field, load, read_field, record_occupancy, stamp_if_preempted,
        submit_event, take_record, throttled_total,
    },
    maps::{
        CPU_SLOT, CPU_WAITS, CpuSlot, DAEMON_CFG, MIGRATED_LIST_LEN, MIGRATED_TO, PROC_INFO,
        PROC_WAITS, PROC_WAITS_SPARE,
    },
};

/// `TASK_ON_RQ_MIGRATING` (kernel/sched/sched.h): set by `deactivate_task` while a queued
/// task moves between run queues.
const TASK_ON_RQ_MIGRATING: u32 = 2;

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_daemon(ctx: BtfTracePointContext) -> i32 {
    let _ = try_switch(&ctx);
    0
}

#[inline(always)]
fn try_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let prev: *mut task_struct = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    let slot = CPU_SLOT.get_ptr_mut(PER_CPU_SLOT).ok_or(())?;
    // SAFETY: this CPU's slot of a preallocated per-CPU array; programs do not migrate mid-run
    // and sched_switch does not nest on a CPU.
    let slot = unsafe { &mut *slot };
    // `current` is still `prev` at this tracepoint.
    let current = bpf_get_current_pid_tgid();
    // SAFETY: helper without preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };

    let own_stamps = cfg(&SETTINGS.daemon_own_stamps) != 0;
    let diagnose = cfg(&SETTINGS.diagnose) != 0;
    let now = if !diagnose {
        0
    } else if cfg(&SETTINGS.occupancy_rq_clock) != 0 {
        rq_clock_now(prev)
    } else {
        // SAFETY: helper without preconditions.
        unsafe { bpf_ktime_get_ns() }
    };
    if slot.task == prev as u64 && slot.last_queued != 0 {
        let arrival: u64 = if own_stamps {
            slot.ktime_at_switch_in
        } else {
            field(prev, cfg(&TASK_OFFSETS.last_arrival))
        };
        finish(prev, slot, arrival, current, cgroup);
        if !own_stamps && slot.ktime_at_switch_in != 0 {
            slot.rq_clock_offset = arrival.wrapping_sub(slot.ktime_at_switch_in);
        }
    }
    slot.task = 0;
    if diagnose {
        // After `finish`: a long wait of `prev` went out with the history up to its
        // switch-in; its own stretch follows.
        record_occupancy(prev, next, current, cgroup, now);
    }

    let (last_queued, migrated) = if own_stamps {
        stamp_if_preempted(ctx, prev, current)?;
        take_own_stamp(next)
    } else {
        // The idle task is never queued, so its `last_queued` is 0 like that of a task that
        // got the CPU without waiting (e.g. a re-pick of `prev`).
        let last_queued: u64 = field(next, cfg(&TASK_OFFSETS.last_queued));
        (last_queued, last_queued != 0 && took_migrated_mark(next))
    };
    if last_queued == 0 {
        return Ok(());
    }
    let mut flags = FLAG_WAKER_UNKNOWN;
    if current as u32 != 0 {
        let prev_flags: u32 = field(prev, cfg(&TASK_OFFSETS.flags));
        if prev_flags & PF_KTHREAD != 0 {
            flags |= FLAG_PREEMPTOR_KTHREAD;
        }
    }
    if migrated {
        flags |= FLAG_MIGRATED;
    }
    slot.throttled_end = THROTTLED_UNKNOWN;
    if diagnose && cfg(&SETTINGS.throttle_clock) != 0 {
        // Only for waits that will be events: the reads cost more than the rest of a switch.
        let min_event_ns = DAEMON_CFG
            .get(DAEMON_CFG_MIN_EVENT_NS)
            .copied()
            .unwrap_or(u64::MAX);
        let rq_clock = cfg(&SETTINGS.occupancy_rq_clock) != 0;
        let waited = if own_stamps || rq_clock {
            now.saturating_sub(last_queued)
        } else {
            (now.wrapping_add(slot.rq_clock_offset)).saturating_sub(last_queued)
        };
        if waited >= min_event_ns || (!rq_clock && slot.rq_clock_offset == 0) {
            slot.throttled_end = throttled_total(next);
        }
    }
    slot.task = next as u64;
    slot.last_queued = last_queued;
    slot.preemptor_pid_tgid = current;
    slot.preemptor_task = prev as u64;
    slot.preemptor_cgroup = cgroup;
    slot.flags = flags;
    // Now and then, note the time: `next`'s last_arrival (rq clock) will be stamped with the
    // clock value of this very switch, so the pair gives the rq clock's offset from ktime.
    slot.switches = slot.switches.wrapping_add(1);
    slot.switch_in_clock = now;
    slot.ktime_at_switch_in = if diagnose && cfg(&SETTINGS.occupancy_rq_clock) == 0 {
        now
    } else if own_stamps || slot.switches % 64 == 1 {
        // SAFETY: helper without preconditions.
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    Ok(())
}

/// Own-stamps mode: the enqueue time (`bpf_ktime_get_ns`) of `next` and whether it migrated
/// while waiting, from the record the wakeup programs (or `stamp_if_preempted`) wrote; (0,
/// false) when it was not waiting.
#[inline(always)]
fn take_own_stamp(next: *mut task_struct) -> (u64, bool) {
    take_record(next).map_or((0, false), |queued| {
        (queued.enqueue_ts, queued.flags & FLAG_MIGRATED != 0)
    })
}

/// Whether `next` was moved to this CPU while it waited (and clears the mark). The list is
/// this CPU's and hot in cache; a per-task mark (task storage) cost a cold cache line of every
/// `task_struct` per switch.
#[inline(always)]
fn took_migrated_mark(next: *mut task_struct) -> bool {
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(list) = MIGRATED_TO.get_ptr_mut(cpu) else {
        return false;
    };
    // SAFETY: an element of a preallocated array; a racing write from a remote CPU's migrate
    // program can at worst make this miss one mark.
    let list = unsafe { &mut *list };
    // SAFETY: a u64 of map memory, read once.
    if unsafe { core::ptr::read_volatile(&raw const list.live) } == 0 {
        return false;
    }
    let pcount: u64 = field(next, cfg(&TASK_OFFSETS.pcount));
    for entry in &mut list.entries {
        if entry[0] == next as u64 && entry[1] == pcount {
            entry[0] = 0;
            // SAFETY: map memory; atomic against the migrate program on another CPU.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut list.live, u64::MAX);
            }
            return true;
        }
    }
    false
}

/// Accounts the wait of `prev` (now `current`), which got this CPU at `arrival` (its
/// `sched_info.last_arrival`) when `slot` was filled.
#[inline(always)]
fn finish(prev: *mut task_struct, slot: &CpuSlot, arrival: u64, current: u64, cgroup: u64) {
    if arrival < slot.last_queued {
        count(Counter::NegativeDelta);
        return;
    }
    let wait_ns = arrival - slot.last_queued;
    if wait_ns > cfg(&SETTINGS.max_wait_ns) {
        count(Counter::AbsurdDelta);
        return;
    }
    // No `Counter::Samples` here: user space sums CPU_WAITS, which counts every sample.
    let class = if slot.flags & FLAG_MIGRATED != 0 {
        PreemptorClass::Migrated
    } else if slot.preemptor_pid_tgid as u32 == 0 {
        PreemptorClass::Idle
    } else if slot.flags & FLAG_PREEMPTOR_KTHREAD != 0 {
        PreemptorClass::Kernel
    } else if slot.preemptor_cgroup == cgroup {
        PreemptorClass::SameCgroup
    } else {
        PreemptorClass::OtherCgroup
    };
    let tgid = (current >> 32) as u32;
    if let Some(waits) = process_waits(prev, tgid, cgroup) {
        add_wait(waits, class, wait_ns);
        // SAFETY: as in add_wait; a plain store: any CPU's latest value will do.
        unsafe { (*waits).cgroup_id = cgroup };
    }
    let hist = hist_slot(wait_ns);
    if let Some(bucket) = CPU_WAITS.get_ptr_mut(hist) {
        // SAFETY: this CPU's slot of a preallocated per-CPU array; programs do not migrate
        // mid-run.
        let bucket = unsafe { &mut *bucket };
        bucket.count += 1;
        bucket.total_ns += wait_ns;
    }
    let min_event_ns = DAEMON_CFG
        .get(DAEMON_CFG_MIN_EVENT_NS)
        .copied()
        .unwrap_or(u64::MAX);
    if wait_ns >= min_event_ns {
        emit(slot, current, cgroup, wait_ns);
    }
}

/// The process's `PROC_WAITS` entry, created on its first wait. When the map is full the
/// node-wide overflow entry stands in, so the wait is still counted (and the fold counted).
#[inline(always)]
fn process_waits(task: *mut task_struct, tgid: u32, cgroup: u64) -> Option<*mut ProcWaits> {
    if let Some(waits) = PROC_WAITS.get_ptr_mut(tgid) {
        return Some(waits);
    }
    let zero = PROC_WAITS_SPARE.get(SPARE_ZERO)?;
    // Another CPU may create the entry at the same moment (EEXIST): the lookup below finds it.
    if PROC_WAITS
        .insert(tgid, zero, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        record_process(task, tgid, cgroup);
    }
    if let Some(waits) = PROC_WAITS.get_ptr_mut(tgid) {
        return Some(waits);
    }
    count(Counter::ProcMapFolded);
    PROC_WAITS_SPARE.get_ptr_mut(SPARE_OVERFLOW)
}

/// Adds one wait to a process's entry. Atomic: threads of one process wait and run on several
/// CPUs at once, and the entry is shared.
#[inline(always)]
fn add_wait(waits: *mut ProcWaits, class: PreemptorClass, wait_ns: u64) {
    // Masks, not just the range the functions promise: every verifier then knows the bound
    // of the register used as the index.
    let slot = (proc_hist_slot(wait_ns) & (PROC_HIST_SLOTS - 1)) as usize;
    let class = (class as usize) & (PROC_CLASS_SLOTS - 1);
    // SAFETY: `waits` points to a live `PROC_WAITS`/`PROC_WAITS_SPARE` value (map memory,
    // suitably aligned); the indices are in bounds (masked above); the atomic adds make the
    // concurrent updates from other CPUs safe. (The bpf target has no atomic compare-and-swap,
    // so `core::sync::atomic` offers no `fetch_add`; the intrinsic lowers to BPF's atomic add,
    // which every kernel supports.)
    unsafe {
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*waits).slots[slot], 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*waits).class_count[class],
            1,
        );
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*waits).class_total_ns[class],
            wait_ns,
        );
    }
}

/// Records the process's cgroup and name (its group leader's comm) when its entry is created.
/// `sched_process_exec_daemon` renames it when it `exec`s; user space prefers the live name
/// from /proc while the process exists.
#[inline(always)]
fn record_process(task: *mut task_struct, tgid: u32, cgroup_id: u64) {
    let Ok(leader) = read_field::<*const task_struct>(task, cfg(&TASK_OFFSETS.group_leader)) else {
        return;
    };
    let mut info = ProcInfo {
        cgroup_id,
        comm: [0u8; TASK_COMM_LEN],
    };
    // SAFETY: bpf_probe_read_kernel_buf faults safely; the destination is a stack buffer.
    let read = unsafe {
        bpf_probe_read_kernel_buf(
            leader.cast::<u8>().add(cfg(&TASK_OFFSETS.comm) as usize),
            &mut info.comm,
        )
    };
    if read.is_err() {
        count(Counter::ReadFailed);
    }
    // A full map only costs the name and cgroup of an exited process (not counted: its waits
    // are, and /proc names the process while it lives).
    let _ = PROC_INFO.insert(tgid, info, 0);
}

/// A process that `exec`s takes its new program's name in its record: the record is made at
/// its first wait, often between `fork` and `exec` under the parent's name, and an exited
/// process is reported under the recorded name. Runs only at exec (the new comm is already
/// set when the tracepoint fires: `begin_new_exec` sets it before `exec_binprm` traces).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_daemon(_ctx: BtfTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(info) = PROC_INFO.get_ptr_mut(tgid)
        && let Ok(comm) = bpf_get_current_comm()
    {
        // SAFETY: a live value of PROC_INFO; a racing writer can only write another name of
        // the same process.
        unsafe { (*info).comm = comm };
    }
    0
}

/// Sends the wait of `current` (cgroup `cgroup`).
#[inline(always)]
fn emit(slot: &CpuSlot, current: u64, cgroup: u64, wait_ns: u64) {
    let preemptor_tid = slot.preemptor_pid_tgid as u32;
    let mut event = WaitEvent {
        // When the wait was accounted: at the task's switch-out after it.
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        wait_ns,
        tid: current as u32,
        tgid: (current >> 32) as u32,
        // SAFETY: helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        waker_tid: 0,
        waker_tgid: 0,
        preemptor_tid,
        preemptor_tgid: (slot.preemptor_pid_tgid >> 32) as u32,
        flags: slot.flags,
        comm: bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]),
        preemptor_comm: [0; TASK_COMM_LEN],
    };
    // The preemptor may have exited since; its name is only used if the memory still holds
    // the same task.
    let preemptor = slot.preemptor_task as *const task_struct;
    if preemptor_tid != 0
        && read_field::<u32>(preemptor, cfg(&TASK_OFFSETS.pid)) == Ok(preemptor_tid)
    {
        // SAFETY: as in record_process.
        let _ = unsafe {
            bpf_probe_read_kernel_buf(
                preemptor.cast::<u8>().add(cfg(&TASK_OFFSETS.comm) as usize),
                &mut event.preemptor_comm,
            )
        };
    }
    // The wait ended at the switch-in, whose clock reading is kept when diagnosing.
    let span = WaitSpan {
        start_ns: slot.switch_in_clock.saturating_sub(wait_ns),
        end_ns: slot.switch_in_clock,
        migrated_ns: 0,
        cgroup_id: cgroup,
        throttled_start_ns: THROTTLED_UNKNOWN,
        throttled_end_ns: slot.throttled_end,
    };
    if submit_event(&event, &span) {
        count(Counter::EventsSubmitted);
    } else {
        count(Counter::RingbufFull);
    }
}

#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task_daemon(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, int dest_cpu)
    let task: *mut task_struct = ctx.arg(0);
    let dest_cpu: u64 = ctx.arg(1);
    if field::<u32>(task, cfg(&TASK_OFFSETS.on_rq)) != TASK_ON_RQ_MIGRATING {
        // Moved at wakeup, before being queued: its wait has not started.
        return 0;
    }
    let Some(list) = MIGRATED_TO.get_ptr_mut(dest_cpu as u32) else {
        return 0;
    };
    // SAFETY: an element of a preallocated array; see took_migrated_mark for the race.
    let list = unsafe { &mut *list };
    let index = (list.head as usize) % MIGRATED_LIST_LEN;
    // An entry still marked is overwritten: the count of live marks stays as it is.
    let replaces_live = list.entries[index][0] != 0;
    list.entries[index] = [task as u64, field(task, cfg(&TASK_OFFSETS.pcount))];
    list.head = list.head.wrapping_add(1);
    if !replaces_live {
        // SAFETY: map memory; atomic against the switch-in that takes marks on `dest_cpu`.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut list.live, 1);
        }
    }
    0
}

/// The rq clock of this CPU now: `prev->se.cfs_rq->rq->clock`, direct loads (the verifier
/// types them by BTF; the JIT guards faults). Every task's `se.cfs_rq` points to a `cfs_rq` of
/// this CPU's rq (its group's, or the root one; the idle task's too). The scheduler updated
/// the clock just before picking `next`, and `sched_info` stamps `next`'s arrival with it.
#[inline(always)]
fn rq_clock_now(prev: *const task_struct) -> u64 {
    let cfs_rq: *const u8 = field(prev, cfg(&RQ_OFFSETS.task_se) + cfg(&RQ_OFFSETS.se_cfs_rq));
    let rq: *const u8 = load(cfs_rq, cfg(&RQ_OFFSETS.cfs_rq_rq));
    load(rq, cfg(&RQ_OFFSETS.rq_clock))
}
