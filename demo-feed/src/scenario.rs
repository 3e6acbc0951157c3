//! The demo scenario: the feed service under steady open-loop load and `schedlat run`
//! watching, through three stories of a slow feed an SRE meets, each followed by a recovery: a
//! noisy neighbour in another cgroup, a CPU quota below the feed's demand (the Kubernetes CPU
//! limit), and the feed pinned to one busy CPU while another sits idle. Then what each side
//! saw per phase, schedlat's diagnosis of the feed's long waits, and a self-contained HTML
//! report.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use schedlat_test_support::{
    Bucket, buckets, cgroup_v1_mount, cgroup2_mount, histogram_quantile, increase, parse_metrics,
    sum,
};
use serde::Serialize;

use crate::report;

pub struct Options {
    pub schedlat: PathBuf,
    pub phase: Duration,
    pub rate: u32,
    pub out: PathBuf,
}

/// Everything the scenario measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub phases: Vec<Phase>,
    pub timeline: Vec<Point>,
    pub cgroups: bool,
    pub feed_cgroup: String,
    pub noisy_cgroup: String,
    pub metrics_url: String,
    pub incident_dir: String,
    pub report: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// What the scenario did in this phase (set up by the scenario, not measured).
    pub setup: String,
    pub from_s: f64,
    pub to_s: f64,
    pub requests: usize,
    pub errors: u64,
    pub feed_p50_ms: f64,
    pub feed_p99_ms: f64,
    pub runqueue_waits: u64,
    pub runqueue_p50_ms: f64,
    pub runqueue_p99_ms: f64,
    pub top_preemptors: Vec<Preemptor>,
    /// schedlat's diagnosis of the feed's long waits in this phase (from its metrics).
    pub diagnosis: Option<Diagnosis>,
    pub incidents: Vec<Incident>,
}

/// The dominant cause of the feed's long waits in a phase, by wait time
/// (`schedlat_wait_cause_seconds_total`), and who held the CPU during them
/// (`schedlat_preemptor_wait_seconds_total`, by occupancy).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diagnosis {
    pub cause: String,
    /// Share of the feed's long-wait time with that cause, 0..1.
    pub cause_share: f64,
    pub long_waits: u64,
    pub culprits: Vec<Preemptor>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Preemptor {
    pub cgroup: String,
    pub process: String,
    pub wait_ms: f64,
    pub share: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Incident {
    pub id: String,
    pub path: String,
    pub victim: String,
    pub wait_ms: f64,
    pub preemptor: String,
    /// The diagnosis' cause and one-sentence verdict, from the bundle's metadata.
    pub cause: String,
    pub verdict: String,
    /// The victim CPU's flame graph (path).
    pub flamegraph: String,
    pub hog_in_flamegraph: bool,
    /// Share of the flame graph's non-idle samples in `noisy_neighbour_burn`.
    pub noisy_share_of_busy_samples: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    pub t: f64,
    pub feed_p99_ms: Option<f64>,
    pub runqueue_p99_ms: Option<f64>,
}

/// The noisy neighbour's function, looked for in incident flame graphs.
pub const NOISY_FUNCTION: &str = "noisy_neighbour_burn";
const FEED_PROCESS: &str = "demo-feed";

/// Children killed on drop, so Ctrl-C or an error leaves nothing running.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            // SIGINT first: schedlat detaches cleanly on it.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("demo: {name} did not stop on SIGINT; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.starts_with("HTTP/1.1 200")
        .then(|| text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
        .flatten()
}

fn wait_healthy(addr: SocketAddr, what: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(addr, "/healthz").is_some() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before becoming healthy");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} not healthy on {addr} within 30 s")
}

/// Creates `schedlat-demo/<name>` cgroups; `None` when the machine does not allow it.
fn make_cgroups(names: &[&str]) -> Option<Vec<PathBuf>> {
    let base = cgroup2_mount()?.join("schedlat-demo");
    names
        .iter()
        .map(|n| {
            let dir = base.join(n);
            std::fs::create_dir_all(&dir).ok()?;
            Some(dir)
        })
        .collect()
}

fn join_cgroup(dir: Option<&PathBuf>, pid: u32) {
    if let Some(dir) = dir
        && let Err(e) = std::fs::write(dir.join("cgroup.procs"), pid.to_string())
    {
        eprintln!("demo: could not move {pid} into {}: {e}", dir.display());
    }
}

/// A child pinned to `cpus` (via its affinity, set before exec).
fn spawn_pinned(cmd: &mut Command, cpus: Vec<usize>) -> std::io::Result<Child> {
    // SAFETY: pre_exec runs in the forked child; sched_setaffinity is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in &cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
            Ok(())
        });
    }
    cmd.spawn()
}

/// One scrape of schedlat's /metrics, reduced to the feed: its run-queue latency histogram
/// (cumulative, summed over its series) and its waits behind each preemptor.
#[derive(Clone, Debug, Default)]
struct Scrape {
    at: f64,
    /// Cumulative `le` buckets, upper bounds in seconds, `+Inf` included.
    buckets: Vec<Bucket>,
    count: u64,
    /// (preemptor cgroup, preemptor process) to seconds waited behind it.
    preemptors: BTreeMap<(String, String), f64>,
    /// cause to (long waits, seconds) of the feed's cgroup.
    causes: BTreeMap<String, (f64, f64)>,
}

/// The feed's part of a scrape; `None` (and a message) when the text is not valid exposition
/// format, so one bad scrape is skipped rather than read as an empty histogram.
fn parse_scrape(text: &str, at: f64, feed_cgroup: &str) -> Option<Scrape> {
    let samples = match parse_metrics(text) {
        Ok(samples) => samples,
        Err(e) => {
            eprintln!("demo: skipping schedlat's /metrics at {at:.1}s: {e}");
            return None;
        }
    };
    let feed = [("cgroup", feed_cgroup), ("process", FEED_PROCESS)];
    let mut preemptors = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.matches(
            "schedlat_preemptor_wait_seconds_total",
            &[("cgroup", feed_cgroup)],
        )
    }) {
        let key = (
            s.label("preemptor_cgroup").unwrap_or("-").to_owned(),
            s.label("preemptor").unwrap_or("-").to_owned(),
        );
        *preemptors.entry(key).or_default() += s.value;
    }
    let mut causes: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for s in &samples {
        let waits = s.matches(
            "schedlat_wait_cause_waits_total",
            &[("cgroup", feed_cgroup)],
        );
        let seconds = s.matches(
            "schedlat_wait_cause_seconds_total",
            &[("cgroup", feed_cgroup)],
        );
        if waits || seconds {
            let entry = causes
                .entry(s.label("cause").unwrap_or("-").to_owned())
                .or_default();
            if waits {
                entry.0 += s.value;
            } else {
                entry.1 += s.value;
            }
        }
    }
    Some(Scrape {
        at,
        buckets: buckets(&samples, "schedlat_runqueue_latency_seconds", &feed),
        count: sum(&samples, "schedlat_runqueue_latency_seconds_count", &feed) as u64,
        preemptors,
        causes,
    })
}

/// Quantile (ms) of the feed's waits between two scrapes, as Prometheus computes
/// `histogram_quantile(q, increase(..._bucket[...]))`: linear within the power-of-two bucket
/// holding the rank. `None` when there were no waits.
fn delta_quantile(from: &Scrape, to: &Scrape, q: f64) -> Option<f64> {
    let seconds = histogram_quantile(q, &increase(&from.buckets, &to.buckets));
    (!seconds.is_nan()).then_some(seconds * 1e3)
}

fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

/// One second of the load generator's output.
#[derive(Clone, Debug, Default, serde::Deserialize)]
struct LoadSecond {
    second: usize,
    errors: u64,
    latencies_us: Vec<u64>,
}

/// The phases: a baseline, then each story followed by a recovery.
const PHASES: [(&str, Story); 7] = [
    ("baseline", Story::Baseline),
    ("noisy neighbour", Story::NoisyNeighbour),
    ("recovery", Story::Recovery),
    ("cpu quota", Story::CpuQuota),
    ("recovery", Story::Recovery),
    ("bad pinning", Story::BadPinning),
    ("recovery", Story::Recovery),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Story {
    Baseline,
    NoisyNeighbour,
    CpuQuota,
    BadPinning,
    Recovery,
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Sets the CPU affinity of every thread of `pid` (threads it creates later inherit it).
fn pin_all_threads(pid: u32, cpus: &[usize]) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` is below the set's size (CPUs of this machine).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    for task in tasks.flatten() {
        if let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() {
            // SAFETY: a valid cpu_set_t of the size given; a tid that exited just fails.
            unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set) };
        }
    }
}

/// Where the feed's CPU quota is set: the cgroup v2 `cpu.max` of its cgroup where the cpu
/// controller is on v2, else a v1 cpu cgroup (`cpu.cfs_quota_us`) it is moved into.
struct CpuLimit {
    /// The cgroup directory; v1 when `cpu.cfs_quota_us` is the knob.
    dir: PathBuf,
    v1: bool,
    /// Created by the demo (removed at the end).
    created: bool,
}

impl CpuLimit {
    /// Puts `pid` under a limit it does not feel yet.
    fn new(pid: u32, feed_cgroup_v2: Option<&PathBuf>) -> Result<Self> {
        if let Some(dir) = feed_cgroup_v2 {
            // Enable the cpu controller down to the feed's cgroup, where that is possible.
            if let (Some(parent), Some(root)) = (dir.parent(), cgroup2_mount()) {
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu");
            }
            if dir.join("cpu.max").exists() {
                return Ok(Self {
                    dir: dir.clone(),
                    v1: false,
                    created: false,
                });
            }
        }
        let mount = cgroup_v1_mount("cpu")
            .context("no cpu controller on cgroup v2 here, and no v1 cpu hierarchy mounted")?;
        let dir = mount.join("schedlat-demo-feed");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving the feed into {}", dir.display()))?;
        Ok(Self {
            dir,
            v1: true,
            created: true,
        })
    }

    /// Limits to `quota_us` per `period_us`; `None`: no limit.
    fn set(&self, quota_us: Option<u64>, period_us: u64) -> Result<()> {
        let write = |file: &str, value: String| {
            std::fs::write(self.dir.join(file), &value)
                .with_context(|| format!("writing {value} to {}/{file}", self.dir.display()))
        };
        if self.v1 {
            write("cpu.cfs_period_us", period_us.to_string())?;
            write(
                "cpu.cfs_quota_us",
                quota_us.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
            )
        } else {
            write(
                "cpu.max",
                format!(
                    "{} {period_us}",
                    quota_us.map_or_else(|| "max".to_owned(), |q| q.to_string())
                ),
            )
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} ({})",
            self.dir.display(),
            if self.v1 {
                "cgroup v1 cpu.cfs_quota_us"
            } else {
                "cgroup v2 cpu.max"
            }
        )
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        let _ = self.set(None, 100_000);
        if self.created {
            // Empty once the feed has exited.
            for _ in 0..50 {
                if std::fs::remove_dir(&self.dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The feed's waits between two scrapes, by cause: the dominant one and the culprits.
fn diagnosis_between(a: &Scrape, b: &Scrape) -> Option<Diagnosis> {
    let delta: Vec<(String, f64, f64)> = b
        .causes
        .iter()
        .map(|(cause, (waits, secs))| {
            let (w0, s0) = a.causes.get(cause).copied().unwrap_or((0.0, 0.0));
            (cause.clone(), waits - w0, secs - s0)
        })
        .filter(|(_, w, s)| *w > 0.0 && *s > 0.0)
        .collect();
    let total: f64 = delta.iter().map(|d| d.2).sum();
    let (cause, _, secs) = delta.iter().max_by(|x, y| x.2.total_cmp(&y.2))?;
    Some(Diagnosis {
        cause: cause.clone(),
        cause_share: secs / total,
        long_waits: delta.iter().map(|d| d.1).sum::<f64>() as u64,
        culprits: top_preemptors(a, b),
    })
}

/// Who held the CPU during the feed's long waits between two scrapes (by occupancy), top 3.
fn top_preemptors(a: &Scrape, b: &Scrape) -> Vec<Preemptor> {
    let mut pre: Vec<(String, String, f64)> = b
        .preemptors
        .iter()
        .map(|((cg, p), v)| {
            let before = a
                .preemptors
                .get(&(cg.clone(), p.clone()))
                .copied()
                .unwrap_or(0.0);
            (cg.clone(), p.clone(), v - before)
        })
        .filter(|(_, _, v)| *v > 0.0)
        .collect();
    pre.sort_by(|x, y| y.2.total_cmp(&x.2));
    let sum: f64 = pre.iter().map(|p| p.2).sum();
    pre.into_iter()
        .take(3)
        .map(|(cgroup, process, v)| Preemptor {
            cgroup,
            process,
            wait_ms: v * 1e3,
            share: if sum > 0.0 { v / sum } else { 0.0 },
        })
        .collect()
}

/// What the running scenario holds: its children and the knobs it turned.
struct Stage<'a> {
    options: &'a Options,
    self_exe: PathBuf,
    children: Children,
    ncpus: usize,
    feed_cpu: usize,
    feed_pid: u32,
    /// The load generator, and the CPUs it runs on outside the pinning story.
    load_pid: u32,
    other_cpus: Vec<usize>,
    cgroups: Option<Vec<PathBuf>>,
    limit: Option<CpuLimit>,
    /// The feed's CPU ticks at the start of the baseline and its use then (CPUs).
    baseline_ticks: Option<u64>,
    baseline_cpus: f64,
}

impl Stage<'_> {
    fn cgroup(&self, i: usize) -> Option<&PathBuf> {
        self.cgroups.as_ref().map(|c| &c[i])
    }

    /// A CPU-bound process (`demo-feed noisy`) for one phase.
    fn spawn_burner(
        &mut self,
        name: &str,
        threads: usize,
        cpus: Vec<usize>,
        cgroup: usize,
    ) -> Result<u32> {
        let child = spawn_pinned(
            Command::new(&self.self_exe)
                .args(["noisy", "--name", name, "--threads", &threads.to_string()])
                .args([
                    "--duration",
                    &format!("{}ms", self.options.phase.as_millis()),
                ])
                .stdin(Stdio::null()),
            cpus,
        )
        .with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        join_cgroup(self.cgroup(cgroup), pid);
        self.children.0.push((name.to_owned(), child));
        Ok(pid)
    }

    /// Sets the phase up; a description of what it did.
    fn begin(&mut self, story: Story, t: f64, phase_s: f64) -> Result<String> {
        let all_cpus: Vec<usize> = (0..self.ncpus).collect();
        Ok(match story {
            Story::Baseline => {
                self.baseline_ticks = cpu_ticks(self.feed_pid);
                "the feed alone, on any CPU".to_owned()
            }
            Story::NoisyNeighbour => {
                if let (Some(before), Some(now)) = (self.baseline_ticks, cpu_ticks(self.feed_pid)) {
                    // SAFETY: sysconf without side effects.
                    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                    self.baseline_cpus = (now.saturating_sub(before)) as f64 / hz / t.max(1.0);
                }
                let threads = 2 * self.ncpus;
                let pid = self.spawn_burner("noisy-neighbour", threads, all_cpus, 2)?;
                format!(
                    "{threads} CPU-bound threads of another process (pid {pid}) in cgroup {} on \
                     every CPU",
                    cgroup_label(self.cgroup(2))
                )
            }
            Story::CpuQuota => {
                // Half of what the feed used in the baseline, in a 100 ms period.
                let period_us = 100_000;
                let quota_us =
                    ((self.baseline_cpus * 0.5 * period_us as f64) as u64).clamp(2_000, 50_000);
                let limit = CpuLimit::new(self.feed_pid, self.cgroup(0))?;
                limit.set(Some(quota_us), period_us)?;
                let text = format!(
                    "the feed's cgroup limited to {:.1} ms of CPU per {} ms ({}); it used {:.0}% \
                     of a CPU in the baseline",
                    quota_us as f64 / 1e3,
                    period_us / 1000,
                    limit.describe(),
                    self.baseline_cpus * 100.0
                );
                self.limit = Some(limit);
                text
            }
            Story::BadPinning => {
                pin_all_threads(self.feed_pid, &[self.feed_cpu]);
                // The load generator joins them, so the other CPUs really sit idle.
                pin_all_threads(self.load_pid, &[self.feed_cpu]);
                let pid = self.spawn_burner("batch-job", 2, vec![self.feed_cpu], 3)?;
                format!(
                    "the feed's threads pinned to CPU {} (taskset), where a pinned batch job \
                     (pid {pid}, cgroup {}) and the load generator run, while the other CPUs \
                     sit idle",
                    self.feed_cpu,
                    cgroup_label(self.cgroup(3))
                )
            }
            Story::Recovery => {
                if let Some(limit) = &self.limit {
                    limit.set(None, 100_000)?;
                }
                pin_all_threads(self.feed_pid, &all_cpus);
                pin_all_threads(self.load_pid, &self.other_cpus);
                let _ = phase_s;
                "back to the baseline: burners ended, quota lifted, pinning undone".to_owned()
            }
        })
    }
}

fn cgroup_label(dir: Option<&PathBuf>) -> String {
    dir.and_then(|d| d.file_name()).map_or_else(
        || "/".to_owned(),
        |n| format!("/schedlat-demo/{}", n.to_string_lossy()),
    )
}

#[expect(
    clippy::too_many_lines,
    reason = "the scenario reads top to bottom: start, phases, measure, report"
)]
pub fn run(options: &Options, stop: &AtomicBool) -> Result<Summary> {
    let ncpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // The stories need a CPU to share and another to leave idle.
    if ncpus < 2 {
        bail!("the demo needs at least 2 CPUs");
    }
    // The burners and the pinned feed use the last CPU; the load generator and schedlat stay
    // on the others, so the client does not distort what the server suffers.
    let feed_cpu = ncpus - 1;
    let other_cpus: Vec<usize> = (0..ncpus - 1).collect();
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let incident_dir = std::fs::canonicalize(&options.out)?.join("incidents");
    let cgroups = make_cgroups(&["feed", "load", "noisy", "batch"]);
    if cgroups.is_none() {
        eprintln!("demo: cgroup v2 not writable here; running without per-cgroup separation");
    }
    let label_of = |i: usize| cgroup_label(cgroups.as_ref().map(|c| &c[i]));
    let feed_cgroup = label_of(0);
    let noisy_cgroup = label_of(2);
    let self_exe = std::env::current_exe()?;

    // schedlat: its defaults, but 1 s windows so the timeline has a point per second, and
    // incidents for the feed only, with a short cooldown so each story can leave one.
    let config = options.out.join("schedlat-demo.toml");
    std::fs::write(
        &config,
        "[incidents]\nwatch_processes = [\"demo-feed\"]\ncooldown = \"5s\"\nmax_per_minute = 20\n\
         threshold = \"3ms\"\np99_threshold = \"0\"\n",
    )?;
    let schedlat_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut children = Children(Vec::new());
    let mut schedlat = spawn_pinned(
        Command::new(&options.schedlat)
            .args([
                "run",
                "--listen",
                &schedlat_addr.to_string(),
                "--window",
                "1s",
                "--config",
            ])
            .arg(&config)
            .arg("--incident-dir")
            .arg(&incident_dir)
            .env("RUST_LOG", "warn,schedlat::incident::capture=info")
            .stdin(Stdio::null()),
        other_cpus.clone(),
    )
    .context("starting schedlat run")?;
    wait_healthy(schedlat_addr, "schedlat run", &mut schedlat)?;
    children.0.push(("schedlat run".into(), schedlat));

    let feed_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut feed = Command::new(&self_exe)
        .args([
            "serve",
            "--listen",
            &feed_addr.to_string(),
            "--threads",
            "2",
        ])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the feed service")?;
    let feed_pid = feed.id();
    join_cgroup(cgroups.as_ref().map(|c| &c[0]), feed_pid);
    wait_healthy(feed_addr, "the feed service", &mut feed)?;
    children.0.push(("feed".into(), feed));

    let total = options.phase * PHASES.len() as u32;
    let mut load = spawn_pinned(
        Command::new(&self_exe)
            .args(["load", "--target", &feed_addr.to_string()])
            .args(["--rate", &options.rate.to_string()])
            .args(["--duration", &format!("{}ms", total.as_millis())])
            .stdout(Stdio::piped())
            .stdin(Stdio::null()),
        other_cpus.clone(),
    )
    .context("starting the load generator")?;
    let load_pid = load.id();
    join_cgroup(cgroups.as_ref().map(|c| &c[1]), load_pid);
    let load_out = load.stdout.take().context("load stdout")?;
    children.0.push(("load generator".into(), load));
    let seconds: Arc<Mutex<Vec<LoadSecond>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seconds);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(load_out).lines().map_while(Result::ok) {
            if let Ok(s) = serde_json::from_str::<LoadSecond>(&line) {
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(s);
            }
        }
    });

    eprintln!(
        "demo: feed (pid {feed_pid}) at {}/s open-loop; {} phases of {:?}: {}; schedlat \
         serving http://{schedlat_addr}/metrics",
        options.rate,
        PHASES.len(),
        options.phase,
        PHASES.map(|p| p.0).join(", ")
    );
    let mut stage = Stage {
        options,
        self_exe,
        children,
        ncpus,
        feed_cpu,
        feed_pid,
        load_pid,
        other_cpus: other_cpus.clone(),
        cgroups,
        limit: None,
        baseline_ticks: None,
        baseline_cpus: 0.0,
    };
    let start = Instant::now();
    let mut scrapes: Vec<Scrape> = Vec::new();
    let mut setups: Vec<String> = Vec::new();
    let phase_s = options.phase.as_secs_f64();
    while start.elapsed() < total + Duration::from_millis(1500) {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted; everything started was stopped");
        }
        let t = start.elapsed().as_secs_f64();
        let due = ((t / phase_s) as usize).min(PHASES.len() - 1);
        while setups.len() <= due {
            let (name, story) = PHASES[setups.len()];
            let setup = stage.begin(story, t, phase_s)?;
            eprintln!("demo: {t:5.1}s {name}: {setup}");
            setups.push(setup);
        }
        if let Some(text) = http_get(schedlat_addr, "/metrics") {
            scrapes.extend(parse_scrape(&text, t, &feed_cgroup));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // The last window closes within a second; one more scrape takes it in.
    std::thread::sleep(Duration::from_millis(1200));
    if let Some(text) = http_get(schedlat_addr, "/metrics") {
        scrapes.extend(parse_scrape(
            &text,
            start.elapsed().as_secs_f64(),
            &feed_cgroup,
        ));
    }
    let _ = reader.join();
    let load_seconds = std::mem::take(
        &mut *seconds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let cgroups_made = stage.cgroups.is_some();
    drop(stage);

    // Per phase: the load generator's view and schedlat's.
    let mut phases = Vec::new();
    let incidents = read_incidents(&incident_dir, start);
    for (i, (name, _)) in PHASES.iter().enumerate() {
        let (from, to) = (phase_s * i as f64, phase_s * (i + 1) as f64);
        let mut lat: Vec<u64> = Vec::new();
        let mut errors = 0;
        for s in &load_seconds {
            let t = s.second as f64;
            if t >= from && t < to {
                lat.extend(&s.latencies_us);
                errors += s.errors;
            }
        }
        lat.sort_unstable();
        // schedlat's windows close a moment after each second; scrapes inside the phase.
        let inside: Vec<&Scrape> = scrapes
            .iter()
            .filter(|s| s.at >= from + 1.0 && s.at <= to + 1.0)
            .collect();
        let (rq_waits, rq50, rq99, top, diagnosis) = match (inside.first(), inside.last()) {
            (Some(a), Some(b)) => (
                b.count.saturating_sub(a.count),
                delta_quantile(a, b, 0.5).unwrap_or(0.0),
                delta_quantile(a, b, 0.99).unwrap_or(0.0),
                top_preemptors(a, b),
                diagnosis_between(a, b),
            ),
            _ => (0, 0.0, 0.0, Vec::new(), None),
        };
        phases.push(Phase {
            name: (*name).to_owned(),
            setup: setups.get(i).cloned().unwrap_or_default(),
            from_s: from,
            to_s: to,
            requests: lat.len(),
            errors,
            feed_p50_ms: quantile_ms(&lat, 0.5),
            feed_p99_ms: quantile_ms(&lat, 0.99),
            runqueue_waits: rq_waits,
            runqueue_p50_ms: rq50,
            runqueue_p99_ms: rq99,
            top_preemptors: top,
            diagnosis,
            incidents: incidents
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(_, i)| i.clone())
                .collect(),
        });
    }
    let mut timeline = Vec::new();
    for s in &load_seconds {
        let mut lat = s.latencies_us.clone();
        lat.sort_unstable();
        timeline.push(Point {
            t: s.second as f64,
            feed_p99_ms: (!lat.is_empty()).then(|| quantile_ms(&lat, 0.99)),
            runqueue_p99_ms: None,
        });
    }
    for w in scrapes.windows(2) {
        let t = w[1].at.floor() - 1.0;
        if let Some(p) = timeline.iter_mut().find(|p| (p.t - t).abs() < 0.5) {
            p.runqueue_p99_ms = delta_quantile(&w[0], &w[1], 0.99);
        }
    }
    let report_path = options.out.join("report.html");
    let mut summary = Summary {
        phases,
        timeline,
        cgroups: cgroups_made,
        feed_cgroup,
        noisy_cgroup,
        metrics_url: format!("http://{schedlat_addr}/metrics"),
        incident_dir: incident_dir.display().to_string(),
        report: report_path.display().to_string(),
    };
    std::fs::write(&report_path, report::html(&summary))
        .with_context(|| format!("writing {}", report_path.display()))?;
    std::fs::write(
        options.out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    summary.report = report_path.display().to_string();
    Ok(summary)
}

/// Incidents in the directory, with their time relative to the scenario's start.
fn read_incidents(dir: &Path, start: Instant) -> Vec<(f64, Incident)> {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let start_unix = now_unix - start.elapsed().as_secs_f64();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Ok(text) = std::fs::read_to_string(path.join("metadata.json")) else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let t = m["unix_ns"].as_f64().unwrap_or(0.0) / 1e9 - start_unix;
        let folded = std::fs::read_to_string(path.join("stacks.folded")).unwrap_or_default();
        out.push((
            t,
            Incident {
                id: m["id"].as_str().unwrap_or_default().to_owned(),
                path: path.display().to_string(),
                victim: format!(
                    "{} [{}]",
                    m["victim"]["comm"].as_str().unwrap_or("?"),
                    m["victim"]["tgid"]
                ),
                wait_ms: m["value_ns"].as_f64().unwrap_or(0.0) / 1e6,
                preemptor: m["preemptor"]["comm"].as_str().unwrap_or("-").to_owned(),
                cause: m["diagnosis"]["cause"].as_str().unwrap_or("-").to_owned(),
                verdict: m["diagnosis"]["verdict"]
                    .as_str()
                    .unwrap_or("not diagnosed")
                    .to_owned(),
                flamegraph: path.join("flamegraph.svg").display().to_string(),
                hog_in_flamegraph: folded.contains(NOISY_FUNCTION),
                noisy_share_of_busy_samples: noisy_share(&folded),
            },
        ));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Share of the non-idle samples of a folded flame graph whose stack is in the noisy
/// neighbour's function.
fn noisy_share(folded: &str) -> f64 {
    let (mut noisy, mut busy) = (0u64, 0u64);
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let count: u64 = count.parse().unwrap_or(0);
        if stack == "[idle]" {
            continue;
        }
        busy += count;
        if stack.contains(NOISY_FUNCTION) {
            noisy += count;
        }
    }
    if busy == 0 {
        0.0
    } else {
        noisy as f64 / busy as f64
    }
}

/// The per-phase table a person reads at the end of `cargo xtask demo`.
#[must_use]
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<16} {:>9} {:>9} {:>10}  schedlat's diagnosis of the feed's long waits: cause \
         (share of their wait time); who held the CPU (share)",
        "phase", "feed p50", "feed p99", "runq p99"
    );
    for p in &summary.phases {
        let diagnosis = p.diagnosis.as_ref().map_or_else(
            || "no long waits".to_owned(),
            |d| {
                let culprits: Vec<String> = d
                    .culprits
                    .iter()
                    .map(|c| format!("{} in {} {:.0}%", c.process, c.cgroup, c.share * 100.0))
                    .collect();
                format!(
                    "{} ({:.0}% of {} long waits); {}",
                    d.cause,
                    d.cause_share * 100.0,
                    d.long_waits,
                    culprits.join(", ")
                )
            },
        );
        let _ = writeln!(
            out,
            "{:<16} {:>7.2}ms {:>7.2}ms {:>8.3}ms  {}",
            p.name, p.feed_p50_ms, p.feed_p99_ms, p.runqueue_p99_ms, diagnosis
        );
        for i in &p.incidents {
            let _ = writeln!(
                out,
                "{:<16} incident: {} waited {:.1}ms: {}\n{:<16}   flame graph: {}",
                "", i.victim, i.wait_ms, i.verdict, "", i.flamegraph
            );
        }
    }
    let _ = writeln!(
        out,
        "\nfeed p50/p99: the load generator's view (open loop, from when each request was due);\n\
         runq: schedlat's run-queue latency of the feed's threads in cgroup {}.\n\
         metrics were served at {} (stopped now); report: {}",
        summary.feed_cgroup, summary.metrics_url, summary.report
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_bucket_deltas() {
        let text_a = "schedlat_runqueue_latency_seconds_bucket{cgroup=\"/f\",process=\"demo-feed\",le=\"0.001048576\"} 10\n\
                      schedlat_runqueue_latency_seconds_bucket{cgroup=\"/f\",process=\"demo-feed\",le=\"0.002097152\"} 10\n\
                      schedlat_runqueue_latency_seconds_bucket{cgroup=\"/f\",process=\"demo-feed\",le=\"+Inf\"} 10\n\
                      schedlat_runqueue_latency_seconds_count{cgroup=\"/f\",process=\"demo-feed\"} 10\n";
        let text_b = "schedlat_runqueue_latency_seconds_bucket{cgroup=\"/f\",process=\"demo-feed\",le=\"0.001048576\"} 10\n\
                      schedlat_runqueue_latency_seconds_bucket{cgroup=\"/f\",process=\"demo-feed\",le=\"0.002097152\"} 110\n\
                      schedlat_runqueue_latency_seconds_bucket{cgroup=\"/f\",process=\"demo-feed\",le=\"+Inf\"} 110\n\
                      schedlat_runqueue_latency_seconds_count{cgroup=\"/f\",process=\"demo-feed\"} 110\n\
                      schedlat_preemptor_wait_seconds_total{cgroup=\"/f\",preemptor_cgroup=\"/n\",preemptor=\"noisy\"} 0.5\n";
        let a = parse_scrape(text_a, 0.0, "/f").expect("valid exposition");
        let b = parse_scrape(text_b, 1.0, "/f").expect("valid exposition");
        let p99 = delta_quantile(&a, &b, 0.99).unwrap();
        assert!(
            (1.04..2.1).contains(&p99),
            "p99 {p99} ms within the 1-2 ms bucket"
        );
        assert!(delta_quantile(&a, &a, 0.99).is_none());
        assert!(
            parse_scrape("schedlat_events_total{", 2.0, "/f").is_none(),
            "a malformed scrape is skipped, not read as an empty histogram"
        );
        assert!((b.preemptors[&("/n".to_owned(), "noisy".to_owned())] - 0.5).abs() < 1e-12);
        assert!((quantile_ms(&[1000, 2000, 3000], 0.5) - 2.0).abs() < 1e-9);
    }
}
