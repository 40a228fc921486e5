//! The node runtime end to end, with real components: the bundle's `k8s` pack carries
//! Debian's containerd, containerd-shim-runc-v2, runc and ctr; `airgap install` lays them down,
//! configures and supervises containerd, and that containerd — driven through CRI, the path
//! the kubelet uses — pulls every bundle image by its original name from the node's registry
//! and runs a pod from it. The installer runs in its own network namespace (`nsenter`) and
//! a mount namespace of its own (`unshare`), which containerd and its containers inherit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::node::{install_with, install_yaml, kill_during, output_ok, status_json, NetNs};
use common::{airgap, Setup};
use installer::cri::{ContainerSpec, CriClient, PodSpec};

const NODE_FILES: [(&str, &str); 4] = [
    ("bin/containerd", "/usr/bin/containerd"),
    (
        "bin/containerd-shim-runc-v2",
        "/usr/bin/containerd-shim-runc-v2",
    ),
    ("bin/runc", "/usr/sbin/runc"),
    ("bin/ctr", "/usr/bin/ctr"),
];
const K8S_VERSION: &str = "1.34.2";

/// A containerd the installer did not start, on the node's CRI socket; killed on drop.
struct ForeignContainerd(std::process::Child);

impl ForeignContainerd {
    fn start(dir: &Path, socket: &Path) -> Self {
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("foreign.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n",
                dir.display(),
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ForeignContainerd(child)
    }
}

impl Drop for ForeignContainerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn image_repo(reference: &str) -> &str {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => reference,
    }
}

/// Lines of the registry's access log (JSON lines: it is not a terminal).
fn access_log(root: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(root.join("var/log/airgap/registry.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn edit(path: &Path, drop_lines: impl Fn(&str) -> bool) -> String {
    let original = std::fs::read_to_string(path).unwrap();
    let edited: String = original
        .lines()
        .filter(|l| !drop_lines(l))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, edited).unwrap();
    original
}

#[test]
fn containerd_from_the_bundle_pulls_every_image_through_cri_and_runs_a_pod() {
    let setup = Setup::with_options(
        8 << 10,
        &testkit::FixtureOptions {
            busybox: Some(PathBuf::from("/usr/bin/busybox")),
            node_files: NODE_FILES
                .iter()
                .map(|(at, from)| (at.to_string(), PathBuf::from(from)))
                .collect(),
        },
    );
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create("cri");
    let root = setup.path("root");
    let config = install_yaml(setup.dir.path(), "");
    // PATH holds etcd and nothing of the runtime: containerd must come from the bundle.
    let path_dir = setup.path("path");
    std::fs::create_dir_all(&path_dir).unwrap();
    std::os::unix::fs::symlink("/usr/bin/etcd", path_dir.join("etcd")).unwrap();
    let run = || {
        install_with(
            ns.airgap_keeping_cgroups(&path_dir),
            &config,
            &bundle,
            &setup.public(),
            &root,
        )
    };
    let socket = root.join("run/containerd/containerd.sock");

    // A containerd airgap did not start already serves the socket: refused, one line.
    {
        let _foreign = ForeignContainerd::start(&setup.path("foreign"), &socket);
        let out = run().output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
        assert!(
            line.contains("phase runtime: a containerd airgap did not start")
                && line.contains("; hint: stop and disable it"),
            "{err}"
        );
        assert!(!root.join("etc/airgap/containerd/config.toml").exists());
    }
    let _ = std::fs::remove_file(&socket);

    // SIGKILL in the middle of the runtime phase, then a re-run completes.
    kill_during(run(), "runtime");
    let out = output_ok(&run().output().unwrap(), "install");
    assert!(
        out.contains(&format!("containerd from pack kubernetes:{K8S_VERSION}")),
        "{out}"
    );
    for (at, from) in NODE_FILES {
        let name = at.trim_start_matches("bin/");
        let installed = root.join(format!("var/lib/airgap/bin/{name}/{K8S_VERSION}/{name}"));
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(from).unwrap(),
            "{name} is not the bundle's"
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let cri = CriClient::new(&socket);
    let status = rt.block_on(cri.status(true)).unwrap();
    assert!(status.runtime_ready(), "{status:?}");
    assert_eq!(
        status.sandbox_image().as_deref(),
        Some(testkit::FIXTURE_PAUSE),
        "pod sandboxes must use the bundle's pause image"
    );

    // Every image, by original name: by tag, then by digest, with the bundle's digests; each
    // pull arrives at the node's registry.
    let inspect = common::ok(airgap().args(["bundle", "inspect", "--json"]).arg(&bundle));
    let index: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let images = index["images"].as_array().unwrap();
    assert_eq!(images.len(), 9);
    for image in images {
        let reference = image["reference"].as_str().unwrap();
        let digest = image["digest"].as_str().unwrap();
        let mirror = image["mirrorRepository"].as_str().unwrap();
        let by_digest = format!("{}@{digest}", image_repo(reference));
        let seen_before = access_log(&root).len();
        rt.block_on(cri.pull_image(reference))
            .unwrap_or_else(|e| panic!("pull {reference}: {}", installer::error::chain(&e)));
        let pulled = rt.block_on(cri.image_status(reference)).unwrap().unwrap();
        assert!(
            pulled.repo_digests.contains(&by_digest),
            "{reference}: {:?}",
            pulled.repo_digests
        );
        rt.block_on(cri.pull_image(&by_digest))
            .unwrap_or_else(|e| panic!("pull {by_digest}: {}", installer::error::chain(&e)));
        let log = access_log(&root);
        let tag = reference.rsplit_once(':').unwrap().1;
        let arrived = log[seen_before..].iter().any(|l| {
            l["status"] == 200
                && l["user"] == "puller"
                && l["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("{mirror}/manifests/{tag}")))
        });
        assert!(
            arrived,
            "{reference}: no pull of {mirror}:{tag} in the registry's access log: {:?}",
            &log[seen_before..]
        );
    }

    // A pod: the bundle's pause image as its sandbox, a container from a bundle image whose
    // output is checked.
    let pod_logs = setup.path("pod-logs");
    std::fs::create_dir_all(&pod_logs).unwrap();
    let pod = PodSpec {
        name: "smoke",
        namespace: "default",
        uid: "9c5e1f0a-smoke",
        log_directory: &pod_logs,
    };
    let sandbox = rt.block_on(cri.run_pod_sandbox(&pod)).unwrap_or_else(|e| {
        panic!(
            "run pod sandbox: {}\ncontainerd.log:\n{}",
            installer::error::chain(&e),
            std::fs::read_to_string(root.join("var/log/airgap/containerd.log")).unwrap_or_default()
        )
    });
    let container = rt
        .block_on(cri.start_container(
            &sandbox,
            &pod,
            &ContainerSpec {
                name: "hello",
                image: testkit::FIXTURE_IMAGES[0],
                command: &["/bin/busybox", "echo", "hello from the bundle"],
                log_path: "hello.log",
            },
        ))
        .unwrap_or_else(|e| panic!("start container: {}", installer::error::chain(&e)));
    let mut state = (0, 0);
    for _ in 0..100 {
        state = rt.block_on(cri.container_state(&container)).unwrap();
        if state.0 == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state, (2, 0), "the container did not exit cleanly");
    let output = std::fs::read_to_string(pod_logs.join("hello.log")).unwrap();
    assert!(output.contains("hello from the bundle"), "{output}");
    rt.block_on(cri.remove_pod_sandbox(&sandbox)).unwrap();

    // Without the Authorization header the registry refuses; without the CA the TLS
    // handshake fails: the mirror and its TLS are really what pulls go through.
    let api = testkit::FIXTURE_IMAGES[1];
    let hosts = root.join("etc/containerd/certs.d/example.internal/hosts.toml");
    for (what, drop_line, expect) in [
        (
            "no credentials",
            (|l: &str| l.contains("header") || l.contains("Authorization")) as fn(&str) -> bool,
            ["401", "unauthorized"],
        ),
        (
            "no CA",
            |l: &str| l.trim_start().starts_with("ca ="),
            ["x509", "certificate"],
        ),
    ] {
        rt.block_on(cri.remove_image(api)).unwrap();
        let original = edit(&hosts, drop_line);
        let err = rt.block_on(cri.pull_image(api));
        std::fs::write(&hosts, original).unwrap();
        let err = installer::error::chain(&err.expect_err(what)).to_lowercase();
        assert!(expect.iter().any(|e| err.contains(e)), "{what}: {err}");
    }
    rt.block_on(cri.pull_image(api)).unwrap();

    // A changed binary on disk is found and replaced by the re-run.
    let ctr = root.join(format!("var/lib/airgap/bin/ctr/{K8S_VERSION}/ctr"));
    std::fs::write(&ctr, b"#!/bin/sh\necho tampered\n").unwrap();
    let out = output_ok(&run().output().unwrap(), "re-run");
    assert!(
        out.contains("1 on disk differed from the bundle and were replaced"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&ctr).unwrap(),
        std::fs::read("/usr/bin/ctr").unwrap()
    );

    // status reports containerd healthy over CRI.
    let status = status_json(&ns, &root);
    let containerd = &status["services"]["containerd"];
    assert_eq!(containerd["healthy"], true, "{containerd}");
    assert!(
        containerd["detail"]
            .as_str()
            .unwrap()
            .contains("var/lib/airgap/bin/containerd"),
        "{containerd}"
    );
}
