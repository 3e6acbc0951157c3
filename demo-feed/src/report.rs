//! The demo's self-contained HTML report: no scripts or fetches, an inline SVG timeline with
//! the phases marked, the preemptor breakdown, and the incidents' flame graphs embedded.

use std::fmt::Write as _;

use crate::scenario::Summary;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 (for embedding the flame graph SVGs as data URIs).
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn chart(summary: &Summary) -> String {
    let (width, height, left, bottom, top) = (900.0, 320.0, 60.0, 40.0, 20.0);
    let t_max = summary.phases.last().map_or(1.0, |p| p.to_s).max(1.0);
    let y_max = summary
        .timeline
        .iter()
        .flat_map(|p| [p.feed_p99_ms, p.runqueue_p99_ms])
        .flatten()
        .fold(1.0f64, f64::max)
        * 1.1;
    let px = |t: f64| left + (t / t_max) * (width - left - 20.0);
    let py = |v: f64| top + (1.0 - v / y_max) * (height - top - bottom);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let colors = ["#e8f4e8", "#fbe3e3", "#e8eef8"];
    for (i, p) in summary.phases.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<rect class="phase" x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            px(p.from_s),
            px(p.to_s) - px(p.from_s),
            height - top - bottom,
            colors[i % 3],
            px(p.from_s) + 4.0,
            top + 14.0,
            escape(&p.name)
        );
    }
    for (series, color, id) in [
        (0usize, "#c0392b", "feed-p99"),
        (1, "#2c5aa0", "runqueue-p99"),
    ] {
        let points: Vec<String> = summary
            .timeline
            .iter()
            .filter_map(|p| {
                let v = if series == 0 {
                    p.feed_p99_ms
                } else {
                    p.runqueue_p99_ms
                }?;
                Some(format!("{:.1},{:.1}", px(p.t + 0.5), py(v)))
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline id="{id}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="#333"/>"##,
        height - bottom,
        width - 20.0,
        height - bottom,
        height - bottom
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{v:.1} ms</text>"#,
            left - 4.0,
            py(v) + 4.0
        );
    }
    let step = if t_max > 40.0 { 10 } else { 5 };
    for t in (0..=t_max as u32).step_by(step) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{t}</text>"#,
            px(f64::from(t)),
            height - bottom + 14.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">seconds</text><text x="{left}" y="{:.1}" font-size="12" fill="#c0392b">&#9644; feed request p99 (load generator)</text><text x="{:.1}" y="{:.1}" font-size="12" fill="#2c5aa0" text-anchor="end">&#9644; feed run-queue p99 (schedlat)</text></svg>"##,
        width / 2.0,
        height - 8.0,
        height - 8.0,
        width - 20.0,
        height - 8.0
    );
    svg
}

/// The report.
#[must_use]
pub fn html(summary: &Summary) -> String {
    let mut out = String::new();
    out.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>schedlat demo report</title>\
         <style>body{font-family:sans-serif;margin:24px;max-width:1000px}table{border-collapse:\
         collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:\
         #f4f4f4}td.l{text-align:left}img.flame{width:100%;border:1px solid #ccc}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>schedlat demo: three stories of a slow feed, and why it waited</h1>\
         <p>The feed service ran in cgroup <code>{}</code> under steady open-loop load. After a \
         baseline it met, each followed by a recovery: a noisy neighbour (CPU-bound threads in \
         cgroup <code>{}</code>), a CPU quota below its demand, and its threads pinned to one busy \
         CPU while another sat idle. Request latency is the load generator's; run-queue latency \
         and the diagnosis are schedlat's, for the feed's threads.</p>",
        escape(&summary.feed_cgroup),
        escape(&summary.noisy_cgroup)
    );
    out.push_str(&chart(summary));
    out.push_str(
        "<h2>Phases</h2><table id=\"phases\"><tr><th>phase</th><th>what the scenario did</th>\
         <th>requests</th><th>feed p50</th><th>feed p99</th><th>run-queue p50</th>\
         <th>run-queue p99</th><th>schedlat's diagnosis of the feed's long waits</th>\
         <th>who held the CPU (share)</th></tr>",
    );
    for p in &summary.phases {
        let top: Vec<String> = p
            .top_preemptors
            .iter()
            .map(|t| {
                format!(
                    "{} in <code>{}</code>: {:.0}% ({:.1} ms)",
                    escape(&t.process),
                    escape(&t.cgroup),
                    t.share * 100.0,
                    t.wait_ms
                )
            })
            .collect();
        let diagnosis = p.diagnosis.as_ref().map_or_else(
            || "<td class=\"l diagnosis\" data-cause=\"\">no long waits</td>".to_owned(),
            |d| {
                format!(
                    "<td class=\"l diagnosis\" data-cause=\"{}\"><b>{}</b>: {:.0}% of the wait \
                     time of {} long waits</td>",
                    escape(&d.cause),
                    escape(&d.cause),
                    d.cause_share * 100.0,
                    d.long_waits
                )
            },
        );
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{:.2} ms</td>\
             <td>{:.2} ms</td><td>{:.3} ms</td><td>{:.3} ms</td>{diagnosis}<td class=\"l\">{}</td></tr>",
            escape(&p.name),
            escape(&p.setup),
            p.requests,
            p.feed_p50_ms,
            p.feed_p99_ms,
            p.runqueue_p50_ms,
            p.runqueue_p99_ms,
            if top.is_empty() {
                "-".to_owned()
            } else {
                top.join("<br>")
            }
        );
    }
    out.push_str("</table>");
    incidents_html(summary, &mut out);
    out.push_str("</body></html>\n");
    out
}

/// The incidents, each with its verdict and the flame graph of the CPU it waited on.
fn incidents_html(summary: &Summary, out: &mut String) {
    out.push_str("<h2>Incidents</h2>");
    let all: Vec<_> = summary.phases.iter().flat_map(|p| &p.incidents).collect();
    if all.is_empty() {
        out.push_str("<p>No incident was captured.</p>");
    }
    for i in all {
        let _ = write!(
            out,
            "<div class=\"incident\" data-cause=\"{}\"><h3>{}</h3><p>{} waited {:.1} ms: \
             <b class=\"verdict\">{}</b> — bundle <code>{}</code>, \
             <a href=\"file://{}\">flame graph of the CPU it waited on</a> (below)</p>",
            escape(&i.cause),
            escape(&i.id),
            escape(&i.victim),
            i.wait_ms,
            escape(&i.verdict),
            escape(&i.path),
            escape(&i.flamegraph)
        );
        if let Ok(svg) = std::fs::read(std::path::Path::new(&i.path).join("flamegraph.svg")) {
            let _ = write!(
                out,
                "<img class=\"flame\" alt=\"flame graph of {}\" src=\"data:image/svg+xml;base64,{}\">",
                escape(&i.id),
                base64(&svg)
            );
        }
        out.push_str("</div>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Phase, Point};

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn report_has_chart_phases_and_escapes() {
        let summary = Summary {
            phases: vec![Phase {
                name: "baseline <1>".into(),
                to_s: 10.0,
                ..Phase::default()
            }],
            timeline: vec![Point {
                t: 1.0,
                feed_p99_ms: Some(2.0),
                runqueue_p99_ms: Some(0.5),
            }],
            ..Summary::default()
        };
        let html = html(&summary);
        for needle in [
            "<svg id=\"timeline\"",
            "id=\"feed-p99\"",
            "id=\"phases\"",
            "baseline &lt;1&gt;",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
    }
}
