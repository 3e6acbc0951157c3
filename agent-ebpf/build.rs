use which::which;

/// Building this crate depends on the `bpf-linker` binary, which cargo cannot see as a
/// dependency: rebuild when it changes (the aya-template approach).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => println!("cargo:warning=bpf-linker not found ({e}); run `cargo xtask setup`"),
    }
}
