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

use anyhow::{Context as _, Result, bail};
use aya::{
    Pod,
    maps::{Map, MapData},
};
use log::info;

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
enum Batch {
    /// Every entry was visited.
    Read,
    /// The kernel does not support batch lookups on this map: nothing was visited.
    Unsupported,
}

/// Reusable key and value buffers of `chunk` entries: `chunk` keys and `chunk × stride`
/// values (`stride` 1, or the possible CPUs of a per-CPU map).
pub struct Buffers<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
    stride: usize,
}

impl<K: Pod + Default, V: Pod + Default> Buffers<K, V> {
    /// Room for `chunk` entries per syscall (at least 1) of a map with one value per key.
    #[must_use]
    pub fn new(chunk: usize) -> Self {
        Self::strided(chunk, 1)
    }

    /// Room for `chunk` entries per syscall of a per-CPU map on `cpus` possible CPUs (the
    /// kernel writes one value per possible CPU, each rounded up to 8 bytes: `V` must be a
    /// multiple of 8 bytes, as `u64` is).
    #[must_use]
    pub fn per_cpu(chunk: usize, cpus: usize) -> Self {
        debug_assert!(
            size_of::<V>().is_multiple_of(8),
            "per-CPU values are 8-byte aligned"
        );
        Self::strided(chunk, cpus)
    }

    fn strided(chunk: usize, stride: usize) -> Self {
        let chunk = chunk.max(1);
        let stride = stride.max(1);
        Self {
            keys: vec![K::default(); chunk],
            values: vec![V::default(); chunk * stride],
            stride,
        }
    }
}

/// Visits every entry of the hash map `map` (keys `K`; values `V`, one per possible CPU for
/// buffers made with `Buffers::per_cpu`), `chunk` entries per syscall. Entries added or
/// deleted meanwhile may or may not be visited; each entry visited is a consistent copy (the
/// kernel copies a bucket under its lock).
///
/// # Errors
/// Any error of the syscall but `ENOENT` (the end of the map) and, on the first call, the
/// errors that say the kernel has no batch lookup (`Batch::Unsupported`).
fn lookup_all<K: Pod + Default, V: Pod + Default>(
    map: &MapData,
    buffers: &mut Buffers<K, V>,
    mut visit: impl FnMut(K, &[V]),
) -> io::Result<Batch> {
    let chunk = buffers.keys.len();
    let stride = buffers.stride;
    let mut cursor = Cursor::default();
    loop {
        // SAFETY: `keys` holds `chunk` initialized `K`, `values` `chunk × stride` initialized
        // `V` (both `Pod`, so any bytes the kernel writes are valid values of them): the room
        // the kernel writes for `chunk` entries of this map.
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
                for (key, values) in buffers.keys[..filled]
                    .iter()
                    .zip(buffers.values.chunks_exact(stride))
                {
                    visit(*key, values);
                }
                if !more {
                    return Ok(Batch::Read);
                }
            }
        }
    }
}

/// Visits every entry of the hash map `map` (one value per key): one batch lookup per chunk
/// of `buffers` when the kernel has them (noted in `batch_ok` at the first try), else key by
/// key (two syscalls per entry).
///
/// # Errors
/// A map that is not a hash map, a failed read.
pub fn visit_all<K: Pod + Default, V: Pod + Default>(
    map: &Map,
    name: &str,
    batch_ok: &mut Option<bool>,
    buffers: &mut Buffers<K, V>,
    mut visit: impl FnMut(K, &V),
) -> Result<()> {
    visit_entries(map, name, batch_ok, buffers, |key, values| {
        visit(key, &values[0]);
    })
}

/// `visit_all` for hash maps and per-CPU hash maps (`Buffers::per_cpu`): each key with its
/// values (one per possible CPU for a per-CPU map).
///
/// # Errors
/// A map that is neither, a failed read.
pub fn visit_entries<K: Pod + Default, V: Pod + Default>(
    map: &Map,
    name: &str,
    batch_ok: &mut Option<bool>,
    buffers: &mut Buffers<K, V>,
    mut visit: impl FnMut(K, &[V]),
) -> Result<()> {
    if *batch_ok != Some(false) {
        let (Map::HashMap(data) | Map::PerCpuHashMap(data)) = map else {
            bail!("{name} is not a hash map");
        };
        match lookup_all(data, buffers, &mut visit)
            .with_context(|| format!("batch lookup of {name}"))?
        {
            Batch::Read => {
                *batch_ok = Some(true);
                return Ok(());
            }
            Batch::Unsupported => {
                if batch_ok.is_none() {
                    info!(
                        "the kernel has no batch lookup of hash maps (Linux < 5.6): {name} and \
                         the other hash maps are read key by key (two syscalls per entry)"
                    );
                }
                *batch_ok = Some(false);
            }
        }
    }
    if let Map::PerCpuHashMap(_) = map {
        let map: aya::maps::PerCpuHashMap<_, K, V> = aya::maps::PerCpuHashMap::try_from(map)?;
        for item in &map {
            let (key, values) = item.with_context(|| format!("reading {name}"))?;
            visit(key, &values);
        }
    } else {
        let map: aya::maps::HashMap<_, K, V> = aya::maps::HashMap::try_from(map)?;
        for item in &map {
            let (key, value) = item.with_context(|| format!("reading {name}"))?;
            visit(key, std::slice::from_ref(&value));
        }
    }
    Ok(())
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
