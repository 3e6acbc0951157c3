//! The demo scenario: the feed service under steady open-loop load, a noisy neighbour on the
//! feed's CPU in the middle phase, and `schedlat run` watching; then what each side saw, per
//! phase, and a self-contained HTML report.

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
    Bucket, buckets, cgroup2_mount, histogram_quantile, increase, parse_metrics, sum,
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
    pub incidents: Vec<Incident>,
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
    pub hog_in_flamegraph: bool,
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
    Some(Scrape {
        at,
        buckets: buckets(&samples, "schedlat_runqueue_latency_seconds", &feed),
        count: sum(&samples, "schedlat_runqueue_latency_seconds_count", &feed) as u64,
        preemptors,
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

#[expect(
    clippy::too_many_lines,
    reason = "the scenario reads top to bottom: start, phases, measure, report"
)]
pub fn run(options: &Options, stop: &AtomicBool) -> Result<Summary> {
    let ncpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // The feed and the noisy neighbour share the last CPU; the load generator and schedlat
    // keep the others, so the client does not distort what the server suffers.
    let feed_cpu = ncpus - 1;
    let other_cpus: Vec<usize> = if ncpus > 1 {
        (0..ncpus - 1).collect()
    } else {
        vec![0]
    };
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let incident_dir = std::fs::canonicalize(&options.out)?.join("incidents");
    let cgroups = make_cgroups(&["feed", "load", "noisy"]);
    if cgroups.is_none() {
        eprintln!("demo: cgroup v2 not writable here; running without per-cgroup separation");
    }
    let cg = |i: usize| cgroups.as_ref().map(|c| &c[i]);
    let label_of = |i: usize, fallback: &str| {
        cgroups.as_ref().map_or_else(
            || fallback.to_owned(),
            |_| format!("/schedlat-demo/{}", ["feed", "load", "noisy"][i]),
        )
    };
    let feed_cgroup = label_of(0, "/");
    let noisy_cgroup = label_of(2, "/");
    let mut children = Children(Vec::new());
    let self_exe = std::env::current_exe()?;

    // schedlat: its defaults, but 1 s windows so the timeline has a point per second.
    let schedlat_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut schedlat = spawn_pinned(
        Command::new(&options.schedlat)
            .args([
                "run",
                "--listen",
                &schedlat_addr.to_string(),
                "--window",
                "1s",
            ])
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
    let mut feed = spawn_pinned(
        Command::new(&self_exe)
            .args([
                "serve",
                "--listen",
                &feed_addr.to_string(),
                "--threads",
                "2",
            ])
            .stdin(Stdio::null()),
        vec![feed_cpu],
    )
    .context("starting the feed service")?;
    join_cgroup(cg(0), feed.id());
    wait_healthy(feed_addr, "the feed service", &mut feed)?;
    children.0.push(("feed".into(), feed));

    let total = options.phase * 3;
    let mut load = spawn_pinned(
        Command::new(&self_exe)
            .args(["load", "--target", &feed_addr.to_string()])
            .args(["--rate", &options.rate.to_string()])
            .args(["--duration", &format!("{}s", total.as_secs())])
            .stdout(Stdio::piped())
            .stdin(Stdio::null()),
        other_cpus.clone(),
    )
    .context("starting the load generator")?;
    join_cgroup(cg(1), load.id());
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
        "demo: feed on CPU {feed_cpu} at {}/s open-loop; phases of {:?}: baseline, noisy \
         neighbour, recovery; schedlat serving http://{schedlat_addr}/metrics",
        options.rate, options.phase
    );
    let start = Instant::now();
    let mut scrapes: Vec<Scrape> = Vec::new();
    let mut noisy_started = false;
    let phase_s = options.phase.as_secs_f64();
    while start.elapsed() < total + Duration::from_millis(1500) {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted; everything started was stopped");
        }
        let t = start.elapsed().as_secs_f64();
        if !noisy_started && t >= phase_s {
            let mut noisy = spawn_pinned(
                Command::new(&self_exe)
                    .args(["noisy", "--threads", "6"])
                    .args(["--duration", &format!("{}s", options.phase.as_secs())])
                    .stdin(Stdio::null()),
                vec![feed_cpu],
            )
            .context("starting the noisy neighbour")?;
            join_cgroup(cg(2), noisy.id());
            eprintln!(
                "demo: {t:.1}s noisy neighbour on CPU {feed_cpu} (pid {})",
                noisy.id()
            );
            let _ = &mut noisy;
            children.0.push(("noisy neighbour".into(), noisy));
            noisy_started = true;
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
    drop(children);

    // Per phase: the load generator's view and schedlat's.
    let names = ["baseline", "noisy neighbour", "recovery"];
    let mut phases = Vec::new();
    let incidents = read_incidents(&incident_dir, start);
    for (i, name) in names.iter().enumerate() {
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
        let (first, last) = (inside.first(), inside.last());
        let (rq_waits, rq50, rq99, top) = match (first, last) {
            (Some(a), Some(b)) => {
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
                let top = pre
                    .into_iter()
                    .take(3)
                    .map(|(cgroup, process, v)| Preemptor {
                        cgroup,
                        process,
                        wait_ms: v * 1e3,
                        share: if sum > 0.0 { v / sum } else { 0.0 },
                    })
                    .collect();
                (
                    b.count.saturating_sub(a.count),
                    delta_quantile(a, b, 0.5).unwrap_or(0.0),
                    delta_quantile(a, b, 0.99).unwrap_or(0.0),
                    top,
                )
            }
            _ => (0, 0.0, 0.0, Vec::new()),
        };
        phases.push(Phase {
            name: (*name).to_owned(),
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
        cgroups: cgroups.is_some(),
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
                hog_in_flamegraph: folded.contains(NOISY_FUNCTION),
            },
        ));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The per-phase table a person reads at the end of `cargo xtask demo`.
#[must_use]
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<16} {:>9} {:>9} {:>12} {:>12}  top preemptors of the feed (share of its long waits)",
        "phase", "feed p50", "feed p99", "runq p50", "runq p99"
    );
    for p in &summary.phases {
        let top: Vec<String> = p
            .top_preemptors
            .iter()
            .map(|t| format!("{} in {} {:.0}%", t.process, t.cgroup, t.share * 100.0))
            .collect();
        let _ = writeln!(
            out,
            "{:<16} {:>7.2}ms {:>7.2}ms {:>10.3}ms {:>10.3}ms  {}",
            p.name,
            p.feed_p50_ms,
            p.feed_p99_ms,
            p.runqueue_p50_ms,
            p.runqueue_p99_ms,
            if top.is_empty() {
                "-".to_owned()
            } else {
                top.join(", ")
            }
        );
        for i in &p.incidents {
            let _ = writeln!(
                out,
                "{:<16} incident: {} waited {:.1}ms behind {} -> {}",
                "", i.victim, i.wait_ms, i.preemptor, i.path
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
