//! What limits how much CPU a task can get, as the host reports it: the CFS bandwidth (quota)
//! of the cpu controller's cgroup and each of its ancestors, their throttling counters, the
//! CPUs the task may run on, its nice value and scheduling class, and whether interrupt time
//! is in the scheduler's books. Pure reads of /proc and the cgroup file systems, for the
//! diagnosis of why a task waited.
//!
//! The cpu controller is on a cgroup v1 hierarchy on hybrid hosts (`cpu.cfs_quota_us`,
//! `cpu.cfs_period_us`) and on the unified hierarchy on pure v2 hosts (`cpu.max`); the task's
//! `/proc/<tid>/cgroup` says which. Either way the kernel's task group (what BPF reads through
//! `task_struct.sched_task_group`) belongs to a cgroup of the chain, and its
//! `css.cgroup->kn->id` is that cgroup's [`CgroupLimit::kernfs_id`]: on v1 the task's own
//! cgroup; on v2 the closest one where the cpu controller is enabled (the root if none), since
//! a v2 cgroup without the controller has no task group of its own. Match ids against the
//! whole chain.
//!
//! Every function that takes a tid returns `Ok(None)` when the task does not exist (any more),
//! like `procinfo::task_info`: a task that exited is "unknown" to the diagnosis, not an error.
//! Cgroup paths are bytes (a directory name need not be UTF-8); show them through
//! [`CgroupLimit::display_path`], which escapes like every other name (`names`).

use std::{
    ffi::OsStr,
    fs,
    io::{self, Read as _},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::host::{names, procinfo};

/// The bandwidth period of a group that has none configured: `default_cfs_period()` in
/// kernel/sched/fair.c (100 ms); reported for cgroups without `cpu.max`.
pub const DEFAULT_PERIOD_NS: u64 = 100_000_000;

/// More CPUs than any kernel supports (x86 `NR_CPUS` is at most 8192): a CPU list naming one
/// beyond this is not the kernel's and is refused rather than allocated.
const MAX_CPUS: u32 = 1 << 16;

/// Which cgroup hierarchy holds the cpu controller, and where it is mounted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// A v1 hierarchy with the cpu controller (maybe combined: `cpu,cpuacct`).
    V1 { mount: PathBuf },
    /// The unified (v2) hierarchy.
    V2 { mount: PathBuf },
}

impl Hierarchy {
    #[must_use]
    pub fn mount(&self) -> &Path {
        match self {
            Self::V1 { mount } | Self::V2 { mount } => mount,
        }
    }
}

/// Where a task's CPU bandwidth (CFS quota) is controlled and what limits apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuControl {
    pub hierarchy: Hierarchy,
    /// The task's cgroup in that hierarchy, then each ancestor up to the root (closest first).
    ///
    /// The chain ends early when the mount shows only a subtree of the hierarchy (a container
    /// that sees its own cgroup at its mount point without a cgroup namespace): limits above
    /// the mount still apply but cannot be read ([`CpuControl::reaches_root`] is false).
    pub chain: Vec<CgroupLimit>,
}

impl CpuControl {
    /// Whether the chain goes up to the hierarchy's root, i.e. no limit is out of sight.
    #[must_use]
    pub fn reaches_root(&self) -> bool {
        self.chain.last().is_some_and(|top| top.path == b"/")
    }

    /// The limit that allows the fewest CPUs, if any cgroup of the chain has a quota.
    /// (Quotas nest: a group gets at most the smallest allowance on its way to the root.)
    #[must_use]
    pub fn tightest(&self) -> Option<&CgroupLimit> {
        self.chain
            .iter()
            .filter_map(|limit| Some((limit, limit.cpus()?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(limit, _)| limit)
    }
}

/// One cgroup of a [`CpuControl`] chain and its bandwidth limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLimit {
    /// The path relative to the hierarchy's root as `/proc/<tid>/cgroup` writes it, bytes
    /// ("/" for the root).
    pub path: Vec<u8>,
    /// Its directory here (under the mount point).
    pub dir: PathBuf,
    /// The directory's inode number, which is the kernel's `kn->id` of the cgroup: on v2 what
    /// `bpf_get_current_cgroup_id()` returns, on either `cfs_rq->tg->css.cgroup->kn->id`.
    pub kernfs_id: u64,
    /// Run time allowed per period; `None` = no limit (`max` in `cpu.max`, -1 in
    /// `cpu.cfs_quota_us`, or no such file: on v2, `cpu.max` exists only where the parent
    /// enabled the cpu controller in `cgroup.subtree_control`, and never on the root).
    pub quota_ns: Option<u64>,
    pub period_ns: u64,
}

impl CgroupLimit {
    /// The path escaped for display and labels (`names::escape_bytes`).
    #[must_use]
    pub fn display_path(&self) -> String {
        names::escape_bytes(&self.path)
    }

    /// The quota in CPUs (quota / period: 0.2 for 20 ms every 100 ms); `None` without a limit.
    #[must_use]
    pub fn cpus(&self) -> Option<f64> {
        let quota = self.quota_ns?;
        (self.period_ns > 0).then(|| quota as f64 / self.period_ns as f64)
    }
}

/// Where `tid`'s CPU bandwidth is controlled: its cpu cgroup and the ancestors, with their
/// limits. `Ok(None)` when the task does not exist (any more).
pub fn cpu_control(tid: u32) -> Result<Option<CpuControl>> {
    let Some(proc_cgroup) = read_task_file(tid, "cgroup")? else {
        return Ok(None);
    };
    let mountinfo = fs::read("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    match control_from(&proc_cgroup, &mountinfo) {
        Ok(control) => Ok(Some(control)),
        // Its cgroup can be removed once it has exited: that is an exit, not an error.
        Err(_) if !task_exists(tid) => Ok(None),
        Err(e) => Err(e.context(format!("the cpu cgroup of task {tid}"))),
    }
}

/// [`cpu_control`] from the texts of `/proc/<tid>/cgroup` and `/proc/self/mountinfo`; the
/// limits are read from the cgroup directories.
fn control_from(proc_cgroup: &[u8], mountinfo: &[u8]) -> Result<CpuControl> {
    let located = locate(proc_cgroup, mountinfo)?;
    let chain = located
        .chain
        .into_iter()
        .map(|(path, dir)| {
            let kernfs_id = fs::metadata(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .ino();
            let (quota_ns, period_ns) = read_limit(located.version, &dir)?;
            Ok(CgroupLimit {
                path,
                dir,
                kernfs_id,
                quota_ns,
                period_ns,
            })
        })
        .collect::<Result<_>>()?;
    let hierarchy = match located.version {
        Version::V1 => Hierarchy::V1 {
            mount: located.mount,
        },
        Version::V2 => Hierarchy::V2 {
            mount: located.mount,
        },
    };
    Ok(CpuControl { hierarchy, chain })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A task's cpu cgroup found in the mount table: no limits read yet.
#[derive(Debug, PartialEq, Eq)]
struct Located {
    version: Version,
    mount: PathBuf,
    /// (path in the hierarchy, directory here), closest first.
    chain: Vec<(Vec<u8>, PathBuf)>,
}

/// The task's cpu cgroup from `/proc/<tid>/cgroup` and the directories of it and its
/// ancestors from a mountinfo text.
fn locate(proc_cgroup: &[u8], mountinfo: &[u8]) -> Result<Located> {
    let (version, path) = cpu_cgroup(proc_cgroup)
        .context("no cpu controller line (v1) and no `0::` line (v2) in /proc/<tid>/cgroup")?;
    let shown = names::escape_bytes(path);
    if !path.starts_with(b"/") {
        bail!("cgroup path {shown:?} is not absolute");
    }
    let parts: Vec<&[u8]> = components(path).collect();
    if parts.iter().any(|c| *c == b"..") {
        // `cgroup_path_ns()` writes `/..` for a cgroup outside the reader's cgroup namespace.
        bail!(
            "cgroup {shown} is outside this process's cgroup namespace: run schedlat in the \
             host's cgroup namespace (e.g. hostPID and `--cgroupns=host`) to read its limits"
        );
    }
    let candidates: Vec<Mount> = mounts(mountinfo)
        .into_iter()
        .filter(|m| match version {
            Version::V1 => m.fstype == b"cgroup" && has_option(&m.super_options, b"cpu"),
            Version::V2 => m.fstype == b"cgroup2",
        })
        .collect();
    let what = match version {
        Version::V1 => "the cgroup v1 hierarchy with the cpu controller",
        Version::V2 => "the cgroup2 file system",
    };
    if candidates.is_empty() {
        bail!("{what} is not mounted in this mount namespace (no such line in mountinfo)");
    }
    // A mount shows the subtree at its root; the one showing the most of the hierarchy wins.
    let (mount, root_len) = candidates
        .iter()
        .filter_map(|m| {
            let root: Vec<&[u8]> = components(&m.root).collect();
            parts.starts_with(&root).then_some((m, root.len()))
        })
        .min_by_key(|(_, root_len)| *root_len)
        .with_context(|| {
            format!("cgroup {shown} is outside every mount of {what} (they show other subtrees)")
        })?;
    let chain = (root_len..=parts.len())
        .rev()
        .map(|depth| {
            let mut path = Vec::new();
            for component in &parts[..depth] {
                path.push(b'/');
                path.extend_from_slice(component);
            }
            if path.is_empty() {
                path.push(b'/');
            }
            let mut dir = mount.target.clone();
            for component in &parts[root_len..depth] {
                dir.push(OsStr::from_bytes(component));
            }
            (path, dir)
        })
        .collect();
    Ok(Located {
        version,
        mount: mount.target.clone(),
        chain,
    })
}

/// The cpu controller's line of a `/proc/<tid>/cgroup` text: `hierarchy-id:controllers:path`.
/// A v1 hierarchy listing `cpu` is where bandwidth is controlled if there is one; else the
/// unified hierarchy's `0::path`. (cgroup(7); the kernel refuses cgroup names with a newline,
/// so lines split cleanly, and a path may contain `:`.)
fn cpu_cgroup(proc_cgroup: &[u8]) -> Option<(Version, &[u8])> {
    let entries = || {
        proc_cgroup.split(|&b| b == b'\n').filter_map(|line| {
            let mut fields = line.splitn(3, |&b| b == b':');
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
    };
    let v1 = entries().find_map(|(id, controllers, path)| {
        (id != b"0" && has_option(controllers, b"cpu")).then_some((Version::V1, path))
    });
    v1.or_else(|| {
        entries().find_map(|(id, controllers, path)| {
            (id == b"0" && controllers.is_empty()).then_some((Version::V2, path))
        })
    })
}

/// Whether a comma-separated list has `name` as an element (`cpuacct` is not `cpu`).
fn has_option(list: &[u8], name: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|option| option == name)
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// What of a mountinfo line locating a cgroup needs.
#[derive(Debug)]
struct Mount {
    /// The path inside the file system that is mounted (field 4).
    root: Vec<u8>,
    /// The mount point (field 5; findmnt's `TARGET`).
    target: PathBuf,
    fstype: Vec<u8>,
    super_options: Vec<u8>,
}

/// The lines of a mountinfo text (proc(5)); as in `test-support`'s `cgroup2_mount_in`, fields
/// are single-space separated, optional fields end at a lone `-`, and the root and mount point
/// are written with `\ooo` escapes. Malformed lines are skipped.
fn mounts(mountinfo: &[u8]) -> Vec<Mount> {
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let separator = 6 + fields.get(6..)?.iter().position(|f| *f == b"-")?;
            Some(Mount {
                root: unescape_octal(fields.get(3)?),
                target: PathBuf::from(OsStr::from_bytes(&unescape_octal(fields.get(4)?))),
                fstype: fields.get(separator + 1)?.to_vec(),
                super_options: fields.get(separator + 3)?.to_vec(),
            })
        })
        .collect()
}

/// Undoes mountinfo's `\ooo` escapes (three octal digits, one byte); anything else is kept.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let octal = |digits: &[u8]| {
        digits.iter().try_fold(0u8, |value, &digit| {
            if !(b'0'..=b'7').contains(&digit) {
                return None;
            }
            value.checked_mul(8)?.checked_add(digit - b'0')
        })
    };
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(byte) = field.get(i + 1..i + 4).and_then(octal)
        {
            out.push(byte);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// (quota, period) of one cgroup directory; no file = no limit.
fn read_limit(version: Version, dir: &Path) -> Result<(Option<u64>, u64)> {
    let read = |name: &str| -> Result<Option<(PathBuf, String)>> {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(text) => Ok(Some((path, String::from_utf8_lossy(&text).into_owned()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    let unexpected =
        |path: &Path, text: &str| format!("unexpected {:?} in {}", text.trim(), path.display());
    match version {
        Version::V2 => match read("cpu.max")? {
            Some((path, text)) => parse_cpu_max(&text).with_context(|| unexpected(&path, &text)),
            None => Ok((None, DEFAULT_PERIOD_NS)),
        },
        Version::V1 => {
            let quota = match read("cpu.cfs_quota_us")? {
                Some((path, text)) => {
                    parse_cfs_quota(&text).with_context(|| unexpected(&path, &text))?
                }
                None => None,
            };
            let period = match read("cpu.cfs_period_us")? {
                Some((path, text)) => {
                    usec_to_ns(&text).with_context(|| unexpected(&path, &text))?
                }
                None => DEFAULT_PERIOD_NS,
            };
            Ok((quota, period))
        }
    }
}

/// v2 `cpu.max`: `$MAX $PERIOD` in microseconds, `max` for no limit
/// (Documentation/admin-guide/cgroup-v2.rst), as (quota, period) in nanoseconds.
fn parse_cpu_max(text: &str) -> Option<(Option<u64>, u64)> {
    let mut fields = text.split_whitespace();
    let quota = match fields.next()? {
        "max" => None,
        quota => Some(usec_to_ns(quota)?),
    };
    let period = usec_to_ns(fields.next()?)?;
    fields.next().is_none().then_some((quota, period))
}

/// v1 `cpu.cfs_quota_us`: microseconds, -1 for no limit (Documentation/scheduler/
/// sched-bwc.rst), in nanoseconds.
fn parse_cfs_quota(text: &str) -> Result<Option<u64>> {
    match text.trim() {
        "-1" => Ok(None),
        quota => usec_to_ns(quota)
            .map(Some)
            .context("neither -1 nor a number of microseconds"),
    }
}

fn usec_to_ns(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok()?.checked_mul(1000)
}

/// A cgroup's cumulative bandwidth statistics (`cpu.stat`); never reset, so a diagnosis
/// compares two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottleStat {
    /// Enforcement periods that elapsed with tasks of the group runnable.
    pub nr_periods: u64,
    /// Periods in which the group ran out of quota.
    pub nr_throttled: u64,
    /// Total time runnable tasks of the group were held back for lack of quota.
    pub throttled_ns: u64,
}

/// The throttling counters of `control.chain[index]`; `Ok(None)` when that cgroup was removed
/// since. A cgroup without bandwidth control reads all zeros (on v2 `cpu.stat` has the
/// throttling fields only where the cpu controller is enabled; its tasks are throttled, if at
/// all, by an ancestor's group, whose counters say so).
pub fn throttle_stat(control: &CpuControl, index: usize) -> Result<Option<ThrottleStat>> {
    let Some(limit) = control.chain.get(index) else {
        bail!(
            "no cgroup {index} in a chain of {} (task's cgroup and ancestors)",
            control.chain.len()
        );
    };
    let path = limit.dir.join("cpu.stat");
    match fs::read(&path) {
        Ok(text) => {
            let version = match control.hierarchy {
                Hierarchy::V1 { .. } => Version::V1,
                Hierarchy::V2 { .. } => Version::V2,
            };
            Ok(Some(parse_cpu_stat(
                &String::from_utf8_lossy(&text),
                version,
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(limit.dir.is_dir().then(ThrottleStat::default))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `cpu.stat` lines `key value`: v1 counts `throttled_time` in nanoseconds
/// (sched-bwc.rst), v2 `throttled_usec` in microseconds (cgroup-v2.rst). Missing keys read 0.
fn parse_cpu_stat(text: &str, version: Version) -> ThrottleStat {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0u64)
    };
    ThrottleStat {
        nr_periods: value("nr_periods"),
        nr_throttled: value("nr_throttled"),
        throttled_ns: match version {
            Version::V1 => value("throttled_time"),
            Version::V2 => value("throttled_usec").saturating_mul(1000),
        },
    }
}

/// The CPUs `tid` may run on (`Cpus_allowed_list` of `/proc/<tid>/status`); `Ok(None)` when
/// the task does not exist (any more).
pub fn allowed_cpus(tid: u32) -> Result<Option<Vec<u32>>> {
    let Some(status) = read_task_file(tid, "status")? else {
        return Ok(None);
    };
    let status = String::from_utf8_lossy(&status);
    let list = procinfo::status_field(&status, "Cpus_allowed_list")
        .with_context(|| format!("no Cpus_allowed_list in /proc/{tid}/status"))?;
    parse_cpu_list(list)
        .map(Some)
        .with_context(|| format!("unexpected Cpus_allowed_list {list:?} of task {tid}"))
}

/// The CPUs that are online (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> Result<Vec<u32>> {
    let path = "/sys/devices/system/cpu/online";
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_cpu_list(&text).with_context(|| format!("unexpected {:?} in {path}", text.trim()))
}

/// A kernel CPU list (`%*pbl`: `0-3,8,10-11`, empty for none), ascending; `None` if malformed.
#[must_use]
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for range in text.split(',') {
        let (first, last) = if let Some((first, last)) = range.split_once('-') {
            (first.parse().ok()?, last.parse().ok()?)
        } else {
            let cpu = range.parse().ok()?;
            (cpu, cpu)
        };
        if first > last || last >= MAX_CPUS || cpus.last().is_some_and(|&prev| prev >= first) {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus)
}

/// `tid`'s nice value (-20..=19); `Ok(None)` when the task does not exist (any more).
pub fn nice(tid: u32) -> Result<Option<i32>> {
    stat_value(tid, stat_nice, "nice")
}

/// Whether `tid` is scheduled by a real-time class (`SCHED_FIFO`, `SCHED_RR`,
/// `SCHED_DEADLINE`), ahead of every CFS/EEVDF task; `Ok(None)` when it does not exist.
pub fn policy_is_realtime(tid: u32) -> Result<Option<bool>> {
    stat_value(
        tid,
        |stat| stat_policy(stat).map(is_realtime_policy),
        "policy",
    )
}

/// Whether a scheduling policy number (`sched_setscheduler(2)`) is a real-time one.
#[must_use]
pub fn is_realtime_policy(policy: u32) -> bool {
    i32::try_from(policy).is_ok_and(|policy| {
        matches!(
            policy,
            libc::SCHED_FIFO | libc::SCHED_RR | libc::SCHED_DEADLINE
        )
    })
}

fn stat_value<T>(tid: u32, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<Option<T>> {
    let Some(stat) = read_task_file(tid, "stat")? else {
        return Ok(None);
    };
    let stat = String::from_utf8_lossy(&stat);
    parse(&stat)
        .map(Some)
        .with_context(|| format!("no {what} in /proc/{tid}/stat: {:?}", stat.trim()))
}

/// Field `number` (1-based, as numbered in proc(5), from 3 on) of a `/proc/<pid>/stat` text.
/// The comm (field 2) may contain spaces and parentheses, so fields are counted from the last
/// `)`, as `procinfo::stat_flags` does.
fn stat_field(stat: &str, number: usize) -> Option<&str> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(number.checked_sub(3)?)
}

/// Field 19, nice.
#[must_use]
pub fn stat_nice(stat: &str) -> Option<i32> {
    stat_field(stat, 19)?.parse().ok()
}

/// Field 41, policy.
#[must_use]
pub fn stat_policy(stat: &str) -> Option<u32> {
    stat_field(stat, 41)?.parse().ok()
}

/// Whether time spent in interrupts is charged to interrupts rather than to the task that was
/// interrupted (`CONFIG_IRQ_TIME_ACCOUNTING`). Without it, a task's run time includes the
/// interrupts it suffered, and interrupt load is invisible to the scheduler's books.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqAccounting {
    Accounted,
    NotAccounted,
    /// No kernel configuration to read (neither `/proc/config.gz` nor `/boot/config-<release>`).
    Unknown,
}

/// Whether this kernel accounts IRQ time, from its configuration (`/proc/config.gz`, else
/// `/boot/config-<release>`) and command line (`tsc=noirqtime` turns it off on x86). x86 may
/// also turn it off at run time when it finds the TSC unstable (`disable_sched_clock_irqtime`),
/// which nothing in /proc or /sys shows. Constant for the boot: call it once.
#[must_use]
pub fn irq_time_accounting() -> IrqAccounting {
    let Some(config) = kernel_config() else {
        return IrqAccounting::Unknown;
    };
    match irq_time_in_config(&config) {
        IrqAccounting::Accounted => {
            let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
            if cmdline.split_whitespace().any(|arg| arg == "tsc=noirqtime") {
                IrqAccounting::NotAccounted
            } else {
                IrqAccounting::Accounted
            }
        }
        other => other,
    }
}

/// The running kernel's configuration text, if it can be found.
fn kernel_config() -> Option<String> {
    // CONFIG_IKCONFIG_PROC: the configuration the kernel was built with, gzip-compressed.
    match fs::File::open("/proc/config.gz") {
        Ok(file) => {
            let mut text = Vec::new();
            // A configuration is a few hundred KiB; the bound only guards against a bad file.
            let read = flate2::read::GzDecoder::new(file)
                .take(64 << 20)
                .read_to_end(&mut text);
            match read {
                Ok(_) => return Some(String::from_utf8_lossy(&text).into_owned()),
                Err(e) => log::debug!("reading /proc/config.gz: {e}"),
            }
        }
        Err(e) => log::debug!("no /proc/config.gz ({e}): trying /boot"),
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let path = format!("/boot/config-{}", release.trim());
    match fs::read(&path) {
        Ok(text) => Some(String::from_utf8_lossy(&text).into_owned()),
        Err(e) => {
            log::debug!("no {path} ({e}): IRQ time accounting unknown");
            None
        }
    }
}

/// `CONFIG_IRQ_TIME_ACCOUNTING` in a kernel configuration text. Kconfig writes `=y` when on and
/// `# ... is not set` when off; an option whose dependencies are unmet (an architecture without
/// `HAVE_IRQ_TIME_ACCOUNTING`) is not written at all, and is off too.
fn irq_time_in_config(config: &str) -> IrqAccounting {
    const OPTION: &str = "CONFIG_IRQ_TIME_ACCOUNTING";
    const NOT_SET: &str = "# CONFIG_IRQ_TIME_ACCOUNTING is not set";
    let mut is_config = false;
    for line in config.lines() {
        let line = line.trim();
        if let Some(value) = line.strip_prefix(OPTION).and_then(|r| r.strip_prefix('=')) {
            return if value == "y" {
                IrqAccounting::Accounted
            } else {
                IrqAccounting::NotAccounted
            };
        }
        if line == NOT_SET {
            return IrqAccounting::NotAccounted;
        }
        is_config |= line.starts_with("CONFIG_");
    }
    if is_config {
        IrqAccounting::NotAccounted
    } else {
        IrqAccounting::Unknown
    }
}

/// A file of `/proc/<tid>/`; `Ok(None)` when the task does not exist (any more).
fn read_task_file(tid: u32, name: &str) -> Result<Option<Vec<u8>>> {
    let path = format!("/proc/{tid}/{name}");
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if task_gone(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

/// ENOENT when there is no such task, ESRCH when it exited between the open and the read.
fn task_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

fn task_exists(tid: u32) -> bool {
    Path::new(&format!("/proc/{tid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: the cpu controller alone on v1, cpuacct on its own hierarchy,
    /// the unified hierarchy without controllers.
    const HYBRID_MOUNTINFO: &[u8] = b"\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &[u8] = b"\
9:name=systemd:/
4:memory:/process_api/85f3bd955c6b2ac36b49d9c5383dfd82
2:cpuacct:/elsewhere
1:cpu:/batch/job-7
0::/
";
    /// A pure v2 host (systemd, Kubernetes).
    const UNIFIED_MOUNTINFO: &[u8] = b"\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn chain_paths(located: &Located) -> Vec<(&[u8], &Path)> {
        located
            .chain
            .iter()
            .map(|(path, dir)| (path.as_slice(), dir.as_path()))
            .collect()
    }

    #[test]
    fn v1_cpu_hierarchy_is_preferred_and_walked_to_the_root() {
        let located = locate(HYBRID_CGROUP, HYBRID_MOUNTINFO).unwrap();
        assert_eq!(located.version, Version::V1);
        assert_eq!(located.mount, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(
            chain_paths(&located),
            [
                (
                    &b"/batch/job-7"[..],
                    Path::new("/sys/fs/cgroup/cpu/batch/job-7")
                ),
                (b"/batch", Path::new("/sys/fs/cgroup/cpu/batch")),
                (b"/", Path::new("/sys/fs/cgroup/cpu")),
            ]
        );
    }

    #[test]
    fn combined_v1_controllers_match_but_cpuacct_alone_does_not() {
        let mountinfo = b"\
33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct
";
        let proc_cgroup = b"5:cpuacct:/not-this\n3:cpu,cpuacct:/system.slice/nginx.service\n0::/\n";
        let located = locate(proc_cgroup, mountinfo).unwrap();
        assert_eq!(located.version, Version::V1);
        assert_eq!(
            chain_paths(&located)[0],
            (
                &b"/system.slice/nginx.service"[..],
                Path::new("/sys/fs/cgroup/cpu,cpuacct/system.slice/nginx.service")
            )
        );
        // Only cpuacct on v1 and no cpu line: bandwidth is on v2.
        let located = locate(b"5:cpuacct:/x\n0::/app\n", HYBRID_MOUNTINFO).unwrap();
        assert_eq!(located.version, Version::V2);
        assert_eq!(located.mount, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn unified_hosts_use_the_v2_line() {
        let proc_cgroup =
            b"0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-3f2a.scope\n";
        let located = locate(proc_cgroup, UNIFIED_MOUNTINFO).unwrap();
        assert_eq!(located.version, Version::V2);
        let paths: Vec<&[u8]> = located.chain.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(
            paths,
            [
                &b"/kubepods.slice/kubepods-burstable.slice/cri-containerd-3f2a.scope"[..],
                b"/kubepods.slice/kubepods-burstable.slice",
                b"/kubepods.slice",
                b"/",
            ]
        );
        assert_eq!(located.chain[3].1, Path::new("/sys/fs/cgroup"));
        // The root alone.
        let located = locate(b"0::/\n", UNIFIED_MOUNTINFO).unwrap();
        assert_eq!(
            chain_paths(&located),
            [(&b"/"[..], Path::new("/sys/fs/cgroup"))]
        );
    }

    #[test]
    fn paths_are_bytes_and_may_hold_colons_and_spaces() {
        let located = locate(b"0::/odd:name/a b\xff\x1b[1m\n", UNIFIED_MOUNTINFO).unwrap();
        assert_eq!(
            located.chain[0].1.as_os_str().as_bytes(),
            b"/sys/fs/cgroup/odd:name/a b\xff\x1b[1m"
        );
        let limit = CgroupLimit {
            path: located.chain[0].0.clone(),
            dir: located.chain[0].1.clone(),
            kernfs_id: 1,
            quota_ns: None,
            period_ns: DEFAULT_PERIOD_NS,
        };
        assert_eq!(limit.display_path(), "/odd:name/a b\\xff\\x1b[1m");
        // An escaped mount point.
        let mountinfo = b"30 24 0:26 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        let located = locate(b"0::/a\n", mountinfo).unwrap();
        assert_eq!(located.chain[0].1, Path::new("/mnt/cg two/a"));
    }

    #[test]
    fn a_mount_of_a_subtree_shows_the_chain_up_to_its_root() {
        // A container without a cgroup namespace: its own cgroup is mounted at the usual place.
        let subtree: &[u8] = b"701 700 0:29 /docker/3f2a /sys/fs/cgroup/cpu,cpuacct ro,nosuid \
            master:11 - cgroup cpu rw,cpu,cpuacct\n";
        let whole: &[u8] = b"702 700 0:29 / /host/cpu rw - cgroup cpu rw,cpu,cpuacct\n";
        let proc_cgroup = b"3:cpu,cpuacct:/docker/3f2a/worker\n0::/\n";
        // The mount showing the whole hierarchy wins.
        let located = locate(proc_cgroup, &[subtree, whole].concat()).unwrap();
        assert_eq!(located.mount, Path::new("/host/cpu"));
        assert_eq!(located.chain.len(), 4);
        // With only the subtree mounted, the chain stops at the mount's root.
        let located = locate(proc_cgroup, subtree).unwrap();
        assert_eq!(located.mount, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(
            chain_paths(&located),
            [
                (
                    &b"/docker/3f2a/worker"[..],
                    Path::new("/sys/fs/cgroup/cpu,cpuacct/worker")
                ),
                (b"/docker/3f2a", Path::new("/sys/fs/cgroup/cpu,cpuacct")),
            ]
        );
        // A sibling whose name starts the same is not under that root.
        let err = locate(b"3:cpu,cpuacct:/docker/3f2abc\n", subtree).unwrap_err();
        assert!(
            format!("{err:#}").contains("outside every mount"),
            "{err:#}"
        );
    }

    #[test]
    fn cgroups_outside_the_namespace_and_missing_mounts_are_errors() {
        for proc_cgroup in [&b"0::/../../system.slice/x.service\n"[..], b"1:cpu:/..\n"] {
            let err = locate(proc_cgroup, HYBRID_MOUNTINFO).unwrap_err();
            assert!(
                format!("{err:#}").contains("outside this process's cgroup namespace"),
                "{err:#}"
            );
        }
        let err = locate(b"1:cpu:/\n0::/\n", UNIFIED_MOUNTINFO).unwrap_err();
        assert!(
            format!("{err:#}").contains("cpu controller is not mounted"),
            "{err:#}"
        );
        let err = locate(b"0::/\n", b"22 1 0:21 / /proc rw - proc proc rw\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("cgroup2 file system is not mounted"),
            "{err:#}"
        );
        let err = locate(b"1:memory:/\n", HYBRID_MOUNTINFO).unwrap_err();
        assert!(
            format!("{err:#}").contains("no cpu controller line"),
            "{err:#}"
        );
    }

    #[test]
    fn mountinfo_lines_with_optional_fields_and_garbage() {
        let text = b"36 25 0:30 /a\\134b /cg rw shared:9 master:2 - cgroup2 none rw,nsdelegate\n\
            truncated line\n\n";
        let mounts = mounts(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].root, b"/a\\b");
        assert_eq!(mounts[0].target, Path::new("/cg"));
        assert_eq!(mounts[0].fstype, b"cgroup2");
        assert_eq!(mounts[0].super_options, b"rw,nsdelegate");
    }

    #[test]
    fn cpu_max_and_cfs_quota() {
        assert_eq!(parse_cpu_max("max 100000\n"), Some((None, 100_000_000)));
        assert_eq!(
            parse_cpu_max("10000 100000\n"),
            Some((Some(10_000_000), 100_000_000))
        );
        assert_eq!(
            parse_cpu_max("250000 50000"),
            Some((Some(250_000_000), 50_000_000))
        );
        for bad in ["", "max", "max 100000 7", "-1 100000", "10000 max"] {
            assert_eq!(parse_cpu_max(bad), None, "{bad:?}");
        }
        assert_eq!(parse_cfs_quota("-1\n").unwrap(), None);
        assert_eq!(parse_cfs_quota("20000\n").unwrap(), Some(20_000_000));
        assert!(parse_cfs_quota("-2").is_err());
        assert_eq!(usec_to_ns("100000\n"), Some(100_000_000));
        assert_eq!(usec_to_ns(&u64::MAX.to_string()), None, "overflow");
    }

    #[test]
    fn cpu_stat_units_differ_between_v1_and_v2() {
        // v1 on 6.18, read on this machine.
        let v1 =
            "nr_periods 7\nnr_throttled 6\nthrottled_time 480531046\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_cpu_stat(v1, Version::V1),
            ThrottleStat {
                nr_periods: 7,
                nr_throttled: 6,
                throttled_ns: 480_531_046
            }
        );
        let v2 = "usage_usec 1000\nuser_usec 800\nsystem_usec 200\nnice_usec 0\n\
            nr_periods 50\nnr_throttled 45\nthrottled_usec 3600000\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(v2, Version::V2),
            ThrottleStat {
                nr_periods: 50,
                nr_throttled: 45,
                throttled_ns: 3_600_000_000
            }
        );
        // The v2 root (or any cgroup without the cpu controller): no throttling fields.
        let root = "usage_usec 10171894284\nuser_usec 8638758490\nsystem_usec 1533135793\n";
        assert_eq!(parse_cpu_stat(root, Version::V2), ThrottleStat::default());
    }

    #[test]
    fn stat_fields_after_a_comm_with_spaces_and_parens() {
        // Read on this machine: nice 0 (field 19), policy 0 (field 41).
        let plain = "17809 (cat) R 17796 17796 16418 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 \
            912023 3133440 382 18446744073709551615 94657908576256 94657908596137 \
            140728066632928 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94657908612144";
        assert_eq!(stat_nice(plain), Some(0));
        assert_eq!(stat_policy(plain), Some(0));
        // A comm that looks like the end of a comm and more fields; nice -5, SCHED_RR (2).
        let odd = "4242 (a) (b) 1 2 ) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 15 -5 1 0 \
            100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 50 2 0 0 0";
        assert_eq!(stat_nice(odd), Some(-5));
        assert_eq!(stat_policy(odd), Some(2));
        assert_eq!(stat_policy(odd).map(is_realtime_policy), Some(true));
        assert_eq!(stat_nice("garbage"), None);
        assert_eq!(stat_policy("1 (short) S 0 1"), None);
        assert_eq!(
            stat_field(plain, 2),
            None,
            "the comm is not a numeric field"
        );
    }

    #[test]
    fn realtime_policies() {
        let realtime: Vec<u32> = (0..8).filter(|&p| is_realtime_policy(p)).collect();
        // SCHED_FIFO, SCHED_RR, SCHED_DEADLINE; not NORMAL, BATCH, IDLE or EXT (7).
        assert_eq!(realtime, [1, 2, 6]);
        assert!(!is_realtime_policy(u32::MAX));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        for bad in ["3-1", "0-1,1", "a", "0-", "1,,2", "0-65536", "4,2"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn irq_time_in_configs() {
        let on = "#\n# Automatically generated file; DO NOT EDIT.\nCONFIG_TICK_CPU_ACCOUNTING=y\n\
            CONFIG_IRQ_TIME_ACCOUNTING=y\n";
        assert_eq!(irq_time_in_config(on), IrqAccounting::Accounted);
        // This machine's configuration.
        let off = "CONFIG_TICK_CPU_ACCOUNTING=y\n# CONFIG_VIRT_CPU_ACCOUNTING_GEN is not set\n\
            # CONFIG_IRQ_TIME_ACCOUNTING is not set\nCONFIG_HAVE_IRQ_TIME_ACCOUNTING=y\n";
        assert_eq!(irq_time_in_config(off), IrqAccounting::NotAccounted);
        // An architecture where the option cannot be chosen does not write it.
        assert_eq!(
            irq_time_in_config("CONFIG_TICK_CPU_ACCOUNTING=y\n"),
            IrqAccounting::NotAccounted
        );
        assert_eq!(irq_time_in_config("not a config"), IrqAccounting::Unknown);
        // A longer option name that starts the same is another option.
        assert_eq!(
            irq_time_in_config("CONFIG_IRQ_TIME_ACCOUNTING_X=y\n"),
            IrqAccounting::NotAccounted
        );
    }

    fn limit(path: &str, quota_ms: Option<u64>, period_ms: u64) -> CgroupLimit {
        CgroupLimit {
            path: path.as_bytes().to_vec(),
            dir: PathBuf::from(path),
            kernfs_id: 1,
            quota_ns: quota_ms.map(|ms| ms * 1_000_000),
            period_ns: period_ms * 1_000_000,
        }
    }

    #[test]
    fn the_tightest_limit_of_a_chain() {
        let control = CpuControl {
            hierarchy: Hierarchy::V2 {
                mount: PathBuf::from("/sys/fs/cgroup"),
            },
            chain: vec![
                limit("/a/b/c", None, 100),
                limit("/a/b", Some(200), 100),
                limit("/a", Some(30), 50),
                limit("/", None, 100),
            ],
        };
        assert_eq!(control.chain[1].cpus(), Some(2.0));
        assert_eq!(control.chain[0].cpus(), None);
        let tightest = control.tightest().unwrap();
        assert_eq!(
            (tightest.path.as_slice(), tightest.cpus()),
            (&b"/a"[..], Some(0.6))
        );
        assert!(control.reaches_root());
        let partial = CpuControl {
            chain: control.chain[..2].to_vec(),
            ..control.clone()
        };
        assert!(!partial.reaches_root());
        let unlimited = CpuControl {
            chain: vec![limit("/", None, 100)],
            ..control
        };
        assert_eq!(unlimited.tightest(), None);
    }

    /// A directory tree shaped like a cgroup hierarchy, removed on drop.
    struct FakeTree(PathBuf);

    impl FakeTree {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("schedlat-cpulimits-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn mountinfo(&self, fstype: &str, options: &str) -> Vec<u8> {
            format!(
                "41 31 0:38 / {} rw - {fstype} {fstype} {options}\n",
                self.0.display()
            )
            .into_bytes()
        }

        fn ino(&self, rel: &str) -> u64 {
            fs::metadata(self.0.join(rel)).unwrap().ino()
        }
    }

    impl Drop for FakeTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_v1_limits_and_stats_from_the_files() {
        let tree = FakeTree::new("v1");
        tree.write("cpu.cfs_quota_us", "-1\n");
        tree.write("cpu.cfs_period_us", "100000\n");
        tree.write("batch/cpu.cfs_quota_us", "50000\n");
        tree.write("batch/cpu.cfs_period_us", "250000\n");
        tree.write("batch/job/cpu.cfs_quota_us", "20000\n");
        tree.write("batch/job/cpu.cfs_period_us", "100000\n");
        tree.write(
            "batch/job/cpu.stat",
            "nr_periods 7\nnr_throttled 6\nthrottled_time 480531046\n",
        );
        let mountinfo = tree.mountinfo("cgroup", "rw,cpu,cpuacct");
        let control = control_from(b"3:cpu,cpuacct:/batch/job\n0::/\n", &mountinfo).unwrap();
        assert_eq!(
            control.hierarchy,
            Hierarchy::V1 {
                mount: tree.0.clone()
            }
        );
        let limits: Vec<(&[u8], u64, Option<u64>, u64)> = control
            .chain
            .iter()
            .map(|l| (l.path.as_slice(), l.kernfs_id, l.quota_ns, l.period_ns))
            .collect();
        assert_eq!(
            limits,
            [
                (
                    &b"/batch/job"[..],
                    tree.ino("batch/job"),
                    Some(20_000_000),
                    100_000_000
                ),
                (b"/batch", tree.ino("batch"), Some(50_000_000), 250_000_000),
                (b"/", tree.ino(""), None, 100_000_000),
            ]
        );
        assert_eq!(
            throttle_stat(&control, 0).unwrap(),
            Some(ThrottleStat {
                nr_periods: 7,
                nr_throttled: 6,
                throttled_ns: 480_531_046
            })
        );
        // No cpu.stat: no bandwidth control there.
        assert_eq!(
            throttle_stat(&control, 1).unwrap(),
            Some(ThrottleStat::default())
        );
        assert!(throttle_stat(&control, 3).is_err(), "out of the chain");
        // A cgroup removed since reads as gone.
        fs::remove_dir_all(tree.0.join("batch/job")).unwrap();
        assert_eq!(throttle_stat(&control, 0).unwrap(), None);
        // Garbage in a limit file is an error that names the file.
        tree.write("batch/cpu.cfs_quota_us", "lots\n");
        let err = control_from(b"3:cpu,cpuacct:/batch\n", &mountinfo).unwrap_err();
        assert!(
            format!("{err:#}").contains("batch/cpu.cfs_quota_us"),
            "{err:#}"
        );
    }

    #[test]
    fn reads_v2_limits_where_cpu_max_exists() {
        let tree = FakeTree::new("v2");
        // The root has no cpu.max; `app` has the controller enabled by the root, `app/web`
        // does not (its parent's subtree_control lacks cpu).
        tree.write("app/cpu.max", "150000 100000\n");
        tree.write("app/web/cgroup.procs", "");
        tree.write(
            "app/cpu.stat",
            "usage_usec 5\nnr_periods 3\nnr_throttled 2\nthrottled_usec 1500\n",
        );
        let mountinfo = tree.mountinfo("cgroup2", "rw,nsdelegate");
        let control = control_from(b"0::/app/web\n", &mountinfo).unwrap();
        let limits: Vec<(&[u8], Option<u64>, u64)> = control
            .chain
            .iter()
            .map(|l| (l.path.as_slice(), l.quota_ns, l.period_ns))
            .collect();
        assert_eq!(
            limits,
            [
                (&b"/app/web"[..], None, DEFAULT_PERIOD_NS),
                (b"/app", Some(150_000_000), 100_000_000),
                (b"/", None, DEFAULT_PERIOD_NS),
            ]
        );
        assert_eq!(control.tightest().map(CgroupLimit::cpus), Some(Some(1.5)));
        assert_eq!(
            throttle_stat(&control, 1).unwrap().map(|s| s.throttled_ns),
            Some(1_500_000)
        );
    }

    #[test]
    fn a_missing_task_is_none_not_an_error() {
        // Beyond any pid_max (at most 2^22).
        let tid = u32::MAX;
        assert_eq!(cpu_control(tid).unwrap(), None);
        assert_eq!(allowed_cpus(tid).unwrap(), None);
        assert_eq!(nice(tid).unwrap(), None);
        assert_eq!(policy_is_realtime(tid).unwrap(), None);
        // A child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        if !task_exists(pid) {
            assert_eq!(cpu_control(pid).unwrap(), None);
            assert_eq!(nice(pid).unwrap(), None);
        }
    }
}

/// Reads of this machine's own state; the cgroup ones need root and are skipped without it.
#[cfg(test)]
mod machine_tests {
    use std::{
        process::{Child, Command},
        thread,
        time::{Duration, Instant},
    };

    use super::*;

    fn gettid() -> u32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// This thread's nice value from `getpriority`, which returns -1 for both nice -1 and an
    /// error: errno tells them apart.
    fn getpriority(tid: u32) -> i32 {
        // SAFETY: __errno_location returns this thread's errno, writable.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: getpriority has no memory preconditions.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        assert!(
            nice != -1 || io::Error::last_os_error().raw_os_error() == Some(0),
            "getpriority({tid}): {}",
            io::Error::last_os_error()
        );
        nice
    }

    /// Children and cgroup directories of a test, killed and removed on drop (a failing
    /// assertion included). Directories are removed deepest first.
    #[derive(Default)]
    struct Cleanup {
        children: Vec<Child>,
        dirs: Vec<PathBuf>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
            for dir in self.dirs.iter().rev() {
                // A reaped task can leave its cgroup a moment later.
                for _ in 0..50 {
                    match fs::remove_dir(dir) {
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                            thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            eprintln!("removing {}: {e}", dir.display());
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
    }

    fn spawn(cleanup: &mut Cleanup, program: &str, args: &[&str]) -> u32 {
        let child = Command::new(program)
            .args(args)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        let pid = child.id();
        cleanup.children.push(child);
        pid
    }

    fn unique_name() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("schedlat-test-{}-{nanos}", std::process::id())
    }

    #[test]
    fn v1_quota_chain_of_a_task_in_a_new_cgroup() {
        if !is_root() {
            eprintln!("not root: skipping the v1 cpu cgroup test (it creates cgroups)");
            return;
        }
        let me = cpu_control(std::process::id()).unwrap().unwrap();
        let Hierarchy::V1 { mount } = me.hierarchy.clone() else {
            eprintln!(
                "the cpu controller is on v2 here ({}): skipping the v1 test",
                me.hierarchy.mount().display()
            );
            return;
        };
        // Build the cgroups at the top of what this mount shows.
        let top = me.chain.last().unwrap();
        let mut cleanup = Cleanup::default();
        let name = unique_name();
        let outer = top.dir.join(&name);
        let limited = outer.join("limited");
        for dir in [&outer, &limited] {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cleanup.dirs.push(dir.clone());
        }
        fs::write(limited.join("cpu.cfs_period_us"), "100000").unwrap();
        fs::write(limited.join("cpu.cfs_quota_us"), "20000").unwrap();
        let sleeper = spawn(&mut cleanup, "sleep", &["5"]);
        fs::write(limited.join("cgroup.procs"), sleeper.to_string()).unwrap();

        let control = cpu_control(sleeper).unwrap().expect("the sleeper exists");
        assert_eq!(control.hierarchy, Hierarchy::V1 { mount });
        let join = |base: &[u8], name: &str| {
            let mut path = base.to_vec();
            if path != b"/" {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            path
        };
        let outer_path = join(&top.path, &name);
        let ino = |dir: &Path| fs::metadata(dir).unwrap().ino();
        let expected = [
            CgroupLimit {
                path: join(&outer_path, "limited"),
                dir: limited.clone(),
                kernfs_id: ino(&limited),
                quota_ns: Some(20_000_000),
                period_ns: 100_000_000,
            },
            CgroupLimit {
                path: outer_path,
                dir: outer.clone(),
                kernfs_id: ino(&outer),
                quota_ns: None,
                period_ns: 100_000_000,
            },
        ];
        assert_eq!(control.chain[..2], expected[..], "{control:#?}");
        assert_eq!(
            &control.chain[2..],
            &me.chain[..],
            "then this process's chain"
        );
        if control.reaches_root() {
            let root = control.chain.last().unwrap();
            assert_eq!(root.quota_ns, None, "the root has no quota: {root:?}");
            assert_eq!(root.kernfs_id, ino(&root.dir));
        }
        assert_eq!(control.tightest(), Some(&expected[0]));

        // Throttling: a busy loop at 20 ms per 100 ms is held back about 80 ms a period.
        let before = throttle_stat(&control, 0).unwrap().unwrap();
        let limited_procs = limited.join("cgroup.procs");
        let started = Instant::now();
        let spinner = Command::new("timeout")
            .args(["0.5", "sh", "-c"])
            .arg(format!(
                "echo $$ > '{}' && while :; do :; done",
                limited_procs.display()
            ))
            .status()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(spinner.code(), Some(124), "the busy loop ran until timeout");
        let after = throttle_stat(&control, 0).unwrap().unwrap();
        let throttled = after.throttled_ns - before.throttled_ns;
        let online = online_cpus().unwrap().len() as u64;
        assert!(
            after.nr_throttled > before.nr_throttled
                && after.nr_periods >= after.nr_throttled
                && throttled >= 10_000_000
                && u128::from(throttled) <= elapsed.as_nanos() * u128::from(online),
            "expected throttled periods and 10 ms..{elapsed:?}x{online} CPUs throttled in \
             {elapsed:?}: before {before:?}, after {after:?}"
        );
        let root_stat = throttle_stat(&control, control.chain.len() - 1).unwrap();
        if control.reaches_root() {
            assert_eq!(
                root_stat.map(|s| s.nr_throttled),
                Some(0),
                "the root is never throttled"
            );
        }
    }

    #[test]
    fn v2_chain_where_cpu_max_does_not_exist() {
        if !is_root() {
            eprintln!("not root: skipping the v2 cgroup test (it creates cgroups)");
            return;
        }
        let mountinfo = fs::read("/proc/self/mountinfo").unwrap();
        let Some(mount) = mounts(&mountinfo)
            .into_iter()
            .find(|m| m.fstype == b"cgroup2" && m.root == b"/")
        else {
            eprintln!("no cgroup2 mount of the whole hierarchy: skipping the v2 test");
            return;
        };
        let mut cleanup = Cleanup::default();
        let dir = mount.target.join(unique_name());
        fs::create_dir(&dir).unwrap();
        cleanup.dirs.push(dir.clone());
        let sleeper = spawn(&mut cleanup, "sleep", &["5"]);
        fs::write(dir.join("cgroup.procs"), sleeper.to_string()).unwrap();
        // Only the v2 line, as on a pure v2 host.
        let proc_cgroup = fs::read(format!("/proc/{sleeper}/cgroup")).unwrap();
        let v2_line: Vec<u8> = proc_cgroup
            .split(|&b| b == b'\n')
            .find(|line| line.starts_with(b"0::"))
            .unwrap()
            .to_vec();
        let control = control_from(&v2_line, &mountinfo).unwrap();
        assert_eq!(
            control.hierarchy,
            Hierarchy::V2 {
                mount: mount.target.clone()
            }
        );
        let leaf = &control.chain[0];
        assert_eq!(leaf.dir, dir);
        assert_eq!(leaf.kernfs_id, fs::metadata(&dir).unwrap().ino());
        let root = control.chain.last().unwrap();
        assert_eq!(root.path, b"/");
        // The root cgroup's id is 1 (kernfs numbers the root first).
        assert_eq!(root.kernfs_id, fs::metadata(&mount.target).unwrap().ino());
        assert_eq!(root.quota_ns, None);
        if !dir.join("cpu.max").exists() {
            assert_eq!(
                (leaf.quota_ns, leaf.period_ns),
                (None, DEFAULT_PERIOD_NS),
                "no cpu.max: no limit"
            );
            assert_eq!(
                throttle_stat(&control, 0).unwrap(),
                Some(ThrottleStat::default())
            );
        }
    }

    #[test]
    fn this_process_cpus_nice_and_policy() {
        let tid = gettid();
        // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the size is that of the set passed.
        let rc = unsafe {
            libc::sched_getaffinity(
                tid as libc::pid_t,
                size_of::<libc::cpu_set_t>(),
                &raw mut set,
            )
        };
        assert_eq!(rc, 0, "sched_getaffinity: {}", io::Error::last_os_error());
        let affinity: Vec<u32> = (0..libc::CPU_SETSIZE as u32)
            // SAFETY: the index is below CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu as usize, &set) })
            .collect();
        assert_eq!(allowed_cpus(tid).unwrap(), Some(affinity));

        let online = online_cpus().unwrap();
        // SAFETY: sysconf has no preconditions.
        let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        assert_eq!(online.len() as i64, configured as i64, "{online:?}");

        assert_eq!(nice(tid).unwrap(), Some(getpriority(tid)));
        // SAFETY: sched_getscheduler has no memory preconditions.
        let policy = unsafe { libc::sched_getscheduler(0) };
        assert_eq!(
            policy_is_realtime(tid).unwrap(),
            Some(matches!(policy, libc::SCHED_FIFO | libc::SCHED_RR))
        );
    }

    #[test]
    fn nice_and_policy_of_children() {
        let mut cleanup = Cleanup::default();
        let own = getpriority(gettid());
        let niced = spawn(&mut cleanup, "nice", &["-n", "5", "sleep", "5"]);
        // `nice` sets the value then execs `sleep`: wait for the exec.
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::host::procinfo::process_comm(niced).as_deref() != Some("sleep") {
            assert!(Instant::now() < deadline, "nice did not exec sleep");
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(nice(niced).unwrap(), Some((own + 5).min(19)));

        // Raising a child's nice value needs no privilege.
        let sleeper = spawn(&mut cleanup, "sleep", &["5"]);
        // SAFETY: setpriority has no memory preconditions.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, sleeper, 19) };
        assert_eq!(rc, 0, "setpriority: {}", io::Error::last_os_error());
        assert_eq!(nice(sleeper).unwrap(), Some(19));
        assert_eq!(policy_is_realtime(sleeper).unwrap(), Some(false));

        if !is_root() {
            eprintln!("not root: skipping the SCHED_FIFO part");
            return;
        }
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: param is a valid sched_param for the call.
        let rc = unsafe {
            libc::sched_setscheduler(sleeper as libc::pid_t, libc::SCHED_FIFO, &raw const param)
        };
        assert_eq!(rc, 0, "sched_setscheduler: {}", io::Error::last_os_error());
        assert_eq!(policy_is_realtime(sleeper).unwrap(), Some(true));
    }

    #[test]
    fn irq_time_accounting_here() {
        let answer = irq_time_accounting();
        if Path::new("/proc/config.gz").exists() {
            assert_ne!(
                answer,
                IrqAccounting::Unknown,
                "/proc/config.gz is readable"
            );
        }
        eprintln!("IRQ time accounting here: {answer:?}");
    }
}
