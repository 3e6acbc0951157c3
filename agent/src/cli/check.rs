//! `schedlat check`: can the agent run on this machine? Probes features, then loads and
//! attaches every program for real and detaches again.

use std::io::Write;

use agent_common::names::program;
use anyhow::Result;

use crate::{
    host::names,
    kernel::loader::{
        DAEMON_FALLBACK_PROGRAMS, DAEMON_PROGRAMS, Features, Mode, ProbeConfig, Probes,
        TRACE_PROGRAMS,
    },
};

fn mark(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// Prints the report: every program set loaded for real, the reason of each failure (the
/// verifier's deciding lines; the whole log with `verbose`).
pub fn run(out: &mut dyn Write, verbose: bool) -> Result<Verdict> {
    let features = Features::probe();
    let stamps = print_features(out, &features)?;
    let sets = program_sets(stamps);
    let mut failed_default = Vec::new();
    let mut loaded = Vec::new();
    let mut throttling = None;
    for set in &sets {
        let names: Vec<&str> = set.programs.iter().map(|p| p.0).collect();
        match Probes::load(&ProbeConfig {
            min_event_ns: Some(u64::MAX),
            ..set.config.clone()
        }) {
            Ok(probes) => {
                if set.label == "daemon programs" {
                    throttling = Some(throttle_report(&probes));
                }
                drop(probes);
                writeln!(
                    out,
                    "{:<22}yes: loaded, attached and detached {}",
                    set.label,
                    names.join(", ")
                )?;
                loaded.push(set.label);
            }
            Err(e) => {
                // Text from the system goes to a terminal: control characters escaped.
                let why = if verbose {
                    names::escape_lines(format!("{e:#}").as_bytes())
                } else {
                    names::escape(&short_error(&e)).into_owned()
                };
                writeln!(out, "{:<22}NO: {why}", set.label)?;
                if set.default {
                    failed_default.push(set.label);
                }
            }
        }
    }
    let can = |label: &str| loaded.contains(&label);
    let verdict = match (can("trace programs"), can("daemon programs")) {
        (true, true) => "`schedlat trace` and `schedlat run` can run here",
        (true, false) => "`schedlat trace` can run here, `schedlat run` cannot",
        (false, true) => "`schedlat run` can run here, `schedlat trace` cannot",
        (false, false) => "schedlat cannot run here",
    };
    if let Some(throttling) = throttling {
        writeln!(
            out,
            "diagnosis             yes: who held the CPU and why; {throttling}"
        )?;
    }
    writeln!(out, "result                {verdict}")?;
    if !can("CPU sampler") {
        writeln!(
            out,
            "note                  without the CPU sampler, incidents have no flame graph or \
             run-queue snapshot and `schedlat flamegraph` cannot run; everything else works"
        )?;
    }
    if !failed_default.is_empty() && !verbose {
        writeln!(
            out,
            "note                  `schedlat check --verbose` prints the whole verifier log"
        )?;
    }
    Ok(if failed_default.is_empty() {
        Verdict::AllLoaded
    } else if can("trace programs") || can("daemon programs") {
        Verdict::Partial
    } else {
        Verdict::Nothing
    })
}

/// Prints what the kernel offers; whether it has the `sched_info` stamps.
fn print_features(out: &mut dyn Write, features: &Features) -> Result<bool> {
    writeln!(
        out,
        "kernel release        {}",
        names::escape(&features.kernel_release)
    )?;
    writeln!(out, "BTF (vmlinux)         {}", mark(features.btf))?;
    writeln!(out, "tp_btf programs       {}", mark(features.tp_btf))?;
    writeln!(
        out,
        "task storage          {}{}",
        mark(features.task_storage),
        if features.task_storage {
            ""
        } else {
            " (falls back to a tid-keyed hash)"
        }
    )?;
    writeln!(out, "ring buffer           {}", mark(features.ringbuf))?;
    writeln!(
        out,
        "perf events           {}{}",
        mark(features.perf_event),
        if features.perf_event {
            ""
        } else {
            " (CPU sampling for incident flame graphs unavailable)"
        }
    )?;
    match &features.layout {
        Some(layout) => writeln!(
            out,
            "task_struct offsets   pid {} tgid {} comm {} state {}; sched_switch {} args",
            layout.pid_offset,
            layout.tgid_offset,
            layout.comm_offset,
            layout.state_offset,
            if layout.switch_has_prev_state { 4 } else { 3 }
        )?,
        None => writeln!(out, "task_struct offsets   NOT FOUND in BTF")?,
    }
    let stamps = features
        .layout
        .as_ref()
        .and_then(|l| l.daemon)
        .is_some_and(|d| d.sched_info.is_some());
    writeln!(
        out,
        "sched_info stamps     {}",
        if stamps {
            "yes (the daemon's switch-only probes can run)"
        } else {
            "NO (CONFIG_SCHED_INFO missing: the daemon stamps enqueues with the wakeup programs)"
        }
    )?;
    Ok(stamps)
}

/// The program sets `check` loads, with the daemon's default set chosen for this kernel.
fn program_sets(stamps: bool) -> [Set; 4] {
    [
        Set {
            label: "trace programs",
            config: ProbeConfig {
                mode: Mode::Trace,
                diagnose: true,
                ..ProbeConfig::default()
            },
            programs: &TRACE_PROGRAMS,
            default: true,
        },
        Set {
            label: "daemon programs",
            config: ProbeConfig {
                mode: Mode::Daemon,
                diagnose: true,
                ..ProbeConfig::default()
            },
            programs: if stamps {
                &DAEMON_PROGRAMS
            } else {
                &DAEMON_FALLBACK_PROGRAMS
            },
            default: true,
        },
        Set {
            label: "daemon fallback",
            config: ProbeConfig {
                mode: Mode::Daemon,
                force_own_stamps: true,
                diagnose: true,
                ..ProbeConfig::default()
            },
            programs: &DAEMON_FALLBACK_PROGRAMS,
            // Only what `schedlat run` uses without sched_info; that case is the line above.
            default: false,
        },
        Set {
            label: "CPU sampler",
            config: ProbeConfig {
                mode: Mode::Sampler,
                sampler_hz: Some(1),
                ..ProbeConfig::default()
            },
            programs: &[(program::CPU_SAMPLE, "cpu-clock perf events")],
            default: true,
        },
    ]
}

/// A program set `check` loads.
struct Set {
    label: &'static str,
    config: ProbeConfig,
    programs: &'static [(&'static str, &'static str)],
    /// Used by the default configuration (a failure makes `check` exit non-zero).
    default: bool,
}

/// What `check` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything the default configuration uses loads (exit 0).
    AllLoaded,
    /// Something the default configuration uses does not load, the rest does (exit 3).
    Partial,
    /// Neither `trace` nor `run` can run (exit 1).
    Nothing,
}

/// Lines of a verifier log kept in the short form of an error.
const VERIFIER_TAIL_LINES: usize = 4;

/// An error in one line plus the verifier log's deciding lines: the log's first line is often
/// a harmless message, and the reason the program was refused is at its end (before the
/// "processed N insns" statistics).
#[must_use]
pub fn short_error(error: &anyhow::Error) -> String {
    let full = format!("{error:#}");
    let Some((head, log)) = full.split_once("Verifier output:") else {
        return full;
    };
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("processed ") && !l.starts_with("verification time"))
        .filter(|l| !l.starts_with("stack depth"))
        .collect();
    let tail = &lines[lines.len().saturating_sub(VERIFIER_TAIL_LINES)..];
    format!(
        "{} verifier: ... {}",
        head.trim_end().trim_end_matches('.'),
        tail.join(" | ")
    )
}

/// How the loaded programs observe CFS bandwidth throttling (for the `throttled` cause).
fn throttle_report(probes: &Probes) -> String {
    match (probes.throttle_clock(), probes.throttle_observable()) {
        (true, _) => "CPU quota throttling: from the kernel's per-cgroup throttled-time clock \
                      (cfs_rq.throttled_clock_self_time)"
            .to_owned(),
        (false, Ok(())) => {
            "CPU quota throttling: from fexit/fentry on throttle_cfs_rq/unthrottle_cfs_rq"
                .to_owned()
        }
        (false, Err(why)) => format!(
            "CPU quota throttling NOT observable ({}): waits under a quota are not called \
             `throttled`, the rest of the diagnosis works",
            names::escape(&why)
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::short_error;

    #[test]
    fn short_error_keeps_the_deciding_verifier_lines() {
        let mut log = String::from("func#0 @0\nharmless first line\n");
        for i in 0..1000 {
            let _ = writeln!(log, "{i}: (bf) r1 = r2");
        }
        log.push_str(
            "R2 unbounded min value\nmath between map_value pointer and register with \
             unbounded min value is not allowed\nprocessed 20800 insns (limit 1000000)\n",
        );
        let e = anyhow::anyhow!("the BPF_PROG_LOAD syscall failed. Verifier output: {log}")
            .context("loading the cpu_sample program (verifier)");
        let short = short_error(&e);
        assert!(
            short.contains("unbounded min value is not allowed"),
            "{short}"
        );
        assert!(!short.contains("harmless first line"), "{short}");
        assert!(!short.contains("processed 20800"), "{short}");
        assert!(short.len() < 400, "{} bytes: {short}", short.len());
        let plain = anyhow::anyhow!("permission denied");
        assert_eq!(short_error(&plain), "permission denied");
    }
}
