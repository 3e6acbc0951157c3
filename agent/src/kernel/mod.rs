//! Everything that touches the kernel's BPF side: reading the kernel's layout from BTF
//! (`btf`), probing features and loading, configuring and attaching the programs (`loader`),
//! checking privileges (`privileges`), and decoding the records the programs send
//! (`events`). The other folders only see typed maps and plain structs.

pub mod btf;
pub mod events;
pub mod loader;
pub mod privileges;
