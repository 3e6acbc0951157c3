//! The contract between schedlat's eBPF programs and user space.
//!
//! Every type that crosses the kernel/user boundary lives here: `#[repr(C)]`, `Copy`, no `bool`,
//! no implicit padding, and a size assertion so a change on one side cannot silently skew the
//! other. The histogram bucket math also lives here because both sides must agree on it exactly.
#![no_std]

use core::mem::size_of;

/// Length of `task_struct::comm` (`TASK_COMM_LEN` in the kernel).
pub const TASK_COMM_LEN: usize = 16;

/// The task was migrated to another CPU while it waited on a run queue.
pub const FLAG_MIGRATED: u32 = 1;
/// The task was queued because it was preempted while runnable (no wakeup, no waker).
pub const FLAG_PREEMPTED: u32 = 1 << 1;
/// The task was queued by `sched_wakeup_new` (its first run after fork/clone).
pub const FLAG_NEW_TASK: u32 = 1 << 2;
/// The daemon's switch-only probes do not see wakeups: `waker_*` fields are unknown (0).
pub const FLAG_WAKER_UNKNOWN: u32 = 1 << 3;
/// The preemptor was a kernel thread.
pub const FLAG_PREEMPTOR_KTHREAD: u32 = 1 << 4;

/// A cgroup's CFS bandwidth throttling starting or ending on one CPU (the kernel's
/// `throttle_cfs_rq` / `unthrottle_cfs_rq`), sent through `THROTTLES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottleRecord {
    pub ts_ns: u64,
    /// The throttled group's cgroup id (`kn->id` in the hierarchy of the cpu controller).
    pub cgroup_id: u64,
    pub cpu: u32,
    /// `THROTTLE_START` or `THROTTLE_END`.
    pub kind: u32,
}
const _: () = assert!(size_of::<ThrottleRecord>() == 24);
pub const THROTTLE_END: u32 = 0;
pub const THROTTLE_START: u32 = 1;

/// One wakeup-to-run sample at or above the per-event threshold, sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitEvent {
    /// `CLOCK_MONOTONIC` time (`bpf_ktime_get_ns`) at which the task got the CPU.
    pub ts_ns: u64,
    /// Time spent runnable on a run queue before getting the CPU.
    pub wait_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    /// CPU the task ran on after the wait.
    pub cpu: u32,
    /// Task that woke it (the one current at `sched_wakeup`); 0 when it was preempted.
    pub waker_tid: u32,
    pub waker_tgid: u32,
    /// Task that ran on `cpu` right before it (the last one to keep it waiting).
    pub preemptor_tid: u32,
    pub preemptor_tgid: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub preemptor_comm: [u8; TASK_COMM_LEN],
}
const _: () = assert!(size_of::<WaitEvent>() == 80);

/// Per-task state between enqueue and switch-in (task storage value or pid-hash value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnqueueRecord {
    /// `bpf_ktime_get_ns` at enqueue; 0 when the task is not waiting.
    pub enqueue_ts: u64,
    pub tid: u32,
    pub tgid: u32,
    pub waker_tid: u32,
    pub waker_tgid: u32,
    pub flags: u32,
    pub pad: u32,
    /// `bpf_ktime_get_ns` when the task was last moved to another CPU while waiting; 0: never.
    pub migrated_ns: u64,
    /// Its `cfs_rq`'s cumulative throttled time at enqueue (`THROTTLED_UNKNOWN`: not known).
    pub throttled_ns: u64,
}
const _: () = assert!(size_of::<EnqueueRecord>() == 48);

/// A throttled-time reading that is not known.
pub const THROTTLED_UNKNOWN: u64 = u64::MAX;

/// One stretch of a CPU's time: who held it from `start_ns` to `end_ns` (`bpf_ktime_get_ns`).
/// The programs write one at every context switch into the CPU's [`OccupancyRing`], so the
/// history of a long wait's CPU (who held it during the wait, for how long) can be read back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub start_ns: u64,
    pub end_ns: u64,
    /// `pid_tgid` of the holder (`tid | tgid << 32`); 0 for the idle task.
    pub pid_tgid: u64,
    /// The holder's cgroup v2 id.
    pub cgroup_id: u64,
    /// The holder's `task_struct.prio` (below 100: real-time or deadline).
    pub prio: i32,
    /// `OCC_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<Occupancy>() == 40);

/// The holder was a kernel thread.
pub const OCC_KTHREAD: u32 = 1;
/// Priorities below this are real-time (`MAX_RT_PRIO`); deadline tasks have -1.
pub const MAX_RT_PRIO: i32 = 100;

/// Stretches kept per CPU (a power of two).
pub const OCCUPANCY_LEN: usize = 64;

/// The last [`OCCUPANCY_LEN`] stretches of one CPU (a per-CPU array value), newest at
/// `head - 1` (modulo the length).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OccupancyRing {
    /// Stretches written so far (the next index to write, before the modulo).
    pub head: u64,
    /// When the current holder got the CPU (0: not seen yet).
    pub current_start_ns: u64,
    /// The current holder's thread id (0: the CPU is idle).
    pub current_tid: u32,
    pub pad: u32,
    pub entries: [Occupancy; OCCUPANCY_LEN],
}
const _: () = assert!(size_of::<OccupancyRing>() == 24 + 40 * OCCUPANCY_LEN);

impl OccupancyRing {
    /// The stretches in time order (oldest first), skipping unwritten ones.
    pub fn in_order(&self) -> impl Iterator<Item = &Occupancy> {
        let written = self.head.min(OCCUPANCY_LEN as u64) as usize;
        let first = (self.head as usize).wrapping_sub(written);
        (0..written).map(move |i| &self.entries[(first + i) % OCCUPANCY_LEN])
    }
}

/// A long wait with the history of its CPU: what the programs send instead of a bare
/// [`WaitEvent`] (the reader tells them apart by size).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiagEvent {
    pub event: WaitEvent,
    /// The wait, in `bpf_ktime_get_ns` time: from `wait_start_ns` to `wait_end_ns`.
    pub wait_start_ns: u64,
    pub wait_end_ns: u64,
    /// When the task was moved to this CPU while it waited (trace programs only); 0: not
    /// moved, or not known.
    pub migrated_ns: u64,
    /// The waiting task's cgroup v2 id (0: not known, e.g. a kernel without the fields on
    /// the path, `TaskOffsets::cgroups`; user space then asks /proc).
    pub cgroup_id: u64,
    /// Cumulative throttled time (rq clock ns) of the task's `cfs_rq` on this CPU at the start
    /// and at the end of the wait (`Settings::throttle_clock`); `THROTTLED_UNKNOWN` when not
    /// read (the daemon cannot read it at the start).
    pub throttled_start_ns: u64,
    pub throttled_end_ns: u64,
    pub history: OccupancyRing,
}
const _: () = assert!(size_of::<DiagEvent>() == 80 + 48 + size_of::<OccupancyRing>());

/// Exact per-thread totals kept in the kernel for traced tasks (key: tid).
///
/// Updated only at the thread's own switch-in, which the scheduler serialises, so the kernel
/// side needs no atomics for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStats {
    pub count: u64,
    pub total_wait_ns: u64,
    pub max_wait_ns: u64,
    pub tgid: u32,
    /// Events of this thread that the ring buffer could not take.
    pub lost_events: u32,
    pub comm: [u8; TASK_COMM_LEN],
}
const _: () = assert!(size_of::<TaskStats>() == 48);

/// Key of the per-process latency histogram (value: `u64` count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    /// The process, or the thread with `Settings::hist_per_thread`.
    pub tgid: u32,
    pub slot: u32,
}
const _: () = assert!(size_of::<HistKey>() == 8);

/// Why a task had to wait: what ran on its CPU right before it (the daemon's attribution).
/// Wire values: never renumber, only append.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PreemptorClass {
    /// A task of the waiting task's own cgroup ran instead.
    SameCgroup = 0,
    /// A user task of another cgroup ran instead.
    OtherCgroup = 1,
    /// A kernel thread ran instead.
    Kernel = 2,
    /// The CPU was idle: the wait is wakeup/IPI latency, nobody ran instead.
    Idle = 3,
    /// The task was moved to another CPU's run queue while it waited.
    Migrated = 4,
}

/// Number of `PreemptorClass` values.
pub const PREEMPTOR_CLASS_COUNT: usize = 5;

impl PreemptorClass {
    pub const ALL: [PreemptorClass; PREEMPTOR_CLASS_COUNT] = [
        PreemptorClass::SameCgroup,
        PreemptorClass::OtherCgroup,
        PreemptorClass::Kernel,
        PreemptorClass::Idle,
        PreemptorClass::Migrated,
    ];

    #[must_use]
    pub const fn from_wire(value: u8) -> Option<Self> {
        match value {
            0 => Some(PreemptorClass::SameCgroup),
            1 => Some(PreemptorClass::OtherCgroup),
            2 => Some(PreemptorClass::Kernel),
            3 => Some(PreemptorClass::Idle),
            4 => Some(PreemptorClass::Migrated),
            _ => None,
        }
    }

    /// Stable snake-case name, used as a metric label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PreemptorClass::SameCgroup => "same_cgroup",
            PreemptorClass::OtherCgroup => "other_cgroup",
            PreemptorClass::Kernel => "kernel",
            PreemptorClass::Idle => "idle",
            PreemptorClass::Migrated => "migrated",
        }
    }
}

/// What the daemon's kernel side records about a process when it first waits with a new key:
/// its cgroup v2 id and its name (the group leader's comm), so both outlive the process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
}
const _: () = assert!(size_of::<ProcInfo>() == 24);

// ---------------------------------------------------------------------------------------------
// The daemon's per-process aggregation: one map entry per process holding its whole histogram
// and its waits per preemptor class, so the map grows with processes only (not with
// processes x slots x classes). The histogram is coarser than the trace one (8 sub-buckets per
// power of two: a slot is at most 12.5 % of its lower bound wide) to keep an entry at 1 KiB.
// ---------------------------------------------------------------------------------------------

/// log2 of the sub-buckets per power of two of the per-process histogram.
pub const PROC_HIST_SUB_BITS: u32 = 3;
/// Waits at or above `2^PROC_HIST_MAX_EXP` ns (17.2 s) share the last per-process slot.
pub const PROC_HIST_MAX_EXP: u32 = 34;
/// Slots of the per-process histogram: a power of two, so the programs bound an index with a
/// mask every verifier understands.
pub const PROC_HIST_SLOTS: u32 = (PROC_HIST_MAX_EXP - PROC_HIST_SUB_BITS + 1) << PROC_HIST_SUB_BITS;
const _: () = assert!(PROC_HIST_SLOTS == 256);
/// Room for the preemptor classes in `ProcWaits` (a power of two, for the same reason).
pub const PROC_CLASS_SLOTS: usize = 8;
const _: () = assert!(PREEMPTOR_CLASS_COUNT <= PROC_CLASS_SLOTS);

/// The tgid user space gives the overflow entry's waits (no process has it).
pub const OVERFLOW_TGID: u32 = 0;
/// Indices in the daemon's `PROC_WAITS_SPARE` array: a zeroed `ProcWaits` that new entries are
/// created from (too large for the BPF stack), and the overflow entry, where the waits of
/// processes that found `PROC_WAITS` full are counted (node-wide, never dropped).
pub const SPARE_ZERO: u32 = 0;
pub const SPARE_OVERFLOW: u32 = 1;

/// Everything the daemon counts for one process, cumulative since its entry was created.
/// Updated with atomic adds from every CPU (one shared entry per process, not one per CPU,
/// so memory does not grow with the number of CPUs); user space reads deltas every window,
/// so the `u32` slot counts may wrap.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcWaits {
    /// Waits per `proc_hist_slot`.
    pub slots: [u32; PROC_HIST_SLOTS as usize],
    /// Waits per `PreemptorClass` (index: its wire value).
    pub class_count: [u64; PROC_CLASS_SLOTS],
    /// Total wait (ns) per `PreemptorClass`.
    pub class_total_ns: [u64; PROC_CLASS_SLOTS],
    /// cgroup v2 id of the process's last counted wait (processes move between cgroups,
    /// e.g. when a container runtime places them after starting them).
    pub cgroup_id: u64,
}
const _: () = assert!(size_of::<ProcWaits>() == 1160);

impl Default for ProcWaits {
    fn default() -> Self {
        Self {
            slots: [0; PROC_HIST_SLOTS as usize],
            class_count: [0; PROC_CLASS_SLOTS],
            class_total_ns: [0; PROC_CLASS_SLOTS],
            cgroup_id: 0,
        }
    }
}

/// Per-process histogram slot of a wait of `ns` nanoseconds. Always `< PROC_HIST_SLOTS`.
#[inline(always)]
#[must_use]
pub const fn proc_hist_slot(ns: u64) -> u32 {
    log_linear_slot(ns, PROC_HIST_SUB_BITS, PROC_HIST_MAX_EXP)
}

/// Inclusive lower and exclusive upper bound, in ns, of the values that map to per-process
/// `slot` (the last slot also holds everything above its bound).
#[must_use]
pub const fn proc_hist_slot_bounds(slot: u32) -> (u64, u64) {
    log_linear_bounds(slot, PROC_HIST_SUB_BITS)
}

/// Count and exact sum of the waits of one histogram slot (per CPU in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitBucket {
    pub count: u64,
    pub total_ns: u64,
}
const _: () = assert!(size_of::<WaitBucket>() == 16);

/// Frames kept per stack (kernel and user each) by the CPU sampler.
pub const STACK_DEPTH: usize = 64;

/// Queued tasks listed per CPU sample (more are counted in `CpuSample::nr_queued`).
pub const QUEUE_SLOTS: usize = 8;

/// A task waiting on the sampled CPU's run queue (CFS/EEVDF) at the sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct QueuedTask {
    pub tid: u32,
    pub tgid: u32,
    /// How long it has waited so far, by the rq clock (as of its last update).
    pub wait_ns: u64,
    pub comm: [u8; TASK_COMM_LEN],
}
const _: () = assert!(size_of::<QueuedTask>() == 32);

/// One CPU-clock sample of the flight recorder: who was on the CPU, its stacks, and the tasks
/// queued behind it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`).
    pub ts_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    pub cpu: u32,
    /// Frames filled in `kernel_stack` / `user_stack`.
    pub kernel_frames: u32,
    pub user_frames: u32,
    pub pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
    /// Return addresses, innermost first.
    pub kernel_stack: [u64; STACK_DEPTH],
    pub user_stack: [u64; STACK_DEPTH],
    /// `rq->nr_running` (all classes) at the sample.
    pub nr_running: u32,
    /// Fair-class tasks found queued (the first `QUEUE_SLOTS` are in `queue`).
    pub nr_queued: u32,
    pub queue: [QueuedTask; QUEUE_SLOTS],
}
const _: () =
    assert!(size_of::<CpuSample>() == 32 + TASK_COMM_LEN + 16 * STACK_DEPTH + 8 + 32 * QUEUE_SLOTS);

/// Indices of the per-CPU `COUNTERS` array. Wire values: never renumber, only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Wakeup-to-run samples measured (all of them, delivered as events or not).
    Samples = 0,
    /// Events written to the ring buffer.
    EventsSubmitted = 1,
    /// Events dropped because the ring buffer was full.
    RingbufFull = 2,
    /// Enqueues not recorded because task storage / the pid hash could not take them.
    EnqueueMapFull = 3,
    /// Samples discarded because the switch-in time was before the enqueue time.
    NegativeDelta = 4,
    /// Samples discarded because the wait exceeded `Settings::max_wait_ns`.
    AbsurdDelta = 5,
    /// Samples not added to per-thread totals because the stats map was full.
    StatsMapFull = 6,
    /// Samples not added to a process histogram because the histogram map was full.
    HistMapFull = 7,
    /// Kernel reads of `task_struct` fields that failed.
    ReadFailed = 8,
    /// CPU samples dropped because the sample ring buffer was full.
    SamplesLost = 9,
    /// Waits counted in the daemon's overflow entry (node-wide, no process) because the
    /// per-process map was full: counted, but not per process.
    ProcMapFolded = 10,
}

/// Number of entries of the `COUNTERS` array.
pub const COUNTER_COUNT: u32 = 11;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Samples,
        Counter::EventsSubmitted,
        Counter::RingbufFull,
        Counter::EnqueueMapFull,
        Counter::NegativeDelta,
        Counter::AbsurdDelta,
        Counter::StatsMapFull,
        Counter::HistMapFull,
        Counter::ReadFailed,
        Counter::SamplesLost,
        Counter::ProcMapFolded,
    ];

    /// Stable snake-case name, used in output and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Samples => "samples",
            Counter::EventsSubmitted => "events_submitted",
            Counter::RingbufFull => "ringbuf_full",
            Counter::EnqueueMapFull => "enqueue_map_full",
            Counter::NegativeDelta => "negative_delta",
            Counter::AbsurdDelta => "absurd_delta",
            Counter::StatsMapFull => "stats_map_full",
            Counter::HistMapFull => "hist_map_full",
            Counter::ReadFailed => "read_failed",
            Counter::SamplesLost => "cpu_samples_lost",
            Counter::ProcMapFolded => "proc_map_folded",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration: read-only globals of the programs, set by the loader before the object is
// loaded (`EbpfLoader::override_global`, like libbpf's `const volatile`). The kernel freezes
// them, so the verifier knows every field as a constant: branches on a setting that is off
// are pruned, and offsets are constants to it (the daemon's trusted-pointer field loads
// need that). One struct per global: the loader sets each with one call.
// ---------------------------------------------------------------------------------------------

/// `PF_KTHREAD` (include/linux/sched.h): `task_struct.flags` (and field 9 of
/// `/proc/<pid>/stat`) of a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// What the programs do, fixed at load time (the global `names::global::SETTINGS`).
/// Flags are `u32` 0/1 (no `bool` across the boundary).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Trace programs: waits at or above this go to the ring buffer as events. (The daemon's
    /// threshold can change while running: `DAEMON_CFG[DAEMON_CFG_MIN_EVENT_NS]`.)
    pub min_event_ns: u64,
    /// Waits above this are counted as absurd (`Counter::AbsurdDelta`) and dropped.
    pub max_wait_ns: u64,
    /// Wake the reader once this many bytes are pending in the ring buffer.
    pub wakeup_bytes: u64,
    /// 1: only tasks in `FILTER_TGIDS` / `FILTER_TIDS` are measured.
    pub filter: u32,
    /// 1: maintain `TASK_STATS` and `HIST`.
    pub task_stats: u32,
    /// 1: enqueue stamps in task storage (5.11+); 0: in the tid-keyed hash `TID_ENQUEUE`.
    pub use_task_storage: u32,
    /// 1: `sched_switch` has the `prev_state` argument (5.18+); 0: read `task_struct`.
    pub switch_has_prev_state: u32,
    /// 1: the CPU sampler lists the tasks queued on the sampled CPU (every `RqOffsets` field
    /// was found, and the daemon pairs the rq clock with ktime).
    pub rq_walk: u32,
    /// 1: the daemon does not use the kernel's `sched_info` stamps (no `CONFIG_SCHED_INFO`, or
    /// forced): the wakeup programs stamp enqueues and the daemon's switch program takes them.
    pub daemon_own_stamps: u32,
    /// 1: every context switch records who held the CPU (`OCCUPANCY`) and long waits go out
    /// as `DiagEvent`s with their CPU's history (the diagnosis); 0: bare `WaitEvent`s.
    pub diagnose: u32,
    /// 1: the kernel has `cfs_rq.throttled_clock_self_time` (6.8+): long waits carry their
    /// cgroup's throttled time (`CgroupOffsets`).
    pub throttle_clock: u32,
    /// 1: the daemon's occupancy history and wait spans are in the rq clock (read through
    /// `RqOffsets`, the clock of the kernel's `sched_info` stamps) rather than
    /// `bpf_ktime_get_ns` (a helper call per switch).
    pub occupancy_rq_clock: u32,
    /// 1: the trace programs key `HIST` by thread (`HistKey::tgid` holds the tid: one
    /// histogram per thread); 0: by process.
    pub hist_per_thread: u32,
}
const _: () = assert!(size_of::<Settings>() == 64);

impl Settings {
    /// The values compiled into the object: no filter, no events, nothing optional.
    pub const DEFAULT: Self = Self {
        min_event_ns: u64::MAX,
        max_wait_ns: 100_000_000_000,
        wakeup_bytes: 512 * 1024,
        filter: 0,
        task_stats: 0,
        use_task_storage: 1,
        switch_has_prev_state: 1,
        rq_walk: 0,
        daemon_own_stamps: 0,
        diagnose: 0,
        throttle_clock: 0,
        occupancy_rq_clock: 0,
        hist_per_thread: 0,
    };
}

impl Default for Settings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `task_struct` field offsets, read from vmlinux BTF by the loader: aya applies no CO-RE
/// relocations to Rust programs (the global `names::global::TASK_OFFSETS`). A field the kernel
/// lacks is 0, and the settings keep the programs that would read it from running.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub comm: u32,
    /// `__state` (5.14+) or `state`; only read when `Settings::switch_has_prev_state` is 0.
    pub state: u32,
    /// `sched_info.last_arrival` (from the start of `task_struct`).
    pub last_arrival: u32,
    /// `sched_info.last_queued`.
    pub last_queued: u32,
    pub flags: u32,
    pub on_rq: u32,
    pub group_leader: u32,
    /// `sched_info.pcount`.
    pub pcount: u32,
    /// `prio` (only read when `Settings::diagnose` is on).
    pub prio: u32,
    /// A task's cgroup v2 id: `task_struct.cgroups` → `css_set.dfl_cgrp` → `cgroup.kn` →
    /// `kernfs_node.id` (the trace programs read it for long waits, so a task that exits
    /// before user space reads /proc keeps its cgroup); 0 when a field is missing.
    pub cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
}
const _: () = assert!(size_of::<TaskOffsets>() == 60);

impl TaskOffsets {
    /// No offset known: what the object holds until the loader sets the real ones.
    pub const UNKNOWN: Self = Self {
        pid: 0,
        tgid: 0,
        comm: 0,
        state: 0,
        last_arrival: 0,
        last_queued: 0,
        flags: 0,
        on_rq: 0,
        group_leader: 0,
        pcount: 0,
        prio: 0,
        cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kn_id: 0,
    };
}

/// Scheduler structure offsets for the CPU sampler's run-queue walk, from vmlinux BTF (the
/// global `names::global::RQ_OFFSETS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RqOffsets {
    /// `task_struct.se`.
    pub task_se: u32,
    /// `sched_entity.cfs_rq`, `.run_node`, `.my_q`, `.parent`.
    pub se_cfs_rq: u32,
    pub se_run_node: u32,
    pub se_my_q: u32,
    pub se_parent: u32,
    /// `cfs_rq.rq` and `cfs_rq.tasks_timeline`.
    pub cfs_rq_rq: u32,
    pub cfs_timeline: u32,
    /// `rq.cfs`, `rq.clock`, `rq.nr_running`.
    pub rq_cfs: u32,
    pub rq_clock: u32,
    pub rq_nr_running: u32,
}
const _: () = assert!(size_of::<RqOffsets>() == 40);

impl RqOffsets {
    /// No offset known: what the object holds until the loader sets the real ones.
    pub const UNKNOWN: Self = Self {
        task_se: 0,
        se_cfs_rq: 0,
        se_run_node: 0,
        se_my_q: 0,
        se_parent: 0,
        cfs_rq_rq: 0,
        cfs_timeline: 0,
        rq_cfs: 0,
        rq_clock: 0,
        rq_nr_running: 0,
    };
}

/// Offsets the throttle programs follow from a `cfs_rq` to its CPU and cgroup id, from
/// vmlinux BTF (the global `names::global::CGROUP_OFFSETS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupOffsets {
    /// `cfs_rq.tg`, `cfs_rq.rq`, `cfs_rq.throttled`.
    pub cfs_rq_tg: u32,
    pub cfs_rq_rq: u32,
    pub cfs_rq_throttled: u32,
    /// `rq.cpu`.
    pub rq_cpu: u32,
    /// `task_group.css` plus `cgroup_subsys_state.cgroup`.
    pub tg_cgroup: u32,
    /// `cgroup.kn`, `kernfs_node.id`.
    pub cgroup_kn: u32,
    pub kn_id: u32,
    /// `task_struct.se` plus `sched_entity.cfs_rq`: the task's CPU-local `cfs_rq`.
    pub task_cfs_rq: u32,
    /// `cfs_rq.throttled_clock_self_time`, `.throttled_clock_self` (6.8+; 0: absent).
    pub cfs_rq_self_time: u32,
    pub cfs_rq_self_clock: u32,
    /// `rq.clock`.
    pub rq_clock: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<CgroupOffsets>() == 48);

impl CgroupOffsets {
    pub const UNKNOWN: Self = Self {
        cfs_rq_tg: 0,
        cfs_rq_rq: 0,
        cfs_rq_throttled: 0,
        rq_cpu: 0,
        tg_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
        task_cfs_rq: 0,
        cfs_rq_self_time: 0,
        cfs_rq_self_clock: 0,
        rq_clock: 0,
        pad: 0,
    };
}

/// Index of the daemon's event threshold (ns) in `DAEMON_CFG`, the settings user space may
/// change while the programs run.
pub const DAEMON_CFG_MIN_EVENT_NS: u32 = 0;
/// Entries of `DAEMON_CFG`.
pub const DAEMON_CFG_LEN: u32 = 1;
/// Index of the only entry of the one-slot per-CPU arrays (`CPU_SLOT`, `WALK_SCRATCH`).
pub const PER_CPU_SLOT: u32 = 0;

/// Names of the object's globals, maps and programs, as the loader and user space look them
/// up. The eBPF side declares them as Rust items of the same name; a unit test of the loader
/// checks every one against the built object.
pub mod names {
    /// Read-only globals (agent-ebpf/src/config.rs).
    pub mod global {
        /// A `Settings`.
        pub const SETTINGS: &str = "SETTINGS";
        /// A `TaskOffsets`.
        pub const TASK_OFFSETS: &str = "TASK_OFFSETS";
        /// An `RqOffsets`.
        pub const RQ_OFFSETS: &str = "RQ_OFFSETS";
        /// A `CgroupOffsets`.
        pub const CGROUP_OFFSETS: &str = "CGROUP_OFFSETS";
        pub const ALL: [&str; 4] = [SETTINGS, TASK_OFFSETS, RQ_OFFSETS, CGROUP_OFFSETS];
    }

    /// Maps (agent-ebpf/src/maps.rs).
    pub mod map {
        pub const TASK_ENQUEUE: &str = "TASK_ENQUEUE";
        pub const TID_ENQUEUE: &str = "TID_ENQUEUE";
        pub const FILTER_TGIDS: &str = "FILTER_TGIDS";
        pub const FILTER_TIDS: &str = "FILTER_TIDS";
        pub const EVENTS: &str = "EVENTS";
        pub const TASK_STATS: &str = "TASK_STATS";
        pub const HIST: &str = "HIST";
        pub const COUNTERS: &str = "COUNTERS";
        pub const CPU_SLOT: &str = "CPU_SLOT";
        pub const PROC_WAITS: &str = "PROC_WAITS";
        pub const PROC_WAITS_SPARE: &str = "PROC_WAITS_SPARE";
        pub const CPU_WAITS: &str = "CPU_WAITS";
        pub const PROC_INFO: &str = "PROC_INFO";
        pub const MIGRATED_TO: &str = "MIGRATED_TO";
        pub const DAEMON_CFG: &str = "DAEMON_CFG";
        pub const SAMPLES: &str = "SAMPLES";
        pub const WALK_SCRATCH: &str = "WALK_SCRATCH";
        pub const OCCUPANCY: &str = "OCCUPANCY";
        pub const THROTTLES: &str = "THROTTLES";
        pub const ALL: [&str; 19] = [
            TASK_ENQUEUE,
            TID_ENQUEUE,
            FILTER_TGIDS,
            FILTER_TIDS,
            EVENTS,
            TASK_STATS,
            HIST,
            COUNTERS,
            CPU_SLOT,
            PROC_WAITS,
            PROC_WAITS_SPARE,
            CPU_WAITS,
            PROC_INFO,
            MIGRATED_TO,
            DAEMON_CFG,
            SAMPLES,
            WALK_SCRATCH,
            OCCUPANCY,
            THROTTLES,
        ];
    }

    /// Programs (agent-ebpf/src/trace.rs, daemon.rs, sampler.rs).
    pub mod program {
        pub const SCHED_WAKEUP: &str = "sched_wakeup";
        pub const SCHED_WAKEUP_NEW: &str = "sched_wakeup_new";
        pub const SCHED_MIGRATE_TASK: &str = "sched_migrate_task";
        pub const SCHED_SWITCH: &str = "sched_switch";
        pub const SCHED_MIGRATE_TASK_DAEMON: &str = "sched_migrate_task_daemon";
        pub const SCHED_SWITCH_DAEMON: &str = "sched_switch_daemon";
        pub const SCHED_PROCESS_EXEC_DAEMON: &str = "sched_process_exec_daemon";
        pub const CPU_SAMPLE: &str = "cpu_sample";
        /// fexit of the kernel function `throttle_cfs_rq`, fentry of `unthrottle_cfs_rq`.
        pub const THROTTLE_START: &str = "throttle_start";
        pub const THROTTLE_END: &str = "throttle_end";
        pub const ALL: [&str; 10] = [
            SCHED_WAKEUP,
            SCHED_WAKEUP_NEW,
            SCHED_MIGRATE_TASK,
            SCHED_SWITCH,
            SCHED_MIGRATE_TASK_DAEMON,
            SCHED_SWITCH_DAEMON,
            SCHED_PROCESS_EXEC_DAEMON,
            CPU_SAMPLE,
            THROTTLE_START,
            THROTTLE_END,
        ];
    }

    /// Kernel functions the throttle programs attach to.
    pub mod function {
        pub const THROTTLE_CFS_RQ: &str = "throttle_cfs_rq";
        pub const UNTHROTTLE_CFS_RQ: &str = "unthrottle_cfs_rq";
    }

    /// BTF tracepoints the programs attach to.
    pub mod tracepoint {
        pub const SCHED_WAKEUP: &str = "sched_wakeup";
        pub const SCHED_WAKEUP_NEW: &str = "sched_wakeup_new";
        pub const SCHED_MIGRATE_TASK: &str = "sched_migrate_task";
        pub const SCHED_SWITCH: &str = "sched_switch";
        pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    }
}

// ---------------------------------------------------------------------------------------------
// Histogram layout: log-linear over nanoseconds.
//
// Values below 2^SUB_BITS ns get a slot each. Above that, every power of two [2^e, 2^(e+1)) is
// split into 2^SUB_BITS equal sub-buckets, so a bucket is at most 1/32 (3.1 %) of its lower
// bound wide. Values at or above 2^MAX_EXP ns (~18 min) share the last slot.
// ---------------------------------------------------------------------------------------------

/// log2 of the number of sub-buckets per power of two.
pub const HIST_SUB_BITS: u32 = 5;
#[cfg(test)]
const HIST_SUB: u64 = 1 << HIST_SUB_BITS;
/// Values at or above `2^HIST_MAX_EXP` ns are clamped into the last slot.
pub const HIST_MAX_EXP: u32 = 40;
/// Number of histogram slots.
pub const HIST_SLOTS: u32 = (HIST_MAX_EXP - HIST_SUB_BITS + 1) << HIST_SUB_BITS;

/// Floor of log2 of `v` (0 for 0), written with constant shifts so the eBPF verifier and
/// every BPF ISA level accept it.
#[inline(always)]
#[must_use]
pub const fn log2_floor(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Histogram slot of a wait of `ns` nanoseconds. Always `< HIST_SLOTS`.
#[inline(always)]
#[must_use]
pub const fn hist_slot(ns: u64) -> u32 {
    log_linear_slot(ns, HIST_SUB_BITS, HIST_MAX_EXP)
}

/// Inclusive lower and exclusive upper bound, in ns, of the values that map to `slot`.
#[must_use]
pub const fn hist_slot_bounds(slot: u32) -> (u64, u64) {
    log_linear_bounds(slot, HIST_SUB_BITS)
}

/// The one log-linear layout, with `2^sub_bits` sub-buckets per power of two; values at or
/// above `2^max_exp` ns are clamped into the last slot.
#[inline(always)]
#[must_use]
const fn log_linear_slot(ns: u64, sub_bits: u32, max_exp: u32) -> u32 {
    let sub_count = 1u64 << sub_bits;
    if ns < sub_count {
        return ns as u32;
    }
    let ns = if ns >= 1 << max_exp {
        (1 << max_exp) - 1
    } else {
        ns
    };
    let exp = log2_floor(ns);
    let sub = (ns >> (exp - sub_bits)) & (sub_count - 1);
    ((exp - sub_bits + 1) << sub_bits) | sub as u32
}

#[must_use]
const fn log_linear_bounds(slot: u32, sub_bits: u32) -> (u64, u64) {
    let sub_count = 1u64 << sub_bits;
    if slot < sub_count as u32 {
        return (slot as u64, slot as u64 + 1);
    }
    let exp = (slot >> sub_bits) + sub_bits - 1;
    let sub = (slot as u64) & (sub_count - 1);
    let width = 1u64 << (exp - sub_bits);
    let lo = (1u64 << exp) + sub * width;
    (lo, lo + width)
}

#[cfg(feature = "user")]
mod user {
    // Every type here is #[repr(C)], Copy, made only of integers and byte arrays, and has no
    // padding (checked by the size assertions above), so every bit pattern is a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::WaitEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::EnqueueRecord {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::TaskStats {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::HistKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProcInfo {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CpuSample {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::WaitBucket {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProcWaits {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::TaskOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RqOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::OccupancyRing {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DiagEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ThrottleRecord {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CgroupOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_slots_are_contiguous_and_never_straddle_a_power_of_two() {
        let mut expected_lo = 0;
        for slot in 0..PROC_HIST_SLOTS {
            let (lo, hi) = proc_hist_slot_bounds(slot);
            assert_eq!(lo, expected_lo, "proc slot {slot} starts at {lo}");
            assert_eq!(
                proc_hist_slot(lo),
                slot,
                "lower bound {lo} of proc slot {slot}"
            );
            assert_eq!(
                proc_hist_slot(hi - 1),
                slot,
                "last value of proc slot {slot}"
            );
            assert!(
                lo == 0 || lo.ilog2() == (hi - 1).ilog2(),
                "proc slot {slot} [{lo},{hi}) straddles a power of two"
            );
            if lo >= 8 {
                assert!((hi - lo) * 8 <= lo, "proc slot {slot} [{lo},{hi}) too wide");
            }
            expected_lo = hi;
        }
        assert_eq!(expected_lo, 1 << PROC_HIST_MAX_EXP);
        assert_eq!(proc_hist_slot(u64::MAX), PROC_HIST_SLOTS - 1);
    }

    #[test]
    fn log2_floor_matches_ilog2() {
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) | 1,
                (1u64 << shift).wrapping_mul(3),
            ] {
                if v == 0 {
                    continue;
                }
                assert_eq!(log2_floor(v), v.ilog2(), "log2_floor({v})");
            }
        }
        assert_eq!(log2_floor(0), 0);
    }

    #[test]
    fn slots_are_contiguous_and_cover_their_bounds() {
        // Every slot's bounds map back onto the slot, and slot n+1 starts where slot n ends.
        let mut expected_lo = 0;
        for slot in 0..HIST_SLOTS {
            let (lo, hi) = hist_slot_bounds(slot);
            assert_eq!(
                lo, expected_lo,
                "slot {slot} starts at {lo}, expected {expected_lo}"
            );
            assert!(hi > lo, "slot {slot} is empty: [{lo}, {hi})");
            assert_eq!(hist_slot(lo), slot, "lower bound {lo} of slot {slot}");
            assert_eq!(
                hist_slot(hi - 1),
                slot,
                "last value {} of slot {slot}",
                hi - 1
            );
            expected_lo = hi;
        }
        assert_eq!(expected_lo, 1 << HIST_MAX_EXP);
        assert_eq!(hist_slot(u64::MAX), HIST_SLOTS - 1);
    }

    #[test]
    fn slot_width_is_within_relative_precision() {
        for slot in HIST_SUB as u32..HIST_SLOTS {
            let (lo, hi) = hist_slot_bounds(slot);
            let rel = (hi - lo) as f64 / lo as f64;
            assert!(
                rel <= 1.0 / 32.0 + 1e-12,
                "slot {slot} [{lo},{hi}) is {rel} wide"
            );
        }
    }
}
