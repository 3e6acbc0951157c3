//! `cargo xtask bench`: what schedlat costs the workloads it watches.
//!
//! The measure (shared DESIGN.md, "How cost is measured"): `perf bench sched pipe` pinned to
//! CPU 0, two context switches and two wakeups per operation, with nothing attached, with
//! libbpf-tools `runqlat`, and with `schedlat run` in its default configuration. Rounds are
//! interleaved (the order rotates each round) so drift on a shared machine hits every
//! configuration alike; the report gives medians, the added usecs/op of each tool and
//! schedlat's ratio to runqlat's. The tools' own CPU time during the bench is reported too:
//! work moved to user space is cost as well.
//!
//! usecs/op swings by 2x between single rounds on these machines, so the steadier figure is
//! the kernel's own accounting: with `kernel.bpf_stats_enabled=1` (set for the bench, restored
//! after), the run time of each tool's BPF programs over a bench divided by the context
//! switches in it (`ctxt` in /proc/stat) is its BPF time per context switch.

use std::{
    collections::HashSet,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

/// Where Debian's libbpf-tools installs runqlat.
const RUNQLAT: &str = "/usr/sbin/runqlat";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Baseline,
    Runqlat,
    Schedlat,
    /// `schedlat run` with `diagnosis = false`: what the diagnosis costs, in the same run.
    SchedlatNoDiagnosis,
}

impl Tool {
    const ALL: [Tool; 4] = [
        Tool::Baseline,
        Tool::Runqlat,
        Tool::Schedlat,
        Tool::SchedlatNoDiagnosis,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::Baseline => "nothing attached",
            Tool::Runqlat => "runqlat (libbpf-tools)",
            Tool::Schedlat => "schedlat run (defaults)",
            Tool::SchedlatNoDiagnosis => "schedlat run, no diagnosis",
        }
    }
}

/// One bench run: usecs/op and the attached tool's CPU seconds meanwhile.
struct Sample {
    usecs_per_op: f64,
    tool_cpu_s: f64,
    wall_s: f64,
    /// The tool's BPF program run time per context switch (ns), when the kernel counts it.
    bpf_ns_per_switch: Option<f64>,
}

pub struct BenchOptions {
    pub rounds: usize,
    pub loops: u32,
}

pub fn run(schedlat: &Path, options: &BenchOptions) -> Result<()> {
    ensure!(
        Path::new(RUNQLAT).exists(),
        "{RUNQLAT} missing (Debian package libbpf-tools; `cargo xtask setup` installs it)"
    );
    let stats = BpfStats::enable();
    let mut samples: Vec<(usize, Tool, Sample)> = Vec::new();
    for round in 0..options.rounds {
        for i in 0..Tool::ALL.len() {
            let tool = Tool::ALL[(i + round) % Tool::ALL.len()];
            let sample = measure(tool, schedlat, options.loops)
                .with_context(|| format!("round {}: {}", round + 1, tool.name()))?;
            eprintln!(
                "xtask: bench round {}/{}: {:<26} {:>7.3} usecs/op  (tool CPU {:.2}s in {:.2}s{})",
                round + 1,
                options.rounds,
                tool.name(),
                sample.usecs_per_op,
                sample.tool_cpu_s,
                sample.wall_s,
                sample
                    .bpf_ns_per_switch
                    .map_or(String::new(), |ns| format!(", BPF {ns:.0} ns/switch"))
            );
            samples.push((round, tool, sample));
        }
    }
    drop(stats);
    report(&samples, options);
    Ok(())
}

/// Turns `kernel.bpf_stats_enabled` on for the bench and restores it on drop.
struct BpfStats {
    previous: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Self {
        let previous = std::fs::read_to_string(BPF_STATS).ok();
        if let Err(e) = std::fs::write(BPF_STATS, "1") {
            eprintln!("xtask: cannot enable {BPF_STATS} ({e}): no BPF time per switch");
        }
        Self { previous }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            let _ = std::fs::write(BPF_STATS, previous.trim());
        }
    }
}

/// (id, `run_time_ns`, `run_cnt`) of every loaded BPF program.
fn programs() -> Result<Vec<(u64, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool prog show")?;
    let list: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bpftool prog show: not JSON")?;
    Ok(list
        .as_array()
        .map(|progs| {
            progs
                .iter()
                .filter_map(|p| {
                    Some((
                        p["id"].as_u64()?,
                        p["run_time_ns"].as_u64().unwrap_or(0),
                        p["run_cnt"].as_u64().unwrap_or(0),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Ids of the BPF programs a process holds file descriptors of (`prog_id` in its fdinfo).
fn held_programs(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// Total run time (ns) of the given programs.
fn run_time_ns(ids: &HashSet<u64>) -> Result<u64> {
    Ok(programs()?
        .iter()
        .filter(|(id, _, _)| ids.contains(id))
        .map(|&(_, ns, _)| ns)
        .sum())
}

/// Context switches on the machine since boot (`ctxt` in /proc/stat).
fn context_switches() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .and_then(|v| v.trim().parse().ok())
        .context("no ctxt line in /proc/stat")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

fn report(samples: &[(usize, Tool, Sample)], options: &BenchOptions) {
    let of = |tool: Tool, f: fn(&Sample) -> f64| -> Vec<f64> {
        samples
            .iter()
            .filter(|(_, t, _)| *t == tool)
            .map(|(_, _, s)| f(s))
            .collect()
    };
    // Paired by round: each tool's added cost against the baseline of the same round, so slow
    // drift of the machine cancels out.
    let added_in_round = |tool: Tool| -> Vec<f64> {
        (0..options.rounds)
            .filter_map(|round| {
                let get = |t: Tool| {
                    samples
                        .iter()
                        .find(|(r, tt, _)| *r == round && *tt == t)
                        .map(|(_, _, s)| s.usecs_per_op)
                };
                Some(get(tool)? - get(Tool::Baseline)?)
            })
            .collect()
    };
    let runqlat_rounds = added_in_round(Tool::Runqlat);
    let schedlat_rounds = added_in_round(Tool::Schedlat);
    let ratios: Vec<f64> = schedlat_rounds
        .iter()
        .zip(&runqlat_rounds)
        .map(|(s, r)| s / r)
        .collect();
    println!(
        "\nperf bench sched pipe -l {} pinned to CPU 0, {} interleaved rounds (medians):",
        options.loops, options.rounds
    );
    println!(
        "  {:<26} {:>10} {:>12} {:>12} {:>13} {:>14}",
        "configuration", "usecs/op", "added/op", "vs runqlat", "tool CPU/op", "tool CPU/s"
    );
    let runqlat_added = median(runqlat_rounds.clone());
    for tool in Tool::ALL {
        let usecs = median(of(tool, |s| s.usecs_per_op));
        let added = if tool == Tool::Baseline {
            0.0
        } else {
            median(added_in_round(tool))
        };
        let cpu_per_op_us = median(of(tool, |s| s.tool_cpu_s)) * 1e6 / f64::from(options.loops);
        let cpu_ms_per_s = median(of(tool, |s| s.tool_cpu_s / s.wall_s)) * 1e3;
        let ratio = if tool == Tool::Baseline {
            "-".to_owned()
        } else {
            format!("{:.2}x", added / runqlat_added)
        };
        println!(
            "  {:<26} {:>10.3} {:>+12.3} {:>12} {:>10.3} us {:>9.1} ms",
            tool.name(),
            usecs,
            added,
            ratio,
            cpu_per_op_us,
            cpu_ms_per_s
        );
    }
    report_bpf(samples);
    let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "\nschedlat's added cost / runqlat's: {:.2}x (median of per-round ratios {:.2}x; rounds: {}). \
         Target: BPF run time per switch at most 0.30x of runqlat's.\nadded/op is the median over rounds of (tool - baseline of the \
         same round); tool CPU/op is the attached tool's own user+system time per bench op, tool CPU/s \
         the same per second of bench (10 ms ticks).",
        median(schedlat_rounds) / runqlat_added,
        median(ratios),
        per_round.join(" ")
    );
}

/// The steady figure: each tool's BPF run time per context switch.
fn report_bpf(samples: &[(usize, Tool, Sample)]) {
    let bpf = |tool: Tool| -> Vec<f64> {
        samples
            .iter()
            .filter(|(_, t, _)| *t == tool)
            .filter_map(|(_, _, s)| s.bpf_ns_per_switch)
            .collect()
    };
    let (runqlat_bpf, schedlat_bpf) = (bpf(Tool::Runqlat), bpf(Tool::Schedlat));
    let plain_bpf = bpf(Tool::SchedlatNoDiagnosis);
    if !runqlat_bpf.is_empty() && !schedlat_bpf.is_empty() {
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.0}..{hi:.0}")
        };
        let (r, s) = (median(runqlat_bpf.clone()), median(schedlat_bpf.clone()));
        println!(
            "
BPF run time per context switch (kernel.bpf_stats_enabled, medians over rounds):\n  \
             runqlat {r:.0} ns (rounds {}), schedlat {s:.0} ns (rounds {}): schedlat/runqlat \
             {:.2}x",
            spread(&runqlat_bpf),
            spread(&schedlat_bpf),
            s / r
        );
        if !plain_bpf.is_empty() {
            let p = median(plain_bpf.clone());
            println!(
                "  schedlat without diagnosis {p:.0} ns (rounds {}): {:.2}x; the diagnosis adds \
                 {:.0} ns per switch",
                spread(&plain_bpf),
                p / r,
                s - p
            );
        }
    }
}

fn measure(tool: Tool, schedlat: &Path, loops: u32) -> Result<Sample> {
    let mut child = match tool {
        Tool::Baseline => None,
        Tool::Runqlat => Some(start_attached(Command::new(RUNQLAT).args(["60", "1"]))?),
        Tool::Schedlat => Some(start_attached(
            Command::new(schedlat)
                .args(["run", "--listen", "127.0.0.1:0"])
                .env("RUST_LOG", "warn"),
        )?),
        Tool::SchedlatNoDiagnosis => {
            let config = std::env::temp_dir().join("schedlat-bench-no-diagnosis.toml");
            std::fs::write(&config, "diagnosis = false\n")?;
            Some(start_attached(
                Command::new(schedlat)
                    .args(["run", "--listen", "127.0.0.1:0", "--config"])
                    .arg(&config)
                    .env("RUST_LOG", "warn"),
            )?)
        }
    };
    // The tool's programs: those it holds file descriptors of (not whatever else was loaded
    // meanwhile, e.g. by a test running beside the bench).
    let tool_programs: HashSet<u64> = child
        .as_ref()
        .map(|c| held_programs(c.id()))
        .unwrap_or_default();
    let bpf_before = run_time_ns(&tool_programs)?;
    let switches_before = context_switches()?;
    let cpu_before = child.as_ref().map_or(Ok(0.0), |c| cpu_seconds(c.id()))?;
    let started = Instant::now();
    let result = perf_bench(loops);
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_after = child.as_ref().map_or(Ok(0.0), |c| cpu_seconds(c.id()));
    let switches = context_switches()?.saturating_sub(switches_before);
    let bpf_ns = run_time_ns(&tool_programs)?.saturating_sub(bpf_before);
    let bpf_ns_per_switch = (tool != Tool::Baseline && bpf_ns > 0 && switches > 0)
        .then(|| bpf_ns as f64 / switches as f64);
    if let Some(child) = child.as_mut() {
        stop(child);
    }
    Ok(Sample {
        usecs_per_op: result?,
        tool_cpu_s: cpu_after? - cpu_before,
        wall_s,
        bpf_ns_per_switch,
    })
}

/// Starts a tool and waits until its programs are attached (the tracing link count grows).
fn start_attached(cmd: &mut Command) -> Result<Child> {
    let before = tracing_links()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{cmd:?} exited early with {status}");
        }
        if tracing_links()? >= before + 2 {
            // Let it finish attaching everything and settle.
            sleep(Duration::from_millis(500));
            return Ok(child);
        }
        if Instant::now() > deadline {
            stop(&mut child);
            bail!("{cmd:?} attached nothing within 20 s");
        }
        sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    // SIGINT, as a person stopping the tool would; both tools detach on it.
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tracing_links() -> Result<usize> {
    let out = Command::new("bpftool")
        .args(["link", "show"])
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(": tracing") || l.contains(": raw_tracepoint"))
        .count())
}

/// utime + stime of a process, in seconds (`USER_HZ` is 100 on Linux).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

fn perf_bench(loops: u32) -> Result<f64> {
    let out = Command::new("taskset")
        .args(["-c", "0", "perf", "bench", "sched", "pipe", "-l"])
        .arg(loops.to_string())
        .output()
        .context("running perf bench (Debian package linux-perf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "perf bench failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_usecs_per_op(&text).with_context(|| format!("no usecs/op in perf output:\n{text}"))
}

fn parse_usecs_per_op(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.contains("usecs/op"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::{median, parse_usecs_per_op};

    #[test]
    fn parses_perf_bench_output() {
        let out = "# Running 'sched/pipe' benchmark:\n# Executed 100000 pipe operations \
                   between two processes\n\n     Total time: 0.629 [sec]\n\n       6.290720 \
                   usecs/op\n         158964 ops/sec\n";
        assert_eq!(parse_usecs_per_op(out), Some(6.290_72));
        assert_eq!(parse_usecs_per_op("nothing"), None);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(vec![4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
    }
}
