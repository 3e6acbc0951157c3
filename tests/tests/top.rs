//! `schedlat top` on a real scenario: a victim pinned behind a hog of another cgroup (a noisy
//! neighbour), viewed through a real terminal (tmux: send-keys, capture-pane) and in batch
//! mode. The claims are checked against what the workload makes true: the victim's row says
//! `noisy_neighbour` with the hog as main culprit, its cgroup's row too, keys switch the view
//! and the order, `q` quits with status 0.
//!
//! Needs root, tmux and a quiet 2+ CPU machine (as CI is). Run with `cargo xtask test`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::{
    scenario::{Cgroup, Proc, cpus, hog, unified, victim},
    schedlat_bin,
};

/// A tmux server of its own (`-L`) with one detached session; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `tmux -L SOCKET ARGS` on CPU 0. The server (forked by the first command, it keeps this
    /// affinity) and every client stay there: redrawing on the victim's CPU 1 would hold it
    /// during its waits.
    fn command(socket: &str, args: &[&str]) -> Command {
        let mut command = Command::new("taskset");
        command.args(["-c", "0", "tmux", "-L", socket]).args(args);
        command
    }

    fn start(command: &str, width: u32, height: u32) -> Self {
        let socket = format!("schedlat-top-test-{}", std::process::id());
        let (width, height) = (width.to_string(), height.to_string());
        let status = Self::command(
            &socket,
            &[
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                &width,
                "-y",
                &height,
                command,
            ],
        )
        .status()
        .expect("run tmux (installed by `cargo xtask setup`)");
        assert!(status.success(), "tmux new-session failed");
        Self { socket }
    }

    fn capture(&self) -> String {
        let out = Self::command(&self.socket, &["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn send(&self, key: &str) {
        let status = Self::command(&self.socket, &["send-keys", "-t", "top", key])
            .status()
            .expect("tmux send-keys");
        assert!(status.success(), "tmux send-keys {key} failed");
    }

    /// Captures the screen until `done` holds (at most `timeout`); the last screen.
    fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if done(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < timeout,
                "after {timeout:?} the screen still does not show {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Self::command(&self.socket, &["kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The row whose first column is `first`.
fn row<'a>(screen: &'a str, first: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
}

/// A duration as `schedlat` prints it (`812ns`, `4.5us`, `3.21ms`, `1.02s`), in ns.
fn parse_ns(text: &str) -> f64 {
    for (unit, scale) in [("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)] {
        if let Some(number) = text.strip_suffix(unit)
            && let Ok(value) = number.parse::<f64>()
        {
            return value * scale;
        }
    }
    panic!("not a duration: {text:?}");
}

/// The victim pinned to CPU 1 behind a hog of another cgroup; CPU 0 kept busy by a hog of
/// that cgroup too (no idle CPU: not `affinity`) and running `schedlat top`.
struct Scenario {
    // Fields drop in this order: the processes first, so their cgroups can be removed.
    hog: Proc,
    victim: Proc,
    _busy: Proc,
    noisy: Cgroup,
    app: Cgroup,
}

impl Scenario {
    fn start(name: &str) -> Self {
        assert!(cpus() >= 2, "needs two CPUs");
        let root = unified();
        let noisy = Cgroup::new(&root, &format!("{name}noisy"));
        let app = Cgroup::new(&root, &format!("{name}app"));
        let hog_proc = hog(&[&noisy], &["taskset", "-c", "1"]);
        let busy = hog(&[&noisy], &["taskset", "-c", "0"]);
        let victim_proc = victim(&[&app], &["taskset", "-c", "1"]);
        std::thread::sleep(Duration::from_millis(300));
        Self {
            hog: hog_proc,
            victim: victim_proc,
            _busy: busy,
            noisy,
            app,
        }
    }

    fn dir_name(cgroup: &Cgroup) -> String {
        cgroup.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

#[test]
#[ignore = "needs root, tmux and the real kernel"]
#[expect(
    clippy::too_many_lines,
    reason = "one terminal session, key by key, read top to bottom"
)]
fn live_view_in_a_terminal() {
    let s = Scenario::start("top");
    let victim = s.victim.pid().to_string();
    let culprit = format!("schedlat-busy[{}]", s.hog.pid());
    let app = Scenario::dir_name(&s.app);
    let status = PathBuf::from(format!(
        "/tmp/schedlat-top-test-{}.status",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&status);
    let tmux = Tmux::start(
        &format!(
            "taskset -c 0 {} top --window 3s --refresh 1s; echo $? > {}",
            schedlat_bin(),
            status.display()
        ),
        230,
        50,
    );

    // The process view: the victim's row names the cause and the hog, which holds ~100 % of
    // its long waits (a frame may show less when something else ran on CPU 1 meanwhile: a
    // CI run saw 83 %; the window slides past it).
    let share_of = |line: &str| -> Option<u32> {
        line.split(&culprit)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pct| pct.strip_suffix('%'))
            .and_then(|pct| pct.parse().ok())
    };
    let screen = tmux.wait_for(
        Duration::from_secs(20),
        "the victim as noisy_neighbour with the hog holding >= 90 %",
        |s| {
            row(s, &victim).is_some_and(|r| {
                r.contains("noisy_neighbour") && share_of(r).is_some_and(|share| share >= 90)
            })
        },
    );
    let line = row(&screen, &victim).unwrap();
    println!("process view: {line}");
    assert!(
        screen.contains("process view, sorted by total wait"),
        "{screen}"
    );
    assert!(line.ends_with(&app), "the victim's cgroup is {app}: {line}");

    // Tab: the cgroup view; the victim's cgroup has the same diagnosis.
    tmux.send("Tab");
    // Its rows start with the cgroup's path (its tail when the path is longer than the column).
    let cgroup_row = |l: &str, dir: &str| {
        l.split_whitespace().next().is_some_and(|first| {
            first.ends_with(dir) || dir.ends_with(first.trim_start_matches('…'))
        })
    };
    let screen = tmux.wait_for(Duration::from_secs(5), "the cgroup view", |s| {
        s.contains("cgroup view")
            && s.lines().any(|l| {
                cgroup_row(l, &app) && l.contains("noisy_neighbour") && l.contains(&culprit)
            })
    });
    println!(
        "cgroup view: {}",
        screen.lines().find(|l| cgroup_row(l, &app)).unwrap()
    );
    assert!(
        screen
            .lines()
            .any(|l| cgroup_row(l, &Scenario::dir_name(&s.noisy))),
        "the hogs' cgroup has a row too:\n{screen}"
    );

    // m: sorted by the longest wait, largest first.
    tmux.send("m");
    let screen = tmux.wait_for(Duration::from_secs(5), "the order by max", |s| {
        s.contains("cgroup view, sorted by max")
    });
    let header = screen
        .lines()
        .find(|l| l.starts_with("CGROUP"))
        .expect("the table header");
    let end = header.find("MAX").unwrap() + 3;
    let maxima: Vec<f64> = screen
        .lines()
        .skip_while(|l| !l.starts_with("CGROUP"))
        .skip(1)
        .filter(|l| l.len() >= end)
        .map(|l| parse_ns(l[..end].split_whitespace().last().unwrap()))
        .collect();
    assert!(maxima.len() >= 2, "rows:\n{screen}");
    assert!(
        maxima.windows(2).all(|w| w[0] >= w[1]),
        "not sorted by MAX: {maxima:?}\n{screen}"
    );

    // p: the screen holds its frame (the refresh time stays) until p again.
    let time_of = |screen: &str| -> String {
        let after = screen.split("schedlat top - ").nth(1).expect("the title");
        after.split_whitespace().next().unwrap().to_owned()
    };
    tmux.send("p");
    let paused = tmux.wait_for(Duration::from_secs(5), "the pause", |s| {
        s.contains("PAUSED")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let still = tmux.capture();
    assert!(still.contains("PAUSED"), "{still}");
    assert_eq!(time_of(&paused), time_of(&still), "paused: the same frame");
    tmux.send("p");
    let resumed = tmux.wait_for(Duration::from_secs(5), "the resume", |s| {
        !s.contains("PAUSED") && time_of(s) != time_of(&paused)
    });
    println!(
        "paused at {}, resumed at {}",
        time_of(&paused),
        time_of(&resumed)
    );

    // h: the help; q: quits, exit status 0.
    tmux.send("h");
    tmux.wait_for(Duration::from_secs(5), "the help", |s| {
        s.contains("CULPRIT  the task")
    });
    tmux.send("q");
    let start = Instant::now();
    let code = loop {
        if let Ok(code) = std::fs::read_to_string(&status) {
            break code;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::fs::remove_file(&status);
    assert_eq!(code.trim(), "0", "schedlat top's exit status");
}

#[test]
#[ignore = "needs root and the real kernel"]
fn batch_json_frames() {
    let s = Scenario::start("topjson");
    let app = Scenario::dir_name(&s.app);
    let out = Command::new("taskset")
        .args(["-c", "0", &schedlat_bin()])
        .args([
            "top", "--batch", "-n", "4", "--window", "2s", "--format", "json",
        ])
        .output()
        .expect("run schedlat top");
    assert!(
        out.status.success(),
        "schedlat top failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(frames.len(), 4, "-n 4: four frames");
    let covered: Vec<f64> = frames
        .iter()
        .map(|f| f["covered_seconds"].as_f64().unwrap())
        .collect();
    // One refresh (about 1 s) more per frame until the 2 s window is full, then it slides.
    assert!(covered[0] > 0.8 && covered[0] < 1.5, "{covered:?}");
    assert!(covered[3] > 1.8 && covered[3] < 2.5, "{covered:?}");
    let last = &frames[3];
    let victim = last["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == s.victim.pid())
        .unwrap_or_else(|| panic!("the victim has a row: {last}"));
    println!("victim: {victim}");
    assert_eq!(victim["cause"], "noisy_neighbour", "{victim}");
    assert_eq!(victim["culprit"]["pid"], s.hog.pid(), "{victim}");
    assert!(victim["waits"].as_u64().unwrap() > 100, "{victim}");
    assert!(victim["long_waits"].as_u64().unwrap() > 0, "{victim}");
    assert!(victim["p99_ns"].as_u64().unwrap() <= victim["max_ns"].as_u64().unwrap());
    assert!(
        victim["cgroup"].as_str().unwrap().ends_with(&app),
        "{victim}"
    );
    let cgroup = last["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cgroup"].as_str().unwrap().ends_with(&app))
        .unwrap_or_else(|| panic!("the victim's cgroup has a row: {last}"));
    assert_eq!(cgroup["processes"], 1, "{cgroup}");
    assert_eq!(cgroup["cause"], "noisy_neighbour", "{cgroup}");
    assert!(last["machine"]["waits"].as_u64().unwrap() >= victim["waits"].as_u64().unwrap());
}

/// `--cgroup` (given as the path under the cgroup2 mount, as /proc/PID/cgroup shows it): the
/// rows are the victim's cgroup's only; the hog's processes (another cgroup) have none, but
/// still count on the machine line; the diagnosis still names the hog, from outside.
#[test]
#[ignore = "needs root and the real kernel"]
fn batch_rows_of_one_cgroup() {
    let s = Scenario::start("topfilter");
    let app = format!("/{}", Scenario::dir_name(&s.app));
    let out = Command::new("taskset")
        .args(["-c", "0", &schedlat_bin()])
        .args([
            "top", "--batch", "-n", "2", "--window", "1s", "--format", "json", "--cgroup", &app,
        ])
        .output()
        .expect("run schedlat top");
    assert!(
        out.status.success(),
        "schedlat top failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(stdout.lines().last().expect("frames")).unwrap();
    println!("{last}");
    assert_eq!(last["cgroup_filter"]["path"], app.as_str(), "{last}");
    assert_eq!(last["cgroup_filter"]["processes"], 1, "{last}");
    let pids: Vec<u64> = last["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, [u64::from(s.victim.pid())], "only the victim: {last}");
    assert_eq!(
        last["processes"][0]["culprit"]["pid"],
        s.hog.pid(),
        "{last}"
    );
    let cgroups: Vec<&str> = last["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cgroup"].as_str().unwrap())
        .collect();
    assert!(
        cgroups.len() == 1 && cgroups[0].ends_with(&app),
        "only the victim's cgroup: {cgroups:?}"
    );
    assert!(
        last["machine"]["processes"].as_u64().unwrap() >= 3,
        "the machine line counts every process: {last}"
    );

    let out = Command::new(schedlat_bin())
        .args([
            "top",
            "--batch",
            "-n",
            "1",
            "--cgroup",
            "/no-such-cgroup-here",
        ])
        .output()
        .expect("run schedlat top");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown cgroup is a usage error"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no such cgroup: /no-such-cgroup-here"),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs root"]
fn without_a_terminal_it_asks_for_batch() {
    let out = Command::new(schedlat_bin())
        .args(["top"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run schedlat top");
    assert_eq!(out.status.code(), Some(2), "usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs a terminal") && stderr.contains("--batch"),
        "{stderr}"
    );
    let out = Command::new(schedlat_bin())
        .args(["top", "--format", "json"])
        .output()
        .expect("run schedlat top");
    assert_eq!(out.status.code(), Some(2), "--format json needs --batch");
}
