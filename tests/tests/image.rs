//! The container image (`cargo xtask image`) run for real with an OCI runtime (runc; no
//! container engine runs on these machines) the way deploy/daemonset.yaml runs it: its
//! capabilities only (drop ALL, add the list), no privilege escalation, read-only root, the
//! host's PID namespace, the `DaemonSet`'s mounts; `schedlat check` must exit 0 inside.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn image() -> PathBuf {
    let path = std::env::var("SCHEDLAT_IMAGE").map_or_else(
        |_| {
            repo().join(format!(
                "target/image/schedlat_{}.oci.tar",
                env!("CARGO_PKG_VERSION")
            ))
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no image at {}: build it with `cargo xtask image` (or set SCHEDLAT_IMAGE)",
        path.display()
    );
    path
}

/// The `DaemonSet` container's capabilities (`add:` under `drop: [ALL]`), as `CAP_` names.
fn daemonset_capabilities() -> Vec<String> {
    let yaml = std::fs::read_to_string(repo().join("deploy/daemonset.yaml")).unwrap();
    assert!(
        yaml.contains("drop: [ALL]"),
        "the DaemonSet no longer drops ALL capabilities: update this test"
    );
    let add = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: ["))
        .and_then(|rest| rest.split(']').next())
        .expect("an `add: [...]` capability list in deploy/daemonset.yaml");
    add.split(',')
        .map(|c| format!("CAP_{}", c.trim()))
        .collect()
}

/// Capability numbers of the names the `DaemonSet` uses (`linux/capability.h`).
fn capability_number(name: &str) -> u32 {
    match name {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_SYSLOG" => 34,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        "CAP_CHECKPOINT_RESTORE" => 40,
        other => panic!("capability {other} in the DaemonSet: add its number to this test"),
    }
}

/// This process's bounding set: no runtime can grant a capability outside it.
fn bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd in /proc/self/status")
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().expect("digest");
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

fn tar_extract(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -xf {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "runs a container as root with runc: run by `cargo xtask test`"]
fn schedlat_check_passes_in_the_image_with_the_daemonsets_capabilities() {
    let scratch = std::env::temp_dir().join(format!("schedlat-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let layout = scratch.join("layout");
    tar_extract(&image(), &layout);

    // The layout: index -> manifest -> config and one layer, and Docker's manifest.json.
    let index = read_json(&layout.join("index.json"));
    let descriptor = &index["manifests"][0];
    assert_eq!(
        descriptor["annotations"]["io.containerd.image.name"],
        format!("docker.io/library/schedlat:{}", env!("CARGO_PKG_VERSION"))
    );
    let manifest = read_json(&blob(&layout, &descriptor["digest"]));
    let config = read_json(&blob(&layout, &manifest["config"]["digest"]));
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/schedlat"])
    );
    let docker = read_json(&layout.join("manifest.json"));
    assert_eq!(
        docker[0]["RepoTags"],
        json!([format!("schedlat:{}", env!("CARGO_PKG_VERSION"))])
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    let bundle = scratch.join("bundle");
    tar_extract(&blob(&layout, &layers[0]["digest"]), &bundle.join("rootfs"));

    // The DaemonSet's capabilities, less those this machine's root does not have at all.
    let wanted = daemonset_capabilities();
    let bounding = bounding_set();
    let (granted, unavailable): (Vec<String>, Vec<String>) = wanted
        .iter()
        .cloned()
        .partition(|c| bounding & (1 << capability_number(c)) != 0);
    if !unavailable.is_empty() {
        eprintln!(
            "not in this machine's bounding set, so not grantable by any runtime here: {}",
            unavailable.join(" ")
        );
    }
    let state = scratch.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/usr/local/bin/schedlat", "check"],
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": granted, "effective": granted, "permitted": granted},
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "schedlat",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/kernel/btf", "type": "bind", "source": "/sys/kernel/btf", "options": ["rbind", "ro"]},
            {"destination": "/sys/kernel/tracing", "type": "bind", "source": "/sys/kernel/tracing", "options": ["rbind", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "bind", "source": "/sys/fs/cgroup", "options": ["rbind", "ro"]},
            {"destination": "/var/lib/schedlat", "type": "bind", "source": state, "options": ["rbind", "rw"]},
        ],
        "linux": {
            // hostPID: no PID namespace; the pod has its own network, UTS and IPC.
            "namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "uts"}, {"type": "ipc"}],
            "cgroupsPath": format!("/schedlat-image-test-{}", std::process::id()),
        },
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();

    let id = format!("schedlat-image-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .expect("runc (Debian package runc, installed by `cargo xtask setup`)");
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    let _ = std::fs::remove_dir_all(&scratch);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schedlat check in the image with {granted:?} exited {}:\n{text}",
        out.status
    );
    assert!(
        text.contains("`schedlat trace` and `schedlat run` can run here"),
        "schedlat check in the image:\n{text}"
    );
    assert!(
        granted.iter().any(|c| c == "CAP_BPF") && granted.iter().any(|c| c == "CAP_PERFMON"),
        "ran without CAP_BPF/CAP_PERFMON: {granted:?}"
    );
}
