//! `cargo xtask image`: a container image of the release binary, built without a container
//! engine (none runs on these machines): one layer holding /usr/local/bin/schedlat and the
//! libraries `ldd` names, written as an OCI image layout in a tar that also carries Docker's
//! `manifest.json`, so `podman load`, `docker load` and `ctr images import` all take it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{
    deb::{self, command_stdout},
    run, workspace_root,
};

/// The name deploy/daemonset.yaml runs.
pub fn image_name() -> String {
    format!("schedlat:{}", deb::VERSION)
}

/// Builds target/image/schedlat_<version>.oci.tar from `release_dir`/schedlat; returns its path.
pub fn build(release_dir: &Path) -> Result<PathBuf> {
    let out_dir = workspace_root()
        .canonicalize()
        .context("resolving the workspace root")?
        .join("target/image");
    let work = out_dir.join("build");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let rootfs = work.join("rootfs");
    let binary = release_dir.join("schedlat");
    if !binary.is_file() {
        bail!("{} not found: build it first", binary.display());
    }
    let in_image = rootfs.join("usr/local/bin/schedlat");
    copy_file(&binary, &in_image)?;
    run(Command::new("strip")
        .args(["--strip-unneeded", "--remove-section=.comment"])
        .arg(&in_image))?;
    let ldd = command_stdout(Command::new("ldd").arg(&binary))?;
    let libraries = shared_libraries(&ldd);
    if libraries.is_empty() {
        bail!("ldd {} named no libraries:\n{ldd}", binary.display());
    }
    for library in &libraries {
        // fs::copy follows symlinks: the image holds the file under the name the loader asks for.
        copy_file(
            library,
            &rootfs.join(library.strip_prefix("/").unwrap_or(library)),
        )?;
    }
    // Mount points the runtime fills (read-only root file system: they must exist).
    for dir in ["proc", "sys", "dev", "tmp", "var/lib/schedlat"] {
        fs::create_dir_all(rootfs.join(dir)).with_context(|| format!("creating {dir}"))?;
    }

    let oci = work.join("oci");
    write_layout(&rootfs, &oci)?;

    let image = out_dir.join(format!("schedlat_{}.oci.tar", deb::VERSION));
    reproducible_tar(
        &image,
        &oci,
        &["oci-layout", "index.json", "manifest.json", "blobs"],
    )?;
    Ok(image)
}

/// The OCI image layout of `rootfs` (one uncompressed layer) in `oci`, with Docker's
/// `manifest.json` naming the same blobs.
fn write_layout(rootfs: &Path, oci: &Path) -> Result<()> {
    let blobs = oci.join("blobs/sha256");
    fs::create_dir_all(&blobs).context("creating the blob directory")?;
    let layer_tmp = oci.join("layer.tar");
    reproducible_tar(&layer_tmp, rootfs, &["."])?;
    let (layer_digest, layer_size) = add_blob(&blobs, &fs::read(&layer_tmp)?)?;
    fs::remove_file(&layer_tmp).context("removing the layer's temporary file")?;
    let arch = go_arch()?;
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/local/bin/schedlat"],
            "Cmd": ["run"],
            "Labels": {
                "org.opencontainers.image.title": "schedlat",
                "org.opencontainers.image.version": deb::VERSION,
                "org.opencontainers.image.description":
                    "eBPF scheduling-latency (run-queue wait) observability agent",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let (config_digest, config_size) = add_blob(&blobs, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = add_blob(&blobs, &serde_json::to_vec(&manifest)?)?;
    let name = image_name();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": format!("docker.io/library/{name}"),
                "org.opencontainers.image.ref.name": deb::VERSION,
            },
        }],
    });
    fs::write(oci.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(oci.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // Docker before 25 loads only its own format: the same blobs, named by manifest.json.
    let docker = json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [name],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]);
    fs::write(oci.join("manifest.json"), serde_json::to_vec(&docker)?)?;
    Ok(())
}

/// The libraries (and the loader) in `ldd` output, by absolute path.
pub fn shared_libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Writes `bytes` as a blob named by its sha256; returns (hex digest, size).
fn add_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, usize)> {
    let tmp = blobs.join("incoming");
    fs::write(&tmp, bytes).context("writing a blob")?;
    let sum = command_stdout(Command::new("sha256sum").arg(&tmp))?;
    let digest = sum
        .split_whitespace()
        .next()
        .filter(|d| d.len() == 64)
        .with_context(|| format!("sha256sum printed {sum:?}"))?
        .to_owned();
    fs::rename(&tmp, blobs.join(&digest)).context("naming a blob")?;
    Ok((digest, bytes.len()))
}

/// The OCI (Go) name of this machine's architecture.
fn go_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI architecture name known for {other}"),
    })
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// A reproducible tar of `members` of `dir` (sorted, root-owned, mtime 0) as `file`.
fn reproducible_tar(file: &Path, dir: &Path, members: &[&str]) -> Result<()> {
    run(Command::new("tar")
        .args([
            "--create",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .args(["--mtime=@0", "--file"])
        .arg(file)
        .arg("-C")
        .arg(dir)
        .args(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_libraries_reads_ldd_output() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f91)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f91)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f91)\n";
        assert_eq!(
            shared_libraries(ldd),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn the_daemonset_runs_the_image_this_builds() {
        let daemonset = fs::read_to_string(workspace_root().join("deploy/daemonset.yaml")).unwrap();
        let images: Vec<&str> = daemonset
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image:"))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        assert!(
            images == [image_name()],
            "deploy/daemonset.yaml runs {images:?}, not {}",
            image_name()
        );
    }
}
