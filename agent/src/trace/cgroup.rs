//! `schedlat trace --cgroup`: the processes a cgroup and its descendants hold.
//!
//! The kernel filters by tgid (the same in-kernel filter as `--pid`); the trace loop reads the
//! members from `cgroup.procs` (v1 and v2 write the same format) and refreshes the filter.

use std::{
    collections::BTreeSet,
    io,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::UsageError;

/// The cgroup directory `--cgroup ARG` names on this machine (see `resolve_dir`).
pub fn resolve(arg: &str) -> Result<PathBuf> {
    let mount = std::fs::read("/proc/self/mountinfo")
        .ok()
        .and_then(|m| crate::host::cgroups::cgroup2_mount(&String::from_utf8_lossy(&m)));
    resolve_dir(arg, mount.as_deref())
}

/// The cgroup directory `--cgroup ARG` names: an existing cgroup directory given by absolute
/// path (any hierarchy, e.g. `/sys/fs/cgroup/cpu/x`), or a path under the cgroup2 mount (as
/// `/proc/PID/cgroup` shows it, e.g. `/system.slice/x.service`). Anything else is a usage error.
pub fn resolve_dir(arg: &str, cgroup2_mount: Option<&Path>) -> Result<PathBuf> {
    let given = Path::new(arg);
    if given.is_absolute() && given.join("cgroup.procs").is_file() {
        return Ok(given.to_path_buf());
    }
    if let Some(mount) = cgroup2_mount {
        let under = mount.join(arg.trim_start_matches('/'));
        if under.join("cgroup.procs").is_file() {
            return Ok(under);
        }
    }
    Err(UsageError(format!(
        "no such cgroup: {arg} (neither a cgroup directory with a cgroup.procs file nor a path \
         under the cgroup2 mount{})",
        cgroup2_mount.map_or_else(
            || " (none found in /proc/self/mountinfo)".to_owned(),
            |m| format!(" {}", m.display())
        )
    ))
    .into())
}

/// The processes (tgids) in `dir` and every cgroup below it. An unreadable `dir` is an error;
/// a child cgroup removed during the walk is skipped.
pub fn member_tgids(dir: &Path) -> io::Result<BTreeSet<u32>> {
    let mut tgids = BTreeSet::new();
    read_procs(dir, &mut tgids)?;
    let mut pending = child_dirs(dir)?;
    while let Some(child) = pending.pop() {
        match read_procs(&child, &mut tgids).and_then(|()| child_dirs(&child)) {
            Ok(grandchildren) => pending.extend(grandchildren),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(tgids)
}

fn read_procs(dir: &Path, tgids: &mut BTreeSet<u32>) -> io::Result<()> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    tgids.extend(
        text.lines()
            .filter_map(|line| line.trim().parse::<u32>().ok()),
    );
    Ok(())
}

fn child_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Cgroup directories are real directories; symlinks would allow loops.
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fake_tree(tag: &str) -> Scratch {
        let root = Scratch(
            std::env::temp_dir().join(format!("schedlat-cgroup-{tag}-{}", std::process::id())),
        );
        let write = |rel: &str, procs: &str| {
            let dir = root.path().join(rel);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("cgroup.procs"), procs).expect("write");
        };
        write("", "1\n");
        write("app", "10\n11\n");
        write("app/worker", "12\n");
        write("app/worker/deep", "");
        write("other", "20\n");
        root
    }

    #[test]
    fn members_include_descendants_only() {
        let root = fake_tree("members");
        let app = member_tgids(&root.path().join("app")).expect("read");
        assert_eq!(app, BTreeSet::from([10, 11, 12]));
        let all = member_tgids(root.path()).expect("read");
        assert_eq!(all, BTreeSet::from([1, 10, 11, 12, 20]));
        let err = member_tgids(&root.path().join("gone")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn resolves_absolute_and_mount_relative_paths() {
        let root = fake_tree("resolve");
        let app = root.path().join("app");
        let absolute = resolve_dir(app.to_str().expect("utf-8"), None).expect("absolute");
        assert_eq!(absolute, app);
        for arg in ["/app/worker", "app/worker"] {
            let under = resolve_dir(arg, Some(root.path())).expect("under the mount");
            assert_eq!(under, root.path().join("app/worker"), "{arg}");
        }
        let err = resolve_dir("/nope", Some(root.path())).expect_err("unknown");
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
        assert!(err.to_string().contains("no such cgroup: /nope"), "{err}");
        // A directory that is not a cgroup (no cgroup.procs) is refused too.
        let err = resolve_dir("/tmp", None).expect_err("not a cgroup");
        assert!(err.to_string().contains("none found"), "{err}");
    }
}
