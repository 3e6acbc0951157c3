//! Every map of the schedlat programs. Sizes here are defaults; the loader may resize them.

use agent_common::{
    COUNTER_COUNT, CpuSample, DAEMON_CFG_LEN, EnqueueRecord, HIST_SLOTS, HistKey, OccupancyRing,
    ProcInfo, ProcWaits, TaskStats, ThrottleRecord, WaitBucket, WaitEvent,
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type, task_struct},
    btf_maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    helpers::generated::bpf_task_storage_get,
    macros::btf_map,
};

/// A `BPF_MAP_TYPE_TASK_STORAGE` map (Linux 5.11+). aya-ebpf 0.2.1 ships cgroup, inode and
/// socket storage but not task storage, so this mirrors its `CgrpStorage` definition: the
/// fields are placeholders whose *types* encode the map definition in BTF for the loader.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are never dereferenced; the kernel owns the storage and serialises access
// per task. `#[btf_map]` statics must be `Sync`.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The task's value, created zeroed when `create` is set and it has none yet.
    #[inline(always)]
    #[expect(
        clippy::mut_from_ref,
        reason = "the kernel owns the value; a task's scheduler events are serialised"
    )]
    pub fn get(&self, task: *mut task_struct, create: bool) -> Option<&mut T> {
        let flags = if create {
            u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE)
        } else {
            0
        };
        // SAFETY: `task` is a trusted BTF pointer handed to the program by the tracepoint; the
        // helper returns NULL or a pointer to this task's value that stays valid for the run.
        let ptr = unsafe {
            bpf_task_storage_get(
                core::ptr::from_ref(self).cast_mut().cast(),
                task,
                core::ptr::null_mut(),
                flags,
            )
        };
        // SAFETY: non-null results point to a properly sized, aligned value of this map.
        unsafe { ptr.cast::<T>().as_mut() }
    }
}

/// Enqueue time and waker of each waiting task (kernels with task storage).
#[btf_map]
pub static TASK_ENQUEUE: TaskStorage<EnqueueRecord> = TaskStorage::new();

/// Fallback for kernels without task storage (< 5.11): keyed by tid. The loader shrinks it to
/// one entry when task storage is used.
#[btf_map]
pub static TID_ENQUEUE: HashMap<u32, EnqueueRecord, 65536> = HashMap::new();

/// Thread-group ids to trace when filtering (value unused).
#[btf_map]
pub static FILTER_TGIDS: HashMap<u32, u8, 1024> = HashMap::new();

/// Thread ids to trace when filtering (value unused).
#[btf_map]
pub static FILTER_TIDS: HashMap<u32, u8, 1024> = HashMap::new();

/// Waits at or above the event threshold (`Settings::min_event_ns`, the daemon's `DAEMON_CFG`).
#[btf_map]
pub static EVENTS: RingBuf<WaitEvent, { 2 << 20 }> = RingBuf::new();

/// Exact per-thread totals (only with `Settings::task_stats`).
#[btf_map]
pub static TASK_STATS: HashMap<u32, TaskStats, 16384> = HashMap::new();

/// Per-process log-linear histograms, per CPU (only with `Settings::task_stats`).
#[btf_map]
pub static HIST: PerCpuHashMap<HistKey, u64, 16384> = PerCpuHashMap::new();

/// Everything counted in the kernel, indexed by `agent_common::Counter`.
#[btf_map]
pub static COUNTERS: PerCpuArray<u64, { COUNTER_COUNT as usize }> = PerCpuArray::new();

// ---------------------------------------------------------------------------------------------
// Daemon (switch-only) programs: see daemon.rs.
// ---------------------------------------------------------------------------------------------

/// What the daemon remembers per CPU about the task it switched in last.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpuSlot {
    /// `task_struct` address of the task switched in; 0 when none is being tracked.
    pub task: u64,
    /// Its `sched_info.last_queued` at switch-in (rq clock at enqueue).
    pub last_queued: u64,
    /// `pid_tgid` of the task that ran before it (the preemptor).
    pub preemptor_pid_tgid: u64,
    /// The preemptor's `task_struct` address, to read its name if an event is sent.
    pub preemptor_task: u64,
    /// The preemptor's cgroup v2 id.
    pub preemptor_cgroup: u64,
    /// `FLAG_*` bits of the wait.
    pub flags: u32,
    /// Switch-ins seen on this CPU (every 64th also pairs the clocks).
    pub switches: u32,
    /// `bpf_ktime_get_ns` at this switch-in when the clocks are being paired, else 0.
    pub ktime_at_switch_in: u64,
    /// rq clock minus `bpf_ktime_get_ns` on this CPU, as last paired (0: not yet): lets the
    /// sampler tell how long queued tasks have waited without the rq clock's tick lag.
    pub rq_clock_offset: u64,
    /// The task's cumulative throttled time at switch-in, read only when its wait looks long
    /// enough to become an event (`THROTTLED_UNKNOWN` otherwise).
    pub throttled_end: u64,
    /// The occupancy clock (rq clock or ktime, `Settings::occupancy_rq_clock`) at this
    /// switch-in: the end of the task's wait in the history's time.
    pub switch_in_clock: u64,
}

/// One slot per CPU (index `agent_common::PER_CPU_SLOT`).
#[btf_map]
pub static CPU_SLOT: PerCpuArray<CpuSlot, 1> = PerCpuArray::new();

/// Per process (key: tgid): its waits by per-process histogram slot and by preemptor class,
/// one entry shared by all CPUs and updated with atomic adds (see `ProcWaits`). Not
/// preallocated: an entry costs memory only while its process lives (user space deletes the
/// entries of exited processes every window), and an insert happens once per process.
#[btf_map]
pub static PROC_WAITS: HashMap<u32, ProcWaits, 16384, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// The zeroed template and the overflow entry (`agent_common::SPARE_ZERO`, `SPARE_OVERFLOW`).
#[btf_map]
pub static PROC_WAITS_SPARE: Array<ProcWaits, 2> = Array::new();

/// Per histogram slot: count and sum of the waits that ended on each CPU.
#[btf_map]
pub static CPU_WAITS: PerCpuArray<WaitBucket, { HIST_SLOTS as usize }> = PerCpuArray::new();

/// cgroup and name of every process in `PROC_WAITS`, written when its entry is created.
#[btf_map]
pub static PROC_INFO: HashMap<u32, ProcInfo, 16384, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// Tasks recently moved to a CPU's run queue while they waited, per destination CPU (index:
/// CPU number; the loader sizes it to the CPUs present).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MigratedList {
    /// Next entry to overwrite.
    pub head: u64,
    /// Marks not taken yet (atomic; approximate under races, which at worst cost a scan):
    /// the switch-in skips the scan when there are none, as on most switches.
    pub live: u64,
    /// (`task_struct` address, its `sched_info.pcount` when it moved): the task has not run
    /// since exactly when its pcount is unchanged.
    pub entries: [[u64; 2]; MIGRATED_LIST_LEN],
}

/// Entries per CPU: more tasks than this moved to one CPU and still waiting are rare.
pub const MIGRATED_LIST_LEN: usize = 8;

#[btf_map]
pub static MIGRATED_TO: Array<MigratedList, 1024> = Array::new();

/// Settings user space may change while running, indexed by `agent_common::DAEMON_CFG_*`:
/// `[DAEMON_CFG_MIN_EVENT_NS]` = minimum wait sent as an event (ns).
#[btf_map]
pub static DAEMON_CFG: Array<u64, { DAEMON_CFG_LEN as usize }> = Array::new();

/// The flight recorder's CPU samples (sized by the loader).
#[btf_map]
pub static SAMPLES: RingBuf<CpuSample, { 1 << 20 }> = RingBuf::new();

/// Loop state of the sampler's run-queue walk (see sampler.rs for why it is in a map).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkScratch {
    pub node: u64,
    pub child: u64,
    pub nr_groups: u64,
    pub found: u64,
    pub groups: [u64; 8],
}

#[btf_map]
pub static WALK_SCRATCH: PerCpuArray<WalkScratch, 1> = PerCpuArray::new();

/// Who held each CPU lately (only with `Settings::diagnose`): written at every context switch,
/// copied into the event of a long wait, read by user space for the other CPUs.
#[btf_map]
pub static OCCUPANCY: PerCpuArray<OccupancyRing, 1> = PerCpuArray::new();

/// CFS bandwidth throttling starts and ends (`ThrottleRecord`): a few per period per throttled
/// cgroup and CPU.
#[btf_map]
pub static THROTTLES: RingBuf<ThrottleRecord, { 256 << 10 }> = RingBuf::new();
