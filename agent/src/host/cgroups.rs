//! cgroup v2 ids to paths and to the names SREs know them by (units, containers, pods).
//!
//! The kernel side records `bpf_get_current_cgroup_id()`: the cgroup v2 id, which is the inode
//! number of the cgroup's directory in the cgroup2 file system. User space maps ids to paths by
//! walking that file system (found in mountinfo: `/sys/fs/cgroup` on unified hosts,
//! `/sys/fs/cgroup/unified` on hybrid ones) and derives a display name from the path.

use std::{
    collections::HashMap,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use log::debug;

/// Root cgroup's path.
pub const ROOT: &str = "/";
/// What a cgroup id that could not be resolved to a path is shown as: `cgroup:<id>`.
pub const UNRESOLVED_PREFIX: &str = "cgroup:";

/// Where the cgroup2 file system is mounted, from a mountinfo text.
#[must_use]
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    // 36 35 0:30 / /sys/fs/cgroup rw,nosuid,... shared:9 - cgroup2 cgroup2 rw,...
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(code) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(char::from(code));
            i += 4;
            continue;
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// A short, stable name for a cgroup path: the systemd unit, or the container runtime and the
/// first 12 hex digits of the container id, or the Kubernetes pod uid and container; else the
/// path itself.
#[must_use]
pub fn display_name(path: &str) -> String {
    if path == ROOT || path.is_empty() {
        return ROOT.to_owned();
    }
    // `CgroupResolver::path` of a cgroup it could not find: keep the id readable.
    if path.starts_with(UNRESOLVED_PREFIX) {
        return path.to_owned();
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let leaf = parts.last().copied().unwrap_or_default();

    // Kubernetes (systemd or cgroupfs driver): .../kubepods[-qos]-pod<uid>.slice/<runtime>-<id>.scope
    // or .../kubepods/<qos>/pod<uid>/<id>.
    let under_kubepods = parts.first().is_some_and(|p| p.starts_with("kubepods"));
    let pod = parts.iter().filter(|_| under_kubepods).find_map(|p| {
        let p = p.strip_suffix(".slice").unwrap_or(p);
        let uid = p
            .rsplit_once("-pod")
            .map(|(_, uid)| uid)
            .or_else(|| p.strip_prefix("pod"))?;
        let uid_like = uid.len() >= 8
            && uid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
        uid_like.then(|| uid.replace('_', "-"))
    });
    if let Some(pod) = pod {
        let container = container_id(leaf).map(|(_, id)| id);
        return match container {
            Some(id) if !leaf.contains("pod") => format!("pod:{pod}/{}", short(&id)),
            _ => format!("pod:{pod}"),
        };
    }
    if let Some((runtime, id)) = container_id(leaf) {
        return format!("{runtime}:{}", short(&id));
    }
    // systemd unit names are case-sensitive: `.Service` is not a service.
    let is_unit = [".service", ".scope", ".slice"]
        .iter()
        .any(|suffix| leaf.len() > suffix.len() && leaf.ends_with(suffix));
    if is_unit {
        return leaf.to_owned();
    }
    format!("/{}", parts.join("/"))
}

/// The label metrics use for a cgroup path: its display name, or the path itself when names
/// are not derived (`labels.cgroup_names = false`).
#[must_use]
pub fn label(path: &str, derive_names: bool) -> String {
    if derive_names {
        display_name(path)
    } else {
        path.to_owned()
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `docker-<64 hex>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, or a bare 64-hex directory (cgroupfs driver).
fn container_id(leaf: &str) -> Option<(&'static str, String)> {
    let is_id = |s: &str| s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let stem = leaf.strip_suffix(".scope").unwrap_or(leaf);
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "crio"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = stem.strip_prefix(prefix)
            && is_id(id)
        {
            return Some((runtime, id.to_owned()));
        }
    }
    is_id(stem).then(|| ("container", stem.to_owned()))
}

/// Resolves cgroup ids to paths, re-walking the hierarchy (at most once per `min_rescan`)
/// when an unknown id shows up.
pub struct CgroupResolver {
    mount: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl CgroupResolver {
    #[must_use]
    pub fn new() -> Self {
        // Bytes: any mount point on the machine may have a name that is not UTF-8, and that
        // must not hide the cgroup2 mount.
        let mount = std::fs::read("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_mount(&String::from_utf8_lossy(&m)));
        if mount.is_none() {
            log::warn!("no cgroup2 file system mounted: cgroups are shown by id");
        }
        Self::with_mount(mount)
    }

    #[must_use]
    pub fn with_mount(mount: Option<PathBuf>) -> Self {
        Self {
            mount,
            paths: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_secs(1),
        }
    }

    /// The cgroup v2 id of a task's cgroup (the inode of its directory), if it still exists.
    #[must_use]
    pub fn id_of_task(&self, tid: u32) -> Option<u64> {
        use std::os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _};
        let mount = self.mount.as_ref()?;
        let cgroup = std::fs::read(format!("/proc/{tid}/cgroup")).ok()?;
        let path = cgroup
            .split(|&b| b == b'\n')
            .find_map(|line| line.strip_prefix(b"0::"))?;
        let relative = path.strip_prefix(b"/").unwrap_or(path);
        let dir = mount.join(std::ffi::OsStr::from_bytes(relative));
        std::fs::metadata(dir).ok().map(|m| m.ino())
    }

    /// The cgroup's path relative to the cgroup2 root ("/" for the root), or `cgroup:<id>`
    /// when it cannot be found (removed since, or no cgroup2 mount).
    pub fn path(&mut self, id: u64) -> String {
        if let Some(path) = self.paths.get(&id) {
            return path.clone();
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan);
        if due {
            self.rescan();
        }
        self.paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("{UNRESOLVED_PREFIX}{id}"))
    }

    /// Walks the hierarchy now (e.g. before attaching programs, so the walk is not what they
    /// see first).
    pub fn warm(&mut self) {
        self.rescan();
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(mount) = self.mount.clone() else {
            return;
        };
        let mut found = HashMap::new();
        let mut stack = vec![mount.clone()];
        // Bounded: a node with more cgroups than this is misconfigured, not worth a stall.
        let mut budget = 100_000;
        while let Some(dir) = stack.pop() {
            budget -= 1;
            if budget == 0 {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            let rel = relative(&mount, &dir);
            found.insert(meta.ino(), rel);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        debug!(
            "cgroup scan: {} cgroups under {}",
            found.len(),
            mount.display()
        );
        self.paths = found;
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// The path of `dir` under the mount, escaped like process names (`names::escape_bytes`): a
/// cgroup's directory name is bytes too, and it becomes a label value.
fn relative(mount: &Path, dir: &Path) -> String {
    match dir.strip_prefix(mount) {
        Ok(rel) if rel.as_os_str().is_empty() => ROOT.to_owned(),
        Ok(rel) => format!(
            "/{}",
            crate::host::names::escape_bytes(rel.as_os_str().as_bytes())
        ),
        Err(_) => crate::host::names::escape_bytes(dir.as_os_str().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount_on_unified_and_hybrid_hosts() {
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro shared:4 - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw shared:5 - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/cpu rw shared:6 - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("22 1 0:21 / /proc rw - proc proc rw\n"), None);
        assert_eq!(
            cgroup2_mount("26 25 0:23 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"),
            Some(PathBuf::from("/mnt/with space"))
        );
    }

    #[test]
    fn names_units_containers_and_pods() {
        let id = "3f2a9c0d1e2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4";
        for (path, name) in [
            ("/", "/"),
            ("cgroup:4242", "cgroup:4242"),
            ("/system.slice/nginx.service", "nginx.service"),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                "session-3.scope",
            ),
            (
                &format!("/system.slice/docker-{id}.scope"),
                "docker:3f2a9c0d1e2b",
            ),
            (&format!("/docker/{id}"), "container:3f2a9c0d1e2b"),
            (
                &format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ef_1234_567890abcdef.slice/cri-containerd-{id}.scope"
                ),
                "pod:1234abcd-5678-90ef-1234-567890abcdef/3f2a9c0d1e2b",
            ),
            (
                "/kubepods/besteffort/pod1234abcd-5678-90ef-1234-567890abcdef",
                "pod:1234abcd-5678-90ef-1234-567890abcdef",
            ),
            ("/schedlat-demo/feed", "/schedlat-demo/feed"),
        ] {
            assert_eq!(display_name(path), name, "{path}");
        }
    }

    #[test]
    fn resolves_ids_by_walking_a_tree() {
        let dir = std::env::temp_dir().join(format!("schedlat-cg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let ino = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        let root_ino = std::fs::metadata(&dir).unwrap().ino();
        let mut r = CgroupResolver::with_mount(Some(dir.clone()));
        assert_eq!(r.path(ino), "/a/b");
        assert_eq!(r.path(root_ino), "/");
        assert_eq!(r.path(u64::MAX), format!("cgroup:{}", u64::MAX));
        // A directory name is bytes: escaped like a process name.
        let odd = dir
            .join("a")
            .join(std::ffi::OsStr::from_bytes(b"x\xff\x1b[1m"));
        std::fs::create_dir(&odd).unwrap();
        let odd_ino = std::fs::metadata(&odd).unwrap().ino();
        r.min_rescan = Duration::ZERO;
        assert_eq!(r.path(odd_ino), "/a/x\\xff\\x1b[1m");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
