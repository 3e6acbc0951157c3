//! Where the cgroup2 file system is mounted.
//!
//! `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones, anything at all
//! in a container or a test machine; so it is read from `/proc/self/mountinfo` rather than
//! assumed.

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, path::PathBuf};

/// The cgroup2 mount point of this process's mount namespace; `None` when no cgroup2 file
/// system is mounted or mountinfo cannot be read.
///
/// Read as bytes: a mount point elsewhere on the machine whose name is not UTF-8 must not hide
/// the cgroup2 mount, and the cgroup2 mount point itself need not be UTF-8.
#[must_use]
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read("/proc/self/mountinfo").ok()?;
    cgroup2_mount_in(&mountinfo)
}

/// The first cgroup2 mount point in a mountinfo text.
///
/// A line is (proc(5), `Documentation/filesystems/proc.rst`, "/proc/<pid>/mountinfo"):
///
/// ```text
/// 36 35 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
/// (1)(2) (3) (4)    (5)          (6)      (7)    (8)  (9)    (10)     (11)
/// ```
///
/// Fields are separated by single spaces; (7) is zero or more optional fields ended by the
/// lone `-` (8), after which (9) is the file system type. The mount point (5) is written with
/// space, tab, newline and backslash as `\ooo` octal escapes (`mangle_path` in
/// `fs/seq_file.c`), so no field contains a literal space.
#[must_use]
pub fn cgroup2_mount_in(mountinfo: &[u8]) -> Option<PathBuf> {
    mount_point_in(mountinfo, |fstype, _| fstype == b"cgroup2")
}

/// The mount point of the cgroup v1 hierarchy holding `controller` (`cpu` matches `cpu` and
/// `cpu,cpuacct`, not `cpuacct` alone); `None` when there is none.
#[must_use]
pub fn cgroup_v1_mount(controller: &str) -> Option<PathBuf> {
    let mountinfo = std::fs::read("/proc/self/mountinfo").ok()?;
    cgroup_v1_mount_in(&mountinfo, controller)
}

/// [`cgroup_v1_mount`] in a mountinfo text.
#[must_use]
pub fn cgroup_v1_mount_in(mountinfo: &[u8], controller: &str) -> Option<PathBuf> {
    mount_point_in(mountinfo, |fstype, super_options| {
        fstype == b"cgroup"
            && super_options
                .split(|&b| b == b',')
                .any(|o| o == controller.as_bytes())
    })
}

/// The first mount point whose file system type (9) and super options (11) `matches`.
fn mount_point_in(mountinfo: &[u8], matches: impl Fn(&[u8], &[u8]) -> bool) -> Option<PathBuf> {
    mountinfo.split(|&b| b == b'\n').find_map(|line| {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let mount_point = fields.get(4)?;
        // The separator comes after the six mandatory fields.
        let separator = 6 + fields.get(6..)?.iter().position(|f| *f == b"-")?;
        let fstype = fields.get(separator + 1)?;
        let super_options = fields.get(separator + 3).copied().unwrap_or_default();
        matches(fstype, super_options)
            .then(|| PathBuf::from(OsString::from_vec(unescape_octal(mount_point))))
    })
}

/// Undoes mountinfo's `\ooo` escapes (three octal digits, one byte); anything else is kept as
/// it is.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(code) = field.get(i + 1..i + 4).and_then(octal_byte)
        {
            out.push(code);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// Three octal digits as one byte; `None` for anything else, including values above `\377`.
fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |value, &digit| {
        if !(b'0'..=b'7').contains(&digit) {
            return None;
        }
        value.checked_mul(8)?.checked_add(digit - b'0')
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    #[test]
    fn finds_the_mount_on_unified_and_hybrid_hosts() {
        let unified = b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
            36 25 0:30 / /sys/fs/cgroup rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_in(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let hybrid = b"33 25 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
            34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
            35 33 0:30 / /sys/fs/cgroup/cpu rw,nosuid shared:11 - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn none_without_a_cgroup2_mount() {
        assert_eq!(
            cgroup2_mount_in(b"22 1 0:21 / /proc rw - proc proc rw\n"),
            None
        );
        // v1 only: the type is `cgroup`, not `cgroup2`.
        assert_eq!(
            cgroup2_mount_in(b"35 33 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            None
        );
        assert_eq!(cgroup2_mount_in(b""), None);
        // A truncated line has no separator: skipped, not misread.
        assert_eq!(cgroup2_mount_in(b"36 25 0:30 / /x rw cgroup2\n"), None);
    }

    #[test]
    fn unescapes_octal_in_the_mount_point() {
        let spaced = b"26 25 0:23 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(spaced),
            Some(PathBuf::from("/mnt/with space"))
        );
        let all = b"26 25 0:23 / /a\\011b\\012c\\134d rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_in(all), Some(PathBuf::from("/a\tb\nc\\d")));
    }

    #[test]
    fn keeps_bytes_that_are_not_utf8() {
        // A latin-1 mount elsewhere and a non-UTF-8 cgroup2 mount point.
        let text = b"20 1 0:5 / /mnt/caf\xe9 rw - ext4 /dev/sda1 rw\n\
            26 25 0:23 / /mnt/cg\xff\\040x rw - cgroup2 cgroup2 rw\n";
        let mount = cgroup2_mount_in(text).expect("the cgroup2 mount is found");
        assert_eq!(mount.as_os_str().as_bytes(), b"/mnt/cg\xff x");
    }

    #[test]
    fn optional_fields_before_the_separator() {
        let text = b"36 25 0:30 / /cg rw shared:9 master:2 propagate_from:1 - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount_in(text), Some(PathBuf::from("/cg")));
    }

    #[test]
    fn unescape_leaves_what_is_not_an_escape() {
        assert_eq!(unescape_octal(b"a\\b"), b"a\\b");
        assert_eq!(unescape_octal(b"trailing\\04"), b"trailing\\04");
        assert_eq!(unescape_octal(b"\\400"), b"\\400", "above one byte");
        assert_eq!(unescape_octal(b"\\08x"), b"\\08x", "8 is not octal");
        assert_eq!(unescape_octal(b"\\0401"), b" 1");
    }

    #[test]
    fn this_machine_answers_without_panicking() {
        // Whatever the machine has: a cgroup2 mount is an existing directory.
        if let Some(mount) = cgroup2_mount() {
            assert!(mount.is_dir(), "{} is not a directory", mount.display());
        }
    }

    #[test]
    fn finds_the_v1_hierarchy_of_a_controller() {
        let mountinfo = b"31 25 0:27 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n\
32 25 0:28 / /sys/fs/cgroup/cpu\\040x rw shared:1 - cgroup cgroup rw,cpu\n\
33 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_v1_mount_in(mountinfo, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu x"))
        );
        assert_eq!(
            cgroup_v1_mount_in(mountinfo, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(cgroup_v1_mount_in(mountinfo, "memory"), None);
        assert_eq!(
            cgroup2_mount_in(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }
}
