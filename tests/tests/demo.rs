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
#[expect(
    clippy::too_many_lines,
    reason = "one scenario's whole story: three phases, their recoveries, report, cleanup"
)]
fn three_stories_of_a_slow_feed_each_diagnosed_right() {
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
    eprintln!("{stderr}\n{stdout}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("summary JSON");
    let phases = summary["phases"].as_array().unwrap();
    assert_eq!(
        phases.len(),
        7,
        "baseline and three stories, each with a recovery"
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let base = &phases[0];
    assert!(
        summary["cgroups"].as_bool().unwrap(),
        "cgroup v2 is writable here"
    );
    assert!(
        f(base, "requests") > 500.0 && f(base, "errors") == 0.0,
        "the feed served the load: {base}"
    );
    let b99 = f(base, "runqueue_p99_ms");
    for (story, cause) in [(1, "noisy_neighbour"), (3, "throttled"), (5, "affinity")] {
        let (phase, recovery) = (&phases[story], &phases[story + 1]);
        let name = phase["name"].as_str().unwrap();
        let diagnosis = &phase["diagnosis"];
        assert_eq!(
            diagnosis["cause"], cause,
            "{name}: the dominant cause of the feed's long waits: {phase}"
        );
        assert!(
            f(diagnosis, "cause_share") > 0.5,
            "{name}: {cause} should explain most of the long-wait time: {diagnosis}"
        );
        // Latency rises in the story and comes back after it.
        let (p99, r99) = (f(phase, "runqueue_p99_ms"), f(recovery, "runqueue_p99_ms"));
        assert!(
            p99 >= 2.0 * b99 && p99 >= 1.0,
            "{name}: the feed's run-queue p99 should rise: baseline {b99} ms, then {p99} ms"
        );
        assert!(
            r99 <= 2.0 * b99 + 1.0,
            "{name}: recovery should return near baseline: {b99} ms, then {r99} ms"
        );
        assert!(
            f(phase, "feed_p99_ms") > f(base, "feed_p99_ms"),
            "{name}: the feed's own p99 should suffer too: {base} / {phase}"
        );
    }
    let noisy = &phases[1]["diagnosis"];
    assert_eq!(
        noisy["culprits"][0]["cgroup"], summary["noisy_cgroup"],
        "the culprit of the noisy phase is in the noisy neighbour's cgroup: {noisy}"
    );
    // Incidents are the feed's (the hogs are not victims), and the noisy phase's flame graph
    // shows the neighbour's function as what its CPU did instead.
    let incidents: Vec<&Value> = phases
        .iter()
        .flat_map(|p| p["incidents"].as_array().unwrap())
        .collect();
    assert!(!incidents.is_empty(), "no incident in the whole demo");
    for i in &incidents {
        // The feed's threads: demo-feed (main) and its tokio workers, feed-worker.
        let victim = i["victim"].as_str().unwrap();
        assert!(
            victim.starts_with("demo-feed") || victim.starts_with("feed-worker"),
            "only the feed is watched: {i}"
        );
    }
    let noisy_incidents = phases[1]["incidents"].as_array().unwrap();
    assert!(
        noisy_incidents
            .iter()
            .any(|i| f(i, "noisy_share_of_busy_samples") > 0.5),
        "an incident of the noisy phase should show noisy_neighbour_burn as the dominant \
         non-idle frame of the victim's CPU: {noisy_incidents:?}"
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
    // The three diagnoses, as the browser rendered them.
    for cause in ["noisy_neighbour", "throttled", "affinity"] {
        assert!(
            dom.contains(&format!("data-cause=\"{cause}\"><b>{cause}</b>")),
            "the rendered phase table lacks the diagnosis {cause}"
        );
    }

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
