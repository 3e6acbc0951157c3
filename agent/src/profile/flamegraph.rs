//! `schedlat flamegraph`: sample what the CPUs run for a while and draw it (ad-hoc use of the
//! flight recorder that `schedlat run` keeps for incidents).

use std::{
    io::Write as _,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use agent_common::CpuSample;
use anyhow::{Context as _, Result};

use crate::{
    UsageError,
    host::procinfo,
    kernel::events::decode_as,
    kernel::loader::{Mode, ProbeConfig, Probes},
    profile::recorder::{Sample, flamegraph_svg, fold, process_label},
    profile::symbolize::{KernelSymbols, UserSymbolizer},
};

pub struct FlamegraphOptions {
    /// Only these processes (empty: everything, including idle).
    pub pids: Vec<u32>,
    pub duration: Duration,
    pub output: PathBuf,
    pub folded: Option<PathBuf>,
    pub hz: u64,
}

pub fn run(options: &FlamegraphOptions, stop: &AtomicBool) -> Result<()> {
    for &pid in &options.pids {
        if !procinfo::process_exists(pid) {
            return Err(UsageError(format!("no such process: {pid}")).into());
        }
    }
    if !(1..=10_000).contains(&options.hz) {
        return Err(UsageError(format!("--hz must be 1..=10000, got {}", options.hz)).into());
    }
    let kernel = KernelSymbols::load();
    let mut probes = Probes::load(&ProbeConfig {
        mode: Mode::Sampler,
        sampler_hz: Some(options.hz),
        ..ProbeConfig::default()
    })?;
    let mut ring = probes.take_samples()?;
    let mut samples: Vec<Sample> = Vec::new();
    let mut lost_undecodable = 0u64;
    let start = Instant::now();
    say!(
        "schedlat: sampling {} at {} Hz for {:?} (Ctrl-C stops early)",
        if options.pids.is_empty() {
            "all CPUs".to_owned()
        } else {
            format!("pid {:?}", options.pids)
        },
        options.hz,
        options.duration
    );
    loop {
        while let Some(item) = ring.next() {
            match decode_as::<CpuSample>(&item) {
                Ok(raw) => {
                    let s = Sample::from_raw(&raw);
                    if options.pids.is_empty() || options.pids.contains(&s.tgid) {
                        samples.push(s);
                    }
                }
                Err(_) => lost_undecodable += 1,
            }
        }
        if start.elapsed() >= options.duration || stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lost = probes.counters()?[agent_common::Counter::SamplesLost as usize];
    drop(ring);
    drop(probes);

    let mut user = UserSymbolizer::default();
    let folded = fold(samples.iter(), &kernel, &mut user, &mut process_label, &[]);
    if let Some(path) = &options.folded {
        let mut text = folded.join("\n");
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let title = if options.pids.is_empty() {
        "schedlat: CPU samples, all processes".to_owned()
    } else {
        format!("schedlat: CPU samples of pid {:?}", options.pids)
    };
    let subtitle = format!(
        "{} samples at {} Hz over {:.1}s",
        samples.len(),
        options.hz,
        start.elapsed().as_secs_f64()
    );
    let svg = flamegraph_svg(&folded, &title, &subtitle)?;
    let mut file = std::fs::File::create(&options.output)
        .with_context(|| format!("creating {}", options.output.display()))?;
    file.write_all(&svg)
        .with_context(|| format!("writing {}", options.output.display()))?;
    say!(
        "schedlat: {} samples ({} distinct stacks) written to {}{}",
        samples.len(),
        folded.len(),
        options.output.display(),
        if lost + lost_undecodable > 0 {
            format!("; {} samples lost", lost + lost_undecodable)
        } else {
            String::new()
        }
    );
    Ok(())
}
