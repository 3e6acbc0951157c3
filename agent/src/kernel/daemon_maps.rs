//! The daemon's maps, as deltas since the last read, every `refresh`: the per-process entries
//! (`PROC_WAITS`, their overflow entry, `PROC_INFO`) and the per-CPU histograms (`CPU_WAITS`).
//! The entries of exited processes are freed here, once per window.
//!
//! The per-process hash maps are read with `BPF_MAP_LOOKUP_BATCH` (`kernel::batch`) where the
//! kernel has it (5.6+), else key by key. Measured on a 2-vCPU VM (Linux 6.18), 3000 processes
//! each waking every 200 ms: both maps batched 4.0 ms median, key by key 14.9 ms (the README's
//! cost table has the rest).

use std::collections::{HashMap, HashSet};

use agent_common::{
    HIST_SLOTS, OVERFLOW_TGID, PREEMPTOR_CLASS_COUNT, PROC_HIST_SLOTS, ProcInfo, ProcWaits,
    SPARE_OVERFLOW, WaitBucket, names::map,
};
use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap as BpfHashMap, PerCpuArray};
use log::{debug, warn};

use crate::{
    host::procinfo,
    kernel::{
        batch::{self, Buffers},
        events::comm_str,
        loader::Probes,
    },
    stats::aggregate::{ClassWaits, OVERFLOW_CGROUP, ProcDelta, SlotDelta},
};

/// Reads the kernel maps and turns their cumulative counts into deltas since the last read.
pub struct KernelReader {
    /// Each process's entry as last read (the kernel's values are cumulative).
    procs: HashMap<u32, Box<ProcWaits>>,
    /// The overflow entry as last read.
    overflow: ProcWaits,
    /// Each process's cgroup as the kernel last recorded it; exited ones until the window after
    /// the one that freed them (their last long waits may still be in the ring buffer).
    pub cgroup_of: HashMap<u32, u64>,
    /// Processes whose kernel entries the last `free_exited` freed.
    freed_last: HashSet<u32>,
    /// Processes found exited at the last `free_exited`: their entries are freed at the next.
    exited: HashSet<u32>,
    cpus: Vec<Vec<(u64, u64)>>,
    /// Processes with an entry at the last read.
    pub entries: usize,
    /// The processes with an entry at the last complete read.
    seen: HashSet<u32>,
    /// Whether the kernel does batch lookups (`None`: not tried yet).
    pub batch: Option<bool>,
    waits_buffers: Buffers<u32, ProcWaits>,
    info_buffers: Buffers<u32, ProcInfo>,
}

/// Entries per `BPF_MAP_LOOKUP_BATCH` call: 256 `ProcWaits` are 297 KB of buffer, and 3000
/// processes take 12 calls.
const BATCH_CHUNK: usize = 256;

impl Default for KernelReader {
    fn default() -> Self {
        Self {
            procs: HashMap::new(),
            overflow: ProcWaits::default(),
            cgroup_of: HashMap::new(),
            freed_last: HashSet::new(),
            exited: HashSet::new(),
            cpus: Vec::new(),
            entries: 0,
            seen: HashSet::new(),
            batch: batch::allowed(),
            waits_buffers: Buffers::new(BATCH_CHUNK),
            info_buffers: Buffers::new(BATCH_CHUNK),
        }
    }
}

/// What the kernel added to a `ProcWaits` since `before`, or `None` when nothing.
pub fn proc_delta(
    cgroup_id: u64,
    tgid: u32,
    now: &ProcWaits,
    before: &ProcWaits,
) -> Option<ProcDelta> {
    let mut classes = [ClassWaits::default(); PREEMPTOR_CLASS_COUNT];
    for (i, class) in classes.iter_mut().enumerate() {
        class.waits = now.class_count[i].wrapping_sub(before.class_count[i]);
        class.wait_ns = now.class_total_ns[i].wrapping_sub(before.class_total_ns[i]);
    }
    let slots: Vec<(u32, u64)> = (0..PROC_HIST_SLOTS)
        .filter_map(|slot| {
            let i = slot as usize;
            let n = now.slots[i].wrapping_sub(before.slots[i]);
            (n > 0).then_some((slot, u64::from(n)))
        })
        .collect();
    // A read can catch an entry between its slot and its class updates: any change counts,
    // the rest arrives with the next read.
    let changed = !slots.is_empty() || classes.iter().any(|c| c.waits != 0 || c.wait_ns != 0);
    changed.then_some(ProcDelta {
        cgroup_id,
        tgid,
        slots,
        classes,
    })
}

/// Per CPU (index = CPU number): (fine slot, waits, wait ns) since the last read.
pub type CpuDeltas = Vec<Vec<SlotDelta>>;

/// One reading of the daemon's per-process maps.
pub struct KernelRead {
    pub procs: Vec<ProcDelta>,
    /// The name the kernel recorded for each process with an entry (it outlives the process).
    pub kernel_comms: Vec<(u32, String)>,
}

impl KernelReader {
    /// Reads the per-process maps (every `refresh`): deltas of the processes' counts since the
    /// last read. (`CPU_WAITS` is read by `read_cpus`; exited processes are freed by
    /// `free_exited`.)
    pub fn read(&mut self, probes: &Probes) -> Result<KernelRead> {
        let kernel_comms = self.read_records(probes)?;
        let mut procs = self.read_processes(probes)?;
        procs.extend(self.read_overflow(probes)?);
        Ok(KernelRead {
            procs,
            kernel_comms,
        })
    }

    /// `PROC_INFO`: each process's cgroup and name as recorded at its first wait (renamed at
    /// exec).
    fn read_records(&mut self, probes: &Probes) -> Result<Vec<(u32, String)>> {
        let mut kernel_comms = Vec::new();
        let cgroup_of = &mut self.cgroup_of;
        batch::visit_all(
            probes.required_map(map::PROC_INFO)?,
            map::PROC_INFO,
            &mut self.batch,
            &mut self.info_buffers,
            |tgid, info: &ProcInfo| {
                cgroup_of.insert(tgid, info.cgroup_id);
                kernel_comms.push((tgid, comm_str(&info.comm)));
            },
        )?;
        Ok(kernel_comms)
    }

    /// `PROC_WAITS`: what each process waited since the last read; notes which processes
    /// have an entry. A read that fails part way returns what it read: the entries visited
    /// have their snapshots updated, the others give their deltas at the next read.
    fn read_processes(&mut self, probes: &Probes) -> Result<Vec<ProcDelta>> {
        let mut procs = Vec::new();
        let mut seen = HashSet::with_capacity(self.seen.len());
        let zero = ProcWaits::default();
        let (snapshots, cgroup_of) = (&mut self.procs, &mut self.cgroup_of);
        let read = batch::visit_all(
            probes.required_map(map::PROC_WAITS)?,
            map::PROC_WAITS,
            &mut self.batch,
            &mut self.waits_buffers,
            |tgid, now: &ProcWaits| {
                seen.insert(tgid);
                let before = snapshots.entry(tgid).or_insert_with(|| Box::new(zero));
                // Where its last wait was counted (processes move between cgroups); the record
                // made when its entry was created, should the entry not have been written
                // since.
                let cgroup_id = if now.cgroup_id != 0 {
                    now.cgroup_id
                } else {
                    cgroup_of.get(&tgid).copied().unwrap_or(0)
                };
                cgroup_of.insert(tgid, cgroup_id);
                procs.extend(proc_delta(cgroup_id, tgid, now, before));
                **before = *now;
            },
        );
        if let Err(e) = read {
            // Snapshots of entries not visited stay (dropping them would count their whole
            // history again at the next read).
            warn!("reading PROC_WAITS stopped part way: {e:#}");
            return Ok(procs);
        }
        self.entries = seen.len();
        // Entries the kernel no longer has need no snapshot.
        self.procs.retain(|tgid, _| seen.contains(tgid));
        self.seen = seen;
        Ok(procs)
    }

    /// The overflow entry: waits of processes that found `PROC_WAITS` full.
    fn read_overflow(&mut self, probes: &Probes) -> Result<Option<ProcDelta>> {
        let spare: Array<_, ProcWaits> =
            Array::try_from(probes.required_map(map::PROC_WAITS_SPARE)?)?;
        let overflow = spare
            .get(&SPARE_OVERFLOW, 0)
            .context("reading the overflow entry")?;
        let delta = proc_delta(OVERFLOW_CGROUP, OVERFLOW_TGID, &overflow, &self.overflow);
        self.overflow = overflow;
        Ok(delta)
    }

    /// Once per window, right after a read: deletes the entries of the processes found exited
    /// at the previous call (their final counts were read by the reads since: a process can add
    /// no wait once it is gone, but it may still have added one between a read's copy of its
    /// entry and the check), and notes the processes found exited now for the next call (one
    /// /proc check per process with an entry, which is why this is not done every refresh).
    /// Returns the processes freed.
    pub fn free_exited(&mut self, probes: &mut Probes) -> Result<HashSet<u32>> {
        // Their cgroups were kept a window longer: their last long waits may have still been
        // in the ring buffer when they were freed.
        for tgid in std::mem::take(&mut self.freed_last) {
            self.cgroup_of.remove(&tgid);
        }
        let freeing = std::mem::replace(
            &mut self.exited,
            self.seen
                .iter()
                .copied()
                .filter(|&tgid| !procinfo::process_exists(tgid))
                .collect(),
        );
        // Not to be freed twice, nor counted as exited again before then.
        self.exited.retain(|tgid| !freeing.contains(tgid));
        if freeing.is_empty() {
            return Ok(freeing);
        }
        let mut waits: BpfHashMap<_, u32, ProcWaits> =
            BpfHashMap::try_from(probes.required_map_mut(map::PROC_WAITS)?)?;
        for tgid in &freeing {
            let _ = waits.remove(tgid);
            self.procs.remove(tgid);
            self.seen.remove(tgid);
        }
        let mut info: BpfHashMap<_, u32, ProcInfo> =
            BpfHashMap::try_from(probes.required_map_mut(map::PROC_INFO)?)?;
        for tgid in &freeing {
            let _ = info.remove(tgid);
        }
        debug!(
            "freed the kernel entries of {} exited processes",
            freeing.len()
        );
        self.freed_last.clone_from(&freeing);
        Ok(freeing)
    }

    /// `CPU_WAITS`: each CPU's waits per fine slot since the last read (`HIST_SLOTS` lookups
    /// of a per-CPU array, whatever the number of processes).
    pub fn read_cpus(&mut self, probes: &Probes) -> Result<CpuDeltas> {
        let cpu_map: PerCpuArray<_, WaitBucket> =
            PerCpuArray::try_from(probes.required_map(map::CPU_WAITS)?)?;
        let mut cpus: CpuDeltas = Vec::new();
        for slot in 0..HIST_SLOTS {
            let per_cpu = cpu_map.get(&slot, 0).context("reading CPU_WAITS")?;
            for (cpu, bucket) in per_cpu.iter().enumerate() {
                if self.cpus.len() <= cpu {
                    self.cpus.resize(cpu + 1, vec![(0, 0); HIST_SLOTS as usize]);
                }
                if cpus.len() <= cpu {
                    cpus.resize(cpu + 1, Vec::new());
                }
                let prev = &mut self.cpus[cpu][slot as usize];
                let dc = bucket.count.wrapping_sub(prev.0);
                if dc > 0 {
                    cpus[cpu].push(SlotDelta {
                        slot,
                        waits: dc,
                        wait_ns: bucket.total_ns.wrapping_sub(prev.1),
                    });
                }
                *prev = (bucket.count, bucket.total_ns);
            }
        }
        Ok(cpus)
    }
}

impl KernelReader {
    /// Samples counted in `CPU_WAITS` since the start.
    pub fn total_samples(&self) -> u64 {
        self.cpus.iter().flatten().map(|&(count, _)| count).sum()
    }
}
