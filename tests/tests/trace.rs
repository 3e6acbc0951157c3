//! Privileged integration tests: the real `schedlat` binary, the real kernel, real workloads.
//!
//! Run with `cargo xtask test` (as root): it builds the release binary and passes its path in
//! `SCHEDLAT_BIN`. The tests are `#[ignore]`d so a plain `cargo test` without root skips them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::{
    EXEC_ESCAPED, EXEC_NAME, Named, PRCTL_ESCAPED, PRCTL_NAME, Workload, programs_left_after,
    schedlat_bin, schedlat_bpf_objects,
};

/// A running `schedlat trace`, its stderr collected in the background.
struct Trace {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Trace {
    /// Starts `schedlat trace ARGS` and waits until it has attached.
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(schedlat_bin())
            .arg("trace")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn schedlat trace");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut trace = Self {
            child,
            stderr_lines: rx,
            stderr_seen: Vec::new(),
        };
        trace.wait_stderr("Tracing run-queue waits", Duration::from_secs(30));
        trace
    }

    fn wait_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr_seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "schedlat did not print {needle:?} within {timeout:?}; stderr so far:\n{}",
            self.stderr_seen.join("\n")
        );
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }

    /// Waits for exit (at most `timeout`) and returns status, stdout, stderr.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let mut stdout = self.child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).expect("read stdout");
            out
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("schedlat did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = reader.join().expect("stdout reader");
        let mut stderr = self.stderr_seen.join("\n");
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        (status, stdout, stderr)
    }
}

fn parse_json_lines(stdout: &str) -> (Vec<Value>, Vec<Value>) {
    let (events, summaries, totals) = parse_json_output(stdout);
    assert!(
        totals.is_empty(),
        "a total object in a --pid trace:\n{stdout}"
    );
    (events, summaries)
}

/// Events, then `summary` objects, then (machine-wide and `--cgroup`) `total` objects.
fn parse_json_output(stdout: &str) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut events = Vec::new();
    let mut summaries = Vec::new();
    let mut totals = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line ({e}): {line}"));
        if let Some(total) = v.get("total") {
            totals.push(total.clone());
        } else if let Some(summary) = v.get("summary") {
            assert!(totals.is_empty(), "summary after the total: {line}");
            summaries.push(summary.clone());
        } else {
            assert!(summaries.is_empty(), "event after a summary object: {line}");
            events.push(v);
        }
    }
    (events, summaries, totals)
}

/// The kernel's own run-queue accounting (`run_delay`) is the oracle: schedlat's total wait for
/// the sleeper thread over its whole life must agree within 2 %. The sleeper is created after
/// schedlat attached, so this also proves `--pid` follows threads created while tracing.
#[expect(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
fn trace_agrees_with_kernel(extra_args: &[&str]) {
    let mut workload = Workload::start(150, 2000, 1000);
    let pid = workload.pid().to_string();
    let threshold_ns = 500_000u64;
    let mut args = vec!["--pid", &pid, "--threshold", "500us", "--format", "json"];
    args.extend_from_slice(extra_args);
    let trace = Trace::start(&args);
    workload.go();
    let result = workload.result();
    assert_eq!(result.hog_tid, workload.hog_tid);
    trace.signal(libc::SIGINT);
    let (status, stdout, stderr) = trace.finish(Duration::from_secs(10));
    assert!(
        status.success(),
        "schedlat trace exited with {status}; stderr:\n{stderr}"
    );
    let (events, summaries) = parse_json_lines(&stdout);

    assert_eq!(
        summaries.len(),
        1,
        "one summary per traced process; stdout:\n{stdout}"
    );
    let summary = &summaries[0];
    assert_eq!(summary["tgid"].as_u64(), Some(u64::from(workload.pid())));
    let threads = summary["threads"].as_array().expect("threads array");
    let sleeper = threads
        .iter()
        .find(|t| t["tid"].as_u64() == Some(u64::from(result.sleeper_tid)))
        .unwrap_or_else(|| {
            panic!(
                "sleeper thread {} (created after attach) missing from summary: {summary}",
                result.sleeper_tid
            )
        });
    let measured = sleeper["total_wait_ns"].as_u64().expect("total_wait_ns");
    let kernel = result.run_delay_ns;
    let error = (measured as f64 - kernel as f64).abs() / kernel as f64;
    eprintln!(
        "sleeper {}: schedlat total wait {measured} ns over {} waits, kernel run_delay {kernel} ns, \
         difference {:.3} %",
        result.sleeper_tid,
        sleeper["count"],
        error * 100.0
    );
    assert!(
        kernel > 50_000_000,
        "the workload should make the sleeper wait (run_delay only {kernel} ns)"
    );
    assert!(
        error < 0.02,
        "schedlat total {measured} ns vs kernel run_delay {kernel} ns: {:.2} % apart (limit 2 %)",
        error * 100.0
    );

    // Per-event delivery: only waits at or above the threshold, and the hog is who ran instead.
    let sleeper_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["tid"].as_u64() == Some(u64::from(result.sleeper_tid)))
        .collect();
    assert!(
        !sleeper_events.is_empty(),
        "no events for the sleeper; stdout:\n{stdout}"
    );
    // Wall-clock time beside the monotonic one: today's date, UTC.
    let today = {
        let out = Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for event in &events {
        let time = event["time"].as_str().expect("time");
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.starts_with(&today),
            "time {time:?} is not an RFC 3339 UTC time of today ({today})"
        );
        let wait = event["wait_ns"].as_u64().expect("wait_ns");
        assert!(
            wait >= threshold_ns,
            "event below the {threshold_ns} ns threshold: {event}"
        );
        assert_eq!(
            event["tgid"].as_u64(),
            Some(u64::from(workload.pid())),
            "{event}"
        );
    }
    let mut preemptors: HashMap<u64, usize> = HashMap::new();
    for event in &sleeper_events {
        *preemptors
            .entry(event["preemptor_tid"].as_u64().expect("preemptor_tid"))
            .or_default() += 1;
    }
    eprintln!(
        "sleeper: {} waits >= {threshold_ns} ns, preemptors (tid: count) {preemptors:?}",
        sleeper_events.len()
    );
    let hog_share = preemptors
        .get(&u64::from(result.hog_tid))
        .copied()
        .unwrap_or(0) as f64
        / sleeper_events.len() as f64;
    // The preemptor is the task that ran right before the sleeper got the CPU: now and then a
    // kernel thread (rcu, kworker) slips in between the hog and the sleeper and is named
    // instead. The threshold (500us, under the ~1ms mean wait) keeps ~130 of the ~150 waits:
    // with 2ms only 4-7 were left, and one kworker among 5 (a CI run) failed the 80 % share.
    let top = preemptors
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(tid, _)| *tid);
    assert!(
        hog_share >= 0.8 && top == Some(u64::from(result.hog_tid)),
        "the hog (tid {}) should be the preemptor of the sleeper's waits, got {preemptors:?}",
        result.hog_tid
    );
    assert!(
        sleeper_events
            .iter()
            .any(|e| e["preemptor_comm"].as_str() == Some("hog")),
        "preemptor_comm should name the hog thread"
    );
    // The sleeper's timer fires on CPU 0 while the hog runs there: the hog is its waker, and
    // its name is read from /proc while it lives. A preempted task has no waker.
    assert!(
        sleeper_events.iter().any(|e| e["preempted"] == false
            && e["waker_tid"].as_u64() == Some(u64::from(result.hog_tid))
            && e["waker_comm"].as_str() == Some("hog")),
        "no sleeper event woken by the hog with waker_comm \"hog\"; events:\n{}",
        sleeper_events
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for event in &events {
        if event["preempted"] == true {
            assert_eq!(event["waker_comm"], "", "preempted: no waker: {event}");
        }
    }
    // Waits below the threshold are not printed but are in the histogram and summary.
    let process_count = summary["count"].as_u64().expect("count");
    assert!(
        process_count > events.len() as u64,
        "summary counts {process_count} waits, events {}: sub-threshold waits missing",
        events.len()
    );
    let sleeper_count = sleeper["count"].as_u64().expect("count");
    assert!(
        sleeper_count >= sleeper_events.len() as u64,
        "sleeper: {sleeper_count} waits counted, {} printed",
        sleeper_events.len()
    );
    assert!(summary["p99_ns"].as_u64() <= summary["max_ns"].as_u64());
    assert!(summary["p50_ns"].as_u64() <= summary["p99_ns"].as_u64());
    assert!(stderr.contains("waits measured"), "{stderr}");
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn total_wait_matches_kernel_run_delay_task_storage() {
    trace_agrees_with_kernel(&[]);
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn total_wait_matches_kernel_run_delay_pid_hash_fallback() {
    trace_agrees_with_kernel(&["--force-pid-hash"]);
}

/// Without --pid/--tid/--cgroup the whole machine is traced: the workload's waits are among the
/// events and its process among the (bounded) summaries, and a total line covers every wait.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn machine_wide_trace_sees_the_workload() {
    let mut workload = Workload::start(150, 2000, 1000);
    let pid = u64::from(workload.pid());
    let trace = Trace::start(&["--format", "json", "--top", "50", "--duration", "30s"]);
    workload.go();
    let result = workload.result();
    trace.signal(libc::SIGINT);
    let (status, stdout, stderr) = trace.finish(Duration::from_secs(20));
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("every task on the machine"),
        "announce: {stderr}"
    );
    let (events, summaries, totals) = parse_json_output(&stdout);
    assert!(
        events.iter().any(|e| e["tgid"].as_u64() == Some(pid)
            && e["tid"].as_u64() == Some(u64::from(result.sleeper_tid))),
        "no event of the workload's sleeper (pid {pid}) among {} events",
        events.len()
    );
    assert!(
        !summaries.is_empty() && summaries.len() <= 50,
        "--top 50 bounds the summaries, got {}",
        summaries.len()
    );
    let mine = summaries
        .iter()
        .find(|s| s["tgid"].as_u64() == Some(pid))
        .unwrap_or_else(|| {
            panic!(
                "workload pid {pid} not among the top summaries: {:?}",
                summaries
                    .iter()
                    .map(|s| (
                        s["tgid"].clone(),
                        s["comm"].clone(),
                        s["total_wait_ns"].clone()
                    ))
                    .collect::<Vec<_>>()
            )
        });
    let totals_desc: Vec<u64> = summaries
        .iter()
        .map(|s| s["total_wait_ns"].as_u64().expect("total_wait_ns"))
        .collect();
    assert!(
        totals_desc.windows(2).all(|w| w[0] >= w[1]),
        "summaries not ordered by total wait: {totals_desc:?}"
    );
    assert!(
        result.run_delay_ns > 50_000_000
            && mine["total_wait_ns"].as_u64() >= Some(result.run_delay_ns * 9 / 10),
        "workload summary {mine} vs the sleeper's run_delay {} ns alone",
        result.run_delay_ns
    );
    assert_eq!(totals.len(), 1, "one total object:\n{stdout}");
    let total = &totals[0];
    assert_eq!(total["scope"], "machine", "{total}");
    // Events are only the waits of 1 ms and more (on a quiet machine the workload's alone);
    // the totals count every wait, and some other task (a kworker, this test) waits too.
    assert!(
        total["processes"].as_u64() > Some(1) && summaries.len() > 1,
        "only one process seen machine-wide: {total}"
    );
    assert!(
        total["processes"].as_u64() >= Some(summaries.len() as u64)
            && total["count"].as_u64() >= mine["count"].as_u64()
            && total["total_wait_ns"].as_u64() >= mine["total_wait_ns"].as_u64(),
        "the total covers every process: {total} vs {mine}"
    );
    assert!(stderr.contains("waits measured"), "counters line: {stderr}");
}

/// A v2 cgroup made for one test (under the cgroup2 mount), removed on drop.
struct TestCgroup {
    dir: std::path::PathBuf,
    relative: String,
}

impl TestCgroup {
    fn new(tag: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mount = mountinfo
            .lines()
            .find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
            })
            .expect("a cgroup2 mount");
        let relative = format!("/schedlat-test-{tag}-{}", std::process::id());
        let dir = std::path::Path::new(&mount).join(relative.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("mkdir the test cgroup");
        Self { dir, relative }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Members must leave before rmdir: back to the root cgroup.
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            let root = self.dir.parent().expect("parent").join("cgroup.procs");
            for pid in procs.lines() {
                let _ = std::fs::write(&root, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `--cgroup` traces the processes of the cgroup, also those that join after the trace started
/// (the filter is refreshed every second), and no process outside it.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn cgroup_trace_follows_members_only() {
    let cgroup = TestCgroup::new("cg");
    let mut inside = Workload::start(100, 2000, 1000);
    let mut outside = Workload::start(100, 2000, 1000);
    let trace = Trace::start(&[
        "--cgroup",
        &cgroup.relative,
        "--format",
        "json",
        "--duration",
        "60s",
    ]);
    cgroup.add(inside.pid());
    // The trace reads the members once a second.
    std::thread::sleep(Duration::from_millis(1500));
    inside.go();
    outside.go();
    let inside_result = inside.result();
    let _ = outside.result();
    trace.signal(libc::SIGINT);
    let (status, stdout, stderr) = trace.finish(Duration::from_secs(20));
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("the 0 processes of cgroup"),
        "the cgroup was empty at start: {stderr}"
    );
    let (events, summaries, totals) = parse_json_output(&stdout);
    let inside_pid = u64::from(inside.pid());
    let outside_pid = u64::from(outside.pid());
    let event_tgids: HashSet<u64> = events.iter().filter_map(|e| e["tgid"].as_u64()).collect();
    assert_eq!(
        event_tgids,
        HashSet::from([inside_pid]),
        "events only of the cgroup's process {inside_pid} (outside: {outside_pid})"
    );
    let summary_tgids: Vec<u64> = summaries
        .iter()
        .filter_map(|s| s["tgid"].as_u64())
        .collect();
    assert_eq!(summary_tgids, vec![inside_pid], "{stdout}");
    assert!(
        summaries[0]["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .any(|t| t["tid"].as_u64() == Some(u64::from(inside_result.sleeper_tid))),
        "the sleeper thread of the member is summarised: {}",
        summaries[0]
    );
    assert_eq!(totals.len(), 1);
    assert!(
        totals[0]["scope"]
            .as_str()
            .is_some_and(|s| s.starts_with("cgroup ") && s.ends_with(&cgroup.relative)),
        "{}",
        totals[0]
    );
    assert_eq!(totals[0]["processes"], 1, "{}", totals[0]);
}

/// `--per thread`: every thread of the summary has quantiles from its own histogram.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn per_thread_histograms() {
    let mut workload = Workload::start(100, 2000, 1000);
    let pid = workload.pid().to_string();
    let trace = Trace::start(&[
        "--pid",
        &pid,
        "--per",
        "thread",
        "--format",
        "json",
        "--duration",
        "60s",
    ]);
    workload.go();
    let result = workload.result();
    trace.signal(libc::SIGINT);
    let (status, stdout, stderr) = trace.finish(Duration::from_secs(20));
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    let (_, summaries) = parse_json_lines(&stdout);
    assert_eq!(summaries.len(), 1, "{stdout}");
    let threads = summaries[0]["threads"].as_array().expect("threads");
    for tid in [result.hog_tid, result.sleeper_tid] {
        let thread = threads
            .iter()
            .find(|t| t["tid"].as_u64() == Some(u64::from(tid)))
            .unwrap_or_else(|| panic!("thread {tid} missing: {}", summaries[0]));
        let (p50, p99, max) = (
            thread["p50_ns"].as_u64().expect("p50_ns with --per thread"),
            thread["p99_ns"].as_u64().expect("p99_ns"),
            thread["max_ns"].as_u64().expect("max_ns"),
        );
        assert!(
            thread["count"].as_u64() > Some(50) && p50 > 0 && p50 <= p99 && p99 <= max,
            "thread {tid}'s own histogram: {thread}"
        );
    }
}

/// `--interval 1s --count 2`: exactly two interval objects, each with that interval's waits
/// only (the kernel's cumulative maps differenced), then exit without a final summary.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn intervals_print_each_interval_then_stop() {
    // About 4 s of steady waits: longer than both intervals.
    let mut workload = Workload::start(1300, 2000, 1000);
    let pid = u64::from(workload.pid());
    let started = Instant::now();
    let trace = Trace::start(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "1s",
        "--count",
        "2",
        "--threshold",
        "1s",
        "--format",
        "json",
    ]);
    workload.go();
    let (status, stdout, stderr) = trace.finish(Duration::from_secs(20));
    let elapsed = started.elapsed();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        elapsed < Duration::from_secs(10),
        "--count 2 should stop after two intervals, ran {elapsed:?}"
    );
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON ({e}): {l}")))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "exactly two lines, one per interval:\n{stdout}"
    );
    let mut counts = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let interval = &line["interval"];
        assert_eq!(interval["index"], index + 1, "{line}");
        assert!(
            interval["time"]
                .as_str()
                .is_some_and(|t| t.len() == 24 && t.ends_with('Z')),
            "RFC 3339 time: {line}"
        );
        assert!(interval["total"].is_null(), "no total for --pid: {line}");
        let summary = &interval["summaries"][0];
        assert_eq!(summary["tgid"].as_u64(), Some(pid), "{line}");
        counts.push(summary["count"].as_u64().expect("count"));
    }
    // Cumulative counts would make the second about twice the first.
    assert!(
        counts[0] > 100 && counts[1] > 100 && counts[1] * 10 < counts[0] * 17,
        "each interval counts its own waits: {counts:?}"
    );
    drop(workload);
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn waits_below_threshold_are_summarised_not_printed() {
    let mut workload = Workload::start(60, 2000, 1000);
    let pid = workload.pid().to_string();
    let trace = Trace::start(&["--pid", &pid, "--threshold", "1s", "--duration", "30s"]);
    workload.go();
    let result = workload.result();
    trace.signal(libc::SIGINT);
    let (status, stdout, stderr) = trace.finish(Duration::from_secs(10));
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    let mut lines = stdout.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("TIME(UTC)")),
        "text output starts with the header:\n{stdout}"
    );
    // No wait of this workload comes near 1 s, so no event line may appear before the summary.
    let first_after_header = lines.find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(
        first_after_header.starts_with(&format!("PID {pid} ")),
        "expected the summary right after the header, got {first_after_header:?}\n{stdout}"
    );
    let count: u64 = first_after_header
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wait count in {first_after_header:?}"));
    assert!(
        count >= 60,
        "the sleeper alone waited 60+ times, summary says {count}"
    );
    assert!(
        stdout.contains("distribution"),
        "histogram missing:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("  {}", result.sleeper_tid)),
        "sleeper thread row missing:\n{stdout}"
    );
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn sigint_and_sigterm_detach_everything() {
    let workload = Workload::start(1, 100, 100);
    let pid = workload.pid().to_string();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let (before, _) = schedlat_bpf_objects();
        let trace = Trace::start(&["--pid", &pid]);
        let (during, during_links) = schedlat_bpf_objects();
        let ours: HashSet<u64> = during.difference(&before).copied().collect();
        assert_eq!(
            ours.len(),
            4,
            "expected schedlat's 4 programs while tracing, saw {ours:?}"
        );
        assert_eq!(
            during_links.len(),
            during.len(),
            "one link per program: {during_links:?}"
        );
        trace.signal(signal);
        let (status, _, stderr) = trace.finish(Duration::from_secs(10));
        assert!(
            status.success(),
            "signal {signal}: exit {status}; stderr:\n{stderr}"
        );
        // Links (the attachments) are gone with the process; the kernel frees the programs
        // themselves after an RCU grace period, so those get a few seconds.
        let (_, after_links) = schedlat_bpf_objects();
        let links_left: Vec<&u64> = during_links.intersection(&after_links).collect();
        assert!(
            links_left.is_empty(),
            "signal {signal} left links {links_left:?} attached"
        );
        let left = programs_left_after(&ours, Duration::from_secs(5));
        assert!(
            left.is_empty(),
            "signal {signal} left programs {left:?} loaded"
        );
    }
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn bad_input_is_reported_with_exit_status() {
    let out = Command::new(schedlat_bin())
        .args(["trace", "--pid", "4999999"])
        .output()
        .expect("run schedlat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "unknown PID: {stderr}");
    assert!(stderr.contains("no such process"), "{stderr}");

    let out = Command::new(schedlat_bin())
        .args(["trace", "--cgroup", "/no-such-cgroup-schedlat"])
        .output()
        .expect("run schedlat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "unknown cgroup: {stderr}");
    assert!(stderr.contains("no such cgroup"), "{stderr}");

    let out = Command::new(schedlat_bin())
        .args(["trace", "--pid", "1", "--threshold", "10"])
        .output()
        .expect("run schedlat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "threshold without unit: {stderr}"
    );
    assert!(stderr.contains("no unit"), "{stderr}");

    let out = Command::new(schedlat_bin())
        .args(["trace", "--pid", "1", "--unit", "s"])
        .output()
        .expect("run schedlat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "unknown unit: {stderr}");
    assert!(stderr.contains("possible values: us, ms"), "{stderr}");

    for (duration, expected) in [
        ("-5s", "negative durations are not allowed"),
        ("0", "must be greater than 0"),
        ("0s", "must be greater than 0"),
    ] {
        let out = Command::new(schedlat_bin())
            .args(["trace", "--pid", "1", "--duration", duration])
            .output()
            .expect("run schedlat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--duration {duration}: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "--duration {duration}: expected {expected:?} in: {stderr}"
        );
    }

    // Without privileges: run as nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args([
            schedlat_bin().as_str(),
            "trace",
            "--pid",
            "1",
            "--duration",
            "1s",
        ])
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "unprivileged: {stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "the error should name the missing capabilities: {stderr}"
    );
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn check_reports_a_runnable_machine() {
    let out = Command::new(schedlat_bin())
        .arg("check")
        .output()
        .expect("run schedlat check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schedlat check failed:\n{stdout}");
    for needle in [
        "BTF (vmlinux)         yes",
        "trace programs        yes",
        "daemon programs       yes",
        "`schedlat trace` and `schedlat run` can run here",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let (progs, links) = schedlat_bpf_objects();
    assert!(links.is_empty(), "check left links behind: {links:?}");
    let left = programs_left_after(&progs, Duration::from_secs(5));
    assert!(left.is_empty(), "check left programs behind: {left:?}");
}

/// Names are bytes: one process named by exec'ing a file whose name is not UTF-8 and holds an
/// escape sequence, one named with `prctl(PR_SET_NAME)` with a newline, an OSC sequence, BEL and
/// an invalid byte. Traced together, in text and JSON: exit 0, the names escaped as the README
/// says (`\xNN`), no raw control character on stdout or stderr, every JSON line parses.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn names_that_are_not_text_are_shown_escaped() {
    let by_exec = Named::exec_as(EXEC_NAME);
    let by_prctl = Named::prctl(PRCTL_NAME);
    let (exec_pid, prctl_pid) = (by_exec.pid(), by_prctl.pid());

    for format in ["text", "json"] {
        let out = Command::new(schedlat_bin())
            .args(["trace", "--pid", &exec_pid, "--pid", &prctl_pid])
            .args(["--threshold", "0", "--duration", "2s", "--format", format])
            .output()
            .expect("run schedlat trace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{format}: exit {}; stderr:\n{stderr}",
            out.status
        );
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = std::str::from_utf8(bytes)
                .unwrap_or_else(|e| panic!("{format}: {stream} is not UTF-8 ({e})"));
            let raw: Vec<char> = text
                .chars()
                .filter(|c| c.is_control() && *c != '\n')
                .collect();
            assert!(
                raw.is_empty(),
                "{format}: raw control characters {raw:?} on {stream}:\n{}",
                text.escape_debug()
            );
        }
        for (pid, escaped) in [(&exec_pid, EXEC_ESCAPED), (&prctl_pid, PRCTL_ESCAPED)] {
            assert!(
                stderr.contains(&format!("{pid} ({escaped})")),
                "{format}: the start line should name {pid} as {escaped}:\n{stderr}"
            );
        }
        let stdout = String::from_utf8(out.stdout).expect("checked above");
        if format == "text" {
            for (pid, escaped) in [(&exec_pid, EXEC_ESCAPED), (&prctl_pid, PRCTL_ESCAPED)] {
                assert!(
                    stdout.contains(&format!("PID {pid} ({escaped}): ")),
                    "text: no summary for {pid} named {escaped}:\n{stdout}"
                );
                // An event line: time, tid, comm, ... (the main thread's tid is the pid).
                let events = stdout
                    .lines()
                    .filter(|l| {
                        let mut fields = l.split_whitespace().skip(1);
                        fields.next() == Some(pid.as_str()) && fields.next() == Some(escaped)
                    })
                    .count();
                assert!(
                    events > 10,
                    "text: expected event lines of {pid} named {escaped}, found {events}:\n{stdout}"
                );
                // The thread table of the summary.
                assert!(
                    stdout
                        .lines()
                        .any(|l| l.trim_start().starts_with(&format!("{pid}  "))
                            && l.contains(&format!(" {escaped} "))),
                    "text: no thread row for {pid} named {escaped}:\n{stdout}"
                );
            }
        } else {
            let (events, summaries) = parse_json_lines(&stdout);
            for (pid, escaped) in [(&exec_pid, EXEC_ESCAPED), (&prctl_pid, PRCTL_ESCAPED)] {
                let tgid: u64 = pid.parse().expect("pid");
                let comms: HashSet<&str> = events
                    .iter()
                    .filter(|e| e["tgid"] == tgid)
                    .map(|e| e["comm"].as_str().expect("comm is a string"))
                    .collect();
                assert_eq!(
                    comms,
                    HashSet::from([escaped]),
                    "json: the events of {pid} (all its threads carry the name)"
                );
                let summary = summaries
                    .iter()
                    .find(|s| s["tgid"] == tgid)
                    .unwrap_or_else(|| panic!("json: no summary for {pid}:\n{stdout}"));
                assert_eq!(summary["comm"], escaped, "json: summary of {pid}");
                assert!(summary["count"].as_u64() > Some(10), "{summary}");
                for thread in summary["threads"].as_array().expect("threads") {
                    assert_eq!(thread["comm"], escaped, "json: thread of {pid}: {thread}");
                }
            }
        }
    }
}

/// `schedlat trace ... 2>&1 | head`: once the reader is gone, stderr is a closed pipe; the
/// lines for people are dropped, not a panic (exit 101), and the trace ends normally.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn a_closed_stderr_is_no_panic() {
    let pid = std::process::id().to_string();
    let mut child = Command::new(schedlat_bin())
        .args(["trace", "--pid", &pid, "--duration", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn schedlat trace");
    // The read end closed before schedlat writes its first line.
    drop(child.stderr.take());
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "schedlat trace with a closed stderr exited with {status}"
    );
}
