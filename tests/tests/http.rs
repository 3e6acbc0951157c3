//! Privileged integration test of the agent's HTTP endpoint: the real `schedlat run`, a crowd of
//! idle and slow clients next to a burst of scrapes, then SIGTERM. Loopback only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    collections::HashSet,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

mod common;
use common::{Agent, http_get, programs_left_after, schedlat_bpf_objects};
use schedlat_test_support::sum;

const IDLE_CONNECTIONS: usize = 50;
const SCRAPES: usize = 200;
const SLOW_HEADER_EVERY: Duration = Duration::from_secs(2);

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to the agent at {addr}: {e}"))
}

/// A client that sends a request line, then one header line every 2 s and never finishes its
/// headers; when the server hangs up it starts over. Records how long each connection was held.
fn slow_header_client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<Duration>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        // Bounded: 10 connections of at most 15 header lines each.
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                break;
            };
            let started = Instant::now();
            if s.write_all(b"GET /metrics HTTP/1.1\r\n").is_err() {
                break;
            }
            for line in 0..15 {
                // Sleep in steps so the test can end the client promptly.
                let wake = Instant::now() + SLOW_HEADER_EVERY;
                while Instant::now() < wake && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let hung_up = s
                    .write_all(format!("X-Slow-{line}: 1\r\n").as_bytes())
                    .is_err()
                    || {
                        s.set_nonblocking(true).expect("nonblocking");
                        let mut buf = [0u8; 256];
                        // Anything but "nothing to read yet": the server answered or hung up.
                        let answered = !matches!(
                            s.read(&mut buf),
                            Err(e) if e.kind() == ErrorKind::WouldBlock
                        );
                        s.set_nonblocking(false).expect("blocking");
                        answered
                    };
                if hung_up {
                    break;
                }
            }
            held.lock().expect("held").push(started.elapsed());
        }
    })
}

/// `SCRAPES` GETs of /metrics released at once, one thread each: (latencies, failures).
fn scrape_together(addr: SocketAddr) -> (Vec<Duration>, Vec<String>) {
    let start_together = Arc::new(Barrier::new(SCRAPES));
    let scrapers: Vec<_> = (0..SCRAPES)
        .map(|_| {
            let start_together = Arc::clone(&start_together);
            std::thread::spawn(move || {
                start_together.wait();
                let started = Instant::now();
                let answer = http_get(addr, "/metrics");
                (started.elapsed(), answer)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(SCRAPES);
    let mut failures = Vec::new();
    for scraper in scrapers {
        let (took, answer) = scraper.join().expect("scraper thread");
        latencies.push(took);
        match answer {
            Some((200, body)) if body.contains("schedlat_build_info") => {}
            Some((status, body)) => failures.push(format!(
                "status {status}, body {:.120}",
                body.replace('\n', " ")
            )),
            None => failures.push(format!("no answer after {took:?}")),
        }
    }
    (latencies, failures)
}

/// SIGTERM, then waits for the exit: (status, time from the signal to the exit).
fn terminate(agent: &mut Agent) -> (std::process::ExitStatus, Duration) {
    let signalled = Instant::now();
    agent.signal(libc::SIGTERM);
    loop {
        if let Some(status) = agent.child.try_wait().expect("wait for the agent") {
            return (status, signalled.elapsed());
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "the agent did not exit within 20 s of SIGTERM; stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `schedlat_http_connections_total` by result: (accepted, refused, `timed_out`).
fn http_connections(agent: &Agent) -> (f64, f64, f64) {
    let metrics = agent.samples();
    let count = |result: &str| {
        sum(
            &metrics,
            "schedlat_http_connections_total",
            &[("result", result)],
        )
    };
    (count("accepted"), count("refused"), count("timed_out"))
}

/// A connection that got one answer and is kept alive.
fn kept_alive_connection(addr: SocketAddr) -> TcpStream {
    let mut kept_alive = connect(addr);
    kept_alive
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("send a kept-alive request");
    let mut buf = [0u8; 512];
    kept_alive
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let n = kept_alive.read(&mut buf).expect("kept-alive answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    kept_alive
}

#[test]
#[ignore = "needs root and the release binary: run by `cargo xtask test`"]
fn scrapes_answer_next_to_idle_and_slow_clients_and_sigterm_exits_promptly() {
    let (before, _) = schedlat_bpf_objects();
    let mut agent = Agent::start(&["--window", "1s"]);
    let addr = agent.addr;
    let (running, _) = schedlat_bpf_objects();
    let ours: HashSet<u64> = running.difference(&before).copied().collect();
    assert!(
        !ours.is_empty(),
        "the agent's BPF programs should show in bpftool while it runs"
    );
    // A window closed: /metrics carries the node's series, not the empty start-up page.
    std::thread::sleep(Duration::from_millis(1500));
    let page_bytes = agent.metrics().len();

    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS).map(|_| connect(addr)).collect();
    let idle_since = Instant::now();
    let stop_slow = Arc::new(AtomicBool::new(false));
    let held = Arc::new(Mutex::new(Vec::new()));
    let slow = slow_header_client(addr, Arc::clone(&stop_slow), Arc::clone(&held));
    // The slow client is mid-headers and the idle ones are open when the scrapes arrive.
    std::thread::sleep(Duration::from_millis(500));

    let (mut latencies, failures) = scrape_together(addr);
    latencies.sort();
    eprintln!(
        "{SCRAPES} concurrent scrapes next to {IDLE_CONNECTIONS} idle connections and a \
         slow-header client: {} failed; latency median {:?}, max {:?} ({page_bytes} bytes per \
         page)",
        failures.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        failures.is_empty(),
        "every scrape should answer 200 with schedlat_build_info; {} did not, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let (accepted, refused, _) = http_connections(&agent);
    assert!(
        accepted >= (SCRAPES + IDLE_CONNECTIONS) as f64 && refused == 0.0,
        "schedlat_http_connections_total should count at least {SCRAPES} scrapes and \
         {IDLE_CONNECTIONS} idle connections accepted and none refused (the cap leaves room \
         for this test's {} at once): accepted {accepted}, refused {refused}",
        SCRAPES + IDLE_CONNECTIONS + 1
    );

    // The header deadline (5 s) cuts the idle connections and the slow client (which notices
    // at its next write, then starts over).
    let mut timed_out = 0.0;
    while idle_since.elapsed() < Duration::from_secs(12) {
        timed_out = http_connections(&agent).2;
        if timed_out > IDLE_CONNECTIONS as f64 && !held.lock().expect("held").is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{timed_out} connections timed out {:?} after the idle ones opened",
        idle_since.elapsed()
    );
    assert!(
        timed_out > IDLE_CONNECTIONS as f64,
        "the {IDLE_CONNECTIONS} idle connections and the slow-header client should be cut by \
         the 5 s header deadline within 12 s; timed_out is {timed_out}"
    );

    // SIGTERM arrives with idle, half-sent (the slow client started over) and kept-alive
    // clients connected.
    let fresh_idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS).map(|_| connect(addr)).collect();
    let kept_alive = kept_alive_connection(addr);
    std::thread::sleep(Duration::from_millis(200));
    let (status, exit_time) = terminate(&mut agent);
    stop_slow.store(true, Ordering::Relaxed);
    slow.join().expect("slow-header client thread");
    let held = held.lock().expect("held").clone();
    eprintln!(
        "SIGTERM to exit: {exit_time:?} (status {status}); slow-header connections held: \
         {held:?}"
    );
    assert!(
        status.success() && exit_time < Duration::from_secs(5),
        "SIGTERM with clients connected should exit 0 in under 5 s: {status} after \
         {exit_time:?}; stderr:\n{}",
        agent.stderr()
    );
    // Each slow connection ends at the 5 s deadline, seen at the client's next 2 s write.
    assert!(
        !held.is_empty() && held.iter().all(|h| *h < Duration::from_secs(9)),
        "the slow-header client should have been cut off at about 5 s at least once: {held:?}"
    );
    let left = programs_left_after(&ours, Duration::from_secs(5));
    assert!(left.is_empty(), "programs left after SIGTERM: {left:?}");
    drop((idle, fresh_idle, kept_alive));
}
