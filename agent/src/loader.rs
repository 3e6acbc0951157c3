//! Loads schedlat's eBPF programs with the right configuration for this kernel, attaches them,
//! and gives typed access to their maps. Dropping [`Probes`] detaches everything.

use std::collections::HashMap as StdHashMap;

use agent_common::{COUNTER_COUNT, Counter, HistKey, TaskStats};
use anyhow::{Context as _, Result, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, ProgramType},
    sys::{is_map_supported, is_program_supported},
};
use log::{debug, info, warn};

use crate::{
    btf::{Btf as KernelBtf, KernelLayout},
    hist::LatencyHistogram,
    privileges,
};

/// The eBPF object built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/schedlat"));

/// The trace programs, in attach order: (program name, tracepoint).
pub const TRACE_PROGRAMS: [(&str, &str); 4] = [
    ("sched_wakeup", "sched_wakeup"),
    ("sched_wakeup_new", "sched_wakeup_new"),
    ("sched_migrate_task", "sched_migrate_task"),
    ("sched_switch", "sched_switch"),
];

/// The daemon's switch-only programs (agent-ebpf/src/daemon.rs).
pub const DAEMON_PROGRAMS: [(&str, &str); 2] = [
    ("sched_migrate_task_daemon", "sched_migrate_task"),
    ("sched_switch_daemon", "sched_switch"),
];

/// The daemon's fallback set, for kernels without `CONFIG_SCHED_INFO` (or when forced): the
/// wakeup programs stamp enqueues themselves and the daemon's switch program takes the stamps.
pub const DAEMON_FALLBACK_PROGRAMS: [(&str, &str); 4] = [
    ("sched_wakeup", "sched_wakeup"),
    ("sched_wakeup_new", "sched_wakeup_new"),
    ("sched_migrate_task", "sched_migrate_task"),
    ("sched_switch_daemon", "sched_switch"),
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
}

impl TaskFilter {
    fn is_empty(&self) -> bool {
        self.tgids.is_empty() && self.tids.is_empty()
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
    /// Force the tid-keyed hash instead of task storage (tests the pre-5.11 path).
    pub force_pid_hash: bool,
    /// Daemon: stamp enqueues with the wakeup programs even where the kernel's `sched_info`
    /// stamps exist (tests the fallback for kernels without `CONFIG_SCHED_INFO`).
    pub force_own_stamps: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Daemon: capacity of the per-process aggregation map (entries).
    pub proc_map_entries: u32,
    /// Sample every CPU's stacks this many times per second (`None`: no sampler).
    pub sampler_hz: Option<u64>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Trace,
            filter: None,
            min_event_ns: None,
            task_stats: false,
            force_pid_hash: false,
            force_own_stamps: false,
            ringbuf_bytes: 2 << 20,
            proc_map_entries: 16384,
            sampler_hz: None,
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
    pub uses_task_storage: bool,
    /// Daemon: enqueues are stamped by the wakeup programs (no `sched_info` stamps used).
    pub own_stamps: bool,
}

impl Probes {
    #[expect(
        clippy::too_many_lines,
        reason = "one linear sequence: check, configure, load, fill filters, attach"
    )]
    pub fn load(config: &ProbeConfig) -> Result<Self> {
        privileges::require_bpf()?;
        let features = Features::probe();
        let layout = features.require_runnable()?;
        raise_memlock_limit();

        let uses_task_storage = features.task_storage && !config.force_pid_hash;
        if !features.task_storage {
            warn!(
                "kernel {} has no task storage (Linux 5.11+): using a tid-keyed hash of 65536 \
                 entries; enqueues beyond that are counted as enqueue_map_full",
                features.kernel_release
            );
        }
        let filter_on = u32::from(config.filter.as_ref().is_some_and(|f| !f.is_empty()));
        let min_event_ns = config.min_event_ns.unwrap_or(u64::MAX);
        let task_stats = u32::from(config.task_stats);
        let use_task_storage = u32::from(uses_task_storage);
        let switch_has_prev_state = u32::from(layout.switch_has_prev_state);
        // Wake the reader when a quarter of the ring is pending; it polls on a timer otherwise.
        let wakeup_bytes = u64::from(config.ringbuf_bytes / 4);

        let daemon_layout = match (config.mode, layout.daemon) {
            (Mode::Daemon, None) => bail!(
                "kernel {}: task_struct.flags, on_rq or group_leader not found in BTF; the \
                 daemon's programs cannot run (`schedlat trace` still works)",
                features.kernel_release
            ),
            (_, daemon) => daemon,
        };
        let stamps = daemon_layout.and_then(|d| d.sched_info);
        let own_stamps =
            config.mode == Mode::Daemon && (config.force_own_stamps || stamps.is_none());
        if config.mode == Mode::Daemon && stamps.is_none() {
            warn!(
                "kernel {} has no task_struct.sched_info (CONFIG_SCHED_INFO): the daemon stamps \
                 enqueues with the wakeup programs instead (costs a program run per wakeup); \
                 run-queue snapshots in incidents are off",
                features.kernel_release
            );
        }
        let off = |f: fn(&crate::btf::DaemonLayout) -> u32| daemon_layout.as_ref().map_or(0, f);
        let stamp_off = |f: fn(&crate::btf::SchedInfoLayout) -> u32| stamps.as_ref().map_or(0, f);
        // Set whatever the mode: the sampler's run-queue walk reads last_queued too.
        let (off_arrival, off_queued, off_pcount) = (
            stamp_off(|d| d.last_arrival_offset),
            stamp_off(|d| d.last_queued_offset),
            stamp_off(|d| d.pcount_offset),
        );
        let (off_flags, off_on_rq, off_leader) = (
            off(|d| d.flags_offset),
            off(|d| d.on_rq_offset),
            off(|d| d.group_leader_offset),
        );
        let daemon_own_stamps = u32::from(own_stamps);

        let rq = layout.rq;
        let rq_off = |f: fn(&crate::btf::RqLayout) -> u32| rq.as_ref().map_or(0, f);
        // The walk tells how long queued tasks waited from their sched_info stamps, paired with
        // ktime by the daemon's switch program when it reads those stamps.
        let rq_walk = u32::from(rq.is_some() && stamps.is_some() && !own_stamps);
        let rq_offsets = [
            ("CFG_OFF_TASK_SE", rq_off(|r| r.task_se)),
            ("CFG_OFF_SE_CFS_RQ", rq_off(|r| r.se_cfs_rq)),
            ("CFG_OFF_SE_RUN_NODE", rq_off(|r| r.se_run_node)),
            ("CFG_OFF_SE_MY_Q", rq_off(|r| r.se_my_q)),
            ("CFG_OFF_SE_PARENT", rq_off(|r| r.se_parent)),
            ("CFG_OFF_CFS_RQ_RQ", rq_off(|r| r.cfs_rq_rq)),
            ("CFG_OFF_CFS_TIMELINE", rq_off(|r| r.cfs_timeline)),
            ("CFG_OFF_RQ_CFS", rq_off(|r| r.rq_cfs)),
            ("CFG_OFF_RQ_CLOCK", rq_off(|r| r.rq_clock)),
            ("CFG_OFF_RQ_NR_RUNNING", rq_off(|r| r.rq_nr_running)),
        ];
        let mut loader = EbpfLoader::new();
        loader
            // aya creates task storage maps but has no user-side wrapper for them; the kernel
            // side is all schedlat needs.
            .allow_unsupported_maps()
            .override_global("CFG_FILTER", &filter_on, true)
            .override_global("CFG_MIN_EVENT_NS", &min_event_ns, true)
            .override_global("CFG_TASK_STATS", &task_stats, true)
            .override_global("CFG_USE_TASK_STORAGE", &use_task_storage, true)
            .override_global("CFG_SWITCH_HAS_PREV_STATE", &switch_has_prev_state, true)
            .override_global("CFG_WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("CFG_OFF_PID", &layout.pid_offset, true)
            .override_global("CFG_OFF_TGID", &layout.tgid_offset, true)
            .override_global("CFG_OFF_COMM", &layout.comm_offset, true)
            .override_global("CFG_OFF_STATE", &layout.state_offset, true)
            .override_global("CFG_OFF_LAST_ARRIVAL", &off_arrival, true)
            .override_global("CFG_OFF_LAST_QUEUED", &off_queued, true)
            .override_global("CFG_OFF_FLAGS", &off_flags, true)
            .override_global("CFG_OFF_ON_RQ", &off_on_rq, true)
            .override_global("CFG_OFF_GROUP_LEADER", &off_leader, true)
            .override_global("CFG_OFF_PCOUNT", &off_pcount, true)
            .override_global("CFG_RQ_WALK", &rq_walk, true)
            .override_global("CFG_DAEMON_OWN_STAMPS", &daemon_own_stamps, true)
            .map_max_entries("EVENTS", config.ringbuf_bytes);
        for (name, value) in &rq_offsets {
            loader.override_global(name, value, true);
        }
        // Maps a configuration does not use shrink to one entry instead of preallocating.
        let unused: &[&str] = match config.mode {
            Mode::Trace => &["PROC_WAITS", "PROC_INFO", "CPU_WAITS", "MIGRATED_TO"],
            Mode::Daemon if own_stamps => &["TASK_STATS", "HIST", "FILTER_TGIDS", "FILTER_TIDS"],
            Mode::Daemon => &[
                "TID_ENQUEUE",
                "TASK_STATS",
                "HIST",
                "FILTER_TGIDS",
                "FILTER_TIDS",
            ],
            Mode::Sampler => &[
                "PROC_WAITS",
                "PROC_INFO",
                "CPU_WAITS",
                "MIGRATED_TO",
                "TID_ENQUEUE",
                "TASK_STATS",
                "HIST",
                "FILTER_TGIDS",
                "FILTER_TIDS",
            ],
        };
        // Ring buffers cannot shrink below a page.
        let page = 4096;
        if config.sampler_hz.is_none() {
            loader.map_max_entries("SAMPLES", page);
        }
        if config.mode == Mode::Sampler {
            loader.map_max_entries("EVENTS", page);
        }
        for name in unused {
            loader.map_max_entries(name, 1);
        }
        if config.mode == Mode::Daemon {
            let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
            loader
                .map_max_entries("MIGRATED_TO", cpus.max(1) as u32)
                .map_max_entries("PROC_WAITS", config.proc_map_entries)
                .map_max_entries("PROC_INFO", config.proc_map_entries);
        }
        if uses_task_storage {
            loader.map_max_entries("TID_ENQUEUE", 1);
        }
        if !config.task_stats {
            loader
                .map_max_entries("TASK_STATS", 1)
                .map_max_entries("HIST", 1);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading schedlat's eBPF object into the kernel")?;

        if let Some(filter) = &config.filter {
            let mut tgids: HashMap<_, u32, u8> =
                HashMap::try_from(ebpf.map_mut("FILTER_TGIDS").context("map FILTER_TGIDS")?)?;
            for &tgid in &filter.tgids {
                tgids
                    .insert(tgid, 1, 0)
                    .with_context(|| format!("adding pid {tgid} to the filter"))?;
            }
            let mut tids: HashMap<_, u32, u8> =
                HashMap::try_from(ebpf.map_mut("FILTER_TIDS").context("map FILTER_TIDS")?)?;
            for &tid in &filter.tids {
                tids.insert(tid, 1, 0)
                    .with_context(|| format!("adding tid {tid} to the filter"))?;
            }
        }
        let mut probes = Self {
            ebpf,
            features: features.clone(),
            uses_task_storage,
            own_stamps,
        };
        if config.mode == Mode::Daemon {
            probes.set_min_event_ns(min_event_ns)?;
        }

        let btf = Btf::from_sys_fs().context("reading kernel BTF for tp_btf programs")?;
        let programs: &[(&str, &str)] = match config.mode {
            Mode::Trace => &TRACE_PROGRAMS,
            Mode::Daemon if own_stamps => &DAEMON_FALLBACK_PROGRAMS,
            Mode::Daemon => &DAEMON_PROGRAMS,
            Mode::Sampler => &[],
        };
        for &(name, tracepoint) in programs {
            let program: &mut BtfTracePoint = probes
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
            features.kernel_release,
            match (config.mode, uses_task_storage) {
                (Mode::Daemon, _) if own_stamps => "own enqueue stamps (no sched_info)",
                (Mode::Daemon, _) => "kernel sched_info stamps",
                (Mode::Sampler, _) => "sampler only",
                (Mode::Trace, true) => "task storage",
                (Mode::Trace, false) => "tid hash",
            }
        );
        if let Some(hz) = config.sampler_hz {
            probes.attach_sampler(hz)?;
        }
        Ok(probes)
    }

    /// Attaches the CPU sampler to a `cpu-clock` perf event on every online CPU.
    pub fn attach_sampler(&mut self, hz: u64) -> Result<()> {
        use aya::programs::perf_event::{
            PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
        };
        let program: &mut PerfEvent = self
            .ebpf
            .program_mut("cpu_sample")
            .context("program cpu_sample missing from the eBPF object")?
            .try_into()?;
        program
            .load()
            .context("loading the cpu_sample program (verifier)")?;
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
            .take_map("SAMPLES")
            .context("ring buffer SAMPLES already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sets the daemon's event threshold while running.
    pub fn set_min_event_ns(&mut self, min_event_ns: u64) -> Result<()> {
        let mut cfg: Array<_, u64> =
            Array::try_from(self.ebpf.map_mut("DAEMON_CFG").context("map DAEMON_CFG")?)?;
        cfg.set(0, min_event_ns, 0)
            .context("setting the event threshold")
    }
    /// A map of the loaded object, by name.
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&aya::maps::Map> {
        self.ebpf.map(name)
    }

    pub fn map_mut(&mut self, name: &str) -> Option<&mut aya::maps::Map> {
        self.ebpf.map_mut(name)
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

    /// The event ring buffer; can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("ring buffer EVENTS already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Kernel counters summed over CPUs, indexed like `Counter::ALL`.
    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize]> {
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("map COUNTERS")?)?;
        let mut totals = [0; COUNTER_COUNT as usize];
        for counter in Counter::ALL {
            let values = array.get(&(counter as u32), 0)?;
            totals[counter as usize] = values.iter().sum();
        }
        Ok(totals)
    }

    /// Exact per-thread totals (with `task_stats`), keyed by tid.
    pub fn task_stats(&self) -> Result<Vec<(u32, TaskStats)>> {
        let map: HashMap<_, u32, TaskStats> =
            HashMap::try_from(self.ebpf.map("TASK_STATS").context("map TASK_STATS")?)?;
        map.iter()
            .map(|entry| entry.context("reading TASK_STATS"))
            .collect()
    }

    /// Per-process histograms (with `task_stats`), keyed by tgid.
    pub fn histograms(&self) -> Result<StdHashMap<u32, LatencyHistogram>> {
        let map: PerCpuHashMap<_, HistKey, u64> =
            PerCpuHashMap::try_from(self.ebpf.map("HIST").context("map HIST")?)?;
        let mut out: StdHashMap<u32, LatencyHistogram> = StdHashMap::new();
        for entry in &map {
            let (key, per_cpu) = entry.context("reading HIST")?;
            out.entry(key.tgid)
                .or_default()
                .add_slot(key.slot, per_cpu.iter().sum());
        }
        Ok(out)
    }
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
