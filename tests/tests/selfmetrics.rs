//! Privileged integration tests of the daemon's own metrics: `process_*` against the agent's
//! /proc files, the incident state and an unusable incident directory, `/metrics` before the
//! first window, and the label values of the preemptor breakdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

mod common;
use common::{Agent, Workload, samples_of, schedlat_bin};
use schedlat_test_support::{Sample, sum};

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "sysconf(_SC_CLK_TCK) = {ticks}");
    ticks as f64
}

/// Fields of /proc/<pid>/stat by proc(5) number (3 and up).
fn stat_field(pid: u32, n: usize) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_name = stat.rsplit_once(')').expect("stat has a name").1;
    after_name
        .split_whitespace()
        .nth(n - 3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("field {n} of {stat:?}"))
}

/// utime + stime of /proc/<pid>/stat, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    (stat_field(pid, 14) + stat_field(pid, 15)) as f64 / clock_ticks()
}

/// A `kB` or count field of /proc/<pid>/status (`VmRSS` in bytes, `Threads` as is).
fn status_field(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim();
    match value.strip_suffix("kB") {
        Some(kb) => kb.trim().parse::<u64>().unwrap() * 1024,
        None => value.parse().unwrap(),
    }
}

fn one(samples: &[Sample], name: &str) -> f64 {
    let values: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .collect();
    assert_eq!(
        values.len(),
        1,
        "{name}: one sample expected, got {values:?}"
    );
    values[0]
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

/// A scratch directory of this test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("schedlat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `schedlat run --check-config --incident-dir DIR`: (exit code, stdout, stderr).
fn check_config(dir: &Path) -> (i32, String, String) {
    let out = Command::new(schedlat_bin())
        .args(["run", "--check-config", "--incident-dir"])
        .arg(dir)
        .output()
        .expect("run schedlat run --check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Short-lived processes on busy CPUs: their long waits reach the agent after they exited
/// (often after the window that freed their kernel entries), and must still be labelled with
/// their cgroup, not `unknown`.
fn churn_short_processes() {
    let hogs: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new("timeout")
                .args(["4", "sh", "-c", "while :; do :; done"])
                .spawn()
                .expect("spawn a hog")
        })
        .collect();
    // A shell reaps them as they exit (zombies would keep their /proc entries).
    let churn = Command::new("bash")
        .arg("-c")
        .arg(
            "for n in $(seq 300); do \
               sh -c 'i=0; while [ $i -lt 300 ]; do i=$((i+1)); done' & \
             done; wait",
        )
        .spawn()
        .expect("spawn the churn");
    for mut child in std::iter::once(churn).chain(hogs) {
        child.wait().expect("wait for the churn");
    }
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn own_cpu_and_memory_metrics_agree_with_proc() {
    // Every wait of 10 us or more is an event: with a hog and a sleeper sharing CPU 0 and
    // scrapes back to back, the agent is busy.
    let agent = Agent::start(&["--event-threshold", "10us", "--window", "1s"]);
    let pid = agent.child.id();
    let mut workload = Workload::start(4000, 200, 300);
    workload.go();
    churn_short_processes();
    let busy_until = Instant::now() + Duration::from_secs(6);
    let mut scrapes = 0;
    while Instant::now() < busy_until {
        let _ = agent.metrics();
        scrapes += 1;
    }
    workload.finish();

    // /proc before and after the scrape bound what the agent saw while answering it.
    let cpu_before = cpu_seconds(pid);
    let rss_before = status_field(pid, "VmRSS");
    let text = agent.metrics();
    let cpu_after = cpu_seconds(pid);
    let rss_after = status_field(pid, "VmRSS");
    let m = samples_of(&text);
    let cpu = one(&m, "process_cpu_seconds_total");
    let tick = 1.0 / clock_ticks();
    eprintln!(
        "{scrapes} scrapes; agent CPU: /proc {cpu_before:.3}..{cpu_after:.3} s, metric \
         {cpu:.3} s; RSS: /proc {rss_before}..{rss_after} B, metric {}",
        one(&m, "process_resident_memory_bytes")
    );
    assert!(
        cpu_before >= 0.2,
        "the agent should have used some CPU by now; /proc says {cpu_before} s"
    );
    assert!(
        cpu >= cpu_before - 2.0 * tick && cpu <= cpu_after + 2.0 * tick,
        "process_cpu_seconds_total {cpu} outside /proc's {cpu_before}..{cpu_after} (+- 2 ticks)"
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "a counter, as Prometheus's standard process metrics have it"
    );

    let rss = one(&m, "process_resident_memory_bytes");
    let slack = 2.0 * 1024.0 * 1024.0;
    assert!(
        rss >= rss_before.min(rss_after) as f64 - slack
            && rss <= rss_before.max(rss_after) as f64 + slack,
        "process_resident_memory_bytes {rss} vs VmRSS {rss_before}..{rss_after} (+- 2 MiB)"
    );
    let vsize = stat_field(pid, 23) as f64;
    let virt = one(&m, "process_virtual_memory_bytes");
    assert!(
        (virt - vsize).abs() <= vsize * 0.1,
        "process_virtual_memory_bytes {virt} vs /proc vsize {vsize}"
    );
    let threads = status_field(pid, "Threads") as f64;
    let exported_threads = one(&m, "process_threads");
    assert!(
        (exported_threads - threads).abs() <= 2.0,
        "process_threads {exported_threads} vs /proc {threads}"
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    let open_fds = one(&m, "process_open_fds");
    assert!(
        (open_fds - fds).abs() <= 3.0,
        "process_open_fds {open_fds} vs /proc {fds} (the scrape's own socket and dir fd aside)"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .expect("Max open files");
    assert!(
        (one(&m, "process_max_fds") - soft).abs() < 0.5,
        "process_max_fds vs the soft limit {soft}"
    );
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .expect("btime");
    let start = btime + stat_field(pid, 22) as f64 / clock_ticks();
    let exported_start = one(&m, "process_start_time_seconds");
    assert!(
        (exported_start - start).abs() < 0.02,
        "process_start_time_seconds {exported_start} vs /proc {start}"
    );

    // The preemptor breakdown, busy by now, uses only documented label values.
    assert_documented_label_values(&m);
    assert!(agent.stop(libc::SIGTERM).success());
}

/// No `-` or empty label values (build info's `kernel` aside); the idle preemptor's cgroup is
/// `[idle]`.
fn assert_documented_label_values(m: &[Sample]) {
    let preemptors: Vec<&Sample> = m
        .iter()
        .filter(|s| s.name == "schedlat_preemptor_waits_total")
        .collect();
    assert!(
        !preemptors.is_empty(),
        "with a 10us event threshold and a contended CPU there must be preemptors"
    );
    for Sample { name, labels, .. } in m {
        for (key, value) in labels {
            assert!(
                (value != "-" && !value.is_empty()) || key == "kernel",
                "undocumented label value {key}={value:?} in {name}"
            );
        }
    }
    let idle = preemptors
        .iter()
        .filter(|s| s.labels["preemptor"] == "[idle]")
        .count();
    let unknown = preemptors
        .iter()
        .filter(|s| s.labels["cgroup"] == "unknown" || s.labels["preemptor_cgroup"] == "unknown")
        .count();
    let waits = preemptors.iter().fold(0.0, |total, s| total + s.value);
    let unknown_waits = preemptors
        .iter()
        .filter(|s| s.labels["cgroup"] == "unknown" || s.labels["preemptor_cgroup"] == "unknown")
        .fold(0.0, |total, s| total + s.value);
    eprintln!(
        "{} preemptor label sets, {idle} with the idle task, {unknown} with an unknown cgroup \
         ({unknown_waits} of {waits} waits)",
        preemptors.len()
    );
    assert!(
        unknown_waits <= waits * 0.002,
        "{unknown_waits} of {waits} long waits have an unknown cgroup: the kernel's record of \
         an exited process must label its last waits"
    );
    for Sample { labels, .. } in &preemptors {
        if labels["preemptor"] == "[idle]" {
            assert_eq!(
                labels["preemptor_cgroup"], "[idle]",
                "the idle task's cgroup is [idle]"
            );
        }
    }
}

/// Sends SIGHUP and waits (up to 12 s: the metrics move at window ends) until the agent
/// counted `reloads` successful reloads; returns that scrape.
fn reload_and_scrape(agent: &Agent, reloads: f64) -> Vec<Sample> {
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let m = agent.samples();
        let done = sum(
            &m,
            "schedlat_config_reloads_total",
            &[("result", "success")],
        );
        if (done - reloads).abs() < 1e-9 {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "reload {reloads} not counted within 12 s (counted {done}); stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn metrics_are_complete_from_the_first_scrape() {
    let started = Instant::now();
    // A long window: the scrape below certainly comes before the first one closes.
    let agent = Agent::start(&["--window", "60s"]);
    let text = agent.metrics();
    let ready_after = started.elapsed();
    let m = samples_of(&text);
    let osrelease = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let build: Vec<_> = m
        .iter()
        .filter(|s| s.name == "schedlat_build_info")
        .collect();
    assert_eq!(build.len(), 1, "{text}");
    assert_eq!(
        build[0].label("kernel"),
        Some(osrelease.trim()),
        "build info at the first scrape ({ready_after:?} after start) carries the kernel"
    );
    assert!(
        (one(&m, "schedlat_window_seconds") - 60.0).abs() < 1e-9,
        "window_seconds"
    );
    assert!(
        (one(&m, "schedlat_kernel_map_capacity") - 16384.0).abs() < 1e-9,
        "map capacity"
    );
    assert!(
        (one(&m, "schedlat_incidents_enabled") - 1.0).abs() < 1e-9,
        "incidents on (scratch directory)"
    );
    assert!(has(&m, "schedlat_kernel_map_folded_waits_total"), "{text}");
    assert!(has(&m, "process_cpu_seconds_total"), "{text}");
    for absent in [
        "schedlat_last_window_timestamp_seconds",
        "schedlat_window_folded_processes",
        "schedlat_kernel_map_entries",
        "schedlat_node_window_latency_seconds_count",
        "schedlat_cpu_runqueue_length",
        "schedlat_incidents_disabled_info",
    ] {
        assert!(
            !has(&m, absent),
            "{absent} is not known before the first window and must be absent:\n{text}"
        );
    }
    assert!(agent.stop(libc::SIGTERM).success());
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn an_unusable_incident_directory_is_reported_not_hidden() {
    let scratch = Scratch::new("incident-dir");
    let file = scratch.0.join("a-file");
    std::fs::write(&file, b"not a directory\n").unwrap();

    // The daemon runs without incidents and says why: metrics and log.
    let agent = Agent::start(&["--incident-dir", file.to_str().unwrap()]);
    let m = agent.samples();
    assert!(
        one(&m, "schedlat_incidents_enabled").abs() < 1e-9,
        "incidents_enabled must be 0 for a regular file"
    );
    assert!(
        (sum(
            &m,
            "schedlat_incidents_disabled_info",
            &[("reason", "not_a_directory")]
        ) - 1.0)
            .abs()
            < 1e-9,
        "schedlat_incidents_disabled_info{{reason=\"not_a_directory\"}} 1 expected; stderr:\n{}",
        agent.stderr()
    );
    let stderr = agent.stderr();
    assert!(
        stderr.contains("incidents disabled (reason not_a_directory)")
            && stderr.contains(file.to_str().unwrap()),
        "a log line with the reason and the directory: {stderr}"
    );
    // A reload keeps the reason: the directory is still what is wrong.
    let m = reload_and_scrape(&agent, 1.0);
    assert!(
        (sum(
            &m,
            "schedlat_incidents_disabled_info",
            &[("reason", "not_a_directory")]
        ) - 1.0)
            .abs()
            < 1e-9,
        "after a reload the reason is still not_a_directory: {m:?}"
    );
    assert!(agent.stop(libc::SIGTERM).success());

    check_config_names_every_bad_directory(&scratch.0, &file);
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn a_reload_turns_incidents_off_and_on_again_only_with_a_restart() {
    let scratch = Scratch::new("incident-reload");
    let config = scratch.0.join("schedlat.toml");
    std::fs::write(&config, "window = \"1s\"\n[incidents]\nenabled = true\n").unwrap();
    let agent = Agent::start(&["--config", config.to_str().unwrap()]);
    let m = agent.samples();
    assert!((one(&m, "schedlat_incidents_enabled") - 1.0).abs() < 1e-9);
    assert!(!has(&m, "schedlat_incidents_disabled_info"));

    std::fs::write(&config, "window = \"1s\"\n[incidents]\nenabled = false\n").unwrap();
    let m = reload_and_scrape(&agent, 1.0);
    assert!(
        one(&m, "schedlat_incidents_enabled").abs() < 1e-9,
        "incidents off after the reload"
    );
    assert!(
        (sum(
            &m,
            "schedlat_incidents_disabled_info",
            &[("reason", "config")]
        ) - 1.0)
            .abs()
            < 1e-9,
        "reason config: {m:?}"
    );

    std::fs::write(&config, "window = \"1s\"\n[incidents]\nenabled = true\n").unwrap();
    let m = reload_and_scrape(&agent, 2.0);
    assert!(
        one(&m, "schedlat_incidents_enabled").abs() < 1e-9,
        "turning them on again takes a restart"
    );
    assert!(
        (sum(
            &m,
            "schedlat_incidents_disabled_info",
            &[("reason", "restart_needed")]
        ) - 1.0)
            .abs()
            < 1e-9,
        "reason restart_needed: {m:?}"
    );
    assert!(
        sum(
            &m,
            "schedlat_events_lost_total",
            &[("reason", "cpu_samples_lost")]
        )
        .abs()
            < 1e-9,
        "the sampler's samples are discarded, not lost, while incidents are off"
    );
    assert!(agent.stop(libc::SIGTERM).success());
}

/// `--check-config` exits 2 naming the directory and the reason for every kind of unusable
/// directory, and accepts (without creating it) one that can be created.
fn check_config_names_every_bad_directory(scratch: &Path, file: &Path) {
    // --check-config fails, names the directory and the reason.
    let link = scratch.join("a-link");
    std::os::unix::fs::symlink(scratch, &link).unwrap();
    let nobody = scratch.join("nobody");
    std::fs::create_dir(&nobody).unwrap();
    std::os::unix::fs::chown(&nobody, Some(65534), Some(65534)).unwrap();
    let read_only = scratch.join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "schedlat-test"])
        .arg(&read_only)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mounting a read-only tmpfs");
    let cases = [
        (file.to_path_buf(), "not_a_directory"),
        (file.join("below"), "not_a_directory"),
        (link, "symlink"),
        (nobody, "wrong_owner"),
        (read_only.join("incidents"), "read_only"),
    ];
    let mut failures = Vec::new();
    for (dir, reason) in &cases {
        let (code, stdout, stderr) = check_config(dir);
        eprintln!(
            "--check-config --incident-dir {}: exit {code}: {}",
            dir.display(),
            stderr.trim()
        );
        if code != 2 || !stderr.contains(reason) || !stderr.contains(dir.to_str().unwrap()) {
            failures.push(format!(
                "{}: want exit 2 naming it and `{reason}`, got exit {code}\nstdout: {stdout}\nstderr: {stderr}",
                dir.display()
            ));
        }
    }
    let _ = Command::new("umount").arg(&read_only).status();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A directory that does not exist but can be: OK, and not created by the check.
    let missing = scratch.join("new/incidents");
    let (code, stdout, stderr) = check_config(&missing);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("configuration OK") && stdout.contains("will be created"),
        "{stdout}"
    );
    assert!(
        !scratch.join("new").exists(),
        "--check-config must not create the directory"
    );

    // Permission denied: the check as an unprivileged user, for a directory under root's 0755.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(schedlat_bin())
        .args(["run", "--check-config", "--incident-dir"])
        .arg(scratch.join("incidents"))
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("permission_denied"), "{stderr}");
}
