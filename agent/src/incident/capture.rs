//! The daemon's incident capture: triggers in, bundles out.
//!
//! At a trigger the run-queue state and the victim's /proc files are read at once; the bundle
//! is written `incidents.after` later, when the flight recorder also holds the CPU samples of
//! the moments after the trigger.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agent_common::{CpuSample, FLAG_PREEMPTOR_KTHREAD, WaitEvent};
use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use log::{debug, info, warn};
use serde_json::json;

use crate::{
    daemon::config::IncidentConfig,
    diagnosis::engine::Diagnosis,
    incident::snapshot::{self, Snapshot},
    incident::store::{
        Decision, DirError, FlameGraphFile, FlameScope, Limiter, Metadata, Reason, Store, TaskRef,
        incident_id, rfc3339,
    },
    kernel::events::{comm_str, decode_as, human_ns},
    profile::recorder::process_label,
    profile::recorder::{FlightRecorder, Sample, flamegraph_svg, fold},
    profile::symbolize::{KernelSymbols, UserSymbolizer},
    stats::aggregate::{Exported, Quantiles},
};

/// Counters for the metrics.
#[derive(Clone, Debug, Default)]
pub struct IncidentStats {
    pub captured: BTreeMap<&'static str, u64>,
    pub cooldown: u64,
    pub rate_limited: u64,
    pub write_errors: u64,
    pub cpu_samples: u64,
    /// Samples the flight recorder dropped because it was full before they aged out.
    pub recorder_overflow: u64,
}

struct Pending {
    due: Instant,
    trigger_ts_ns: u64,
    unix_ns: u64,
    reason: Reason,
    threshold_ns: u64,
    value_ns: u64,
    victim: TaskRef,
    cpu: Option<u32>,
    preemptor: Option<TaskRef>,
    /// Who held the CPU and why (waits with diagnosis on).
    diagnosis: Option<Diagnosis>,
    snapshot: Snapshot,
    /// The victim's /proc files as the kernel wrote them (the name in them need not be UTF-8).
    victim_status: Option<Vec<u8>>,
    victim_sched: Option<Vec<u8>>,
    window: serde_json::Value,
}

pub struct Capture {
    config: IncidentConfig,
    store: Store,
    limiter: Limiter,
    recorder: FlightRecorder,
    kernel: KernelSymbols,
    user: UserSymbolizer,
    pending: Vec<Pending>,
    cpus: u32,
    pub stats: IncidentStats,
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Capture {
    /// Opens the incident directory and loads kernel symbols (call before dropping
    /// privileges: /proc/kallsyms hides addresses from the unprivileged). Fails only when the
    /// incident directory cannot be used.
    pub fn new(config: &IncidentConfig) -> Result<Self, DirError> {
        let store = Store::open(&config.dir)?;
        let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
        let keep = config.before.0 + config.after.0 + Duration::from_secs(1);
        // Enough for every CPU sampling at the configured rate over the kept interval.
        let max_samples =
            (config.sample_hz as usize) * (cpus as usize) * (keep.as_secs() as usize + 1);
        Ok(Self {
            config: config.clone(),
            store,
            limiter: Limiter::new(config.cooldown.0, config.max_per_minute),
            recorder: FlightRecorder::new(keep.as_nanos() as u64, max_samples.max(1000)),
            kernel: KernelSymbols::load(),
            user: UserSymbolizer::default(),
            pending: Vec::new(),
            cpus,
            stats: IncidentStats::default(),
        })
    }

    /// The counters, for the metrics.
    #[must_use]
    pub fn stats(&self) -> IncidentStats {
        IncidentStats {
            recorder_overflow: self.recorder.overflowed,
            ..self.stats.clone()
        }
    }

    #[must_use]
    pub fn config(&self) -> &IncidentConfig {
        &self.config
    }

    /// Applies a reloaded configuration (a new directory is opened first).
    pub fn reconfigure(&mut self, config: &IncidentConfig) -> Result<()> {
        if config.dir != self.config.dir {
            self.store = Store::open(&config.dir)?;
        }
        if config.cooldown != self.config.cooldown
            || config.max_per_minute != self.config.max_per_minute
        {
            self.limiter = Limiter::new(config.cooldown.0, config.max_per_minute);
        }
        self.config = config.clone();
        Ok(())
    }

    /// Moves the CPU samples from the ring buffer into the flight recorder.
    pub fn drain_samples(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            if let Ok(raw) = decode_as::<CpuSample>(&item) {
                self.stats.cpu_samples += 1;
                self.recorder.push(Sample::from_raw(&raw));
            }
        }
    }

    /// A long wait: captures it if it crosses the threshold and the limits allow.
    pub fn on_wait(
        &mut self,
        e: &WaitEvent,
        cgroup: Option<&str>,
        diagnosis: Option<&Diagnosis>,
        exported: &Exported,
    ) {
        let threshold_ns = self.config.threshold.0.as_nanos() as u64;
        if e.wait_ns < threshold_ns {
            return;
        }
        let victim_key = format!("pid:{}", e.tgid);
        if !self.allowed(&victim_key) {
            return;
        }
        let victim = TaskRef {
            tid: e.tid,
            tgid: e.tgid,
            comm: comm_str(&e.comm),
            cgroup: cgroup.map(str::to_owned),
        };
        let preemptor = TaskRef {
            tid: e.preemptor_tid,
            tgid: e.preemptor_tgid,
            comm: if e.preemptor_tid == 0 {
                "[idle]".to_owned()
            } else if e.flags & FLAG_PREEMPTOR_KTHREAD != 0 {
                format!("{} (kernel thread)", comm_str(&e.preemptor_comm))
            } else {
                comm_str(&e.preemptor_comm)
            },
            cgroup: None,
        };
        let window = window_json(exported, cgroup);
        self.begin(
            e.ts_ns,
            Reason::Wait,
            threshold_ns,
            e.wait_ns,
            victim,
            Some(e.cpu),
            Some(preemptor),
            window,
        );
        if let Some(p) = self.pending.last_mut() {
            p.diagnosis = diagnosis.cloned();
        }
    }

    /// After a window: cgroups whose p99 crossed `p99_threshold`.
    pub fn on_window(&mut self, exported: &Exported) {
        let threshold_ns = self.config.p99_threshold.0.as_nanos() as u64;
        if threshold_ns == 0 {
            return;
        }
        let crossed: Vec<(String, u64)> = exported
            .window
            .cgroups
            .iter()
            .map(|(cg, q)| (cg.clone(), q.p99))
            .filter(|(_, p99)| *p99 >= threshold_ns)
            .collect();
        for (cgroup, p99) in crossed {
            if !self.allowed(&format!("cgroup:{cgroup}")) {
                continue;
            }
            // The victim is the cgroup's worst process series in the window.
            let worst = exported
                .window
                .series
                .iter()
                .filter(|(key, _)| key.cgroup == cgroup)
                .max_by(|a, b| a.1.p99.cmp(&b.1.p99))
                .map(|(key, _)| key.process.clone())
                .unwrap_or_default();
            let victim = TaskRef {
                tid: 0,
                tgid: 0,
                comm: worst,
                cgroup: Some(cgroup.clone()),
            };
            let window = window_json(exported, Some(&cgroup));
            self.begin(
                monotonic_ns(),
                Reason::WindowP99,
                threshold_ns,
                p99,
                victim,
                None,
                None,
                window,
            );
        }
    }

    fn allowed(&mut self, victim_key: &str) -> bool {
        match self.limiter.decide(victim_key, Instant::now()) {
            Decision::Capture => true,
            Decision::Cooldown => {
                self.stats.cooldown += 1;
                false
            }
            Decision::RateLimited => {
                self.stats.rate_limited += 1;
                false
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one trigger's facts")]
    fn begin(
        &mut self,
        trigger_ts_ns: u64,
        reason: Reason,
        threshold_ns: u64,
        value_ns: u64,
        victim: TaskRef,
        cpu: Option<u32>,
        preemptor: Option<TaskRef>,
        window: serde_json::Value,
    ) {
        let last = self.recorder.last_per_cpu(trigger_ts_ns);
        // A sample during the wait that caught the victim queued: the wait ended at most
        // `value_ns` plus the run after it before the trigger; allow a second for that run.
        let victim_queued = cpu.and_then(|cpu| {
            let from = trigger_ts_ns.saturating_sub(value_ns + 1_000_000_000);
            self.recorder
                .seen_queued(cpu, victim.tid, from, trigger_ts_ns)
                .map(|s| snapshot::victim_queued(s, victim.tid, trigger_ts_ns))
        });
        let snapshot = snapshot::take(&last, trigger_ts_ns, self.cpus, victim_queued);
        // User frames resolve only while their process lives: resolve those of the look-back
        // now, not `incidents.after` from now when the bundle is written (a culprit may be
        // gone by then).
        let from = trigger_ts_ns.saturating_sub(self.config.before.0.as_nanos() as u64);
        self.user.prepare(
            self.recorder
                .between(from, trigger_ts_ns)
                .map(|s| (s.tgid, s.user.as_slice())),
        );
        let task_file = |name: &str| {
            (victim.tid != 0)
                .then(|| {
                    std::fs::read(format!("/proc/{}/task/{}/{name}", victim.tgid, victim.tid)).ok()
                })
                .flatten()
        };
        let victim_status = task_file("status");
        let victim_sched = task_file("sched");
        self.pending.push(Pending {
            due: Instant::now() + self.config.after.0,
            trigger_ts_ns,
            unix_ns: unix_ns(),
            reason,
            threshold_ns,
            value_ns,
            victim,
            cpu,
            preemptor,
            snapshot,
            victim_status,
            victim_sched,
            window,
            diagnosis: None,
        });
    }

    /// Writes the bundles whose after-interval is over (all of them when `force`).
    pub fn flush_due(&mut self, force: bool) {
        let now = Instant::now();
        let (due, waiting): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| force || p.due <= now);
        self.pending = waiting;
        if due.is_empty() {
            return;
        }
        for p in due {
            match self.write_bundle(&p) {
                Ok(path) => {
                    *self.stats.captured.entry(p.reason.name()).or_default() += 1;
                    info!(
                        "incident ({}): {} [{}] {} {} on CPU {}: {} -> {}",
                        p.reason.name(),
                        p.victim.comm,
                        p.victim.tgid,
                        if p.reason == Reason::Wait {
                            "waited"
                        } else {
                            "window p99"
                        },
                        human_ns(p.value_ns),
                        p.cpu.map_or("-".to_owned(), |c| c.to_string()),
                        headline_cause(&p),
                        path.display()
                    );
                }
                Err(e) => {
                    self.stats.write_errors += 1;
                    warn!("writing an incident bundle: {e:#}");
                }
            }
        }
        self.user.retain(crate::host::procinfo::process_exists);
    }

    fn write_bundle(&mut self, p: &Pending) -> Result<std::path::PathBuf> {
        let before = self.config.before.0.as_nanos() as u64;
        let after = self.config.after.0.as_nanos() as u64;
        // The processes whose stacks the flame graphs draw first (pids, most important first):
        // the diagnosis' culprits (the idle CPU aside).
        let culprits: Vec<u32> = p.diagnosis.as_ref().map_or_else(Vec::new, |d| {
            d.culprits
                .iter()
                .filter(|c| c.tgid != 0)
                .map(|c| c.tgid)
                .collect()
        });
        let culprits: &[u32] = &culprits;
        let started = Instant::now();
        let graphs = self.flame_graphs(p, culprits)?;
        debug!("incident flame graphs drawn in {:?}", started.elapsed());
        let runqueue_json = serde_json::to_vec_pretty(&p.snapshot)?;
        let runqueue_txt = snapshot::render(&p.snapshot);
        let victim_key = match p.reason {
            Reason::Wait => format!("{}-{}", p.victim.comm, p.victim.tgid),
            Reason::WindowP99 => p.victim.cgroup.clone().unwrap_or_default(),
        };
        let id = incident_id(p.unix_ns, p.reason, &victim_key);
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut flamegraphs = Vec::with_capacity(graphs.len());
        for graph in graphs {
            files.push((graph.file.svg.clone(), graph.svg));
            files.push((graph.file.folded.clone(), graph.folded));
            flamegraphs.push(graph.file);
        }
        files.push(("runqueue.json".to_owned(), runqueue_json));
        files.push(("runqueue.txt".to_owned(), runqueue_txt.into_bytes()));
        if let Some(s) = &p.victim_status {
            files.push(("victim-status.txt".to_owned(), s.clone()));
        }
        if let Some(s) = &p.victim_sched {
            files.push(("victim-sched.txt".to_owned(), s.clone()));
        }
        let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        names.push("metadata.json".to_owned());
        let metadata = Metadata {
            id: id.clone(),
            schema_version: 1,
            time: rfc3339(p.unix_ns),
            unix_ns: p.unix_ns,
            reason: p.reason,
            threshold_ns: p.threshold_ns,
            value_ns: p.value_ns,
            victim: p.victim.clone(),
            cpu: p.cpu,
            preemptor: p.preemptor.clone(),
            waker: None,
            diagnosis: p.diagnosis.clone(),
            window: p.window.clone(),
            samples: flamegraphs.first().map_or(0, |g| g.samples),
            flamegraph_before_ms: before / 1_000_000,
            flamegraph_after_ms: after / 1_000_000,
            files: names,
            flamegraphs,
        };
        // Metadata last: a reader that finds it finds a complete bundle (the directory rename
        // makes that true anyway).
        files.push((
            "metadata.json".to_owned(),
            serde_json::to_vec_pretty(&metadata)?,
        ));
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let path = self.store.write(&id, &refs)?;
        let removed = self
            .store
            .enforce_retention(self.config.max_incidents, self.config.max_bytes)?;
        if removed > 0 {
            info!("retention: removed {removed} old incident bundle(s)");
        }
        Ok(path)
    }

    /// The bundle's flame graphs of the samples from `incidents.before` the trigger to
    /// `incidents.after` it: first (`flamegraph.svg`) what the victim's CPU ran instead of it,
    /// then (`flamegraph-node.svg`) what every CPU ran. The `culprits`' stacks come first
    /// (leftmost) in both, and the subtitles name them.
    fn flame_graphs(&mut self, p: &Pending, culprits: &[u32]) -> Result<Vec<RenderedGraph>> {
        let from = p
            .trigger_ts_ns
            .saturating_sub(self.config.before.0.as_nanos() as u64);
        let to = p.trigger_ts_ns + self.config.after.0.as_nanos() as u64;
        let samples: Vec<&Sample> = self.recorder.between(from, to).collect();
        let victim_cpus: Vec<u32> = p.cpu.into_iter().collect();
        let stacks = fold_bundle(
            &samples,
            &victim_cpus,
            culprits,
            &self.kernel,
            &mut self.user,
            &mut process_label,
        );
        let title = match p.reason {
            Reason::Wait => format!(
                "schedlat incident: {} [{}] waited {} on CPU {}: {}",
                p.victim.comm,
                p.victim.tgid,
                human_ns(p.value_ns),
                p.cpu.unwrap_or(0),
                headline_cause(p),
            ),
            Reason::WindowP99 => format!(
                "schedlat incident: cgroup {} window p99 {} (worst: {})",
                p.victim.cgroup.as_deref().unwrap_or("-"),
                human_ns(p.value_ns),
                p.victim.comm
            ),
        };
        let first = if culprits.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = culprits
                .iter()
                .map(|&tgid| {
                    let comm = samples
                        .iter()
                        .find(|s| s.tgid == tgid)
                        .map_or("", |s| s.comm.as_str());
                    process_label(tgid, comm)
                })
                .collect();
            format!(" | first (left): {}", names.join(", "))
        };
        let mut graphs = Vec::with_capacity(stacks.len());
        for graph in stacks {
            let (svg_name, folded_name, title) = match graph.scope {
                FlameScope::VictimCpus => ("flamegraph.svg", "stacks.folded", title.clone()),
                FlameScope::Node => (
                    "flamegraph-node.svg",
                    "stacks-node.folded",
                    format!("{title} (every CPU)"),
                ),
            };
            let cpus = graph.cpus.as_ref().map_or_else(
                || "every CPU".to_owned(),
                |cpus| {
                    let cpus: Vec<String> = cpus.iter().map(u32::to_string).collect();
                    format!("CPU {}", cpus.join(","))
                },
            );
            let subtitle = format!(
                "{} | {cpus}: {} samples from {:.1}s before to {:.1}s after the trigger | \
                 threshold {}{first}",
                rfc3339(p.unix_ns),
                graph.samples,
                self.config.before.0.as_secs_f64(),
                self.config.after.0.as_secs_f64(),
                human_ns(p.threshold_ns)
            );
            let svg = flamegraph_svg(&graph.folded, &title, &subtitle)?;
            let mut folded = graph.folded.join("\n");
            folded.push('\n');
            graphs.push(RenderedGraph {
                file: FlameGraphFile {
                    scope: graph.scope,
                    svg: svg_name.to_owned(),
                    folded: folded_name.to_owned(),
                    cpus: graph.cpus,
                    samples: graph.samples,
                    culprits: culprits.to_vec(),
                },
                svg,
                folded: folded.into_bytes(),
            });
        }
        Ok(graphs)
    }
}

/// A flame graph of a bundle, drawn.
struct RenderedGraph {
    file: FlameGraphFile,
    svg: Vec<u8>,
    folded: Vec<u8>,
}

/// One flame graph's folded stacks.
#[derive(Debug, PartialEq, Eq)]
struct FoldedGraph {
    scope: FlameScope,
    /// `None`: every CPU.
    cpus: Option<Vec<u32>>,
    samples: usize,
    folded: Vec<String>,
}

/// Folds the samples of a bundle's interval twice: those of the victim's CPUs (every CPU when
/// there are none), then those of every CPU.
fn fold_bundle(
    samples: &[&Sample],
    victim_cpus: &[u32],
    culprits: &[u32],
    kernel: &KernelSymbols,
    user: &mut UserSymbolizer,
    process_name: &mut dyn FnMut(u32, &str) -> String,
) -> [FoldedGraph; 2] {
    let on_victim_cpus: Vec<&Sample> = samples
        .iter()
        .copied()
        .filter(|s| victim_cpus.is_empty() || victim_cpus.contains(&s.cpu))
        .collect();
    [
        FoldedGraph {
            scope: FlameScope::VictimCpus,
            cpus: (!victim_cpus.is_empty()).then(|| victim_cpus.to_vec()),
            samples: on_victim_cpus.len(),
            folded: fold(
                on_victim_cpus.into_iter(),
                kernel,
                user,
                process_name,
                culprits,
            ),
        },
        FoldedGraph {
            scope: FlameScope::Node,
            cpus: None,
            samples: samples.len(),
            folded: fold(
                samples.iter().copied(),
                kernel,
                user,
                process_name,
                culprits,
            ),
        },
    ]
}

/// The last window's figures for the victim's cgroup and the node, in ns.
fn window_json(exported: &Exported, cgroup: Option<&str>) -> serde_json::Value {
    let q = |v: &Quantiles| json!({"p50_ns": v.p50, "p99_ns": v.p99, "max_ns": v.max});
    json!({
        "node": exported.window.node.as_ref().map(q),
        "cgroup": cgroup.and_then(|cg| exported.window.cgroups.get(cg)).map(q),
    })
}

/// What a wait incident's headline blames: the diagnosis (cause and main culprit with its
/// share), else the task that ran last.
fn headline_cause(p: &Pending) -> String {
    if p.reason == Reason::WindowP99 {
        return "its cgroup's run-queue latency over the last window".to_owned();
    }
    match &p.diagnosis {
        Some(d) => format!(
            "{} ({}; culprit {})",
            d.verdict,
            d.cause.name(),
            d.culprit_label()
        ),
        None => format!(
            "behind {} (last task on the CPU; not diagnosed)",
            p.preemptor.as_ref().map_or("-", |t| t.comm.as_str())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu: u32, tgid: u32, kernel: &[u64]) -> Sample {
        Sample {
            ts_ns: 1,
            cpu,
            tid: tgid,
            tgid,
            comm: format!("c{tgid}"),
            kernel: kernel.to_vec(),
            user: vec![],
            nr_running: 0,
            queue: vec![],
            nr_queued: 0,
        }
    }

    #[test]
    fn the_main_flame_graph_holds_the_victims_cpu_only() {
        let kernel =
            KernelSymbols::parse("ffffffff81000000 T hog_work\nffffffff81000100 T do_idle\n");
        let mut user = UserSymbolizer::default();
        let hog = 0xffff_ffff_8100_0010;
        let idle = 0xffff_ffff_8100_0110;
        let samples = [
            sample(0, 11, &[hog]),
            sample(0, 11, &[hog]),
            sample(0, 0, &[idle]),
            sample(1, 22, &[hog]),
            sample(1, 0, &[idle]),
            sample(2, 33, &[hog]),
        ];
        let refs: Vec<&Sample> = samples.iter().collect();
        let mut name = |tgid: u32, _: &str| format!("p{tgid}");
        let [victim, node] = fold_bundle(&refs, &[0], &[22], &kernel, &mut user, &mut name);
        assert_eq!(
            victim,
            FoldedGraph {
                scope: FlameScope::VictimCpus,
                cpus: Some(vec![0]),
                samples: 3,
                folded: vec!["[idle] 1".to_owned(), "p11;hog_work_[k] 2".to_owned()],
            }
        );
        assert_eq!(node.scope, FlameScope::Node);
        assert_eq!(node.cpus, None);
        assert_eq!(node.samples, 6);
        assert_eq!(
            node.folded,
            vec![
                "p22;hog_work_[k] 1",
                "[idle] 2",
                "p11;hog_work_[k] 2",
                "p33;hog_work_[k] 1"
            ],
            "every CPU, the culprit first"
        );

        // A trigger without a CPU (a window p99): the main graph is every CPU's.
        let [victim, _] = fold_bundle(&refs, &[], &[], &kernel, &mut user, &mut name);
        assert_eq!((victim.cpus, victim.samples), (None, 6));
    }

    #[test]
    fn metadata_lists_both_flame_graphs_and_reads_old_bundles() {
        let old = serde_json::json!({
            "id": "x", "schema_version": 1, "time": "t", "unix_ns": 0, "reason": "wait",
            "threshold_ns": 1, "value_ns": 2, "victim": {"tid": 1, "tgid": 1, "comm": "v"},
            "cpu": 0, "preemptor": null, "waker": null, "window": {}, "samples": 3,
            "flamegraph_before_ms": 10, "flamegraph_after_ms": 1,
            "files": ["flamegraph.svg", "stacks.folded", "metadata.json"]
        });
        let mut m: Metadata = serde_json::from_value(old).unwrap();
        assert!(m.flamegraphs.is_empty(), "a bundle of an older version");
        m.flamegraphs.push(FlameGraphFile {
            scope: FlameScope::VictimCpus,
            svg: "flamegraph.svg".to_owned(),
            folded: "stacks.folded".to_owned(),
            cpus: Some(vec![0]),
            samples: 3,
            culprits: vec![42],
        });
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json["flamegraphs"][0],
            serde_json::json!({"scope": "victim_cpus", "svg": "flamegraph.svg",
                "folded": "stacks.folded", "cpus": [0], "samples": 3, "culprits": [42]})
        );
        assert_eq!(json["samples"], 3, "the old fields stay");
    }
}
