//! Incidents: when a wait (or a cgroup's window p99) crosses its threshold, keep the evidence of
//! that moment: a flame graph of what the CPUs did in the seconds before and just after, the
//! run-queue state, and the victim's and culprit's details.
//!
//! Policy (pure, tested with synthetic triggers): a cooldown per victim and a global rate limit,
//! so an incident storm cannot hurt the node; retention by count and bytes.
//!
//! Storage: one directory per incident under the incident directory (0700, root's), files 0600.
//! A bundle is written into a hidden `.tmp-<id>` directory and renamed into place when
//! complete, so a killed agent never leaves a half bundle that looks complete (leftover `.tmp-`
//! directories are removed at start). Files are created with `O_NOFOLLOW | O_EXCL` inside
//! directories the agent created, and the incident directory itself must not be a symlink.

use std::{
    collections::{HashMap, VecDeque},
    ffi::CString,
    fs, io,
    io::Write as _,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

pub use crate::host::clock::rfc3339;
use crate::{UsageError, host::clock::civil};

/// Why an incident was captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// One wait above `incidents.threshold`.
    Wait,
    /// A cgroup's window p99 above `incidents.p99_threshold`.
    WindowP99,
}

impl Reason {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Wait => "wait",
            Reason::WindowP99 => "window_p99",
        }
    }
}

/// What the limiter decided for a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Capture,
    /// This victim had an incident less than `cooldown` ago.
    Cooldown,
    /// The node had `max_per_minute` incidents in the last minute.
    RateLimited,
}

/// Cooldown per victim and a sliding one-minute rate limit.
pub struct Limiter {
    cooldown: Duration,
    max_per_minute: usize,
    last_by_victim: HashMap<String, Instant>,
    recent: VecDeque<Instant>,
}

impl Limiter {
    #[must_use]
    pub fn new(cooldown: Duration, max_per_minute: u32) -> Self {
        Self {
            cooldown,
            max_per_minute: max_per_minute as usize,
            last_by_victim: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    pub fn decide(&mut self, victim: &str, now: Instant) -> Decision {
        let minute = Duration::from_mins(1);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            self.recent.pop_front();
        }
        if let Some(last) = self.last_by_victim.get(victim)
            && now.duration_since(*last) < self.cooldown
        {
            return Decision::Cooldown;
        }
        if self.recent.len() >= self.max_per_minute {
            return Decision::RateLimited;
        }
        self.recent.push_back(now);
        self.last_by_victim.insert(victim.to_owned(), now);
        // Bounded: forget victims whose cooldown is over.
        let cooldown = self.cooldown;
        self.last_by_victim
            .retain(|_, t| now.duration_since(*t) < cooldown);
        Decision::Capture
    }
}

/// A task in the bundle's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    /// The process's cgroup label (unit/container name or path), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// `metadata.json` of a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub id: String,
    pub schema_version: u32,
    /// Wall-clock time of the trigger, RFC 3339 UTC, and as Unix ns.
    pub time: String,
    pub unix_ns: u64,
    pub reason: Reason,
    pub threshold_ns: u64,
    /// The wait (reason `wait`) or the window p99 (reason `window_p99`) that crossed it.
    pub value_ns: u64,
    pub victim: TaskRef,
    pub cpu: Option<u32>,
    pub preemptor: Option<TaskRef>,
    /// The daemon's switch-only probes do not see wakeups; `None` then.
    pub waker: Option<TaskRef>,
    /// Who held the CPU during the wait and why (`None`: not diagnosed, or a p99 trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<crate::diagnosis::engine::Diagnosis>,
    /// The victim's cgroup and the node over the last full window: p50, p99, max (ns).
    pub window: serde_json::Value,
    /// CPU samples in the flame graph (`flamegraph.svg`: of the victim's CPUs when the trigger
    /// has one, see `flamegraphs`) and the interval they cover around the trigger.
    pub samples: usize,
    pub flamegraph_before_ms: u64,
    pub flamegraph_after_ms: u64,
    pub files: Vec<String>,
    /// The bundle's flame graphs, main one first. Bundles of older versions have none listed
    /// here: their one `flamegraph.svg` covers every CPU.
    #[serde(default)]
    pub flamegraphs: Vec<FlameGraphFile>,
}

/// What a bundle's flame graph covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlameScope {
    /// The CPUs the victim waited on: what ran instead of it. Every CPU when the trigger names
    /// no CPU (a cgroup's window p99).
    VictimCpus,
    /// Every CPU of the node.
    Node,
}

/// One flame graph of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlameGraphFile {
    pub scope: FlameScope,
    /// The SVG and its folded stacks, file names in the bundle.
    pub svg: String,
    pub folded: String,
    /// The CPUs whose samples it holds; `None`: every CPU.
    pub cpus: Option<Vec<u32>>,
    pub samples: usize,
    /// Processes (pids) whose stacks are drawn first (leftmost), most important first.
    #[serde(default)]
    pub culprits: Vec<u32>,
}

/// Why the incident directory cannot be used. The names are the values of
/// `schedlat_incidents_disabled_info{reason}`: a short, fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirReason {
    /// A relative path (the configuration refuses these too).
    NotAbsolute,
    /// The directory is a symlink: it is never followed.
    Symlink,
    /// The path, or one of its parents, is something other than a directory.
    NotADirectory,
    /// The directory belongs to another user than the agent's.
    WrongOwner,
    /// The agent may not create, write or search it (or the parent it would be created in).
    PermissionDenied,
    /// It is, or would be created, on a read-only file system.
    ReadOnly,
    /// Any other I/O error (the log line has it).
    Io,
}

impl DirReason {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DirReason::NotAbsolute => "not_absolute",
            DirReason::Symlink => "symlink",
            DirReason::NotADirectory => "not_a_directory",
            DirReason::WrongOwner => "wrong_owner",
            DirReason::PermissionDenied => "permission_denied",
            DirReason::ReadOnly => "read_only",
            DirReason::Io => "io_error",
        }
    }

    /// The reason an I/O error on the directory (or a parent) stands for.
    #[must_use]
    pub fn of_io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => DirReason::PermissionDenied,
            Some(libc::EROFS) => DirReason::ReadOnly,
            Some(libc::ENOTDIR) => DirReason::NotADirectory,
            _ => DirReason::Io,
        }
    }
}

/// An incident directory that cannot be used: which, why (for the metrics), and the details
/// (for a person).
#[derive(Debug)]
pub struct DirError {
    pub dir: PathBuf,
    pub reason: DirReason,
    pub detail: String,
}

impl DirError {
    fn new(dir: &Path, reason: DirReason, detail: impl Into<String>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            reason,
            detail: detail.into(),
        }
    }

    fn io(dir: &Path, doing: &str, e: &std::io::Error) -> Self {
        Self::new(dir, DirReason::of_io(e), format!("{doing}: {e}"))
    }
}

impl std::fmt::Display for DirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "incident directory {} cannot be used ({}): {}",
            self.dir.display(),
            self.reason.name(),
            self.detail
        )
    }
}

impl std::error::Error for DirError {}

/// A usable incident directory, as found by `check_dir` (which changes nothing).
#[derive(Debug, PartialEq, Eq)]
pub enum DirStatus {
    /// It exists, is ours, and we can write in it; `mode` is its permission bits (opening it
    /// restricts them to 0700).
    Exists { mode: u32 },
    /// It does not exist; it will be created (0700) in `parent`, the nearest existing
    /// ancestor, which we can write in.
    Missing { parent: PathBuf },
}

/// Whether an existing path can be the incident directory: the checks on its metadata alone.
fn classify_existing(is_symlink: bool, is_dir: bool, uid: u32, euid: u32) -> Option<DirReason> {
    if is_symlink {
        Some(DirReason::Symlink)
    } else if !is_dir {
        Some(DirReason::NotADirectory)
    } else if uid != euid {
        Some(DirReason::WrongOwner)
    } else {
        None
    }
}

/// Whether this process may write in and search `dir`, with its effective ids and
/// capabilities (a root agent may write in directories it does not own).
fn check_writable(dir: &Path, error_dir: &Path) -> Result<(), DirError> {
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| DirError::new(error_dir, DirReason::Io, "the path contains a NUL byte"))?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    Err(DirError::io(
        error_dir,
        &format!("cannot write in {}", dir.display()),
        &e,
    ))
}

/// Checks that `dir` can be the incident directory without changing anything: it exists as a
/// directory of this user's (not a symlink) that we can write in, or it does not exist and can
/// be created. Missing parents are created too, like `mkdir -p`.
pub fn check_dir(dir: &Path) -> Result<DirStatus, DirError> {
    if !dir.is_absolute() {
        return Err(DirError::new(
            dir,
            DirReason::NotAbsolute,
            "it must be an absolute path",
        ));
    }
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            if let Some(reason) = classify_existing(
                meta.file_type().is_symlink(),
                meta.is_dir(),
                meta.uid(),
                euid,
            ) {
                let detail = match reason {
                    DirReason::Symlink => "it is a symlink; refusing to follow it".to_owned(),
                    DirReason::WrongOwner => format!(
                        "it belongs to uid {}, not to this agent (uid {euid})",
                        meta.uid()
                    ),
                    _ => "it is not a directory".to_owned(),
                };
                return Err(DirError::new(dir, reason, detail));
            }
            check_writable(dir, dir)?;
            Ok(DirStatus::Exists {
                mode: meta.mode() & 0o7777,
            })
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            // The nearest existing ancestor decides whether it can be created.
            for parent in dir.ancestors().skip(1) {
                match fs::metadata(parent) {
                    Ok(meta) if meta.is_dir() => {
                        check_writable(parent, dir)?;
                        return Ok(DirStatus::Missing {
                            parent: parent.to_path_buf(),
                        });
                    }
                    Ok(_) => {
                        return Err(DirError::new(
                            dir,
                            DirReason::NotADirectory,
                            format!("{} is not a directory", parent.display()),
                        ));
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
                    Err(e) => {
                        return Err(DirError::io(
                            dir,
                            &format!("checking {}", parent.display()),
                            &e,
                        ));
                    }
                }
            }
            Err(DirError::new(dir, DirReason::Io, "no ancestor exists"))
        }
        Err(e) => Err(DirError::io(dir, "checking it", &e)),
    }
}

/// The incident directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating 0700, parents too) the incident directory; refuses a symlink, a
    /// directory owned by someone else, or one it cannot write in (`check_dir`), and removes
    /// bundles a killed agent left half written.
    pub fn open(dir: &Path) -> Result<Self, DirError> {
        match check_dir(dir)? {
            DirStatus::Exists { mode } => {
                if mode & 0o077 != 0 {
                    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                        .map_err(|e| DirError::io(dir, "restricting it to its owner", &e))?;
                }
            }
            DirStatus::Missing { .. } => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| DirError::io(dir, "creating it", &e))?;
            }
        }
        let store = Self {
            dir: dir.to_path_buf(),
        };
        let entries = fs::read_dir(dir).map_err(|e| DirError::io(dir, "listing it", &e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(store)
    }

    /// Writes a bundle atomically; returns its directory.
    pub fn write(&self, id: &str, files: &[(&str, &[u8])]) -> Result<PathBuf> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            bail!("bad incident id {id:?}");
        }
        let tmp = self.dir.join(format!(".tmp-{id}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let result = (|| -> Result<PathBuf> {
            for (name, bytes) in files {
                if name.contains('/') || name.starts_with('.') {
                    bail!("bad file name {name:?}");
                }
                let path = tmp.join(name);
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                file.write_all(bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                file.sync_all()?;
            }
            let dest = self.dir.join(id);
            fs::rename(&tmp, &dest)
                .with_context(|| format!("moving the bundle into {}", dest.display()))?;
            Ok(dest)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Complete bundles, oldest first: (id, bytes).
    pub fn bundles(&self) -> Result<Vec<(String, u64)>> {
        list_bundles(&self.dir)
    }

    /// Deletes the oldest bundles beyond `max_count` or `max_bytes`; returns how many went.
    pub fn enforce_retention(&self, max_count: usize, max_bytes: u64) -> Result<usize> {
        let bundles = self.bundles()?;
        let keep = retain_newest(&bundles, max_count, max_bytes);
        let mut removed = 0;
        for (id, _) in &bundles[..bundles.len() - keep] {
            fs::remove_dir_all(self.dir.join(id))
                .with_context(|| format!("removing old incident {id}"))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// How many of the newest bundles (the list is oldest first) fit in both limits.
#[must_use]
pub fn retain_newest(bundles: &[(String, u64)], max_count: usize, max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    let mut keep = 0;
    for (_, size) in bundles.iter().rev() {
        if keep >= max_count || bytes + size > max_bytes {
            break;
        }
        bytes += size;
        keep += 1;
    }
    keep
}

/// Complete bundles in `dir`, oldest first (ids sort by time).
pub fn list_bundles(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            permission_denied(dir)
        } else {
            anyhow::Error::new(e).context(format!("reading incident directory {}", dir.display()))
        }
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let size: u64 = fs::read_dir(entry.path()).map_or(0, |files| {
            files
                .flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum()
        });
        out.push((name, size));
    }
    out.sort();
    Ok(out)
}

/// Reads a bundle's metadata. An id that names no bundle is a [`UsageError`]; a bundle this user
/// may not read is not (the error says which directory is in the way).
pub fn read_metadata(dir: &Path, id: &str) -> Result<Metadata> {
    let no_such = || {
        UsageError(format!(
            "no such incident: {id} in {} (`schedlat incidents list` shows the ids)",
            dir.display()
        ))
    };
    if id.contains('/') || id.starts_with('.') {
        return Err(no_such().into());
    }
    let path = dir.join(id).join("metadata.json");
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_such().into()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(permission_denied(&path));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes).with_context(|| format!("malformed {}", path.display()))
}

/// The error for an incident path this user may not read, naming the directory in the way,
/// its owner and mode, and what would be allowed to read it.
#[must_use]
pub fn permission_denied(path: &Path) -> anyhow::Error {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let what = match blocking_path(path) {
        Some((blocker, meta, verb)) => format!(
            "uid {euid} may not {verb} {} (owner uid {}, mode {:04o})",
            blocker.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ),
        None => format!("uid {euid} may not read it"),
    };
    anyhow::anyhow!(
        "permission denied reading {}: {what}. Incident bundles are private to the user the \
         agent runs as: run this command as root (e.g. with sudo), as that user, or with \
         CAP_DAC_READ_SEARCH",
        path.display()
    )
}

/// The first path on the way to `path` (itself included) that this user can find but may not
/// enter (a directory on the way), list (`path`, a directory) or read (`path`, a file), with
/// its metadata and what may not be done.
fn blocking_path(path: &Path) -> Option<(PathBuf, fs::Metadata, &'static str)> {
    let mut ancestors: Vec<&Path> = path.ancestors().collect();
    ancestors.reverse();
    ancestors.into_iter().find_map(|step| {
        let meta = fs::metadata(step).ok()?;
        let (wanted, verb) = match (step == path, meta.is_dir()) {
            (false, _) => (libc::X_OK, "enter"),
            (true, true) => (libc::R_OK | libc::X_OK, "list"),
            (true, false) => (libc::R_OK, "read"),
        };
        (!accessible(step, wanted)).then(|| (step.to_path_buf(), meta, verb))
    })
}

/// `faccessat(2)` with the effective ids, as opening the path would be checked.
fn accessible(path: &Path, mode: i32) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; faccessat only reads it.
    unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// An incident id: UTC time to the millisecond, reason and victim, sortable by time.
#[must_use]
pub fn incident_id(unix_ns: u64, reason: Reason, victim: &str) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    let clean: String = victim
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(32)
        .collect();
    format!(
        "{}.{ms:03}Z-{}-{clean}",
        utc_compact(secs),
        reason.name().replace('_', "-")
    )
}

/// `YYYYMMDDTHHMMSS` in UTC.
fn utc_compact(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_per_victim_and_global_rate_limit() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_mins(1), 3);
        assert_eq!(l.decide("a", t0), Decision::Capture);
        assert_eq!(
            l.decide("a", t0 + Duration::from_secs(59)),
            Decision::Cooldown
        );
        assert_eq!(
            l.decide("b", t0 + Duration::from_secs(1)),
            Decision::Capture
        );
        assert_eq!(
            l.decide("c", t0 + Duration::from_secs(2)),
            Decision::Capture
        );
        assert_eq!(
            l.decide("d", t0 + Duration::from_secs(3)),
            Decision::RateLimited,
            "the fourth incident within a minute"
        );
        // A minute after the first, both the cooldown of `a` and one rate slot are free.
        assert_eq!(
            l.decide("a", t0 + Duration::from_mins(1)),
            Decision::Capture
        );
        assert_eq!(
            l.decide("e", t0 + Duration::from_secs(61)),
            Decision::Capture,
            "b's slot expired at 61 s"
        );
    }

    #[test]
    fn a_storm_of_triggers_captures_at_most_the_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(10), 6);
        let captured = (0..10_000)
            .filter(|i| {
                l.decide(
                    &format!("victim{}", i % 500),
                    t0 + Duration::from_millis(*i),
                ) == Decision::Capture
            })
            .count();
        assert_eq!(captured, 6, "10 s of triggers from 500 victims");
        assert!(l.last_by_victim.len() <= 6);
    }

    #[test]
    fn retention_keeps_the_newest_within_count_and_bytes() {
        let b = |n: &str, s: u64| (n.to_owned(), s);
        let bundles = vec![b("1", 10), b("2", 10), b("3", 30), b("4", 10)];
        assert_eq!(retain_newest(&bundles, 10, 1000), 4);
        assert_eq!(retain_newest(&bundles, 2, 1000), 2);
        assert_eq!(
            retain_newest(&bundles, 10, 45),
            2,
            "4 and 3 fit in 45 bytes"
        );
        assert_eq!(retain_newest(&bundles, 10, 5), 0);
    }

    #[test]
    fn store_writes_atomically_privately_and_refuses_symlinks() {
        let base = std::env::temp_dir().join(format!("schedlat-inc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("incidents");
        // A leftover half bundle from a killed agent.
        fs::create_dir_all(dir.join(".tmp-old")).unwrap();
        let store = Store::open(&dir).unwrap();
        assert!(!dir.join(".tmp-old").exists(), "half bundle cleaned up");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let path = store
            .write(
                "20261125T000000.000Z-wait-x",
                &[("metadata.json", b"{}"), ("a.txt", b"hi")],
            )
            .unwrap();
        assert_eq!(
            fs::metadata(path.join("a.txt")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        assert!(store.write("../escape", &[]).is_err());
        assert!(store.write("x", &[("../../etc/passwd", b"")]).is_err());
        store
            .write("20261125T000001.000Z-wait-y", &[("f", &[0; 100])])
            .unwrap();
        assert_eq!(store.bundles().unwrap().len(), 2);
        assert_eq!(store.enforce_retention(1, 1 << 20).unwrap(), 1);
        assert_eq!(store.bundles().unwrap()[0].0, "20261125T000001.000Z-wait-y");

        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = Store::open(&link)
            .err()
            .expect("a symlink is refused")
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn existing_paths_are_classified_by_type_then_owner() {
        assert_eq!(classify_existing(false, true, 0, 0), None);
        assert_eq!(
            classify_existing(true, false, 0, 0),
            Some(DirReason::Symlink)
        );
        assert_eq!(
            classify_existing(false, false, 0, 0),
            Some(DirReason::NotADirectory)
        );
        assert_eq!(
            classify_existing(false, true, 1000, 0),
            Some(DirReason::WrongOwner)
        );
        let io = |errno| DirReason::of_io(&std::io::Error::from_raw_os_error(errno));
        assert_eq!(io(libc::EACCES), DirReason::PermissionDenied);
        assert_eq!(io(libc::EPERM), DirReason::PermissionDenied);
        assert_eq!(io(libc::EROFS), DirReason::ReadOnly);
        assert_eq!(io(libc::ENOTDIR), DirReason::NotADirectory);
        assert_eq!(io(libc::EIO), DirReason::Io);
    }

    #[test]
    fn check_dir_finds_every_bad_directory_and_changes_nothing() {
        let base = std::env::temp_dir().join(format!("schedlat-dircheck-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let reason = |dir: &Path| match check_dir(dir) {
            Err(e) => {
                assert_eq!(e.dir, dir, "the error names the directory");
                assert!(
                    e.to_string().contains(e.reason.name()),
                    "the message carries the reason: {e}"
                );
                Some(e.reason)
            }
            Ok(_) => None,
        };

        assert_eq!(
            check_dir(&base).unwrap(),
            DirStatus::Exists { mode: 0o755 },
            "an existing directory of ours is usable (opening it restricts it to 0700)"
        );
        let file = base.join("file");
        fs::write(&file, b"").unwrap();
        assert_eq!(reason(&file), Some(DirReason::NotADirectory));
        assert_eq!(
            reason(&file.join("below/incidents")),
            Some(DirReason::NotADirectory),
            "a parent that is a file"
        );
        let link = base.join("link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        assert_eq!(reason(&link), Some(DirReason::Symlink));
        assert_eq!(
            reason(Path::new("relative/incidents")),
            Some(DirReason::NotAbsolute)
        );

        let missing = base.join("a/b/incidents");
        assert_eq!(
            check_dir(&missing).unwrap(),
            DirStatus::Missing {
                parent: base.clone()
            },
            "missing parents are created with it"
        );
        assert!(!base.join("a").exists(), "check_dir created nothing");

        // Another owner: as root, a directory given to nobody; otherwise root's /.
        // SAFETY: geteuid has no preconditions.
        let other = if unsafe { libc::geteuid() } == 0 {
            let dir = base.join("nobody");
            fs::create_dir(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            dir
        } else {
            PathBuf::from("/")
        };
        assert_eq!(reason(&other), Some(DirReason::WrongOwner));
        let store = Store::open(&missing).expect("a missing directory is created");
        assert_eq!(fs::metadata(&store.dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            Store::open(&file).err().map(|e| e.reason),
            Some(DirReason::NotADirectory)
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn ids_and_times_are_utc_and_sortable() {
        // 2026-11-25T22:24:33.123Z
        let ns = 1_795_645_473_123_000_000;
        assert_eq!(rfc3339(ns), "2026-11-25T22:24:33.123Z");
        assert_eq!(
            incident_id(ns, Reason::WindowP99, "feed svc/1"),
            "20261125T222433.123Z-window-p99-feed-svc-1"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }
}
