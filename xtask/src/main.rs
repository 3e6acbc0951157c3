//! Project tasks: `cargo xtask setup | test | deb | image | demo | bench | vm-test`.
//!
//! `setup` installs every prerequisite on a fresh Debian/Ubuntu machine (as root) and is fast
//! when everything is present; `test` runs setup, then formatting, lints, unit tests, the
//! privileged integration tests and the kernel matrix in qemu, as CI does.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod deb;
mod image;
mod vm;

/// Debian packages: LLVM 22 for bpf-linker, bpftool for the tests' leak checks, workloads.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "stress-ng",
    // The cost benchmark: perf bench, and runqlat to compare with.
    "linux-perf",
    "libbpf-tools",
    // The exporter's integration test scrapes the agent with a real Prometheus.
    "prometheus",
    // The demo report is rendered in headless Chromium by a test.
    "chromium",
    // The kernel matrix (vm-test): Debian kernels booted under qemu with a busybox initramfs.
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    // The Debian package (`cargo xtask deb`): dpkg-shlibdeps for its Depends, lintian.
    "dpkg-dev",
    "lintian",
    // The container image's test runs it with an OCI runtime (no container engine runs here;
    // crun 1.8 refuses hybrid cgroups, runc takes them).
    "runc",
    // `schedlat top` is tested through a real terminal: tmux send-keys/capture-pane.
    "tmux",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
#[command(about = "schedlat project tasks")]
struct Args {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install prerequisites (apt packages, bpf-linker, rust-src, tracefs). Idempotent.
    Setup,
    /// Setup, then fmt check, clippy -D warnings (eBPF crate on its own), unit and integration
    /// tests, then the kernel matrix (vm-test with its default kernels).
    Test {
        /// Skip the privileged integration tests and the kernel matrix.
        #[arg(long)]
        unit_only: bool,
        /// Skip the kernel matrix in qemu.
        #[arg(long)]
        no_vm: bool,
    },
    /// Build the release binary and a Debian package of it: target/deb/schedlat_<version>_<arch>.deb
    /// (binary, systemd unit, example configuration, man pages, completions); lintian-clean.
    Deb,
    /// Build the release binary and a container image of it (OCI layout + Docker manifest in one
    /// tar): target/image/schedlat_<version>.oci.tar, named as deploy/daemonset.yaml runs it.
    Image,
    /// Setup, build, then the feed service under load with a noisy neighbour, and schedlat's
    /// account of it (report in target/demo/report.html).
    Demo {
        /// Length of each of the seven phases (baseline; noisy neighbour, CPU quota, bad
        /// pinning, each followed by a recovery).
        #[arg(long, default_value = "18s")]
        phase: String,
        /// Feed requests per second (open loop).
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// Setup, build, then measure schedlat's cost against runqlat (perf bench sched pipe).
    Bench {
        /// Interleaved rounds per configuration.
        #[arg(long, default_value_t = 9)]
        rounds: usize,
        /// perf bench sched pipe operations per run.
        #[arg(long, default_value_t = 200_000)]
        loops: u32,
    },
    /// Setup, build, then boot Debian kernels under qemu (TCG) and run check, trace and run in
    /// each: one line per kernel with pass/fail and timings (console logs in target/vm/logs).
    VmTest {
        /// Kernel to test: a series (`6.1`, `6.12`: the newest in the apt archive), an ABI
        /// (`6.1.0-56`, `6.12.117+deb12`) or a package name; repeat for several
        /// [default: 6.1 and 6.12].
        #[arg(long = "kernel", value_name = "ABI")]
        kernels: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let result = match Args::parse().command {
        Task::Setup => setup(),
        Task::Test { unit_only, no_vm } => test(unit_only, no_vm),
        Task::Deb => deb_task().map(|deb| println!("{}", deb.display())),
        Task::Image => image_task().map(|image| println!("{}", image.display())),
        Task::Demo { phase, rate } => demo(&phase, rate),
        Task::Bench { rounds, loops } => bench_task(rounds, loops),
        Task::VmTest { kernels } => vm_test(&kernels),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask/ is a direct child of the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: $ {shown}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    eprintln!("xtask: == {name}");
    let result = f().with_context(|| format!("step `{name}`"))?;
    eprintln!(
        "xtask: == {name}: done in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(result)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn setup() -> Result<()> {
    step("apt packages", || {
        let missing: Vec<&str> = APT_PACKAGES
            .iter()
            .copied()
            .filter(|pkg| {
                !Command::new("dpkg-query")
                    .args(["-W", "-f=${Status}", pkg])
                    .output()
                    .is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).contains("install ok installed")
                    })
            })
            .collect();
        if missing.is_empty() {
            eprintln!("xtask: all apt packages present");
            return Ok(());
        }
        if !is_root() {
            bail!(
                "apt packages missing ({}); run `cargo xtask setup` as root",
                missing.join(" ")
            );
        }
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    })?;
    step("rust components", || {
        let installed = Command::new("rustup")
            .args(["component", "list", "--installed"])
            .output()
            .context("running rustup")?;
        let installed = String::from_utf8_lossy(&installed.stdout).into_owned();
        for component in ["rust-src", "rustfmt", "clippy"] {
            if installed.lines().any(|l| l.starts_with(component)) {
                continue;
            }
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
        Ok(())
    })?;
    step("bpf-linker", || {
        let current = Command::new("bpf-linker").arg("--version").output();
        if let Ok(out) = &current
            && out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
        {
            eprintln!("xtask: bpf-linker {BPF_LINKER_VERSION} present");
            return Ok(());
        }
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22", "--force"])
            .env("PATH", path))
    })?;
    step("tracefs", || {
        if Path::new("/sys/kernel/tracing/events").exists() {
            return Ok(());
        }
        if !is_root() {
            eprintln!(
                "xtask: tracefs not mounted and not root; skipping (tp_btf does not need it)"
            );
            return Ok(());
        }
        run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
    })?;
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// The host crates (everything but the eBPF crate, which only builds for bpf targets).
const HOST_PACKAGES: &[&str] = &[
    "schedlat",
    "agent-common",
    "xtask",
    "schedlat-integration-tests",
    "schedlat-test-support",
    "demo-feed",
];

fn with_packages(cmd: &mut Command) -> &mut Command {
    for package in HOST_PACKAGES {
        cmd.args(["-p", package]);
    }
    cmd
}

fn test(unit_only: bool, no_vm: bool) -> Result<()> {
    let started = Instant::now();
    setup()?;
    step("rustfmt", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy (host crates)", || {
        run(
            with_packages(cargo().args(["clippy", "--release", "--all-targets"]))
                .args(["--", "-D", "warnings"]),
        )
    })?;
    step("clippy (eBPF crate, bpfel target)", || {
        // Same toolchain trick as agent/build.rs: the stable toolchain builds `core` for the
        // bpf target when RUSTC_BOOTSTRAP is set.
        run(cargo()
            .args([
                "clippy",
                "--release",
                "-p",
                "agent-ebpf",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(["-Z", "build-std=core", "--target-dir", "target/ebpf-clippy"])
            .args(["--", "-D", "warnings"])
            .env("RUSTC_BOOTSTRAP", "1"))
    })?;
    let mut tally = Tally::default();
    step("unit tests", || {
        tally.run(cargo().args([
            "test",
            "--release",
            "-p",
            "schedlat",
            "-p",
            "agent-common",
            "-p",
            "xtask",
            "-p",
            "schedlat-test-support",
            "-p",
            "demo-feed",
            "--lib",
            "--bins",
            "--tests",
        ]))
    })?;
    if !unit_only {
        if !is_root() {
            bail!("the integration tests load eBPF programs: run as root (or pass --unit-only)");
        }
        step("integration tests (root, real kernel)", || {
            integration_tests(&mut tally)
        })?;
    }
    let mut matrix = None;
    if !unit_only && !no_vm {
        let result = step("kernel matrix (qemu)", || {
            build_release()?;
            vm::run_matrix(
                &workspace_root(),
                &workspace_root().join("target/release"),
                &[],
            )
        })?;
        tally.passed += result.checks_passed;
        tally.failed += result.checks_failed;
        matrix = Some(result);
    }
    // On stdout, last: the totals over every test binary and every kernel's checks, for
    // people and CI logs alike.
    println!(
        "xtask: {} tests passed, {} failed, {} ignored, in {:.0}s{}",
        tally.passed,
        tally.failed,
        tally.ignored,
        started.elapsed().as_secs_f64(),
        matrix.as_ref().map_or_else(String::new, |m| format!(
            " (kernel matrix: {} checks on {} kernels)",
            m.checks_passed + m.checks_failed,
            m.kernels_passed + m.kernels_failed
        ))
    );
    if let Some(m) = matrix
        && m.kernels_failed > 0
    {
        bail!(
            "kernel matrix: {} of {} kernels failed",
            m.kernels_failed,
            m.kernels_passed + m.kernels_failed
        );
    }
    Ok(())
}

/// The privileged integration tests against the release binaries and the Debian package.
fn integration_tests(tally: &mut Tally) -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "schedlat", "-p", "demo-feed"]))?;
    let bin = workspace_root().join("target/release/schedlat");
    let demo_feed = workspace_root().join("target/release/demo-feed");
    let deb = step("Debian package", || {
        deb::build(&workspace_root().join("target/release"))
    })?;
    let image = step("container image", || {
        image::build(&workspace_root().join("target/release"))
    })?;
    tally.run(
        cargo()
            .args(["test", "--release", "-p", "schedlat-integration-tests"])
            .args(["--tests", "--", "--ignored", "--test-threads=1"])
            .env("SCHEDLAT_BIN", bin)
            .env("DEMO_FEED_BIN", demo_feed)
            .env("SCHEDLAT_DEB", deb)
            .env("SCHEDLAT_IMAGE", image),
    )
}

/// The binaries the guests run: the agent and the test workload.
fn build_release() -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "schedlat",
        "-p",
        "schedlat-integration-tests",
    ]))
}

fn vm_test(kernels: &[String]) -> Result<()> {
    setup()?;
    step("build (release)", build_release)?;
    let result = step("kernel matrix (qemu)", || {
        vm::run_matrix(
            &workspace_root(),
            &workspace_root().join("target/release"),
            kernels,
        )
    })?;
    if result.kernels_failed > 0 {
        bail!(
            "{} of {} kernels failed",
            result.kernels_failed,
            result.kernels_passed + result.kernels_failed
        );
    }
    Ok(())
}

/// Sums the `test result:` lines of `cargo test` runs, passing their output through.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    fn run(&mut self, cmd: &mut Command) -> Result<()> {
        use std::io::{BufRead as _, BufReader};
        let shown = format!("{cmd:?}");
        eprintln!("xtask: $ {shown}");
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {shown}"))?;
        let stdout = child.stdout.take().context("test stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            self.add(&line);
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("{shown} failed with {status}");
        }
        Ok(())
    }

    /// `test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; ...`
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(word), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

fn bench_task(rounds: usize, loops: u32) -> Result<()> {
    if !is_root() {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    setup()?;
    step("build (release)", || {
        run(cargo().args(["build", "--release", "-p", "schedlat"]))
    })?;
    let schedlat = workspace_root().join("target/release/schedlat");
    bench::run(&schedlat, &bench::BenchOptions { rounds, loops })
}

/// The release binary packaged for Debian; prints the package's path on stdout.
fn deb_task() -> Result<PathBuf> {
    step("build (release)", || {
        run(cargo().args(["build", "--release", "-p", "schedlat"]))
    })?;
    step("Debian package", || {
        deb::build(&workspace_root().join("target/release"))
    })
}

/// The release binary in a container image; prints the image's path on stdout.
fn image_task() -> Result<PathBuf> {
    step("build (release)", || {
        run(cargo().args(["build", "--release", "-p", "schedlat"]))
    })?;
    step("container image", || {
        image::build(&workspace_root().join("target/release"))
    })
}

/// The feed service under open-loop load through three stories (noisy neighbour, CPU quota,
/// bad pinning), and `schedlat run` telling why the feed waited (demo-feed's `scenario`).
fn demo(phase: &str, rate: u32) -> Result<()> {
    if !is_root() {
        bail!("the demo loads eBPF programs: run it as root");
    }
    setup()?;
    step("build (release)", || {
        run(cargo().args(["build", "--release", "-p", "schedlat", "-p", "demo-feed"]))
    })?;
    let bin = workspace_root().join("target/release");
    run(Command::new(bin.join("demo-feed"))
        .arg("scenario")
        .arg("--schedlat")
        .arg(bin.join("schedlat"))
        .args(["--phase", phase, "--rate", &rate.to_string()])
        .arg("--out")
        .arg(workspace_root().join("target/demo")))
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_sums_result_lines() {
        let mut t = Tally::default();
        t.add("test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (13, 2, 3));
    }
}
