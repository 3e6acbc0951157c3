//! Everything that touches the kernel's BPF side: reading the kernel's layout from BTF
//! (`btf`), probing features and loading, configuring and attaching the programs (`loader`),
//! checking privileges (`privileges`), decoding the records the programs send (`events`),
//! and reading the daemon's maps every refresh (`daemon_maps`, whole hash maps with `batch`). The
//! other folders only see typed maps and plain structs.

pub mod batch;
pub mod btf;
pub mod daemon_maps;
pub mod events;
pub mod loader;
pub mod privileges;
