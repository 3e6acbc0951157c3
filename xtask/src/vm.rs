//! `cargo xtask vm-test`: schedlat on Debian's own kernels, booted under qemu.
//!
//! For each kernel: the Debian package is fetched with `apt-get download` (cached under
//! `target/vm/debs`), its `vmlinuz` extracted, and booted with an initramfs holding busybox,
//! the release binaries with their libraries, bpftool, and `vm_init.sh` as `/init`. The init
//! runs the checks and reports `VMTEST <check> PASS|FAIL|SKIP <detail>` lines on the serial
//! console; this side asserts that every expected check reported PASS.
//!
//! KVM cannot boot stock kernels on these machines (the guest hangs after "Booting from
//! ROM"), so qemu emulates (TCG): about a minute per kernel.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{is_root, run};

/// The kernel series tested when none is named: Debian 12's 6.1 and its 6.12 backport.
pub const DEFAULT_SERIES: &[&str] = &["6.1", "6.12"];

/// Every check the guest init reports, in its order. A check that never reports has failed.
const EXPECTED_CHECKS: &[&str] = &[
    "check",
    "check-diagnosis",
    "check-trace-programs",
    "check-daemon-programs",
    "check-daemon-fallback",
    "check-cpu-sampler",
    "trace-exit",
    "trace-accuracy",
    "trace-diagnosis",
    "run-first-scrape",
    "run-metrics",
    "run-incident",
    "run-flamegraph",
    "run-runqueue",
    "run-sigterm",
    "run-detached",
    "fallback-metrics",
    "fallback-sigterm",
    "fallback-detached",
];

/// Checks that may report SKIP, and only while the binary does not know the fallback flag.
const FALLBACK_CHECKS: &[&str] = &["fallback-metrics", "fallback-sigterm", "fallback-detached"];
const FALLBACK_FLAG: &str = "--force-wakeup-probes";

/// Wall-clock limit for one guest, boot to power-off; qemu is killed after it.
const GUEST_TIMEOUT: Duration = Duration::from_mins(4);

const INIT_SCRIPT: &str = include_str!("vm_init.sh");

/// Outcome of the matrix, for the caller's tally.
#[derive(Debug, Default)]
pub struct MatrixResult {
    pub kernels_passed: u64,
    pub kernels_failed: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
}

/// A Debian kernel package, downloaded and unpacked.
struct Kernel {
    package: String,
    /// Debian package version, e.g. `6.1.192-2`.
    version: String,
    /// `uname -r`, e.g. `6.1.0-56-amd64`.
    release: String,
    vmlinuz: PathBuf,
}

/// Runs the matrix for `kernels` (series like `6.1`, ABIs like `6.1.0-56` or `6.12.117+deb12`,
/// or package names; empty: [`DEFAULT_SERIES`]). `release_dir` holds the built binaries.
pub fn run_matrix(root: &Path, release_dir: &Path, kernels: &[String]) -> Result<MatrixResult> {
    let vm_dir = root.join("target/vm");
    let specs: Vec<String> = if kernels.is_empty() {
        DEFAULT_SERIES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        kernels.to_vec()
    };
    let packages = specs
        .iter()
        .map(|spec| resolve_package(spec))
        .collect::<Result<Vec<_>>>()?;
    let kernels = packages
        .iter()
        .map(|package| fetch_kernel(&vm_dir, package))
        .collect::<Result<Vec<_>>>()?;
    let initramfs = build_initramfs(&vm_dir, release_dir)?;
    let fallback_known = knows_flag(&release_dir.join("schedlat"), FALLBACK_FLAG)?;
    if !fallback_known {
        eprintln!(
            "xtask: this schedlat rejects {FALLBACK_FLAG}: the fallback checks may report SKIP"
        );
    }

    let mut result = MatrixResult::default();
    let mut lines = Vec::new();
    for kernel in &kernels {
        let log = vm_dir.join(format!("logs/{}.log", kernel.release));
        let outcome = boot(kernel, &initramfs, &log)?;
        let failed = judge(&outcome.reports, fallback_known);
        let checks = EXPECTED_CHECKS.len() as u64;
        result.checks_failed += failed.len() as u64;
        result.checks_passed += checks - failed.len() as u64;
        let timing = format!(
            "boot {}, total {:.1}s",
            outcome
                .boot
                .map_or_else(|| "-".to_owned(), |b| format!("{:.1}s", b.as_secs_f64())),
            outcome.total.as_secs_f64()
        );
        let line = if failed.is_empty() {
            result.kernels_passed += 1;
            format!(
                "vm-test {} (Debian {}): PASS ({timing})",
                kernel.release, kernel.version
            )
        } else {
            result.kernels_failed += 1;
            format!(
                "vm-test {} (Debian {}): FAIL ({timing}{}) {}; serial log {}",
                kernel.release,
                kernel.version,
                if outcome.timed_out { ", timed out" } else { "" },
                failed.join(", "),
                log.display()
            )
        };
        eprintln!("xtask: {line}");
        lines.push(line);
    }
    // On stdout, together: one line per kernel, then the matrix total.
    for line in &lines {
        println!("{line}");
    }
    println!(
        "vm-test: {} passed, {} failed",
        result.kernels_passed, result.kernels_failed
    );
    Ok(result)
}

/// The package for a kernel named by series, ABI or package name.
fn resolve_package(spec: &str) -> Result<String> {
    if spec.starts_with("linux-image-") {
        return Ok(spec.to_owned());
    }
    // A series is two numbers (`6.1`, `6.12`); an ABI has more (`6.1.0-56`, `6.12.117+deb12`).
    if spec.split('.').count() > 2 {
        return Ok(format!("linux-image-{spec}-amd64-unsigned"));
    }
    let search = || -> Result<Option<String>> {
        let out = Command::new("apt-cache")
            .args(["search", "--names-only"])
            .arg(format!(
                "^linux-image-{}\\..*-amd64-unsigned$",
                spec.replace('.', "\\.")
            ))
            .output()
            .context("running apt-cache search")?;
        Ok(newest_in_series(
            &String::from_utf8_lossy(&out.stdout),
            spec,
        ))
    };
    if let Some(package) = search()? {
        return Ok(package);
    }
    if is_root() {
        // Package lists may be missing or stale on a fresh machine.
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        if let Some(package) = search()? {
            return Ok(package);
        }
    }
    bail!(
        "no linux-image-{spec}.*-amd64-unsigned package in the apt archive \
         (`apt-cache search linux-image-{spec}`); name an ABI with --kernel"
    )
}

/// From `apt-cache search` output, the newest generic (not cloud, not rt) amd64 kernel of a
/// series: `linux-image-6.1.0-56-amd64-unsigned`, `linux-image-6.12.117+deb12-amd64-unsigned`.
fn newest_in_series(search_output: &str, series: &str) -> Option<String> {
    let prefix = format!("linux-image-{series}.");
    search_output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix("linux-image-")?
                .strip_suffix("-amd64-unsigned")?;
            if !name.starts_with(&prefix) || abi.contains("-cloud") || abi.contains("-rt") {
                return None;
            }
            // Order by the numbers in the ABI: 6.1.0-56 > 6.1.0-9, 6.12.117 > 6.12.57.
            let key: Vec<u64> = abi
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            Some((key, name.to_owned()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Downloads (once) and unpacks (once) a kernel package's `vmlinuz`.
fn fetch_kernel(vm_dir: &Path, package: &str) -> Result<Kernel> {
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let find_deb = || -> Result<Option<PathBuf>> {
        let prefix = format!("{package}_");
        for entry in fs::read_dir(&debs).with_context(|| format!("reading {}", debs.display()))? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if path.extension().is_some_and(|e| e == "deb")
                && name.is_some_and(|n| n.starts_with(&prefix))
            {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    let deb = if let Some(deb) = find_deb()? {
        deb
    } else {
        let mut download = Command::new("apt-get");
        if is_root() {
            // apt's download sandbox user cannot write to target/ (a harmless warning otherwise).
            download.args(["-o", "APT::Sandbox::User=root"]);
        }
        run(download
            .args(["download", "-qq", package])
            .current_dir(&debs))
        .with_context(|| format!("downloading {package}"))?;
        find_deb()?.with_context(|| format!("apt-get download left no {package}_*.deb"))?
    };
    let file_name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `<package>_<version>_amd64.deb`, the version with `:` escaped as `%3a`.
    let version = file_name
        .split('_')
        .nth(1)
        .unwrap_or("unknown")
        .replace("%3a", ":");

    let unpacked = vm_dir.join("kernels").join(package);
    let find_vmlinuz = || -> Option<(String, PathBuf)> {
        let boot = unpacked.join("boot");
        fs::read_dir(&boot).ok()?.find_map(|entry| {
            let path = entry.ok()?.path();
            let release = path
                .file_name()?
                .to_str()?
                .strip_prefix("vmlinuz-")?
                .to_owned();
            Some((release, path))
        })
    };
    if find_vmlinuz().is_none() {
        fs::create_dir_all(&unpacked)
            .with_context(|| format!("creating {}", unpacked.display()))?;
        // Only the kernel image: the modules (hundreds of MB) are not needed, BPF is built in.
        let mut dpkg = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(&deb)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting dpkg-deb")?;
        let tar_input = dpkg.stdout.take().context("dpkg-deb stdout")?;
        let tar = Command::new("tar")
            .args(["-x", "--wildcards", "./boot/vmlinuz-*"])
            .current_dir(&unpacked)
            .stdin(tar_input)
            .status()
            .context("running tar")?;
        let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
        if !tar.success() || !dpkg.success() {
            bail!(
                "unpacking vmlinuz from {}: dpkg-deb {dpkg}, tar {tar}",
                deb.display()
            );
        }
    }
    let (release, vmlinuz) =
        find_vmlinuz().with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    Ok(Kernel {
        package: package.to_owned(),
        version,
        release,
        vmlinuz,
    })
}

/// The initramfs: busybox, the binaries and their libraries at the paths `ldd` names, and the
/// init. Rebuilt every run (the binaries change); uncompressed, as decompressing under TCG is
/// slower than reading the larger file.
fn build_initramfs(vm_dir: &Path, release_dir: &Path) -> Result<PathBuf> {
    let tree = vm_dir.join("initramfs");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc",
    ] {
        fs::create_dir_all(tree.join(dir))
            .with_context(|| format!("creating {}/{dir}", tree.display()))?;
    }
    let busybox = Path::new("/bin/busybox");
    if !is_static(busybox)? {
        bail!(
            "{} is not statically linked: install busybox-static (`cargo xtask setup`)",
            busybox.display()
        );
    }
    copy_into(&tree, busybox, Path::new("/bin/busybox"))?;
    // The init's interpreter; the init then installs the other applets.
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh"))
        .with_context(|| format!("linking {}/bin/sh", tree.display()))?;
    let binaries = [
        (release_dir.join("schedlat"), "/usr/bin/schedlat"),
        (
            release_dir.join("schedlat-workload"),
            "/usr/bin/schedlat-workload",
        ),
        (
            which_path("bpftool").context(
                "bpftool not found: it checks that nothing stays attached (`cargo xtask setup`)",
            )?,
            "/usr/sbin/bpftool",
        ),
    ];
    for (source, target) in &binaries {
        copy_into(&tree, source, Path::new(target))?;
        for library in shared_libraries(source)? {
            copy_into(&tree, &library, &library)?;
        }
    }
    let init = tree.join("init");
    fs::write(&init, INIT_SCRIPT).with_context(|| format!("writing {}", init.display()))?;
    set_mode(&init, 0o755)?;

    let image = vm_dir.join("initramfs.cpio");
    let out = fs::File::create(&image).with_context(|| format!("creating {}", image.display()))?;
    let status = Command::new("sh")
        .args([
            "-c",
            "find . -print0 | cpio --null -o -H newc -R 0:0 --quiet",
        ])
        .current_dir(&tree)
        .stdout(out)
        .status()
        .context("running find | cpio")?;
    if !status.success() {
        bail!("cpio failed with {status} (is cpio installed? `cargo xtask setup`)");
    }
    Ok(image)
}

fn which_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn is_static(binary: &Path) -> Result<bool> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    // ldd exits 1 and says "not a dynamic executable" for static binaries.
    Ok(!out.status.success() || String::from_utf8_lossy(&out.stdout).contains("statically linked"))
}

/// The shared libraries `ldd` resolves for a binary, the dynamic loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("running ldd {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("ldd {}", binary.display()))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2
/// (0x...)` give paths; `linux-vdso.so.1 (0x...)` is the kernel's; `not found` is an error.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in output.lines().map(str::trim) {
        if line.contains("not found") {
            bail!("missing library: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// Copies `source` (symlinks followed) to `target` inside the tree, keeping its mode.
fn copy_into(tree: &Path, source: &Path, target: &Path) -> Result<()> {
    let destination = tree.join(target.strip_prefix("/").unwrap_or(target));
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(source, &destination)
        .with_context(|| format!("copying {} to {}", source.display(), destination.display()))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Whether the binary accepts a `run` flag (clap rejects unknown ones with exit 2).
fn knows_flag(schedlat: &Path, flag: &str) -> Result<bool> {
    let out = Command::new(schedlat)
        .args(["run", flag, "--check-config"])
        .output()
        .with_context(|| format!("running {}", schedlat.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(!stderr.contains(&format!("unexpected argument '{flag}'")))
}

/// One reported check.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    check: String,
    status: String,
    detail: String,
}

/// `VMTEST <check> <status> <detail>`, anywhere in a console line (kernel messages may share
/// the line).
fn parse_report(line: &str) -> Option<Report> {
    let at = line.find("VMTEST ")?;
    let mut fields = line[at + "VMTEST ".len()..].splitn(3, ' ');
    let check = fields.next()?.to_owned();
    let status = fields.next()?.trim().to_owned();
    if !matches!(status.as_str(), "PASS" | "FAIL" | "SKIP") {
        return None;
    }
    let detail = fields.next().unwrap_or("").trim().to_owned();
    Some(Report {
        check,
        status,
        detail,
    })
}

/// The expected checks that did not pass: failed, skipped without leave, or never reported.
fn judge(reports: &[Report], fallback_known: bool) -> Vec<String> {
    EXPECTED_CHECKS
        .iter()
        .filter_map(|check| {
            let report = reports.iter().rev().find(|r| r.check == *check);
            match report.map(|r| r.status.as_str()) {
                Some("PASS") => None,
                Some("SKIP") if !fallback_known && FALLBACK_CHECKS.contains(check) => None,
                Some(status) => Some(format!("{check} ({status})")),
                None => Some(format!("{check} (no report)")),
            }
        })
        .collect()
}

struct BootOutcome {
    reports: Vec<Report>,
    /// From starting qemu to the init's first line.
    boot: Option<Duration>,
    total: Duration,
    timed_out: bool,
}

/// Boots one kernel, echoes the guest's reports and keeps the whole console in `log`.
fn boot(kernel: &Kernel, initramfs: &Path, log: &Path) -> Result<BootOutcome> {
    use std::io::Write as _;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut log_file =
        fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    eprintln!(
        "xtask: == booting {} ({}) under qemu (TCG); console in {}",
        kernel.release,
        kernel.package,
        log.display()
    );
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "qemu64", "-smp", "2", "-m", "1024"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        // panic=-1: a dying init reboots, which -no-reboot turns into qemu exiting.
        // tsc=reliable: qemu64 has no constant TSC, so 6.1 marks the TSC unstable ("TSCs
        // unsynchronized"), runs on hpet and an unstable sched_clock, and then ktime (the
        // programs' clock) and the rq clock (run_delay's) drift apart by ~10 % over a wait.
        // Real machines have a constant, synchronized TSC; this makes the guest's clocks alike.
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4 tsc=reliable"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (`cargo xtask setup` installs it)")?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        qemu.stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        qemu.stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let deadline = started + GUEST_TIMEOUT;
    let mut outcome = BootOutcome {
        reports: Vec::new(),
        boot: None,
        total: Duration::ZERO,
        timed_out: false,
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            outcome.timed_out = true;
            eprintln!(
                "xtask: {}: no power-off after {}s; killing qemu",
                kernel.release,
                GUEST_TIMEOUT.as_secs()
            );
            let _ = qemu.kill();
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                writeln!(log_file, "{line}").context("writing the console log")?;
                take_line(&line, started.elapsed(), &mut outcome);
            }
            // Both streams closed: qemu is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let status = qemu.wait().context("waiting for qemu")?;
    outcome.total = started.elapsed();
    if !outcome.timed_out && !status.success() {
        eprintln!("xtask: {}: qemu exited with {status}", kernel.release);
    }
    Ok(outcome)
}

/// Records and echoes what one console line says: the boot marker, a report, or the guest's
/// diagnostics (indented lines).
fn take_line(line: &str, elapsed: Duration, outcome: &mut BootOutcome) {
    let at = elapsed.as_secs_f64();
    if let Some(marker) = line.find("VMTEST-BOOTED") {
        outcome.boot = Some(elapsed);
        // The firmware's screen-clearing escapes may precede it on the line.
        eprintln!("xtask:   [{at:5.1}s] {}", &line[marker..]);
    } else if let Some(report) = parse_report(line) {
        eprintln!("xtask:   [{at:5.1}s] {line}");
        outcome.reports.push(report);
    } else if line.starts_with("  check|") || line.starts_with("  ") && !outcome.reports.is_empty()
    {
        eprintln!("xtask:           {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_generic_kernel_of_a_series() {
        let search = "\
linux-image-6.1.0-9-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-56-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-57-rt-amd64-unsigned - Linux 6.1 for 64-bit PCs, PREEMPT_RT
linux-image-6.12.57+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.118+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
";
        assert_eq!(
            newest_in_series(search, "6.1").as_deref(),
            Some("linux-image-6.1.0-56-amd64-unsigned")
        );
        assert_eq!(
            newest_in_series(search, "6.12").as_deref(),
            Some("linux-image-6.12.117+deb12-amd64-unsigned")
        );
        assert_eq!(newest_in_series(search, "5.10"), None);
    }

    #[test]
    fn ldd_paths_include_the_loader_and_skip_the_vdso() {
        let ldd = "\
\tlinux-vdso.so.1 (0x00007f23f8a8c000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f23f8a5a000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f23f821e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f23f8a8e000)
";
        assert_eq!(
            parse_ldd(ldd).expect("parses"),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn reports_are_found_in_console_lines() {
        assert_eq!(
            parse_report("VMTEST check PASS exit 0"),
            Some(Report {
                check: "check".into(),
                status: "PASS".into(),
                detail: "exit 0".into()
            })
        );
        let mixed = parse_report("[   12.3] random: crng VMTEST run-sigterm FAIL exit 1")
            .expect("report after a kernel message");
        assert_eq!(
            (mixed.check.as_str(), mixed.status.as_str()),
            ("run-sigterm", "FAIL")
        );
        assert_eq!(parse_report("VMTEST-BOOTED 6.1.0-56-amd64"), None);
        assert_eq!(parse_report("VMTEST check MAYBE"), None);
    }

    #[test]
    fn missing_failed_and_unexcused_skips_fail() {
        let pass = |check: &str| Report {
            check: check.into(),
            status: "PASS".into(),
            detail: String::new(),
        };
        let mut reports: Vec<Report> = EXPECTED_CHECKS.iter().map(|c| pass(c)).collect();
        assert!(judge(&reports, true).is_empty());
        for report in &mut reports {
            if FALLBACK_CHECKS.contains(&report.check.as_str()) {
                report.status = "SKIP".into();
            }
        }
        assert!(
            judge(&reports, false).is_empty(),
            "skip allowed without the flag"
        );
        assert_eq!(judge(&reports, true).len(), FALLBACK_CHECKS.len());
        reports.retain(|r| r.check != "check");
        reports[0].status = "FAIL".into();
        assert_eq!(
            judge(&reports, false),
            ["check (no report)", "check-diagnosis (FAIL)"]
        );
    }
}
