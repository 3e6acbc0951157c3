//! Helpers shared by the integration test files (each `tests/*.rs` is its own crate).
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub mod scenario;

use schedlat_test_support::{Sample, parse_metrics};
use serde_json::Value;

pub fn schedlat_bin() -> String {
    std::env::var("SCHEDLAT_BIN").unwrap_or_else(|_| {
        panic!("SCHEDLAT_BIN is not set: run these tests with `cargo xtask test` (as root)")
    })
}

/// The controlled workload: a hog and (on `go`) a sleeper, pinned to CPU 0 (all its threads).
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub hog_tid: u32,
}

#[derive(Debug)]
pub struct WorkloadResult {
    pub hog_tid: u32,
    pub sleeper_tid: u32,
    pub run_delay_ns: u64,
}

impl Workload {
    pub fn start(iterations: u32, burst_us: u32, sleep_us: u32) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_schedlat-workload"))
            .args([
                "0",
                &iterations.to_string(),
                &burst_us.to_string(),
                &sleep_us.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn schedlat-workload");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("workload stdout"));
        let ready = read_json_line(&mut stdout);
        let hog_tid = ready["hog_tid"].as_u64().expect("hog_tid") as u32;
        Self {
            child,
            stdin,
            stdout,
            hog_tid,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("workload stdin");
        stdin.write_all(b"go\n").expect("send go");
        stdin.flush().expect("flush go");
    }

    /// Closes stdin: the workload stops its hog and exits.
    pub fn finish(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait for the workload")
    }

    /// Blocks until the sleeper finished and is asleep for good.
    pub fn result(&mut self) -> WorkloadResult {
        let v = read_json_line(&mut self.stdout);
        WorkloadResult {
            hog_tid: v["hog_tid"].as_u64().expect("hog_tid") as u32,
            sleeper_tid: v["sleeper_tid"].as_u64().expect("sleeper_tid") as u32,
            run_delay_ns: v["run_delay_ns"].as_u64().expect("run_delay_ns"),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The file name `Named::exec_as` runs under, and how schedlat must show it (`\xNN`).
pub const EXEC_NAME: &[u8] = b"bad\xff\x1b[31m";
pub const EXEC_ESCAPED: &str = r"bad\xff\x1b[31m";
/// The name `Named::prctl` sets: a newline, an OSC sequence ending in BEL, an invalid byte.
pub const PRCTL_NAME: &[u8] = b"ctl\n\x1b]0;x\x07\xfe";
pub const PRCTL_ESCAPED: &str = r"ctl\x0a\x1b]0;x\x07\xfe";

/// A `schedlat-named` process (a 1 ms sleep-and-wake loop) with a name given as bytes; it runs
/// until dropped.
pub struct Named {
    child: Child,
    /// Where the renamed copy of the binary lives.
    scratch: Option<std::path::PathBuf>,
}

impl Named {
    /// Runs a copy of `schedlat-named` whose file name is `name`: exec gives it that name.
    pub fn exec_as(name: &[u8]) -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        static COPIES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let scratch = std::env::temp_dir().join(format!(
            "schedlat-named-{}-{}",
            std::process::id(),
            COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).expect("scratch directory");
        let exe = scratch.join(std::ffi::OsStr::from_bytes(name));
        std::fs::copy(env!("CARGO_BIN_EXE_schedlat-named"), &exe).expect("copy schedlat-named");
        let mut named = Self::spawn(Command::new(&exe), name);
        named.scratch = Some(scratch);
        named
    }

    /// Runs `schedlat-named`, which names itself `name` with `prctl(PR_SET_NAME)`.
    pub fn prctl(name: &[u8]) -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        let mut command = Command::new(env!("CARGO_BIN_EXE_schedlat-named"));
        command.arg(std::ffi::OsStr::from_bytes(name));
        Self::spawn(command, name)
    }

    fn spawn(mut command: Command, name: &[u8]) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut ready)
            .expect("read ready");
        assert_eq!(ready, "ready\n", "schedlat-named did not start");
        let named = Self {
            child,
            scratch: None,
        };
        let comm = std::fs::read(format!("/proc/{}/comm", named.pid())).expect("read comm");
        assert_eq!(
            comm,
            [name, b"\n"].concat(),
            "the kernel should hold the name as given"
        );
        named
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(scratch) = &self.scratch {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

pub fn read_json_line(reader: &mut impl std::io::BufRead) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Program and link ids of schedlat's programs currently in the kernel (bpftool view).
pub fn schedlat_bpf_objects() -> (HashSet<u64>, HashSet<u64>) {
    // bpftool shows the full names from the programs' BTF (the kernel keeps 15 characters).
    const NAMES: [&str; 7] = [
        "sched_wakeup",
        "sched_wakeup_new",
        "sched_migrate_task",
        "sched_switch",
        "sched_switch_daemon",
        "sched_migrate_task_daemon",
        "sched_process_exec_daemon",
    ];
    let progs = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("run bpftool (installed by cargo xtask setup)");
    assert!(progs.status.success(), "bpftool prog show failed");
    let progs: Value = serde_json::from_slice(&progs.stdout).expect("bpftool prog json");
    let prog_ids: HashSet<u64> = progs
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| p["type"] == "tracing" && NAMES.iter().any(|n| p["name"] == *n))
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let links = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("run bpftool");
    let links: Value = serde_json::from_slice(&links.stdout).unwrap_or(Value::Array(vec![]));
    let link_ids = links
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter(|l| {
                    l["prog_id"]
                        .as_u64()
                        .is_some_and(|id| prog_ids.contains(&id))
                })
                .filter_map(|l| l["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    (prog_ids, link_ids)
}

/// Which of `programs` are still loaded after waiting up to `timeout` for them to go.
pub fn programs_left_after(programs: &HashSet<u64>, timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let (now, _) = schedlat_bpf_objects();
        let left: Vec<u64> = programs.intersection(&now).copied().collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free loopback port (bound then released; good enough for tests run one at a time).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// GET over plain HTTP/1.0 (so no server answers with chunked encoding); (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A running `schedlat run`, its stderr collected in the background.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_binary(&schedlat_bin(), extra)
    }

    /// `bin run --listen 127.0.0.1:FREE_PORT [--incident-dir SCRATCH] extra...`, once healthy.
    pub fn start_binary(bin: &str, extra: &[&str]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // Incidents of test workloads go to a scratch directory, not the machine's.
        let scratch = std::env::temp_dir().join(format!(
            "schedlat-test-incidents-{}-{}",
            std::process::id(),
            addr.port()
        ));
        let mut own_dir: Vec<String> = Vec::new();
        if !extra.contains(&"--incident-dir") {
            own_dir = vec!["--incident-dir".into(), scratch.display().to_string()];
        }
        let mut child = Command::new(bin)
            .args(["run", "--listen", &addr.to_string()])
            .args(&own_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start schedlat run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let agent = Self {
            child,
            addr,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((200, body)) = http_get(addr, "/healthz") {
                assert_eq!(body, "ok\n");
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "schedlat run not healthy within 20 s; stderr:\n{}",
                agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> String {
        let (status, body) = http_get(self.addr, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        body
    }

    /// The samples of one scrape of /metrics.
    pub fn samples(&self) -> Vec<Sample> {
        samples_of(&self.metrics())
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    pub fn stop(mut self, signal: i32) -> ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "schedlat run did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The samples of an exposition text; an exposition Prometheus would reject fails the test,
/// saying which line and why.
pub fn samples_of(text: &str) -> Vec<Sample> {
    parse_metrics(text)
        .unwrap_or_else(|e| panic!("expected a valid text exposition, got {e}; text:\n{text}"))
}

/// A real Prometheus server (Debian package) on a free loopback port, with its own scratch
/// directory; killed and cleaned up on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Starts it with `config` as prometheus.yml and `files` (name, text) beside it.
    pub fn start(name: &str, config: &str, files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("schedlat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus scratch dir");
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("prometheus file");
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (Debian package, installed by cargo xtask setup)");
        Self { child, addr, dir }
    }

    /// The result vector of an instant query, or the error Prometheus gave.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )
        .ok_or("no answer")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("{status}: {}", v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
