//! The run-queue state at an incident: per CPU, what was running (the flight recorder's last
//! sample there) and which tasks are runnable with it (from /proc: state R and the CPU each last
//! ran on, with the kernel's run-delay and run-count totals), plus the node-wide pressure
//! files. The exact wait of the victim comes from the kernel event that triggered the incident.

use std::{collections::BTreeMap, fmt::Write as _, fs};

use serde::Serialize;

use crate::{events::human_ns, names, recorder::Sample};

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunnableTask {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Total run-queue wait of the thread so far (schedstat `run_delay`).
    pub run_delay_ns: u64,
    /// Times it got a CPU (schedstat `pcount`).
    pub run_count: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SampledTask {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    /// How long before the trigger the sample was taken.
    pub ms_before_trigger: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuState {
    pub cpu: u32,
    /// The most recent CPU sample on this CPU at or before the trigger.
    pub last_sampled: Option<SampledTask>,
    /// `rq->nr_running` at that sample.
    pub nr_running: u32,
    /// The fair-class tasks queued behind it at that sample, with how long each had waited.
    pub queued: Vec<crate::recorder::Queued>,
    /// Tasks in state R whose last CPU is this one, from /proc at the trigger (the running one
    /// included).
    pub runnable: Vec<RunnableTask>,
}

/// The victim seen waiting by the flight recorder during its wait.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VictimQueued {
    pub cpu: u32,
    pub ms_before_trigger: f64,
    /// What was running on the CPU then.
    pub running: SampledTask,
    /// How long the victim had waited by then.
    pub waited_so_far_ns: u64,
    /// Everything queued on the CPU then, the victim included.
    pub queue: Vec<crate::recorder::Queued>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// The victim in a run queue during its wait, when a CPU sample caught it there.
    pub victim_queued: Option<VictimQueued>,
    pub cpus: Vec<CpuState>,
    pub loadavg: Option<String>,
    pub pressure_cpu: Option<String>,
    pub schedstat: Option<String>,
}

/// (state, processor) from a `/proc/.../stat` text.
#[must_use]
pub fn stat_state_cpu(stat: &str) -> Option<(char, u32)> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field 3 is the state; field 39 the CPU it last ran on.
    let state = fields.first()?.chars().next()?;
    let cpu = fields.get(36)?.parse().ok()?;
    Some((state, cpu))
}

/// Runnable tasks of the whole machine, by CPU.
#[must_use]
pub fn runnable_tasks() -> BTreeMap<u32, Vec<RunnableTask>> {
    let mut out: BTreeMap<u32, Vec<RunnableTask>> = BTreeMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(tgid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // Read as bytes: the name inside `stat` need not be UTF-8.
            let Some((state, cpu)) = fs::read(t.path().join("stat"))
                .ok()
                .and_then(|s| stat_state_cpu(&String::from_utf8_lossy(&s)))
            else {
                continue;
            };
            if state != 'R' {
                continue;
            }
            let comm = fs::read(t.path().join("comm"))
                .map(|c| names::from_comm_file(&c))
                .unwrap_or_default();
            let sched: Vec<u64> = fs::read_to_string(t.path().join("schedstat"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            out.entry(cpu).or_default().push(RunnableTask {
                tid,
                tgid,
                comm,
                run_delay_ns: sched.get(1).copied().unwrap_or(0),
                run_count: sched.get(2).copied().unwrap_or(0),
            });
        }
    }
    out
}

fn sampled(s: &Sample, trigger_ts_ns: u64) -> SampledTask {
    SampledTask {
        tid: s.tid,
        tgid: s.tgid,
        comm: if s.tgid == 0 {
            "[idle]".to_owned()
        } else {
            s.comm.clone()
        },
        ms_before_trigger: trigger_ts_ns.saturating_sub(s.ts_ns) as f64 / 1e6,
    }
}

/// The victim as a CPU sample saw it queued (see `FlightRecorder::seen_queued`).
#[must_use]
pub fn victim_queued(sample: &Sample, victim_tid: u32, trigger_ts_ns: u64) -> VictimQueued {
    VictimQueued {
        cpu: sample.cpu,
        ms_before_trigger: trigger_ts_ns.saturating_sub(sample.ts_ns) as f64 / 1e6,
        running: sampled(sample, trigger_ts_ns),
        waited_so_far_ns: sample
            .queue
            .iter()
            .find(|q| q.tid == victim_tid)
            .map_or(0, |q| q.wait_ns),
        queue: sample.queue.clone(),
    }
}

/// Takes the snapshot: /proc now, samples from the recorder up to `trigger_ts_ns`.
#[must_use]
pub fn take(
    last_samples: &BTreeMap<u32, &Sample>,
    trigger_ts_ns: u64,
    cpus: u32,
    victim: Option<VictimQueued>,
) -> Snapshot {
    let mut runnable = runnable_tasks();
    let read = |path: &str| fs::read_to_string(path).ok();
    Snapshot {
        victim_queued: victim,
        cpus: (0..cpus)
            .map(|cpu| CpuState {
                cpu,
                last_sampled: last_samples.get(&cpu).map(|s| sampled(s, trigger_ts_ns)),
                nr_running: last_samples.get(&cpu).map_or(0, |s| s.nr_running),
                queued: last_samples
                    .get(&cpu)
                    .map(|s| s.queue.clone())
                    .unwrap_or_default(),
                runnable: runnable.remove(&cpu).unwrap_or_default(),
            })
            .collect(),
        loadavg: read("/proc/loadavg"),
        pressure_cpu: read("/proc/pressure/cpu"),
        schedstat: read("/proc/schedstat"),
    }
}

fn render_queue(out: &mut String, queue: &[crate::recorder::Queued]) {
    for q in queue {
        let _ = writeln!(
            out,
            "    queued {:>7} {:<16} pid {:<7} waiting {}",
            q.tid,
            q.comm,
            q.tgid,
            human_ns(q.wait_ns)
        );
    }
}

/// A person's view of the snapshot.
#[must_use]
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    if let Some(v) = &snapshot.victim_queued {
        let _ = writeln!(
            out,
            "victim seen queued on CPU {} {:.1} ms before the trigger, {} waited so far, behind \
             {}/{} running:",
            v.cpu,
            v.ms_before_trigger,
            human_ns(v.waited_so_far_ns),
            v.running.tid,
            v.running.comm
        );
        render_queue(&mut out, &v.queue);
        out.push('\n');
    }
    for cpu in &snapshot.cpus {
        let _ = write!(out, "CPU {}:", cpu.cpu);
        match &cpu.last_sampled {
            Some(s) => {
                let _ = writeln!(
                    out,
                    " running {}/{} ({:.1} ms before the trigger, nr_running {}), {} runnable now",
                    s.tid,
                    s.comm,
                    s.ms_before_trigger,
                    cpu.nr_running,
                    cpu.runnable.len()
                );
                render_queue(&mut out, &cpu.queued);
            }
            None => {
                let _ = writeln!(out, " no sample, {} runnable", cpu.runnable.len());
            }
        }
        for t in &cpu.runnable {
            let _ = writeln!(
                out,
                "    R {:>7} {:<16} pid {:<7} run-queue wait so far {} over {} runs",
                t.tid,
                t.comm,
                t.tgid,
                human_ns(t.run_delay_ns),
                t.run_count
            );
        }
    }
    for (name, value) in [
        ("loadavg", &snapshot.loadavg),
        ("pressure/cpu", &snapshot.pressure_cpu),
    ] {
        if let Some(v) = value {
            let _ = write!(out, "\n{name}:\n{v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_and_cpu() {
        let stat = "42 (my (odd) name) R 1 42 42 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 1 0 \
                    123 4096 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_state_cpu(stat), Some(('R', 1)));
        assert_eq!(stat_state_cpu("garbage"), None);
    }

    #[test]
    fn this_machine_has_a_runnable_task_and_it_renders() {
        // This test thread is running, hence runnable, on some CPU.
        let all = runnable_tasks();
        let me = crate::procinfo::process_exists(std::process::id());
        assert!(me);
        assert!(
            all.values().flatten().any(|t| t.tgid == std::process::id()),
            "the test process should be runnable: {all:?}"
        );
        let snap = take(&BTreeMap::new(), 0, 1, None);
        let text = render(&snap);
        assert!(text.starts_with("CPU 0:"), "{text}");
    }

    #[test]
    fn a_runnable_thread_with_an_odd_name_is_listed_escaped() {
        crate::procinfo::tests::with_odd_thread_name(|tid| {
            let all = runnable_tasks();
            let me = all.values().flatten().find(|t| t.tid == tid);
            assert_eq!(
                me.map(|t| t.comm.as_str()),
                Some("odd\\xff\\x0a\\x1b[1m"),
                "this running thread, by its escaped name: {all:?}"
            );
        });
    }
}
