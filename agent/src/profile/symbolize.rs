//! Addresses to names: kernel frames from `/proc/kallsyms` (read once at start, while the agent
//! still has the privilege to see addresses), user frames with blazesym (ELF symbols, `.symtab`
//! then `.dynsym`, and DWARF where present, also from separate debug files found by
//! `.gnu_debuglink` or build id; Rust and C++ names demangled). blazesym reads binaries through
//! `/proc/<pid>/map_files`, so deleted or replaced binaries and binaries inside containers
//! resolve too, and it applies each mapping's load bias (file offset to ELF address) itself.
//!
//! What a flame graph must never show is a frame that is not code: the user stack the kernel
//! unwinds by frame pointer ends in a 0 return address, and a function built without frame
//! pointers leaves a stale or junk word in the chain. Such frames are dropped: an address of 0,
//! or one that no executable mapping of the process holds. A frame in an executable mapping
//! that has no symbol for it keeps `module+0xoffset` (the file offset) when the mapping is a
//! file; anonymous code (a JIT's) is `[anon]`. When the process is gone before its stacks are
//! symbolized, its user frames are one `[unknown]`.

use std::collections::HashMap;

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Process, Source},
};
use log::debug;

/// The kernel's symbol table.
#[derive(Default)]
pub struct KernelSymbols {
    /// (address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms`; empty (every kernel frame shown as an address) when the
    /// addresses are hidden (`kernel.kptr_restrict`, no `CAP_SYSLOG`).
    #[must_use]
    pub fn load() -> Self {
        match std::fs::read_to_string("/proc/kallsyms") {
            Ok(text) => {
                let table = Self::parse(&text);
                if table.symbols.is_empty() {
                    log::warn!(
                        "/proc/kallsyms shows no addresses (kptr_restrict?): kernel frames will \
                         be shown as addresses"
                    );
                }
                table
            }
            Err(e) => {
                log::warn!("reading /proc/kallsyms: {e}; kernel frames will be addresses");
                Self::default()
            }
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W"))
                    .then(|| (addr, name.to_owned()))
            })
            .collect();
        symbols.sort_unstable_by_key(|(addr, _)| *addr);
        Self { symbols }
    }

    /// The function containing `addr`.
    #[must_use]
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let index = self.symbols.partition_point(|(a, _)| *a <= addr);
        index.checked_sub(1).map(|i| self.symbols[i].1.as_str())
    }

    #[must_use]
    pub fn frame(&self, addr: u64) -> String {
        self.lookup(addr)
            .map_or_else(|| format!("[kernel] 0x{addr:x}"), str::to_owned)
    }
}

/// Stands for the user frames of a process that exited before they were symbolized.
pub const UNKNOWN_FRAME: &str = "[unknown]";
/// Stands for a frame in anonymous executable memory (JIT-compiled code).
pub const ANON_FRAME: &str = "[anon]";

/// User-space symbolization per process, cached.
pub struct UserSymbolizer {
    symbolizer: Symbolizer,
    /// (tgid, lookup address) to the frame's name; `None`: not code, dropped.
    cache: HashMap<(u32, u64), Option<String>>,
}

impl Default for UserSymbolizer {
    fn default() -> Self {
        Self {
            // Names only: source lines and inlined frames are not shown, and with a distribution's
            // debug files installed (libc6-dbg) reading their DWARF lines costs the most.
            symbolizer: Symbolizer::builder()
                .enable_code_info(false)
                .enable_inlined_fns(false)
                .build(),
            cache: HashMap::new(),
        }
    }
}

impl UserSymbolizer {
    /// Resolves the frames of many user stacks (process, addresses innermost first) at once:
    /// one reading of each process's mappings and one symbolizer call per process, rather than
    /// per stack. [`frames`](Self::frames) then finds them cached.
    pub fn prepare<'a>(&mut self, stacks: impl Iterator<Item = (u32, &'a [u64])>) {
        let mut missing: HashMap<u32, Vec<u64>> = HashMap::new();
        for (tgid, addrs) in stacks {
            for addr in lookup_addresses(addrs) {
                if !self.cache.contains_key(&(tgid, addr)) {
                    missing.entry(tgid).or_default().push(addr);
                }
            }
        }
        for (tgid, mut addrs) in missing {
            addrs.sort_unstable();
            addrs.dedup();
            let names = self.resolve(tgid, &addrs);
            for (addr, name) in addrs.into_iter().zip(names) {
                self.cache.insert((tgid, addr), name);
            }
        }
    }

    /// Names for the user stack `addrs` of process `tgid` (innermost first, as the kernel
    /// returns them), in order, without the frames that are not code (see the module
    /// documentation).
    pub fn frames(&mut self, tgid: u32, addrs: &[u64]) -> Vec<String> {
        self.prepare(std::iter::once((tgid, addrs)));
        let lookups = lookup_addresses(addrs);
        let mut frames: Vec<String> = Vec::with_capacity(lookups.len());
        for addr in lookups {
            let Some(Some(name)) = self.cache.get(&(tgid, addr)) else {
                continue;
            };
            // A run of unresolvable frames says no more than one of them.
            if is_placeholder(name) && frames.last() == Some(name) {
                continue;
            }
            frames.push(name.clone());
        }
        frames
    }

    fn resolve(&self, tgid: u32, addrs: &[u64]) -> Vec<Option<String>> {
        // File names in maps are bytes: escape them line by line (a lossy or failed read would
        // lose every module of the process for one odd name).
        let Ok(maps) = std::fs::read(format!("/proc/{tgid}/maps")) else {
            // Gone (or not ours to read): nothing tells code from junk any more.
            return addrs
                .iter()
                .map(|_| Some(UNKNOWN_FRAME.to_owned()))
                .collect();
        };
        let maps: String = maps
            .split(|&b| b == b'\n')
            .map(crate::host::names::escape_bytes)
            .collect::<Vec<_>>()
            .join("\n");
        let mappings = parse_maps(&maps);
        let code: Vec<Option<&Mapping>> = addrs
            .iter()
            .map(|&addr| executable_mapping(&mappings, addr))
            .collect();
        // blazesym only sees addresses in files and the vDSO: the rest are named here.
        let to_symbolize: Vec<u64> = addrs
            .iter()
            .zip(&code)
            .filter(|(_, m)| m.is_some_and(Mapping::symbolizable))
            .map(|(&addr, _)| addr)
            .collect();
        let mut symbols = self.symbolize(tgid, &to_symbolize).into_iter();
        addrs
            .iter()
            .zip(code)
            .map(|(&addr, mapping)| {
                let mapping = mapping?;
                let symbol = if mapping.symbolizable() {
                    symbols.next().flatten()
                } else {
                    None
                };
                Some(symbol.unwrap_or_else(|| mapping.fallback_frame(addr)))
            })
            .collect()
    }

    /// Symbol names for `addrs`, in order. One module blazesym cannot read (say, a debug file
    /// compressed in a way it was not built for) fails the whole batch: then each address is
    /// tried alone, so only that module's frames go unnamed.
    fn symbolize(&self, tgid: u32, addrs: &[u64]) -> Vec<Option<String>> {
        if addrs.is_empty() {
            return Vec::new();
        }
        let source = Source::Process(Process::new(tgid.into()));
        let name = |symbolized: Symbolized<'_>| match symbolized {
            Symbolized::Sym(sym) => Some(sym.name.into_owned()),
            Symbolized::Unknown(_) => None,
        };
        match self.symbolizer.symbolize(&source, Input::AbsAddr(addrs)) {
            Ok(results) => results.into_iter().map(name).collect(),
            Err(e) => {
                debug!("symbolizing pid {tgid}: {e}; retrying address by address");
                addrs
                    .iter()
                    .map(|&addr| {
                        match self
                            .symbolizer
                            .symbolize_single(&source, Input::AbsAddr(addr))
                        {
                            Ok(symbolized) => name(symbolized),
                            Err(e) => {
                                debug!("symbolizing 0x{addr:x} of pid {tgid}: {e}");
                                None
                            }
                        }
                    })
                    .collect()
            }
        }
    }

    /// Forgets processes that exited.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.cache.retain(|(tgid, _), _| live(*tgid));
    }
}

/// The addresses to look up for a user stack (innermost first): without the zeros, and every
/// frame but the innermost moved back by one byte. Those frames hold return addresses, the
/// instruction after the call, which is past the end of the caller when the call was its last
/// instruction (a call to a function that does not return); the innermost is where the thread
/// was.
#[must_use]
pub fn lookup_addresses(addrs: &[u64]) -> Vec<u64> {
    addrs
        .iter()
        .enumerate()
        .filter(|(_, addr)| **addr != 0)
        .map(|(depth, &addr)| if depth == 0 { addr } else { addr - 1 })
        .collect()
}

fn is_placeholder(name: &str) -> bool {
    name == UNKNOWN_FRAME || name == ANON_FRAME
}

/// One line of `/proc/<pid>/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub executable: bool,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    /// The path column as the kernel wrote it (a file, ` (deleted)` appended when it was
    /// removed; a pseudo name in brackets such as `[vdso]`), empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    /// A file mapping (the path column of a file is absolute; pseudo names are not).
    #[must_use]
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }

    /// Whether blazesym can name addresses in it: files, and the vDSO.
    #[must_use]
    pub fn symbolizable(&self) -> bool {
        self.is_file() || self.path == "[vdso]"
    }

    /// The name of a frame in this mapping without a symbol: `module+0xoffset` for a file,
    /// the pseudo name (`[vdso]`), or `[anon]`.
    #[must_use]
    pub fn fallback_frame(&self, addr: u64) -> String {
        if self.is_file() {
            let path = self.path.strip_suffix(" (deleted)").unwrap_or(&self.path);
            let module = path.rsplit('/').next().unwrap_or(path);
            format!("{module}+0x{:x}", addr - self.start + self.file_offset)
        } else if self.path.is_empty() {
            ANON_FRAME.to_owned()
        } else {
            self.path.clone()
        }
    }
}

/// The mappings of a `/proc/<pid>/maps` text (lines that do not parse are skipped).
#[must_use]
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            // address perms offset dev inode [path]: the path is the rest of the line and may
            // hold spaces.
            let mut rest = line;
            let mut field = || {
                rest = rest.trim_start();
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let (field, tail) = rest.split_at(end);
                rest = tail;
                field
            };
            let (start, end) = field().split_once('-')?;
            let perms = field();
            let file_offset = u64::from_str_radix(field(), 16).ok()?;
            let (_dev, _inode) = (field(), field());
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                executable: perms.as_bytes().get(2) == Some(&b'x'),
                file_offset,
                path: rest.trim().to_owned(),
            })
        })
        .collect()
}

/// The executable mapping holding `addr`, if any.
#[must_use]
pub fn executable_mapping(mappings: &[Mapping], addr: u64) -> Option<&Mapping> {
    mappings
        .iter()
        .find(|m| m.executable && (m.start..m.end).contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_lookup_finds_the_containing_function() {
        let k = KernelSymbols::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t do_thing\n0000000000000000 A zero\n\
             ffffffff81000200 D some_data\nffffffff81000300 T schedule\n",
        );
        assert_eq!(k.lookup(0xffff_ffff_8100_0150), Some("do_thing"));
        assert_eq!(k.lookup(0xffff_ffff_8100_0300), Some("schedule"));
        assert_eq!(k.lookup(0x10), None);
        assert_eq!(k.frame(0x10), "[kernel] 0x10");
    }

    #[test]
    fn unresolved_user_frames_keep_module_and_offset_of_code_only() {
        let maps = parse_maps(
            "55d0c0a00000-55d0c0a10000 r-xp 00001000 08:01 1234   /usr/bin/my app (deleted)\n\
             55d0c0a10000-55d0c0a20000 rw-p 00011000 08:01 1234   /usr/bin/my app (deleted)\n\
             7f0000000000-7f0000001000 rwxp 00000000 00:00 0 \n\
             7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0      [vdso]\n\
             not a maps line\n",
        );
        assert_eq!(maps.len(), 4, "{maps:?}");
        assert_eq!(maps[0].path, "/usr/bin/my app (deleted)");
        let frame = |addr| executable_mapping(&maps, addr).map(|m| m.fallback_frame(addr));
        assert_eq!(frame(0x55d0_c0a0_0010).as_deref(), Some("my app+0x1010"));
        assert_eq!(frame(0x55d0_c0a1_0010), None, "data, not code");
        assert_eq!(frame(0x7f00_0000_0008).as_deref(), Some(ANON_FRAME));
        assert_eq!(frame(0x7ffd_0000_0008).as_deref(), Some("[vdso]"));
        assert_eq!(frame(0x1), None, "unmapped");
        assert!(maps[0].symbolizable() && maps[3].symbolizable() && !maps[2].symbolizable());
    }

    #[test]
    fn return_addresses_are_looked_up_in_the_call_and_zeros_dropped() {
        assert_eq!(
            lookup_addresses(&[0x1000, 0x2000, 0, 0x3000, 0]),
            vec![0x1000, 0x1fff, 0x2fff]
        );
        assert!(lookup_addresses(&[0, 0]).is_empty());
    }

    #[test]
    fn junk_frames_are_dropped_and_a_gone_process_is_one_unknown_frame() {
        let mut s = UserSymbolizer::default();
        // Below `vm.mmap_min_addr` nothing is mapped; the heap is not executable.
        let heap = Box::new(0u64);
        let data = std::ptr::from_ref(heap.as_ref()) as u64;
        assert_eq!(
            s.frames(std::process::id(), &[0x10, 0, data, 0xfff0]),
            Vec::<String>::new()
        );
        // pid_max is at most 2^22: this pid cannot exist.
        let gone = 1 << 23;
        assert_eq!(s.frames(gone, &[0x1234, 0x5678, 0]), vec![UNKNOWN_FRAME]);
    }

    #[test]
    fn symbolizes_a_function_of_this_test_binary() {
        #[inline(never)]
        fn marker_function_for_symbolization() -> u64 {
            std::hint::black_box(42)
        }
        let addr = marker_function_for_symbolization as *const () as u64;
        let mut s = UserSymbolizer::default();
        // As the innermost frame, and as a return address into it from a call it made.
        let frames = s.frames(std::process::id(), &[addr, addr + 1]);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(
            frames
                .iter()
                .all(|f| f.ends_with("marker_function_for_symbolization")),
            "demangled, without the hash: {frames:?}"
        );
    }
}
