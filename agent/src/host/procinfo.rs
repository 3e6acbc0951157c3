//! What /proc says about tasks: existence, thread group, name, the kernel's run-delay total.
//!
//! Files that hold a task name (`status`, `stat`, `comm`) are read as bytes: a name need not be
//! UTF-8 (see `names`), and one odd name must not make a task invisible or abort a command.

use std::{fs, io, path::Path};

use anyhow::{Context as _, Result};

use crate::host::names;

/// A task (thread or process) as /proc sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub tid: u32,
    pub tgid: u32,
    /// The name, escaped (`names::escape_bytes`).
    pub comm: String,
}

/// Value of a `Key:\tvalue` line in a /proc status file.
#[must_use]
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Looks a task id up under /proc (thread ids resolve too). `Ok(None)` when it does not exist.
pub fn task_info_in(proc_root: &Path, tid: u32) -> Result<Option<TaskInfo>> {
    let path = proc_root.join(tid.to_string()).join("status");
    let status = match fs::read(&path) {
        Ok(status) => status,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ESRCH shows up when the task exits between the lookup and the read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let tgid = status_field(&String::from_utf8_lossy(&status), "Tgid")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Tgid in {}", path.display()))?;
    let comm = names::from_status(&status).unwrap_or_default();
    Ok(Some(TaskInfo { tid, tgid, comm }))
}

pub fn task_info(tid: u32) -> Result<Option<TaskInfo>> {
    task_info_in(Path::new("/proc"), tid)
}

/// Current name of a thread (escaped), if it still exists.
#[must_use]
pub fn thread_comm(tgid: u32, tid: u32) -> Option<String> {
    fs::read(format!("/proc/{tgid}/task/{tid}/comm"))
        .ok()
        .map(|comm| names::from_comm_file(&comm))
}

/// Name of a process (its main thread's comm, escaped), if it still exists.
#[must_use]
pub fn process_comm(tgid: u32) -> Option<String> {
    fs::read(format!("/proc/{tgid}/comm"))
        .ok()
        .map(|comm| names::from_comm_file(&comm))
}

/// A process's cgroup v2 path (the `0::` line of `/proc/<pid>/cgroup`), escaped as the cgroup
/// resolver escapes the paths it finds, so the two match.
#[must_use]
pub fn cgroup_v2_path(tgid: u32) -> Option<String> {
    fs::read(format!("/proc/{tgid}/cgroup"))
        .ok()?
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"0::").map(names::escape_bytes))
}

/// Whether a process still exists.
#[must_use]
pub fn process_exists(tgid: u32) -> bool {
    Path::new(&format!("/proc/{tgid}")).exists()
}

/// `PF_KTHREAD` (include/linux/sched.h), as wide as the flags field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = agent_common::PF_KTHREAD as u64;

/// Task flags (field 9) from a `/proc/<pid>/stat` text.
#[must_use]
pub fn stat_flags(stat: &str) -> Option<u64> {
    // The comm (field 2) may contain spaces and parentheses: fields start after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(6)?
        .parse()
        .ok()
}

/// Whether `tgid` is a kernel thread (`false` when it cannot be told, e.g. it exited).
#[must_use]
pub fn is_kernel_thread(tgid: u32) -> bool {
    fs::read(format!("/proc/{tgid}/stat"))
        .ok()
        .and_then(|stat| stat_flags(&String::from_utf8_lossy(&stat)))
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

#[cfg(test)]
mod stat_tests {
    use super::*;

    #[test]
    fn flags_after_a_comm_with_spaces_and_parens() {
        let stat = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0";
        assert_eq!(stat_flags(stat), Some(2_129_984));
        assert!(stat_flags(stat).unwrap() & PF_KTHREAD != 0);
        let stat = "77 (my (odd) name) R 1 77 77 0 -1 4194560 12 0";
        assert_eq!(stat_flags(stat), Some(4_194_560));
        assert_eq!(stat_flags("garbage"), None);
    }

    #[test]
    fn this_process_is_not_a_kernel_thread_and_kthreadd_is() {
        assert!(!is_kernel_thread(std::process::id()));
        assert!(process_exists(std::process::id()));
        if Path::new("/proc/2/stat").exists() && process_comm(2).as_deref() == Some("kthreadd") {
            assert!(is_kernel_thread(2));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn reads_status_fields() {
        let status =
            "Name:\tmy worker\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1234\nPid:\t1240\n";
        assert_eq!(status_field(status, "Name"), Some("my worker"));
        assert_eq!(status_field(status, "Tgid"), Some("1234"));
        assert_eq!(status_field(status, "Nope"), None);
    }

    #[test]
    fn fake_proc_tree() {
        let dir = std::env::temp_dir().join(format!("schedlat-proc-{}", std::process::id()));
        let task = dir.join("77");
        fs::create_dir_all(&task).expect("mkdir");
        fs::write(task.join("status"), "Name:\tworker\nTgid:\t70\nPid:\t77\n").expect("write");
        let info = task_info_in(&dir, 77).expect("read").expect("exists");
        assert_eq!(
            info,
            TaskInfo {
                tid: 77,
                tgid: 70,
                comm: "worker".into()
            }
        );
        assert_eq!(task_info_in(&dir, 78).expect("read"), None);
        // Any user can give a task such a name (prctl PR_SET_NAME): it reads, escaped.
        let odd = dir.join("79");
        fs::create_dir_all(&odd).expect("mkdir");
        fs::write(
            odd.join("status"),
            b"Name:\tbad\xff\x1b[31m\nTgid:\t70\nPid:\t79\n",
        )
        .expect("write");
        let info = task_info_in(&dir, 79)
            .expect("a non-UTF-8 name reads")
            .expect("exists");
        assert_eq!((info.tgid, info.comm.as_str()), (70, "bad\\xff\\x1b[31m"));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn own_process_is_found() {
        let me = task_info(std::process::id())
            .expect("read")
            .expect("self exists");
        assert_eq!(me.tgid, std::process::id());
    }

    /// Names this thread with bytes that are not UTF-8, runs `check`, restores the name.
    pub(crate) fn with_odd_thread_name(check: impl FnOnce(u32)) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let old = fs::read(format!("/proc/self/task/{tid}/comm")).expect("own comm");
        let set = |name: &[u8]| {
            let mut name = name.to_vec();
            name.push(0);
            // SAFETY: PR_SET_NAME reads a NUL-terminated string.
            let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            assert_eq!(rc, 0, "prctl: {}", io::Error::last_os_error());
        };
        set(b"odd\xff\n\x1b[1m");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(tid)));
        set(old.strip_suffix(b"\n").unwrap_or(&old));
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn a_live_thread_with_an_odd_name_reads_escaped() {
        with_odd_thread_name(|tid| {
            let me = std::process::id();
            let escaped = "odd\\xff\\x0a\\x1b[1m";
            assert_eq!(thread_comm(me, tid).as_deref(), Some(escaped));
            let info = task_info(tid).expect("reads").expect("exists");
            assert_eq!((info.tgid, info.comm.as_str()), (me, escaped));
            let stat = fs::read(format!("/proc/{me}/task/{tid}/stat")).expect("stat");
            assert!(stat_flags(&String::from_utf8_lossy(&stat)).is_some());
        });
    }
}
