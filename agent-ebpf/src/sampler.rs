//! The flight recorder: a `cpu-clock` perf event on every CPU runs this program at a low
//! frequency and records who is on the CPU with its kernel and user stacks. User space keeps
//! the last seconds of samples, so an incident's flame graph shows what the CPUs did before
//! the trigger, not after.

use agent_common::{Counter, CpuSample, PER_CPU_SLOT, QueuedTask, STACK_DEPTH, TASK_COMM_LEN};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
        generated::bpf_get_stack,
    },
    macros::perf_event,
    programs::PerfEventContext,
};

use crate::{
    config::{RQ_OFFSETS, SETTINGS, TASK_OFFSETS, cfg},
    helpers::{count, kread},
    maps::{CPU_SLOT, SAMPLES, WALK_SCRATCH},
};

/// The walk's loop state lives in map memory, which the verifier does not track value by
/// value: kept in registers, every combination of counters would be a distinct state and the
/// bounded loops would exceed the verifier's budget.
#[inline(always)]
fn load(slot: &u64) -> u64 {
    // SAFETY: a valid reference; volatile so the value is re-read from map memory.
    unsafe { core::ptr::read_volatile(slot) }
}

#[inline(always)]
fn store(slot: &mut u64, value: u64) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(slot, value) }
}

/// Lists the tasks queued on this CPU's fair run queue (the sampled task is running, hence not
/// in the tree): an in-order walk of the red-black timeline, descending into group entities.
#[inline(always)]
#[expect(
    clippy::too_many_lines,
    reason = "one bounded loop the verifier must see whole; helpers would be inlined anyway"
)]
fn walk_queue(sample: *mut CpuSample) {
    let Some(scratch) = WALK_SCRATCH.get_ptr_mut(PER_CPU_SLOT) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; perf event programs do not nest on a CPU.
    let scratch = unsafe { &mut *scratch };
    // The sampled task's cfs_rq belongs to this CPU's rq, whatever group it is in.
    // SAFETY: helper without preconditions.
    let current = unsafe { bpf_get_current_task() };
    let cfs: u64 = kread(
        current,
        cfg(&RQ_OFFSETS.task_se) + cfg(&RQ_OFFSETS.se_cfs_rq),
    );
    if cfs == 0 {
        return;
    }
    let rq: u64 = kread(cfs, cfg(&RQ_OFFSETS.cfs_rq_rq));
    if rq == 0 {
        return;
    }
    // The rq clock now: from ktime and the offset the daemon's switch program paired (exact
    // to a microsecond), else rq->clock itself, which lags by up to a tick.
    let offset = CPU_SLOT.get(PER_CPU_SLOT).map_or(0, |s| s.rq_clock_offset);
    let clock: u64 = if offset == 0 {
        kread(rq, cfg(&RQ_OFFSETS.rq_clock))
    } else {
        // SAFETY: helper without preconditions.
        unsafe { bpf_ktime_get_ns() }.wrapping_add(offset)
    };
    let timeline = cfg(&RQ_OFFSETS.cfs_timeline);
    // The running task is not in its cfs_rq's tree, and neither is any of its group entities
    // in theirs: the tasks queued next to it (same group, or next to one of its groups) are
    // only reachable from its own cfs_rq and its ancestors'. Those are walked first; the
    // root (rq->cfs) is the last ancestor. Group entities met on the way are walked too.
    let mut depth = 0u64;
    let mut level_cfs = cfs;
    let mut se = current + u64::from(cfg(&RQ_OFFSETS.task_se));
    for _ in 0..4 {
        if let Some(slot) = scratch.groups.get_mut(depth as usize) {
            store(slot, level_cfs);
            depth += 1;
        }
        se = kread(se, cfg(&RQ_OFFSETS.se_parent));
        if se == 0 {
            break;
        }
        level_cfs = kread(se, cfg(&RQ_OFFSETS.se_cfs_rq));
        if level_cfs == 0 {
            break;
        }
    }
    // rb_root_cached { rb_root, rb_leftmost }; rb_node { parent_color, rb_right, rb_left }.
    store(&mut scratch.node, 0);
    store(&mut scratch.nr_groups, depth);
    store(&mut scratch.found, 0);
    // SAFETY: `sample` points to reserved ring buffer memory.
    unsafe { (*sample).nr_running = kread(rq, cfg(&RQ_OFFSETS.rq_nr_running)) };
    for _ in 0..WALK_STEPS {
        let node = load(&scratch.node);
        if node == 0 {
            let nr_groups = load(&scratch.nr_groups);
            if nr_groups == 0 {
                break;
            }
            store(&mut scratch.nr_groups, nr_groups - 1);
            // Index with the value read back, not `nr_groups - 1`: LLVM checks the bound on
            // `nr_groups` and indexes with a copy minus one, and verifiers before 6.18 do not
            // carry a bound over to a copy with a constant added ("math between map_value
            // pointer and register with unbounded min value" on 6.1 and 6.12). The bound
            // check `get` makes is then on the very register used as the index.
            let top = load(&scratch.nr_groups);
            let Some(group_cfs) = scratch.groups.get(top as usize) else {
                break;
            };
            let group_cfs = load(group_cfs);
            store(&mut scratch.node, kread(group_cfs, timeline + 8));
            continue;
        }
        let se = node - u64::from(cfg(&RQ_OFFSETS.se_run_node));
        let my_q: u64 = kread(se, cfg(&RQ_OFFSETS.se_my_q));
        if my_q != 0 {
            let nr_groups = load(&scratch.nr_groups);
            if let Some(slot) = scratch.groups.get_mut(nr_groups as usize) {
                store(slot, my_q);
                store(&mut scratch.nr_groups, nr_groups + 1);
            }
        } else {
            let task = se - u64::from(cfg(&RQ_OFFSETS.task_se));
            let found = load(&scratch.found);
            // SAFETY: as above; the index is checked.
            if let Some(q) = unsafe { (*sample).queue.get_mut(found as usize) } {
                q.tid = kread(task, cfg(&TASK_OFFSETS.pid));
                q.tgid = kread(task, cfg(&TASK_OFFSETS.tgid));
                let queued: u64 = kread(task, cfg(&TASK_OFFSETS.last_queued));
                q.wait_ns = if queued != 0 && clock > queued {
                    clock - queued
                } else {
                    0
                };
                // SAFETY: faults safely; the destination is the entry's comm.
                let _ = unsafe {
                    bpf_probe_read_kernel_buf(
                        (task + u64::from(cfg(&TASK_OFFSETS.comm))) as *const u8,
                        &mut q.comm,
                    )
                };
            }
            store(&mut scratch.found, found + 1);
        }
        // rb_next: leftmost of the right subtree, else the first ancestor we are left of.
        let right: u64 = kread(node, 8);
        if right != 0 {
            store(&mut scratch.node, right);
            for _ in 0..TREE_DEPTH {
                let left: u64 = kread(load(&scratch.node), 16);
                if left == 0 {
                    break;
                }
                store(&mut scratch.node, left);
            }
        } else {
            store(&mut scratch.child, node);
            store(&mut scratch.node, kread::<u64>(node, 0) & !3);
            for _ in 0..TREE_DEPTH {
                let parent = load(&scratch.node);
                if parent == 0 || kread::<u64>(parent, 8) != load(&scratch.child) {
                    break;
                }
                store(&mut scratch.child, parent);
                store(&mut scratch.node, kread::<u64>(parent, 0) & !3);
            }
        }
    }
    // SAFETY: as above.
    unsafe { (*sample).nr_queued = load(&scratch.found) as u32 };
}

/// Entities visited per sample at most (queued tasks beyond are not counted).
const WALK_STEPS: usize = 32;
/// Red-black tree height bound for the successor search (a tree of 32 nodes is at most 10
/// high).
const TREE_DEPTH: usize = 12;

const STACK_BYTES: u32 = (STACK_DEPTH * 8) as u32;

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let Some(mut entry) = SAMPLES.reserve(0) else {
        count(Counter::SamplesLost);
        return 0;
    };
    let sample = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `sample` points to reserved ring buffer memory of the right size; the fields are
    // written one by one (the struct is too large for the BPF stack).
    unsafe {
        (*sample).ts_ns = bpf_ktime_get_ns();
        (*sample).tid = pid_tgid as u32;
        (*sample).tgid = (pid_tgid >> 32) as u32;
        (*sample).cpu = bpf_get_smp_processor_id();
        (*sample).pad = 0;
        (*sample).comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
        let kernel = bpf_get_stack(
            ctx.as_ptr(),
            (*sample).kernel_stack.as_mut_ptr().cast(),
            STACK_BYTES,
            0,
        );
        (*sample).kernel_frames = if kernel > 0 { (kernel / 8) as u32 } else { 0 };
        let user = if pid_tgid >> 32 == 0 {
            0
        } else {
            bpf_get_stack(
                ctx.as_ptr(),
                (*sample).user_stack.as_mut_ptr().cast(),
                STACK_BYTES,
                u64::from(BPF_F_USER_STACK),
            )
        };
        (*sample).user_frames = if user > 0 { (user / 8) as u32 } else { 0 };
        (*sample).nr_running = 0;
        (*sample).nr_queued = 0;
        for q in &mut (*sample).queue {
            *q = QueuedTask::default();
        }
    }
    if cfg(&SETTINGS.rq_walk) != 0 {
        walk_queue(sample);
    }
    // The reader polls; samples never wake it.
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
    0
}
