//! Scenario workloads for the tests that check who held a CPU: `schedlat-busy` processes
//! (spin, then sleep) moved into cgroups and pinned, killed on drop; cgroups removed on drop.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub const BUSY: &str = env!("CARGO_BIN_EXE_schedlat-busy");

/// A process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cgroup directory removed on drop (after its processes are gone).
pub struct Cgroup(pub PathBuf);

impl Cgroup {
    pub fn new(parent: &Path, name: &str) -> Self {
        let dir = parent.join(format!("schedlat-diag-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create cgroup");
        Self(dir)
    }

    pub fn write(&self, file: &str, value: &str) {
        std::fs::write(self.0.join(file), value)
            .unwrap_or_else(|e| panic!("writing {value} to {}/{file}: {e}", self.0.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `prefix... schedlat-busy SPIN_US SLEEP_US`, moved into `cgroups` (cgroup.procs) first,
/// through a shell so the move happens before the exec.
pub fn spawn(cgroups: &[&Cgroup], prefix: &[&str], spin_us: u64, sleep_us: u64) -> Proc {
    let mut moves = String::new();
    for c in cgroups {
        let _ = write!(moves, "echo $$ > {}/cgroup.procs && ", c.0.display());
    }
    let script = format!(
        "{moves}exec {} {BUSY} {spin_us} {sleep_us}",
        prefix.join(" ")
    );
    Proc(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn workload"),
    )
}

/// A victim: short bursts and 1 ms sleeps, many wakeups.
pub fn victim(cgroups: &[&Cgroup], prefix: &[&str]) -> Proc {
    spawn(cgroups, prefix, 200, 1000)
}

/// A hog: spins (never sleeps).
pub fn hog(cgroups: &[&Cgroup], prefix: &[&str]) -> Proc {
    spawn(cgroups, prefix, 10_000_000, 0)
}

pub fn unified() -> PathBuf {
    schedlat_test_support::cgroup2_mount().expect("a cgroup2 mount")
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
