//! An open-loop load generator: requests leave at a fixed rate whatever the responses do, and
//! each latency is measured from when its request was *due*, so a stalled server shows up in
//! full instead of being hidden by a client that waits (coordinated omission).
//!
//! Output: one JSON line per second of schedule, `{"second", "sent", "errors", "p50_ms",
//! "p99_ms", "max_ms", "latencies_us"}` (a request belongs to the second it was due in).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::feed::Rng;

#[derive(Default)]
struct Second {
    sent: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

async fn request(addr: SocketAddr, user: usize) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /feed?user={user} HTTP/1.1\r\nHost: feed\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::with_capacity(4096);
    stream.read_to_end(&mut response).await?;
    anyhow::ensure!(response.starts_with(b"HTTP/1.1 200"), "non-200 response");
    Ok(())
}

/// Sends `rate` requests per second for `duration`, printing a line per second.
pub fn run(addr: SocketAddr, rate: u32, duration: Duration, users: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let seconds = duration.as_secs().max(1) as usize;
        let stats: Arc<Mutex<Vec<Second>>> = Arc::new(Mutex::new(
            (0..seconds).map(|_| Second::default()).collect(),
        ));
        let start = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let total = u64::from(rate) * seconds as u64;
        let mut rng = Rng::new(7);
        let mut printed = 0usize;
        let mut handles = Vec::new();
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(due.into()).await;
            let second = (i / u64::from(rate.max(1))) as usize;
            let user = rng.below(users);
            let task_stats = Arc::clone(&stats);
            handles.push(tokio::spawn(async move {
                let result =
                    tokio::time::timeout(Duration::from_secs(5), request(addr, user)).await;
                let latency_us = due.elapsed().as_micros() as u64;
                let mut s = task_stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let entry = &mut s[second];
                entry.sent += 1;
                match result {
                    Ok(Ok(())) => entry.latencies_us.push(latency_us),
                    _ => entry.errors += 1,
                }
            }));
            // Print each second once its requests have had 5 s to finish (or at the end).
            while printed + 6 <= second {
                print_second(&stats, printed);
                printed += 1;
            }
        }
        for h in handles {
            let _ = h.await;
        }
        while printed < seconds {
            print_second(&stats, printed);
            printed += 1;
        }
        Ok(())
    })
}

fn print_second(stats: &Mutex<Vec<Second>>, second: usize) {
    let s = stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = &s[second];
    let mut sorted = entry.latencies_us.clone();
    sorted.sort_unstable();
    let quantile_ms = |q: f64| -> Option<f64> {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).map(|&us| us as f64 / 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "second": second,
            "sent": entry.sent,
            "errors": entry.errors,
            "p50_ms": quantile_ms(0.5),
            "p99_ms": quantile_ms(0.99),
            "max_ms": quantile_ms(1.0),
            "latencies_us": entry.latencies_us,
        })
    );
}
