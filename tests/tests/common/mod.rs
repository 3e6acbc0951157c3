//! Helpers shared by the integration test files (each `tests/*.rs` is its own crate).
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::{
    collections::HashSet,
    io::{BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn schedlat_bin() -> String {
    std::env::var("SCHEDLAT_BIN").unwrap_or_else(|_| {
        panic!("SCHEDLAT_BIN is not set: run these tests with `cargo xtask test` (as root)")
    })
}

/// The controlled workload: a hog and (on `go`) a sleeper, pinned to CPU 0.
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub hog_tid: u32,
}

#[derive(Debug)]
pub struct WorkloadResult {
    pub hog_tid: u32,
    pub sleeper_tid: u32,
    pub run_delay_ns: u64,
}

impl Workload {
    pub fn start(iterations: u32, burst_us: u32, sleep_us: u32) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_schedlat-workload"))
            .args([
                "0",
                &iterations.to_string(),
                &burst_us.to_string(),
                &sleep_us.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn schedlat-workload");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("workload stdout"));
        let ready = read_json_line(&mut stdout);
        let hog_tid = ready["hog_tid"].as_u64().expect("hog_tid") as u32;
        Self {
            child,
            stdin,
            stdout,
            hog_tid,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("workload stdin");
        stdin.write_all(b"go\n").expect("send go");
        stdin.flush().expect("flush go");
    }

    /// Closes stdin: the workload stops its hog and exits.
    pub fn finish(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait for the workload")
    }

    /// Blocks until the sleeper finished and is asleep for good.
    pub fn result(&mut self) -> WorkloadResult {
        let v = read_json_line(&mut self.stdout);
        WorkloadResult {
            hog_tid: v["hog_tid"].as_u64().expect("hog_tid") as u32,
            sleeper_tid: v["sleeper_tid"].as_u64().expect("sleeper_tid") as u32,
            run_delay_ns: v["run_delay_ns"].as_u64().expect("run_delay_ns"),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_json_line(reader: &mut impl std::io::BufRead) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Program and link ids of schedlat's programs currently in the kernel (bpftool view).
pub fn schedlat_bpf_objects() -> (HashSet<u64>, HashSet<u64>) {
    // bpftool shows the full names from the programs' BTF (the kernel keeps 15 characters).
    const NAMES: [&str; 6] = [
        "sched_wakeup",
        "sched_wakeup_new",
        "sched_migrate_task",
        "sched_switch",
        "sched_switch_daemon",
        "sched_migrate_task_daemon",
    ];
    let progs = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("run bpftool (installed by cargo xtask setup)");
    assert!(progs.status.success(), "bpftool prog show failed");
    let progs: Value = serde_json::from_slice(&progs.stdout).expect("bpftool prog json");
    let prog_ids: HashSet<u64> = progs
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| p["type"] == "tracing" && NAMES.iter().any(|n| p["name"] == *n))
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let links = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("run bpftool");
    let links: Value = serde_json::from_slice(&links.stdout).unwrap_or(Value::Array(vec![]));
    let link_ids = links
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter(|l| {
                    l["prog_id"]
                        .as_u64()
                        .is_some_and(|id| prog_ids.contains(&id))
                })
                .filter_map(|l| l["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    (prog_ids, link_ids)
}

/// Which of `programs` are still loaded after waiting up to `timeout` for them to go.
pub fn programs_left_after(programs: &HashSet<u64>, timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let (now, _) = schedlat_bpf_objects();
        let left: Vec<u64> = programs.intersection(&now).copied().collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
