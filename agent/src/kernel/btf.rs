//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya cannot apply CO-RE relocations to Rust eBPF programs, so schedlat reads the few
//! `task_struct` offsets it needs here and hands them to the programs as read-only globals
//! (`agent_common::TaskOffsets`, `RqOffsets`).
//! Format: <https://docs.kernel.org/bpf/btf.html>.

use agent_common::{CgroupOffsets, RqOffsets, TaskOffsets};
use anyhow::{Context as _, Result, bail, ensure};

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct/union.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    /// `size` for sized kinds, referenced type id for PTR/TYPEDEF/modifiers.
    size_or_ref: u32,
    members: Vec<Member>,
}

/// Parsed BTF: types (id 1..) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u16_at(data: &[u8], off: usize) -> Result<u16> {
    let bytes = data.get(off..off + 2).context("BTF truncated")?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], off: usize) -> Result<u32> {
    let bytes = data.get(off..off + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| {
            format!(
                "reading {path}: this kernel exposes no BTF (it needs CONFIG_DEBUG_INFO_BTF=y); \
                 schedlat's BTF tracepoint programs cannot run without it"
            )
        })?;
        Self::parse(&data).with_context(|| format!("parsing {path}"))
    }

    /// Parses little-endian BTF (the only byte order schedlat's programs are built for).
    pub fn parse(data: &[u8]) -> Result<Self> {
        ensure!(
            u16_at(data, 0)? == BTF_MAGIC,
            "not little-endian BTF (bad magic)"
        );
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let type_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .context("type section out of bounds")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("string section out of bounds")?
            .to_vec();

        let mut types = Vec::new();
        let mut off = 0;
        while off < type_data.len() {
            let name_off = u32_at(type_data, off)?;
            let info = u32_at(type_data, off + 4)?;
            let size_or_ref = u32_at(type_data, off + 8)?;
            off += 12;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen as usize {
                        let m = off + i * 12;
                        let raw_offset = u32_at(type_data, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(type_data, m)?,
                            type_id: u32_at(type_data, m + 4)?,
                            // With kind_flag the top 8 bits hold a bitfield size.
                            bit_offset: if kind_flag {
                                raw_offset & 0x00ff_ffff
                            } else {
                                raw_offset
                            },
                        });
                    }
                    12 * vlen as usize
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                other => bail!("unknown BTF kind {other} at type {}", types.len() + 1),
            };
            off += extra;
            types.push(Type {
                name_off,
                kind,
                vlen,
                size_or_ref,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, name_off: u32) -> &str {
        let rest = self.strings.get(name_off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Type by id (ids start at 1; 0 is `void`).
    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    fn find(&self, name: &str, kind: u32) -> Option<&Type> {
        self.types
            .iter()
            .find(|t| t.kind == kind && self.name(t.name_off) == name)
    }

    /// Byte offset of `field` in `struct name`, looking through anonymous struct/union members.
    pub fn member_offset(&self, struct_name: &str, field: &str) -> Result<Option<u32>> {
        let ty = self
            .find(struct_name, KIND_STRUCT)
            .with_context(|| format!("struct {struct_name} not found in BTF"))?;
        Ok(self.member_bits(ty, field, 0).map(|bits| bits / 8))
    }

    fn member_bits(&self, ty: &Type, field: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for member in &ty.members {
            let name = self.name(member.name_off);
            if name == field {
                return Some(member.bit_offset);
            }
            if name.is_empty()
                && let Some(inner) = self.resolve(member.type_id)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(bits) = self.member_bits(inner, field, depth + 1)
            {
                return Some(member.bit_offset + bits);
            }
        }
        None
    }

    /// Follows typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.get(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_ref;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Number of arguments of a raw tracepoint as `tp_btf` programs see them, from the
    /// `btf_trace_<name>` typedef (a pointer to a prototype whose first parameter is the
    /// tracepoint's private `void *__data`, which programs do not get).
    pub fn tracepoint_arg_count(&self, tracepoint: &str) -> Result<u32> {
        let typedef_name = format!("btf_trace_{tracepoint}");
        let typedef = self
            .find(&typedef_name, KIND_TYPEDEF)
            .with_context(|| format!("tracepoint {tracepoint} has no BTF ({typedef_name})"))?;
        let ptr = self
            .get(typedef.size_or_ref)
            .filter(|t| t.kind == KIND_PTR)
            .with_context(|| format!("{typedef_name} is not a function pointer"))?;
        let proto = self
            .get(ptr.size_or_ref)
            .filter(|t| t.kind == KIND_FUNC_PROTO)
            .with_context(|| format!("{typedef_name} does not point to a prototype"))?;
        ensure!(proto.vlen >= 1, "{typedef_name} has no __data parameter");
        Ok(proto.vlen - 1)
    }
}

/// What the programs need to know about `task_struct` and the scheduler tracepoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLayout {
    pub pid_offset: u32,
    pub tgid_offset: u32,
    pub comm_offset: u32,
    /// `__state` (5.14+) or `state`.
    pub state_offset: u32,
    /// `sched_switch` passes `prev_state` (5.18+).
    pub switch_has_prev_state: bool,
    /// What the daemon's switch-only programs read; `None` when the kernel lacks a field
    /// (no `CONFIG_SCHED_INFO`).
    pub daemon: Option<DaemonLayout>,
    /// What the sampler's run-queue walk reads; `None` when a field is missing (e.g. no
    /// `CONFIG_FAIR_GROUP_SCHED`).
    pub rq: Option<RqOffsets>,
    /// The path from a task to its cgroup v2 id; `None` when a field is missing (no
    /// `CONFIG_CGROUPS`).
    pub v2_cgroup: Option<V2CgroupPath>,
    /// What the throttle programs read; `None` without `CONFIG_CFS_BANDWIDTH` (or a field
    /// missing).
    pub cgroup: Option<CgroupOffsets>,
}

/// `cfs_rq` → CPU, throttled state and cgroup id, for the throttle programs
/// (agent-ebpf/src/throttle.rs), and the throttled-time clock (6.8+). A field this kernel
/// lacks is 0: `CgroupOffsets::has_*` tell what is usable.
fn cgroup_offsets_from_btf(btf: &Btf) -> Result<CgroupOffsets> {
    let field =
        |st: &str, name: &str| -> Result<u32> { Ok(btf.member_offset(st, name)?.unwrap_or(0)) };
    let task_se = field("task_struct", "se")?;
    let se_cfs_rq = field("sched_entity", "cfs_rq")?;
    Ok(CgroupOffsets {
        cfs_rq_tg: field("cfs_rq", "tg")?,
        cfs_rq_rq: field("cfs_rq", "rq")?,
        cfs_rq_throttled: field("cfs_rq", "throttled")?,
        rq_cpu: field("rq", "cpu")?,
        tg_cgroup: field("task_group", "css")? + field("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: field("cgroup", "kn")?,
        kn_id: field("kernfs_node", "id")?,
        task_cfs_rq: if task_se == 0 || se_cfs_rq == 0 {
            0
        } else {
            task_se + se_cfs_rq
        },
        cfs_rq_self_time: field("cfs_rq", "throttled_clock_self_time")?,
        cfs_rq_self_clock: field("cfs_rq", "throttled_clock_self")?,
        rq_clock: field("rq", "clock")?,
        pad: 0,
    })
}

/// Whether the throttle programs' fields are all known.
#[must_use]
pub fn has_throttle_fields(o: &CgroupOffsets) -> bool {
    o.cfs_rq_tg != 0 && o.cfs_rq_rq != 0 && o.cfs_rq_throttled != 0 && o.cgroup_kn != 0
}

/// The path from a task to its cgroup v2 id (what `bpf_get_current_cgroup_id` returns for the
/// current task), as the trace programs follow it (`TaskOffsets::cgroups` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2CgroupPath {
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`.
    pub cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
}

/// `None` when a field is missing. None of them is the first of its struct: 0 would be a
/// missing one too.
fn v2_cgroup_offsets(btf: &Btf) -> Result<Option<V2CgroupPath>> {
    let field = |st: &str, name: &str| -> Result<Option<u32>> {
        Ok(btf.member_offset(st, name)?.filter(|&offset| offset != 0))
    };
    let (Some(cgroups), Some(css_set_dfl_cgrp), Some(cgroup_kn), Some(kn_id)) = (
        field("task_struct", "cgroups")?,
        field("css_set", "dfl_cgrp")?,
        field("cgroup", "kn")?,
        field("kernfs_node", "id")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(V2CgroupPath {
        cgroups,
        css_set_dfl_cgrp,
        cgroup_kn,
        kn_id,
    }))
}

/// Whether the throttled-time clock (`cfs_rq.throttled_clock_self_time`, 6.8+) is readable.
#[must_use]
pub fn has_throttle_clock(o: &CgroupOffsets) -> bool {
    o.task_cfs_rq != 0 && o.cfs_rq_self_time != 0 && o.cfs_rq_self_clock != 0 && o.rq_clock != 0
}

/// Scheduler structure offsets for the CPU sampler's run-queue walk (agent-ebpf/src/sampler.rs),
/// in the form the programs take them.
fn rq_offsets_from_btf(btf: &Btf) -> Result<RqOffsets> {
    let field = |st: &str, name: &str| -> Result<u32> {
        btf.member_offset(st, name)?
            .with_context(|| format!("{st} has no field {name} in BTF"))
    };
    Ok(RqOffsets {
        task_se: field("task_struct", "se")?,
        se_cfs_rq: field("sched_entity", "cfs_rq")?,
        se_run_node: field("sched_entity", "run_node")?,
        se_my_q: field("sched_entity", "my_q")?,
        se_parent: field("sched_entity", "parent")?,
        cfs_rq_rq: field("cfs_rq", "rq")?,
        cfs_timeline: field("cfs_rq", "tasks_timeline")?,
        rq_cfs: field("rq", "cfs")?,
        rq_clock: field("rq", "clock")?,
        rq_nr_running: field("rq", "nr_running")?,
    })
}

/// `task_struct` offsets for the daemon's programs (agent-ebpf/src/daemon.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonLayout {
    pub flags_offset: u32,
    pub on_rq_offset: u32,
    pub group_leader_offset: u32,
    /// `task_struct.prio` (the diagnosis tells real-time holders by it).
    pub prio_offset: u32,
    /// The kernel's own wait stamps; `None` without `CONFIG_SCHED_INFO`, when the daemon
    /// falls back to stamping enqueues with the wakeup programs.
    pub sched_info: Option<SchedInfoLayout>,
}

/// `task_struct.sched_info` fields, as offsets from the start of `task_struct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedInfoLayout {
    pub last_arrival: u32,
    pub last_queued: u32,
    pub pcount: u32,
}

impl DaemonLayout {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let field = |st: &str, name: &str| -> Result<u32> {
            btf.member_offset(st, name)?
                .with_context(|| format!("{st} has no field {name} in BTF"))
        };
        let sched_info = field("task_struct", "sched_info")
            .context("task_struct.sched_info is missing: the kernel lacks CONFIG_SCHED_INFO")
            .and_then(|base| {
                Ok(SchedInfoLayout {
                    last_arrival: base + field("sched_info", "last_arrival")?,
                    last_queued: base + field("sched_info", "last_queued")?,
                    pcount: base + field("sched_info", "pcount")?,
                })
            })
            .inspect_err(|e| log::debug!("sched_info layout: {e:#}"))
            .ok();
        Ok(Self {
            flags_offset: field("task_struct", "flags")?,
            on_rq_offset: field("task_struct", "on_rq")?,
            group_leader_offset: field("task_struct", "group_leader")?,
            prio_offset: field("task_struct", "prio")?,
            sched_info,
        })
    }
}

impl KernelLayout {
    /// The `task_struct` offsets in the form the programs take them. Fields this kernel lacks
    /// are 0: the settings keep the programs that would read them from running (the daemon's
    /// programs need `daemon`; its stamps and the sampler's queue walk need `sched_info`).
    #[must_use]
    pub fn task_offsets(&self) -> TaskOffsets {
        let daemon = self.daemon.as_ref();
        let stamps = daemon.and_then(|d| d.sched_info.as_ref());
        TaskOffsets {
            pid: self.pid_offset,
            tgid: self.tgid_offset,
            comm: self.comm_offset,
            state: self.state_offset,
            last_arrival: stamps.map_or(0, |s| s.last_arrival),
            last_queued: stamps.map_or(0, |s| s.last_queued),
            flags: daemon.map_or(0, |d| d.flags_offset),
            on_rq: daemon.map_or(0, |d| d.on_rq_offset),
            group_leader: daemon.map_or(0, |d| d.group_leader_offset),
            pcount: stamps.map_or(0, |s| s.pcount),
            prio: daemon.map_or(0, |d| d.prio_offset),
            cgroups: self.v2_cgroup.map_or(0, |o| o.cgroups),
            css_set_dfl_cgrp: self.v2_cgroup.map_or(0, |o| o.css_set_dfl_cgrp),
            cgroup_kn: self.v2_cgroup.map_or(0, |o| o.cgroup_kn),
            kn_id: self.v2_cgroup.map_or(0, |o| o.kn_id),
        }
    }

    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let field = |name: &str| -> Result<u32> {
            btf.member_offset("task_struct", name)?
                .with_context(|| format!("task_struct has no field {name} in BTF"))
        };
        let state_offset = match btf.member_offset("task_struct", "__state")? {
            Some(offset) => offset,
            None => field("state")?,
        };
        let switch_args = btf.tracepoint_arg_count("sched_switch")?;
        Ok(Self {
            pid_offset: field("pid")?,
            tgid_offset: field("tgid")?,
            comm_offset: field("comm")?,
            state_offset,
            switch_has_prev_state: switch_args >= 4,
            daemon: DaemonLayout::from_btf(btf)
                .inspect_err(|e| log::debug!("daemon layout: {e:#}"))
                .ok(),
            rq: rq_offsets_from_btf(btf)
                .inspect_err(|e| log::debug!("run-queue layout: {e:#}"))
                .ok(),
            v2_cgroup: v2_cgroup_offsets(btf)
                .inspect_err(|e| log::debug!("cgroup v2 id layout: {e:#}"))
                .ok()
                .flatten(),
            cgroup: cgroup_offsets_from_btf(btf)
                .inspect_err(|e| log::debug!("throttle layout: {e:#}"))
                .ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, kind, vlen, size or type, extra words) entries.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(&mut self, name: &str, kind: u32, vlen: u32, size_or_ref: u32, extra: &[u32]) {
            let name_off = self.string(name);
            for word in [name_off, (kind << 24) | vlen, size_or_ref]
                .iter()
                .chain(extra)
            {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
        }
        fn member(&mut self, name: &str, type_id: u32, bit_offset: u32) -> [u32; 3] {
            [self.string(name), type_id, bit_offset]
        }
        fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            for word in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn sample(with_prev_state: bool, state_name: &str) -> Vec<u8> {
        let mut b = Builder::new();
        b.push("int", KIND_INT, 0, 4, &[32]); // 1
        let anon_members: Vec<u32> = [b.member("tgid", 1, 0), b.member("other", 1, 32)].concat();
        b.push("", KIND_STRUCT, 2, 8, &anon_members); // 2: anonymous struct
        b.push("char", KIND_INT, 0, 1, &[8]); // 3
        b.push("", KIND_ARRAY, 0, 0, &[3, 1, 16]); // 4: char[16]
        let members: Vec<u32> = [
            b.member(state_name, 1, 0),
            b.member("pid", 1, 64 * 8),
            b.member("", 2, 68 * 8),
            b.member("comm", 4, 100 * 8),
        ]
        .concat();
        b.push("task_struct", KIND_STRUCT, 4, 200, &members); // 5
        b.push("", KIND_PTR, 0, 5, &[]); // 6: task_struct *
        let nparams = if with_prev_state { 5 } else { 4 };
        let mut params = Vec::new();
        for i in 0..nparams {
            params.extend_from_slice(&[0, if i == 0 { 0 } else { 6 }]);
        }
        b.push("", KIND_FUNC_PROTO, nparams, 0, &params); // 7
        b.push("", KIND_PTR, 0, 7, &[]); // 8
        b.push("btf_trace_sched_switch", KIND_TYPEDEF, 0, 8, &[]); // 9
        b.finish()
    }

    #[test]
    fn finds_offsets_through_anonymous_members() {
        let btf = Btf::parse(&sample(true, "__state")).expect("parse");
        let layout = KernelLayout::from_btf(&btf).expect("layout");
        assert_eq!(
            layout,
            KernelLayout {
                pid_offset: 64,
                tgid_offset: 68,
                comm_offset: 100,
                state_offset: 0,
                switch_has_prev_state: true,
                // The synthetic task_struct has no flags/on_rq/group_leader: no daemon layout.
                daemon: None,
                rq: None,
                v2_cgroup: None,
                cgroup: None,
            }
        );
    }

    #[test]
    fn old_kernel_layout_uses_state_and_three_switch_args() {
        let btf = Btf::parse(&sample(false, "state")).expect("parse");
        let layout = KernelLayout::from_btf(&btf).expect("layout");
        assert!(!layout.switch_has_prev_state);
        assert_eq!(layout.state_offset, 0);
    }

    #[test]
    fn this_kernels_btf_has_every_layout_schedlat_reads() {
        // Runs where the kernel exposes BTF (it is world-readable); skipped elsewhere.
        let Ok(btf) = Btf::from_sys_fs() else {
            return;
        };
        let layout = KernelLayout::from_btf(&btf).expect("task_struct layout");
        let daemon = layout.daemon.expect("daemon layout");
        let stamps = daemon.sched_info.expect("sched_info layout");
        assert!(stamps.last_queued == stamps.last_arrival + 8);
        let rq = layout.rq.expect("run-queue layout");
        assert!(
            rq.rq_clock > rq.rq_cfs && rq.se_run_node < rq.se_cfs_rq,
            "{rq:?}"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly").is_err());
        let mut truncated = sample(true, "__state");
        truncated.truncate(40);
        assert!(Btf::parse(&truncated).is_err());
    }

    #[test]
    fn missing_field_is_reported_by_name() {
        let btf = Btf::parse(&sample(true, "__state")).expect("parse");
        assert_eq!(
            btf.member_offset("task_struct", "nope").expect("struct"),
            None
        );
        let err = btf
            .member_offset("mm_struct", "pgd")
            .expect_err("no such struct");
        assert!(err.to_string().contains("mm_struct"), "{err}");
    }

    #[test]
    fn running_kernel_btf_if_present() {
        // Pure parsing of the real vmlinux BTF (readable without root on most systems).
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here; skipping");
            return;
        };
        let layout = KernelLayout::from_btf(&btf).expect("task_struct layout from vmlinux BTF");
        assert_eq!(layout.tgid_offset, layout.pid_offset + 4, "{layout:?}");
        assert!(layout.comm_offset > layout.tgid_offset, "{layout:?}");
    }
}
