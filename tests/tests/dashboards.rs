//! The shipped dashboard, rules and deployment files, proved against real software: promtool
//! checks and unit-tests the rules, a real Prometheus scrapes a running agent with the shipped
//! scrape config and rules, and every query of every dashboard panel must return data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::{Agent, Prometheus, Workload, schedlat_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
#[ignore = "needs promtool, installed by `cargo xtask setup`: run by `cargo xtask test`"]
fn promtool_accepts_and_unit_tests_the_rules() {
    let dir = repo().join("dashboards/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "rules.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "rules_test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool");
    assert!(
        test.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
#[ignore = "run by `cargo xtask test` with the release binary"]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipping the unit check");
        return;
    }
    // The unit as shipped, pointing at the binary under test.
    let unit = std::fs::read_to_string(repo().join("deploy/schedlat.service")).unwrap();
    let bin = std::env::var("SCHEDLAT_BIN")
        .map_or_else(|_| repo().join("target/release/schedlat"), PathBuf::from);
    let dir = std::env::temp_dir().join(format!("schedlat-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("schedlat.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/schedlat", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Without a running systemd, verify may complain about the manager, not about the unit.
    let about_unit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("schedlat.service"))
        .collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify:\n{text}");
}

/// Replaces the dashboard's variables the way Grafana would with "All" selected.
fn substitute(expr: &str) -> String {
    expr.replace("$node", ".*")
        .replace("$cgroup", ".*")
        .replace("$process", ".*")
        .replace("$__rate_interval", "10s")
        .replace("$__range", "2m")
        .replace("$__interval", "5s")
}

/// (what, expression) of every query in the dashboard: panel targets, annotations, and the
/// metric behind every `label_values()` variable.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            panel["description"].as_str().is_some_and(|d| d.len() > 40),
            "panel {title:?} needs a description that tells an SRE how to read it"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            out.push((format!("panel {title:?}"), substitute(expr), true));
        }
    }
    for a in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = a["expr"].as_str() {
            // Incidents are rare: the annotation query must run, not return data.
            out.push((
                format!("annotation {:?}", a["name"]),
                substitute(expr),
                false,
            ));
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(def) = v["definition"].as_str()
            && let Some(inner) = def.strip_prefix("label_values(")
        {
            let metric = inner.rsplit_once(',').map_or(inner, |(m, _)| m);
            out.push((
                format!("variable {:?}", v["name"]),
                substitute(metric),
                true,
            ));
        }
    }
    out
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/schedlat.json")).unwrap(),
    )
    .expect("dashboard JSON");
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(36),
        "Grafana 10+ schema"
    );
    let mut queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 12, "{} queries", queries.len());
    // The workload's sleeper waits behind its own hog (one process, one CPU): long waits for
    // "Top preemptors" and "Why are my tasks waiting", diagnosed as its own cgroup's doing.
    queries.push((
        "the workload's waits by cause".into(),
        r#"cgroup_cause:schedlat_wait_cause_seconds:rate_1m{cause="self_contention"} > 0"#.into(),
        true,
    ));

    let agent = Agent::start(&["--window", "1s"]);
    let mut workload = Workload::start(100_000, 2000, 1000);
    workload.go();

    // The shipped scrape config and rules, with the agent's address and test-speed intervals.
    let scrape = std::fs::read_to_string(repo().join("dashboards/prometheus/scrape.yml")).unwrap();
    let scrape = scrape
        .replace("localhost:9747", &agent.addr.to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    assert!(
        scrape.contains(&agent.addr.to_string()),
        "scrape target not substituted"
    );
    let rules = std::fs::read_to_string(repo().join("dashboards/prometheus/rules.yml")).unwrap();
    let rules = rules.replace("interval: 30s", "interval: 2s");
    let prometheus = Prometheus::start("dash", &scrape, &[("rules.yml", &rules)]);
    let run = |expr: &str| prometheus.query(expr).map(|result| result.len());
    let deadline = Instant::now() + Duration::from_secs(90);
    let failures = loop {
        let failures: Vec<String> = queries
            .iter()
            .filter_map(|(what, expr, needs_data)| match run(expr) {
                Err(e) => Some(format!("{what}: query failed ({e}): {expr}")),
                Ok(0) if *needs_data => Some(format!("{what}: no data: {expr}")),
                Ok(_) => None,
            })
            .collect();
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    drop(prometheus);
    drop(workload);
    assert!(agent.stop(libc::SIGTERM).success());
    assert!(
        failures.is_empty(),
        "dashboard queries without data after 90 s against {}:\n{}",
        schedlat_bin(),
        failures.join("\n")
    );
}
