//! `schedlat incidents list | show ID`: read the bundles `schedlat run` wrote.

use std::{fmt::Write as _, io::Write, path::Path};

use anyhow::{Context as _, Result};

use crate::{
    UsageError,
    events::human_ns,
    incident::{Metadata, list_bundles, read_metadata},
    trace::OutputFormat,
};

fn victim_text(m: &Metadata) -> String {
    if m.victim.tid == 0 {
        format!(
            "cgroup {} (worst: {})",
            m.victim.cgroup.as_deref().unwrap_or("-"),
            m.victim.comm
        )
    } else {
        format!("{}/{} [{}]", m.victim.tid, m.victim.comm, m.victim.tgid)
    }
}

pub fn list(dir: &Path, format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    if !dir.exists() {
        return Err(UsageError(format!(
            "no incident directory at {} (schedlat run writes there; see --incident-dir)",
            dir.display()
        ))
        .into());
    }
    let bundles = list_bundles(dir)?;
    if format == OutputFormat::Text {
        writeln!(
            out,
            "{:<48} {:<11} {:>10} {:<4} {:<32} PREEMPTOR",
            "ID", "REASON", "VALUE", "CPU", "VICTIM"
        )?;
    }
    for (id, _) in &bundles {
        let m = match read_metadata(dir, id) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("skipping {id}: {e:#}");
                continue;
            }
        };
        match format {
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&m)?)?,
            OutputFormat::Text => writeln!(
                out,
                "{:<48} {:<11} {:>10} {:<4} {:<32} {}",
                m.id,
                m.reason.name(),
                human_ns(m.value_ns),
                m.cpu.map_or("-".to_owned(), |c| c.to_string()),
                victim_text(&m),
                m.preemptor.as_ref().map_or("-".to_owned(), |p| format!(
                    "{}/{} [{}]",
                    p.tid, p.comm, p.tgid
                ))
            )?,
        }
    }
    if format == OutputFormat::Text && bundles.is_empty() {
        writeln!(out, "(no incidents in {})", dir.display())?;
    }
    Ok(())
}

pub fn show(dir: &Path, id: &str, format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    let m = read_metadata(dir, id).map_err(|e| UsageError(format!("{e:#}")))?;
    if format == OutputFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&m)?)?;
        return Ok(());
    }
    let bundle = dir.join(id);
    let mut text = String::new();
    let _ = writeln!(text, "incident   {}", m.id);
    let _ = writeln!(text, "time       {}", m.time);
    let _ = writeln!(
        text,
        "trigger    {} {} (threshold {})",
        m.reason.name(),
        human_ns(m.value_ns),
        human_ns(m.threshold_ns)
    );
    let _ = writeln!(text, "victim     {}", victim_text(&m));
    if let Some(cg) = &m.victim.cgroup {
        let _ = writeln!(text, "cgroup     {cg}");
    }
    if let Some(cpu) = m.cpu {
        let _ = writeln!(text, "cpu        {cpu}");
    }
    if let Some(p) = &m.preemptor {
        let _ = writeln!(text, "preemptor  {}/{} [{}]", p.tid, p.comm, p.tgid);
    }
    let _ = writeln!(
        text,
        "waker      {}",
        m.waker.as_ref().map_or_else(
            || "not recorded (the daemon's switch-only probes do not see wakeups)".to_owned(),
            |w| format!("{}/{} [{}]", w.tid, w.comm, w.tgid)
        )
    );
    let _ = writeln!(text, "window     {}", m.window);
    let _ = writeln!(
        text,
        "flamegraph {} samples, {} ms before to {} ms after: {}",
        m.samples,
        m.flamegraph_before_ms,
        m.flamegraph_after_ms,
        bundle.join("flamegraph.svg").display()
    );
    let _ = writeln!(text, "files      {}", bundle.display());
    for f in &m.files {
        let _ = writeln!(text, "             {f}");
    }
    let runqueue = std::fs::read_to_string(bundle.join("runqueue.txt"))
        .with_context(|| format!("reading {}", bundle.join("runqueue.txt").display()))?;
    let _ = write!(text, "\nrun queues at the trigger:\n{runqueue}");
    out.write_all(text.as_bytes())?;
    Ok(())
}
