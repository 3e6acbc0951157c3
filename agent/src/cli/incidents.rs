//! `schedlat incidents list | show ID`: read the bundles `schedlat run` wrote.
//!
//! Everything printed comes from files, so text output goes through `names::escape` (a bundle
//! written by an older version may hold a name with raw control characters) and JSON output
//! through `names::json_for_terminal`.

use std::{borrow::Cow, fmt::Write as _, fs, io, io::Write, path::Path};

use anyhow::{Context as _, Result};

use crate::{
    UsageError,
    cli::OutputFormat,
    host::names,
    incident::store::{Metadata, list_bundles, permission_denied, read_metadata},
    kernel::events::human_ns,
};

/// The metadata with every string escaped for a terminal (`names::escape`), so that a name
/// holding a newline or an escape sequence stays one field of one line.
fn escaped(mut m: Metadata) -> Metadata {
    let fix = |s: &mut String| {
        if let Cow::Owned(e) = names::escape(s) {
            *s = e;
        }
    };
    fix(&mut m.id);
    fix(&mut m.time);
    for task in [Some(&mut m.victim), m.preemptor.as_mut(), m.waker.as_mut()]
        .into_iter()
        .flatten()
    {
        fix(&mut task.comm);
        if let Some(cgroup) = task.cgroup.as_mut() {
            fix(cgroup);
        }
    }
    m.files.iter_mut().for_each(fix);
    m
}

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

/// Fails with an error a person can act on unless `dir` is a directory this user can look at.
fn check_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(UsageError(format!(
            "{} is not a directory (give the incident directory with --incident-dir)",
            dir.display()
        ))
        .into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(UsageError(format!(
            "no incident directory at {} (schedlat run writes there; see --incident-dir)",
            dir.display()
        ))
        .into()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(permission_denied(dir)),
        Err(e) => Err(e).with_context(|| format!("checking {}", dir.display())),
    }
}

pub fn list(dir: &Path, format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    check_dir(dir)?;
    let bundles = list_bundles(dir)?;
    if format == OutputFormat::Text {
        writeln!(
            out,
            "{:<48} {:<11} {:>10} {:<4} {:<32} {:<16} VERDICT",
            "ID", "REASON", "VALUE", "CPU", "VICTIM", "CAUSE"
        )?;
    }
    for (id, _) in &bundles {
        let m = match read_metadata(dir, id) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("skipping {}: {e:#}", names::escape(id));
                continue;
            }
        };
        match format {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                names::json_for_terminal(&serde_json::to_string(&m)?)
            )?,
            OutputFormat::Text => {
                let m = escaped(m);
                writeln!(
                    out,
                    "{:<48} {:<11} {:>10} {:<4} {:<32} {:<16} {}",
                    m.id,
                    m.reason.name(),
                    human_ns(m.value_ns),
                    m.cpu.map_or("-".to_owned(), |c| c.to_string()),
                    victim_text(&m),
                    m.diagnosis.as_ref().map_or("-", |d| d.cause.name()),
                    headline(&m)
                )?;
            }
        }
    }
    if format == OutputFormat::Text && bundles.is_empty() {
        writeln!(
            out,
            "(no incidents in {})",
            names::escape(&dir.display().to_string())
        )?;
    }
    Ok(())
}

pub fn show(dir: &Path, id: &str, format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    check_dir(dir)?;
    let m = read_metadata(dir, id)?;
    if format == OutputFormat::Json {
        let json = serde_json::to_string_pretty(&m)?;
        writeln!(out, "{}", names::json_for_terminal(&json))?;
        return Ok(());
    }
    let m = escaped(m);
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
    if let Some(d) = &m.diagnosis {
        render_diagnosis(&mut text, d);
    }
    if let Some(p) = &m.preemptor {
        let _ = writeln!(
            text,
            "preemptor  {}/{} [{}] (the last task on the CPU before the victim)",
            p.tid, p.comm, p.tgid
        );
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
    if m.flamegraphs.is_empty() {
        let _ = writeln!(
            text,
            "flamegraph {} samples, {} ms before to {} ms after: {}",
            m.samples,
            m.flamegraph_before_ms,
            m.flamegraph_after_ms,
            bundle.join("flamegraph.svg").display()
        );
    }
    for g in &m.flamegraphs {
        let cpus = g.cpus.as_ref().map_or_else(
            || "every CPU".to_owned(),
            |c| format!("CPU {}", crate::diagnosis::cpu_list(c)),
        );
        let _ = writeln!(
            text,
            "flamegraph {cpus}: {} samples, {} ms before to {} ms after: {}",
            g.samples,
            m.flamegraph_before_ms,
            m.flamegraph_after_ms,
            bundle.join(&g.svg).display()
        );
    }
    let _ = writeln!(text, "files      {}", bundle.display());
    for f in &m.files {
        let _ = writeln!(text, "             {f}");
    }
    let runqueue_path = bundle.join("runqueue.txt");
    let runqueue = fs::read(&runqueue_path).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            permission_denied(&runqueue_path)
        } else {
            anyhow::Error::new(e).context(format!("reading {}", runqueue_path.display()))
        }
    })?;
    let _ = write!(
        text,
        "\nrun queues at the trigger:\n{}",
        names::escape_lines(&runqueue)
    );
    // Paths (the bundle's, the directory given) may hold control characters too.
    out.write_all(names::escape_lines(text.as_bytes()).as_bytes())?;
    Ok(())
}

/// The one-line story of an incident: the diagnosis' verdict, else who ran last.
fn headline(m: &Metadata) -> String {
    match (&m.diagnosis, &m.preemptor) {
        (Some(d), _) => names::escape(&d.verdict).into_owned(),
        (None, Some(p)) => format!("behind {}/{} [{}] (not diagnosed)", p.tid, p.comm, p.tgid),
        (None, None) => "-".to_owned(),
    }
}

/// The diagnosis, readably: cause, verdict, culprits with shares, the deciding facts.
fn render_diagnosis(text: &mut String, d: &crate::diagnosis::engine::Diagnosis) {
    let pct = |share: f64| format!("{:.1}%", 100.0 * share);
    let _ = writeln!(
        text,
        "cause      {} ({} of the wait)",
        d.cause.name(),
        pct(d.cause_share)
    );
    let _ = writeln!(text, "verdict    {}", names::escape(&d.verdict));
    for (i, c) in d.culprits.iter().enumerate() {
        let _ = writeln!(
            text,
            "{}{:>6}  {}/{} [{}] in {}",
            if i == 0 { "culprits " } else { "         " },
            pct(c.share),
            c.tid,
            names::escape(&c.comm),
            c.tgid,
            names::escape(&c.cgroup)
        );
    }
    let _ = writeln!(
        text,
        "           rest {}, not recorded {}",
        pct(d.rest_share),
        pct(d.unrecorded_share)
    );
    for (i, fact) in d.evidence.iter().enumerate() {
        let _ = writeln!(
            text,
            "{}{}",
            if i == 0 {
                "evidence   - "
            } else {
                "           - "
            },
            names::escape(fact)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::store::{Reason, TaskRef};

    fn metadata(id: &str, comm: &str) -> Metadata {
        Metadata {
            id: id.to_owned(),
            schema_version: 1,
            time: "2026-11-26T10:00:00.000Z".to_owned(),
            unix_ns: 0,
            reason: Reason::Wait,
            threshold_ns: 10_000_000,
            value_ns: 25_000_000,
            victim: TaskRef {
                tid: 7,
                tgid: 7,
                comm: comm.to_owned(),
                cgroup: Some("/evil\u{1b}]0;title\u{7}".to_owned()),
            },
            cpu: Some(1),
            preemptor: Some(TaskRef {
                tid: 8,
                tgid: 8,
                comm: "hog\u{9b}2J".to_owned(),
                cgroup: None,
            }),
            waker: None,
            diagnosis: None,
            window: serde_json::json!({}),
            samples: 0,
            flamegraph_before_ms: 0,
            flamegraph_after_ms: 0,
            files: vec!["metadata.json".to_owned()],
            flamegraphs: Vec::new(),
        }
    }

    /// A bundle as an older schedlat (lossy names, control characters kept) may have left it.
    fn scratch_with_bundle(tag: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!(
            "schedlat-incidents-cli-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        let id = "20261126T100000.000Z-wait-x-7";
        fs::create_dir_all(dir.join(id)).expect("mkdir");
        let m = metadata(id, "bad\u{fffd}\u{1b}[31m\nfake line\r\u{7f}");
        fs::write(
            dir.join(id).join("metadata.json"),
            serde_json::to_vec_pretty(&m).expect("json"),
        )
        .expect("write metadata");
        fs::write(
            dir.join(id).join("runqueue.txt"),
            b"CPU 0: running 7/bad\xff\x1b[31m\nCPU 1: idle\n",
        )
        .expect("write runqueue");
        (dir, id.to_owned())
    }

    fn assert_terminal_safe(output: &[u8]) {
        let text = std::str::from_utf8(output).expect("output is UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached the terminal: {text:?}"
        );
    }

    #[test]
    fn list_and_show_escape_names_from_the_files() {
        let (dir, id) = scratch_with_bundle("escape");
        for format in [OutputFormat::Text, OutputFormat::Json] {
            let mut out = Vec::new();
            list(&dir, format, &mut out).expect("list");
            assert_terminal_safe(&out);
            let text = String::from_utf8(out).expect("utf-8");
            assert_eq!(
                text.lines().count(),
                if format == OutputFormat::Text { 2 } else { 1 },
                "a newline in a name must not start a line of its own:\n{text}"
            );
            let mut out = Vec::new();
            show(&dir, &id, format, &mut out).expect("show");
            assert_terminal_safe(&out);
            let text = String::from_utf8(out).expect("utf-8");
            if format == OutputFormat::Text {
                assert!(
                    text.contains("bad\u{fffd}\\x1b[31m\\x0afake line\\x0d\\x7f"),
                    "{text}"
                );
                assert!(text.contains("7/bad\\xff\\x1b[31m"), "{text}");
                assert!(text.contains("hog\\xc2\\x9b2J"), "{text}");
            } else {
                let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(
                    value["preemptor"]["comm"], "hog\u{9b}2J",
                    "the same JSON value"
                );
            }
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_missing_directory_or_incident_is_a_usage_error() {
        let dir = Path::new("/nonexistent-schedlat-incidents");
        let err = list(dir, OutputFormat::Text, &mut Vec::new()).expect_err("missing dir");
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
        assert!(err.to_string().contains("no incident directory"), "{err:#}");
        let (scratch, _) = scratch_with_bundle("missing");
        let err = show(&scratch, "nope", OutputFormat::Text, &mut Vec::new()).expect_err("no id");
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
        assert!(
            err.to_string().contains("no such incident: nope"),
            "{err:#}"
        );
        fs::remove_dir_all(&scratch).expect("cleanup");
    }
}
