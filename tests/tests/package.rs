//! The Debian package (`cargo xtask deb`) installed for real: files in place, the binary runs,
//! man pages, completions, the unit and the example configuration work, `dpkg -r` keeps the
//! conffile, `dpkg --purge` leaves nothing. Needs root and a package built by xtask, whose path
//! `cargo xtask test` passes in `SCHEDLAT_DEB`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

mod common;

const PACKAGE: &str = "schedlat";
const CONFIG: &str = "/etc/schedlat/schedlat.toml";
const UNIT: &str = "/lib/systemd/system/schedlat.service";
const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/schedlat";

/// Every file the package installs (besides /usr/share/doc), checked after install and purge.
const FILES: &[&str] = &[
    "/usr/bin/schedlat",
    UNIT,
    CONFIG,
    "/usr/share/man/man1/schedlat.1.gz",
    "/usr/share/man/man1/schedlat-trace.1.gz",
    "/usr/share/man/man1/schedlat-top.1.gz",
    "/usr/share/man/man1/schedlat-run.1.gz",
    "/usr/share/man/man1/schedlat-check.1.gz",
    "/usr/share/man/man1/schedlat-flamegraph.1.gz",
    "/usr/share/man/man1/schedlat-incidents.1.gz",
    BASH_COMPLETION,
    "/usr/share/zsh/vendor-completions/_schedlat",
    "/usr/share/fish/vendor_completions.d/schedlat.fish",
    "/usr/share/doc/schedlat/copyright",
    "/usr/share/doc/schedlat/changelog.gz",
];

fn deb() -> PathBuf {
    let path = std::env::var("SCHEDLAT_DEB").map_or_else(
        |_| {
            let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
                "../target/deb/{PACKAGE}_{}_{}.deb",
                env!("CARGO_PKG_VERSION"),
                String::from_utf8_lossy(&arch.stdout).trim()
            ))
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no package at {}: build it with `cargo xtask deb` (or set SCHEDLAT_DEB)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `Some(status)` of the package as dpkg knows it (`install ok installed`,
/// `deinstall ok config-files`), `None` when dpkg does not know it.
fn dpkg_status() -> Option<String> {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    let status = stdout(&out);
    (out.status.success() && !status.contains("not-installed")).then_some(status)
}

/// Purges the package when the test ends, also when an assertion failed half way.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
        }
    }
}

#[test]
#[ignore = "installs a package as root: run by `cargo xtask test`"]
fn the_debian_package_installs_works_and_purges_clean() {
    let deb = deb();
    if let Some(status) = dpkg_status() {
        panic!(
            "the {PACKAGE} package is already on this machine ({status}); this test installs and \
             purges it and will not touch an installation it did not make: `dpkg --purge {PACKAGE}`"
        );
    }
    for file in FILES {
        assert!(
            !Path::new(file).exists(),
            "{file} exists before the package is installed: it would be overwritten and purged"
        );
    }
    let _purge = Purge;

    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
    for file in FILES {
        assert!(Path::new(file).is_file(), "{file} not installed");
    }
    let conffiles = stdout(&run_ok(Command::new("dpkg-query").args([
        "-W",
        "-f=${Conffiles}",
        PACKAGE,
    ])));
    assert!(
        conffiles.contains(CONFIG),
        "{CONFIG} is not a conffile: {conffiles:?}"
    );

    // The binary runs and is the version packaged.
    let version = stdout(&run_ok(Command::new("/usr/bin/schedlat").arg("--version")));
    assert_eq!(
        version.trim(),
        format!("schedlat {}", env!("CARGO_PKG_VERSION")),
        "schedlat --version"
    );

    // Man pages decompress and are man pages.
    for page in ["schedlat.1.gz", "schedlat-run.1.gz"] {
        let text = stdout(&run_ok(
            Command::new("gzip")
                .args(["-dc"])
                .arg(format!("/usr/share/man/man1/{page}")),
        ));
        assert!(
            text.contains(".SH NAME"),
            "{page}: no NAME section:\n{text}"
        );
        assert!(
            text.contains(".TH schedlat"),
            "{page}: no title line:\n{text}"
        );
    }

    check_bash_completion();

    check_unit();

    check_example_config();

    check_started();

    // Remove keeps the conffile; purge removes it and everything else.
    run_ok(Command::new("dpkg").args(["-r", PACKAGE]));
    assert!(
        !Path::new("/usr/bin/schedlat").exists(),
        "dpkg -r left the binary"
    );
    assert!(Path::new(CONFIG).is_file(), "dpkg -r removed the conffile");
    run_ok(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert_eq!(
        dpkg_status(),
        None,
        "dpkg still knows the package after purge"
    );
    for file in FILES {
        assert!(!Path::new(file).exists(), "{file} left after dpkg --purge");
    }
    for dir in ["/etc/schedlat", "/usr/share/doc/schedlat"] {
        assert!(!Path::new(dir).exists(), "{dir} left after dpkg --purge");
    }
}

/// The bash completion completes subcommands and flags of schedlat.
fn check_bash_completion() {
    let completed = stdout(&run_ok(Command::new("bash").arg("-c").arg(format!(
        "source {BASH_COMPLETION} && complete -p schedlat && \
         COMP_WORDS=(schedlat tr) COMP_CWORD=1 COMP_LINE='schedlat tr' COMP_POINT=11 && \
         _schedlat schedlat tr schedlat && echo \"words: ${{COMPREPLY[*]}}\" && \
         COMP_WORDS=(schedlat run --check) COMP_CWORD=2 && _schedlat schedlat --check run && \
         echo \"words: ${{COMPREPLY[*]}}\""
    ))));
    assert!(
        completed.lines().any(|l| l.starts_with("complete ")
            && l.contains("-F _schedlat")
            && l.ends_with(" schedlat")),
        "no completion defined for schedlat:\n{completed}"
    );
    assert!(
        completed.contains("words: trace"),
        "`schedlat tr<TAB>`:\n{completed}"
    );
    assert!(
        completed.contains("--check-config"),
        "`schedlat run --check<TAB>`:\n{completed}"
    );
}

/// The unit runs the packaged binary with the packaged configuration, and verifies.
fn check_unit() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/schedlat run --config /etc/schedlat/schedlat.toml"),
        "{unit}"
    );
    assert!(
        unit.contains("NoNewPrivileges=yes"),
        "hardening lost:\n{unit}"
    );
    if run(Command::new("sh").args(["-c", "command -v systemd-analyze"]))
        .status
        .success()
    {
        let out = run(Command::new("systemd-analyze").args(["verify", UNIT]));
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        // Without a running systemd, verify may complain about the manager, not about the unit.
        let about_unit: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("schedlat.service"))
            .collect();
        assert!(
            about_unit.is_empty(),
            "systemd-analyze verify {UNIT}:\n{text}"
        );
    } else {
        eprintln!("systemd-analyze not installed: unit not verified");
    }
}

/// The daemon starts as the unit starts it (its `ExecStart`, with the packaged configuration),
/// serves metrics, and stops cleanly on SIGTERM (what `systemctl stop` sends). Not through
/// systemd: it is not PID 1 on these machines, so the unit's sandboxing is verified
/// (`check_unit`) but not exercised. The listen address (a free port) and the incident
/// directory (a scratch one) are overridden by flags, so the test neither collides with a
/// daemon on 9747 nor leaves /var/lib/schedlat behind.
fn check_started() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in the unit")
        .split_whitespace()
        .collect();
    assert_eq!(exec[1], "run", "{exec:?}");
    let agent = common::Agent::start_binary(exec[0], &exec[2..]);
    let metrics = agent.metrics();
    assert!(
        metrics.contains("schedlat_build_info") && metrics.contains("schedlat_events_total"),
        "the packaged daemon's metrics:\n{metrics}"
    );
    let status = agent.stop(libc::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}");
}

/// The example configuration is accepted, and the defaults it documents are the real ones:
/// with every key uncommented the agent reads the same configuration. The incident directory
/// is a temporary one so that validating it creates nothing on the machine.
fn check_example_config() {
    let scratch = std::env::temp_dir().join(format!("schedlat-package-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let incidents = scratch.join("incidents");
    let check = |config: &Path| {
        stdout(&run_ok(
            Command::new("/usr/bin/schedlat")
                .args(["run", "--check-config", "--config"])
                .arg(config)
                .arg("--incident-dir")
                .arg(&incidents),
        ))
    };
    let as_shipped = check(Path::new(CONFIG));
    let shipped_text = std::fs::read_to_string(CONFIG).unwrap();
    let uncommented: String = shipped_text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let keys = uncommented.lines().filter(|l| l.contains(" = ")).count();
    assert!(
        keys >= 25,
        "only {keys} keys in the example configuration:\n{uncommented}"
    );
    let uncommented_path = scratch.join("uncommented.toml");
    std::fs::write(&uncommented_path, &uncommented).unwrap();
    let with_defaults = check(&uncommented_path);
    std::fs::remove_dir_all(&scratch).unwrap();
    assert!(as_shipped.starts_with("configuration OK"), "{as_shipped}");
    assert_eq!(
        as_shipped, with_defaults,
        "the commented defaults in {CONFIG} are not the defaults"
    );
}
