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

/// Whether batch lookups may be tried: `Some(false)` when `SCHEDLAT_MAP_BATCH=0` forces the
/// key-by-key reads of kernels before 5.6 (to test and measure that path on a kernel that
/// has batch lookups), else `None` (not known yet: the first lookup tells).
#[must_use]
pub fn allowed() -> Option<bool> {
    std::env::var_os("SCHEDLAT_MAP_BATCH")
        .is_some_and(|v| v == "0")
        .then_some(false)
}

/// Whether the kernel did the batch lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    let chunk = buffers.keys.len();
    let mut cursor = Cursor::default();
    loop {
        // SAFETY: `keys` and `values` hold `chunk` initialized `K` and `V` (both `Pod`, so any
        // bytes the kernel writes are valid values of them).
        let filled = unsafe {
            cursor.next(
                map,
                buffers.keys.as_mut_ptr().cast(),
                buffers.values.as_mut_ptr().cast(),
                chunk,
            )?
        };
        match filled {
            Step::Unsupported => return Ok(Batch::Unsupported),
            Step::Chunk(filled, more) => {
                for (key, value) in buffers.keys[..filled].iter().zip(&buffers.values[..filled]) {
                    visit(*key, value);
                }
                if !more {
                    return Ok(Batch::Read);
                }
            }
        }
    }
}

/// Key and value buffers of a per-CPU hash map with `u64` values: `chunk` keys, `chunk ×
/// cpus` values.
pub struct PerCpuBuffers<K> {
    keys: Vec<K>,
    values: Vec<u64>,
    cpus: usize,
}

impl<K: Pod + Default> PerCpuBuffers<K> {
    /// Room for `chunk` entries per syscall (at least 1) of a map on `cpus` possible CPUs.
    #[must_use]
    pub fn new(chunk: usize, cpus: usize) -> Self {
        let chunk = chunk.max(1);
        let cpus = cpus.max(1);
        Self {
            keys: vec![K::default(); chunk],
            values: vec![0; chunk * cpus],
            cpus,
        }
    }
}

/// `lookup_all` for a per-CPU hash map with `u64` values: `visit` gets each key with its
/// value on every possible CPU (the kernel lays values out per possible CPU, each rounded up
/// to 8 bytes: a `u64` needs no padding).
///
/// # Errors
/// As `lookup_all`.
pub fn lookup_all_per_cpu<K: Pod + Default>(
    map: &MapData,
    buffers: &mut PerCpuBuffers<K>,
    mut visit: impl FnMut(K, &[u64]),
) -> io::Result<Batch> {
    let chunk = buffers.keys.len();
    let cpus = buffers.cpus;
    let mut cursor = Cursor::default();
    loop {
        // SAFETY: `keys` holds `chunk` initialized `K` (`Pod`), `values` `chunk × cpus` u64:
        // the room the kernel writes for `chunk` entries of a per-CPU `u64` map on `cpus` CPUs.
        let filled = unsafe {
            cursor.next(
                map,
                buffers.keys.as_mut_ptr().cast(),
                buffers.values.as_mut_ptr().cast(),
                chunk,
            )?
        };
        match filled {
            Step::Unsupported => return Ok(Batch::Unsupported),
            Step::Chunk(filled, more) => {
                for (i, key) in buffers.keys[..filled].iter().enumerate() {
                    visit(*key, &buffers.values[i * cpus..(i + 1) * cpus]);
                }
                if !more {
                    return Ok(Batch::Read);
                }
            }
        }
    }
}

/// Where a batch lookup is in the map.
#[derive(Default)]
struct Cursor {
    /// The hash map's batch token: a bucket index (u32).
    token: u32,
    started: bool,
}

enum Step {
    /// The kernel has no batch lookup for this map (first call only).
    Unsupported,
    /// This many entries were written; `true` when there are more.
    Chunk(usize, bool),
}

impl Cursor {
    /// One `BPF_MAP_LOOKUP_BATCH` call.
    ///
    /// # Safety
    /// `keys` and `values` must point to room for `chunk` keys and values of the map (per-CPU
    /// maps: `chunk × possible CPUs` values), valid for writes of any bytes.
    unsafe fn next(
        &mut self,
        map: &MapData,
        keys: *mut u8,
        values: *mut u8,
        chunk: usize,
    ) -> io::Result<Step> {
        // An open fd is never negative.
        let fd = u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX);
        let mut next_token: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if self.started {
                std::ptr::from_ref(&self.token) as u64
            } else {
                0
            },
            out_batch: std::ptr::from_mut(&mut next_token) as u64,
            keys: keys as u64,
            values: values as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` of the size passed; the buffers are as
        // the caller promised, `in_batch`/`out_batch` point to u32 tokens that outlive the
        // call.
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
        if !self.started
            && matches!(errno, Some(e) if e == libc::EINVAL || e == libc::EOPNOTSUPP || e == ENOTSUPP)
        {
            return Ok(Step::Unsupported);
        }
        if let Some(err) = err
            && errno != Some(libc::ENOENT)
        {
            // ENOSPC: one bucket holds more entries than a chunk (not with chunks of hundreds).
            return Err(err);
        }
        self.token = next_token;
        self.started = true;
        Ok(Step::Chunk(
            (attr.count as usize).min(chunk),
            errno != Some(libc::ENOENT),
        ))
    }
}
