//! Privileged integration tests of incident capture and flame graphs: a hog (with a named,
//! frame-pointer-unwindable function) and a latency-sensitive thread pinned to one CPU, and a
//! busy process on another CPU.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

mod common;
use common::{Agent, Named, PRCTL_ESCAPED, PRCTL_NAME, Workload, schedlat_bin};
use schedlat_test_support::sum;

/// The hog's function in `schedlat-workload`.
const HOG_FUNCTION: &str = "schedlat_workload_hog_spin";
/// Its caller there, a Rust function: demangled, without the hash.
const HOG_CALLER: &str = "schedlat_workload::hog_until_stopped";
/// Where `schedlat-busy` spins.
const BUSY_FUNCTION: &str = "schedlat_busy::main";

/// The frames of the lines of a folded-stacks file.
fn folded_frames(folded: &str) -> Vec<Vec<&str>> {
    folded
        .lines()
        .map(|line| {
            let (stack, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no count in {line:?}"));
            assert!(count.parse::<u64>().is_ok(), "bad count in {line:?}");
            stack.split(';').collect()
        })
        .collect()
}

/// No frame of a folded-stacks file is a bare address (`0x0` and the like): user frames are
/// names, or `module+0xoffset` in a file.
fn assert_no_bare_addresses(name: &str, folded: &str) {
    let bare: Vec<&str> = folded_frames(folded)
        .into_iter()
        .flatten()
        .filter(|frame| {
            frame
                .strip_prefix("0x")
                .is_some_and(|hex| hex.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .collect();
    assert!(
        bare.is_empty(),
        "bare addresses {bare:?} in {name}:\n{folded}"
    );
}

/// A busy process pinned to CPU 1, away from the victim's CPU 0.
struct BusyElsewhere(std::process::Child);

impl BusyElsewhere {
    fn start() -> Self {
        // Spins 2 ms, sleeps 8 ms: hundreds of samples on CPU 1 in two seconds. SCHED_IDLE,
        // so that it yields to everything else; still, a task that lands on CPU 1 may wait
        // behind it (seen: 2 ms), hence `pause`.
        let child = Command::new("taskset")
            .args(["-c", "1", "chrt", "--idle", "0"])
            .arg(env!("CARGO_BIN_EXE_schedlat-busy"))
            .args(["2000", "8000"])
            .spawn()
            .expect("run taskset and chrt (util-linux) with schedlat-busy");
        Self(child)
    }

    /// Stops it (SIGSTOP): it no longer runs, but lives on, so its stacks still resolve.
    fn pause(&self) {
        // SAFETY: kill has no memory-safety preconditions.
        let stopped = unsafe { libc::kill(self.0.id() as i32, libc::SIGSTOP) };
        assert_eq!(stopped, 0, "{}", std::io::Error::last_os_error());
    }
}

impl Drop for BusyElsewhere {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("schedlat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Bundles of `dir` whose victim is process `tgid`: (id, metadata, when first seen).
fn bundles_of(dir: &Path, tgid: u32) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Value)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("metadata.json")).ok()?;
            let meta: Value = serde_json::from_str(&text).ok()?;
            (meta["victim"]["tgid"].as_u64() == Some(u64::from(tgid)))
                .then(|| (e.file_name().to_string_lossy().into_owned(), meta))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
#[expect(
    clippy::too_many_lines,
    reason = "one incident's whole life: trigger, bundle, cooldown, CLI"
)]
fn a_long_wait_leaves_one_bundle_with_the_hogs_stack_and_the_run_queue() {
    let dir = temp_dir("incidents");
    // Sample ~1000 times a second, so the flight recorder catches the sleeper in the run
    // queue during its 3-4 ms waits.
    let config = std::env::temp_dir().join(format!("schedlat-inc-{}.toml", std::process::id()));
    // The sleeper waits behind its own process's hog: `affinity` on a quiet machine (it is
    // pinned and the other CPU idles), `self_contention` when that CPU is busy, which does not
    // trigger by default (see `self_contention_does_not_trigger_by_default`). Other processes
    // of a busy machine cross the threshold too: room for all of them.
    std::fs::write(
        &config,
        "[incidents]\nsample_hz = 997\nmax_per_minute = 1000\ntrigger_on_self_contention = true\n",
    )
    .unwrap();
    // Another workload, busy on CPU 1 only until the workload starts: in the node's flame
    // graph, not in the victim's.
    let busy = BusyElsewhere::start();
    let agent = Agent::start(&[
        "--config",
        config.to_str().unwrap(),
        "--window",
        "1s",
        "--threshold",
        "2ms",
        "--incident-dir",
        dir.to_str().unwrap(),
    ]);
    // Let the flight recorder fill for a moment, so the flame graph has history. Then the busy
    // process stops: it must not delay the workload's threads before they pin themselves.
    std::thread::sleep(Duration::from_secs(2));
    busy.pause();
    // The sleeper's bursts (0.5 ms) are far below the threshold, so only the sleeper, waiting
    // a time slice of the hog's (3-4 ms here), crosses it: the hog is never the victim.
    let mut workload = Workload::start(100_000, 500, 1000);
    let pid = workload.pid();
    workload.go();

    let deadline = Instant::now() + Duration::from_secs(15);
    let (id, meta, seen_ns) = loop {
        if let Some((id, meta)) = bundles_of(&dir, pid).into_iter().next() {
            break (id, meta, unix_ns_now());
        }
        assert!(
            Instant::now() < deadline,
            "no incident for pid {pid} within 15 s; agent log:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let trigger_ns = meta["unix_ns"].as_u64().expect("unix_ns");
    let delay_s = seen_ns.saturating_sub(trigger_ns) as f64 / 1e9;
    eprintln!("bundle {id} complete {delay_s:.2} s after the breach was seen");
    // `incidents.after` (1 s) of CPU samples after the trigger, then the bundle is written:
    // 1.1 s here on a quiet machine; 2 s more for a loaded one, far below the 60 s cooldown or
    // shutdown that a bundle held back would wait for.
    assert!(
        delay_s <= 3.0,
        "the bundle appeared {delay_s:.2} s after the breach; expected within 3 s"
    );

    assert_eq!(meta["reason"], "wait");
    assert!(meta["value_ns"].as_u64().unwrap() >= 2_000_000, "{meta}");
    // `preemptor` is the task that ran last before the victim: the hog, or a kernel thread
    // that slipped in at the end of the wait (seen here: rcu_preempt, about 1 run in 10). Who
    // held the CPU during the wait is checked below, from the CPU samples.
    let preemptor_is_kernel_thread = meta["preemptor"]["comm"]
        .as_str()
        .is_some_and(|comm| comm.ends_with("(kernel thread)"));
    assert!(
        meta["preemptor"]["tid"].as_u64() == Some(u64::from(workload.hog_tid))
            || preemptor_is_kernel_thread,
        "the sleeper waited behind the hog (or a kernel thread ran last): {meta}"
    );
    assert_eq!(meta["cpu"].as_u64(), Some(0));
    // The diagnosis: who held the CPU by share, and why.
    let diagnosis = &meta["diagnosis"];
    let cause = diagnosis["cause"].as_str().unwrap_or_default();
    assert!(
        cause == "affinity" || cause == "self_contention",
        "the pinned sleeper waits behind its own hog: {diagnosis}"
    );
    let culprit = &diagnosis["culprits"][0];
    assert_eq!(
        culprit["tid"].as_u64(),
        Some(u64::from(workload.hog_tid)),
        "the hog held the CPU most: {diagnosis}"
    );
    assert!(culprit["share"].as_f64().unwrap() >= 0.5, "{diagnosis}");
    assert!(!diagnosis["verdict"].as_str().unwrap().is_empty());

    let bundle = dir.join(&id);
    // The main flame graph is CPU 0's, the victim's; the node's is the second.
    let graphs = meta["flamegraphs"].as_array().expect("flamegraphs listed");
    assert_eq!(graphs.len(), 2, "{meta}");
    assert_eq!(graphs[0]["scope"], "victim_cpus");
    assert_eq!(graphs[0]["svg"], "flamegraph.svg");
    assert_eq!(graphs[0]["folded"], "stacks.folded");
    assert_eq!(graphs[0]["cpus"], serde_json::json!([0]));
    assert_eq!(graphs[1]["scope"], "node");
    assert_eq!(graphs[1]["svg"], "flamegraph-node.svg");
    assert_eq!(graphs[1]["folded"], "stacks-node.folded");
    assert!(graphs[1]["cpus"].is_null(), "{meta}");
    let files = meta["files"].as_array().unwrap();
    for file in [
        "flamegraph.svg",
        "stacks.folded",
        "flamegraph-node.svg",
        "stacks-node.folded",
    ] {
        assert!(files.iter().any(|f| f == file), "{file} not listed: {meta}");
        assert!(bundle.join(file).is_file(), "{file} missing");
    }
    let victim_samples = graphs[0]["samples"].as_u64().unwrap();
    let node_samples = graphs[1]["samples"].as_u64().unwrap();
    eprintln!("flame graphs: {victim_samples} samples of CPU 0, {node_samples} of the node");
    assert!(
        victim_samples > 0 && victim_samples < node_samples,
        "CPU 0 has some of the node's samples: {meta}"
    );
    assert_eq!(meta["samples"].as_u64(), Some(victim_samples));

    let folded = std::fs::read_to_string(bundle.join("stacks.folded")).unwrap();
    let node_folded = std::fs::read_to_string(bundle.join("stacks-node.folded")).unwrap();
    // The hog's work under its caller, both named from the workload's symbol table (the
    // caller demangled): symbolized user frames, unwound by frame pointer.
    let hog_pair = format!("{HOG_CALLER};{HOG_FUNCTION}");
    assert!(
        folded.contains(&hog_pair),
        "CPU 0's stacks should show {hog_pair}:\n{folded}"
    );
    // Our schedlat-busy's code runs on CPU 1 only. (Its root frame alone proves nothing: before
    // its exec the process was taskset's, on any CPU. Other tests on the machine may run
    // schedlat-busy too, anywhere.)
    let busy_root = format!("schedlat-busy_[{}]", busy.0.id());
    let busy_code = |folded: &str| {
        folded_frames(folded)
            .iter()
            .filter(|stack| stack[0] == busy_root && stack.contains(&BUSY_FUNCTION))
            .count()
    };
    assert!(
        busy_code(&folded) == 0 && busy_code(&node_folded) > 0,
        "{busy_root}'s {BUSY_FUNCTION} ran on CPU 1 only: in the node's stacks, not in CPU \
         0's.\nCPU 0:\n{folded}\nnode:\n{node_folded}"
    );
    for stack in folded_frames(&folded) {
        if stack[0] == "[idle]" {
            assert_eq!(stack, ["[idle]"], "an idle CPU is one frame:\n{folded}");
        }
    }
    assert_no_bare_addresses("stacks.folded", &folded);
    assert_no_bare_addresses("stacks-node.folded", &node_folded);
    let svg = std::fs::read_to_string(bundle.join("flamegraph.svg")).unwrap();
    // The title names the victim: the sleeper, or the thread about to become it (a new
    // thread may wait behind the hog before it has set its name).
    let victim_comm = meta["victim"]["comm"].as_str().unwrap();
    for wanted in [HOG_FUNCTION, HOG_CALLER, victim_comm] {
        assert!(
            svg.contains(wanted),
            "flamegraph.svg lacks {wanted:?}: {meta}"
        );
    }
    let node_svg = std::fs::read_to_string(bundle.join("flamegraph-node.svg")).unwrap();
    assert!(
        node_svg.contains(HOG_FUNCTION) && node_svg.contains(BUSY_FUNCTION),
        "the node's SVG lacks the hog or the busy process"
    );
    let runqueue: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("runqueue.json")).unwrap())
            .unwrap();
    let cpu0 = &runqueue["cpus"][0];
    let hog = u64::from(workload.hog_tid);
    let hog_listed = cpu0["runnable"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["tid"].as_u64() == Some(hog))
        || cpu0["last_sampled"]["tid"].as_u64() == Some(hog);
    assert!(
        hog_listed,
        "CPU 0's run-queue snapshot should show the hog: {cpu0}"
    );
    // During its wait, a CPU sample saw the victim queued behind the hog.
    let seen = &runqueue["victim_queued"];
    let victim_tid = meta["victim"]["tid"].as_u64().unwrap();
    assert_eq!(
        seen["cpu"].as_u64(),
        Some(0),
        "victim not seen queued: {runqueue}"
    );
    assert_eq!(
        seen["running"]["tid"].as_u64(),
        Some(hog),
        "the hog should be running while the victim waits: {seen}"
    );
    let victim_entry = seen["queue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["tid"].as_u64() == Some(victim_tid))
        .unwrap_or_else(|| panic!("victim {victim_tid} not in the queue: {seen}"));
    let so_far = victim_entry["wait_ns"].as_u64().unwrap();
    let total = meta["value_ns"].as_u64().unwrap();
    assert!(
        so_far > 0 && so_far <= total + 100_000,
        "waited so far {so_far} ns should be within the wait of {total} ns"
    );

    // Private files, no half bundles.
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&bundle).unwrap().mode() & 0o777, 0o700);
    for f in std::fs::read_dir(&bundle).unwrap().flatten() {
        assert_eq!(
            f.metadata().unwrap().mode() & 0o777,
            0o600,
            "{} is readable by others",
            f.path().display()
        );
    }

    // Many more waits above 2 ms follow; the per-victim cooldown (60 s) keeps it at one.
    std::thread::sleep(Duration::from_secs(3));
    let ours = bundles_of(&dir, pid);
    assert_eq!(
        ours.len(),
        1,
        "cooldown should allow one incident per victim: {ours:?}"
    );
    let m = agent.samples();
    assert!(sum(&m, "schedlat_incidents_total", &[("reason", "wait")]) >= 1.0);
    assert!(
        sum(
            &m,
            "schedlat_incidents_suppressed_total",
            &[("why", "cooldown")]
        ) >= 1.0,
        "the suppressed triggers should be counted"
    );
    assert!(sum(&m, "schedlat_cpu_samples_total", &[]) > 0.0);

    // The CLI reads it back.
    let out = Command::new(schedlat_bin())
        .args(["incidents", "list", "--incident-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && list.contains(&id), "{list}");
    assert!(list.contains(cause), "the list shows the cause: {list}");
    let out = Command::new(schedlat_bin())
        .args(["incidents", "show", &id, "--incident-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("verdict    ") && text.contains("culprits ") && text.contains("evidence "),
        "show renders the diagnosis: {text}"
    );
    let out = Command::new(schedlat_bin())
        .args([
            "incidents",
            "show",
            &id,
            "--format",
            "json",
            "--incident-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).expect("show --format json");
    assert_eq!(shown["id"], id.as_str());
    let out = Command::new(schedlat_bin())
        .args(["incidents", "show", "no-such-incident", "--incident-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    drop((workload, busy));
    assert!(agent.stop(libc::SIGTERM).success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&config);
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn schedlat_flamegraph_names_the_hogs_function() {
    let mut workload = Workload::start(100_000, 2000, 1000);
    workload.go();
    let dir = temp_dir("flamegraph");
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("hog.svg");
    let folded = dir.join("hog.folded");
    let out = Command::new(schedlat_bin())
        .args(["flamegraph", "--pid", &workload.pid().to_string()])
        .args(["--duration", "2s", "-o"])
        .arg(&svg)
        .arg("--folded")
        .arg(&folded)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folded = std::fs::read_to_string(&folded).unwrap();
    assert!(
        folded.lines().all(
            |l| l.starts_with(&format!("schedlat-worklo [{}]", workload.pid()))
                || l.starts_with("schedlat-worklo_[")
        ),
        "only the traced process, as the root frame:\n{folded}"
    );
    assert!(folded.contains(HOG_FUNCTION), "{folded}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains(HOG_FUNCTION));

    let out = Command::new(schedlat_bin())
        .args(["flamegraph", "--pid", "999999999", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such process"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `incidents list` and `show` run by a user who may not read the bundles say "permission
/// denied", name the directory in the way and what would work (not "no incident directory").
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn reading_incidents_without_permission_says_so() {
    use std::os::unix::fs::PermissionsExt as _;
    let base = temp_dir("incidents-denied");
    let dir = base.join("incidents");
    let id = "20261126T100000.000Z-wait-x-7";
    std::fs::create_dir_all(dir.join(id)).expect("mkdir");
    std::fs::write(dir.join(id).join("metadata.json"), b"{}").expect("write");
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(schedlat_bin())
            .args(args)
            .output()
            .expect("run setpriv (util-linux)")
    };
    let dir_arg = dir.to_str().expect("UTF-8 temp dir");
    let list = vec!["incidents", "list", "--incident-dir", dir_arg];
    let show = vec!["incidents", "show", id, "--incident-dir", dir_arg];
    // Modes of base and dir, the command, then what the message must say is not allowed.
    for (base_mode, dir_mode, args, blamed) in [
        (
            0o700,
            0o700,
            &list,
            format!("enter {} (owner uid 0, mode 0700)", base.display()),
        ),
        (
            0o700,
            0o700,
            &show,
            format!("enter {} (owner uid 0, mode 0700)", base.display()),
        ),
        (
            0o755,
            0o700,
            &list,
            format!("list {} (owner uid 0, mode 0700)", dir.display()),
        ),
        (
            0o755,
            0o700,
            &show,
            format!("enter {} (owner uid 0, mode 0700)", dir.display()),
        ),
    ] {
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(base_mode)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
        let out = as_nobody(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let expected = format!("uid 65534 may not {blamed}");
        assert!(
            stderr.contains("permission denied") && stderr.contains(&expected),
            "{args:?}: expected \"permission denied\" and {expected:?} in: {stderr}"
        );
        assert!(stderr.contains("run this command as root"), "{stderr}");
        assert!(!stderr.contains("no incident directory"), "{stderr}");
    }
    std::fs::remove_dir_all(&base).expect("cleanup");
}

/// Bytes a terminal would act on: C0 controls but the newline, DEL, C1 controls; and U+FFFD,
/// the trace of a lossy conversion.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{fffd}')
        .collect()
}

/// Names are bytes in incidents too: a process that named itself with a newline, an OSC
/// sequence, BEL and an invalid byte waits behind a hog on its CPU. Its bundle, `incidents
/// list` and `incidents show` (text and JSON) carry the name escaped as the README says, and no
/// raw control character reaches the files or the terminal.
#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn an_incident_of_a_process_named_with_bytes_shows_the_name_escaped() {
    let dir = temp_dir("incidents-names");
    // Other processes of a busy machine cross the threshold too: room for all of them.
    let config =
        std::env::temp_dir().join(format!("schedlat-inc-names-{}.toml", std::process::id()));
    std::fs::write(&config, "[incidents]\nmax_per_minute = 1000\n").unwrap();
    // The hog on CPU 0 (the sleeper is never started), and the named process pinned there too:
    // it waits a slice of the hog's at many of its wakeups. Both run before the agent starts:
    // a long wait of the child between fork and exec (then it has the test thread's name)
    // would otherwise take the victim's one incident per cooldown.
    let workload = Workload::start(1, 100, 100);
    let named = Named::prctl(PRCTL_NAME);
    let pid: u32 = named.pid().parse().unwrap();
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    assert_eq!(
        pinned,
        0,
        "pinning {pid}: {}",
        std::io::Error::last_os_error()
    );
    let agent = Agent::start(&[
        "--config",
        config.to_str().unwrap(),
        "--threshold",
        "2ms",
        "--incident-dir",
        dir.to_str().unwrap(),
    ]);

    let deadline = Instant::now() + Duration::from_secs(20);
    let (id, meta) = loop {
        if let Some(found) = bundles_of(&dir, pid).into_iter().next() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no incident for pid {pid} within 20 s; agent log:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(meta["victim"]["comm"], PRCTL_ESCAPED, "{meta}");
    let bundle = dir.join(&id);
    for file in [
        "metadata.json",
        "runqueue.txt",
        "runqueue.json",
        "stacks.folded",
        "flamegraph.svg",
    ] {
        let bytes = std::fs::read(bundle.join(file)).unwrap();
        let text =
            std::str::from_utf8(&bytes).unwrap_or_else(|e| panic!("{file} is not UTF-8 ({e})"));
        let raw = raw_controls(text);
        assert!(raw.is_empty(), "raw {raw:?} in {file}");
    }

    let cli = |args: &[&str]| {
        let out = Command::new(schedlat_bin())
            .arg("incidents")
            .args(args)
            .arg("--incident-dir")
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "incidents {args:?}: {stderr}");
        let stdout = String::from_utf8(out.stdout)
            .unwrap_or_else(|e| panic!("incidents {args:?}: stdout is not UTF-8 ({e})"));
        let raw = raw_controls(&stdout);
        assert!(raw.is_empty(), "incidents {args:?}: raw {raw:?} on stdout");
        stdout
    };
    let victim = format!("/{PRCTL_ESCAPED} [{pid}]");
    let list = cli(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains(&victim)),
        "list: no line for {id} with victim {victim}:\n{list}"
    );
    let list = cli(&["list", "--format", "json"]);
    let ours: Vec<Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON ({e}): {l}")))
        .filter(|v: &Value| v["id"] == id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "list --format json: {list}");
    assert_eq!(ours[0]["victim"]["comm"], PRCTL_ESCAPED);
    let show = cli(&["show", &id]);
    assert!(
        show.lines()
            .any(|l| l.starts_with("victim ") && l.ends_with(&victim)),
        "show: no victim line ending in {victim}:\n{show}"
    );
    let shown: Value = serde_json::from_str(&cli(&["show", &id, "--format", "json"])).unwrap();
    assert_eq!(shown["victim"]["comm"], PRCTL_ESCAPED);

    drop((named, workload));
    assert!(agent.stop(libc::SIGTERM).success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&config);
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn self_contention_does_not_trigger_by_default() {
    let dir = temp_dir("selfcontention");
    let agent = Agent::start(&[
        "--window",
        "1s",
        "--threshold",
        "2ms",
        "--incident-dir",
        dir.to_str().unwrap(),
    ]);
    // CPU 1 busy, so the pinned sleeper's only explanation is its own hog on CPU 0.
    let busy = Command::new("taskset")
        .args([
            "-c",
            "1",
            env!("CARGO_BIN_EXE_schedlat-busy"),
            "10000000",
            "0",
        ])
        .spawn()
        .unwrap();
    let mut workload = Workload::start(100_000, 500, 1000);
    let pid = workload.pid();
    workload.go();
    let deadline = Instant::now() + Duration::from_secs(15);
    let self_waits = loop {
        let m = agent.samples();
        let waits = sum(
            &m,
            "schedlat_wait_cause_waits_total",
            &[("cause", "self_contention")],
        );
        if waits >= 20.0 || Instant::now() > deadline {
            break waits;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        self_waits >= 20.0,
        "expected long waits diagnosed self_contention; agent log:\n{}",
        agent.stderr()
    );
    let ours = bundles_of(&dir, pid);
    assert!(
        ours.is_empty(),
        "waiting behind its own hog is not an incident by default: {ours:?}"
    );
    drop(workload);
    let mut busy = busy;
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(agent.stop(libc::SIGTERM).success());
    let _ = std::fs::remove_dir_all(&dir);
}
