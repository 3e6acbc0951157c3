//! Every configuration global of the programs, as the types of the kernel/user contract
//! (`agent_common::{Settings, TaskOffsets, RqOffsets}`).
//!
//! They are read-only globals the loader sets before loading (`EbpfLoader::override_global`),
//! like libbpf's `const volatile`: the kernel freezes them, so the verifier knows every field
//! as a constant, prunes the branches of settings that are off, and sees the offsets the
//! daemon's trusted-pointer field loads use as constants. Read them with [`cfg`], one field at
//! a time (`cfg(&SETTINGS.filter)`): a scalar load at a constant offset is what the verifier
//! resolves to a constant.

use agent_common::{CgroupOffsets, RqOffsets, Settings, TaskOffsets};

/// What the programs do (global `names::global::SETTINGS`).
#[unsafe(no_mangle)]
pub static SETTINGS: Settings = Settings::DEFAULT;

/// `task_struct` field offsets (global `names::global::TASK_OFFSETS`).
#[unsafe(no_mangle)]
pub static TASK_OFFSETS: TaskOffsets = TaskOffsets::UNKNOWN;

/// Run-queue layout for the sampler's queue walk (global `names::global::RQ_OFFSETS`).
#[unsafe(no_mangle)]
pub static RQ_OFFSETS: RqOffsets = RqOffsets::UNKNOWN;

/// The value of one configuration field, e.g. `cfg(&SETTINGS.filter)`.
#[inline(always)]
pub fn cfg<T: Copy>(value: &'static T) -> T {
    // SAFETY: a valid reference into a static; the volatile read keeps the compiler from
    // folding the compiled-in default, so the program loads the value the loader set.
    unsafe { core::ptr::read_volatile(value) }
}

/// `cfs_rq` to CPU and cgroup id, for the throttle programs (global
/// `names::global::CGROUP_OFFSETS`).
#[unsafe(no_mangle)]
pub static CGROUP_OFFSETS: CgroupOffsets = CgroupOffsets::UNKNOWN;
