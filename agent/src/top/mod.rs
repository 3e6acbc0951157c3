//! `schedlat top`: a live view of run-queue latency per process and per cgroup, like top for
//! CPU waits. The trace programs run machine-wide (no filter): the kernel keeps exact
//! per-thread totals and per-process histograms and sends waits at or above the threshold as
//! events with their CPU's history; every refresh reads the maps, and the window (the last
//! `--window`, `model::Window`) gives each process and cgroup its waits, p99, max, total wait
//! and, from the diagnosed long waits, the dominant cause and main culprit.
//!
//! Interactive on a terminal (keys sort, switch views, scroll), or `--batch`: plain frames on
//! stdout (text or JSON), like `top -b`.

pub mod model;
pub mod terminal;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io::Write,
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::{COUNTER_COUNT, TaskStats};
use anyhow::Result;
use aya::maps::{MapData, RingBuf};

use crate::{
    UsageError,
    cli::OutputFormat,
    host::{cache::TtlCache, cgroups::CgroupResolver, clock, procinfo},
    kernel::{
        events,
        loader::{ProbeConfig, Probes},
    },
    stats::hist::LatencyHistogram,
    trace::{self, WaitReader},
};
use model::{
    CgroupFilter, CgroupRow, Drops, Frame, MachineRow, ProcessRow, SortKey, TickInput, Ui, View,
    Window,
};
use terminal::{Key, Terminal};

/// How often events are drained between refreshes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest refresh.
pub const MIN_REFRESH: Duration = Duration::from_millis(100);
/// A process's cgroup read from /proc is reused this long.
const CGROUP_TTL: Duration = Duration::from_secs(10);
/// Processes whose cgroup is cached at most (the cache starts over beyond: bounded memory).
const CGROUP_CACHE_MAX: usize = 32_768;
/// Capacity of the kernel's per-thread map (`TASK_STATS`); beyond a quarter of it, the
/// entries of exited threads are removed (at most every `PRUNE_EVERY`).
const TASK_STATS_ENTRIES: usize = 16_384;
/// Capacity of the histogram map (entries: process × slot with samples): twice `trace`'s,
/// for a view that runs for hours on busy nodes (a few dozen slots per busy process).
const HIST_ENTRIES: usize = 32_768;
const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct TopOptions {
    pub window: Duration,
    pub refresh: Duration,
    pub threshold_ns: u64,
    pub diagnose: bool,
    pub sort: SortKey,
    pub reverse: bool,
    pub view: View,
    pub batch: bool,
    pub format: OutputFormat,
    pub iterations: Option<u32>,
    /// Rows per view in batch output.
    pub top: usize,
    /// `--cgroup`: only the processes of this cgroup and those below it.
    pub cgroup: Option<String>,
}

impl TopOptions {
    /// Ticks in the window; a usage error when the window and refresh do not fit together.
    pub fn ticks(&self) -> Result<usize> {
        if self.refresh < MIN_REFRESH {
            return Err(UsageError(format!(
                "--refresh {} is too short: at least {}",
                events::human_ns(self.refresh.as_nanos() as u64),
                events::human_ns(MIN_REFRESH.as_nanos() as u64)
            ))
            .into());
        }
        if self.window < self.refresh {
            return Err(UsageError(format!(
                "--window {} is shorter than --refresh {}",
                events::human_ns(self.window.as_nanos() as u64),
                events::human_ns(self.refresh.as_nanos() as u64)
            ))
            .into());
        }
        let ticks = (self.window.as_nanos() / self.refresh.as_nanos()) as usize;
        if ticks > model::MAX_TICKS {
            return Err(UsageError(format!(
                "--window is {ticks} refreshes long: at most {} (e.g. --window {} with --refresh \
                 {}); lengthen --refresh for a longer window",
                model::MAX_TICKS,
                events::human_ns(self.refresh.as_nanos() as u64 * model::MAX_TICKS as u64),
                events::human_ns(self.refresh.as_nanos() as u64),
            ))
            .into());
        }
        Ok(ticks)
    }
}

/// Runs the view until `q`, Ctrl-C/SIGTERM, `--iterations`, or (batch) a closed stdout.
pub fn run(options: &TopOptions, out: &mut dyn Write, stop: &Arc<AtomicBool>) -> Result<()> {
    let ticks = options.ticks()?;
    let on_terminal =
        terminal::is_terminal(libc::STDIN_FILENO) && terminal::is_terminal(libc::STDOUT_FILENO);
    if !options.batch && !on_terminal {
        return Err(UsageError(
            "schedlat top needs a terminal on stdin and stdout; for a pipe or a file use \
             --batch (plain text frames) or --batch --format json"
                .into(),
        )
        .into());
    }
    let cgroup = options
        .cgroup
        .as_ref()
        .map(|arg| trace::cgroup::resolve(arg).map(|dir| (arg.clone(), dir)))
        .transpose()?;
    let prepared = WaitReader::prepare();
    let mut probes = Probes::load(&ProbeConfig {
        filter: None,
        min_event_ns: Some(options.threshold_ns),
        task_stats: true,
        hist_map_entries: HIST_ENTRIES as u32,
        diagnose: options.diagnose,
        ..ProbeConfig::default()
    })?;
    let mut ring = probes.take_events()?;
    let mut state = State {
        reader: prepared.attach(&mut probes),
        processes: TtlCache::new(CGROUP_TTL, CGROUP_CACHE_MAX),
        window: Window::new(ticks),
        stats: HashMap::new(),
        histograms: HashMap::new(),
        counters: [0; COUNTER_COUNT as usize],
        last_active: HashMap::new(),
        last_prune: Instant::now(),
        rows: None,
        cgroup,
        cgroup_unreadable: false,
        page: 1,
    };
    let mut ui = Ui {
        view: options.view,
        sort: options.sort,
        reverse: options.reverse,
        interactive: !options.batch,
        ..Ui::default()
    };
    let screen = if options.batch {
        None
    } else {
        Some(Terminal::enter()?)
    };
    let result = run_loop(
        options,
        out,
        stop,
        &mut probes,
        &mut ring,
        &mut state,
        &mut ui,
        screen.is_some(),
    );
    drop(screen);
    let counters = probes.counters();
    drop(ring);
    drop(probes);
    if let Ok(counters) = counters {
        trace::report_counters(&counters);
    }
    result
}

#[allow(
    clippy::too_many_arguments,
    reason = "the loop's whole state, passed once"
)]
fn run_loop(
    options: &TopOptions,
    out: &mut dyn Write,
    stop: &Arc<AtomicBool>,
    probes: &mut Probes,
    ring: &mut RingBuf<MapData>,
    state: &mut State,
    ui: &mut Ui,
    interactive: bool,
) -> Result<()> {
    let mut last_tick = Instant::now();
    let mut frames = 0u32;
    // A resized terminal is drawn again at once (SIGWINCH interrupts the wait for keys).
    let resized = Arc::new(AtomicBool::new(false));
    if interactive {
        signal_hook::flag::register(signal_hook::consts::SIGWINCH, Arc::clone(&resized))?;
        state.page = draw(state, options, ui)?;
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = Instant::now();
        let next = last_tick + options.refresh;
        if now < next {
            let timeout = (next - now).min(POLL_INTERVAL);
            if interactive {
                let keys = Terminal::read_keys(timeout);
                let resize = resized.swap(false, Ordering::Relaxed);
                if resize {
                    Terminal::clear()?;
                }
                if !keys.is_empty() && handle_keys(&keys, ui, state) == Action::Quit {
                    return Ok(());
                }
                if resize || !keys.is_empty() {
                    state.page = draw(state, options, ui)?;
                }
            } else {
                trace::wait_readable(ring.as_raw_fd(), timeout);
            }
            state.drain(ring, probes)?;
            continue;
        }
        state.drain(ring, probes)?;
        state.tick(probes, now.duration_since(last_tick), options, ui.paused)?;
        last_tick = now;
        frames += 1;
        if interactive {
            state.page = draw(state, options, ui)?;
        } else if !print_frame(out, state, options, ui)? {
            return Ok(()); // the reader went away
        }
        if options.iterations.is_some_and(|n| frames >= n) {
            return Ok(());
        }
        state.prune(probes, options.window)?;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Continue,
    Quit,
}

/// Applies keys to the view; `Quit` on `q`.
fn handle_keys(keys: &[Key], ui: &mut Ui, state: &State) -> Action {
    let page = state.page;
    apply_keys(keys, ui, page, |view| {
        state.rows.as_ref().map_or(0, |r| match view {
            View::Process => r.processes.len(),
            View::Cgroup => r.cgroups.len(),
        })
    })
}

/// `handle_keys` with `page` rows on the screen and the number of rows of each view given by
/// `rows_of`. Scrolling stops when the last row is at the bottom.
fn apply_keys(keys: &[Key], ui: &mut Ui, page: usize, rows_of: impl Fn(View) -> usize) -> Action {
    let page = page.max(1);
    for key in keys {
        match *key {
            Key::Char('q' | 'Q') => return Action::Quit,
            Key::Tab | Key::Char('v' | 'V') => {
                ui.view = ui.view.other();
                ui.scroll = 0;
            }
            Key::Char('r' | 'R') => ui.reverse = !ui.reverse,
            Key::Char('p' | 'P' | ' ') => ui.paused = !ui.paused,
            Key::Char('h' | 'H' | '?') => ui.help = !ui.help,
            Key::Char(c) => {
                if let Some(sort) = SortKey::from_key(c) {
                    ui.sort = sort;
                    ui.scroll = 0;
                }
            }
            Key::Up => ui.scroll = ui.scroll.saturating_sub(1),
            Key::Down => ui.scroll += 1,
            Key::PageUp => ui.scroll = ui.scroll.saturating_sub(page),
            Key::PageDown => ui.scroll += page,
            Key::Home => ui.scroll = 0,
            Key::End => ui.scroll = usize::MAX,
        }
        ui.scroll = ui.scroll.min(rows_of(ui.view).saturating_sub(page));
    }
    Action::Continue
}

/// Draws the last refresh's frame to fit the terminal; the rows the table had room for.
fn draw(state: &State, options: &TopOptions, ui: &Ui) -> Result<usize> {
    let (width, height) = Terminal::size();
    let Some(frame) = state.frame(options, ui, usize::MAX) else {
        Terminal::draw(
            &[format!(
                "schedlat top: the first figures come after one refresh ({})",
                events::human_ns(options.refresh.as_nanos() as u64)
            )],
            width,
            None,
        )?;
        return Ok(0);
    };
    // The header's height depends on the width (its lines wrap), not on the rows.
    let header = model::render(&frame, ui, width, 0).lines.len();
    let rows = height.saturating_sub(header).max(1);
    let screen = model::render(&frame, ui, width, rows);
    Terminal::draw(&screen.lines, width, screen.table_header)?;
    Ok(rows)
}

/// One batch frame; `false` when stdout was closed.
fn print_frame(out: &mut dyn Write, state: &State, options: &TopOptions, ui: &Ui) -> Result<bool> {
    let Some(frame) = state.frame(options, ui, options.top) else {
        return Ok(true);
    };
    let text = match options.format {
        OutputFormat::Text => format!(
            "{}\n",
            model::render(&frame, ui, usize::MAX, options.top)
                .lines
                .join("\n")
        ),
        OutputFormat::Json => serde_json::to_string(&frame)?,
    };
    let open = trace::writeln_or_stop(out, &text)?;
    Ok(open && out.flush().is_ok())
}

/// The rows of one refresh and what the frame says of it.
struct Rows {
    processes: Vec<ProcessRow>,
    cgroups: Vec<CgroupRow>,
    machine: MachineRow,
    filter: Option<CgroupFilter>,
    covered_ns: u64,
    /// Wall-clock time of the refresh, ns since the epoch.
    at_ns: u64,
}

/// What the loop keeps between refreshes.
struct State {
    reader: WaitReader,
    /// Process → (its name, its cgroup's path), for the rows.
    processes: TtlCache<u32, (Option<String>, String)>,
    window: Window,
    /// The kernel's cumulative maps at the previous refresh.
    stats: HashMap<u32, TaskStats>,
    histograms: HashMap<u32, LatencyHistogram>,
    counters: [u64; COUNTER_COUNT as usize],
    /// Thread → the last refresh at which it had waited.
    last_active: HashMap<u32, Instant>,
    last_prune: Instant,
    /// The rows of the last refresh shown (unsorted); kept while paused.
    rows: Option<Rows>,
    /// `--cgroup`: as given, and its directory.
    cgroup: Option<(String, PathBuf)>,
    /// Its members could not be read at the last refresh (warned once).
    cgroup_unreadable: bool,
    /// Table rows the screen had room for at the last draw (PgUp/PgDn).
    page: usize,
}

impl State {
    /// Diagnoses the long waits waiting in the ring buffer into the window.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, probes: &Probes) -> Result<()> {
        let window = &mut self.window;
        self.reader.drain(ring, probes, |event, diagnosis| {
            window.record_long_wait(event.tgid, event.wait_ns, diagnosis);
            Ok(())
        })
    }

    /// Reads the kernel's maps, closes a tick of the window and works out the rows (unless
    /// `paused`: the rows shown stay).
    fn tick(
        &mut self,
        probes: &Probes,
        length: Duration,
        options: &TopOptions,
        paused: bool,
    ) -> Result<()> {
        let started = Instant::now();
        let stats_now = probes.task_stats()?;
        let histograms_now = probes.histograms()?;
        let counters_now = probes.counters()?;
        let delta = trace::stats_since(&stats_now, &self.stats);
        let histograms: HashMap<u32, LatencyHistogram> = histograms_now
            .iter()
            .filter_map(|(tgid, h)| {
                let since = self
                    .histograms
                    .get(tgid)
                    .map_or_else(|| h.clone(), |before| h.since(before));
                (since.count() > 0).then_some((*tgid, since))
            })
            .collect();
        let (samples, drops) = Drops::between(&self.counters, &counters_now);
        self.window.push_tick(&TickInput {
            duration_ns: length.as_nanos() as u64,
            stats: &delta,
            histograms: &histograms,
            samples,
            drops,
        });
        let now = Instant::now();
        for (tid, _, _) in &delta {
            self.last_active.insert(*tid, now);
        }
        self.stats = stats_now.into_iter().collect();
        self.histograms = histograms_now;
        self.counters = counters_now;
        let read = started.elapsed();
        if paused {
            return Ok(());
        }
        let unreadable = &mut self.cgroup_unreadable;
        let members = self.cgroup.as_ref().map(|(arg, dir)| {
            match trace::cgroup::member_tgids(dir) {
                Ok(members) => {
                    *unreadable = false;
                    members
                }
                // Removed, say: no rows (the header says 0 processes); said once.
                Err(e) => {
                    if !std::mem::replace(unreadable, true) {
                        log::warn!("top: cannot read the processes of cgroup {arg}: {e}");
                    }
                    BTreeSet::new()
                }
            }
        });
        let (processes, cgroups, machine) = model::rows(
            &self.window,
            options.threshold_ns,
            |pid| members.as_ref().is_none_or(|m| m.contains(&pid)),
            |pid| describe(&mut self.processes, &mut self.reader.cgroups, pid),
        );
        self.rows = Some(Rows {
            processes,
            cgroups,
            machine,
            filter: self
                .cgroup
                .as_ref()
                .zip(members.as_ref())
                .map(|((arg, _), m)| CgroupFilter {
                    path: arg.clone(),
                    processes: m.len(),
                }),
            covered_ns: self.window.covered_ns(),
            at_ns: trace::realtime_now_ns(),
        });
        log::debug!(
            "top: refresh: {} threads and {} process histograms read in {read:?}, rows in {:?}",
            self.stats.len(),
            self.histograms.len(),
            started.elapsed().saturating_sub(read)
        );
        Ok(())
    }

    /// The sorted frame of the last refresh (rows cut to `top` per view).
    fn frame(&self, options: &TopOptions, ui: &Ui, top: usize) -> Option<Frame> {
        let rows = self.rows.as_ref()?;
        let mut processes = rows.processes.clone();
        let mut cgroups = rows.cgroups.clone();
        model::sort_processes(&mut processes, ui.sort, ui.reverse);
        model::sort_cgroups(&mut cgroups, ui.sort, ui.reverse);
        if options.batch {
            processes.truncate(top);
            cgroups.truncate(top);
        }
        Some(Frame {
            time: clock::rfc3339(rows.at_ns),
            covered_seconds: rows.covered_ns as f64 / 1e9,
            window_seconds: options.window.as_secs_f64(),
            threshold_ns: options.threshold_ns,
            diagnosis: options.diagnose,
            machine: rows.machine.clone(),
            cgroup_filter: rows.filter.clone(),
            processes,
            cgroups,
        })
    }

    /// Once the kernel's per-thread or histogram map is a quarter full, removes the threads that have not
    /// waited for a whole window and no longer exist (and the histograms of their processes,
    /// when those are gone too): a machine with process churn would otherwise fill it, and
    /// new processes would go uncounted (`stats_map_full`).
    fn prune(&mut self, probes: &mut Probes, window: Duration) -> Result<()> {
        let hist_entries: usize = self.histograms.values().map(|h| h.slots().count()).sum();
        let filling =
            self.stats.len() >= TASK_STATS_ENTRIES / 4 || hist_entries >= HIST_ENTRIES / 4;
        if !filling || self.last_prune.elapsed() < PRUNE_EVERY {
            return Ok(());
        }
        self.last_prune = Instant::now();
        let idle_since = Instant::now().checked_sub(window);
        let gone: Vec<u32> = self
            .stats
            .keys()
            .copied()
            .filter(|tid| {
                let idle = match (self.last_active.get(tid), idle_since) {
                    (Some(at), Some(since)) => *at < since,
                    _ => true,
                };
                idle && !std::path::Path::new(&format!("/proc/{tid}")).exists()
            })
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let tgids: HashSet<u32> = gone
            .iter()
            .filter_map(|tid| self.stats.get(tid).map(|s| s.tgid))
            .filter(|tgid| !procinfo::process_exists(*tgid))
            .collect();
        probes.forget(&gone, &tgids)?;
        for tid in &gone {
            self.stats.remove(tid);
            self.last_active.remove(tid);
        }
        for tgid in &tgids {
            self.histograms.remove(tgid);
            self.processes.remove(tgid);
        }
        log::debug!(
            "top: forgot {} exited threads and {} exited processes",
            gone.len(),
            tgids.len()
        );
        Ok(())
    }
}

/// A process's name and cgroup path, read from /proc (cached `CGROUP_TTL` to 5 s more): no
/// name and `(exited)` for a process gone, `?` for a cgroup that cannot be read.
fn describe(
    cache: &mut TtlCache<u32, (Option<String>, String)>,
    cgroups: &mut CgroupResolver,
    pid: u32,
) -> (Option<String>, String) {
    // Staggered by PID over 5 s, so that thousands of processes are not all read again in
    // the same refresh.
    let stagger = Duration::from_millis(u64::from(pid % 100) * 50);
    cache
        .get_or_read(pid, stagger, || {
            let name = procinfo::process_comm(pid);
            let path = match cgroups.id_of_task(pid) {
                Some(id) => cgroups.path(id),
                None if name.is_none() => "(exited)".to_owned(),
                None => "?".to_owned(),
            };
            (name, path)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(window_ms: u64, refresh_ms: u64) -> TopOptions {
        TopOptions {
            window: Duration::from_millis(window_ms),
            refresh: Duration::from_millis(refresh_ms),
            threshold_ns: 1_000_000,
            diagnose: true,
            sort: SortKey::Total,
            reverse: false,
            view: View::Process,
            batch: true,
            format: OutputFormat::Text,
            iterations: None,
            top: 20,
            cgroup: None,
        }
    }

    #[test]
    fn window_and_refresh_are_validated() {
        assert_eq!(options(5000, 1000).ticks().expect("valid"), 5);
        assert_eq!(options(1000, 1000).ticks().expect("valid"), 1);
        let err = |o: TopOptions| o.ticks().expect_err("invalid").to_string();
        assert!(err(options(500, 1000)).contains("shorter than --refresh"));
        assert!(err(options(1000, 10)).contains("too short"));
        assert!(err(options(3_600_000, 1000)).contains("at most 600"));
    }

    #[test]
    fn keys_change_the_view() {
        let mut ui = Ui::default();
        apply_keys(&[Key::Char('p')], &mut ui, 10, |_| 0);
        assert!(ui.paused, "p pauses");
        apply_keys(&[Key::Char(' ')], &mut ui, 10, |_| 0);
        assert!(!ui.paused, "space resumes");
        let rows = |view| if view == View::Process { 50 } else { 0 };
        assert_eq!(
            apply_keys(&[Key::Down, Key::Down, Key::Up], &mut ui, 10, rows),
            Action::Continue
        );
        assert_eq!(ui.scroll, 1);
        apply_keys(&[Key::PageDown; 10], &mut ui, 10, rows);
        assert_eq!(
            ui.scroll, 40,
            "the last row at the bottom of 10, no further"
        );
        apply_keys(&[Key::Home, Key::End], &mut ui, 10, rows);
        assert_eq!(ui.scroll, 40);
        apply_keys(
            &[Key::Tab, Key::Char('m'), Key::Char('r')],
            &mut ui,
            10,
            rows,
        );
        assert_eq!(ui.view, View::Cgroup);
        assert_eq!(ui.sort, SortKey::Max);
        assert!(ui.reverse);
        assert_eq!(ui.scroll, 0, "a new view starts at the top");
        apply_keys(&[Key::Down], &mut ui, 10, rows);
        assert_eq!(ui.scroll, 0, "nothing to scroll past");
        assert_eq!(
            apply_keys(&[Key::Char('x'), Key::Char('q')], &mut ui, 10, rows),
            Action::Quit
        );
    }
}
