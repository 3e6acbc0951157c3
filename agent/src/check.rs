//! `schedlat check`: can the agent run on this machine? Probes features, then loads and
//! attaches every program for real and detaches again.

use std::io::Write;

use anyhow::Result;

use crate::{
    loader::{DAEMON_PROGRAMS, Features, Mode, ProbeConfig, Probes, TRACE_PROGRAMS},
    names,
};

fn mark(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// Prints the report; `Ok(true)` when the agent can run here.
pub fn run(out: &mut dyn Write) -> Result<bool> {
    let features = Features::probe();
    // Text from the system goes to a terminal: control characters escaped (`names::escape`).
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
    writeln!(
        out,
        "sched_info stamps     {}",
        match features.layout.as_ref().map(|l| l.daemon.is_some()) {
            Some(true) => "yes (the daemon's switch-only probes can run)",
            _ => "NO (CONFIG_SCHED_INFO missing: `schedlat run` cannot run, `trace` can)",
        }
    )?;
    let mut trace_ok = false;
    let mut daemon_ok = false;
    let mut sampler_ok = false;
    let sampler = [("cpu_sample", "cpu-clock perf events")];
    for (mode, programs, ok) in [
        (Mode::Trace, &TRACE_PROGRAMS[..], &mut trace_ok),
        (Mode::Daemon, &DAEMON_PROGRAMS[..], &mut daemon_ok),
        (Mode::Sampler, &sampler[..], &mut sampler_ok),
    ] {
        let names: Vec<&str> = programs.iter().map(|p| p.0).collect();
        let label = match mode {
            Mode::Trace => "trace programs",
            Mode::Daemon => "daemon programs",
            Mode::Sampler => "CPU sampler",
        };
        match Probes::load(&ProbeConfig {
            mode,
            min_event_ns: Some(u64::MAX),
            sampler_hz: (mode == Mode::Sampler).then_some(1),
            ..ProbeConfig::default()
        }) {
            Ok(probes) => {
                drop(probes);
                writeln!(
                    out,
                    "{label:<22}yes: loaded, attached and detached {}",
                    names.join(", ")
                )?;
                *ok = true;
            }
            Err(e) => writeln!(out, "{label:<22}NO: {}", names::escape(&format!("{e:#}")))?,
        }
    }
    let verdict = match (trace_ok, daemon_ok) {
        (true, true) => "schedlat can run here",
        (true, false) => "`schedlat trace` can run here, `schedlat run` cannot",
        (false, true) => "`schedlat run` can run here, `schedlat trace` cannot",
        (false, false) => "schedlat cannot run here",
    };
    writeln!(out, "result                {verdict}")?;
    if !sampler_ok {
        writeln!(
            out,
            "note                  incident flame graphs and `schedlat flamegraph` need the CPU sampler"
        )?;
    }
    Ok(trace_ok || daemon_ok)
}
