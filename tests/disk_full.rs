//! A filesystem that fills up: `bundle build`, seeding the built-in registry and `install`
//! fail with one line naming the path and "No space left", leave nothing partial behind, and
//! the same command completes once there is room. The small filesystem is a size-limited tmpfs this
//! test mounts (root) and unmounts on drop, pass or fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::{install, install_yaml, status_json, NetNs};
use common::registries::{airgap_serve, write_htpasswd, Pki, PASSWORD, USER};
use common::{airgap, snapshot, Setup};

struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs at {}", dir.display());
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Frees room, as an operator deleting old bundles would.
    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_keys().collect()
}

#[test]
fn a_full_disk_fails_cleanly_and_the_same_command_completes_with_room() {
    // ~1 MiB of layers: more than the 600 KiB filesystem holds.
    let setup = Setup::new(400 << 10);

    // bundle build onto a full disk: one line, nothing at -o, no temporary left.
    let small = SmallFs::mount(&setup.path("small"), "600k");
    let out = small.dir.join("bundle.tar");
    let err = common::fails(&mut setup.build_command(&setup.fixture.spec, &out));
    assert!(
        err.contains("No space left on device")
            && err.contains(&out.display().to_string())
            && err.contains("; hint: free space there and run the same command again"),
        "{err}"
    );
    assert_eq!(files_under(&small.dir), Vec::<PathBuf>::new());
    small.grow("8m");
    common::ok(&mut setup.build_command(&setup.fixture.spec, &out));
    common::ok(&mut setup.verify(&out));

    // Seeding the built-in registry whose store fills up: one line, only whole and
    // digest-checked blobs in the store, no upload left behind.
    let bundle = setup.build("bundle.tar");
    let store_fs = SmallFs::mount(&setup.path("store"), "600k");
    let store = store_fs.dir.join("registry");
    let pki = Pki::new(&setup.path("pki"));
    let htpasswd = setup.path("htpasswd");
    write_htpasswd(&htpasswd);
    let server = airgap_serve(&store, &pki, &["--htpasswd", htpasswd.to_str().unwrap()]);
    let seed = || {
        let mut cmd = airgap();
        cmd.args(["registry", "seed"])
            .arg(&bundle)
            .arg("--pub")
            .arg(setup.public())
            .args(["--to", &format!("https://127.0.0.1:{}", server.port)])
            .arg("--ca")
            .arg(&pki.ca)
            .args(["--username", USER, "--password-stdin"])
            .arg("--config-dir")
            .arg(setup.path("mirror-config"));
        cmd
    };
    let run_seed = || common::registries::with_stdin(&mut seed(), PASSWORD);
    let failed = run_seed();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].contains("No space left on device")
            && lines[0].contains("; hint: free space"),
        "{stderr}"
    );
    for file in files_under(&store) {
        let rel = file.strip_prefix(&store).unwrap();
        if let Ok(blob) = rel.strip_prefix("blobs/sha256") {
            let name = blob.to_str().unwrap();
            assert_eq!(
                airgap::Digest::of(&std::fs::read(&file).unwrap()).hex(),
                name,
                "a partial blob was committed"
            );
        } else {
            assert!(
                !rel.starts_with(".uploads"),
                "an upload was left behind: {}",
                rel.display()
            );
        }
    }
    store_fs.grow("8m");
    let done = run_seed();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains("seeded mgmt-plane 4.5.0"), "{stdout}");
    drop(server);
}

/// One error line that names the full filesystem and says what to do.
fn assert_no_space_line(stderr: &str, path: &Path) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains("No space left on device")
            && last.contains(&path.display().to_string())
            && last.contains("; hint: free space"),
        "{stderr}"
    );
}

#[test]
fn an_install_onto_a_full_disk_stops_cleanly_and_the_rerun_completes() {
    // 7 images of 2 MiB layers: the node's registry store outgrows what etcd's preallocated
    // WAL (64 MiB) leaves of a 100 MiB root (besides the installed airgap binary).
    let setup = Setup::new(24 << 20);
    let bundle = setup.build("bundle.tar");
    // Plus room for the copy of airgap the install keeps under the root for its services.
    let binary_mib = std::fs::metadata(env!("CARGO_BIN_EXE_airgap"))
        .unwrap()
        .len()
        >> 20;
    let root_fs = SmallFs::mount(&setup.path("small"), &format!("{}m", 100 + binary_mib + 1));
    let root = root_fs.dir.join("root");
    let ns = NetNs::create("full");
    let config = install_yaml(setup.dir.path(), "");

    let failed = install(&ns, &config, &bundle, &setup.public(), &root)
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_no_space_line(&stderr, &root);
    // Nothing half-written is taken for whole: every blob in the node's store has its digest,
    // no upload is left, and the journal names the phase that failed.
    for file in files_under(&root) {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if let Some((_, blob)) = rel.split_once("blobs/sha256/") {
            assert_eq!(
                airgap::Digest::of(&std::fs::read(&file).unwrap()).hex(),
                blob,
                "a partial blob was committed: {rel}"
            );
        }
        assert!(!rel.contains(".uploads/"), "an upload was left: {rel}");
    }
    let after_failure = ns
        .airgap()
        .args(["status", "--json", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    let status = common::json_checked("status", &after_failure.stdout);
    assert_eq!(status["complete"], false, "{status}");
    let phases = status["phases"].as_array().unwrap();
    let state = |name: &str| {
        phases
            .iter()
            .find(|p| p[0] == name)
            .map(|p| p[1]["state"].clone())
            .unwrap_or_default()
    };
    assert_eq!(state("etcd"), "done", "{status}");
    assert_ne!(state("platform"), "done", "{status}");

    // Room again (old bundles deleted): the same command completes and the node is healthy.
    root_fs.grow(&format!("{}m", 400 + binary_mib));
    let done = install(&ns, &config, &bundle, &setup.public(), &root)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let status = status_json(&ns, &root);
    assert_eq!(status["complete"], true, "{status}");
    assert_eq!(status["bundle"], "mgmt-plane 4.5.0", "{status}");
    let _ = ns.airgap().arg("stop").arg("--root").arg(&root).output();
}
