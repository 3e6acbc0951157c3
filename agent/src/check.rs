//! `schedlat check`: can the agent run on this machine? Probes features, then loads and
//! attaches every program for real and detaches again.

use std::io::Write;

use anyhow::Result;

use crate::loader::{Features, ProbeConfig, Probes, TRACEPOINTS};

fn mark(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// Prints the report; `Ok(true)` when the agent can run here.
pub fn run(out: &mut dyn Write) -> Result<bool> {
    let features = Features::probe();
    writeln!(out, "kernel release        {}", features.kernel_release)?;
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
    let probes = Probes::load(&ProbeConfig {
        min_event_ns: Some(u64::MAX),
        ..ProbeConfig::default()
    });
    match probes {
        Ok(probes) => {
            writeln!(out, "load and attach       yes: {}", TRACEPOINTS.join(", "))?;
            drop(probes);
            writeln!(out, "detach                yes")?;
            writeln!(out, "result                schedlat can run here")?;
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "load and attach       NO: {e:#}")?;
            writeln!(out, "result                schedlat cannot run here")?;
            Ok(false)
        }
    }
}
