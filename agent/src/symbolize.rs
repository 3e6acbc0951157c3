//! Addresses to names: kernel frames from `/proc/kallsyms` (read once at start, while the agent
//! still has the privilege to see addresses), user frames with blazesym (ELF symbols and DWARF
//! where present; it reads binaries through `/proc/<pid>/map_files`, so deleted or replaced
//! binaries and binaries inside containers resolve too). Frames that cannot be resolved become
//! `module+0xoffset` (or the bare address), never dropped.

use std::{collections::HashMap, path::Path};

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

/// User-space symbolization per process, cached.
pub struct UserSymbolizer {
    symbolizer: Symbolizer,
    cache: HashMap<(u32, u64), String>,
}

impl Default for UserSymbolizer {
    fn default() -> Self {
        Self {
            symbolizer: Symbolizer::new(),
            cache: HashMap::new(),
        }
    }
}

impl UserSymbolizer {
    /// Names for `addrs` in process `tgid`, in order.
    pub fn frames(&mut self, tgid: u32, addrs: &[u64]) -> Vec<String> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.cache.contains_key(&(tgid, *a)))
            .collect();
        if !missing.is_empty() {
            let names = self.resolve(tgid, &missing);
            for (addr, name) in missing.into_iter().zip(names) {
                self.cache.insert((tgid, addr), name);
            }
        }
        addrs
            .iter()
            .map(|a| self.cache[&(tgid, *a)].clone())
            .collect()
    }

    fn resolve(&self, tgid: u32, addrs: &[u64]) -> Vec<String> {
        let source = Source::Process(Process::new(tgid.into()));
        // File names in maps are bytes: escape them line by line (a lossy or failed read would
        // lose every module of the process for one odd name).
        let maps = std::fs::read(format!("/proc/{tgid}/maps")).unwrap_or_default();
        let maps: String = maps
            .split(|&b| b == b'\n')
            .map(crate::names::escape_bytes)
            .collect::<Vec<_>>()
            .join("\n");
        let fallback = |addr: u64| module_offset(&maps, addr);
        match self.symbolizer.symbolize(&source, Input::AbsAddr(addrs)) {
            Ok(results) => results
                .into_iter()
                .zip(addrs)
                .map(|(r, &addr)| match r {
                    Symbolized::Sym(sym) => sym.name.into_owned(),
                    Symbolized::Unknown(_) => fallback(addr),
                })
                .collect(),
            Err(e) => {
                debug!("symbolizing pid {tgid}: {e}");
                addrs.iter().map(|&a| fallback(a)).collect()
            }
        }
    }

    /// Forgets processes that exited.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.cache.retain(|(tgid, _), _| live(*tgid));
    }
}

/// `module+0xoffset` for an address from a `/proc/<pid>/maps` text, or the bare address.
#[must_use]
pub fn module_offset(maps: &str, addr: u64) -> String {
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let Some((lo, hi)) = parts.next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if addr < lo || addr >= hi {
            continue;
        }
        let _perms = parts.next();
        let file_offset = parts
            .next()
            .and_then(|o| u64::from_str_radix(o, 16).ok())
            .unwrap_or(0);
        let path = parts.nth(2).unwrap_or("");
        let module = Path::new(path)
            .file_name()
            .map_or_else(|| "[anon]".to_owned(), |n| n.to_string_lossy().into_owned());
        return format!("{module}+0x{:x}", addr - lo + file_offset);
    }
    format!("0x{addr:x}")
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
    fn unresolved_user_frames_keep_module_and_offset() {
        let maps = "55d0c0a00000-55d0c0a10000 r-xp 00001000 08:01 1234 /usr/bin/app (deleted)\n\
                    7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n";
        assert_eq!(module_offset(maps, 0x55d0_c0a0_0010), "app+0x1010");
        assert_eq!(module_offset(maps, 0x7f00_0000_0008), "[anon]+0x8");
        assert_eq!(module_offset(maps, 0x1), "0x1");
    }

    #[test]
    fn symbolizes_a_function_of_this_test_binary() {
        #[inline(never)]
        fn marker_function_for_symbolization() -> u64 {
            std::hint::black_box(42)
        }
        let addr = marker_function_for_symbolization as *const () as u64;
        let mut s = UserSymbolizer::default();
        let frames = s.frames(std::process::id(), &[addr]);
        assert!(
            frames[0].contains("marker_function_for_symbolization"),
            "got {frames:?}"
        );
    }
}
