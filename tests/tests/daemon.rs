//! Privileged integration tests of `schedlat run`, the node daemon: the real binary and kernel,
//! a controlled workload in a cgroup of its own, promtool and a real Prometheus server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::{
    Agent, EXEC_ESCAPED, EXEC_NAME, Named, PRCTL_ESCAPED, PRCTL_NAME, Prometheus, Workload,
    programs_left_after, samples_of, schedlat_bin, schedlat_bpf_objects,
};
use schedlat_test_support::{Schedstat, cgroup2_mount, sum};

/// A cgroup v2 of the test's own, removed on drop.
struct Cgroup {
    dir: PathBuf,
    /// The path relative to the cgroup2 root: schedlat's label for it.
    label: String,
}

impl Cgroup {
    fn create(name: &str) -> Self {
        let mount = cgroup2_mount().expect("a cgroup2 file system is mounted (unified or hybrid)");
        let leaf = format!("{name}-{}", std::process::id());
        let dir = mount.join(&leaf);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
        Self {
            dir,
            label: format!("/{leaf}"),
        }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Total run-queue wait of every thread of a process, from the kernel's schedstat.
fn process_run_delay_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .flatten()
        .filter_map(|t| Schedstat::read(&t.path().join("schedstat")))
        .map(|s| s.run_delay_ns)
        .sum()
}

/// Process ids in the daemon's kernel aggregation map (`bpftool map dump`, formatted by BTF).
fn kernel_map_tgids() -> Vec<u64> {
    let maps = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("bpftool map show");
    let maps: Value = serde_json::from_slice(&maps.stdout).expect("map json");
    let id = maps
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["name"] == "PROC_WAITS" && m["max_entries"].as_u64() > Some(1))
        .and_then(|m| m["id"].as_u64())
        .expect("the daemon's PROC_WAITS map is loaded");
    let dump = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .expect("bpftool map dump");
    let dump: Value = serde_json::from_slice(&dump.stdout).expect("dump json");
    dump.as_array()
        .expect("array")
        .iter()
        // One entry per process, keyed by tgid (a little-endian u32; bpftool formats it by
        // BTF when the map carries key BTF, else prints the bytes).
        .filter_map(|e| {
            e["formatted"]["key"].as_u64().or_else(|| {
                let bytes: Vec<u8> = e["key"]
                    .as_array()?
                    .iter()
                    .filter_map(|b| {
                        u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok()
                    })
                    .collect();
                Some(u64::from(u32::from_le_bytes(bytes.try_into().ok()?)))
            })
        })
        .collect()
}

const WORKLOAD_COMM: &str = "schedlat-worklo";

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn daemon_attributes_a_contended_process_and_agrees_with_run_delay() {
    contended_process_agrees_with_run_delay(&[]);
}

/// The fallback for kernels without `CONFIG_SCHED_INFO` (the wakeup programs stamp enqueues),
/// forced on a kernel that has it: the same accuracy and attribution.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn daemon_fallback_without_sched_info_stamps_agrees_with_run_delay() {
    contended_process_agrees_with_run_delay(&["--force-wakeup-probes"]);
}

fn contended_process_agrees_with_run_delay(extra: &[&str]) {
    let mut args = vec!["--window", "1s"];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    if !extra.is_empty() {
        let stderr = agent.stderr();
        assert!(
            stderr.contains("own enqueue stamps"),
            "{extra:?} should attach the fallback programs; stderr:\n{stderr}"
        );
    }
    let cgroup = Cgroup::create("schedlat-test-contended");
    // 1000 x (2 ms busy + 1 ms asleep) next to a hog on CPU 0: about four seconds of
    // contention, so the look at 2.5 s is mid-run whatever the kernel's wakeup preemption.
    let mut workload = Workload::start(1000, 2000, 1000);
    cgroup.add(workload.pid());
    workload.go();

    // Mid-run: the run queue of CPU 0 is visibly occupied and the kernel map holds the process.
    std::thread::sleep(Duration::from_millis(2500));
    let mid = agent.samples();
    let queue = sum(&mid, "schedlat_cpu_runqueue_length", &[("cpu", "0")]);
    assert!(
        queue > 0.1,
        "CPU 0 run-queue length should show the sleeper queued behind the hog; got {queue}"
    );
    let pid = u64::from(workload.pid());
    let tgids = kernel_map_tgids();
    assert!(
        tgids.contains(&pid),
        "the kernel map should hold the running workload's entry ({pid}); it has {} entries: \
         {tgids:?}",
        tgids.len()
    );

    let result = workload.result();
    let kernel_total_ns = process_run_delay_ns(workload.pid());
    assert!(workload.finish().success(), "workload failed");
    // Two windows: the exit's last switches are accounted and exported, then state is freed.
    std::thread::sleep(Duration::from_millis(2500));
    let text = agent.metrics();
    let m = samples_of(&text);
    let series = [
        ("cgroup", cgroup.label.as_str()),
        ("process", WORKLOAD_COMM),
    ];
    let count = sum(&m, "schedlat_runqueue_latency_seconds_count", &series);
    let total_ns = sum(&m, "schedlat_runqueue_latency_seconds_sum", &series) * 1e9;
    assert!(
        count >= 1000.0,
        "expected at least one wait per sleeper iteration in {series:?}, got {count}; metrics:\n{text}"
    );
    let diff = (total_ns - kernel_total_ns as f64).abs() / kernel_total_ns as f64;
    eprintln!(
        "daemon total wait {:.3} ms vs kernel run_delay {:.3} ms ({:.3} % apart; sleeper alone \
         {:.3} ms)",
        total_ns / 1e6,
        kernel_total_ns as f64 / 1e6,
        diff * 100.0,
        result.run_delay_ns as f64 / 1e6
    );
    assert!(
        diff < 0.02,
        "daemon's total wait for the workload ({total_ns} ns) is {:.2} % from the kernel's \
         run_delay ({kernel_total_ns} ns); allowed 2 %",
        diff * 100.0
    );

    // Attribution: the sleeper waited behind the hog, a task of its own cgroup.
    let cg = [("cgroup", cgroup.label.as_str())];
    let all = sum(&m, "schedlat_preemptions_total", &cg);
    let same = sum(
        &m,
        "schedlat_preemptions_total",
        &[("cgroup", cgroup.label.as_str()), ("class", "same_cgroup")],
    );
    assert!(
        same >= 0.8 * all && all >= count,
        "expected >= 80 % of the workload's waits behind its own cgroup: same_cgroup {same} of \
         {all}; by class: {:?}",
        m.iter()
            .filter(|s| s.matches(
                "schedlat_preemptions_total",
                &[("cgroup", cgroup.label.as_str())]
            ))
            .map(|s| (s.label("class"), s.value))
            .collect::<Vec<_>>()
    );
    let info = sum(
        &m,
        "schedlat_cgroup_info",
        &[("cgroup", cgroup.label.as_str())],
    );
    assert!(
        (info - 1.0).abs() < f64::EPSILON,
        "cgroup_info for {}",
        cgroup.label
    );

    // The exited process's kernel state is freed.
    let left = kernel_map_tgids();
    assert!(
        !left.contains(&pid),
        "kernel map still holds entries of exited pid {pid}"
    );
    let lost = sum(&m, "schedlat_events_lost_total", &[]);
    assert!(lost == 0.0, "events lost on an idle test machine: {lost}");

    let status = agent.stop(libc::SIGTERM);
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn promtool_and_a_real_prometheus_accept_the_metrics() {
    let agent = Agent::start(&["--window", "1s"]);
    let mut workload = Workload::start(100_000, 2000, 1000);
    workload.go();
    std::thread::sleep(Duration::from_millis(2500));
    let text = agent.metrics();

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by cargo xtask setup)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics complained:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prometheus = Prometheus::start(
        "prom",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: schedlat\n    static_configs:\n      - targets: ['{}']\n",
            agent.addr
        ),
        &[],
    );
    let query = |q: &str| prometheus.query(q).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut last;
    let ok = loop {
        // Needs at least two scrapes with waits between them for rate(); until then the
        // quantile is NaN.
        let up = query("up{job=\"schedlat\"} == 1");
        last = query(&format!(
            "histogram_quantile(0.99, sum by (le) (rate(schedlat_runqueue_latency_seconds_bucket{{process=\"{WORKLOAD_COMM}\"}}[10s])))"
        ));
        let finite = last.first().is_some_and(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        });
        if !up.is_empty() && finite {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(prometheus);
    drop(workload);
    assert!(
        ok,
        "Prometheus did not scrape the agent or found no workload latency within 60 s: {last:?}"
    );
    let p99: f64 = last[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a numeric p99");
    // The sleeper waits for the hog's slice: milliseconds, not microseconds.
    assert!(
        p99 > 0.0005,
        "p99 of the contended workload through Prometheus is {p99} s; expected > 0.5 ms"
    );
    assert!(agent.stop(libc::SIGINT).success());
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn config_errors_name_the_key_and_sighup_reloads_without_losing_counters() {
    let dir = std::env::temp_dir().join(format!("schedlat-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schedlat.toml");

    for (text, key) in [
        ("windw = \"5s\"\n", "windw"),
        ("window = \"5 fortnights\"\n", "window"),
        ("top_k = 0\n", "top_k"),
        ("[incidents]\nthreshold = \"0\"\n", "incidents.threshold"),
    ] {
        write_config(&config, text);
        let out = Command::new(schedlat_bin())
            .args(["run", "--check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{text:?}: error does not name {key}: {stderr}"
        );
    }
    let out = Command::new(schedlat_bin())
        .args([
            "run",
            "--check-config",
            "--config",
            "/nonexistent/schedlat.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/schedlat.toml"));

    write_config(&config, "window = \"1s\"\ntop_k = 20\n");
    let out = Command::new(schedlat_bin())
        .args(["run", "--check-config", "--top-k", "7", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("configuration OK") && stdout.contains("top_k 7"),
        "the flag should override the file: {stdout}"
    );

    let (progs_before, _) = schedlat_bpf_objects();
    let agent = Agent::start(&["--config", config.to_str().unwrap()]);
    let (progs_running, _) = schedlat_bpf_objects();
    let ours: std::collections::HashSet<u64> =
        progs_running.difference(&progs_before).copied().collect();
    assert_eq!(ours.len(), 3, "switch, migrate and exec programs: {ours:?}");
    std::thread::sleep(Duration::from_millis(2200));
    let events = |agent: &Agent| sum(&agent.samples(), "schedlat_events_total", &[]);
    let before = events(&agent);
    assert!(before > 0.0, "no waits counted in two windows");

    write_config(
        &config,
        "window = \"1s\"\ntop_k = 3\nevent_threshold = \"500us\"\n",
    );
    agent.signal(libc::SIGHUP);
    let reloaded = |agent: &Agent, result: &str| {
        sum(
            &agent.samples(),
            "schedlat_config_reloads_total",
            &[("result", result)],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloaded(&agent, "success") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not applied: {}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1200));
    let after = events(&agent);
    assert!(
        after >= before,
        "counters went back after reload: {before} -> {after}"
    );

    write_config(&config, "window = \"forever\"\n");
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloaded(&agent, "failure") < 1.0 {
        assert!(Instant::now() < deadline, "bad reload not reported");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        agent.stderr().contains("window"),
        "the failed reload should be logged naming the key:\n{}",
        agent.stderr()
    );

    let status = agent.stop(libc::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}");
    let left = programs_left_after(&ours, Duration::from_secs(5));
    assert!(left.is_empty(), "programs left after SIGTERM: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn a_busy_listen_address_is_a_clear_error_and_leaves_nothing_attached() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (before, _) = schedlat_bpf_objects();
    let out = Command::new(schedlat_bin())
        .args(["run", "--listen", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("listening on") && stderr.contains(&addr),
        "error should name the address: {stderr}"
    );
    let (after, _) = schedlat_bpf_objects();
    let new: std::collections::HashSet<u64> = after.difference(&before).copied().collect();
    let left = programs_left_after(&new, Duration::from_secs(5));
    assert!(left.is_empty(), "programs left behind: {left:?}");
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn pid_churn_keeps_series_and_kernel_state_bounded() {
    let dir = std::env::temp_dir().join(format!("schedlat-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schedlat.toml");
    write_config(&config, "window = \"1s\"\ntop_k = 3\nseries_ttl = \"2s\"\n");
    let agent = Agent::start(&["--config", config.to_str().unwrap()]);
    let cgroup = Cgroup::create("schedlat-test-churn");
    // 60 short-lived shells on CPU 0, each naming itself and spinning a little so it waits.
    let script = "echo churn$N > /proc/self/comm; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done";
    let mut pids = Vec::new();
    let mut max_folded = 0.0f64;
    let mut max_series = 0usize;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut n = 0;
    while Instant::now() < deadline {
        let mut batch = Vec::new();
        for _ in 0..10 {
            n += 1;
            let child = Command::new("taskset")
                .args(["-c", "0", "sh", "-c", script])
                .env("N", n.to_string())
                .spawn()
                .expect("spawn sh");
            cgroup.add(child.id());
            pids.push(u64::from(child.id()));
            batch.push(child);
        }
        for mut child in batch {
            child.wait().unwrap();
        }
        let m = agent.samples();
        max_folded = max_folded.max(sum(&m, "schedlat_window_folded_processes", &[]));
        let series = m
            .iter()
            .filter(|s| {
                s.matches(
                    "schedlat_runqueue_latency_seconds_count",
                    &[("cgroup", cgroup.label.as_str())],
                )
            })
            .count();
        max_series = max_series.max(series);
    }
    eprintln!("{n} processes: at most {max_series} series in their cgroup, {max_folded} folded");
    assert!(n >= 40, "only {n} processes spawned");
    assert!(
        max_folded >= 1.0,
        "with {n} short-lived processes and top_k 3, some must fold into \"other\""
    );
    // Each window keeps at most top_k processes plus "other"; the 2 s TTL keeps up to three
    // windows of them alive.
    assert!(
        max_series <= 3 * (3 + 1),
        "{max_series} series for one cgroup with top_k 3 and a 2 s TTL"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let left: Vec<u64> = kernel_map_tgids()
        .into_iter()
        .filter(|t| pids.contains(t))
        .collect();
    assert!(
        left.is_empty(),
        "kernel map keeps {} entries of exited processes",
        left.len()
    );
    let entries = sum(&agent.samples(), "schedlat_kernel_map_entries", &[]);
    assert!(entries > 0.0 && entries < 20_000.0, "map entries {entries}");
    assert!(agent.stop(libc::SIGTERM).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names are bytes: processes named with invalid UTF-8 and control characters get `process`
/// label values escaped as the README says (`\xNN`), and the exposition carries no raw control
/// character and no replacement character.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn process_labels_of_names_that_are_not_text_are_escaped() {
    let by_exec = Named::exec_as(EXEC_NAME);
    let by_prctl = Named::prctl(PRCTL_NAME);
    // Every process keeps its own series, however little it waits next to the rest.
    let agent = Agent::start(&["--window", "1s", "--top-k", "1000"]);
    // The exposition writes each backslash of these names as `\\`; the parser undoes that (and
    // rejects a lone backslash), so the parsed label is the agent's escaped name itself.
    let wanted = [EXEC_ESCAPED, PRCTL_ESCAPED];
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = agent.metrics();
        let samples = samples_of(&body);
        let labelled = |name: &str| {
            sum(
                &samples,
                "schedlat_runqueue_latency_seconds_count",
                &[("process", name)],
            ) > 0.0
        };
        if wanted.iter().all(|name| labelled(name)) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no series with process={wanted:?} within 20 s (pids {} and {}); metrics:\n{}",
            by_exec.pid(),
            by_prctl.pid(),
            body.lines()
                .filter(|l| l.starts_with("schedlat_runqueue_latency_seconds_count"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let raw: Vec<char> = body
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{fffd}')
        .collect();
    assert!(raw.is_empty(), "raw {raw:?} in the exposition");
}

/// The `(process, pid)` label pairs of `schedlat_runqueue_latency_seconds_count` series of
/// processes called `name` (pid `None`: no pid label).
fn series_of(body: &str, name: &str) -> Vec<Option<String>> {
    samples_of(body)
        .into_iter()
        .filter(|s| {
            s.name == "schedlat_runqueue_latency_seconds_count"
                && s.labels.get("process").map(String::as_str) == Some(name)
        })
        .map(|s| s.labels.get("pid").cloned())
        .collect()
}

/// Two processes of the same name in one cgroup share a series by default; with
/// `[labels] pid = true` each has its own, labelled with its pid.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn same_named_processes_are_told_apart_only_with_the_pid_label() {
    const NAME: &str = "schedlat-twin";
    let twins = [Named::prctl(NAME.as_bytes()), Named::prctl(NAME.as_bytes())];
    let mut pids: Vec<String> = twins.iter().map(Named::pid).collect();
    pids.sort();
    let dir = std::env::temp_dir().join(format!("schedlat-pid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schedlat.toml");
    write_config(&config, "[labels]\npid = true\n");
    let config = config.display().to_string();
    for pid_label in [false, true] {
        let mut args = vec!["--window", "1s", "--top-k", "1000"];
        if pid_label {
            args.extend(["--config", config.as_str()]);
        }
        let agent = Agent::start(&args);
        let deadline = Instant::now() + Duration::from_secs(20);
        let series = loop {
            // Two windows after the first series: both twins have waited by then.
            let series = series_of(&agent.metrics(), NAME);
            let wanted = if pid_label { 2 } else { 1 };
            if series.len() >= wanted {
                std::thread::sleep(Duration::from_secs(2));
                break series_of(&agent.metrics(), NAME);
            }
            assert!(
                Instant::now() < deadline,
                "pid label {pid_label}: no {wanted} series of {NAME} within 20 s: {series:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        if pid_label {
            let mut got: Vec<String> = series.into_iter().flatten().collect();
            got.sort();
            assert_eq!(got, pids, "pid label on: one series per twin, by pid");
        } else {
            assert_eq!(
                series,
                vec![None],
                "pid label off: one series, no pid label"
            );
        }
        assert!(agent.stop(libc::SIGTERM).success());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unix time the daemon's last window closed (0 before the first).
fn last_window_closed(samples: &[schedlat_test_support::Sample]) -> f64 {
    sum(samples, "schedlat_last_window_timestamp_seconds", &[])
}

/// Waits for the daemon to close a window; returns when it did (Unix time).
fn next_window_close(agent: &Agent) -> f64 {
    let first = last_window_closed(&agent.samples());
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let now = last_window_closed(&agent.samples());
        if (now - first).abs() > 1e-6 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no window closed in 12 s (last at {first})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The burst's run of scrapes (time, window max): the indices of the first that shows a wait
/// of at least `long` and of the last of that unbroken run (a later, unrelated long wait on
/// this shared machine starts a run of its own).
fn burst_run(scrapes: &[(f64, f64)], long: f64) -> Option<(usize, usize)> {
    let start = scrapes.iter().position(|(_, max)| *max >= long)?;
    let len = scrapes[start..]
        .iter()
        .take_while(|(_, max)| *max >= long)
        .count();
    Some((start, start + len - 1))
}

/// Pins `pid` (0: the calling thread) to CPU 0.
fn pin_to_cpu0(pid: libc::pid_t) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get a
    // pointer to it and its size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity({pid}): {}",
        std::io::Error::last_os_error()
    );
}

/// The window quantiles slide, per CPU and node and per process: the last `window` (5 s),
/// refreshed every second. A burst of long waits (a `SCHED_FIFO` busy loop on CPU 0 for 400 ms
/// starves a task pinned there) shows in the node's and the victim process's window maxima
/// within ~1-2 s of its end, stays for about the window, and is gone after it. The burst starts
/// just after a window closed, so the victim's summary shows it before the next window closes:
/// at a scrape a tumbling 5 s window (published at each close) could not have shown it.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn a_burst_shows_in_the_sliding_window_at_once_and_for_the_window() {
    const LONG: f64 = 0.2;
    let victim = Named::prctl(b"schedlat-victim");
    pin_to_cpu0(victim.pid().parse().unwrap());
    let agent = Agent::start(&["--window", "5s"]);
    let node_max = || {
        sum(
            &agent.samples(),
            "schedlat_node_window_max_latency_seconds",
            &[],
        )
    };
    // A quiet start: no wait of LONG in the last window (others may be building here).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let max = node_max();
        if max > 0.0 && max < LONG {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node window max not below {LONG} s within 30 s: {max}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let victim_max = |samples: &[schedlat_test_support::Sample]| {
        sum(
            samples,
            "schedlat_process_window_max_latency_seconds",
            &[("process", "schedlat-victim")],
        )
    };
    // Just after a window closed: the next closes about 5 s later.
    let window_before = next_window_close(&agent);
    std::thread::spawn(|| {
        pin_to_cpu0(0);
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: sched_setscheduler on the calling thread (0) with a valid sched_param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
        assert_eq!(rc, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(400) {
            std::hint::spin_loop();
        }
    })
    .join()
    .unwrap();
    let burst_end = Instant::now();
    // (seconds after the burst, node window max) every 100 ms for 10 s; the victim's window
    // max and the last window's close time at the same scrapes.
    let mut seen = Vec::new();
    let mut victim = Vec::new();
    while burst_end.elapsed() < Duration::from_secs(10) {
        let samples = agent.samples();
        let t = burst_end.elapsed().as_secs_f64();
        seen.push((
            t,
            sum(&samples, "schedlat_node_window_max_latency_seconds", &[]),
        ));
        victim.push((t, victim_max(&samples), last_window_closed(&samples)));
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some((first, last)) = burst_run(&seen, LONG) else {
        panic!("the 400 ms burst never showed in the node window max: {seen:?}");
    };
    let (first, last) = (seen[first].0, seen[last].0);
    eprintln!("burst shown from {first:.1} s to {last:.1} s after it ended");
    assert!(
        first <= 2.5,
        "burst shown {first:.1} s after it ended: {seen:?}"
    );
    assert!(
        (4.0..=7.5).contains(&last),
        "burst shown until {last:.1} s after it ended, expected about the 5 s window: {seen:?}"
    );
    let victim_scrapes: Vec<(f64, f64)> = victim.iter().map(|&(t, max, _)| (t, max)).collect();
    let Some((first, last)) = burst_run(&victim_scrapes, LONG) else {
        panic!("the burst never showed in the victim's window max: {victim:?}");
    };
    let window_then = victim[first].2;
    let (first, last) = (victim[first].0, victim[last].0);
    eprintln!("victim's burst shown from {first:.1} s to {last:.1} s after it ended");
    assert!(
        first <= 2.5 && (window_then - window_before).abs() < 1e-6,
        "the victim's summary showed the burst {first:.1} s after it ended, with the last window \
         closed at {window_then} (the burst started after the close at {window_before}; a \
         tumbling window shows it only after the next close): {victim:?}"
    );
    assert!(
        (4.0..=7.5).contains(&last),
        "victim's burst shown until {last:.1} s after it ended, expected about the 5 s window: \
         {victim:?}"
    );
    assert!(agent.stop(libc::SIGTERM).success());
}
