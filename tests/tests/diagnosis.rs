//! The diagnosis on real scenarios: for each cause this machine can produce, a workload that
//! makes it true, `schedlat trace --format json` on the victim, and the claim checked against
//! what the workload makes true: the dominant cause of the long waits (at least 95 % of them)
//! and the main culprit's share (within 10 points of what it must be).
//!
//! Needs root and a quiet 2+ CPU machine (as CI is): other load on the CPUs changes who holds
//! them. Run with `cargo xtask test`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;

mod common;
use common::{
    scenario::{Cgroup, cpus, hog, unified, victim},
    schedlat_bin,
};

/// Traces `pid` for `seconds` from CPU `cpu` (the tracer's own CPU time is occupancy too:
/// it is kept where the scenario wants it); the events (JSON lines with a diagnosis).
fn trace(pid: u32, threshold: &str, seconds: u32, cpu: usize) -> Vec<Value> {
    let out = Command::new("taskset")
        .args(["-c", &cpu.to_string(), &schedlat_bin()])
        .args([
            "trace",
            "--pid",
            &pid.to_string(),
            "--threshold",
            threshold,
            "--duration",
            &format!("{seconds}s"),
            "--format",
            "json",
        ])
        .output()
        .expect("run schedlat trace");
    assert!(
        out.status.success(),
        "schedlat trace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("cause").is_some())
        .collect()
}

/// Asserts that `cause` explains at least 95 % of the wait time of `events` (and at least `min`
/// of them have it), and returns those. By wait time, not count: a few scenarios give a handful
/// of long waits (RT throttling: one ~950 ms wait a second), where one short wait behind a
/// kernel thread at the end of a window would be a quarter of the count.
fn dominant<'a>(events: &'a [Value], cause: &str, min: usize) -> Vec<&'a Value> {
    let matching: Vec<&Value> = events.iter().filter(|e| e["cause"] == cause).collect();
    let wait = |e: &&Value| e["wait_ns"].as_u64().unwrap() as f64;
    let matching_ns: f64 = matching.iter().map(wait).sum();
    let all_ns: f64 = events.iter().map(|e| wait(&e)).sum();
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{}:{}", e["cause"], e["wait_ns"]))
        .collect();
    assert!(
        matching.len() >= min,
        "expected at least {min} waits diagnosed {cause}, got {} of {}: {summary:?}",
        matching.len(),
        events.len()
    );
    assert!(
        matching_ns >= 0.95 * all_ns,
        "{cause} explains only {:.1} % of the long-wait time ({} of {} long waits): {summary:?}",
        100.0 * matching_ns / all_ns,
        matching.len(),
        events.len()
    );
    println!(
        "{cause}: {} of {} long waits, {:.1} % of their time; first verdict: {}",
        matching.len(),
        events.len(),
        100.0 * matching_ns / all_ns,
        matching[0]["verdict"]
    );
    matching
}

/// The mean share of the wait that `pids` held, over `events` (0 where they are not among the
/// culprits); and that they are the main culprit of at least 90 % of the events.
fn culprit_share(events: &[&Value], pids: &[u32]) -> f64 {
    let mut main = 0;
    let total: f64 = events
        .iter()
        .map(|e| {
            let culprits = e["culprits"].as_array().unwrap();
            if culprits
                .first()
                .is_some_and(|c| pids.contains(&(c["tgid"].as_u64().unwrap() as u32)))
            {
                main += 1;
            }
            culprits
                .iter()
                .filter(|c| pids.contains(&(c["tgid"].as_u64().unwrap() as u32)))
                .map(|c| c["share"].as_f64().unwrap())
                .sum::<f64>()
        })
        .sum();
    assert!(
        main * 10 >= events.len() * 9,
        "{pids:?} is the main culprit of only {main} of {} waits: {events:?}",
        events.len()
    );
    let mean = total / events.len() as f64;
    println!(
        "culprit {pids:?}: main culprit of {main} of {} waits, mean share {mean:.3}",
        events.len()
    );
    mean
}

/// The victim pinned to CPU 1 behind `hog`; CPU 0 kept busy by a fair hog (so no idle CPU
/// makes it `affinity`) and running the tracer. Returns the long waits.
fn pinned_behind(hog_cgroup: &Cgroup, victim_cgroup: &Cgroup, busy: &Cgroup) -> (Vec<Value>, u32) {
    assert!(cpus() >= 2, "needs two CPUs");
    let h = hog(&[hog_cgroup], &["taskset", "-c", "1"]);
    let _busy = hog(&[busy], &["taskset", "-c", "0"]);
    let v = victim(&[victim_cgroup], &["taskset", "-c", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    (trace(v.pid(), "1ms", 3, 0), h.pid())
}

#[test]
#[ignore = "needs root and the real kernel"]
fn noisy_neighbour_in_another_cgroup() {
    let root = unified();
    let noisy = Cgroup::new(&root, "noisy");
    let app = Cgroup::new(&root, "app");
    let (events, hog) = pinned_behind(&noisy, &app, &noisy);
    let matching = dominant(&events, "noisy_neighbour", 5);
    // Only the hog runs on the victim's CPU while it waits: it holds all of the wait.
    let share = culprit_share(&matching, &[hog]);
    assert!(share >= 0.9, "the hog's share is {share:.2}, expected ~1.0");
    for e in &matching {
        let cgroup = e["culprits"][0]["cgroup"].as_str().unwrap();
        assert!(cgroup.contains("schedlat-diag-noisy"), "{e}");
    }
}

#[test]
#[ignore = "needs root and the real kernel"]
fn self_contention_in_its_own_cgroup() {
    let root = unified();
    let app = Cgroup::new(&root, "self");
    let other = Cgroup::new(&root, "selfother");
    let (events, hog) = pinned_behind(&app, &app, &other);
    let matching = dominant(&events, "self_contention", 5);
    let share = culprit_share(&matching, &[hog]);
    assert!(share >= 0.9, "the hog's share is {share:.2}, expected ~1.0");
}

/// Victims that live ~100 ms each (60 rounds of 200 us busy, 1 ms asleep, pinned behind a hog
/// of their own cgroup) are mostly gone from /proc by the time their long waits are read: the programs read the waiting
/// task's cgroup in the kernel, so the diagnosis still knows it is the hog's cgroup
/// (`self_contention`). Read from /proc, most of them were `unknown` ("the waiting task's
/// cgroup is not known"); a wrong id (another hierarchy's, the root's) would read
/// `noisy_neighbour`.
#[test]
#[ignore = "needs root and the real kernel"]
fn short_lived_victims_keep_their_cgroup() {
    assert!(cpus() >= 2, "needs two CPUs");
    let root = unified();
    let app = Cgroup::new(&root, "shortlived");
    let other = Cgroup::new(&root, "shortother");
    let h = hog(&[&app], &["taskset", "-c", "1"]);
    // CPU 0 busy too (another cgroup), so the pinned victims have no idle CPU to blame.
    let _busy = hog(&[&other], &["taskset", "-c", "0"]);
    std::thread::sleep(Duration::from_millis(300));
    let tracer = Command::new("taskset")
        .args(["-c", "0", &schedlat_bin()])
        .args([
            "trace",
            "--threshold",
            "1ms",
            "--duration",
            "7s",
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run schedlat trace");
    std::thread::sleep(Duration::from_millis(800));
    // schedlat-busy under a name of its own, exec'd in the cgroup: its waits are all in the
    // cgroup (before the move, the forked child is in the root cgroup, and its waits there
    // are rightly another cause).
    let shell = std::env::temp_dir().join(format!("shortvictim{}", std::process::id()));
    std::fs::copy(common::scenario::BUSY, &shell).expect("copy schedlat-busy");
    let mut victims = std::collections::HashSet::new();
    for _ in 0..30 {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec taskset -c 1 {} 200 1000 60",
            app.0.display(),
            shell.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .expect("spawn a short-lived victim");
        victims.insert(u64::from(child.id()));
        assert!(child.wait().expect("wait").success(), "victim failed");
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = tracer.wait_with_output().expect("schedlat trace");
    let _ = std::fs::remove_file(&shell);
    assert!(out.status.success(), "schedlat trace failed");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("cause").is_some())
        .filter(|v| v["tgid"].as_u64().is_some_and(|t| victims.contains(&t)))
        // Only the renamed shell's waits (the kernel's name: its first 15 bytes).
        .filter(|v| {
            v["comm"]
                .as_str()
                .is_some_and(|c| c.starts_with("shortvictim"))
        })
        .collect();
    let matching = dominant(&events, "self_contention", 10);
    let share = culprit_share(&matching, &[h.pid()]);
    assert!(share >= 0.9, "the hog's share is {share:.2}, expected ~1.0");
}

#[test]
#[ignore = "needs root and the real kernel"]
fn affinity_pinned_to_a_busy_cpu_while_another_idles() {
    assert!(cpus() >= 2, "needs two CPUs");
    let root = unified();
    let app = Cgroup::new(&root, "pinned");
    let h = hog(&[&app], &["taskset", "-c", "1"]);
    let v = victim(&[&app], &["taskset", "-c", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    // The tracer on CPU 0 (it mostly sleeps): CPU 0 stays idle.
    let events = trace(v.pid(), "1ms", 3, 0);
    let matching = dominant(&events, "affinity", 5);
    let share = culprit_share(&matching, &[h.pid()]);
    assert!(share >= 0.9, "the hog's share is {share:.2}, expected ~1.0");
    let verdict = matching[0]["verdict"].as_str().unwrap();
    assert!(verdict.contains("may only run on CPU 1"), "{verdict}");
    assert!(verdict.contains("CPU 0 sat idle"), "{verdict}");
}

#[test]
#[ignore = "needs root and the real kernel"]
fn real_time_hog() {
    assert!(cpus() >= 2, "needs two CPUs");
    let root = unified();
    let app = Cgroup::new(&root, "rtvictim");
    let other = Cgroup::new(&root, "rtother");
    // CPU 1: a SCHED_FIFO hog (the kernel's RT throttling leaves others 5 % of each second).
    // CPU 0: a fair hog, so the pinned victim has no idle CPU to blame (not affinity).
    let rt = hog(&[&other], &["taskset", "-c", "1", "chrt", "-f", "10"]);
    let _fair = hog(&[&other], &["taskset", "-c", "0"]);
    let v = victim(&[&app], &["taskset", "-c", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let events = trace(v.pid(), "5ms", 6, 0);
    let matching = dominant(&events, "rt", 3);
    let share = culprit_share(&matching, &[rt.pid()]);
    assert!(
        share >= 0.9,
        "the RT hog's share is {share:.2}, expected ~1.0"
    );
}

/// Runs a CPU-bound victim under a quota of 10 ms per 100 ms: its waits are throttled
/// ~90 ms; the CPU is mostly idle meanwhile.
fn throttled_under(cgroup: &Cgroup) {
    let v = hog(&[cgroup], &[]);
    std::thread::sleep(Duration::from_millis(300));
    let events = trace(v.pid(), "20ms", 3, 0);
    let matching = dominant(&events, "throttled", 5);
    for e in &matching {
        let verdict = e["verdict"].as_str().unwrap();
        assert!(verdict.contains("10.00ms per 100.00ms"), "{verdict}");
    }
}

#[test]
#[ignore = "needs root and the real kernel"]
fn throttled_by_a_cgroup_v1_cpu_quota() {
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if !v1.join("cpu.cfs_quota_us").exists() {
        println!("no cgroup v1 cpu controller at {}: skipped", v1.display());
        return;
    }
    let limited = Cgroup::new(v1, "quota");
    limited.write("cpu.cfs_period_us", "100000");
    limited.write("cpu.cfs_quota_us", "10000");
    throttled_under(&limited);
}

#[test]
#[ignore = "needs root and the real kernel"]
fn throttled_by_a_cgroup_v2_cpu_max() {
    let root = unified();
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "cpu") {
        println!(
            "the cpu controller is not on cgroup v2 here ({}: {controllers:?}): skipped",
            root.display()
        );
        return;
    }
    let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
    let limited = Cgroup::new(&root, "cpumax");
    limited.write("cpu.max", "10000 100000");
    throttled_under(&limited);
}
