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

use common::node::{
    install_with, install_yaml, kill_during, output_ok, pids_running, status_any, status_json,
    ConnectionRecorder, NetNs,
};
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

/// A fixture whose `k8s` pack carries Debian's containerd and runc, and a PATH directory
/// holding etcd and nothing of the runtime: containerd must come from the bundle.
fn runtime_setup() -> (Setup, PathBuf) {
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
    let path_dir = setup.path("path");
    std::fs::create_dir_all(&path_dir).unwrap();
    std::os::unix::fs::symlink("/usr/bin/etcd", path_dir.join("etcd")).unwrap();
    (setup, path_dir)
}

#[test]
fn containerd_from_the_bundle_pulls_every_image_through_cri_and_runs_a_pod() {
    let (setup, path_dir) = runtime_setup();
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create("cri");
    let root = setup.path("root");
    let config = install_yaml(setup.dir.path(), "");
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
        let installed = common::installed_binary(&root, name, K8S_VERSION);
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
    let ctr = common::installed_binary(&root, "ctr", K8S_VERSION);
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

/// Where the test's stand-in for the internet listens; upstream registry names resolve to it.
const INTERNET: &str = "10.77.0.99";

/// The air-gap guarantee from outside: with the runtime configured but the kubernetes and
/// platform phases skipped, the pause image pulls by its original name from the node's
/// registry; then, with the mirror made to fail each way an operator meets (no credentials,
/// no CA, registry down, image absent, a registry the bundle has nothing from), a pull by
/// original name fails and no connection reaches any other host: every upstream name
/// resolves to a listener in the test's namespace that records connections.
#[test]
fn a_failing_mirror_never_sends_a_pull_upstream() {
    let (setup, path_dir) = runtime_setup();
    // amd64 only: the two-platform image is stored as a filtered index, and its upstream
    // index rides along to be seeded sparse.
    let spec = setup.path("amd64.yaml");
    let text = std::fs::read_to_string(&setup.fixture.spec).unwrap();
    assert!(text.contains("platforms: [all]"));
    std::fs::write(
        &spec,
        text.replace("platforms: [all]", "platforms: [linux/amd64]"),
    )
    .unwrap();
    let bundle = setup.build_spec(&spec, "bundle.tar");
    let ns = NetNs::create("gap");
    let upstream = [
        "registry.k8s.io",
        "example.internal",
        "docker.io",
        "registry-1.docker.io",
        "quay.io",
    ];
    let hosts = PathBuf::from("/etc/netns").join(&ns.name).join("hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    for name in upstream {
        text.push_str(&format!("{INTERNET} {name}\n"));
    }
    std::fs::write(&hosts, text).unwrap();
    let internet = ConnectionRecorder::start(&ns, INTERNET, &[80, 443, 5000]);
    let root = setup.path("root");
    let config = install_yaml(setup.dir.path(), "");
    let mut install = install_with(
        ns.airgap_keeping_cgroups(&path_dir),
        &config,
        &bundle,
        &setup.public(),
        &root,
    );
    install.args(["--skip-phases", "kubernetes,platform"]);
    output_ok(
        &install.output().unwrap(),
        "install --skip-phases kubernetes,platform",
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let cri = CriClient::new(root.join("run/containerd/containerd.sock"));
    let served = |before: usize, repository: &str| {
        access_log(&root)[before..].iter().any(|l| {
            l["status"] == 200
                && l["path"]
                    .as_str()
                    .is_some_and(|p| p.contains(&format!("/{repository}/manifests/")))
        })
    };
    let before = access_log(&root).len();
    rt.block_on(cri.pull_image(testkit::FIXTURE_PAUSE))
        .unwrap_or_else(|e| panic!("pull the pause image: {}", installer::error::chain(&e)));
    assert!(
        served(before, "registry.k8s.io/pause"),
        "the pause image did not come from the node's registry"
    );
    assert_eq!(internet.connections(), Vec::<String>::new());

    // A workload pinned to the upstream index digest of the platform-filtered image pulls
    // offline: the node registry holds that index sparse (the arm64 child absent), and
    // containerd picks the amd64 manifest the bundle kept.
    let inspect = common::ok(airgap().args(["bundle", "inspect", "--json"]).arg(&bundle));
    let index: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let multi = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == testkit::FIXTURE_IMAGES[2])
        .unwrap();
    let upstream = multi["upstreamDigest"].as_str().unwrap();
    assert_ne!(upstream, multi["digest"].as_str().unwrap(), "not filtered");
    let pinned = format!("example.internal/base/multi@{upstream}");
    let before = access_log(&root).len();
    rt.block_on(cri.pull_image(&pinned))
        .unwrap_or_else(|e| panic!("pull {pinned}: {}", installer::error::chain(&e)));
    assert!(
        access_log(&root)[before..]
            .iter()
            .any(|l| l["status"] == 200
                && l["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("base/multi/manifests/{upstream}")))),
        "the upstream index did not come from the node's registry"
    );
    assert_eq!(internet.connections(), Vec::<String>::new());

    // The registries.conf beside it, read by a containers/image client (skopeo, as podman and
    // CRI-O would): the pause image by its original name comes from the node's registry.
    let login = {
        use base64::Engine as _;
        let hosts: toml::Table =
            std::fs::read_to_string(root.join("etc/containerd/certs.d/registry.k8s.io/hosts.toml"))
                .unwrap()
                .parse()
                .unwrap();
        let header = hosts["header"]["Authorization"][0].as_str().unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        String::from_utf8(raw).unwrap()
    };
    assert!(
        login.starts_with("puller:"),
        "containerd's login is the pull-only one"
    );
    let certs = common::node::skopeo_certs(&root, setup.dir.path());
    let before = access_log(&root).len();
    // `ip netns exec` binds /etc/netns/<ns>/containers over /etc/containers: skopeo there
    // reads the node's file as its only registries.conf (skopeo 1.9 has no flag for it).
    let containers = PathBuf::from("/etc/netns")
        .join(&ns.name)
        .join("containers");
    std::fs::create_dir_all(&containers).unwrap();
    std::fs::copy(
        root.join("etc/containers/registries.conf.d/50-airgap.conf"),
        containers.join("registries.conf"),
    )
    .unwrap();
    let out = ns
        .command("skopeo")
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&certs)
        .arg("--authfile")
        .arg(root.join("etc/airgap/mirror/auth.json"))
        .arg(format!("docker://{}", testkit::FIXTURE_PAUSE))
        .output()
        .unwrap();
    common::node::output_ok(&out, "skopeo through registries.conf");
    assert!(
        served(before, "registry.k8s.io/pause"),
        "registries.conf did not send skopeo to the node's registry"
    );
    assert_eq!(internet.connections(), Vec::<String>::new());

    let api = testkit::FIXTURE_IMAGES[1];
    let host_file = root.join("etc/containerd/certs.d/example.internal/hosts.toml");
    let expect_refused = |what: &str, image: &str| {
        let _ = rt.block_on(cri.remove_image(image));
        let result = rt.block_on(cri.pull_image(image));
        assert!(result.is_err(), "{what}: the pull of {image} succeeded");
        assert_eq!(
            internet.connections(),
            Vec::<String>::new(),
            "{what}: a pull of {image} left the air gap"
        );
    };
    for (what, drop_line) in [
        (
            "no credentials",
            (|l: &str| l.contains("header") || l.contains("Authorization")) as fn(&str) -> bool,
        ),
        ("no CA", |l: &str| l.trim_start().starts_with("ca =")),
    ] {
        let original = edit(&host_file, drop_line);
        expect_refused(what, api);
        std::fs::write(&host_file, original).unwrap();
    }
    for image in [
        "example.internal/platform/absent:1.0",
        "docker.io/library/nginx:latest",
        "quay.io/other/thing:1",
        "registry.k8s.io/pause@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        expect_refused("not in the bundle", image);
    }

    // The registry down: its supervisor paused so it stays down, then let go.
    let agents = pids_running(&ns, &["agent"]);
    assert!(!agents.is_empty(), "no agent in the namespace");
    for pid in &agents {
        // SAFETY: signalling processes of a namespace this test created.
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    for pid in pids_running(&ns, &["registry", "serve"]) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    expect_refused("registry stopped", api);
    for pid in &agents {
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    // Back up, the same pull works: the failures above were the mirror's, not the image's.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match rt.block_on(cri.pull_image(api)) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!(
                    "the registry did not come back: {}",
                    installer::error::chain(&e)
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    assert_eq!(internet.connections(), Vec::<String>::new());

    // Without its catch-all host file containerd is not reported healthy (a pull of an
    // unlisted registry would go upstream); a re-run of install writes it back.
    let catch_all = root.join("etc/containerd/certs.d/_default/hosts.toml");
    std::fs::remove_file(&catch_all).unwrap();
    let (code, status) = status_any(&ns, &root);
    assert_eq!(code, Some(3));
    let containerd = &status["services"]["containerd"];
    assert_eq!(containerd["healthy"], false, "{containerd}");
    assert!(
        containerd["detail"]
            .as_str()
            .unwrap()
            .contains("no pull configuration"),
        "{containerd}"
    );
    let mut rerun = install_with(
        ns.airgap_keeping_cgroups(&path_dir),
        &config,
        &bundle,
        &setup.public(),
        &root,
    );
    rerun.args(["--skip-phases", "kubernetes,platform"]);
    output_ok(&rerun.output().unwrap(), "re-run");
    assert!(catch_all.is_file());
    let (_, status) = status_any(&ns, &root);
    assert_eq!(
        status["services"]["containerd"]["healthy"], true,
        "{status}"
    );
}
