//! The demo's story, measured: `demo-feed scenario` (what `cargo xtask demo` runs) in short
//! phases, with the real schedlat, kernel, feed service, load generator and noisy neighbour.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{process::Command, time::Duration};

use serde_json::Value;

mod common;
use common::{programs_left_after, schedlat_bin, schedlat_bpf_objects};

#[test]
#[ignore = "needs root and the release binaries: run by `cargo xtask test`"]
fn the_noisy_neighbour_shows_up_in_schedlat_and_goes_away() {
    let demo = std::env::var("DEMO_FEED_BIN")
        .expect("DEMO_FEED_BIN is not set: run with `cargo xtask test` (as root)");
    let out = std::env::temp_dir().join(format!("schedlat-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (before, _) = schedlat_bpf_objects();
    let run = Command::new(&demo)
        .args(["scenario", "--schedlat", &schedlat_bin()])
        .args(["--phase", "8s", "--rate", "150", "--out"])
        .arg(&out)
        .output()
        .expect("run demo-feed scenario");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "scenario failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("summary JSON");
    let phase = |i: usize| &summary["phases"][i];
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let (base, noisy, recovery) = (phase(0), phase(1), phase(2));

    assert!(
        summary["cgroups"].as_bool().unwrap(),
        "cgroup v2 is writable here"
    );
    assert!(
        f(base, "requests") > 1000.0 && f(base, "errors") == 0.0,
        "the feed served the load: {base}"
    );
    let (b99, n99, r99) = (
        f(base, "runqueue_p99_ms"),
        f(noisy, "runqueue_p99_ms"),
        f(recovery, "runqueue_p99_ms"),
    );
    assert!(
        n99 >= 3.0 * b99 && n99 >= 2.0,
        "the feed's run-queue p99 should rise well above baseline: {b99} ms -> {n99} ms"
    );
    assert!(
        r99 <= 2.0 * b99 + 1.0,
        "recovery should return near baseline: {b99} ms, then {r99} ms"
    );
    assert!(
        f(noisy, "feed_p99_ms") > f(base, "feed_p99_ms"),
        "the feed's own p99 should suffer too: {base} / {noisy}"
    );
    let top = &noisy["top_preemptors"][0];
    assert_eq!(
        top["cgroup"], summary["noisy_cgroup"],
        "the top preemptor during the noisy phase should be the noisy neighbour's cgroup: {noisy}"
    );
    let incidents: Vec<&Value> = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["incidents"].as_array().unwrap())
        .collect();
    assert!(
        incidents.iter().any(|i| i["hog_in_flamegraph"] == true),
        "an incident's flame graph should contain noisy_neighbour_burn: {incidents:?}"
    );
    let report = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    for needle in [
        "<svg id=\"timeline\"",
        "id=\"runqueue-p99\"",
        "id=\"phases\"",
        "data:image/svg+xml;base64,",
    ] {
        assert!(report.contains(needle), "report lacks {needle}");
    }

    render_in_chromium(&out.join("report.html"));

    // Everything the scenario started is gone.
    let (after, _) = schedlat_bpf_objects();
    let new: std::collections::HashSet<u64> = after.difference(&before).copied().collect();
    let left = programs_left_after(&new, Duration::from_secs(5));
    assert!(left.is_empty(), "programs left attached: {left:?}");
    let ps = Command::new("pgrep")
        .args(["-f", "demo-feed (serve|load|noisy)"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "demo processes left running: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Opens the report in headless Chromium (Debian's package): the rendered DOM has the chart's
/// lines with points and the phase table, and a screenshot is not blank.
fn render_in_chromium(report: &std::path::Path) {
    let profile = std::env::temp_dir().join(format!("schedlat-chromium-{}", std::process::id()));
    let shot = profile.with_extension("png");
    let url = format!("file://{}", report.display());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1000,800",
    ];
    let dom = Command::new("chromium")
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium (Debian package, installed by cargo xtask setup)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<svg id=\"timeline\""),
        "no chart in the rendered DOM"
    );
    let points = dom
        .split("id=\"feed-p99\"")
        .nth(1)
        .and_then(|rest| rest.split("points=\"").nth(1))
        .map_or(0, |p| {
            p.split('"').next().unwrap_or("").split_whitespace().count()
        });
    assert!(
        points >= 10,
        "the feed p99 line should have a point per second, has {points}"
    );
    assert!(dom.contains("<table id=\"phases\""), "no phase table");

    let status = Command::new("chromium")
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .status()
        .expect("chromium screenshot");
    assert!(status.success(), "chromium --screenshot failed");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("screenshot written"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let pixels = &buf[..info.buffer_size()];
    let distinct: std::collections::HashSet<&[u8]> =
        pixels.chunks(info.color_type.samples()).collect();
    assert!(
        distinct.len() > 20,
        "the screenshot looks blank ({} distinct colours)",
        distinct.len()
    );
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_file(&shot);
}
