//! Builds the eBPF programs (`agent-ebpf`) for the bpfel target and puts the object in `OUT_DIR`,
//! so a plain `cargo build` builds kernel and user side together.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|package| package.name.as_str() == "agent-ebpf")
        .ok_or_else(|| anyhow!("package agent-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent directory for {}", ebpf.manifest_path))?;
    // The nested build needs `-Z build-std` for the bpf target. The machines have a stable
    // toolchain only (1.95) whose rust-src works with it when RUSTC_BOOTSTRAP is set; do so for
    // the nested build alone (the environment of this build script is the nested build's),
    // unless the caller chose a value.
    if std::env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom("stable"))
        .context("building the eBPF programs (is bpf-linker installed? run `cargo xtask setup`)")
}
