//! The demo's story, measured: `demo-feed scenario` (what `cargo xtask demo` runs) in short
//! phases, with the real schedlat, kernel, feed service, load generator and noisy neighbour.

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
