//! The flight recorder's user side: the last seconds of CPU samples, folded into flame graphs.
//!
//! Folded stacks are the flamegraph.pl/speedscope format, one line per distinct stack:
//! `process;user frames (outermost first);kernel frames_[k] count`. The process name is the root
//! frame so each process is one tower; kernel frames carry `_[k]` as flamegraph.pl annotates
//! them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use agent_common::CpuSample;

use crate::{
    host::names,
    kernel::events::comm_str,
    profile::symbolize::{KernelSymbols, UserSymbolizer},
};

/// One sample, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub ts_ns: u64,
    pub cpu: u32,
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Innermost first, as the kernel returns them.
    pub kernel: Vec<u64>,
    pub user: Vec<u64>,
    /// `rq->nr_running` at the sample (0 when the run queue could not be read).
    pub nr_running: u32,
    /// Fair-class tasks queued behind it (the first few), and how many there were.
    pub queue: Vec<Queued>,
    pub nr_queued: u32,
}

/// A task waiting on the sampled CPU's run queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Queued {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Waited so far, by the rq clock as of its last update (it may lag by up to a tick).
    pub wait_ns: u64,
}

impl Sample {
    #[must_use]
    pub fn from_raw(raw: &CpuSample) -> Self {
        let k = (raw.kernel_frames as usize).min(raw.kernel_stack.len());
        let u = (raw.user_frames as usize).min(raw.user_stack.len());
        Self {
            ts_ns: raw.ts_ns,
            cpu: raw.cpu,
            tid: raw.tid,
            tgid: raw.tgid,
            comm: comm_str(&raw.comm),
            kernel: raw.kernel_stack[..k].to_vec(),
            user: raw.user_stack[..u].to_vec(),
            nr_running: raw.nr_running,
            queue: raw
                .queue
                .iter()
                .take((raw.nr_queued as usize).min(raw.queue.len()))
                .map(|q| Queued {
                    tid: q.tid,
                    tgid: q.tgid,
                    comm: comm_str(&q.comm),
                    wait_ns: q.wait_ns,
                })
                .collect(),
            nr_queued: raw.nr_queued,
        }
    }
}

/// A time-bounded ring of samples.
pub struct FlightRecorder {
    samples: VecDeque<Sample>,
    keep_ns: u64,
    max_samples: usize,
    /// Samples dropped because `max_samples` was reached before they aged out.
    pub overflowed: u64,
}

impl FlightRecorder {
    #[must_use]
    pub fn new(keep_ns: u64, max_samples: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            keep_ns,
            max_samples,
            overflowed: 0,
        }
    }

    pub fn push(&mut self, sample: Sample) {
        let now = sample.ts_ns;
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_sub(s.ts_ns) > self.keep_ns)
        {
            self.samples.pop_front();
        }
        if self.samples.len() >= self.max_samples {
            self.samples.pop_front();
            self.overflowed += 1;
        }
        self.samples.push_back(sample);
    }

    /// Samples with `from_ns <= ts_ns <= to_ns`.
    pub fn between(&self, from_ns: u64, to_ns: u64) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.ts_ns >= from_ns && s.ts_ns <= to_ns)
    }

    /// The latest sample on `cpu` in `[from_ns, to_ns]` that shows `tid` queued.
    #[must_use]
    pub fn seen_queued(&self, cpu: u32, tid: u32, from_ns: u64, to_ns: u64) -> Option<&Sample> {
        self.between(from_ns, to_ns)
            .filter(|s| s.cpu == cpu && s.queue.iter().any(|q| q.tid == tid))
            .last()
    }

    /// The most recent sample of each CPU at or before `ts_ns`.
    #[must_use]
    pub fn last_per_cpu(&self, ts_ns: u64) -> BTreeMap<u32, &Sample> {
        let mut out = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.ts_ns <= ts_ns) {
            out.insert(s.cpu, s);
        }
        out
    }
}

/// Name of a process for a flame graph's root frame: its current name, else the sampled
/// thread's, with its pid.
#[must_use]
pub fn process_label(tgid: u32, comm: &str) -> String {
    let name = crate::host::procinfo::process_comm(tgid).unwrap_or_else(|| comm.to_owned());
    format!("{name} [{tgid}]")
}

/// The root frame of every sample of an idle CPU (the idle task, pid 0). Its kernel stack (the
/// idle loop) says nothing about what kept a task waiting, so there is none under it.
pub const IDLE_FRAME: &str = "[idle]";

/// Folds samples into `stack count` lines. `process_name` names the root frame (once per
/// process).
///
/// The stacks of the `culprits` (tgids, most important first) come first, in that order, and
/// the rest after them; within each process the stacks are sorted frame by frame, so stacks
/// that share a prefix are adjacent (what [`flamegraph_svg`] needs to merge them). Zero
/// addresses and user addresses that are not code are not frames (see `symbolize`).
pub fn fold<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    kernel: &KernelSymbols,
    user: &mut UserSymbolizer,
    process_name: &mut dyn FnMut(u32, &str) -> String,
    culprits: &[u32],
) -> Vec<String> {
    let samples: Vec<&Sample> = samples.collect();
    user.prepare(samples.iter().map(|s| (s.tgid, s.user.as_slice())));
    // Named once per process (`process_label` reads /proc).
    let mut roots: HashMap<u32, String> = HashMap::new();
    // (rank of the process, frames outermost first) -> samples
    let mut counts: BTreeMap<(usize, Vec<String>), u64> = BTreeMap::new();
    for s in samples {
        let rank = culprits
            .iter()
            .position(|&culprit| culprit == s.tgid)
            .unwrap_or(culprits.len());
        if s.tgid == 0 {
            *counts
                .entry((rank, vec![IDLE_FRAME.to_owned()]))
                .or_default() += 1;
            continue;
        }
        let mut frames: Vec<String> = Vec::with_capacity(1 + s.user.len() + s.kernel.len());
        frames.push(
            roots
                .entry(s.tgid)
                .or_insert_with(|| process_name(s.tgid, &s.comm))
                .clone(),
        );
        // Kernel threads have no user stack.
        frames.extend(user.frames(s.tgid, &s.user).into_iter().rev());
        frames.extend(
            s.kernel
                .iter()
                .rev()
                .filter(|&&addr| addr != 0)
                .map(|&addr| format!("{}_[k]", kernel.frame(addr))),
        );
        // Symbol and module names come from files any user can write: escape them like
        // process names (those are escaped already, and escaping is idempotent).
        let frames = frames
            .iter()
            .map(|f| names::escape(f).replace(';', ":").replace(' ', "_"))
            .collect();
        *counts.entry((rank, frames)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((_, frames), n)| format!("{} {n}", frames.join(";")))
        .collect()
}

/// An inferno SVG of folded lines in the order [`fold`] gives them (left to right).
pub fn flamegraph_svg(folded: &[String], title: &str, subtitle: &str) -> anyhow::Result<Vec<u8>> {
    let mut options = inferno::flamegraph::Options::default();
    title.clone_into(&mut options.title);
    options.subtitle = Some(subtitle.to_owned());
    "samples".clone_into(&mut options.count_name);
    // A flame graph sorts its towers by name; the culprits go first instead. inferno's flame
    // chart mode keeps the input order (it reverses the lines, to put the earliest sample on
    // the left) and still merges adjacent stacks that share a prefix: with `fold`'s grouping
    // the result is a flame graph in our order.
    options.flame_chart = true;
    let mut svg = Vec::new();
    if folded.is_empty() {
        // inferno refuses empty input; an explicit empty graph says what happened.
        let empty = ["[no CPU samples in this interval] 1".to_owned()];
        inferno::flamegraph::from_lines(&mut options, empty.iter().map(String::as_str), &mut svg)?;
    } else {
        inferno::flamegraph::from_lines(
            &mut options,
            folded.iter().rev().map(String::as_str),
            &mut svg,
        )?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts_ns: u64, cpu: u32, tgid: u32) -> Sample {
        Sample {
            ts_ns,
            cpu,
            tid: tgid,
            tgid,
            comm: format!("c{tgid}"),
            kernel: vec![],
            user: vec![],
            nr_running: 0,
            queue: vec![],
            nr_queued: 0,
        }
    }

    #[test]
    fn keeps_only_the_window_and_the_bound() {
        let mut r = FlightRecorder::new(10, 3);
        for ts in [0, 5, 11, 12] {
            r.push(sample(ts, 0, 1));
        }
        assert_eq!(r.samples.len(), 3, "ts 0 aged out");
        r.push(sample(13, 1, 2));
        assert_eq!(r.samples.len(), 3);
        assert_eq!(r.overflowed, 1);
        assert_eq!(r.between(11, 12).count(), 2);
        let last = r.last_per_cpu(100);
        assert_eq!(last[&0].ts_ns, 12);
        assert_eq!(last[&1].tgid, 2);
    }

    #[test]
    fn folds_identical_stacks_with_the_process_as_root() {
        let kernel = KernelSymbols::parse("ffffffff81000000 T schedule\n");
        let mut user = UserSymbolizer::default();
        let mut s1 = sample(1, 0, 66);
        s1.kernel = vec![0xffff_ffff_8100_0010];
        let s2 = s1.clone();
        let s3 = sample(2, 0, 77);
        let folded = fold(
            [s1, s2, s3].iter(),
            &kernel,
            &mut user,
            &mut |tgid, _| format!("proc {tgid}"),
            &[],
        );
        assert_eq!(folded, vec!["proc_66;schedule_[k] 2", "proc_77 1"]);
        let svg = flamegraph_svg(&folded, "t", "s").unwrap();
        // inferno colours `_[k]` frames as kernel ones and drops the suffix from the label.
        assert!(String::from_utf8_lossy(&svg).contains(">schedule ("));
    }

    #[test]
    fn an_idle_cpu_is_one_frame_without_its_kernel_stack() {
        let kernel =
            KernelSymbols::parse("ffffffff81000000 T do_idle\nffffffff81000100 T default_idle\n");
        let mut user = UserSymbolizer::default();
        let mut idle = sample(1, 0, 0);
        idle.kernel = vec![0xffff_ffff_8100_0110, 0xffff_ffff_8100_0010];
        let mut other_cpu_idle = sample(2, 1, 0);
        other_cpu_idle.kernel = vec![0xffff_ffff_8100_0010];
        let folded = fold(
            [idle, other_cpu_idle, sample(3, 0, 0)].iter(),
            &kernel,
            &mut user,
            &mut |tgid, _| format!("proc {tgid}"),
            &[],
        );
        assert_eq!(folded, vec![format!("{IDLE_FRAME} 3")]);
    }

    /// The root frame of each process in an SVG, with the x of its rectangle (percent).
    fn root_x(svg: &str, root: &str) -> Vec<f64> {
        let mut found = Vec::new();
        let mut rest = svg;
        let title = format!("<title>{root} (");
        while let Some(at) = rest.find(&title) {
            rest = &rest[at + title.len()..];
            let x = rest.find("x=\"").map(|i| &rest[i + 3..]).unwrap();
            found.push(
                x[..x.find('"').unwrap()]
                    .trim_end_matches('%')
                    .parse()
                    .unwrap(),
            );
        }
        found
    }

    #[test]
    fn the_culprits_come_first_and_their_stacks_still_merge() {
        let kernel = KernelSymbols::parse("ffffffff81000000 T schedule\nffffffff81000100 T read\n");
        let mut user = UserSymbolizer::default();
        let mut samples = Vec::new();
        for tgid in [10, 20, 30, 0, 10, 40] {
            let mut s = sample(1, 0, tgid);
            s.kernel = vec![0xffff_ffff_8100_0010];
            samples.push(s.clone());
            s.kernel = vec![0xffff_ffff_8100_0110];
            samples.push(s);
        }
        let culprits = [30, 20];
        let folded = fold(
            samples.iter(),
            &kernel,
            &mut user,
            &mut |tgid, _| format!("proc {tgid}"),
            &culprits,
        );
        assert_eq!(
            folded,
            vec![
                "proc_30;read_[k] 1",
                "proc_30;schedule_[k] 1",
                "proc_20;read_[k] 1",
                "proc_20;schedule_[k] 1",
                "[idle] 2",
                "proc_10;read_[k] 2",
                "proc_10;schedule_[k] 2",
                "proc_40;read_[k] 1",
                "proc_40;schedule_[k] 1",
            ]
        );
        let svg = String::from_utf8(flamegraph_svg(&folded, "t", "s").unwrap()).unwrap();
        let x: Vec<Vec<f64>> = ["proc_30", "proc_20", "[idle]", "proc_10", "proc_40"]
            .iter()
            .map(|root| root_x(&svg, root))
            .collect();
        assert!(
            x.iter().all(|boxes| boxes.len() == 1),
            "one box per process, its two stacks merged under it: {x:?}"
        );
        assert!(x[0][0] < 1.0, "the first culprit is leftmost: {x:?}");
        assert!(
            x.windows(2).all(|pair| pair[0][0] < pair[1][0]),
            "left to right in fold's order: {x:?}"
        );
    }

    #[test]
    fn no_frame_is_a_zero_or_an_address_outside_code() {
        #[inline(never)]
        fn fold_test_marker_function() -> u64 {
            std::hint::black_box(7)
        }
        let code = fold_test_marker_function as *const () as u64;
        let heap = Box::new(0u64);
        let data = std::ptr::from_ref(heap.as_ref()) as u64;
        let kernel = KernelSymbols::parse("ffffffff81000000 T schedule\n");
        let mut user = UserSymbolizer::default();
        let mut s = sample(1, 0, std::process::id());
        // Innermost first: the function, a junk word, data, then the zeros that end the chain.
        s.user = vec![code, 0x10, data, 0, 0];
        s.kernel = vec![0xffff_ffff_8100_0010, 0];
        let folded = fold(
            [s].iter(),
            &kernel,
            &mut user,
            &mut |tgid, _| format!("me {tgid}"),
            &[],
        );
        assert_eq!(folded.len(), 1, "{folded:?}");
        let (stack, count) = folded[0].rsplit_once(' ').unwrap();
        assert_eq!(count, "1");
        let frames: Vec<&str> = stack.split(';').collect();
        assert_eq!(frames.len(), 3, "root, the function, schedule: {frames:?}");
        assert!(
            frames[1].ends_with("fold_test_marker_function"),
            "{frames:?}"
        );
        assert_eq!(frames[2], "schedule_[k]");
        assert!(
            !frames.iter().any(|f| f.starts_with("0x")),
            "no bare address: {frames:?}"
        );
    }

    #[test]
    fn odd_names_reach_the_flame_graph_escaped() {
        let kernel = KernelSymbols::parse("ffffffff81000000 T bad\x1bsym\n");
        let mut user = UserSymbolizer::default();
        let mut s = sample(1, 0, 5);
        s.kernel = vec![0xffff_ffff_8100_0010];
        let mut named = sample(1, 0, 88);
        named.comm = comm_str(&{
            let mut comm = [0u8; agent_common::TASK_COMM_LEN];
            comm[..9].copy_from_slice(b"bad\xff\x1b[31m");
            comm
        });
        let folded = fold(
            [s, named].iter(),
            &kernel,
            &mut user,
            &mut |tgid, comm| format!("{comm} [{tgid}]"),
            &[],
        );
        assert_eq!(
            folded,
            vec!["bad\\xff\\x1b[31m_[88] 1", "c5_[5];bad\\x1bsym_[k] 1"]
        );
        let svg = flamegraph_svg(&folded, "t", "s").unwrap();
        assert!(!svg.contains(&0x1b), "no raw ESC in the SVG");
        assert!(std::str::from_utf8(&svg).is_ok(), "the SVG is UTF-8");
    }
}
