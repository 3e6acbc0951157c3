//! Reading a whole BPF hash map with `BPF_MAP_LOOKUP_BATCH` (bpf(2) command 24): a few
//! syscalls per thousand entries instead of two per entry (`get_next_key` + `lookup`, which
//! is how aya iterates a map). The daemon reads `PROC_WAITS` and `PROC_INFO` every `refresh`
//! with it (measured on 3000 processes: see `kernel::daemon_maps`).
//!
//! Hash maps support batch operations since Linux 5.6 (commit 057996380a42, "bpf: Add batch
//! ops to all htab bpf map"); older kernels answer `EINVAL` (unknown command) and some map
//! types `ENOTSUPP` (524, a kernel-internal errno that leaks to user space): the caller then
//! falls back to iterating key by key.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Pod, maps::MapData};

/// bpf(2) command `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's `ENOTSUPP` (include/linux/errno.h): not in libc, returned to user space anyway.
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h). The kernel zero-fills the
/// rest of the union when given a shorter size.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// Whether the kernel did the batch lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Every entry was visited.
    Read,
    /// The kernel does not support batch lookups on this map: nothing was visited.
    Unsupported,
}

/// Reusable key and value buffers of `chunk` entries.
pub struct Buffers<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
}

impl<K: Pod + Default, V: Pod + Default> Buffers<K, V> {
    /// Room for `chunk` entries per syscall (at least 1).
    #[must_use]
    pub fn new(chunk: usize) -> Self {
        let chunk = chunk.max(1);
        Self {
            keys: vec![K::default(); chunk],
            values: vec![V::default(); chunk],
        }
    }
}

/// Visits every entry of the hash map `map` (keys `K`, values `V`, not per-CPU), `chunk`
/// entries per syscall. Entries added or deleted meanwhile may or may not be visited; each
/// entry visited is a consistent copy (the kernel copies a bucket under its lock).
///
/// # Errors
/// Any error of the syscall but `ENOENT` (the end of the map) and, on the first call, the
/// errors that say the kernel has no batch lookup (`Batch::Unsupported`).
pub fn lookup_all<K: Pod + Default, V: Pod + Default>(
    map: &MapData,
    buffers: &mut Buffers<K, V>,
    mut visit: impl FnMut(K, &V),
) -> io::Result<Batch> {
    // An open fd is never negative.
    let fd = u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX);
    // The hash map's batch token is a bucket index (u32).
    let mut token: u32 = 0;
    let mut first = true;
    loop {
        let mut next_token: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&token) as u64
            },
            out_batch: std::ptr::from_mut(&mut next_token) as u64,
            keys: buffers.keys.as_mut_ptr() as u64,
            values: buffers.values.as_mut_ptr() as u64,
            count: u32::try_from(buffers.keys.len()).unwrap_or(u32::MAX),
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` of the size passed; `keys` and `values`
        // point to `count` initialized `K` and `V` (both `Pod`, so any bytes the kernel writes
        // are valid values of them), `in_batch`/`out_batch` to u32 tokens that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let errno = err.as_ref().and_then(io::Error::raw_os_error);
        if first
            && matches!(errno, Some(e) if e == libc::EINVAL || e == libc::EOPNOTSUPP || e == ENOTSUPP)
        {
            return Ok(Batch::Unsupported);
        }
        if let Some(err) = err
            && errno != Some(libc::ENOENT)
        {
            // ENOSPC: one bucket holds more entries than a chunk (not with chunks of hundreds).
            return Err(err);
        }
        let filled = (attr.count as usize).min(buffers.keys.len());
        for (key, value) in buffers.keys[..filled].iter().zip(&buffers.values[..filled]) {
            visit(*key, value);
        }
        if errno == Some(libc::ENOENT) {
            return Ok(Batch::Read);
        }
        token = next_token;
        first = false;
    }
}
