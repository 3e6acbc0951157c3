//! The flight recorder: a `cpu-clock` perf event on every CPU runs this program at a low
//! frequency and records who is on the CPU with its kernel and user stacks. User space keeps
//! the last seconds of samples, so an incident's flame graph shows what the CPUs did before
//! the trigger, not after.

use agent_common::{Counter, STACK_DEPTH, TASK_COMM_LEN};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::bpf_get_stack,
    },
    macros::perf_event,
    programs::PerfEventContext,
};

use crate::{count, maps::SAMPLES};

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
    }
    // The reader polls; samples never wake it.
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
    0
}
