//! Capability checks, so a missing privilege is reported by name before the kernel says EPERM.

use anyhow::{Result, bail};

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Effective capability set from a `/proc/<pid>/status` text.
#[must_use]
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Names of what is missing to load and attach tracing programs, empty when nothing is.
#[must_use]
pub fn missing_for_tracing(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Fails with the missing capabilities named when this process cannot load tracing programs.
pub fn require_bpf() -> Result<()> {
    // Bytes: this binary may have been started under a name that is not UTF-8.
    let status = std::fs::read("/proc/self/status").unwrap_or_default();
    let status = String::from_utf8_lossy(&status);
    let Some(caps) = effective_caps(&status) else {
        // Cannot tell; let the kernel decide and report its error.
        return Ok(());
    };
    let missing = missing_for_tracing(caps);
    if !missing.is_empty() {
        bail!(
            "insufficient privileges: loading scheduler tracepoint programs needs {} \
             (run as root, or grant CAP_BPF and CAP_PERFMON, e.g. `setcap cap_bpf,cap_perfmon+ep`)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Drops every capability (effective, permitted, inheritable, bounding, ambient) except
/// `keep`, and sets `no_new_privs`. Called once the programs are attached: reading maps and the
/// ring buffer through the fds already held needs no capability.
pub fn drop_capabilities(keep: &[u32]) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mask: u64 = keep.iter().fold(0, |m, &cap| m | (1u64 << cap));
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    for cap in 0..64u32 {
        if mask & (1 << cap) == 0 {
            // SAFETY: as above; EINVAL for capabilities this kernel does not know is fine.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = mask as u32;
    let high = (mask >> 32) as u32;
    let data = [
        Data {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        Data {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) reads a valid v3 header and two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        bail!("dropping capabilities: {}", std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        bail!("setting no_new_privs: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capeff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn names_missing_capabilities() {
        assert!(missing_for_tracing(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing_for_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing_for_tracing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert_eq!(missing_for_tracing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
    }
}
