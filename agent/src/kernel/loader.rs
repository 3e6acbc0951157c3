//! Loads schedlat's eBPF programs with the right configuration for this kernel, attaches them,
//! and gives typed access to their maps. Dropping [`Probes`] detaches everything.

use std::collections::HashMap as StdHashMap;

use agent_common::{
    COUNTER_COUNT, CgroupOffsets, Counter, DAEMON_CFG_MIN_EVENT_NS, HistKey, RqOffsets, Settings,
    TaskOffsets, TaskStats,
    names::{function, global, map, program, tracepoint},
};
use anyhow::{Context as _, Result, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, ProgramType},
    sys::{is_map_supported, is_program_supported},
};
use log::{debug, info, warn};

use crate::{
    kernel::batch,
    kernel::btf::{Btf as KernelBtf, KernelLayout},
    kernel::privileges,
    stats::hist::LatencyHistogram,
};

/// The eBPF object built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/schedlat"));

/// The trace programs, in attach order: (program name, tracepoint).
pub const TRACE_PROGRAMS: [(&str, &str); 4] = [
    (program::SCHED_WAKEUP, tracepoint::SCHED_WAKEUP),
    (program::SCHED_WAKEUP_NEW, tracepoint::SCHED_WAKEUP_NEW),
    (program::SCHED_MIGRATE_TASK, tracepoint::SCHED_MIGRATE_TASK),
    (program::SCHED_SWITCH, tracepoint::SCHED_SWITCH),
];

/// The daemon's switch-only programs (agent-ebpf/src/daemon.rs).
pub const DAEMON_PROGRAMS: [(&str, &str); 3] = [
    (
        program::SCHED_MIGRATE_TASK_DAEMON,
        tracepoint::SCHED_MIGRATE_TASK,
    ),
    (program::SCHED_SWITCH_DAEMON, tracepoint::SCHED_SWITCH),
    (
        program::SCHED_PROCESS_EXEC_DAEMON,
        tracepoint::SCHED_PROCESS_EXEC,
    ),
];

/// The daemon's fallback set, for kernels without `CONFIG_SCHED_INFO` (or when forced): the
/// wakeup programs stamp enqueues themselves and the daemon's switch program takes the stamps.
pub const DAEMON_FALLBACK_PROGRAMS: [(&str, &str); 5] = [
    (program::SCHED_WAKEUP, tracepoint::SCHED_WAKEUP),
    (program::SCHED_WAKEUP_NEW, tracepoint::SCHED_WAKEUP_NEW),
    (program::SCHED_MIGRATE_TASK, tracepoint::SCHED_MIGRATE_TASK),
    (program::SCHED_SWITCH_DAEMON, tracepoint::SCHED_SWITCH),
    (
        program::SCHED_PROCESS_EXEC_DAEMON,
        tracepoint::SCHED_PROCESS_EXEC,
    ),
];

/// Which program set to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Wakeup + switch programs with task-storage stamps: per-event detail including the
    /// waker, for filtered ad-hoc tracing.
    Trace,
    /// Switch-only programs reading the kernel's own `sched_info` stamps and aggregating in
    /// the kernel: the node daemon's always-on, low-cost set.
    Daemon,
    /// No scheduler programs: only the CPU sampler (`schedlat flamegraph`).
    Sampler,
}

/// Which tasks to measure.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub tgids: Vec<u32>,
    pub tids: Vec<u32>,
    /// Members are added after load (`Probes::update_filter_tgids`, a cgroup's processes):
    /// filter even while the lists are empty, rather than measure every task.
    pub dynamic: bool,
}

impl TaskFilter {
    fn is_off(&self) -> bool {
        !self.dynamic && self.tgids.is_empty() && self.tids.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub mode: Mode,
    /// `None`: every task on the machine.
    pub filter: Option<TaskFilter>,
    /// Waits at or above this are delivered as ring-buffer events; `None`: no events.
    pub min_event_ns: Option<u64>,
    /// Keep exact per-thread totals and per-process histograms in the kernel.
    pub task_stats: bool,
    /// With `task_stats`: one histogram per thread instead of per process (`HIST` keyed by tid).
    pub hist_per_thread: bool,
    /// Force the tid-keyed hash instead of task storage (tests the pre-5.11 path).
    pub force_pid_hash: bool,
    /// Daemon: stamp enqueues with the wakeup programs even where the kernel's `sched_info`
    /// stamps exist (tests the fallback for kernels without `CONFIG_SCHED_INFO`).
    pub force_own_stamps: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Daemon: capacity of the per-process aggregation map (entries).
    pub proc_map_entries: u32,
    /// With `task_stats`: capacity of the histogram map (one entry per process and slot
    /// that has samples; per-CPU values).
    pub hist_map_entries: u32,
    /// Sample every CPU's stacks this many times per second (`None`: no sampler).
    pub sampler_hz: Option<u64>,
    /// Record who holds each CPU at every switch and send long waits with their CPU's
    /// history (the diagnosis). Needs the daemon layout's `flags`/`prio` offsets.
    pub diagnose: bool,
    /// Attach fexit/fentry programs to the kernel's `throttle_cfs_rq`/`unthrottle_cfs_rq`
    /// where the throttled-time clock is missing (before 6.8). Off by default: one of about
    /// ten qemu boots of Debian's 6.1 hung (soft lockup in schedlat's process while `check`
    /// attached and detached its program sets); not root-caused.
    pub throttle_probes: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Trace,
            filter: None,
            min_event_ns: None,
            task_stats: false,
            hist_per_thread: false,
            force_pid_hash: false,
            force_own_stamps: false,
            ringbuf_bytes: 2 << 20,
            proc_map_entries: 16384,
            hist_map_entries: 16384,
            sampler_hz: None,
            diagnose: false,
            throttle_probes: false,
        }
    }
}

/// Kernel facilities schedlat relies on, as probed on this machine.
#[derive(Clone, Debug)]
pub struct Features {
    pub kernel_release: String,
    pub btf: bool,
    pub tp_btf: bool,
    pub task_storage: bool,
    pub ringbuf: bool,
    pub perf_event: bool,
    pub layout: Option<KernelLayout>,
}

impl Features {
    #[must_use]
    pub fn probe() -> Self {
        let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        let layout = match KernelBtf::from_sys_fs().and_then(|btf| KernelLayout::from_btf(&btf)) {
            Ok(layout) => Some(layout),
            Err(e) => {
                debug!("kernel layout from BTF: {e:#}");
                None
            }
        };
        Self {
            kernel_release,
            btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            // aya's generic probe for tracing programs needs an fentry target and says no on
            // kernels that load tp_btf fine; what tp_btf needs is the btf_trace_* typedefs,
            // which KernelLayout::from_btf already required. The real proof is the load itself.
            tp_btf: layout.is_some(),
            task_storage: is_map_supported(aya::maps::MapType::TaskStorage).unwrap_or(false),
            ringbuf: is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false),
            perf_event: is_program_supported(ProgramType::PerfEvent).unwrap_or(false),
            layout,
        }
    }

    /// Fails with what is missing when the probes cannot run here.
    pub fn require_runnable(&self) -> Result<KernelLayout> {
        if !self.btf {
            bail!(
                "this kernel ({}) has no BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF=y is \
                 needed); schedlat's BTF tracepoint programs cannot load without it",
                self.kernel_release
            );
        }
        if !self.tp_btf {
            bail!(
                "this kernel ({}) has no BTF for the scheduler tracepoints (btf_trace_sched_switch); \
                 tp_btf programs need Linux 5.5+",
                self.kernel_release
            );
        }
        if !self.ringbuf {
            bail!(
                "this kernel ({}) has no BPF ring buffer (Linux 5.8+ needed)",
                self.kernel_release
            );
        }
        self.layout.with_context(|| {
            format!(
                "could not read task_struct layout and sched_switch arguments from BTF on {}",
                self.kernel_release
            )
        })
    }
}

/// Loaded and attached programs. Dropping this detaches them and frees the maps.
pub struct Probes {
    ebpf: Ebpf,
    pub features: Features,
    /// Whether the kernel's CFS throttling is observed (`Err`: why not).
    throttles: Result<(), String>,
    /// Whether long waits carry the throttled-time clock.
    throttle_clock: bool,
    /// Whether the kernel has batch lookups of hash maps (`None`: not tried yet).
    batch: std::cell::Cell<Option<bool>>,
}

/// Entries per batch lookup of `TASK_STATS`/`HIST` (48 and 8 bytes per CPU each).
const BATCH_CHUNK: usize = 512;

/// What this run loads, decided from the configuration and the kernel's features: the values
/// of the programs' read-only globals and the program set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    mode: Mode,
    settings: Settings,
    task_offsets: TaskOffsets,
    rq_offsets: RqOffsets,
    cgroup_offsets: Option<CgroupOffsets>,
}

impl Plan {
    /// Pure: the decisions only (`Probes::load` logs what they disable).
    fn new(config: &ProbeConfig, features: &Features, layout: &KernelLayout) -> Result<Self> {
        if config.mode == Mode::Daemon && layout.daemon.is_none() {
            bail!(
                "kernel {}: task_struct.flags, on_rq or group_leader not found in BTF; the \
                 daemon's programs cannot run (`schedlat trace` still works)",
                features.kernel_release
            );
        }
        let stamps = layout.daemon.is_some_and(|d| d.sched_info.is_some());
        let own_stamps = config.mode == Mode::Daemon && (config.force_own_stamps || !stamps);
        let settings = Settings {
            min_event_ns: config.min_event_ns.unwrap_or(u64::MAX),
            // Wake the reader when a quarter of the ring is pending; it polls on a timer
            // otherwise.
            wakeup_bytes: u64::from(config.ringbuf_bytes / 4),
            filter: u32::from(config.filter.as_ref().is_some_and(|f| !f.is_off())),
            task_stats: u32::from(config.task_stats),
            use_task_storage: u32::from(features.task_storage && !config.force_pid_hash),
            switch_has_prev_state: u32::from(layout.switch_has_prev_state),
            // The walk tells how long queued tasks waited from their sched_info stamps, paired
            // with ktime by the daemon's switch program when it reads those stamps.
            rq_walk: u32::from(layout.rq.is_some() && stamps && !own_stamps),
            daemon_own_stamps: u32::from(own_stamps),
            diagnose: u32::from(config.diagnose && layout.daemon.is_some()),
            // The daemon's history in the rq clock (three loads) rather than ktime (a helper
            // call per switch); its wait stamps are in the rq clock anyway.
            occupancy_rq_clock: u32::from(
                config.diagnose
                    && config.mode == Mode::Daemon
                    && !own_stamps
                    && layout.daemon.is_some()
                    && layout.rq.is_some(),
            ),
            hist_per_thread: u32::from(config.hist_per_thread),
            throttle_clock: u32::from(
                config.diagnose
                    && layout.daemon.is_some()
                    && layout
                        .cgroup
                        .as_ref()
                        .is_some_and(super::btf::has_throttle_clock),
            ),
            ..Settings::DEFAULT
        };
        Ok(Self {
            mode: config.mode,
            settings,
            // Set whatever the mode: the sampler's run-queue walk reads last_queued too.
            task_offsets: layout.task_offsets(),
            rq_offsets: layout.rq.unwrap_or_default(),
            cgroup_offsets: layout.cgroup,
        })
    }

    fn uses_task_storage(&self) -> bool {
        self.settings.use_task_storage != 0
    }

    fn own_stamps(&self) -> bool {
        self.settings.daemon_own_stamps != 0
    }

    /// The scheduler programs to attach: (program, tracepoint).
    fn programs(&self) -> &'static [(&'static str, &'static str)] {
        match self.mode {
            Mode::Trace => &TRACE_PROGRAMS,
            Mode::Daemon if self.own_stamps() => &DAEMON_FALLBACK_PROGRAMS,
            Mode::Daemon => &DAEMON_PROGRAMS,
            Mode::Sampler => &[],
        }
    }

    /// How the enqueue stamps are kept, for the log.
    fn stamps_label(&self) -> &'static str {
        match self.mode {
            Mode::Daemon if self.own_stamps() => "own enqueue stamps (no sched_info)",
            Mode::Daemon => "kernel sched_info stamps",
            Mode::Sampler => "sampler only",
            Mode::Trace if self.uses_task_storage() => "task storage",
            Mode::Trace => "tid hash",
        }
    }

    /// Step 1: the read-only globals, one typed struct each.
    fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader
            .override_global(global::SETTINGS, &self.settings, true)
            .override_global(global::TASK_OFFSETS, &self.task_offsets, true)
            .override_global(global::RQ_OFFSETS, &self.rq_offsets, true);
        if let Some(offsets) = &self.cgroup_offsets {
            loader.override_global(global::CGROUP_OFFSETS, offsets, true);
        }
    }

    /// Step 2: map sizes. Maps a configuration does not use shrink to one entry (ring buffers
    /// to a page) instead of preallocating.
    fn size_maps(&self, loader: &mut EbpfLoader<'_>, config: &ProbeConfig) -> Result<()> {
        loader.map_max_entries(map::EVENTS, config.ringbuf_bytes);
        let unused: &[&str] = match self.mode {
            Mode::Trace => &[
                map::PROC_WAITS,
                map::PROC_INFO,
                map::CPU_WAITS,
                map::MIGRATED_TO,
            ],
            Mode::Daemon if self.own_stamps() => &[
                map::TASK_STATS,
                map::HIST,
                map::FILTER_TGIDS,
                map::FILTER_TIDS,
            ],
            Mode::Daemon => &[
                map::TID_ENQUEUE,
                map::TASK_STATS,
                map::HIST,
                map::FILTER_TGIDS,
                map::FILTER_TIDS,
            ],
            Mode::Sampler => &[
                map::PROC_WAITS,
                map::PROC_INFO,
                map::CPU_WAITS,
                map::MIGRATED_TO,
                map::TID_ENQUEUE,
                map::TASK_STATS,
                map::HIST,
                map::FILTER_TGIDS,
                map::FILTER_TIDS,
            ],
        };
        // Ring buffers cannot shrink below a page.
        let page = 4096;
        if config.sampler_hz.is_none() {
            loader.map_max_entries(map::SAMPLES, page);
        }
        if self.mode == Mode::Sampler {
            loader.map_max_entries(map::EVENTS, page);
        }
        if self.settings.diagnose == 0 {
            loader.map_max_entries(map::THROTTLES, page);
        }
        for name in unused {
            loader.map_max_entries(name, 1);
        }
        if self.mode == Mode::Daemon {
            let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
            loader
                .map_max_entries(map::MIGRATED_TO, cpus.max(1) as u32)
                .map_max_entries(map::PROC_WAITS, config.proc_map_entries)
                .map_max_entries(map::PROC_INFO, config.proc_map_entries);
        }
        if self.uses_task_storage() {
            loader.map_max_entries(map::TID_ENQUEUE, 1);
        }
        if config.task_stats {
            loader.map_max_entries(map::HIST, config.hist_map_entries);
        } else {
            loader
                .map_max_entries(map::TASK_STATS, 1)
                .map_max_entries(map::HIST, 1);
        }
        Ok(())
    }
}

impl Probes {
    /// Probes the kernel, then loads and attaches the programs `config` asks for in four steps:
    /// globals, map sizes, filter, attach.
    pub fn load(config: &ProbeConfig) -> Result<Self> {
        privileges::require_bpf()?;
        let features = Features::probe();
        let layout = features.require_runnable()?;
        raise_memlock_limit();
        let plan = Plan::new(config, &features, &layout)?;
        log_degraded(config, &features, &plan);

        let mut loader = EbpfLoader::new();
        // aya creates task storage maps but has no user-side wrapper for them; the kernel
        // side is all schedlat needs.
        loader.allow_unsupported_maps();
        plan.set_globals(&mut loader);
        plan.size_maps(&mut loader, config)?;
        let ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading schedlat's eBPF object into the kernel")?;
        let mut probes = Self {
            ebpf,
            features,
            throttles: Err("diagnosis is off".to_owned()),
            throttle_clock: plan.settings.throttle_clock != 0,
            batch: std::cell::Cell::new(batch::allowed()),
        };
        if let Some(filter) = &config.filter {
            probes.fill_filter(filter)?;
        }
        if config.mode == Mode::Daemon {
            probes.set_min_event_ns(plan.settings.min_event_ns)?;
        }
        probes.attach_scheduler_programs(&plan)?;
        if plan.settings.diagnose != 0
            && plan.settings.throttle_clock == 0
            && !config.throttle_probes
        {
            probes.throttles = Err(
                "this kernel has no cfs_rq.throttled_clock_self_time (Linux 6.8+), and the \
                 throttle probes (fexit on throttle_cfs_rq) are off (`diagnosis_throttle_probes`)"
                    .to_owned(),
            );
            log::warn!(
                "CPU quota throttling is not observable on this kernel (no \
                 cfs_rq.throttled_clock_self_time before Linux 6.8; the fexit throttle probes \
                 are opt-in): waits under a quota are not called `throttled`, the rest of the \
                 diagnosis works"
            );
        } else if plan.settings.diagnose != 0 && plan.settings.throttle_clock == 0 {
            probes.throttles = probes.attach_throttle_programs(&plan).map_err(|e| {
                let reason = format!("{e:#}");
                log::warn!(
                    "CFS throttling is not observable ({reason}; and no \
                     cfs_rq.throttled_clock_self_time before Linux 6.8): waits of tasks under \
                     a CPU quota cannot be diagnosed `throttled` (the rest of the diagnosis \
                     works)"
                );
                reason
            });
        }
        if let Some(hz) = config.sampler_hz {
            probes.attach_sampler(hz)?;
        }
        Ok(probes)
    }

    /// Step 3: the tasks to measure.
    fn fill_filter(&mut self, filter: &TaskFilter) -> Result<()> {
        let mut tgids: HashMap<_, u32, u8> =
            HashMap::try_from(self.required_map_mut(map::FILTER_TGIDS)?)?;
        for &tgid in &filter.tgids {
            tgids
                .insert(tgid, 1, 0)
                .with_context(|| format!("adding pid {tgid} to the filter"))?;
        }
        let mut tids: HashMap<_, u32, u8> =
            HashMap::try_from(self.required_map_mut(map::FILTER_TIDS)?)?;
        for &tid in &filter.tids {
            tids.insert(tid, 1, 0)
                .with_context(|| format!("adding tid {tid} to the filter"))?;
        }
        Ok(())
    }

    /// Adds and removes processes of the in-kernel tgid filter while the programs run (a
    /// filter loaded with `TaskFilter::dynamic`). Returns the tgids the map could not take
    /// (it holds 1024): those processes are not measured.
    pub fn update_filter_tgids(&mut self, add: &[u32], remove: &[u32]) -> Result<Vec<u32>> {
        let mut tgids: HashMap<_, u32, u8> =
            HashMap::try_from(self.required_map_mut(map::FILTER_TGIDS)?)?;
        for tgid in remove {
            // Already gone is fine: the goal is that it is not in the map.
            let _ = tgids.remove(tgid);
        }
        let mut refused = Vec::new();
        for &tgid in add {
            if tgids.insert(tgid, 1, 0).is_err() {
                refused.push(tgid);
            }
        }
        Ok(refused)
    }

    /// Step 4: load (verifier) and attach the scheduler programs of the plan.
    fn attach_scheduler_programs(&mut self, plan: &Plan) -> Result<()> {
        let btf = Btf::from_sys_fs().context("reading kernel BTF for tp_btf programs")?;
        let programs = plan.programs();
        for &(name, tracepoint) in programs {
            let program: &mut BtfTracePoint = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?
                .try_into()?;
            program
                .load(tracepoint, &btf)
                .with_context(|| format!("loading the {name} program (verifier)"))?;
            program.attach().with_context(|| {
                format!(
                    "attaching to tracepoint {tracepoint} (needs CAP_BPF and CAP_PERFMON, or root)"
                )
            })?;
        }
        info!(
            "attached {} to {} on {} ({})",
            programs.iter().map(|p| p.0).collect::<Vec<_>>().join(", "),
            programs.iter().map(|p| p.1).collect::<Vec<_>>().join(", "),
            self.features.kernel_release,
            plan.stamps_label(),
        );
        Ok(())
    }

    /// Attaches the throttle programs (fexit/fentry on the kernel's `throttle_cfs_rq` and
    /// `unthrottle_cfs_rq`): they need BTF for those functions, which a kernel may inline.
    fn attach_throttle_programs(&mut self, plan: &Plan) -> Result<()> {
        use aya::programs::{FEntry, FExit};
        if !plan
            .cgroup_offsets
            .as_ref()
            .is_some_and(super::btf::has_throttle_fields)
        {
            bail!("cfs_rq/task_group/cgroup fields not found in BTF (no CONFIG_CFS_BANDWIDTH?)");
        }
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        let start: &mut FExit = self
            .ebpf
            .program_mut(program::THROTTLE_START)
            .context("throttle program missing from the eBPF object")?
            .try_into()?;
        start
            .load(function::THROTTLE_CFS_RQ, &btf)
            .with_context(|| format!("loading fexit on {}", function::THROTTLE_CFS_RQ))?;
        start
            .attach()
            .with_context(|| format!("attaching fexit to {}", function::THROTTLE_CFS_RQ))?;
        let end: &mut FEntry = self
            .ebpf
            .program_mut(program::THROTTLE_END)
            .context("throttle program missing from the eBPF object")?
            .try_into()?;
        end.load(function::UNTHROTTLE_CFS_RQ, &btf)
            .with_context(|| format!("loading fentry on {}", function::UNTHROTTLE_CFS_RQ))?;
        end.attach()
            .with_context(|| format!("attaching fentry to {}", function::UNTHROTTLE_CFS_RQ))?;
        Ok(())
    }

    /// How CFS throttling is observed: the throttle programs' records, the throttled-time
    /// clock in each long wait, or not at all (why).
    pub fn throttle_observable(&self) -> Result<(), String> {
        self.throttles.clone()
    }

    /// Whether long waits carry their cgroup's throttled-time clock (`Settings::throttle_clock`).
    #[must_use]
    pub fn throttle_clock(&self) -> bool {
        self.throttle_clock
    }

    /// The throttle record ring buffer, when throttling is observed; can be taken once.
    pub fn take_throttles(&mut self) -> Option<RingBuf<MapData>> {
        if self.throttles.is_err() {
            return None;
        }
        RingBuf::try_from(self.ebpf.take_map(map::THROTTLES)?).ok()
    }

    /// Attaches the CPU sampler to a `cpu-clock` perf event on every online CPU.
    pub fn attach_sampler(&mut self, hz: u64) -> Result<()> {
        use aya::programs::perf_event::{
            PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
        };
        let program: &mut PerfEvent = self
            .ebpf
            .program_mut(program::CPU_SAMPLE)
            .with_context(|| {
                format!(
                    "program {} missing from the eBPF object",
                    program::CPU_SAMPLE
                )
            })?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("loading the {} program (verifier)", program::CPU_SAMPLE))?;
        let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        for cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu: *cpu },
                    SamplePolicy::Frequency(hz),
                    false,
                )
                .with_context(|| {
                    format!(
                        "opening a cpu-clock perf event on CPU {cpu} (needs CAP_PERFMON; \
                         kernel.perf_event_paranoid may forbid it)"
                    )
                })?;
        }
        info!("CPU sampler at {hz} Hz on {} CPUs", cpus.len());
        Ok(())
    }

    /// The CPU sample ring buffer; can be taken once.
    pub fn take_samples(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(map::SAMPLES)
            .with_context(|| format!("ring buffer {} already taken", map::SAMPLES))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sets the daemon's event threshold while running.
    pub fn set_min_event_ns(&mut self, min_event_ns: u64) -> Result<()> {
        let mut cfg: Array<_, u64> = Array::try_from(self.required_map_mut(map::DAEMON_CFG)?)?;
        cfg.set(DAEMON_CFG_MIN_EVENT_NS, min_event_ns, 0)
            .context("setting the event threshold")
    }
    /// A map of the object that must exist (names in `agent_common::names::map`).
    pub fn required_map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }

    pub fn required_map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }

    /// A map of the loaded object, by name.
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&aya::maps::Map> {
        self.ebpf.map(name)
    }

    /// (name, raw fd) of every loaded program, for /proc/self/fdinfo statistics.
    #[must_use]
    pub fn program_fds(&self) -> Vec<(String, i32)> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let fd = program.fd().ok()?;
                Some((name.to_owned(), fd.as_fd().as_raw_fd()))
            })
            .collect()
    }

    /// Every CPU's occupancy ring, as it is now (`ProbeConfig::diagnose`), indexed by CPU.
    pub fn occupancy(&self) -> Result<Vec<agent_common::OccupancyRing>> {
        let rings: aya::maps::PerCpuArray<_, agent_common::OccupancyRing> =
            aya::maps::PerCpuArray::try_from(self.required_map(map::OCCUPANCY)?)?;
        Ok(rings
            .get(&agent_common::PER_CPU_SLOT, 0)
            .context("reading the occupancy rings")?
            .iter()
            .copied()
            .collect())
    }

    /// The event ring buffer; can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(map::EVENTS)
            .with_context(|| format!("ring buffer {} already taken", map::EVENTS))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Kernel counters summed over CPUs, indexed like `Counter::ALL`.
    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize]> {
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(self.required_map(map::COUNTERS)?)?;
        let mut totals = [0; COUNTER_COUNT as usize];
        for counter in Counter::ALL {
            let values = array.get(&(counter as u32), 0)?;
            totals[counter as usize] = values.iter().sum();
        }
        Ok(totals)
    }

    /// Exact per-thread totals (with `task_stats`), keyed by tid. One batch lookup per
    /// `BATCH_CHUNK` threads where the kernel has them (5.6+), else two syscalls per thread.
    pub fn task_stats(&self) -> Result<Vec<(u32, TaskStats)>> {
        let mut out = Vec::new();
        let mut batch_ok = self.batch.get();
        let mut buffers = batch::Buffers::<u32, TaskStats>::new(BATCH_CHUNK);
        batch::visit_all(
            self.required_map(map::TASK_STATS)?,
            map::TASK_STATS,
            &mut batch_ok,
            &mut buffers,
            |tid, s| out.push((tid, *s)),
        )?;
        self.batch.set(batch_ok);
        Ok(out)
    }

    /// Removes exited threads' totals (`tids`) and exited processes' histograms (`tgids`),
    /// so a long-running machine-wide view does not fill the maps with the dead. An entry
    /// already gone (removed, or never there) is not an error.
    pub fn forget(&mut self, tids: &[u32], tgids: &std::collections::HashSet<u32>) -> Result<()> {
        let mut stats: HashMap<_, u32, TaskStats> =
            HashMap::try_from(self.required_map_mut(map::TASK_STATS)?)?;
        for tid in tids {
            let _ = stats.remove(tid);
        }
        if tgids.is_empty() {
            return Ok(());
        }
        let mut hist: PerCpuHashMap<_, HistKey, u64> =
            PerCpuHashMap::try_from(self.required_map_mut(map::HIST)?)?;
        let keys: Vec<HistKey> = hist
            .keys()
            .filter_map(Result::ok)
            .filter(|k| tgids.contains(&k.tgid))
            .collect();
        for key in &keys {
            let _ = hist.remove(key);
        }
        Ok(())
    }

    /// Histograms (with `task_stats`), keyed by tgid, or by tid with `hist_per_thread`. Batch
    /// lookups where the kernel has them, as `task_stats`.
    pub fn histograms(&self) -> Result<StdHashMap<u32, LatencyHistogram>> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let mut out: StdHashMap<u32, LatencyHistogram> = StdHashMap::new();
        let mut batch_ok = self.batch.get();
        let mut buffers = batch::Buffers::<HistKey, u64>::per_cpu(BATCH_CHUNK, cpus);
        batch::visit_entries(
            self.required_map(map::HIST)?,
            map::HIST,
            &mut batch_ok,
            &mut buffers,
            |key, per_cpu| {
                out.entry(key.tgid)
                    .or_default()
                    .add_slot(key.slot, per_cpu.iter().sum());
            },
        )?;
        self.batch.set(batch_ok);
        Ok(out)
    }
}

/// Logs what this kernel (or the configuration) makes the programs do without.
fn log_degraded(config: &ProbeConfig, features: &Features, plan: &Plan) {
    if !features.task_storage {
        warn!(
            "kernel {} has no task storage (Linux 5.11+): using a tid-keyed hash of 65536 \
             entries; enqueues beyond that are counted as enqueue_map_full",
            features.kernel_release
        );
    }
    let stamps = features
        .layout
        .as_ref()
        .and_then(|l| l.daemon)
        .is_some_and(|d| d.sched_info.is_some());
    if config.mode == Mode::Daemon && !stamps {
        warn!(
            "kernel {} has no task_struct.sched_info (CONFIG_SCHED_INFO): the daemon stamps \
             enqueues with the wakeup programs instead (costs a program run per wakeup); \
             run-queue snapshots in incidents are off",
            features.kernel_release
        );
    }
    debug!(
        "settings {:?}; task_struct offsets {:?}; run-queue offsets {:?}",
        plan.settings, plan.task_offsets, plan.rq_offsets
    );
}

/// Kernels before 5.11 charge BPF memory to `RLIMIT_MEMLOCK`; later ones to the memory cgroup.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } != 0 {
        debug!(
            "could not lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use agent_common::names::{global, map, program};

    use super::*;
    use crate::kernel::btf::{DaemonLayout, SchedInfoLayout, V2CgroupPath};

    fn features(task_storage: bool) -> Features {
        Features {
            kernel_release: "test".to_owned(),
            btf: true,
            tp_btf: true,
            task_storage,
            ringbuf: true,
            perf_event: true,
            layout: None,
        }
    }

    fn layout(sched_info: bool) -> KernelLayout {
        KernelLayout {
            pid_offset: 10,
            tgid_offset: 14,
            comm_offset: 20,
            state_offset: 24,
            switch_has_prev_state: true,
            daemon: Some(DaemonLayout {
                flags_offset: 30,
                on_rq_offset: 34,
                group_leader_offset: 40,
                prio_offset: 44,
                sched_info: sched_info.then_some(SchedInfoLayout {
                    last_arrival: 50,
                    last_queued: 58,
                    pcount: 48,
                }),
            }),
            rq: Some(RqOffsets {
                task_se: 100,
                ..RqOffsets::default()
            }),
            v2_cgroup: Some(V2CgroupPath {
                cgroups: 100,
                css_set_dfl_cgrp: 104,
                cgroup_kn: 108,
                kn_id: 112,
            }),
            cgroup: None,
        }
    }

    #[test]
    fn every_contract_name_is_a_symbol_of_the_object() {
        // ELF string tables hold names between NULs; a name the eBPF side renamed or dropped
        // would otherwise only fail at load time, as root.
        for name in global::ALL.iter().chain(&map::ALL).chain(&program::ALL) {
            let symbol = format!("\0{name}\0");
            assert!(
                EBPF_OBJECT
                    .windows(symbol.len())
                    .any(|window| window == symbol.as_bytes()),
                "{name} (agent_common::names) is not a symbol of the eBPF object"
            );
        }
    }

    #[test]
    fn daemon_plan_uses_the_kernel_stamps_and_walks_the_queue() {
        let config = ProbeConfig {
            mode: Mode::Daemon,
            min_event_ns: Some(5_000_000),
            ..ProbeConfig::default()
        };
        let plan = Plan::new(&config, &features(true), &layout(true)).expect("plan");
        assert_eq!(
            plan.settings,
            Settings {
                min_event_ns: 5_000_000,
                wakeup_bytes: u64::from(config.ringbuf_bytes / 4),
                rq_walk: 1,
                ..Settings::DEFAULT
            }
        );
        assert_eq!(plan.programs(), &DAEMON_PROGRAMS);
        assert_eq!(plan.task_offsets.last_queued, 58);
        assert_eq!(plan.task_offsets.group_leader, 40);
        assert_eq!(plan.rq_offsets.task_se, 100);
    }

    #[test]
    fn daemon_without_sched_info_stamps_itself_and_has_no_walk() {
        let config = ProbeConfig {
            mode: Mode::Daemon,
            ..ProbeConfig::default()
        };
        let plan = Plan::new(&config, &features(true), &layout(false)).expect("plan");
        assert_eq!(plan.settings.daemon_own_stamps, 1);
        assert_eq!(plan.settings.rq_walk, 0);
        assert_eq!(plan.programs(), &DAEMON_FALLBACK_PROGRAMS);
        assert_eq!(plan.task_offsets.last_queued, 0);
        assert_eq!(plan.task_offsets.flags, 30);
        let forced = ProbeConfig {
            force_own_stamps: true,
            ..config
        };
        let plan = Plan::new(&forced, &features(true), &layout(true)).expect("plan");
        assert_eq!(
            (plan.settings.daemon_own_stamps, plan.settings.rq_walk),
            (1, 0)
        );
    }

    #[test]
    fn trace_plan_sets_filter_stats_and_storage() {
        let config = ProbeConfig {
            filter: Some(TaskFilter {
                tgids: vec![42],
                tids: Vec::new(),
                dynamic: false,
            }),
            task_stats: true,
            ..ProbeConfig::default()
        };
        let plan = Plan::new(&config, &features(false), &layout(true)).expect("plan");
        assert_eq!(
            (
                plan.settings.filter,
                plan.settings.task_stats,
                plan.settings.use_task_storage,
                plan.settings.daemon_own_stamps,
            ),
            (1, 1, 0, 0)
        );
        assert_eq!(plan.programs(), &TRACE_PROGRAMS);
        let empty_filter = ProbeConfig {
            filter: Some(TaskFilter::default()),
            force_pid_hash: true,
            ..ProbeConfig::default()
        };
        let plan = Plan::new(&empty_filter, &features(true), &layout(true)).expect("plan");
        assert_eq!(
            (plan.settings.filter, plan.settings.use_task_storage),
            (0, 0)
        );
        let cgroup_filter = ProbeConfig {
            filter: Some(TaskFilter {
                dynamic: true,
                ..TaskFilter::default()
            }),
            ..ProbeConfig::default()
        };
        let plan = Plan::new(&cgroup_filter, &features(true), &layout(true)).expect("plan");
        assert_eq!(
            plan.settings.filter, 1,
            "an empty cgroup filters everything out until members are added"
        );
    }

    #[test]
    fn daemon_needs_the_daemon_layout() {
        let config = ProbeConfig {
            mode: Mode::Daemon,
            ..ProbeConfig::default()
        };
        let mut bare = layout(true);
        bare.daemon = None;
        let err = Plan::new(&config, &features(true), &bare).expect_err("no daemon layout");
        assert!(err.to_string().contains("group_leader"), "{err}");
        assert!(Plan::new(&ProbeConfig::default(), &features(true), &bare).is_ok());
    }
}
