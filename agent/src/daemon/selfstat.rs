//! The agent's own resource use, for Prometheus's standard `process_*` metrics, read from
//! /proc/self at scrape time.
//!
//! Not prometheus 0.14's `ProcessCollector`: it truncates CPU time to whole seconds
//! (`(utime + stime) / CLK_TCK` in integer arithmetic), so an agent that uses a few hundred
//! milliseconds of CPU an hour showed `process_cpu_seconds_total 0` for hours.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};

/// The fields of `/proc/<pid>/stat` this module uses (proc(5) numbering in brackets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatFields {
    /// User and system CPU time in clock ticks (14, 15).
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// Threads (20).
    pub threads: u64,
    /// Start time in clock ticks after boot (22).
    pub start_ticks: u64,
    /// Virtual memory size in bytes (23).
    pub vsize_bytes: u64,
}

/// The fields of a `/proc/<pid>/stat` text. The name (field 2) may hold spaces and
/// parentheses, so fields are counted from after its last `)`.
#[must_use]
pub fn parse_stat(stat: &str) -> Option<StatFields> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(StatFields {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
    })
}

/// A `kB` value of a `/proc/<pid>/status` text (`VmRSS:    1234 kB`), in bytes.
#[must_use]
pub fn parse_status_bytes(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The soft limit on open files from a `/proc/<pid>/limits` text; `None` when unlimited or
/// absent.
#[must_use]
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// Boot time (Unix seconds) from a `/proc/stat` text.
#[must_use]
pub fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The values of the standard process metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// `None` when unlimited.
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
    pub threads: u64,
}

impl ProcessStats {
    /// Combines what the /proc files say; `clock_ticks` is `sysconf(_SC_CLK_TCK)`.
    #[must_use]
    pub fn from_parts(
        stat: &StatFields,
        resident_bytes: u64,
        open_fds: u64,
        max_fds: Option<u64>,
        boot_time: u64,
        clock_ticks: u64,
    ) -> Self {
        let ticks = clock_ticks.max(1) as f64;
        Self {
            cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
            resident_bytes,
            virtual_bytes: stat.vsize_bytes,
            open_fds,
            max_fds,
            start_time_seconds: boot_time as f64 + stat.start_ticks as f64 / ticks,
            threads: stat.threads,
        }
    }
}

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

/// Clock ticks per second (`USER_HZ`), the unit of the times in /proc/<pid>/stat.
#[must_use]
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // USER_HZ is 100 on every architecture Linux runs on today; sysconf does not fail for it.
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// This process's resource use, now.
pub fn read_self() -> Result<ProcessStats> {
    let stat_text = read("/proc/self/stat")?;
    let stat = parse_stat(&stat_text).context("parsing /proc/self/stat")?;
    let resident = parse_status_bytes(&read("/proc/self/status")?, "VmRSS")
        .context("no VmRSS in /proc/self/status")?;
    let open_fds = fs::read_dir(Path::new("/proc/self/fd"))
        .context("listing /proc/self/fd")?
        .count() as u64;
    let max_fds = parse_max_open_files(&read("/proc/self/limits")?);
    let boot = parse_boot_time(&read("/proc/stat")?).context("no btime in /proc/stat")?;
    Ok(ProcessStats::from_parts(
        &stat,
        resident,
        open_fds,
        max_fds,
        boot,
        clock_ticks(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real /proc/<pid>/stat line, its name made awkward.
    const STAT: &str = "4242 (sched lat) (x)) S 1 4242 4242 0 -1 4194560 2613 0 0 0 \
        137 58 0 0 20 0 7 0 1234567 811597824 5120 18446744073709551615 1 1 0 0 0 0 0 \
        4096 1260 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(StatFields {
                utime_ticks: 137,
                stime_ticks: 58,
                threads: 7,
                start_ticks: 1_234_567,
                vsize_bytes: 811_597_824,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None, "a truncated line");
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn cpu_time_keeps_its_fraction_of_a_second() {
        let stat = parse_stat(STAT).unwrap();
        let p = ProcessStats::from_parts(&stat, 3 << 20, 12, Some(1024), 1_700_000_000, 100);
        assert!(
            (p.cpu_seconds - 1.95).abs() < 1e-9,
            "(137 + 58) ticks at 100 Hz are 1.95 s, got {}",
            p.cpu_seconds
        );
        assert!((p.start_time_seconds - (1_700_000_000.0 + 12_345.67)).abs() < 1e-3);
        assert_eq!(p.virtual_bytes, 811_597_824);
        assert_eq!(p.threads, 7);
        let small = StatFields {
            utime_ticks: 3,
            stime_ticks: 4,
            ..StatFields::default()
        };
        let p = ProcessStats::from_parts(&small, 0, 0, None, 0, 100);
        assert!(
            (p.cpu_seconds - 0.07).abs() < 1e-9,
            "7 ticks are 0.07 s, not 0: {}",
            p.cpu_seconds
        );
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\tschedlat\nVmPeak:\t  900000 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n";
        assert_eq!(parse_status_bytes(status, "VmRSS"), Some(20 << 20));
        assert_eq!(parse_status_bytes(status, "VmSwap"), None);
        assert_eq!(
            parse_status_bytes("VmRSSx:\t1 kB\n", "VmRSS"),
            None,
            "a key that only starts the same"
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             63704                63704                processes \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nctxt 99\nbtime 1764100000\nprocesses 5\n"),
            Some(1_764_100_000)
        );
    }

    #[test]
    fn reads_this_process() {
        let p = read_self().expect("/proc/self is readable");
        assert!(
            p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes,
            "{p:?}"
        );
        assert!(p.open_fds >= 3, "stdin, stdout, stderr at least: {p:?}");
        assert!(p.threads >= 1, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0,
            "start time {} vs now {now}",
            p.start_time_seconds
        );
    }
}
